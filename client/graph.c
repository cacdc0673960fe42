/*
 * graph.c - task graphs: building one (keys, literal values, tasks whose
 * arguments refer to keys), validating it (unknown keys, cycles, unknown
 * functions), culling it to the wanted keys and submitting it whole, as one
 * SUBMIT message; and reading one from a JSON file.  The API is in shoal.h.
 *
 * Representation.  Each key is a node that owns its key, its function name
 * (NULL for a literal value) and its bytes (the packed value, or the packed
 * argument array).  A key reference inside the arguments is an ext
 * SHOAL_EXT_KEY object; when a task is added its arguments are walked once
 * and the byte span of each reference is recorded, so that submission
 * rewrites them by copying the bytes between references, with no msgpack
 * unpacking.  References are resolved to node indexes lazily (keys may be
 * referred to before they are added) and the result is cached until the
 * graph changes: a CSR array of each node's distinct dependencies and a
 * topological order of all nodes (each after its dependencies), built by an
 * iterative depth-first search that also finds cycles.
 *
 * Submission.  The wanted keys and everything they need are marked by one
 * pass over the order reversed (every dependent comes before its
 * dependencies there).  Tasks are sent in the order, so each one's
 * dependencies are already known to the scheduler when it reads it: the
 * scheduler handles a batch's items in order.  Ids are reserved under the
 * client lock first, the message is then packed without the lock (a big
 * graph must not stall the I/O thread, which needs the lock to deliver
 * results), and a second short lock section creates the futures and queues
 * the message as its own batch, behind whatever the client had queued
 * before, followed by a RELEASE of the tasks nobody asked for: the scheduler
 * keeps each until its dependents are done, then frees it.
 */
#define _GNU_SOURCE
#include "client_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exec.h"
#include "json.h"
#include "mp.h"

/* Bound on the keys of one graph (node indexes are 32-bit). */
#define S_MAX_NODES (1u << 28)
/* msgpack-c unpacks at most 32 nested containers (see exec.c); arguments
 * deeper than that could never be decoded by a worker. */
#define S_MAX_OPEN 32
/* The scheduler refuses a task with more distinct dependencies. */
#define S_MAX_DEPS 65536
/* Scheduler bound on retries (docs/PROTOCOL.md: retries <= 65535). */
#define S_MAX_RETRIES 65535
#define S_ECHO "shoal.echo"
/* A future reference as packed: fixext 8 (0xd7), the type, 8 id bytes. */
#define S_REF_BYTES 10

typedef struct s_ref {
    size_t off;         /* offset of the ext object in the node's bytes */
    size_t span;        /* its length */
    size_t koff, klen;  /* the key bytes (inside the node's bytes) */
    uint32_t target;    /* node index, once resolved */
} s_ref_t;

typedef struct s_node {
    char *key;
    size_t klen;
    char *func;         /* NULL: a literal value */
    uint8_t *data;      /* the packed value, or the packed argument array */
    size_t len;
    s_ref_t *refs;      /* key references in data, by increasing offset */
    uint32_t nrefs;
    int32_t priority;
    uint32_t retries;
} s_node_t;

/* An open-addressing map from byte strings (owned elsewhere) to indexes. */
typedef struct s_entry {
    const char *k;
    size_t klen;
    uint64_t h;
    uint32_t val;
} s_entry_t;

typedef struct s_map {
    s_entry_t *e;
    size_t cap, n;
} s_map_t;

struct shoal_graph {
    s_node_t *nodes;
    size_t n, cap;
    s_map_t keys;
    /* Derived from the nodes; valid while `resolved` (reset by every add). */
    int resolved;
    size_t *dep_off;    /* n + 1 offsets into dep */
    uint32_t *dep;      /* each node's distinct dependencies */
    uint32_t *order;    /* every node, each after its dependencies */
};

/* ---- small helpers ----------------------------------------------------------- */

static int __attribute__((format(printf, 3, 4)))
s_fail(shoal_error_t *err, int errnum, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    errno = errnum;
    return -1;
}

/* Keys in messages: at most 100 bytes of them. */
#define S_KFMT "'%.*s%s'"
#define S_KARG(p, n) (int)((n) > 100 ? 100 : (n)), (const char *)(p), (n) > 100 ? "..." : ""

static int s_map_grow(s_map_t *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64;
    s_entry_t *e = calloc(cap, sizeof *e);
    if (!e)
        return -1;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->e[i].k)
            continue;
        size_t j = (size_t)m->e[i].h & (cap - 1);
        while (e[j].k)
            j = (j + 1) & (cap - 1);
        e[j] = m->e[i];
    }
    free(m->e);
    m->e = e;
    m->cap = cap;
    return 0;
}

static s_entry_t *s_map_slot(const s_map_t *m, const char *k, size_t klen, uint64_t h)
{
    size_t mask = m->cap - 1;
    for (size_t j = (size_t)h & mask;; j = (j + 1) & mask) {
        s_entry_t *e = &m->e[j];
        if (!e->k || (e->h == h && e->klen == klen && memcmp(e->k, k, klen) == 0))
            return e;
    }
}

/* 1 with *val if present, else 0. */
static int s_map_get(const s_map_t *m, const char *k, size_t klen, uint32_t *val)
{
    if (m->n == 0)
        return 0;
    s_entry_t *e = s_map_slot(m, k, klen, util_fnv1a64(k, klen));
    if (!e->k)
        return 0;
    if (val)
        *val = e->val;
    return 1;
}

/* Insert (k must not be present; its bytes must outlive the map).  0 or -1. */
static int s_map_put(s_map_t *m, const char *k, size_t klen, uint32_t val)
{
    if ((m->n + 1) * 2 > m->cap && s_map_grow(m) < 0)
        return -1;
    uint64_t h = util_fnv1a64(k, klen);
    s_entry_t *e = s_map_slot(m, k, klen, h);
    *e = (s_entry_t){.k = k, .klen = klen, .h = h, .val = val};
    m->n++;
    return 0;
}

static void s_map_free(s_map_t *m)
{
    free(m->e);
    memset(m, 0, sizeof *m);
}

typedef struct s_buf {
    uint8_t *p;
    size_t n, cap;
} s_buf_t;

