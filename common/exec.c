/*
 * exec.c - running one task in this process.
 *
 * The bytes of a task's arguments come off the network, so before msgpack-c
 * sees them they are walked once by s_walk(), a validator that allocates
 * nothing: it checks that the buffer is exactly one well-formed object, that
 * no container claims more items than there are bytes left (msgpack-c
 * allocates `count * sizeof(msgpack_object)` up front, so an unchecked
 * 5-byte array header could ask it for 96 GiB), that nesting stays within
 * msgpack-c's own limit, and it notes the future references on the way.
 * Only then is the buffer unpacked.  The same walker checks dependency
 * results and what a task packed as its result.
 */
#include "exec.h"

#include <errno.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

/* msgpack-c's unpacker fails on more than MSGPACK_EMBED_STACK_SIZE (32, set
 * when the library was built; the macro is in a private header) open
 * containers; the walker mirrors the limit so that whatever it accepts,
 * msgpack_unpack accepts too. */
#define S_MAX_OPEN 32
/* Bound on recursion when walking an unpacked tree (which msgpack-c already
 * limits to S_MAX_OPEN levels; this is a second fence, not the first). */
#define S_MAX_DEPTH 64
/* Initial capacity of the result buffer.  Results stay in a worker's memory,
 * so a nil result must not pin msgpack's default 8 KiB. */
#define S_RESULT_INIT 128
/* Slots of the per-thread table of last result sizes (a power of two). */
#define S_HINT_SLOTS 64

typedef enum s_walk_err {
    S_OK = 0,
    S_TRUNCATED,      /* ran out of bytes inside the object */
    S_INVALID,        /* a byte that starts no msgpack object (0xc1) */
    S_TOO_DEEP,       /* more than S_MAX_OPEN nested containers */
    S_BAD_REF,        /* ext SHOAL_EXT_FUTURE whose body is not 8 bytes */
    S_NOMEM,          /* collecting reference ids failed */
} s_walk_err_t;

/* Where the walker reports future references: it counts them, and if `ids`
 * collection is wanted (collect != 0) appends their ids. */
typedef struct s_refs {
    int collect;
    size_t n;
    uint64_t *ids;
    size_t cap;
} s_refs_t;

static uint64_t s_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t s_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) |
           (uint32_t)p[3];
}

static uint16_t s_be16(const uint8_t *p)
{
    return (uint16_t)(((unsigned)p[0] << 8) | p[1]);
}

static int s_refs_add(s_refs_t *r, uint64_t id)
{
    r->n++;
    if (!r->collect)
        return 0;
    if (r->n > r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 8;
        uint64_t *nids = realloc(r->ids, ncap * sizeof *nids);
        if (!nids)
            return -1;
        r->ids = nids;
        r->cap = ncap;
    }
    r->ids[r->n - 1] = id;
    return 0;
}

/*
 * Walk one msgpack object starting at p[0], at most len bytes.  On S_OK,
 * *used is the number of bytes the object spans (it may be less than len:
 * the caller decides whether trailing bytes are an error).  `refs` may be
 * NULL when future references are not of interest (then an ext 0x53 is just
 * an ext and is not checked).
 *
 * Each open container is a count of items still to come; a map of n pairs
 * counts 2n items.  No recursion, no allocation (except for collected ids).
 */
