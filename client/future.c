/*
 * future.c - futures: submission (packed straight into the open SUBMIT batch,
 * or run in the calling thread for inline:// clients), completion, results,
 * waiting (one condition variable per client), as_completed iterators,
 * cancel and release.  Locking and ownership are described in client_int.h.
 */
#define _GNU_SOURCE
#include "client_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "exec.h"
#include "mp.h"

/* The error text used when even storing an error fails. */
static char s_oom_text[] = "out of memory storing the task outcome";

static inline int s_status(const shoal_future_t *f)
{
    return __atomic_load_n(&f->status, __ATOMIC_ACQUIRE);
}

static char *s_strndup(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s)
        return NULL;
    if (n)
        memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* "name" or the id, for messages about a task. */
static void s_label(const shoal_future_t *f, char *buf, size_t cap)
{
    if (f->name)
        snprintf(buf, cap, "%s", f->name);
    else
        snprintf(buf, cap, "%llu", (unsigned long long)f->id);
}

/* ---- lifecycle (c->mu held) ---------------------------------------------- */

shoal_future_t *client_future_new(shoal_client_t *c, uint64_t id)
{
    shoal_future_t *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->c = c;
    f->id = id;
    f->refs = 1;
    f->status = SHOAL_PENDING;
    if (ftab_put(&c->futures, f) < 0) {
        free(f);
        return NULL;
    }
    return f;
}

static void s_error_text(shoal_future_t *f, const char *text, size_t len)
{
    f->error = s_strndup(text ? text : "", text ? len : 0);
    if (!f->error)
        f->error = s_oom_text;
}

void client_future_complete(shoal_future_t *f, int status, const void *data, size_t len,
                            const char *errtext, size_t errlen, const char *worker,
                            size_t wlen)
{
    if (f->status != SHOAL_PENDING)
        return;
    if (status == SHOAL_FINISHED) {
        if (len <= sizeof f->small) {
            f->data = f->small;
        } else {
            f->data = malloc(len);
            if (!f->data) {
                status = SHOAL_ERROR;
                f->error = s_oom_text;
            }
        }
        if (f->data) {
            if (len)
                memcpy(f->data, data, len);
            f->len = len;
        }
    } else {
        s_error_text(f, errtext, errlen);
    }
    if (worker)
        f->worker = s_strndup(worker, wlen);
    /* A future stays in the index from client_future_new until it is
     * freed, so it is counted there as unfinished until now. */
    f->c->futures.pending--;
    /* Publish: readers of the status without the lock see the fields. */
    __atomic_store_n(&f->status, status, __ATOMIC_RELEASE);

    /* Hand the future to the iterators waiting for it. */
    for (ac_node_t *n = f->acs; n;) {
        ac_node_t *next = n->fnext;
        struct shoal_as_completed *ac = n->ac;
        n->fnext = NULL;
        n->queued = 1;
        n->qnext = NULL;
        if (ac->qtail)
            ac->qtail->qnext = n;
        else
            ac->qhead = n;
        ac->qtail = n;
        ac->npending--;
        n = next;
    }
    f->acs = NULL;
}

/* ---- results kept on workers (c->mu held) ---------------------------------- */

static void s_free_holders(shoal_future_t *f)
{
    for (size_t i = 0; i < f->nholders; i++)
        free(f->holders[i]);
    free(f->holders);
    f->holders = NULL;
    f->nholders = 0;
}

int client_future_set_holders(shoal_future_t *f, uint64_t nbytes, const msgpack_object *hs,
                              size_t nh)
{
    char **v = nh ? calloc(nh, sizeof *v) : NULL;
    size_t k = 0;
    if (nh && !v)
        return -1;
    for (size_t i = 0; i < nh; i++) {
        const char *p;
        size_t n;
        /* Anything but a plausible address is skipped (and so never tried). */
        if (mp_str(&hs[i], &p, &n) < 0 || n == 0 || n >= SHOAL_ADDR_MAX)
            continue;
        if (!(v[k] = s_strndup(p, n))) {
            while (k)
                free(v[--k]);
            free(v);
            return -1;
        }
        k++;
    }
    s_free_holders(f);
    f->holders = v;
    f->nholders = k;
    f->nbytes = nbytes;
    return 0;
}

int client_future_complete_remote(shoal_future_t *f, const char *worker, size_t wlen,
                                  uint64_t nbytes, const msgpack_object *hs, size_t nh)
{
    if (f->status != SHOAL_PENDING)
        return 0;
    if (client_future_set_holders(f, nbytes, hs, nh) < 0) {
        client_future_complete(f, SHOAL_ERROR, NULL, 0, s_oom_text, strlen(s_oom_text),
                               worker, wlen);
        errno = ENOMEM;
        return -1;
    }
    f->remote = 1;
    f->fetch = FETCH_NONE;
    /* Completes with no bytes; `remote` says where they are. */
    client_future_complete(f, SHOAL_FINISHED, NULL, 0, NULL, 0, worker, wlen);
    return 0;
}

/* Frames at least this large are kept as received (zero-copy); smaller
 * ones are copied, so that a small result does not pin a ZeroMQ receive
 * buffer shared with other messages. */
#define CLIENT_KEEP_FRAME (64u * 1024u)

static void s_drop_bytes(shoal_future_t *f)
{
    if (f->zmsg) {
        zmq_msg_close(f->zmsg);
        free(f->zmsg);
        f->zmsg = NULL;
    } else if (f->data && f->data != f->small) {
        free(f->data);
    }
    f->data = NULL;
    f->len = 0;
}

void client_future_take_copy(shoal_future_t *f, const void *data, size_t len)
{
    if (f->status != SHOAL_FINISHED || !f->remote)
        return;
    s_drop_bytes(f);
    void *p = len <= sizeof f->small ? f->small : malloc(len);
    if (!p) {
        client_future_lost(f, s_oom_text);
        return;
    }
    if (len)
        memcpy(p, data, len);
    f->data = p;
    f->len = len;
    f->fetch = FETCH_NONE;
    s_free_holders(f);
    /* Publish: shoal_result reads `remote` without the lock. */
    __atomic_store_n(&f->remote, 0, __ATOMIC_RELEASE);
}