static int s_buf_reserve(s_buf_t *b, size_t need)
{
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static void s_buf_put(s_buf_t *b, const void *p, size_t n)
{
    if (n)
        memcpy(b->p + b->n, p, n);
    b->n += n;
}

static uint64_t s_be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* ---- walking packed arguments ------------------------------------------------ */

/*
 * Check that p[0..len) is exactly one well-formed MessagePack object (an
 * array if want_array) nesting at most S_MAX_OPEN containers, with every
 * future reference 8 bytes and every key reference a valid key, and record
 * the key references in *refs (malloc'd, *nrefs of them).  No recursion:
 * each open container is a count of the items still to come.  0, or -1
 * with *why set (errno EINVAL or ENOMEM).
 */
static int s_scan(const uint8_t *p, size_t len, int want_array, s_ref_t **refs,
                  uint32_t *nrefs, const char **why)
{
    uint64_t open[S_MAX_OPEN];
    int top = 0;
    size_t pos = 0, cap = 0;

    *refs = NULL;
    *nrefs = 0;
    if (want_array && (len == 0 || !((p[0] >= 0x90 && p[0] <= 0x9f) || p[0] == 0xdc ||
                                     p[0] == 0xdd))) {
        *why = "not a MessagePack array";
        goto bad;
    }
    for (;;) {
        size_t start = pos, need = 0, body = 0, ext_size = 0;
        uint64_t items = 0;
        int container = 0, ext = 0;

        if (pos >= len)
            goto truncated;
        uint8_t b = p[pos++];
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            /* complete */
        } else if (b >= 0x80 && b <= 0x8f) {
            container = 1;
            items = 2u * (b & 0x0fu);
        } else if (b >= 0x90 && b <= 0x9f) {
            container = 1;
            items = b & 0x0fu;
        } else if (b >= 0xa0 && b <= 0xbf) {
            body = b & 0x1fu;
        } else {
            switch (b) {
            case 0xcc: case 0xd0: body = 1; break;
            case 0xcd: case 0xd1: body = 2; break;
            case 0xce: case 0xd2: case 0xca: body = 4; break;
            case 0xcf: case 0xd3: case 0xcb: body = 8; break;
            case 0xc4: case 0xd9: need = 1; break;
            case 0xc5: case 0xda: need = 2; break;
            case 0xc6: case 0xdb: need = 4; break;
            case 0xdc: need = 2; container = 1; break;
            case 0xdd: need = 4; container = 1; break;
            case 0xde: need = 2; container = 2; break;
            case 0xdf: need = 4; container = 2; break;
            case 0xd4: ext = 1; ext_size = 1; break;
            case 0xd5: ext = 1; ext_size = 2; break;
            case 0xd6: ext = 1; ext_size = 4; break;
            case 0xd7: ext = 1; ext_size = 8; break;
            case 0xd8: ext = 1; ext_size = 16; break;
            case 0xc7: need = 1; ext = 2; break;
            case 0xc8: need = 2; ext = 2; break;
            case 0xc9: need = 4; ext = 2; break;
            default:
                *why = "not well-formed MessagePack (byte 0xc1)";
                goto bad;
            }
        }
        if (need) {
            if (len - pos < need)
                goto truncated;
            uint64_t v = s_be(p + pos, need);
            pos += need;
            if (container)
                items = container == 2 ? 2 * v : v;
            else if (ext)
                ext_size = (size_t)v;
            else
                body = (size_t)v;
        }
        if (ext) {
            if (len - pos < 1 || len - pos - 1 < ext_size)
                goto truncated;
            int8_t type = (int8_t)p[pos];
            if (type == SHOAL_EXT_FUTURE && ext_size != 8) {
                *why = "a future reference that is not 8 bytes";
                goto bad;
            }
            if (type == SHOAL_EXT_KEY) {
                if (ext_size == 0 || ext_size > SHOAL_GRAPH_MAX_KEY ||
                    memchr(p + pos + 1, '\0', ext_size)) {
                    *why = "a key reference whose key is empty, longer than 255 bytes "
                           "or holds a NUL byte";
                    goto bad;
                }
                if (*nrefs == cap) {
                    size_t ncap = cap ? cap * 2 : 4;
                    if (ncap > UINT32_MAX) {
                        *why = "too many key references";
                        goto bad;
                    }
                    s_ref_t *nr = realloc(*refs, ncap * sizeof *nr);
                    if (!nr) {
                        *why = "out of memory";
                        free(*refs);
                        *refs = NULL;
                        *nrefs = 0;
                        errno = ENOMEM;
                        return -1;
                    }
                    *refs = nr;
                    cap = ncap;
                }
                (*refs)[(*nrefs)++] = (s_ref_t){.off = start,
                                                .span = pos + 1 + ext_size - start,
                                                .koff = pos + 1,
                                                .klen = ext_size};
            }
            pos += 1 + ext_size;
        } else {
            if (len - pos < body)
                goto truncated;
            pos += body;
        }
        if (container && items > 0) {
            /* Every item takes at least a byte. */
            if (items > len - pos)
                goto truncated;
            if (top == S_MAX_OPEN) {
                *why = "nested deeper than 32 levels (the most MessagePack decoding allows)";
                goto bad;
            }
            open[top++] = items;
            continue;
        }
        /* One object is complete; so is every container it completes. */
        for (;;) {
            if (top == 0)
                goto done;
            if (--open[top - 1] > 0)
                break;
            top--;
        }
    }
done:
    if (pos != len) {
        *why = "bytes left over after one MessagePack object";
        goto bad;
    }
    return 0;
truncated:
    *why = "truncated MessagePack";
bad:
    free(*refs);
    *refs = NULL;
    *nrefs = 0;
    errno = EINVAL;
    return -1;
}

/* ---- building ------------------------------------------------------------------- */

shoal_graph_t *shoal_graph_create(void)
{
    return calloc(1, sizeof(shoal_graph_t));
}

static void s_unresolve(shoal_graph_t *g)
{
    free(g->dep_off);
    free(g->dep);
    free(g->order);
    g->dep_off = NULL;
    g->dep = NULL;
    g->order = NULL;
    g->resolved = 0;
}

void shoal_graph_destroy(shoal_graph_t *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n; i++) {
        free(g->nodes[i].key);
        free(g->nodes[i].func);
        free(g->nodes[i].data);
        free(g->nodes[i].refs);
    }
    free(g->nodes);
    s_map_free(&g->keys);
    s_unresolve(g);
    free(g);
}

static int s_check_key(const shoal_graph_t *g, const char *key, size_t *klen,
                       shoal_error_t *err)
{
    if (!key)
        return s_fail(err, EINVAL, "no key given");
    size_t n = strnlen(key, SHOAL_GRAPH_MAX_KEY + 1);
    if (n == 0)
        return s_fail(err, EINVAL, "empty key: a key must be 1 to %d bytes",
                      SHOAL_GRAPH_MAX_KEY);
    if (n > SHOAL_GRAPH_MAX_KEY)
        return s_fail(err, EINVAL, "key " S_KFMT " is longer than %d bytes", S_KARG(key, n),
                      SHOAL_GRAPH_MAX_KEY);
    if (s_map_get(&g->keys, key, n, NULL))
        return s_fail(err, EEXIST, "duplicate key " S_KFMT ": it is already in the graph",
                      S_KARG(key, n));
    *klen = n;
    return 0;
}