static s_walk_err_t s_walk(const uint8_t *p, size_t len, size_t *used, s_refs_t *refs)
{
    uint64_t open[S_MAX_OPEN];
    int top = 0;
    size_t pos = 0;

    for (;;) {
        uint64_t items = 0;   /* container: items it holds */
        size_t body = 0;      /* bytes to skip after the header */
        size_t need = 0;      /* header bytes after the first */
        int container = 0;
        int ext = 0;          /* 1: ext with explicit length, 2: fixext */
        size_t ext_size = 0;

        if (pos >= len)
            return S_TRUNCATED;
        uint8_t b = p[pos++];

        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            /* fixint, negative fixint, nil, false, true: complete */
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
            case 0xcc: case 0xd0: need = 1; break;              /* u8, i8 */
            case 0xcd: case 0xd1: need = 2; break;              /* u16, i16 */
            case 0xce: case 0xd2: case 0xca: need = 4; break;   /* u32, i32, f32 */
            case 0xcf: case 0xd3: case 0xcb: need = 8; break;   /* u64, i64, f64 */
            case 0xc4: case 0xd9: need = 1; break;              /* bin8, str8 */
            case 0xc5: case 0xda: need = 2; break;              /* bin16, str16 */
            case 0xc6: case 0xdb: need = 4; break;              /* bin32, str32 */
            case 0xdc: case 0xde: need = 2; container = 1; break; /* array16, map16 */
            case 0xdd: case 0xdf: need = 4; container = 1; break; /* array32, map32 */
            case 0xd4: ext = 2; ext_size = 1; break;
            case 0xd5: ext = 2; ext_size = 2; break;
            case 0xd6: ext = 2; ext_size = 4; break;
            case 0xd7: ext = 2; ext_size = 8; break;
            case 0xd8: ext = 2; ext_size = 16; break;
            case 0xc7: ext = 1; need = 1; break;
            case 0xc8: ext = 1; need = 2; break;
            case 0xc9: ext = 1; need = 4; break;
            default:
                return S_INVALID;   /* 0xc1, never used */
            }
            if (len - pos < need)
                return S_TRUNCATED;
            const uint8_t *h = p + pos;
            pos += need;
            uint64_t n = 0;
            if (need == 1)
                n = h[0];
            else if (need == 2)
                n = s_be16(h);
            else if (need == 4)
                n = s_be32(h);
            /* For plain numbers `need` bytes were the value: nothing more. */
            if (container) {
                items = (b == 0xde || b == 0xdf) ? 2 * n : n;
            } else if (ext == 1) {
                ext_size = (size_t)n;
            } else if (b == 0xc4 || b == 0xc5 || b == 0xc6 || b == 0xd9 || b == 0xda ||
                       b == 0xdb) {
                body = (size_t)n;
            }
        }

        if (ext) {
            /* The type byte, then the body. */
            if (len - pos < 1)
                return S_TRUNCATED;
            int8_t type = (int8_t)p[pos++];
            if (len - pos < ext_size)
                return S_TRUNCATED;
            if (refs && type == SHOAL_EXT_FUTURE) {
                if (ext_size != 8)
                    return S_BAD_REF;
                if (s_refs_add(refs, s_be64(p + pos)) < 0)
                    return S_NOMEM;
            }
            pos += ext_size;
        } else if (body) {
            if (len - pos < body)
                return S_TRUNCATED;
            pos += body;
        }

        if (container) {
            /* msgpack-c refuses any container (even an empty one) once
             * S_MAX_OPEN are open. */
            if (top >= S_MAX_OPEN)
                return S_TOO_DEEP;
            if (items > 0) {
                /* Every item takes at least one byte: a count beyond the
                 * bytes left is a lie, and would make msgpack-c allocate
                 * for it before finding out. */
                if (items > len - pos)
                    return S_TRUNCATED;
                open[top++] = items;
                continue;
            }
        }

        /* One item is complete: close every container it completes. */
        for (;;) {
            if (top == 0) {
                *used = pos;
                return S_OK;
            }
            if (--open[top - 1] > 0)
                break;
            top--;
        }
    }
}

static const char *s_walk_what(s_walk_err_t e)
{
    switch (e) {
    case S_TRUNCATED: return "truncated or malformed msgpack";
    case S_INVALID: return "invalid msgpack byte";
    case S_TOO_DEEP: return "msgpack nested too deeply";
    case S_BAD_REF: return "malformed future reference (ext 0x53 must hold 8 bytes)";
    case S_NOMEM: return "out of memory";
    default: return "ok";
    }
}

/* Check that buf is exactly one object, which is an array.  Counts the
 * future references into refs.  0, or -1 with a reason in err and errno
 * EINVAL (ENOMEM if collecting the references ran out of memory). */