void client_future_take_bytes(shoal_future_t *f, zmq_msg_t *frame)
{
    size_t len = zmq_msg_size(frame);
    if (f->status != SHOAL_FINISHED || !f->remote)
        return;
    if (len < CLIENT_KEEP_FRAME) {
        client_future_take_copy(f, zmq_msg_data(frame), len);
        return;
    }
    zmq_msg_t *z = malloc(sizeof *z);
    if (!z) {
        client_future_lost(f, s_oom_text);
        return;
    }
    s_drop_bytes(f);
    zmq_msg_init(z);
    zmq_msg_move(z, frame);
    f->zmsg = z;
    f->data = zmq_msg_data(z);
    f->len = len;
    f->fetch = FETCH_NONE;
    s_free_holders(f);
    __atomic_store_n(&f->remote, 0, __ATOMIC_RELEASE);
}

void client_future_lost(shoal_future_t *f, const char *msg)
{
    if (f->status != SHOAL_FINISHED || !f->remote)
        return;
    /* `remote` stays set: a reader that saw FINISHED without the lock
     * checks it next, and must take the lock (and see ERROR) rather than
     * read bytes that are not there. */
    s_drop_bytes(f);
    s_free_holders(f);
    f->fetch = FETCH_NONE;
    if (f->error != s_oom_text)
        free(f->error);
    s_error_text(f, msg, strlen(msg));
    __atomic_store_n(&f->status, SHOAL_ERROR, __ATOMIC_RELEASE);
}

void client_fetch_locked(shoal_client_t *c, shoal_future_t *f)
{
    if (f->status != SHOAL_FINISHED || !f->remote || f->fetch != FETCH_NONE)
        return;
    if (client_u64vec_push(&c->fetchq, f->id) < 0)
        return; /* out of memory: the waiter's next call asks again */
    f->fetch = FETCH_QUEUED;
    client_wake_locked(c);
}

int client_fetch_wait_locked(shoal_client_t *c, shoal_future_t *f, double timeout,
                             shoal_error_t *err)
{
    struct timespec deadline;
    double t = timeout;
    if (t >= 0 && t < CLIENT_FETCH_WAIT_MIN)
        t = CLIENT_FETCH_WAIT_MIN;
    if (t >= 0)
        client_abstime(t, &deadline);
    while (f->status == SHOAL_FINISHED && f->remote) {
        if (c->stopping)
            return client_fail(err, ESHUTDOWN, "the client is disconnecting");
        client_fetch_locked(c, f);
        if (f->fetch == FETCH_NONE) /* could not even queue it */
            return client_fail(err, ENOMEM, "out of memory fetching a result");
        if (client_cond_wait(c, t < 0 ? NULL : &deadline) == ETIMEDOUT &&
            f->status == SHOAL_FINISHED && f->remote)
            return client_fail(err, ETIMEDOUT,
                               "the result of task %llu (%llu bytes, kept on a worker) did "
                               "not arrive within %g s",
                               (unsigned long long)f->id, (unsigned long long)f->nbytes, t);
    }
    return 0;
}

void client_fail_pending(shoal_client_t *c, const char *msg)
{
    size_t pos = 0;
    shoal_future_t *f;
    size_t mlen = strlen(msg);
    while (ftab_next(&c->futures, &pos, &f)) {
        if (f->status == SHOAL_PENDING)
            client_future_complete(f, SHOAL_ERROR, NULL, 0, msg, mlen, NULL, 0);
        else if (f->remote && f->fetch == FETCH_REFETCH)
            client_future_lost(f, msg); /* the REFETCH will not be answered */
    }
}

void client_future_free(shoal_future_t *f)
{
    shoal_client_t *c = f->c;
    ftab_del(&c->futures, f, c->next_n);
    /* Tell the scheduler it may forget the task, unless it already forgot
     * us (connection lost) or the whole client is going away (BYE releases
     * everything at once). */
    if (!c->inline_mode && !c->dead && !c->stopping) {
        /* A release is not urgent: it waits (see s_flush), so that a
         * submit-result-release loop costs one message chain per task
         * rather than two.  A large backlog goes at once. */
        if (client_u64vec_push(&c->rel, f->id) == 0 && c->rel.n >= CLIENT_RELEASE_BATCH)
            client_wake_locked(c);
    }
    s_drop_bytes(f);
    s_free_holders(f);
    if (f->error != s_oom_text)
        free(f->error);
    free(f->worker);
    free(f->name);
    if (f->zone)
        msgpack_zone_free(f->zone);
    free(f);
}

/* ---- submission ---------------------------------------------------------- */

typedef struct s_item {
    uint64_t *deps;
    size_t ndeps;
} s_item_t;

static void s_items_free(s_item_t *it, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(it[i].deps);
}

/* ---- placement options: resources and worker restrictions ------------------ */

#define CLIENT_MAX_RESOURCES 16
#define CLIENT_MAX_RES_NAME 64
#define CLIENT_MAX_RES_TEXT 4096
#define CLIENT_MAX_RESTRICT 1024
#define CLIENT_MAX_WORKER_NAME 255
#define RES_SYNTAX "expected NAME=AMOUNT[,NAME=AMOUNT...], e.g. \"GPU=1,MEM=4e9\""

typedef struct s_res {
    char name[CLIENT_MAX_RES_NAME + 1];
    double amount;
} s_res_t;

static int s_res_name_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '-' || ch == '.';
}

/*
 * Parse "GPU=1,MEM=4e9": names of letters, digits, '_', '-', '.' (1 to 64
 * bytes, each once), amounts positive finite decimal numbers; spaces
 * around either are allowed.  Fills res[0..*n-1].  0, or -1 (EINVAL) with
 * the reason in err.
 */