/* Add a node; takes ownership of nothing (copies everything). */
static int s_add(shoal_graph_t *g, const char *key, size_t klen, const char *func,
                 const void *data, size_t len, s_ref_t *refs, uint32_t nrefs,
                 const shoal_submit_opts_t *o, shoal_error_t *err)
{
    if (g->n >= S_MAX_NODES)
        return s_fail(err, E2BIG, "a graph holds at most %u keys", S_MAX_NODES);
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 64;
        s_node_t *nn = realloc(g->nodes, cap * sizeof *nn);
        if (!nn)
            return s_fail(err, ENOMEM, "out of memory adding key " S_KFMT, S_KARG(key, klen));
        g->nodes = nn;
        g->cap = cap;
    }
    s_node_t *nd = &g->nodes[g->n];
    memset(nd, 0, sizeof *nd);
    nd->key = strndup(key, klen);
    nd->klen = klen;
    nd->func = func ? strdup(func) : NULL;
    nd->data = malloc(len ? len : 1);
    if (!nd->key || (func && !nd->func) || !nd->data)
        goto nomem;
    memcpy(nd->data, data, len);
    nd->len = len;
    nd->priority = o ? o->priority : 0;
    nd->retries = o ? (uint32_t)o->retries : 0;
    if (s_map_put(&g->keys, nd->key, klen, (uint32_t)g->n) < 0)
        goto nomem;
    nd->refs = refs;
    nd->nrefs = nrefs;
    g->n++;
    s_unresolve(g);
    return 0;
nomem:
    free(nd->key);
    free(nd->func);
    free(nd->data);
    free(refs);
    return s_fail(err, ENOMEM, "out of memory adding key " S_KFMT, S_KARG(key, klen));
}

int shoal_graph_add_value(shoal_graph_t *g, const char *key, const void *packed, size_t len,
                          shoal_error_t *err)
{
    size_t klen;
    s_ref_t *refs;
    uint32_t nrefs;
    const char *why = NULL;

    if (!g)
        return s_fail(err, EINVAL, "shoal_graph_add_value: no graph");
    if (s_check_key(g, key, &klen, err) < 0)
        return -1;
    if (!packed || len > CLIENT_MAX_ARGS)
        return s_fail(err, EINVAL, "value of key " S_KFMT ": %s", S_KARG(key, klen),
                      packed ? "larger than 256 MiB" : "no bytes given");
    if (s_scan(packed, len, 0, &refs, &nrefs, &why) < 0)
        return s_fail(err, errno, "value of key " S_KFMT ": %s", S_KARG(key, klen), why);
    if (nrefs) {
        s_fail(err, EINVAL,
               "value of key " S_KFMT " refers to key " S_KFMT
               ": only task arguments can refer to keys",
               S_KARG(key, klen), S_KARG((const char *)packed + refs[0].koff, refs[0].klen));
        free(refs);
        return -1;
    }
    return s_add(g, key, klen, NULL, packed, len, NULL, 0, NULL, err);
}

int shoal_graph_add_task(shoal_graph_t *g, const char *key, const char *func,
                         const void *args, size_t len, const shoal_submit_opts_t *opts,
                         shoal_error_t *err)
{
    size_t klen;
    s_ref_t *refs;
    uint32_t nrefs;
    const char *why = NULL;

    if (!g)
        return s_fail(err, EINVAL, "shoal_graph_add_task: no graph");
    if (s_check_key(g, key, &klen, err) < 0)
        return -1;
    size_t flen = func ? strnlen(func, CLIENT_MAX_FUNC + 1) : 0;
    if (flen == 0 || flen > SHOAL_GRAPH_MAX_KEY)
        return s_fail(err, EINVAL, "task " S_KFMT ": the function name must be 1 to %d bytes",
                      S_KARG(key, klen), SHOAL_GRAPH_MAX_KEY);
    if (opts && (opts->retries < 0 || opts->retries > S_MAX_RETRIES))
        return s_fail(err, EINVAL, "task " S_KFMT ": retries must be 0 to %d",
                      S_KARG(key, klen), S_MAX_RETRIES);
    if (!args || len > CLIENT_MAX_ARGS)
        return s_fail(err, EINVAL, "arguments of task " S_KFMT ": %s", S_KARG(key, klen),
                      args ? "larger than 256 MiB" : "no bytes given");
    if (s_scan(args, len, 1, &refs, &nrefs, &why) < 0)
        return s_fail(err, errno, "arguments of task " S_KFMT ": %s", S_KARG(key, klen),
                      why);
    return s_add(g, key, klen, func, args, len, refs, nrefs, opts, err);
}

int shoal_graph_pack_key(msgpack_packer *pk, const char *key)
{
    size_t n = key ? strnlen(key, SHOAL_GRAPH_MAX_KEY + 1) : 0;
    if (!pk || n == 0 || n > SHOAL_GRAPH_MAX_KEY) {
        errno = EINVAL;
        return -1;
    }
    if (msgpack_pack_ext(pk, n, SHOAL_EXT_KEY) || msgpack_pack_ext_body(pk, key, n)) {
        errno = ENOMEM;
        return -1;
    }
    return 0;
}

size_t shoal_graph_size(const shoal_graph_t *g)
{
    return g ? g->n : 0;
}

const char *shoal_graph_key(const shoal_graph_t *g, size_t i)
{
    return g && i < g->n ? g->nodes[i].key : NULL;
}

int shoal_graph_has(const shoal_graph_t *g, const char *key)
{
    if (!g || !key)
        return 0;
    return s_map_get(&g->keys, key, strnlen(key, SHOAL_GRAPH_MAX_KEY + 1), NULL);
}

size_t shoal_graph_sinks(const shoal_graph_t *g, const char **out, size_t cap)
{
    if (!g || g->n == 0)
        return 0;
    uint8_t *used = calloc(g->n, 1);
    if (!used) {
        errno = ENOMEM;
        return 0;
    }
    for (size_t i = 0; i < g->n; i++) {
        const s_node_t *nd = &g->nodes[i];
        for (uint32_t r = 0; r < nd->nrefs; r++) {
            uint32_t t;
            if (s_map_get(&g->keys, (const char *)nd->data + nd->refs[r].koff,
                          nd->refs[r].klen, &t) &&
                t != i)
                used[t] = 1;
        }
    }
    size_t k = 0;
    for (size_t i = 0; i < g->n; i++) {
        if (used[i])
            continue;
        if (out && k < cap)
            out[k] = g->nodes[i].key;
        k++;
    }
    free(used);
    return k;
}