static int s_check_args(const void *buf, size_t len, s_refs_t *refs, char *err,
                        size_t errcap)
{
    const uint8_t *p = buf;
    size_t used = 0;

    if (!buf || len == 0) {
        snprintf(err, errcap, "bad task arguments: empty");
        errno = EINVAL;
        return -1;
    }
    if (!((p[0] >= 0x90 && p[0] <= 0x9f) || p[0] == 0xdc || p[0] == 0xdd)) {
        snprintf(err, errcap, "bad task arguments: not a msgpack array");
        errno = EINVAL;
        return -1;
    }
    s_walk_err_t e = s_walk(p, len, &used, refs);
    if (e != S_OK) {
        snprintf(err, errcap, "bad task arguments: %s", s_walk_what(e));
        errno = e == S_NOMEM ? ENOMEM : EINVAL;
        return -1;
    }
    if (used != len) {
        snprintf(err, errcap, "bad task arguments: %zu trailing bytes", len - used);
        errno = EINVAL;
        return -1;
    }
    return 0;
}

/* --- Resolving references -------------------------------------------------- */

typedef struct s_dep_slot {
    uint64_t id;
    const exec_dep_t *dep;
    msgpack_object obj;
    int unpacked;
} s_dep_slot_t;

typedef struct s_resolver {
    msgpack_zone *zone;
    s_dep_slot_t *slots;   /* sorted by id when nslots > S_LINEAR */
    size_t nslots;
    char *err;
    size_t errcap;
} s_resolver_t;

/* Below this many dependencies a linear scan beats sorting. */
#define S_LINEAR 8

static int s_slot_cmp(const void *a, const void *b)
{
    uint64_t x = ((const s_dep_slot_t *)a)->id, y = ((const s_dep_slot_t *)b)->id;
    return x < y ? -1 : x > y;
}