static int s_parse_resources(const char *text, s_res_t *res, size_t *n, shoal_error_t *err)
{
    size_t len = strnlen(text, CLIENT_MAX_RES_TEXT + 1);
    *n = 0;
    if (len > CLIENT_MAX_RES_TEXT)
        return client_fail(err, EINVAL, "invalid resources: longer than %d bytes",
                           CLIENT_MAX_RES_TEXT);
    if (len == 0)
        return client_fail(err, EINVAL, "invalid resources: empty string (%s; or NULL for none)",
                           RES_SYNTAX);
    const char *p = text, *end = text + len;
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *te = comma ? comma : end;
        const char *eq = memchr(p, '=', (size_t)(te - p));
        const char *ns = p, *ne = eq ? eq : te;
        while (ns < ne && (*ns == ' ' || *ns == '\t'))
            ns++;
        while (ne > ns && (ne[-1] == ' ' || ne[-1] == '\t'))
            ne--;
        int tl = (int)(te - p);
        if (!eq)
            return client_fail(err, EINVAL, "invalid resources \"%s\": \"%.*s\" has no amount (%s)",
                               text, tl, p, RES_SYNTAX);
        if (ne == ns)
            return client_fail(err, EINVAL, "invalid resources \"%s\": \"%.*s\" has no name (%s)",
                               text, tl, p, RES_SYNTAX);
        if (ne - ns > CLIENT_MAX_RES_NAME)
            return client_fail(err, EINVAL,
                               "invalid resources \"%s\": a resource name is longer than %d bytes",
                               text, CLIENT_MAX_RES_NAME);
        for (const char *q = ns; q < ne; q++)
            if (!s_res_name_char(*q))
                return client_fail(err, EINVAL,
                                   "invalid resources \"%s\": resource name \"%.*s\" may only "
                                   "hold letters, digits, '_', '-' and '.'",
                                   text, (int)(ne - ns), ns);
        /* The amount: copied out so that strtod cannot run past the entry. */
        const char *as = eq + 1, *ae = te;
        while (as < ae && (*as == ' ' || *as == '\t'))
            as++;
        while (ae > as && (ae[-1] == ' ' || ae[-1] == '\t'))
            ae--;
        char num[64];
        double v = 0;
        /* Decimal only: strtod would also take hex, "inf" and "nan". */
        int ok = ae > as && ae - as < (long)sizeof num &&
                 ((*as >= '0' && *as <= '9') || *as == '.');
        for (const char *q = as; ok && q < ae; q++)
            ok = (*q >= '0' && *q <= '9') || *q == '.' || *q == 'e' || *q == 'E' ||
                 *q == '+' || *q == '-';
        if (ok) {
            char *stop;
            memcpy(num, as, (size_t)(ae - as));
            num[ae - as] = '\0';
            errno = 0;
            v = strtod(num, &stop);
            ok = errno == 0 && *stop == '\0' && v > 0 && v <= 1e18;
        }
        if (!ok)
            return client_fail(err, EINVAL,
                               "invalid resources \"%s\": the amount of %.*s (\"%.*s\") is not a "
                               "positive number (%s)",
                               text, (int)(ne - ns), ns, (int)(ae - as), as, RES_SYNTAX);
        for (size_t i = 0; i < *n; i++)
            if (strlen(res[i].name) == (size_t)(ne - ns) &&
                memcmp(res[i].name, ns, (size_t)(ne - ns)) == 0)
                return client_fail(err, EINVAL,
                                   "invalid resources \"%s\": %.*s is given twice", text,
                                   (int)(ne - ns), ns);
        if (*n == CLIENT_MAX_RESOURCES)
            return client_fail(err, EINVAL, "invalid resources \"%s\": more than %d resources",
                               text, CLIENT_MAX_RESOURCES);
        memcpy(res[*n].name, ns, (size_t)(ne - ns));
        res[*n].name[ne - ns] = '\0';
        res[*n].amount = v;
        (*n)++;
        if (!comma)
            break;
        p = comma + 1;
    }
    return 0;
}

/*
 * Validate the options.  If they restrict placement (resources, workers),
 * pack the SUBMIT item's options map into `xo` (once per call, then copied
 * into every item): {"resources": {name: amount}, "workers": [names]}.
 * xo->size stays 0 when there is nothing to say, and the items keep their
 * 7 fields, as every scheduler understands.
 */
static int s_check_opts(const shoal_submit_opts_t *o, msgpack_sbuffer *xo, shoal_error_t *err)
{
    s_res_t res[CLIENT_MAX_RESOURCES];
    size_t nres = 0, nw = 0;
    if (!o)
        return 0;
    if (o->retries < 0)
        return client_fail(err, EINVAL, "retries must not be negative (got %d)", o->retries);
    if (o->name && strlen(o->name) > CLIENT_MAX_FUNC)
        return client_fail(err, EINVAL, "task name is longer than %d bytes", CLIENT_MAX_FUNC);
    if (o->resources && s_parse_resources(o->resources, res, &nres, err) < 0)
        return -1;
    if (o->workers) {
        for (nw = 0; o->workers[nw]; nw++) {
            size_t l = strnlen(o->workers[nw], CLIENT_MAX_WORKER_NAME + 1);
            if (nw == CLIENT_MAX_RESTRICT)
                return client_fail(err, EINVAL, "workers: more than %d names",
                                   CLIENT_MAX_RESTRICT);
            if (l == 0 || l > CLIENT_MAX_WORKER_NAME)
                return client_fail(err, EINVAL, "workers: name %zu is %s", nw,
                                   l ? "longer than 255 bytes" : "empty");
        }
    }
    if (!nres && !nw)
        return 0;
    msgpack_packer pk;
    msgpack_packer_init(&pk, xo, msgpack_sbuffer_write);
    int rc = msgpack_pack_map(&pk, (nres ? 1 : 0) + (nw ? 1 : 0));
    if (nres) {
        rc |= mp_pack_cstr(&pk, "resources");
        rc |= msgpack_pack_map(&pk, (uint32_t)nres);
        for (size_t i = 0; i < nres; i++) {
            rc |= mp_pack_cstr(&pk, res[i].name);
            rc |= msgpack_pack_double(&pk, res[i].amount);
        }
    }
    if (nw) {
        rc |= mp_pack_cstr(&pk, "workers");
        rc |= msgpack_pack_array(&pk, (uint32_t)nw);
        for (size_t i = 0; i < nw; i++)
            rc |= mp_pack_cstr(&pk, o->workers[i]);
    }
    if (rc)
        return client_fail(err, ENOMEM, "out of memory packing the submit options");
    return 0;
}