/* ---- resolving and ordering ---------------------------------------------------- */

/* "cycle: a -> b -> a" from the DFS stack stk[from..top) closing on `back`;
 * long cycles keep their start and end around a "...". */
static int s_cycle(const shoal_graph_t *g, const uint32_t *stk, size_t from, size_t top,
                   uint32_t back, shoal_error_t *err)
{
    char buf[sizeof err->msg];
    size_t n = 0, cap = sizeof buf - 80;
    n += (size_t)snprintf(buf, sizeof buf, "cycle: ");
    for (size_t i = from; i < top; i++) {
        const s_node_t *nd = &g->nodes[stk[i]];
        size_t kl = nd->klen > 60 ? 60 : nd->klen;
        if (n + kl + 4 > cap && i + 1 < top) {
            /* Skip to the last node of the cycle. */
            n += (size_t)snprintf(buf + n, sizeof buf - n, "... -> ");
            i = top - 1;
            nd = &g->nodes[stk[i]];
            kl = nd->klen > 60 ? 60 : nd->klen;
        }
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%.*s -> ", (int)kl, nd->key);
        if (n >= sizeof buf)
            break;
    }
    const s_node_t *b = &g->nodes[back];
    if (n < sizeof buf)
        snprintf(buf + n, sizeof buf - n, "%.*s", (int)(b->klen > 60 ? 60 : b->klen), b->key);
    return s_fail(err, EINVAL, "%s", buf);
}

/* Resolve every reference, build the dependency lists and the order, and
 * find cycles.  Cached until the graph changes.  0 or -1 with err. */
static int s_resolve(shoal_graph_t *g, shoal_error_t *err)
{
    if (g->resolved)
        return 0;
    s_unresolve(g);
    size_t n = g->n, total = 0;
    for (size_t i = 0; i < n; i++)
        total += g->nodes[i].nrefs;
    uint32_t *seen = malloc((n ? n : 1) * sizeof *seen);
    uint8_t *color = calloc(n ? n : 1, 1);
    uint32_t *stk = malloc((n ? n : 1) * sizeof *stk);
    size_t *pos = malloc((n ? n : 1) * sizeof *pos);
    g->dep_off = malloc((n + 1) * sizeof *g->dep_off);
    g->dep = malloc((total ? total : 1) * sizeof *g->dep);
    g->order = malloc((n ? n : 1) * sizeof *g->order);
    int rc = -1;
    if (!seen || !color || !stk || !pos || !g->dep_off || !g->dep || !g->order) {
        s_fail(err, ENOMEM, "out of memory checking the graph");
        goto out;
    }
    memset(seen, 0xff, n * sizeof *seen);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        s_node_t *nd = &g->nodes[i];
        g->dep_off[i] = k;
        for (uint32_t r = 0; r < nd->nrefs; r++) {
            s_ref_t *ref = &nd->refs[r];
            uint32_t t;
            if (!s_map_get(&g->keys, (const char *)nd->data + ref->koff, ref->klen, &t)) {
                s_fail(err, EINVAL, "task " S_KFMT " refers to unknown key " S_KFMT,
                       S_KARG(nd->key, nd->klen),
                       S_KARG((const char *)nd->data + ref->koff, ref->klen));
                goto out;
            }
            ref->target = t;
            if (seen[t] != (uint32_t)i) {
                seen[t] = (uint32_t)i;
                g->dep[k++] = t;
            }
        }
    }
    g->dep_off[n] = k;

    /* Depth-first, iteratively (a chain of a million tasks must not
     * overflow the C stack): 0 unvisited, 1 on the stack, 2 done.  A node
     * is appended to the order once all its dependencies are. */
    size_t done = 0;
    for (size_t root = 0; root < n; root++) {
        if (color[root])
            continue;
        size_t top = 0;
        stk[top] = (uint32_t)root;
        pos[top++] = g->dep_off[root];
        color[root] = 1;
        while (top) {
            uint32_t v = stk[top - 1];
            if (pos[top - 1] < g->dep_off[v + 1]) {
                uint32_t d = g->dep[pos[top - 1]++];
                if (color[d] == 0) {
                    color[d] = 1;
                    stk[top] = d;
                    pos[top++] = g->dep_off[d];
                } else if (color[d] == 1) {
                    size_t from = top - 1;
                    while (stk[from] != d)
                        from--;
                    s_cycle(g, stk, from, top, d, err);
                    goto out;
                }
                continue;
            }
            color[v] = 2;
            g->order[done++] = v;
            top--;
        }
    }
    g->resolved = 1;
    rc = 0;
out:
    free(seen);
    free(color);
    free(stk);
    free(pos);
    if (rc < 0)
        s_unresolve(g);
    return rc;
}

/* Name the first task whose function `known` rejects (and count the others). */
static int s_check_funcs(const shoal_graph_t *g, tasklib_t *tl, const s_map_t *names,
                         const char *where, shoal_error_t *err)
{
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < g->n; i++) {
        const s_node_t *nd = &g->nodes[i];
        if (!nd->func)
            continue;
        size_t fl = strlen(nd->func);
        if (tasklib_find(tl, nd->func, fl) || (names && s_map_get(names, nd->func, fl, NULL)))
            continue;
        if (bad++ == 0)
            first = i;
    }
    if (!bad)
        return 0;
    const s_node_t *nd = &g->nodes[first];
    char more[64] = "";
    if (bad > 1)
        snprintf(more, sizeof more, " (and %zu more task%s)", bad - 1, bad > 2 ? "s" : "");
    return s_fail(err, ENOENT,
                  "task " S_KFMT " calls unknown function " S_KFMT
                  ": it is not a built-in function nor in %s%s",
                  S_KARG(nd->key, nd->klen), S_KARG(nd->func, strlen(nd->func)), where, more);
}

int shoal_graph_check(shoal_graph_t *g, const char *const *funcs, size_t nfuncs,
                      shoal_error_t *err)
{
    if (!g)
        return s_fail(err, EINVAL, "shoal_graph_check: no graph");
    if (s_resolve(g, err) < 0)
        return -1;
    if (!funcs)
        return 0;
    s_map_t names = {0};
    tasklib_t *tl = tasklib_create();
    int rc = -1;
    if (!tl) {
        s_fail(err, ENOMEM, "out of memory checking the graph");
        goto out;
    }
    for (size_t i = 0; i < nfuncs; i++) {
        if (!funcs[i])
            continue;
        size_t fl = strlen(funcs[i]);
        if (!s_map_get(&names, funcs[i], fl, NULL) && s_map_put(&names, funcs[i], fl, 0) < 0) {
            s_fail(err, ENOMEM, "out of memory checking the graph");
            goto out;
        }
    }
    rc = s_check_funcs(g, tl, &names, "the functions given", err);
out:
    s_map_free(&names);
    tasklib_destroy(tl);
    return rc;
}

