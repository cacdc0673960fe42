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

void client_fail_pending(shoal_client_t *c, const char *msg)
{
    size_t pos = 0;
    shoal_future_t *f;
    size_t mlen = strlen(msg);
    while (ftab_next(&c->futures, &pos, &f)) {
        if (f->status == SHOAL_PENDING)
            client_future_complete(f, SHOAL_ERROR, NULL, 0, msg, mlen, NULL, 0);
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
        if (client_u64vec_push(&c->rel, f->id) == 0)
            client_wake_locked(c);
    }
    if (f->data && f->data != f->small)
        free(f->data);
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

static int s_check_opts(const shoal_submit_opts_t *o, shoal_error_t *err)
{
    if (!o)
        return 0;
    if (o->retries < 0)
        return client_fail(err, EINVAL, "retries must not be negative (got %d)", o->retries);
    if (o->name && strlen(o->name) > CLIENT_MAX_FUNC)
        return client_fail(err, EINVAL, "task name is longer than %d bytes", CLIENT_MAX_FUNC);
    return 0;
}

/* Pack one SUBMIT item.  0, or -1 if the buffer could not grow. */
static int s_pack_item(msgpack_packer *pk, uint64_t id, const char *func, size_t flen,
                       const void *args, size_t len, const s_item_t *it,
                       const shoal_submit_opts_t *o)
{
    int rc = msgpack_pack_array(pk, 7);
    rc |= msgpack_pack_uint64(pk, id);
    rc |= mp_pack_strn(pk, func, flen);
    rc |= mp_pack_bin(pk, args, len);
    rc |= msgpack_pack_array(pk, (uint32_t)it->ndeps);
    for (size_t d = 0; d < it->ndeps; d++)
        rc |= msgpack_pack_uint64(pk, it->deps[d]);
    rc |= msgpack_pack_int(pk, o ? o->priority : 0);
    rc |= msgpack_pack_int(pk, o ? o->retries : 0);
    rc |= mp_pack_cstr(pk, o ? o->name : NULL);
    return rc ? -1 : 0;
}

/* Remote: assign ids, create the futures and pack the items, all under the
 * lock so that the batch holds all of them or (after a rollback) none. */
static int s_submit_remote(shoal_client_t *c, const char *func, size_t flen,
                           const void *const *args, const size_t *lens, size_t n,
                           s_item_t *items, const shoal_submit_opts_t *o,
                           shoal_future_t **out, shoal_error_t *err)
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
                        lens[made - 1], &items[made - 1], o) < 0) {
            client_fail(err, ENOMEM, "out of memory submitting %zu task(s)", n);
            goto error;
        }
    }
    c->next_n += n;
    client_wake_locked(c);
    pthread_mutex_unlock(&c->mu);
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
    if (s_check_opts(opts, err) < 0)
        return -1;
    if (n == 0)
        return 0;
    if (n > CLIENT_N_MAX)
        return client_fail(err, EINVAL, "too many tasks in one call");

    /* Validate the arguments (and find the future references in them)
     * before taking the lock: the parse need not block the I/O thread. */
    s_item_t one, *items = &one;
    if (n > 1 && !(items = calloc(n, sizeof *items)))
        return client_fail(err, ENOMEM, "out of memory submitting %zu tasks", n);
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
        rc = s_submit_remote(c, func, flen, args, lens, n, items, opts, out, err);
out:;
    int e = errno;
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

int shoal_result(shoal_future_t *f, double timeout, const void **data, size_t *len,
                 shoal_error_t *err)
{
    if (!f)
        return client_fail(err, EINVAL, "shoal_result: no future");
    int st = s_wait_one(f, timeout, err);
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
     * ends the gather. */
    size_t i = 0;
    int st = SHOAL_FINISHED;
    pthread_mutex_lock(&c->mu);
    while (i < n) {
        st = fs[i]->status;
        if (st == SHOAL_FINISHED) {
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