/* Pack one SUBMIT item.  0, or -1 if the buffer could not grow. */
static int s_pack_item(msgpack_packer *pk, uint64_t id, const char *func, size_t flen,
                       const void *args, size_t len, const s_item_t *it,
                       const shoal_submit_opts_t *o, const msgpack_sbuffer *xo)
{
    int rc = msgpack_pack_array(pk, xo->size ? 8 : 7);
    rc |= msgpack_pack_uint64(pk, id);
    rc |= mp_pack_strn(pk, func, flen);
    rc |= mp_pack_bin(pk, args, len);
    rc |= msgpack_pack_array(pk, (uint32_t)it->ndeps);
    for (size_t d = 0; d < it->ndeps; d++)
        rc |= msgpack_pack_uint64(pk, it->deps[d]);
    rc |= msgpack_pack_int(pk, o ? o->priority : 0);
    rc |= msgpack_pack_int(pk, o ? o->retries : 0);
    rc |= mp_pack_cstr(pk, o ? o->name : NULL);
    if (xo->size)
        rc |= mp_pack_raw(pk, xo->data, xo->size);
    return rc ? -1 : 0;
}

/* Remote: assign ids, create the futures and pack the items, all under the
 * lock so that the batch holds all of them or (after a rollback) none. */
static int s_submit_remote(shoal_client_t *c, const char *func, size_t flen,
                           const void *const *args, const size_t *lens, size_t n,
                           s_item_t *items, const shoal_submit_opts_t *o,
                           const msgpack_sbuffer *xo, shoal_future_t **out,
                           shoal_error_t *err)
{
    size_t made = 0;
    pthread_mutex_lock(&c->mu);
    /* Where the batches stood, for the rollback. */
    subbatch_t *start = c->sub, *tail0 = c->full_tail;
    size_t size0 = start->b.sbuf.size;
    uint32_t count0 = start->b.count;

    if (c->stopping || c->dead) {
        char msg[sizeof c->dead_msg];
        int e = c->stopping ? ESHUTDOWN : ENOTCONN;
        snprintf(msg, sizeof msg, "%s",
                 c->stopping ? "the client is disconnecting" : c->dead_msg);
        pthread_mutex_unlock(&c->mu);
        return client_fail(err, e, "cannot submit: %s", msg);
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t d = 0; d < items[i].ndeps; d++) {
            if (!ftab_get(&c->futures, items[i].deps[d])) {
                client_fail(err, EINVAL,
                            "argument refers to an unknown or released future (id %llu)",
                            (unsigned long long)items[i].deps[d]);
                goto error;
            }
        }
    }
    if (c->next_n + n - 1 > CLIENT_N_MAX) {
        client_fail(err, ENOSPC, "this client has used up its task ids; connect again");
        goto error;
    }
    while (made < n) {
        uint64_t id = (c->client_id << CLIENT_ID_SHIFT) | (c->next_n + made);
        shoal_future_t *f = client_future_new(c, id);
        if (!f) {
            client_fail(err, ENOMEM, "out of memory submitting %zu task(s)", n);
            goto error;
        }
        out[made++] = f;
        if (c->sub->b.sbuf.size >= CLIENT_BATCH_BYTES) {
            subbatch_t *nb = client_subbatch_new();
            if (!nb) {
                client_fail(err, ENOMEM, "out of memory submitting %zu task(s)", n);
                goto error;
            }
            if (c->full_tail)
                c->full_tail->next = c->sub;
            else
                c->full_head = c->sub;
            c->full_tail = c->sub;
            c->sub = nb;
        }
        if ((o && o->name && !(f->name = strdup(o->name))) ||
            s_pack_item(proto_batch_add(&c->sub->b), id, func, flen, args[made - 1],
                        lens[made - 1], &items[made - 1], o, xo) < 0) {
            client_fail(err, ENOMEM, "out of memory submitting %zu task(s)", n);
            goto error;
        }
    }
    c->next_n += n;
    client_wake_locked(c);
    pthread_mutex_unlock(&c->mu);
    client_kick(c);
    return 0;

error:
    /* Nothing of this call may reach the scheduler: drop the batches it
     * started, cut the one it started in back, and drop the futures (they
     * never had an id the scheduler knows).  Batches only move to the full
     * list under the lock, by appending, so `start`, if it moved, directly
     * follows tail0, and everything after it is this call's. */
    if (c->sub != start) {
        for (subbatch_t *x = start->next; x;) {
            subbatch_t *next = x->next;
            client_subbatch_free(x);
            x = next;
        }
        client_subbatch_free(c->sub);
        start->next = NULL;
        if (tail0)
            tail0->next = NULL;
        else
            c->full_head = NULL;
        c->full_tail = tail0;
        c->sub = start;
    }
    start->b.sbuf.size = size0;
    start->b.count = count0;
    for (size_t i = 0; i < made; i++) {
        ftab_del(&c->futures, out[i], c->next_n);
        free(out[i]->name);
        free(out[i]);
        out[i] = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    return -1;
}

static const int s_never_cancelled = 0;

/* Inline: run one task now, in this thread, and complete its future.  The
 * lock is not held while the task runs (it may take long, or use the API). */