int shoal_graph_check_libraries(shoal_graph_t *g, const char *const *paths, size_t npaths,
                                shoal_error_t *err)
{
    if (!g || (npaths && !paths))
        return s_fail(err, EINVAL, "shoal_graph_check_libraries: missing argument");
    if (s_resolve(g, err) < 0)
        return -1;
    tasklib_t *tl = tasklib_create();
    if (!tl)
        return s_fail(err, ENOMEM, "out of memory checking the graph");
    int rc = -1;
    for (size_t i = 0; i < npaths; i++) {
        char why[512], path[4096];
        /* dlopen searches the library path for a name without a slash;
         * the caller means the file (which is what an upload reads). */
        if (util_fmt(path, sizeof path, "%s%s", strchr(paths[i], '/') ? "" : "./",
                     paths[i]) < 0) {
            s_fail(err, ENAMETOOLONG, "task library path too long");
            goto out;
        }
        if (tasklib_load(tl, path, why, sizeof why) < 0) {
            s_fail(err, errno ? errno : EINVAL, "task library %s: %s", paths[i], why);
            goto out;
        }
    }
    rc = s_check_funcs(g, tl, NULL, npaths ? "the task libraries given" : "any task library",
                       err);
out:
    tasklib_destroy(tl);
    return rc;
}

/* ---- submitting ---------------------------------------------------------------- */

enum { F_WANTED = 1, F_NEEDED = 2, F_SUBMIT = 4 };

typedef struct s_plan {
    uint8_t *flags;     /* per node */
    uint32_t *rank;     /* per node: its place among the submitted */
    uint32_t *sub;      /* the submitted nodes, in dependency order */
    size_t m;
    uint32_t *wnode;    /* node of want[i] */
} s_plan_t;

static void s_plan_free(s_plan_t *p)
{
    free(p->flags);
    free(p->rank);
    free(p->sub);
    free(p->wnode);
}

/* Cull: mark the wanted keys and what they need, and choose what becomes a
 * task: every needed task, and the needed values that cannot be inlined
 * (wanted ones, which need a future, and large ones). */
static int s_plan(const shoal_graph_t *g, const char *const *want, size_t nwant,
                  s_plan_t *p, shoal_error_t *err)
{
    size_t n = g->n;
    memset(p, 0, sizeof *p);
    p->flags = calloc(n, 1);
    p->rank = malloc(n * sizeof *p->rank);
    p->sub = malloc(n * sizeof *p->sub);
    p->wnode = malloc(nwant * sizeof *p->wnode);
    if (!p->flags || !p->rank || !p->sub || !p->wnode)
        return s_fail(err, ENOMEM, "out of memory submitting the graph");
    for (size_t i = 0; i < nwant; i++) {
        uint32_t v;
        if (!want[i])
            return s_fail(err, EINVAL, "wanted key %zu is NULL", i);
        size_t kl = strnlen(want[i], SHOAL_GRAPH_MAX_KEY + 1);
        if (!s_map_get(&g->keys, want[i], kl, &v))
            return s_fail(err, ENOENT, "no key " S_KFMT " in the graph", S_KARG(want[i], kl));
        p->wnode[i] = v;
        p->flags[v] |= F_WANTED | F_NEEDED;
    }
    for (size_t i = n; i-- > 0;) {
        uint32_t v = g->order[i];
        if (!(p->flags[v] & F_NEEDED))
            continue;
        for (size_t d = g->dep_off[v]; d < g->dep_off[v + 1]; d++)
            p->flags[g->dep[d]] |= F_NEEDED;
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t v = g->order[i];
        const s_node_t *nd = &g->nodes[v];
        if (!(p->flags[v] & F_NEEDED))
            continue;
        if (nd->func || (p->flags[v] & F_WANTED) || nd->len > SHOAL_GRAPH_INLINE_MAX) {
            p->flags[v] |= F_SUBMIT;
            p->rank[v] = (uint32_t)p->m;
            p->sub[p->m++] = v;
        }
    }
    return 0;
}

/*
 * The arguments node v is submitted with, into b: its own with every key
 * reference replaced by the referred value's bytes (inlined) or a future
 * reference to the referred task's id (ids[rank]); a submitted value is
 * [value] for shoal.echo.  0, or -1 with err (E2BIG: over CLIENT_MAX_ARGS).
 */
static int s_build_args(const shoal_graph_t *g, const s_plan_t *p, uint32_t v,
                        const uint64_t *ids, s_buf_t *b, shoal_error_t *err)
{
    const s_node_t *nd = &g->nodes[v];
    size_t total;
    b->n = 0;
    if (!nd->func) {
        total = 1 + nd->len;
        if (s_buf_reserve(b, total) < 0)
            return s_fail(err, ENOMEM, "out of memory submitting the graph");
        b->p[b->n++] = 0x91; /* an array of one */
        s_buf_put(b, nd->data, nd->len);
        return 0;
    }
    total = nd->len;
    for (uint32_t r = 0; r < nd->nrefs; r++) {
        const s_ref_t *ref = &nd->refs[r];
        size_t add = (p->flags[ref->target] & F_SUBMIT) ? S_REF_BYTES
                                                       : g->nodes[ref->target].len;
        total = total - ref->span + add;
        if (total > CLIENT_MAX_ARGS)
            return s_fail(err, E2BIG,
                          "arguments of task " S_KFMT
                          " would be larger than 256 MiB with the values they use inlined",
                          S_KARG(nd->key, nd->klen));
    }
    if (s_buf_reserve(b, total) < 0)
        return s_fail(err, ENOMEM, "out of memory submitting the graph");
    size_t at = 0;
    for (uint32_t r = 0; r < nd->nrefs; r++) {
        const s_ref_t *ref = &nd->refs[r];
        s_buf_put(b, nd->data + at, ref->off - at);
        if (p->flags[ref->target] & F_SUBMIT) {
            uint8_t x[S_REF_BYTES];
            uint64_t id = ids[p->rank[ref->target]];
            x[0] = 0xd7;
            x[1] = (uint8_t)SHOAL_EXT_FUTURE;
            for (int i = 0; i < 8; i++)
                x[2 + i] = (uint8_t)(id >> (56 - 8 * i));
            s_buf_put(b, x, sizeof x);
        } else {
            const s_node_t *t = &g->nodes[ref->target];
            s_buf_put(b, t->data, t->len);
        }
        at = ref->off + ref->span;
    }
    s_buf_put(b, nd->data + at, nd->len - at);
    return 0;
}