static s_dep_slot_t *s_find_slot(s_resolver_t *rs, uint64_t id)
{
    if (rs->nslots <= S_LINEAR) {
        for (size_t i = 0; i < rs->nslots; i++)
            if (rs->slots[i].id == id)
                return &rs->slots[i];
        return NULL;
    }
    size_t lo = 0, hi = rs->nslots;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (rs->slots[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (lo < rs->nslots && rs->slots[lo].id == id) ? &rs->slots[lo] : NULL;
}

/* The dependency result for `id`, unpacked into the zone on first use. */
static const msgpack_object *s_dep_object(s_resolver_t *rs, uint64_t id)
{
    s_dep_slot_t *s = s_find_slot(rs, id);
    if (!s) {
        snprintf(rs->err, rs->errcap, "missing result of dependency %llu",
                 (unsigned long long)id);
        return NULL;
    }
    if (s->unpacked)
        return &s->obj;

    size_t used = 0, off = 0;
    s_walk_err_t e = s->dep->data && s->dep->len
                         ? s_walk(s->dep->data, s->dep->len, &used, NULL)
                         : S_TRUNCATED;
    if (e == S_OK && used != s->dep->len)
        e = S_TRUNCATED;
    if (e != S_OK) {
        snprintf(rs->err, rs->errcap, "result of dependency %llu is not valid: %s",
                 (unsigned long long)id, s_walk_what(e));
        return NULL;
    }
    msgpack_unpack_return ur =
        msgpack_unpack(s->dep->data, s->dep->len, &off, rs->zone, &s->obj);
    if (ur != MSGPACK_UNPACK_SUCCESS) {
        snprintf(rs->err, rs->errcap, "cannot decode the result of dependency %llu",
                 (unsigned long long)id);
        return NULL;
    }
    s->unpacked = 1;
    return &s->obj;
}

/* Replace, in place, every future reference in the tree under o by the
 * result it names.  The tree lives in the zone, so it is ours to modify.
 * A substituted result is not descended into: references inside a result
 * are data, not dependencies of this task. */
static int s_resolve(s_resolver_t *rs, msgpack_object *o, int depth)
{
    if (depth > S_MAX_DEPTH) {
        snprintf(rs->err, rs->errcap, "bad task arguments: nested too deeply");
        return -1;
    }
    switch (o->type) {
    case MSGPACK_OBJECT_EXT:
        if (o->via.ext.type == SHOAL_EXT_FUTURE) {
            if (o->via.ext.size != 8) {
                snprintf(rs->err, rs->errcap, "bad task arguments: %s",
                         s_walk_what(S_BAD_REF));
                return -1;
            }
            const msgpack_object *r =
                s_dep_object(rs, s_be64((const uint8_t *)o->via.ext.ptr));
            if (!r)
                return -1;
            *o = *r;
        }
        return 0;
    case MSGPACK_OBJECT_ARRAY:
        for (uint32_t i = 0; i < o->via.array.size; i++)
            if (s_resolve(rs, &o->via.array.ptr[i], depth + 1) < 0)
                return -1;
        return 0;
    case MSGPACK_OBJECT_MAP:
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            if (s_resolve(rs, &o->via.map.ptr[i].key, depth + 1) < 0 ||
                s_resolve(rs, &o->via.map.ptr[i].val, depth + 1) < 0)
                return -1;
        }
        return 0;
    default:
        return 0;
    }
}

static int s_resolve_refs(msgpack_zone *zone, msgpack_object *args,
                          const exec_dep_t *deps, size_t ndeps, char *err,
                          size_t errcap)
{
    s_resolver_t rs = {.zone = zone, .err = err, .errcap = errcap};

    if (ndeps > 0) {
        if (!deps || ndeps > SIZE_MAX / sizeof(s_dep_slot_t)) {
            snprintf(err, errcap, "bad dependency list");
            return -1;
        }
        rs.slots = msgpack_zone_malloc(zone, ndeps * sizeof(s_dep_slot_t));
        if (!rs.slots) {
            snprintf(err, errcap, "out of memory");
            return -1;
        }
        for (size_t i = 0; i < ndeps; i++)
            rs.slots[i] = (s_dep_slot_t){.id = deps[i].id, .dep = &deps[i]};
        rs.nslots = ndeps;
        if (ndeps > S_LINEAR)
            qsort(rs.slots, ndeps, sizeof *rs.slots, s_slot_cmp);
    }
    return s_resolve(&rs, args, 0);
}

/* --- Running --------------------------------------------------------------- */

/* The size of each function's last result, per thread (direct-mapped on the
 * function's address; a collision just costs a guess).  A function tends to
 * make results of one size: a buffer of that size from the start saves the
 * doubling reallocs from S_RESULT_INIT, which for a large result copy it
 * about once over and touch twice the memory. */
typedef struct s_hint {
    shoal_task_fn fn;
    size_t size;
} s_hint_t;

static __thread s_hint_t s_hints[S_HINT_SLOTS];

static s_hint_t *s_hint_slot(shoal_task_fn fn)
{
    uintptr_t a = (uintptr_t)fn;
    return &s_hints[(a ^ (a >> 6) ^ (a >> 12)) & (S_HINT_SLOTS - 1)];
}

/* Check what the function packed: exactly one complete object.  0 or -1. */
static int s_check_result(const msgpack_sbuffer *sb, char *err, size_t errcap)
{
    size_t used = 0;

    if (sb->size == 0) {
        snprintf(err, errcap, "task packed no result");
        return -1;
    }
    s_walk_err_t e = s_walk((const uint8_t *)sb->data, sb->size, &used, NULL);
    switch (e) {
    case S_OK:
        break;
    case S_TRUNCATED:
        /* Most likely a packing call failed (out of memory) half way. */
        snprintf(err, errcap, "task packed an incomplete result");
        return -1;
    case S_TOO_DEEP:
        snprintf(err, errcap, "task result is nested too deeply (limit %d levels)",
                 S_MAX_OPEN);
        return -1;
    default:
        snprintf(err, errcap, "task packed invalid msgpack");
        return -1;
    }
    if (used != sb->size) {
        snprintf(err, errcap, "task packed more than one object");
        return -1;
    }
    return 0;
}

int exec_task(shoal_task_fn fn, uint64_t id, const char *worker,
              volatile const int *cancelled, const void *args, size_t len,
              const exec_dep_t *deps, size_t ndeps, exec_result_t *r)
{
    msgpack_zone zone;
    msgpack_object obj;
    msgpack_sbuffer sb = {0};
    msgpack_packer pk;
    s_refs_t refs = {0};
    size_t off = 0;
    int zone_ok = 0;

    r->data = NULL;
    r->len = 0;
    r->err[0] = '\0';

    if (!fn) {
        snprintf(r->err, sizeof r->err, "no function to run");
        goto error;
    }
    if (s_check_args(args, len, &refs, r->err, sizeof r->err) < 0)
        goto error;
    if (!msgpack_zone_init(&zone, 1024)) {
        snprintf(r->err, sizeof r->err, "out of memory");
        goto error;
    }
    zone_ok = 1;
    if (msgpack_unpack(args, len, &off, &zone, &obj) != MSGPACK_UNPACK_SUCCESS ||
        obj.type != MSGPACK_OBJECT_ARRAY) {
        /* The walker accepted it, so this is msgpack-c running out of memory. */
        snprintf(r->err, sizeof r->err, "cannot decode task arguments");
        goto error;
    }
    if (refs.n > 0 &&
        s_resolve_refs(&zone, &obj, deps, ndeps, r->err, sizeof r->err) < 0)
        goto error;

    s_hint_t *hint = s_hint_slot(fn);
    sb.alloc = S_RESULT_INIT;
    if (hint->fn == fn && hint->size > S_RESULT_INIT) {
        /* Too large to have now is no error: start small as usual then. */
        if ((sb.data = malloc(hint->size)))
            sb.alloc = hint->size;
    }
    if (!sb.data && !(sb.data = malloc(S_RESULT_INIT))) {
        snprintf(r->err, sizeof r->err, "out of memory");
        goto error;
    }
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);

    shoal_task_ctx_t ctx = {
        .abi = SHOAL_TASK_ABI,
        .task_id = id,
        .worker = worker,
        .cancelled = cancelled,
        .errbuf = r->err,
        .errcap = sizeof r->err,
        .failed = 0,
    };
    int rc = fn(&ctx, &obj, &pk);
    if (rc != 0) {
        if (r->err[0] == '\0')
            snprintf(r->err, sizeof r->err, "task failed");
        goto error;
    }
    if (s_check_result(&sb, r->err, sizeof r->err) < 0)
        goto error;
    hint->fn = fn;
    hint->size = sb.size;

    /* Hand the buffer over; give back what the doubling left unused when
     * that is worth a realloc (results may be kept for a long time). */
    if (sb.alloc - sb.size > 256 && sb.alloc / 2 > sb.size) {
        char *shrunk = realloc(sb.data, sb.size);
        if (shrunk)
            sb.data = shrunk;
    }
    r->data = sb.data;
    r->len = sb.size;
    msgpack_zone_destroy(&zone);
    return 0;

error:
    free(sb.data);
    if (zone_ok)
        msgpack_zone_destroy(&zone);
    r->err[sizeof r->err - 1] = '\0';
    errno = EINVAL;
    return -1;
}