static void s_run_inline(shoal_client_t *c, shoal_future_t *f, const char *func, size_t flen,
                         const void *args, size_t len, shoal_future_t **deps, size_t ndeps)
{
    exec_result_t *r = malloc(sizeof *r);
    exec_dep_t *dv = ndeps ? calloc(ndeps, sizeof *dv) : NULL;
    char label[CLIENT_MAX_FUNC + 32], msg[1536];
    int status = SHOAL_ERROR;
    const char *text = msg;

    msg[0] = '\0';
    if (!r || (ndeps && !dv)) {
        snprintf(msg, sizeof msg, "out of memory running the task");
        goto done;
    }
    for (size_t i = 0; i < ndeps; i++) {
        int st = s_status(deps[i]);
        if (st != SHOAL_FINISHED) {
            s_label(deps[i], label, sizeof label);
            if (st == SHOAL_CANCELLED)
                snprintf(msg, sizeof msg, "dependency %s was cancelled", label);
            else
                snprintf(msg, sizeof msg, "dependency %s failed: %s", label,
                         deps[i]->error ? deps[i]->error : "unknown error");
            goto done;
        }
        dv[i].id = deps[i]->id;
        dv[i].data = deps[i]->data;
        dv[i].len = deps[i]->len;
    }
    /* Error texts are those a worker and the scheduler would produce, so a
     * program behaves the same inline and on a cluster. */
    shoal_task_fn fn = tasklib_find(c->tl, func, flen);
    if (!fn) {
        snprintf(msg, sizeof msg, "unknown function '%.*s' on worker inline", (int)flen,
                 func);
        goto done;
    }
    if (exec_task(fn, f->id, "inline", &s_never_cancelled, args, len, dv, ndeps, r) == 0)
        status = SHOAL_FINISHED;
    else
        snprintf(msg, sizeof msg, "%s", r->err);

done:
    pthread_mutex_lock(&c->mu);
    if (status == SHOAL_FINISHED)
        client_future_complete(f, SHOAL_FINISHED, r->data, r->len, NULL, 0, "inline", 6);
    else
        client_future_complete(f, SHOAL_ERROR, NULL, 0, text, strlen(text), "inline", 6);
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
    if (r && status == SHOAL_FINISHED)
        free(r->data);
    free(r);
    free(dv);
}

static int s_submit_inline(shoal_client_t *c, const char *func, size_t flen,
                           const void *const *args, const size_t *lens, size_t n,
                           s_item_t *items, const shoal_submit_opts_t *o,
                           shoal_future_t **out, shoal_error_t *err)
{
    size_t total_deps = 0, made = 0;
    for (size_t i = 0; i < n; i++)
        total_deps += items[i].ndeps;
    shoal_future_t **deps = total_deps ? calloc(total_deps, sizeof *deps) : NULL;
    if (total_deps && !deps)
        return client_fail(err, ENOMEM, "out of memory submitting %zu task(s)", n);

    /* Validate everything and create the futures under the lock; take a
     * reference on each dependency so that it outlives the run even if
     * another thread releases it meanwhile. */
    pthread_mutex_lock(&c->mu);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t d = 0; d < items[i].ndeps; d++) {
            shoal_future_t *df = ftab_get(&c->futures, items[i].deps[d]);
            if (!df) {
                client_fail(err, EINVAL,
                            "argument refers to an unknown or released future (id %llu)",
                            (unsigned long long)items[i].deps[d]);
                goto error;
            }
            deps[k++] = df;
        }
    }
    if (c->next_n + n - 1 > CLIENT_N_MAX) {
        client_fail(err, ENOSPC, "this client has used up its task ids; connect again");
        goto error;
    }
    for (made = 0; made < n; made++) {
        shoal_future_t *f = client_future_new(c, (c->client_id << CLIENT_ID_SHIFT) |
                                                     (c->next_n + made));
        if (!f)
            goto nomem;
        out[made] = f;
        if (o && o->name && !(f->name = strdup(o->name))) {
            made++;
            goto nomem;
        }
    }
    c->next_n += n;
    for (size_t i = 0; i < k; i++)
        deps[i]->refs++;
    pthread_mutex_unlock(&c->mu);

    k = 0;
    for (size_t i = 0; i < n; i++) {
        s_run_inline(c, out[i], func, flen, args[i], lens[i], deps + k, items[i].ndeps);
        k += items[i].ndeps;
    }

    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < total_deps; i++)
        if (--deps[i]->refs == 0)
            client_future_free(deps[i]);
    pthread_mutex_unlock(&c->mu);
    free(deps);
    return 0;

nomem:
    client_fail(err, ENOMEM, "out of memory submitting %zu task(s)", n);
error:
    for (size_t i = 0; i < made; i++) {
        out[i]->refs = 0;
        client_future_free(out[i]);
        out[i] = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    free(deps);
    return -1;
}