/* Scan the built arguments of node v for its dependencies (the future
 * references, ours and any the caller put in), checking them as a worker
 * will.  *ids is malloc'd. */
static int s_deps(const shoal_graph_t *g, uint32_t v, const s_buf_t *b, uint64_t **ids,
                  size_t *nids, shoal_error_t *err)
{
    const s_node_t *nd = &g->nodes[v];
    if (exec_scan_deps(b->p, b->n, ids, nids) < 0) {
        if (errno == ENOMEM)
            return s_fail(err, ENOMEM, "out of memory submitting the graph");
        return s_fail(err, EINVAL,
                      "arguments of task " S_KFMT
                      " nest deeper than 32 levels once the values they use are inlined",
                      S_KARG(nd->key, nd->klen));
    }
    if (*nids > S_MAX_DEPS) {
        free(*ids);
        *ids = NULL;
        return s_fail(err, EINVAL, "task " S_KFMT " depends on more than %d tasks",
                      S_KARG(nd->key, nd->klen), S_MAX_DEPS);
    }
    return 0;
}

static int s_submit_inline(shoal_client_t *c, const shoal_graph_t *g, const s_plan_t *p,
                           size_t nwant, shoal_future_t **out, shoal_error_t *err)
{
    shoal_future_t **fs = calloc(p->m ? p->m : 1, sizeof *fs);
    uint64_t *ids = malloc((p->m ? p->m : 1) * sizeof *ids);
    s_buf_t b = {0};
    size_t r = 0;
    int rc = -1;

    if (!fs || !ids) {
        s_fail(err, ENOMEM, "out of memory submitting the graph");
        goto out;
    }
    /* One at a time, in dependency order: an inline submission runs the
     * task before it returns. */
    for (r = 0; r < p->m; r++) {
        uint32_t v = p->sub[r];
        const s_node_t *nd = &g->nodes[v];
        shoal_submit_opts_t o = {.priority = nd->priority, .retries = (int)nd->retries,
                                 .name = nd->key};
        if (s_build_args(g, p, v, ids, &b, err) < 0)
            goto out;
        uint64_t *dids = NULL;
        size_t nd_ids = 0;
        if (s_deps(g, v, &b, &dids, &nd_ids, err) < 0)
            goto out;
        free(dids);
        fs[r] = shoal_submit(c, nd->func ? nd->func : S_ECHO, b.p, b.n, &o, err);
        if (!fs[r])
            goto out;
        ids[r] = shoal_future_id(fs[r]);
    }
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < nwant; i++) {
        out[i] = fs[p->rank[p->wnode[i]]];
        out[i]->refs++;
    }
    pthread_mutex_unlock(&c->mu);
    rc = 0;
out:
    /* The graph's own references: every future that was made, wanted or
     * not (the wanted ones keep the reference taken for out[]). */
    for (size_t i = 0; fs && i < r; i++)
        shoal_release(fs[i]);
    if (rc < 0)
        for (size_t i = 0; i < nwant; i++)
            out[i] = NULL;
    free(fs);
    free(ids);
    free(b.p);
    return rc;
}

static int s_u64vec_reserve(u64vec_t *v, size_t more)
{
    if (v->cap - v->n >= more)
        return 0;
    size_t cap = v->cap ? v->cap : 64;
    while (cap - v->n < more)
        cap *= 2;
    uint64_t *nv = realloc(v->v, cap * sizeof *nv);
    if (!nv)
        return -1;
    v->v = nv;
    v->cap = cap;
    return 0;
}