static int s_u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int exec_scan_deps(const void *args, size_t len, uint64_t **ids, size_t *n)
{
    s_refs_t refs = {.collect = 1};
    char why[128];

    *ids = NULL;
    *n = 0;
    if (s_check_args(args, len, &refs, why, sizeof why) < 0) {
        int e = errno;
        free(refs.ids);
        errno = e;
        return -1;
    }
    if (refs.n == 0)
        return 0;

    size_t k = 0;
    if (refs.n <= 32) {
        /* Few references: keep the order of first appearance. */
        for (size_t i = 0; i < refs.n; i++) {
            size_t j = 0;
            while (j < k && refs.ids[j] != refs.ids[i])
                j++;
            if (j == k)
                refs.ids[k++] = refs.ids[i];
        }
    } else {
        qsort(refs.ids, refs.n, sizeof *refs.ids, s_u64_cmp);
        for (size_t i = 0; i < refs.n; i++)
            if (k == 0 || refs.ids[k - 1] != refs.ids[i])
                refs.ids[k++] = refs.ids[i];
    }
    *ids = refs.ids;
    *n = k;
    return 0;
}

int exec_pack_ref(msgpack_packer *pk, uint64_t id)
{
    uint8_t be[8];
    for (int i = 7; i >= 0; i--) {
        be[i] = (uint8_t)(id & 0xff);
        id >>= 8;
    }
    if (msgpack_pack_ext(pk, sizeof be, SHOAL_EXT_FUTURE) < 0)
        return -1;
    return msgpack_pack_ext_body(pk, be, sizeof be);
}