int shoal_map(shoal_client_t *c, const char *func, const void *const *args,
              const size_t *lens, size_t n, const shoal_submit_opts_t *opts,
              shoal_future_t **out, shoal_error_t *err)
{
    if (!c || !func || (n && (!args || !lens || !out)))
        return client_fail(err, EINVAL, "shoal_map/shoal_submit: missing argument");
    size_t flen = strnlen(func, CLIENT_MAX_FUNC + 1);
    if (flen == 0 || flen > CLIENT_MAX_FUNC)
        return client_fail(err, EINVAL, "function name must be 1 to %d bytes long",
                           CLIENT_MAX_FUNC);
    msgpack_sbuffer xo;
    msgpack_sbuffer_init(&xo);
    if (s_check_opts(opts, &xo, err) < 0) {
        int e = errno;
        msgpack_sbuffer_destroy(&xo);
        errno = e;
        return -1;
    }
    if (n == 0 || n > CLIENT_N_MAX) {
        msgpack_sbuffer_destroy(&xo);
        return n ? client_fail(err, EINVAL, "too many tasks in one call") : 0;
    }

    /* Validate the arguments (and find the future references in them)
     * before taking the lock: the parse need not block the I/O thread. */
    s_item_t one, *items = &one;
    if (n > 1 && !(items = calloc(n, sizeof *items))) {
        msgpack_sbuffer_destroy(&xo);
        return client_fail(err, ENOMEM, "out of memory submitting %zu tasks", n);
    }
    memset(items, 0, (n > 1 ? n : 1) * sizeof *items);
    int rc = -1;
    for (size_t i = 0; i < n; i++) {
        if (!args[i] || lens[i] > CLIENT_MAX_ARGS) {
            client_fail(err, EINVAL, "arguments of task %zu: %s", i,
                        !args[i] ? "NULL" : "larger than 256 MiB");
            goto out;
        }
        if (exec_scan_deps(args[i], lens[i], &items[i].deps, &items[i].ndeps) < 0) {
            if (errno == ENOMEM)
                client_fail(err, ENOMEM, "out of memory scanning task arguments");
            else
                client_fail(err, EINVAL,
                            "arguments of task %zu are not one well-formed MessagePack "
                            "array",
                            i);
            goto out;
        }
    }
    if (c->inline_mode)
        rc = s_submit_inline(c, func, flen, args, lens, n, items, opts, out, err);
    else
        rc = s_submit_remote(c, func, flen, args, lens, n, items, opts, &xo, out, err);
out:;
    int e = errno;
    msgpack_sbuffer_destroy(&xo);
    s_items_free(items, n);
    if (items != &one)
        free(items);
    errno = e;
    return rc;
}

shoal_future_t *shoal_submit(shoal_client_t *c, const char *func, const void *args,
                             size_t len, const shoal_submit_opts_t *opts, shoal_error_t *err)
{
    shoal_future_t *f = NULL;
    const void *a[1] = {args};
    size_t l[1] = {len};
    if (shoal_map(c, func, a, l, 1, opts, &f, err) < 0)
        return NULL;
    return f;
}

int shoal_pack_future(msgpack_packer *pk, const shoal_future_t *f)
{
    if (!pk || !f) {
        errno = EINVAL;
        return -1;
    }
    return exec_pack_ref(pk, f->id);
}

/* ---- accessors and results ------------------------------------------------ */

shoal_status_t shoal_future_status(const shoal_future_t *f)
{
    if (!f) {
        errno = EINVAL;
        return SHOAL_ERROR;
    }
    return (shoal_status_t)s_status(f);
}

uint64_t shoal_future_id(const shoal_future_t *f)
{
    return f ? f->id : 0;
}

const char *shoal_future_error(const shoal_future_t *f)
{
    if (!f)
        return NULL;
    int st = s_status(f);
    return st == SHOAL_ERROR || st == SHOAL_CANCELLED ? f->error : NULL;
}

const char *shoal_future_worker(const shoal_future_t *f)
{
    if (!f || s_status(f) == SHOAL_PENDING)
        return NULL;
    return f->worker;
}