static int s_submit_remote(shoal_client_t *c, const shoal_graph_t *g, const s_plan_t *p,
                           size_t nwant, shoal_future_t **out, shoal_error_t *err)
{
    uint64_t *ids = malloc((p->m ? p->m : 1) * sizeof *ids);
    shoal_future_t **fs = calloc(p->m ? p->m : 1, sizeof *fs);
    subbatch_t *sb = client_subbatch_new(), *spare = client_subbatch_new();
    u64vec_t ext = {0};
    s_buf_t b = {0};
    size_t nrel = 0;
    uint64_t cid, n0;
    int rc = -1;

    if (!ids || !fs || !sb || !spare) {
        s_fail(err, ENOMEM, "out of memory submitting the graph");
        goto out;
    }

    /* 1. Reserve the ids.  Ids reserved and then not used (a failure
     * below) are simply skipped: there are 2^40 of them per connection. */
    pthread_mutex_lock(&c->mu);
    if (c->stopping || c->dead) {
        char msg[sizeof c->dead_msg];
        int e = c->stopping ? ESHUTDOWN : ENOTCONN;
        snprintf(msg, sizeof msg, "%s", c->stopping ? "the client is disconnecting"
                                                    : c->dead_msg);
        pthread_mutex_unlock(&c->mu);
        s_fail(err, e, "cannot submit: %s", msg);
        goto out;
    }
    if (c->next_n + p->m - 1 > CLIENT_N_MAX) {
        pthread_mutex_unlock(&c->mu);
        s_fail(err, ENOSPC, "this client has used up its task ids; connect again");
        goto out;
    }
    cid = c->client_id;
    n0 = c->next_n;
    c->next_n += p->m;
    pthread_mutex_unlock(&c->mu);

    /* 2. Pack the message, without the lock. */
    for (size_t r = 0; r < p->m; r++)
        ids[r] = (cid << CLIENT_ID_SHIFT) | (n0 + r);
    for (size_t r = 0; r < p->m; r++) {
        uint32_t v = p->sub[r];
        const s_node_t *nd = &g->nodes[v];
        uint64_t *dids = NULL;
        size_t ndids = 0;
        if (s_build_args(g, p, v, ids, &b, err) < 0 || s_deps(g, v, &b, &dids, &ndids, err) < 0)
            goto out;
        msgpack_packer *pk = proto_batch_add(&sb->b);
        const char *func = nd->func ? nd->func : S_ECHO;
        int prc = msgpack_pack_array(pk, 7);
        prc |= msgpack_pack_uint64(pk, ids[r]);
        prc |= mp_pack_strn(pk, func, strlen(func));
        prc |= mp_pack_bin(pk, b.p, b.n);
        prc |= msgpack_pack_array(pk, (uint32_t)ndids);
        for (size_t d = 0; d < ndids; d++) {
            prc |= msgpack_pack_uint64(pk, dids[d]);
            /* A dependency outside this graph's ids is a future the caller
             * packed in: it must still exist when the message is queued. */
            if (dids[d] < ids[0] || dids[d] > ids[p->m - 1])
                prc |= client_u64vec_push(&ext, dids[d]);
        }
        free(dids);
        prc |= msgpack_pack_int(pk, nd->priority);
        prc |= msgpack_pack_int(pk, (int)nd->retries);
        prc |= mp_pack_strn(pk, nd->key, nd->klen);
        if (prc) {
            s_fail(err, ENOMEM, "out of memory submitting the graph");
            goto out;
        }
        if (proto_batch_bytes(&sb->b) > SHOAL_GRAPH_MAX_MESSAGE) {
            s_fail(err, E2BIG,
                   "the graph does not fit in one message of at most %zu bytes (it is "
                   "past that at task %zu of %zu)",
                   (size_t)SHOAL_GRAPH_MAX_MESSAGE, r + 1, p->m);
            goto out;
        }
        if (!(p->flags[v] & F_WANTED))
            nrel++;
    }

    /* 3. Queue it: futures, the message, the releases; all or nothing. */
    pthread_mutex_lock(&c->mu);
    if (c->stopping || c->dead || c->client_id != cid) {
        pthread_mutex_unlock(&c->mu);
        s_fail(err, c->stopping ? ESHUTDOWN : ENOTCONN,
               "cannot submit: the connection to the scheduler was lost or reset while "
               "the graph was being packed");
        goto out;
    }
    for (size_t i = 0; i < ext.n; i++) {
        if (!ftab_get(&c->futures, ext.v[i])) {
            pthread_mutex_unlock(&c->mu);
            s_fail(err, EINVAL, "argument refers to an unknown or released future (id %llu)",
                   (unsigned long long)ext.v[i]);
            goto out;
        }
    }
    if (s_u64vec_reserve(&c->rel, nrel) < 0)
        goto nomem_locked;
    for (size_t i = 0; i < nwant; i++) {
        uint32_t r = p->rank[p->wnode[i]];
        if (fs[r])
            continue;
        const s_node_t *nd = &g->nodes[p->wnode[i]];
        fs[r] = client_future_new(c, ids[r]);
        if (!fs[r])
            goto nomem_locked;
        if (!(fs[r]->name = strndup(nd->key, nd->klen)))
            goto nomem_locked;
    }
    for (size_t r = 0; r < p->m; r++)
        if (!(p->flags[p->sub[r]] & F_WANTED))
            c->rel.v[c->rel.n++] = ids[r];
    /* Whatever was submitted before goes first: this graph's tasks may
     * depend on it. */
    if (c->sub->b.count > 0) {
        if (c->full_tail)
            c->full_tail->next = c->sub;
        else
            c->full_head = c->sub;
        c->full_tail = c->sub;
        c->sub = spare;
        spare = NULL;
    }
    if (c->full_tail)
        c->full_tail->next = sb;
    else
        c->full_head = sb;
    c->full_tail = sb;
    sb = NULL;
    /* Each future starts with one reference; a key wanted k times gets k. */
    for (size_t i = 0; i < nwant; i++) {
        shoal_future_t *f = fs[p->rank[p->wnode[i]]];
        for (size_t j = 0; j < i; j++) {
            if (out[j] == f) {
                f->refs++;
                break;
            }
        }
        out[i] = f;
    }
    client_wake_locked(c);
    pthread_mutex_unlock(&c->mu);
    client_kick(c);
    rc = 0;
    goto out;

nomem_locked:
    for (size_t r = 0; r < p->m; r++) {
        if (!fs[r])
            continue;
        ftab_del(&c->futures, fs[r], c->next_n);
        free(fs[r]->name);
        free(fs[r]);
        fs[r] = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    s_fail(err, ENOMEM, "out of memory submitting the graph");
out:
    if (rc < 0)
        for (size_t i = 0; i < nwant; i++)
            out[i] = NULL;
    client_subbatch_free(sb);
    client_subbatch_free(spare);
    free(ext.v);
    free(ids);
    free(fs);
    free(b.p);
    return rc;
}

int shoal_graph_submit(shoal_client_t *c, shoal_graph_t *g, const char *const *want,
                       size_t nwant, shoal_future_t **out, shoal_error_t *err)
{
    s_plan_t p;
    if (!c || !g || !want || !out)
        return s_fail(err, EINVAL, "shoal_graph_submit: missing argument");
    if (nwant == 0)
        return s_fail(err, EINVAL, "shoal_graph_submit: no key wanted");
    for (size_t i = 0; i < nwant; i++)
        out[i] = NULL;
    if (s_resolve(g, err) < 0)
        return -1;
    int rc = -1;
    if (s_plan(g, want, nwant, &p, err) == 0) {
        if (c->inline_mode)
            rc = s_submit_inline(c, g, &p, nwant, out, err);
        else
            rc = s_submit_remote(c, g, &p, nwant, out, err);
    }
    int e = errno;
    s_plan_free(&p);
    errno = e;
    return rc;
}

/* ---- JSON graphs ------------------------------------------------------------------ */

typedef struct s_jctx {
    const char *text;
    size_t len;
    const char *label;      /* "PATH:" or "" */
    const s_map_t *keys;    /* the graph's keys, known before any task is added */
    shoal_error_t *err;
} s_jctx_t;

static int __attribute__((format(printf, 4, 5)))
s_jfail(const s_jctx_t *jc, size_t pos, int errnum, const char *fmt, ...)
{
    char msg[sizeof jc->err->msg];
    unsigned line, col;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_pos(jc->text, jc->len, pos, &line, &col);
    return s_fail(jc->err, errnum, "%s%u:%u: %s", jc->label, line, col, msg);
}

/* Pack a task argument: strings equal to a key become key references. */
static int s_pack_arg(msgpack_packer *pk, const json_value_t *v, const s_map_t *keys)
{
    switch (v->type) {
    case JSON_STRING:
        if (s_map_get(keys, v->u.str.s, v->u.str.len, NULL))
            return (msgpack_pack_ext(pk, v->u.str.len, SHOAL_EXT_KEY) ||
                    msgpack_pack_ext_body(pk, v->u.str.s, v->u.str.len))
                       ? -1
                       : 0;
        return json_pack(pk, v);
    case JSON_ARRAY:
        if (msgpack_pack_array(pk, v->u.arr.n))
            return -1;
        for (size_t i = 0; i < v->u.arr.n; i++)
            if (s_pack_arg(pk, &v->u.arr.v[i], keys) < 0)
                return -1;
        return 0;
    case JSON_OBJECT:
        if (msgpack_pack_map(pk, v->u.obj.n))
            return -1;
        for (size_t i = 0; i < v->u.obj.n; i++) {
            const json_member_t *m = &v->u.obj.m[i];
            if (msgpack_pack_str(pk, m->klen) || msgpack_pack_str_body(pk, m->key, m->klen) ||
                s_pack_arg(pk, &m->value, keys) < 0)
                return -1;
        }
        return 0;
    default:
        return json_pack(pk, v);
    }
}

static shoal_graph_t *s_from_json(const char *text, size_t len, const char *label,
                                  shoal_error_t *err)
{
    json_error_t je;
    s_map_t keys = {0};
    msgpack_sbuffer sb;
    msgpack_packer pk;
    shoal_graph_t *g = NULL;
    s_jctx_t jc = {text, len, label, &keys, err};

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    json_doc_t *doc = json_parse(text, len, &je);
    if (!doc) {
        int e = errno;
        if (je.line)
            s_fail(err, e, "%s%u:%u: %s", label, je.line, je.col, je.msg);
        else
            s_fail(err, e, "%s %s", label, je.msg);
        goto error;
    }
    const json_value_t *root = json_root(doc);
    if (root->type != JSON_OBJECT) {
        s_jfail(&jc, root->pos, EINVAL,
                "a graph must be a JSON object mapping keys to tasks or values, not %s %s",
                root->type == JSON_ARRAY || root->type == JSON_OBJECT ? "an" : "a",
                json_type_name(root->type));
        goto error;
    }
    /* The keys first: an argument may name a key defined further down. */
    for (size_t i = 0; i < root->u.obj.n; i++) {
        const json_member_t *m = &root->u.obj.m[i];
        uint32_t first;
        if (m->klen == 0 || m->klen > SHOAL_GRAPH_MAX_KEY || memchr(m->key, '\0', m->klen)) {
            s_jfail(&jc, m->pos, EINVAL, "key " S_KFMT ": a key must be 1 to %d bytes, with no NUL",
                    S_KARG(m->key, m->klen), SHOAL_GRAPH_MAX_KEY);
            goto error;
        }
        if (s_map_get(&keys, m->key, m->klen, &first)) {
            unsigned l, c;
            json_pos(text, len, root->u.obj.m[first].pos, &l, &c);
            s_jfail(&jc, m->pos, EINVAL, "duplicate key " S_KFMT " (first at %u:%u)",
                    S_KARG(m->key, m->klen), l, c);
            goto error;
        }
        if (s_map_put(&keys, m->key, m->klen, (uint32_t)i) < 0) {
            s_fail(err, ENOMEM, "out of memory reading the graph");
            goto error;
        }
    }
    if (root->u.obj.n > S_MAX_NODES) {
        s_fail(err, E2BIG, "%sa graph holds at most %u keys", label, S_MAX_NODES);
        goto error;
    }
    g = shoal_graph_create();
    if (!g) {
        s_fail(err, ENOMEM, "out of memory reading the graph");
        goto error;
    }
    for (size_t i = 0; i < root->u.obj.n; i++) {
        const json_member_t *m = &root->u.obj.m[i];
        const json_value_t *v = &m->value;
        shoal_error_t e2;
        int rc;
        sb.size = 0;
        if (v->type == JSON_ARRAY && v->u.arr.n > 0 && v->u.arr.v[0].type == JSON_STRING) {
            const json_value_t *fv = &v->u.arr.v[0];
            if (fv->u.str.len == 0 || fv->u.str.len > SHOAL_GRAPH_MAX_KEY ||
                memchr(fv->u.str.s, '\0', fv->u.str.len)) {
                s_jfail(&jc, fv->pos, EINVAL,
                        "task " S_KFMT ": the function name must be 1 to %d bytes, with no NUL",
                        S_KARG(m->key, m->klen), SHOAL_GRAPH_MAX_KEY);
                goto error;
            }
            int prc = msgpack_pack_array(&pk, v->u.arr.n - 1);
            for (size_t a = 1; a < v->u.arr.n && !prc; a++)
                prc = s_pack_arg(&pk, &v->u.arr.v[a], &keys);
            if (prc) {
                s_fail(err, ENOMEM, "out of memory reading the graph");
                goto error;
            }
            rc = shoal_graph_add_task(g, m->key, fv->u.str.s, sb.data, sb.size, NULL, &e2);
        } else {
            if (json_pack(&pk, v) < 0) {
                s_fail(err, ENOMEM, "out of memory reading the graph");
                goto error;
            }
            rc = shoal_graph_add_value(g, m->key, sb.data, sb.size, &e2);
        }
        if (rc < 0) {
            s_jfail(&jc, v->pos, errno, "%s", e2.msg);
            goto error;
        }
    }
    json_doc_destroy(doc);
    s_map_free(&keys);
    msgpack_sbuffer_destroy(&sb);
    return g;
error:;
    int e = errno;
    shoal_graph_destroy(g);
    json_doc_destroy(doc);
    s_map_free(&keys);
    msgpack_sbuffer_destroy(&sb);
    errno = e;
    return NULL;
}

shoal_graph_t *shoal_graph_parse_json(const char *text, size_t len, shoal_error_t *err)
{
    if (!text && len) {
        s_fail(err, EINVAL, "shoal_graph_parse_json: no text");
        return NULL;
    }
    return s_from_json(text ? text : "", len, "", err);
}

shoal_graph_t *shoal_graph_load_json(const char *path, shoal_error_t *err)
{
    char label[1100];
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int fd;

    if (!path || !*path) {
        s_fail(err, EINVAL, "no graph file given");
        return NULL;
    }
    snprintf(label, sizeof label, "%.1000s:", path);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        s_fail(err, errno, "%s cannot open: %s", label, strerror(errno));
        return NULL;
    }
    /* Read at most one byte past the bound, to know it was passed. */
    for (;;) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64 * 1024;
            if (ncap > (size_t)JSON_MAX_BYTES + 1)
                ncap = (size_t)JSON_MAX_BYTES + 1;
            if (ncap == cap) {
                close(fd);
                free(buf);
                s_fail(err, E2BIG, "%s the file is larger than %u MiB", label,
                       JSON_MAX_BYTES >> 20);
                return NULL;
            }
            char *nb = realloc(buf, ncap);
            if (!nb) {
                close(fd);
                free(buf);
                s_fail(err, ENOMEM, "%s out of memory reading the file", label);
                return NULL;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            close(fd);
            free(buf);
            s_fail(err, e, "%s cannot read: %s", label, strerror(e));
            return NULL;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (n > JSON_MAX_BYTES) {
        free(buf);
        s_fail(err, E2BIG, "%s the file is larger than %u MiB", label, JSON_MAX_BYTES >> 20);
        return NULL;
    }
    shoal_graph_t *g = s_from_json(buf ? buf : "", n, label, err);
    int e = errno;
    free(buf);
    errno = e;
    return g;
}