/* Wait for f to complete; returns its status, or -1 (ETIMEDOUT, with err). */
static int s_wait_one(shoal_future_t *f, double timeout, shoal_error_t *err)
{
    int st = s_status(f);
    if (st != SHOAL_PENDING)
        return st;
    shoal_client_t *c = f->c;
    struct timespec deadline;
    if (timeout > 0)
        client_abstime(timeout, &deadline);
    pthread_mutex_lock(&c->mu);
    while ((st = f->status) == SHOAL_PENDING && timeout != 0) {
        if (client_cond_wait(c, timeout < 0 ? NULL : &deadline) == ETIMEDOUT) {
            st = f->status;
            break;
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (st == SHOAL_PENDING)
        return client_fail(err, ETIMEDOUT, "task %llu did not finish within %g s",
                           (unsigned long long)f->id, timeout);
    return st;
}

/* The error of a completed, unsuccessful future as a shoal_error_t: the
 * task's own error text (shoal_future_error) prefixed with which task it
 * was and where it ran. */
static int s_fail_future(const shoal_future_t *f, int st, shoal_error_t *err)
{
    char label[CLIENT_MAX_FUNC + 32], where[160] = "";
    s_label(f, label, sizeof label);
    if (f->worker)
        snprintf(where, sizeof where, " on worker %s", f->worker);
    const char *text = f->error ? f->error : "no reason given";
    if (st == SHOAL_CANCELLED)
        return strcmp(text, "cancelled") == 0
                   ? client_fail(err, ECANCELED, "task %s was cancelled", label)
                   : client_fail(err, ECANCELED, "task %s was cancelled: %s", label, text);
    return client_fail(err, EIO, "task %s failed%s: %s", label, where, text);
}

/* A FINISHED future whose bytes are still on workers: fetch them (under
 * the lock).  Returns the status after: FINISHED with the bytes here, or
 * ERROR if the result was lost; -1 (with err) if the wait failed. */
static int s_get_bytes(shoal_future_t *f, double timeout, shoal_error_t *err)
{
    shoal_client_t *c = f->c;
    pthread_mutex_lock(&c->mu);
    int rc = client_fetch_wait_locked(c, f, timeout, err);
    int st = f->status;
    pthread_mutex_unlock(&c->mu);
    return rc < 0 ? -1 : st;
}

int shoal_result(shoal_future_t *f, double timeout, const void **data, size_t *len,
                 shoal_error_t *err)
{
    if (!f)
        return client_fail(err, EINVAL, "shoal_result: no future");
    int st = s_wait_one(f, timeout, err);
    if (st < 0)
        return -1;
    if (st == SHOAL_FINISHED && __atomic_load_n(&f->remote, __ATOMIC_ACQUIRE))
        st = s_get_bytes(f, timeout, err);
    if (st < 0)
        return -1;
    if (st != SHOAL_FINISHED)
        return s_fail_future(f, st, err);
    if (data)
        *data = f->data;
    if (len)
        *len = f->len;
    return 0;
}

int shoal_result_object(shoal_future_t *f, double timeout, msgpack_object *obj,
                        shoal_error_t *err)
{
    if (!f || !obj)
        return client_fail(err, EINVAL, "shoal_result_object: missing argument");
    if (shoal_result(f, timeout, NULL, NULL, err) < 0)
        return -1;
    shoal_client_t *c = f->c;
    int rc = 0;
    pthread_mutex_lock(&c->mu);
    if (!f->zone) {
        /* Unpack once; the object (and the buffers it points into) live as
         * long as the future. */
        msgpack_zone *z = msgpack_zone_new(256);
        size_t off = 0;
        if (!z) {
            rc = client_fail(err, ENOMEM, "out of memory unpacking a result");
        } else if (f->len == 0 ||
                   msgpack_unpack(f->data, f->len, &off, z, &f->obj) !=
                       MSGPACK_UNPACK_SUCCESS ||
                   off != f->len) {
            msgpack_zone_free(z);
            rc = client_fail(err, EBADMSG,
                             "the result of task %llu is not one MessagePack object",
                             (unsigned long long)f->id);
        } else {
            f->zone = z;
        }
    }
    if (rc == 0)
        *obj = f->obj;
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int shoal_result_i64(shoal_future_t *f, double timeout, int64_t *out, shoal_error_t *err)
{
    msgpack_object o;
    if (!out)
        return client_fail(err, EINVAL, "shoal_result_i64: no output");
    if (shoal_result_object(f, timeout, &o, err) < 0)
        return -1;
    if (mp_i64(&o, out) < 0)
        return client_fail(err, EINVAL, "the result of task %llu is not a 64-bit integer",
                           (unsigned long long)f->id);
    return 0;
}

int shoal_result_f64(shoal_future_t *f, double timeout, double *out, shoal_error_t *err)
{
    msgpack_object o;
    if (!out)
        return client_fail(err, EINVAL, "shoal_result_f64: no output");
    if (shoal_result_object(f, timeout, &o, err) < 0)
        return -1;
    if (mp_f64(&o, out) < 0)
        return client_fail(err, EINVAL, "the result of task %llu is not a number",
                           (unsigned long long)f->id);
    return 0;
}

/* ---- waiting on many --------------------------------------------------------- */

/* All futures must belong to one client (they share its lock and condition). */
static shoal_client_t *s_common_client(shoal_future_t *const *fs, size_t n)
{
    if (!fs || !fs[0])
        return NULL;
    shoal_client_t *c = fs[0]->c;
    for (size_t i = 1; i < n; i++)
        if (!fs[i] || fs[i]->c != c)
            return NULL;
    return c;
}

int shoal_gather(shoal_future_t *const *fs, size_t n, double timeout, shoal_error_t *err)
{
    if (n == 0)
        return 0;
    shoal_client_t *c = s_common_client(fs, n);
    if (!c)
        return client_fail(err, EINVAL,
                           "shoal_gather: NULL future, or futures of different clients");
    struct timespec deadline;
    if (timeout > 0)
        client_abstime(timeout, &deadline);
    /* Walk the futures in order, sleeping on the first that is pending: each
     * future is looked at once after it completes, so gathering n futures
     * costs O(n) plus one check per wakeup.  The first failure in array order
     * ends the gather.  Results kept on workers are asked for as they are
     * met (the I/O thread fetches them all in parallel, many per request),
     * and waited for at the end. */
    size_t i = 0, nremote = 0;
    int st = SHOAL_FINISHED;
    pthread_mutex_lock(&c->mu);
    while (i < n) {
        st = fs[i]->status;
        if (st == SHOAL_FINISHED) {
            if (fs[i]->remote) {
                client_fetch_locked(c, fs[i]);
                nremote++;
            }
            i++;
            continue;
        }
        if (st != SHOAL_PENDING)
            break;
        if (timeout == 0 ||
            client_cond_wait(c, timeout < 0 ? NULL : &deadline) == ETIMEDOUT) {
            if (fs[i]->status == SHOAL_PENDING)
                break;
        }
    }
    if (i == n && nremote) {
        /* The transfers: as for shoal_result, what is left of the timeout
         * but at least CLIENT_FETCH_WAIT_MIN. */
        double left = timeout;
        if (timeout > 0) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            left = (double)(deadline.tv_sec - now.tv_sec) +
                   (double)(deadline.tv_nsec - now.tv_nsec) / 1e9;
            if (left < 0)
                left = 0;
        }
        for (size_t j = 0; j < n; j++) {
            if (fs[j]->status == SHOAL_FINISHED && fs[j]->remote &&
                client_fetch_wait_locked(c, fs[j], left, err) < 0) {
                pthread_mutex_unlock(&c->mu);
                return -1;
            }
            if (fs[j]->status != SHOAL_FINISHED) {
                i = j;
                st = fs[j]->status;
                break;
            }
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (i == n)
        return 0;
    if (st == SHOAL_PENDING) {
        size_t left = 0;
        for (size_t j = i; j < n; j++)
            left += s_status(fs[j]) == SHOAL_PENDING;
        return client_fail(err, ETIMEDOUT, "%zu of %zu task(s) did not finish within %g s",
                           left, n, timeout);
    }
    return s_fail_future(fs[i], st, err);
}

int shoal_wait(shoal_future_t *const *fs, size_t n, shoal_wait_mode_t mode, double timeout,
               char *done)
{
    if (n == 0)
        return 0;
    if (mode != SHOAL_ALL_COMPLETED && mode != SHOAL_FIRST_COMPLETED &&
        mode != SHOAL_FIRST_EXCEPTION) {
        errno = EINVAL;
        return -1;
    }
    shoal_client_t *c = s_common_client(fs, n);
    if (!c) {
        errno = EINVAL;
        return -1;
    }
    struct timespec deadline;
    if (timeout > 0)
        client_abstime(timeout, &deadline);
    /* `first` skips the prefix known to be done (futures never become
     * pending again), so ALL_COMPLETED does not rescan it on every wakeup. */
    size_t first = 0, ndone;
    int met, timed_out = 0;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (first < n && fs[first]->status != SHOAL_PENDING)
            first++;
        ndone = first;
        int exc = 0;
        for (size_t i = 0; i < first && mode == SHOAL_FIRST_EXCEPTION && !exc; i++)
            exc = fs[i]->status != SHOAL_FINISHED;
        for (size_t i = first; i < n; i++) {
            int st = fs[i]->status;
            if (st != SHOAL_PENDING) {
                ndone++;
                exc |= st != SHOAL_FINISHED;
            }
        }
        switch (mode) {
        case SHOAL_ALL_COMPLETED: met = ndone == n; break;
        case SHOAL_FIRST_COMPLETED: met = ndone > 0; break;
        default: met = exc || ndone == n; break;
        }
        if (met || timed_out || timeout == 0)
            break;
        if (client_cond_wait(c, timeout < 0 ? NULL : &deadline) == ETIMEDOUT)
            timed_out = 1; /* look once more, then give up */
    }
    if (done)
        for (size_t i = 0; i < n; i++)
            done[i] = fs[i]->status != SHOAL_PENDING;
    pthread_mutex_unlock(&c->mu);
    if (!met) {
        errno = ETIMEDOUT;
        return -1;
    }
    return (int)(ndone > INT32_MAX ? INT32_MAX : ndone);
}

/* ---- as_completed -------------------------------------------------------------- */

shoal_as_completed_t *shoal_as_completed(shoal_future_t *const *fs, size_t n)
{
    if (n && !fs) {
        errno = EINVAL;
        return NULL;
    }
    shoal_as_completed_t *ac = calloc(1, sizeof *ac);
    if (!ac)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (shoal_as_completed_add(ac, fs[i]) < 0) {
            int e = errno;
            shoal_as_completed_destroy(ac);
            errno = e;
            return NULL;
        }
    }
    return ac;
}

int shoal_as_completed_add(shoal_as_completed_t *ac, shoal_future_t *f)
{
    if (!ac || !f || (ac->c && ac->c != f->c)) {
        errno = EINVAL;
        return -1;
    }
    ac_node_t *node = calloc(1, sizeof *node);
    if (!node)
        return -1;
    shoal_client_t *c = f->c;
    ac->c = c;
    node->f = f;
    node->ac = ac;
    pthread_mutex_lock(&c->mu);
    f->refs++;
    node->anext = ac->all;
    ac->all = node;
    if (f->status == SHOAL_PENDING) {
        node->fnext = f->acs;
        f->acs = node;
        ac->npending++;
    } else {
        node->queued = 1;
        if (ac->qtail)
            ac->qtail->qnext = node;
        else
            ac->qhead = node;
        ac->qtail = node;
    }
    pthread_mutex_unlock(&c->mu);
    return 0;
}

shoal_future_t *shoal_as_completed_next(shoal_as_completed_t *ac, double timeout)
{
    if (!ac) {
        errno = EINVAL;
        return NULL;
    }
    shoal_client_t *c = ac->c;
    if (!c) {
        errno = 0;
        return NULL;
    }
    struct timespec deadline;
    if (timeout > 0)
        client_abstime(timeout, &deadline);
    shoal_future_t *f = NULL;
    int e = 0;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        ac_node_t *node = ac->qhead;
        if (node) {
            ac->qhead = node->qnext;
            if (!ac->qhead)
                ac->qtail = NULL;
            node->qnext = NULL;
            f = node->f;
            break;
        }
        if (ac->npending == 0)
            break; /* all returned */
        if (timeout == 0 ||
            client_cond_wait(c, timeout < 0 ? NULL : &deadline) == ETIMEDOUT) {
            if (!ac->qhead) {
                e = ETIMEDOUT;
                break;
            }
        }
    }
    pthread_mutex_unlock(&c->mu);
    errno = e;
    return f;
}

void shoal_as_completed_destroy(shoal_as_completed_t *ac)
{
    if (!ac)
        return;
    shoal_client_t *c = ac->c;
    if (c)
        pthread_mutex_lock(&c->mu);
    for (ac_node_t *n = ac->all; n;) {
        ac_node_t *next = n->anext;
        shoal_future_t *f = n->f;
        if (!n->queued) {
            for (ac_node_t **pp = &f->acs; *pp; pp = &(*pp)->fnext) {
                if (*pp == n) {
                    *pp = n->fnext;
                    break;
                }
            }
        }
        if (--f->refs == 0)
            client_future_free(f);
        free(n);
        n = next;
    }
    if (c)
        pthread_mutex_unlock(&c->mu);
    free(ac);
}

/* ---- cancel and release ----------------------------------------------------- */

int shoal_cancel(shoal_future_t *f)
{
    if (!f) {
        errno = EINVAL;
        return -1;
    }
    shoal_client_t *c = f->c;
    if (c->inline_mode)
        return 0; /* inline futures are complete as soon as they exist */
    pthread_mutex_lock(&c->mu);
    if (f->status == SHOAL_PENDING && !f->cancel_sent && !c->dead && !c->stopping) {
        if (client_u64vec_push(&c->can, f->id) < 0) {
            pthread_mutex_unlock(&c->mu);
            errno = ENOMEM;
            return -1;
        }
        f->cancel_sent = 1;
        client_wake_locked(c);
    }
    pthread_mutex_unlock(&c->mu);
    client_kick(c);
    return 0;
}

void shoal_release(shoal_future_t *f)
{
    if (!f)
        return;
    shoal_client_t *c = f->c;
    pthread_mutex_lock(&c->mu);
    if (--f->refs == 0)
        client_future_free(f);
    pthread_mutex_unlock(&c->mu);
}
