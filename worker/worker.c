/*
 * worker.c - one worker process (see worker.h).
 *
 * Threads: the calling thread runs a libev loop that owns the ZeroMQ DEALER
 * socket to the scheduler, the id -> job map, the outgoing TASK_DONE batch,
 * the result store, the data endpoint and the sockets to peers' data
 * endpoints; nothing else touches them.  Executor threads (pool.c) only see
 * the jobs handed to them, and the stored buffers those jobs hold a
 * reference on.
 *
 * Path of a task: COMPUTE item -> validated, function resolved, arguments and
 * inline dependency results copied into one allocation with the job; inputs
 * held in the local store are pinned (a reference on the buffer) -> if every
 * input is here: pool job queue; else the missing ones are fetched from their
 * holders (fetch.c) and the job waits -> an executor runs it with exec_task
 * -> pool done queue -> ev_async wakes the loop, which keeps a large result
 * in the store and appends [id, status, payload, duration_us, nbytes] to the
 * TASK_DONE batch -> the batch is sent before the loop sleeps (ev_prepare) or
 * once it passes 1 MiB.  A task whose inputs are all inline (the common case
 * of small results) costs what it did before the data plane: one malloc for
 * the job, one for the result (made by exec_task), a hash-map insert and
 * delete, and one lock round on each side of the pool; no system call of its
 * own.
 *
 * Stored results (docs/DATAPLANE.md): results over PROTO_INLINE_MAX packed
 * bytes are kept here and only their size goes to the scheduler; data PUT by
 * clients is kept too, and so are inputs fetched from peers (the scheduler
 * learns of each copy from HAVE and counts this worker as one more holder);
 * all stay until the scheduler's FREE.
 */
#define _GNU_SOURCE
#include "worker.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <ev.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "dataserv.h"
#include "exec.h"
#include "fetch.h"
#include "log.h"
#include "mp.h"
#include "pool.h"
#include "proto.h"
#include "store.h"
#include "u64map.h"
#include "util.h"
#include "zwatch.h"

/* A TASK_DONE batch is sent early once it is this large. */
#define DONE_FLUSH_BYTES (1u << 20)
/* Messages taken from the socket per callback, so that finished tasks get
 * reported between large bursts of COMPUTE (zwatch calls again at once). */
#define RECV_BURST 64
/* How long shutdown waits for executors stuck in a task. */
#define JOIN_TIMEOUT 5.0
/* After a HELLO, further ERROR{code: 4} within this many seconds are answers
 * to messages sent before it, not a new scheduler restart. */
#define HELLO_AGAIN_AFTER 0.5
/* Bound on the function name quoted back in an error. */
#define FNAME_SHOW 200
/* Bound on the holders listed for one dependency in COMPUTE. */
#define MAX_HOLDERS_LISTED 1024
/* Allocations from the mmap threshold up get their own mapping, and freed
 * heap above the trim threshold (twice it) is given back (see s_malloc_tune):
 * the threshold is a 32nd of the memory limit, within these bounds.  The
 * upper one is glibc's largest (half a thread arena's 64 MiB heap). */
#define WORKER_MMAP_MIN (1u << 20)
#define WORKER_MMAP_MAX (32u << 20)
#define WORKER_MMAP_SHARE 32
/* Least time between two malloc_trim calls made to avoid a pause. */
#define TRIM_INTERVAL 0.1

typedef enum {
    STOP_NONE = 0,
    STOP_SIGNAL,      /* SIGINT/SIGTERM: tell the scheduler BYE */
    STOP_BYE,         /* the scheduler said BYE */
    STOP_LOST,        /* death timeout */
    STOP_REFUSED,     /* the scheduler refused us (version) */
    STOP_ERROR,       /* socket failure */
    STOP_RETIRED,     /* lifetime over: tell the scheduler BYE */
} stop_reason_t;

/*
 * A job as the worker sees it: the pool's job plus what the data plane
 * needs.  One allocation holds, in order: this struct, the exec_dep_t array,
 * the pins array (only if some input comes from the store), the arguments
 * and the inline dependency results.
 */
typedef struct wjob {
    pool_job_t pj;               /* first: a pool_job_t * is a wjob_t * */
    /* Per dependency: the stored buffer this job holds a reference on, NULL
     * for inline ones and those not here yet.  NULL when every input was
     * inline (the fast path). */
    store_buf_t **pins;
    uint32_t nwait;              /* inputs being fetched */
    uint32_t nlost;              /* inputs no holder could give */
    int waiting;                 /* on the waiting list, not in the pool */
    struct wjob *wprev, *wnext;  /* the waiting list */
} wjob_t;

typedef struct worker {
    const worker_config_t *cfg;
    struct ev_loop *loop;
    void *zctx;
    void *sock;
    zwatch_t *zw;
    pool_t *pool;
    u64map_t *jobs;              /* id -> wjob_t: waiting, queued or running */
    wjob_t *whead, *wtail;       /* jobs waiting for inputs */
    store_t *store;
    dataserv_t *data;
    fetch_t *fetch;
    proto_batch_t done;          /* TASK_DONE items not sent yet */
    proto_batch_t have;          /* HAVE: fetched copies kept, not told yet */
    ev_async wake;               /* executors -> loop: done queue non-empty */
    pthread_t loop_thread;       /* the thread running the loop */
    int drain_now;               /* an inline run filled the done queue */
    ev_prepare flush;            /* send the batch before the loop sleeps */
    ev_timer tick;               /* heartbeat + death timeout + memory */
    ev_signal sigint, sigterm;
    ev_timer lifetime;           /* retirement, then its grace period */
    double last_heard;           /* ev_now of the last message received */
    double last_hello;           /* ev_now of the last HELLO sent */
    int welcomed;
    int retiring;                /* lifetime over: no new work is started */
    double grace;                /* seconds running tasks get once retiring */
    stop_reason_t stop;
    uint64_t ndone, nfailed, nmissing;
    /* Memory (only with a limit). */
    int statm_fd;                /* /proc/self/statm, kept open */
    long page_size;
    int mem_dirty;               /* something was stored: check before sleeping */
    int paused;                  /* PAUSE {"paused": true} was sent */
    double last_trim;            /* ev_now of the last malloc_trim before pausing */
    char spill_dir[PATH_MAX];
} worker_t;

typedef void (*s_handler_fn)(worker_t *w, proto_msg_t *m);

/* ---- executor side ------------------------------------------------------ */

/* Runs on an executor thread: the only worker code that does.  The job's
 * inputs (inline copies, or stored buffers it holds a reference on) stay
 * valid until the loop thread takes the job back. */
static void s_run_job(pool_job_t *job, void *arg)
{
    const worker_t *w = arg;
    exec_result_t r;
    double t0 = util_now();

    if (exec_task(job->fn, job->id, w->cfg->name, &job->cancelled, job->args,
                  job->args_len, job->deps, job->ndeps, &r) == 0) {
        job->status = TASK_OK;
        job->out = r.data;
        job->out_len = r.len;
    } else {
        size_t n = strnlen(r.err, sizeof(r.err));
        job->status = TASK_ERR;
        job->out = malloc(n ? n : 1);
        if (job->out) {
            memcpy(job->out, r.err, n);
            job->out_len = n;
        } else {
            job->out_len = 0;   /* reported as an empty error text */
        }
    }
    job->duration_us = (uint64_t)((util_now() - t0) * 1e6);
}

/* The done list became non-empty.  On an executor thread: wake the loop
 * (ev_async_send is thread-safe and coalesces).  On the loop thread itself,
 * after a job ran inline in pool_submit: the loop is awake, so the prepare
 * drains the list before it flushes, and the outcome leaves in this very
 * iteration rather than after another turn for the async. */
static void s_notify(void *arg)
{
    worker_t *w = arg;
    if (pthread_equal(pthread_self(), w->loop_thread)) {
        w->drain_now = 1;
        return;
    }
    ev_async_send(w->loop, &w->wake);
}

/* ---- output ------------------------------------------------------------- */

static void s_flush(worker_t *w)
{
    /* Copies first: the scheduler records them before the outcomes of the
     * tasks that used them, which may end their last use. */
    if (proto_batch_count(&w->have) > 0 && proto_batch_send(&w->have, w->sock, NULL, 0) < 0)
        log_err("sending HAVE failed: %s", zmq_strerror(errno));
    if (proto_batch_count(&w->done) == 0)
        return;
    if (proto_batch_send(&w->done, w->sock, NULL, 0) < 0)
        log_err("sending TASK_DONE failed: %s", zmq_strerror(errno));
}

static void s_done_added(worker_t *w)
{
    if (proto_batch_bytes(&w->done) > DONE_FLUSH_BYTES)
        s_flush(w);
}

/* [id, status, payload, duration_us, nbytes]: an inline result (bin), or an
 * error text (str). */
static void s_add_done(worker_t *w, uint64_t id, int status, const void *payload,
                       size_t len, uint64_t duration_us)
{
    msgpack_packer *pk = proto_batch_add(&w->done);

    msgpack_pack_array(pk, 5);
    msgpack_pack_uint64(pk, id);
    msgpack_pack_int(pk, status);
    if (status == TASK_OK)
        mp_pack_bin(pk, payload, len);
    else
        mp_pack_strn(pk, payload, len);
    msgpack_pack_uint64(pk, duration_us);
    msgpack_pack_uint64(pk, status == TASK_OK ? (uint64_t)len : 0);
    if (status == TASK_OK)
        w->ndone++;
    else
        w->nfailed++;
    s_done_added(w);
}

/* [id, 0, nil, duration_us, nbytes]: the result is in our store. */
static void s_add_kept(worker_t *w, uint64_t id, uint64_t nbytes, uint64_t duration_us)
{
    msgpack_packer *pk = proto_batch_add(&w->done);

    msgpack_pack_array(pk, 5);
    msgpack_pack_uint64(pk, id);
    msgpack_pack_int(pk, TASK_OK);
    msgpack_pack_nil(pk);
    msgpack_pack_uint64(pk, duration_us);
    msgpack_pack_uint64(pk, nbytes);
    w->ndone++;
    s_done_added(w);
}

/* [id, 3, [dep ids], 0, 0]: inputs that no holder could give. */
static void s_add_missing(worker_t *w, const wjob_t *j)
{
    msgpack_packer *pk = proto_batch_add(&w->done);
    size_t i;

    msgpack_pack_array(pk, 5);
    msgpack_pack_uint64(pk, j->pj.id);
    msgpack_pack_int(pk, TASK_MISSING);
    msgpack_pack_array(pk, j->nlost);
    for (i = 0; i < j->pj.ndeps; i++)
        if (!j->pj.deps[i].data)
            msgpack_pack_uint64(pk, j->pj.deps[i].id);
    msgpack_pack_uint64(pk, 0);
    msgpack_pack_uint64(pk, 0);
    w->nmissing++;
    s_done_added(w);
}

static void s_add_error(worker_t *w, uint64_t id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void s_add_error(worker_t *w, uint64_t id, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof(buf))
        n = (int)sizeof(buf) - 1;
    s_add_done(w, id, TASK_ERR, buf, (size_t)n, 0);
}

static int s_send_simple(worker_t *w, int type)
{
    static const uint8_t nil = 0xc0;

    if (proto_send(w->sock, NULL, 0, type, &nil, 1, NULL, 0) < 0) {
        log_err("sending %s failed: %s", proto_type_name(type), zmq_strerror(errno));
        return -1;
    }
    return 0;
}

static int s_send_pause(worker_t *w)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    int rc;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    mp_pack_cstr(&pk, "paused");
    if (w->paused)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    rc = proto_send(w->sock, NULL, 0, MSG_PAUSE, sb.data, sb.size, NULL, 0);
    if (rc < 0)
        log_err("sending PAUSE failed: %s", zmq_strerror(errno));
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static int s_send_hello(worker_t *w)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    size_t i;
    int rc;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 9);
    mp_pack_cstr(&pk, "role");
    mp_pack_cstr(&pk, "worker");
    mp_pack_cstr(&pk, "name");
    mp_pack_cstr(&pk, w->cfg->name);
    mp_pack_cstr(&pk, "host");
    mp_pack_cstr(&pk, util_hostname());
    mp_pack_cstr(&pk, "pid");
    msgpack_pack_int64(&pk, (int64_t)getpid());
    mp_pack_cstr(&pk, "nthreads");
    msgpack_pack_int(&pk, w->cfg->nthreads);
    mp_pack_cstr(&pk, "proto");
    msgpack_pack_int(&pk, PROTO_VERSION);
    mp_pack_cstr(&pk, "data");
    mp_pack_cstr(&pk, dataserv_address(w->data));
    mp_pack_cstr(&pk, "resources");
    msgpack_pack_map(&pk, (uint32_t)w->cfg->nresources);
    for (i = 0; i < w->cfg->nresources; i++) {
        mp_pack_cstr(&pk, w->cfg->resources[i].name);
        msgpack_pack_double(&pk, w->cfg->resources[i].amount);
    }
    mp_pack_cstr(&pk, "memory_limit");
    msgpack_pack_uint64(&pk, w->cfg->memory_limit);
    rc = proto_send(w->sock, NULL, 0, MSG_HELLO, sb.data, sb.size, NULL, 0);
    w->last_hello = ev_now(w->loop);
    if (rc < 0)
        log_err("sending HELLO failed: %s", zmq_strerror(errno));
    msgpack_sbuffer_destroy(&sb);
    /* A scheduler that forgot us must also learn that we take no work. */
    if (rc == 0 && w->paused)
        s_send_pause(w);
    return rc;
}

static void s_stop(worker_t *w, stop_reason_t why)
{
    if (w->stop == STOP_NONE)
        w->stop = why;
    ev_break(w->loop, EVBREAK_ALL);
}

/* ---- memory ------------------------------------------------------------- */

/* Resident set size in bytes, or 0 if unknown. */
static uint64_t s_rss(worker_t *w)
{
    char buf[128], *end;
    unsigned long long res;
    ssize_t n;

    if (w->statm_fd < 0)
        return 0;
    n = pread(w->statm_fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    /* "size resident shared text lib data dt", in pages: skip the size. */
    strtoull(buf, &end, 10);
    if (end == buf)
        return 0;
    res = strtoull(end, NULL, 10);
    return (uint64_t)res * (uint64_t)w->page_size;
}

/* Spill what is over the target, then PAUSE/resume on the process's RSS. */
static void s_check_memory(worker_t *w)
{
    uint64_t limit = w->cfg->memory_limit, rss;

    if (limit == 0)
        return;
    store_maintain(w->store);
    rss = s_rss(w);
    if (rss == 0)
        return;
    if (!w->paused && (double)rss > WORKER_PAUSE_FRACTION * (double)limit) {
        /* Freed results stay on the heap for reuse (s_malloc_tune) and count
         * in the RSS: give them back first, and pause only on memory that is
         * really in use.  A trim brought it below the threshold moments ago:
         * leave the decision to a later check (the tick, at the latest)
         * rather than trim on every check while hovering there. */
        if (ev_now(w->loop) - w->last_trim < TRIM_INTERVAL)
            return;
        w->last_trim = ev_now(w->loop);
        malloc_trim(0);
        rss = s_rss(w);
    }
    if (!w->paused && (double)rss > WORKER_PAUSE_FRACTION * (double)limit) {
        store_stats_t st;
        store_stats(w->store, &st);
        w->paused = 1;
        log_warn("worker %s: memory %.0f MB is over %.0f%% of the limit (%.0f MB; %.0f MB "
                 "of results in memory): pausing", w->cfg->name, rss / 1e6,
                 WORKER_PAUSE_FRACTION * 100, limit / 1e6, st.mem_bytes / 1e6);
        dataserv_set_paused(w->data, 1);
        s_send_pause(w);
    } else if (w->paused && (double)rss < WORKER_RESUME_FRACTION * (double)limit) {
        w->paused = 0;
        log_info("worker %s: memory %.0f MB is below %.0f%% of the limit again: resuming",
                 w->cfg->name, rss / 1e6, WORKER_RESUME_FRACTION * 100);
        dataserv_set_paused(w->data, 0);
        s_send_pause(w);
    }
}

/* ---- jobs --------------------------------------------------------------- */

static void s_waiting_add(worker_t *w, wjob_t *j)
{
    j->waiting = 1;
    j->wnext = NULL;
    j->wprev = w->wtail;
    if (w->wtail)
        w->wtail->wnext = j;
    else
        w->whead = j;
    w->wtail = j;
}

static void s_waiting_remove(worker_t *w, wjob_t *j)
{
    if (!j->waiting)
        return;
    if (j->wprev)
        j->wprev->wnext = j->wnext;
    else
        w->whead = j->wnext;
    if (j->wnext)
        j->wnext->wprev = j->wprev;
    else
        w->wtail = j->wprev;
    j->wprev = j->wnext = NULL;
    j->waiting = 0;
}

/* Give back the stored inputs a job holds. */
static void s_unpin(wjob_t *j)
{
    size_t i;

    if (!j->pins)
        return;
    for (i = 0; i < j->pj.ndeps; i++) {
        if (!j->pins[i])
            continue;
        store_buf_unref(j->pins[i]);
        j->pins[i] = NULL;
    }
}

/* Free a job that is in no queue of the pool: not waiting any more for its
 * inputs, its pins given back, out of the map if it is still there as itself. */
static void s_job_free(worker_t *w, wjob_t *j)
{
    size_t i;

    if (j->waiting) {
        for (i = 0; i < j->pj.ndeps; i++)
            if (!j->pj.deps[i].data)
                fetch_unwant(w->fetch, j->pj.deps[i].id, j);
        s_waiting_remove(w, j);
    }
    s_unpin(j);
    if (u64map_get(w->jobs, j->pj.id) == j)
        u64map_del(w->jobs, j->pj.id);
    free(j->pj.out);
    free(j);
}

static void s_free_list(worker_t *w, pool_job_t *j)
{
    pool_job_t *next;

    for (; j; j = next) {
        next = j->next;
        s_job_free(w, (wjob_t *)j);
    }
}

/* Queue jobs (linked through pj.next) to the pool. */
static void s_submit(worker_t *w, wjob_t *head)
{
    if (head && pool_submit(w->pool, &head->pj) < 0) {
        /* Only after shutdown began, which stops the loop first. */
        s_free_list(w, &head->pj);
    }
}

/* All of a waiting job's fetches have ended: run it, or report what could
 * not be had.  Returns the job if it is ready to be submitted. */
static wjob_t *s_inputs_settled(worker_t *w, wjob_t *j)
{
    s_waiting_remove(w, j);
    if (j->nlost == 0)
        return j;
    log_info("task %llu: %u inputs could not be fetched from any holder",
             (unsigned long long)j->pj.id, j->nlost);
    s_add_missing(w, j);
    s_job_free(w, j);
    return NULL;
}

/* fetch.c's callback: one input arrived (buf) or is lost (NULL). */
static void s_on_fetched(void *arg, uint64_t id, store_buf_t *buf,
                         const fetch_waiter_t *ws, size_t n)
{
    worker_t *w = arg;
    wjob_t *head = NULL, *tail = NULL;
    int stored = 0;
    size_t i;

    if (buf) {
        /* The store takes our reference; each waiting job takes its own.  If
         * the id arrived here meanwhile (computed, PUT), that entry stays and
         * the copy is used for these jobs only. */
        if (store_has(w->store, id)) {
            log_debug("result %llu arrived here while it was fetched: copy used uncached",
                      (unsigned long long)id);
        } else if (store_put(w->store, id, buf) == 0) {
            /* Kept like a result of our own, until the scheduler's FREE: it
             * learns of the copy from HAVE and counts this worker as one
             * more holder (or answers FREE if nothing wants it). */
            stored = 1;
            w->mem_dirty = 1;
            msgpack_pack_uint64(proto_batch_add(&w->have), id);
        } else {
            log_warn("out of memory storing fetched result %llu: used uncached",
                     (unsigned long long)id);
        }
    }
    for (i = 0; i < n; i++) {
        wjob_t *j = ws[i].task;
        uint32_t k = ws[i].index;

        if (buf) {
            j->pins[k] = store_buf_ref(buf);
            j->pj.deps[k].data = buf->data;
            j->pj.deps[k].len = buf->len;
        } else {
            j->nlost++;
        }
        if (--j->nwait == 0 && (j = s_inputs_settled(w, j))) {
            j->pj.next = NULL;
            if (tail)
                tail->pj.next = &j->pj;
            else
                head = j;
            tail = j;
        }
    }
    if (buf && !stored)
        store_buf_unref(buf);
    s_submit(w, head);
}

/* ---- finished jobs ------------------------------------------------------ */

/* Keep a large result in the store; report its size. */
static void s_keep_result(worker_t *w, pool_job_t *j)
{
    store_buf_t *b = store_buf_from_malloc(j->out, j->out_len);

    if (!b || store_put(w->store, j->id, b) < 0) {
        if (b) {
            b->data = NULL;       /* still owned by the job */
            store_buf_unref(b);
        }
        s_add_error(w, j->id, "worker %s: out of memory keeping the result (%zu bytes)",
                    w->cfg->name, j->out_len);
        return;
    }
    j->out = NULL;                /* the store owns it now */
    s_add_kept(w, j->id, j->out_len, j->duration_us);
    w->mem_dirty = 1;
}

static void s_drain_done(worker_t *w)
{
    pool_job_t *j = pool_take_done(w->pool), *next;

    for (; j; j = next) {
        wjob_t *wj = (wjob_t *)j;
        next = j->next;
        /* A cancelled job was already dropped from the map, and the same id
         * may have been submitted again since: put such an entry back. */
        pool_job_t *x = u64map_del(w->jobs, j->id);
        if (x && x != j)
            u64map_put(w->jobs, j->id, x);
        if (wj->pins)
            s_unpin(wj);
        if (!__atomic_load_n(&j->cancelled, __ATOMIC_ACQUIRE)) {
            if (j->status == TASK_OK && j->out_len > PROTO_INLINE_MAX)
                s_keep_result(w, j);
            else
                s_add_done(w, j->id, j->status, j->out, j->out_len, j->duration_us);
        }
        free(j->out);
        free(j);
    }
    /* A retiring worker leaves as soon as its last running task is reported. */
    if (w->retiring && pool_running(w->pool) == 0 && w->stop == STOP_NONE)
        s_stop(w, STOP_RETIRED);
}

static void s_on_wake(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)revents;
    s_drain_done(a->data);
}

static void s_on_flush(struct ev_loop *loop, ev_prepare *p, int revents)
{
    worker_t *w = p->data;

    (void)loop;
    (void)revents;
    /* Requests for inputs first: a COMPUTE batch's wants go out together,
     * several ids per GET. */
    fetch_pump(w->fetch);
    if (w->drain_now) {
        w->drain_now = 0;
        s_drain_done(w);
    }
    if (w->mem_dirty) {
        w->mem_dirty = 0;
        s_check_memory(w);
    }
    s_flush(w);
}

/* ---- message handlers --------------------------------------------------- */

static void s_on_welcome(worker_t *w, proto_msg_t *m)
{
    (void)m;
    w->welcomed = 1;
    log_info("worker %s connected to %s (data endpoint %s)", w->cfg->name, w->cfg->address,
             dataserv_address(w->data));
}

static void s_on_error(worker_t *w, proto_msg_t *m)
{
    int64_t code = 0;
    const msgpack_object *c = mp_map_get(&m->body, "code");
    const msgpack_object *t = mp_map_get(&m->body, "message");
    const char *text = "";
    size_t tlen = 0;

    if (!c || mp_i64(c, &code) < 0) {
        log_warn("malformed ERROR from the scheduler");
        return;
    }
    if (!t || mp_str(t, &text, &tlen) < 0) {
        text = "";
        tlen = 0;
    }
    if (tlen > 512)
        tlen = 512;
    if (code == PERR_NOT_REGISTERED) {
        /* Every message we sent before the new HELLO arrived there earns one
         * of these: register once, not once per message. */
        if (ev_now(w->loop) - w->last_hello < HELLO_AGAIN_AFTER)
            return;
        log_info("the scheduler does not know worker %s (restarted?): registering again",
                 w->cfg->name);
        s_send_hello(w);
        return;
    }
    if (code == PERR_VERSION) {
        log_err("the scheduler refused worker %s: %.*s", w->cfg->name, (int)tlen, text);
        s_stop(w, STOP_REFUSED);
        return;
    }
    log_warn("error %lld from the scheduler: %.*s", (long long)code, (int)tlen, text);
}

static void s_on_heartbeat(worker_t *w, proto_msg_t *m)
{
    /* The echo of our own heartbeat: receiving it is all that matters. */
    (void)w;
    (void)m;
}

static void s_on_bye(worker_t *w, proto_msg_t *m)
{
    (void)m;
    log_info("the scheduler said goodbye: worker %s exiting", w->cfg->name);
    s_stop(w, STOP_BYE);
}

/*
 * One dependency of a COMPUTE item: [dep_id, bin] (the form before the data
 * plane), or [dep_id, inline: bin|nil, nbytes, [holder addresses]].  Sets
 * inline_p and inline_len for an inline one, else holders, nholders and
 * nbytes.  0, or -1 if malformed.
 */
static int s_parse_dep(const msgpack_object *dep, uint64_t *id, const void **inline_p,
                       size_t *inline_len, const msgpack_object **holders, size_t *nholders,
                       uint64_t *nbytes)
{
    const msgpack_object *d;
    size_t dn, i;

    *inline_p = NULL;
    *holders = NULL;
    *nholders = 0;
    *nbytes = 0;
    if (mp_array(dep, &d, &dn) < 0 || (dn != 2 && dn != 4) || mp_u64(&d[0], id) < 0 ||
        *id == 0)
        return -1;
    if (mp_bin(&d[1], inline_p, inline_len) == 0) {
        if (!*inline_p)
            *inline_p = "";   /* an empty bin is still inline */
        return 0;
    }
    if (dn != 4 || !mp_is_nil(&d[1]) || mp_u64(&d[2], nbytes) < 0 ||
        mp_array(&d[3], holders, nholders) < 0 || *nholders > MAX_HOLDERS_LISTED)
        return -1;
    for (i = 0; i < *nholders; i++)
        if ((*holders)[i].type != MSGPACK_OBJECT_STR)
            return -1;
    return 0;
}

/* Ask the fetcher for input k of j.  0, or -1 when no holder is usable. */
static int s_want_input(worker_t *w, wjob_t *j, uint32_t k, uint64_t nbytes,
                        const msgpack_object *holders, size_t nholders)
{
    char addrs[FETCH_MAX_HOLDERS][FETCH_ADDR_MAX];
    const char *ptrs[FETCH_MAX_HOLDERS];
    size_t i, n = 0;

    for (i = 0; i < nholders && n < FETCH_MAX_HOLDERS; i++) {
        if (mp_strcpy(&holders[i], addrs[n], sizeof(addrs[n])) < 0)
            continue;   /* too long: not an address we can use */
        ptrs[n] = addrs[n];
        n++;
    }
    if (n == 0)
        return -1;
    return fetch_want(w->fetch, j->pj.deps[k].id, nbytes, ptrs, n, j, k);
}

/*
 * Turn one COMPUTE item into a job (or an immediate TASK_DONE).  Returns the
 * job if it can be queued now; NULL when the item was answered, dropped, or
 * is waiting for inputs from peers.
 */
static wjob_t *s_compute_item(worker_t *w, const msgpack_object *item)
{
    const msgpack_object *f, *deps = NULL;
    size_t n, ndeps = 0, nstored = 0, i, fl, alen, total;
    const char *fname;
    const void *args;
    uint64_t id;
    shoal_task_fn fn;
    wjob_t *j;
    exec_dep_t *dv;
    char *at;

    if (mp_array(item, &f, &n) < 0 || n < 1 || mp_u64(&f[0], &id) < 0) {
        log_warn("COMPUTE: dropped an item without a readable task id");
        return NULL;
    }
    if (id == 0) {
        log_warn("COMPUTE: task id 0 is invalid");
        s_add_error(w, id, "malformed COMPUTE item: task id 0 is invalid");
        return NULL;
    }
    if (n < 4) {
        log_warn("COMPUTE: task %llu: %zu fields, expected 4", (unsigned long long)id, n);
        s_add_error(w, id, "malformed COMPUTE item: %zu fields, expected 4", n);
        return NULL;
    }
    if (mp_str(&f[1], &fname, &fl) < 0) {
        log_warn("COMPUTE: task %llu: function name is not a string",
                 (unsigned long long)id);
        s_add_error(w, id, "malformed COMPUTE item: function name is not a string");
        return NULL;
    }
    if (mp_bin(&f[2], &args, &alen) < 0) {
        log_warn("COMPUTE: task %llu: arguments are not bin", (unsigned long long)id);
        s_add_error(w, id, "malformed COMPUTE item: arguments are not bin");
        return NULL;
    }
    if (mp_array(&f[3], &deps, &ndeps) < 0) {
        log_warn("COMPUTE: task %llu: dependencies are not an array",
                 (unsigned long long)id);
        s_add_error(w, id, "malformed COMPUTE item: dependencies are not an array");
        return NULL;
    }
    /* Validate the dependencies and size the allocation.  Every length is
     * bounded by the received frame, itself bounded by ZMQ_MAXMSGSIZE. */
    total = sizeof(*j) + ndeps * sizeof(exec_dep_t) + alen;
    for (i = 0; i < ndeps; i++) {
        const msgpack_object *holders;
        size_t dl = 0, nh;
        uint64_t did, nb;
        const void *dp;

        if (s_parse_dep(&deps[i], &did, &dp, &dl, &holders, &nh, &nb) < 0) {
            log_warn("COMPUTE: task %llu: dependency %zu is malformed",
                     (unsigned long long)id, i);
            s_add_error(w, id, "malformed COMPUTE item: dependency %zu is not [id, result] "
                        "or [id, nil, nbytes, [holders]]", i);
            return NULL;
        }
        if (dp)
            total += dl;
        else
            nstored++;
    }
    if (nstored)
        total += ndeps * sizeof(store_buf_t *);
    fn = tasklib_find(w->cfg->lib, fname, fl);
    if (!fn) {
        int show = fl > FNAME_SHOW ? FNAME_SHOW : (int)fl;
        s_add_error(w, id, "unknown function '%.*s' on worker %s", show, fname,
                    w->cfg->name);
        return NULL;
    }
    if (u64map_get(w->jobs, id)) {
        /* The scheduler already has this task here; its outcome will be
         * reported once. */
        log_warn("COMPUTE: task %llu is already on this worker: duplicate ignored",
                 (unsigned long long)id);
        return NULL;
    }

    j = malloc(total);
    if (!j) {
        s_add_error(w, id, "worker %s: out of memory for the task's arguments",
                    w->cfg->name);
        return NULL;
    }
    memset(j, 0, sizeof(*j));
    j->pj.id = id;
    j->pj.fn = fn;
    dv = (exec_dep_t *)(j + 1);
    at = (char *)(dv + ndeps);
    if (nstored) {
        j->pins = (store_buf_t **)at;
        memset(j->pins, 0, ndeps * sizeof(store_buf_t *));
        at += ndeps * sizeof(store_buf_t *);
    }
    if (alen)
        memcpy(at, args, alen);
    j->pj.args = at;
    j->pj.args_len = alen;
    at += alen;
    for (i = 0; i < ndeps; i++) {
        const msgpack_object *holders;
        size_t dl = 0, nh;
        uint64_t nb;
        const void *dp;

        s_parse_dep(&deps[i], &dv[i].id, &dp, &dl, &holders, &nh, &nb);
        if (dp) {
            if (dl)
                memcpy(at, dp, dl);
            dv[i].data = at;
            dv[i].len = dl;
            at += dl;
        } else {
            dv[i].data = NULL;   /* filled in once it is here */
            dv[i].len = 0;
        }
    }
    j->pj.deps = ndeps ? dv : NULL;
    j->pj.ndeps = ndeps;
    if (u64map_put(w->jobs, id, j) < 0) {
        free(j);
        s_add_error(w, id, "worker %s: out of memory", w->cfg->name);
        return NULL;
    }
    if (!nstored)
        return j;

    /* Inputs that live in stores: ours, or a peer's. */
    for (i = 0; i < ndeps; i++) {
        const msgpack_object *holders;
        size_t dl = 0, nh;
        uint64_t did, nb;
        const void *dp;
        store_buf_t *b;

        if (dv[i].data)
            continue;
        s_parse_dep(&deps[i], &did, &dp, &dl, &holders, &nh, &nb);
        if ((b = store_get(w->store, did))) {
            w->mem_dirty = 1;    /* it may have been read back from disk */
            j->pins[i] = b;
            dv[i].data = b->data;
            dv[i].len = b->len;
            continue;
        }
        if (s_want_input(w, j, (uint32_t)i, nb, holders, nh) < 0) {
            log_info("task %llu: input %llu is not here and has no usable holder",
                     (unsigned long long)id, (unsigned long long)did);
            j->nlost++;
        } else {
            j->nwait++;
        }
    }
    if (j->nwait > 0) {
        s_waiting_add(w, j);
        return NULL;
    }
    return s_inputs_settled(w, j);
}

static void s_on_compute(worker_t *w, proto_msg_t *m)
{
    const msgpack_object *items;
    wjob_t *head = NULL, *tail = NULL, *j;
    size_t n, i;

    if (mp_array(&m->body, &items, &n) < 0) {
        log_warn("COMPUTE body is not an array: ignored");
        return;
    }
    if (w->retiring) {
        /* Not run and not answered: the scheduler still counts these tasks
         * as ours and places them elsewhere when our BYE arrives. */
        log_debug("worker %s is retiring: %zu tasks left for other workers",
                  w->cfg->name, n);
        return;
    }
    for (i = 0; i < n; i++) {
        if (!(j = s_compute_item(w, &items[i])))
            continue;
        j->pj.next = NULL;
        if (tail)
            tail->pj.next = &j->pj;
        else
            head = j;
        tail = j;
    }
    s_submit(w, head);
}

/*
 * Take a job back from wherever it is, if it has not started.  Returns 1 if
 * it was waiting for inputs or queued in the pool (it is then freed), 0 if it
 * is running or finished (left alone: `cancel` decides whether its cancelled
 * flag is set).
 */
static int s_take_back(worker_t *w, wjob_t *j, int cancel)
{
    if (j->waiting) {
        s_job_free(w, j);
        return 1;
    }
    if (!cancel && __atomic_load_n(&j->pj.state, __ATOMIC_ACQUIRE) != POOL_JOB_QUEUED)
        return 0;
    u64map_del(w->jobs, j->pj.id);
    if (pool_cancel(w->pool, &j->pj)) {
        s_job_free(w, j);    /* was still queued: never runs */
        return 1;
    }
    if (!cancel) {
        /* It started between our look and pool_cancel, which then set its
         * cancelled flag: a steal must not stop a running task.  Clearing
         * the flag at once leaves a window of a few instructions in which
         * the task could see it. */
        __atomic_store_n(&j->pj.cancelled, 0, __ATOMIC_RELEASE);
        u64map_put(w->jobs, j->pj.id, j);
    }
    return 0;
}

static void s_on_wcancel(worker_t *w, proto_msg_t *m)
{
    const msgpack_object *ids;
    size_t n, i;

    if (mp_array(&m->body, &ids, &n) < 0) {
        log_warn("WCANCEL body is not an array: ignored");
        return;
    }
    for (i = 0; i < n; i++) {
        uint64_t id;
        wjob_t *j;

        if (mp_u64(&ids[i], &id) < 0 || id == 0) {
            log_warn("WCANCEL: item %zu is not a task id", i);
            continue;
        }
        if (!(j = u64map_get(w->jobs, id)))
            continue;   /* finished already (or never here) */
        if (!s_take_back(w, j, 1)) {
            /* Running (or finished, not yet drained): the flag tells the task
             * to stop, and s_drain_done drops its outcome. */
            log_debug("task %llu cancelled while running", (unsigned long long)id);
        }
    }
}

/* FREE [id...]: the scheduler no longer needs these results here. */
static void s_on_free(worker_t *w, proto_msg_t *m)
{
    const msgpack_object *ids;
    size_t n, i, freed = 0;

    if (mp_array(&m->body, &ids, &n) < 0) {
        log_warn("FREE body is not an array: ignored");
        proto_send_error(w->sock, NULL, 0, PERR_BAD_MESSAGE, "FREE needs [id...]");
        return;
    }
    for (i = 0; i < n; i++) {
        uint64_t id;
        if (mp_u64(&ids[i], &id) < 0 || id == 0) {
            log_warn("FREE: item %zu is not a task id", i);
            continue;
        }
        freed += (size_t)store_remove(w->store, id);
    }
    log_debug("FREE: %zu of %zu results dropped", freed, n);
}

/* STEAL [id...] -> STEAL_REPLY [[id, ok]...]: ok when the task had not
 * started (waiting for inputs or queued) and is now given back. */
static void s_on_steal(worker_t *w, proto_msg_t *m)
{
    const msgpack_object *ids;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    size_t n, i;

    if (mp_array(&m->body, &ids, &n) < 0) {
        log_warn("STEAL body is not an array: ignored");
        proto_send_error(w->sock, NULL, 0, PERR_BAD_MESSAGE, "STEAL needs [id...]");
        return;
    }
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, (uint32_t)n);
    for (i = 0; i < n; i++) {
        uint64_t id = 0;
        wjob_t *j;
        int ok = 0;

        if (mp_u64(&ids[i], &id) == 0 && id != 0 && (j = u64map_get(w->jobs, id)))
            ok = s_take_back(w, j, 0);
        msgpack_pack_array(&pk, 2);
        msgpack_pack_uint64(&pk, id);
        if (ok)
            msgpack_pack_true(&pk);
        else
            msgpack_pack_false(&pk);
    }
    if (proto_send(w->sock, NULL, 0, MSG_STEAL_REPLY, sb.data, sb.size, NULL, 0) < 0)
        log_err("sending STEAL_REPLY failed: %s", zmq_strerror(errno));
    msgpack_sbuffer_destroy(&sb);
}

static void s_on_library(worker_t *w, proto_msg_t *m)
{
    char name[256], err[512];
    const msgpack_object *o;
    uint64_t want = 0, got = 0;
    int have_hash = 0;

    o = mp_map_get(&m->body, "name");
    if (!o || mp_strcpy(o, name, sizeof(name)) < 0) {
        log_err("LIBRARY without a valid name: ignored");
        return;
    }
    o = mp_map_get(&m->body, "hash");
    if (o && mp_u64(o, &want) == 0)
        have_hash = 1;
    if (m->nframes < 1) {
        log_err("LIBRARY %s came without its bytes: ignored", name);
        return;
    }
    if (tasklib_load_bytes(w->cfg->lib, name, proto_frame_data(m, 0),
                           proto_frame_size(m, 0), &got, err, sizeof(err)) < 0) {
        /* Tasks that need it fail with "unknown function", which names the
         * worker; this log line says why. */
        log_err("loading library %s sent by the scheduler failed: %s", name, err);
        return;
    }
    if (have_hash && want != got)
        log_warn("library %s: hash %016llx differs from the scheduler's %016llx", name,
                 (unsigned long long)got, (unsigned long long)want);
    log_info("loaded library %s (%zu functions registered)", name,
             tasklib_count(w->cfg->lib));
}

/* One dispatch table: the scheduler is the only peer on this socket, so a
 * type is either handled here or answered with ERROR.  (Peers and clients
 * talk to the data endpoint, dataserv.c.) */
static const s_handler_fn s_dispatch[MSG_TYPE_MAX] = {
    [MSG_WELCOME] = s_on_welcome,
    [MSG_ERROR] = s_on_error,
    [MSG_HEARTBEAT] = s_on_heartbeat,
    [MSG_BYE] = s_on_bye,
    [MSG_COMPUTE] = s_on_compute,
    [MSG_WCANCEL] = s_on_wcancel,
    [MSG_LIBRARY] = s_on_library,
    [MSG_FREE] = s_on_free,
    [MSG_STEAL] = s_on_steal,
};

static void s_on_socket(struct ev_loop *loop, zwatch_t *zw, int revents, void *arg)
{
    worker_t *w = arg;
    proto_msg_t m;
    int i;

    (void)zw;
    if (!(revents & EV_READ))
        return;
    for (i = 0; i < RECV_BURST && w->stop == STOP_NONE; i++) {
        if (proto_recv(w->sock, 0, &m, ZMQ_DONTWAIT) < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            if (errno == EBADMSG || errno == EPROTONOSUPPORT) {
                int ver = errno == EPROTONOSUPPORT;
                w->last_heard = ev_now(loop);
                log_warn("%s from the scheduler: ignored",
                         ver ? "message with another protocol version" : "malformed message");
                proto_send_error(w->sock, NULL, 0, ver ? PERR_VERSION : PERR_BAD_MESSAGE,
                                 ver ? "protocol version mismatch" : "malformed message");
                proto_msg_close(&m);
                continue;
            }
            log_err("receiving from the scheduler failed: %s", zmq_strerror(errno));
            s_stop(w, STOP_ERROR);
            return;
        }
        w->last_heard = ev_now(loop);
        if (m.hdr.type < MSG_TYPE_MAX && s_dispatch[m.hdr.type]) {
            s_dispatch[m.hdr.type](w, &m);
        } else {
            log_warn("unexpected %s (type %d) from the scheduler",
                     proto_type_name(m.hdr.type), m.hdr.type);
            if (m.hdr.type != MSG_ERROR)
                proto_send_error(w->sock, NULL, 0, PERR_UNKNOWN_TYPE,
                                 "worker does not handle message type %d", m.hdr.type);
        }
        proto_msg_close(&m);
    }
}

/* The data endpoint stored a PUT: look at memory before sleeping. */
static void s_on_stored(void *arg)
{
    worker_t *w = arg;
    w->mem_dirty = 1;
}

/* ---- timer and signals -------------------------------------------------- */

static void s_on_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    worker_t *w = t->data;
    double quiet = ev_now(loop) - w->last_heard;

    (void)revents;
    if (quiet >= w->cfg->death_timeout) {
        log_err("worker %s: nothing heard from the scheduler at %s for %.1f s%s: exiting",
                w->cfg->name, w->cfg->address, quiet,
                w->welcomed ? "" : " (it never answered)");
        s_stop(w, STOP_LOST);
        return;
    }
    s_send_simple(w, MSG_HEARTBEAT);
    fetch_tick(w->fetch, ev_now(loop));
    if (w->cfg->memory_limit) {
        /* While paused, hand freed heap back to the system so that the RSS
         * can fall below the resume threshold. */
        if (w->paused)
            malloc_trim(0);
        s_check_memory(w);
    }
}

static void s_on_signal(struct ev_loop *loop, ev_signal *s, int revents)
{
    worker_t *w = s->data;

    (void)loop;
    (void)revents;
    log_info("worker %s: SIG%s received, shutting down", w->cfg->name,
             sigabbrev_np(s->signum));
    s_stop(w, STOP_SIGNAL);
}

/* The grace period of a retiring worker is over: leave, cancelling what
 * still runs (the scheduler re-places it when the BYE arrives). */
static void s_on_grace_over(struct ev_loop *loop, ev_timer *t, int revents)
{
    worker_t *w = t->data;

    (void)loop;
    (void)revents;
    log_warn("worker %s: %zu tasks still running after the %.1f s grace period: "
             "handing them back", w->cfg->name, pool_running(w->pool), w->grace);
    s_stop(w, STOP_RETIRED);
}

/* The lifetime is up: take no more work and hand back what has not
 * started; running tasks get the grace period to finish. */
static void s_on_lifetime(struct ev_loop *loop, ev_timer *t, int revents)
{
    worker_t *w = t->data;
    pool_job_t *j, *next;
    size_t dropped = 0;

    (void)revents;
    w->grace = w->cfg->lifetime / 10.0;
    if (w->grace > WORKER_RETIRE_GRACE_MAX)
        w->grace = WORKER_RETIRE_GRACE_MAX;
    w->retiring = 1;
    for (j = pool_take_queued(w->pool); j; j = next) {
        next = j->next;
        s_job_free(w, (wjob_t *)j);
        dropped++;
    }
    while (w->whead) {
        s_job_free(w, w->whead);
        dropped++;
    }
    log_info("worker %s: lifetime of %.1f s reached: retiring (%zu queued tasks handed "
             "back, %zu running get %.1f s to finish)", w->cfg->name, w->cfg->lifetime,
             dropped, pool_running(w->pool), w->grace);
    /* Report what has finished already; leave now if nothing runs. */
    s_drain_done(w);
    if (w->stop != STOP_NONE)
        return;
    ev_timer_stop(loop, t);
    ev_set_cb(t, s_on_grace_over);
    ev_timer_set(t, w->grace, 0.0);
    ev_timer_start(loop, t);
}

/* An empty handler rather than SIG_IGN: writes to a closed pipe (a command's
 * stdin) fail with EPIPE instead of killing us, and commands started by
 * shoal.cmd get the default disposition back at exec. */
static void s_sigpipe(int sig)
{
    (void)sig;
}

/* ---- resources ---------------------------------------------------------- */

static int s_resource_char(int c)
{
    return isalnum(c) || c == '_' || c == '.' || c == '-';
}

int worker_parse_resources(const char *spec, worker_resource_t *out, size_t *n, char *err,
                           size_t errcap)
{
    const char *p = spec;
    size_t k;

    *n = 0;
    if (!spec) {
        util_fmt(err, errcap, "no resources given");
        return -1;
    }
    while (*p) {
        const char *name = p, *eq, *val, *end;
        char num[64], *numend;
        size_t nl, vl;
        double v;

        end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        eq = memchr(p, '=', (size_t)(end - p));
        if (!eq) {
            util_fmt(err, errcap, "'%.*s' is not NAME=AMOUNT", (int)(end - p > 80 ? 80 : end - p),
                     p);
            return -1;
        }
        nl = (size_t)(eq - name);
        if (nl == 0 || nl >= WORKER_RESOURCE_NAME_MAX) {
            util_fmt(err, errcap, "resource names are 1 to %d characters",
                     WORKER_RESOURCE_NAME_MAX - 1);
            return -1;
        }
        for (k = 0; k < nl; k++)
            if (!s_resource_char((unsigned char)name[k])) {
                util_fmt(err, errcap, "resource name '%.*s': only letters, digits, "
                         "'_', '.' and '-' are allowed", (int)nl, name);
                return -1;
            }
        val = eq + 1;
        vl = (size_t)(end - val);
        if (vl == 0 || vl >= sizeof(num)) {
            util_fmt(err, errcap, "resource %.*s: missing or overlong amount", (int)nl, name);
            return -1;
        }
        memcpy(num, val, vl);
        num[vl] = '\0';
        errno = 0;
        v = strtod(num, &numend);
        if (errno || numend == num || *numend || !isfinite(v) || v < 0 || isspace(num[0])) {
            util_fmt(err, errcap, "resource %.*s: '%s' is not a finite number >= 0", (int)nl,
                     name, num);
            return -1;
        }
        for (k = 0; k < *n; k++)
            if (strlen(out[k].name) == nl && !memcmp(out[k].name, name, nl)) {
                util_fmt(err, errcap, "resource %.*s given twice", (int)nl, name);
                return -1;
            }
        if (*n >= WORKER_MAX_RESOURCES) {
            util_fmt(err, errcap, "at most %d resources", WORKER_MAX_RESOURCES);
            return -1;
        }
        memcpy(out[*n].name, name, nl);
        out[*n].name[nl] = '\0';
        out[*n].amount = v;
        (*n)++;
        if (!*end)
            break;
        p = end + 1;
        if (!*p) {
            util_fmt(err, errcap, "trailing ',' in the resource list");
            return -1;
        }
    }
    if (*n == 0) {
        util_fmt(err, errcap, "empty resource list");
        return -1;
    }
    return 0;
}

/* ---- lifecycle ---------------------------------------------------------- */

/* Set up the store, the data endpoint and the fetcher.  0 or -1 (logged). */
static int s_data_plane_start(worker_t *w)
{
    const worker_config_t *cfg = w->cfg;
    char host[256], err[512];
    const char *dir = cfg->local_directory ? cfg->local_directory : util_runtime_dir();
    dataserv_config_t dc;
    uint64_t target = 0;

    if (util_fmt(w->spill_dir, sizeof(w->spill_dir), "%s/spill-%s-%d", dir, cfg->name,
                 (int)getpid()) < 0) {
        log_err("--local-directory %s is too long", dir);
        return -1;
    }
    if (cfg->memory_limit)
        target = (uint64_t)((double)cfg->memory_limit * WORKER_SPILL_FRACTION);
    if (!(w->store = store_create(w->spill_dir, target))) {
        log_err("cannot create the result store: %s", strerror(errno));
        return -1;
    }
    if (cfg->contact_host) {
        if (util_fmt(host, sizeof(host), "%s", cfg->contact_host) < 0) {
            log_err("--contact-address is too long");
            return -1;
        }
    } else if (dataserv_default_host(cfg->address, host, sizeof(host)) < 0) {
        log_err("cannot choose an address for the data endpoint");
        return -1;
    }
    memset(&dc, 0, sizeof(dc));
    dc.loop = w->loop;
    dc.zctx = w->zctx;
    dc.max_frame = cfg->max_frame;
    dc.store = w->store;
    dc.host = host;
    dc.port = cfg->data_port;
    dc.name = cfg->name;
    dc.stored = s_on_stored;
    dc.arg = w;
    if (!(w->data = dataserv_create(&dc, err, sizeof(err)))) {
        log_err("worker %s: %s", cfg->name, err);
        return -1;
    }
    if (!(w->fetch = fetch_create(w->loop, w->zctx, cfg->max_frame,
                                  cfg->transfer_limit > 0 ? cfg->transfer_limit
                                                          : WORKER_TRANSFER_LIMIT,
                                  cfg->transfer_timeout > 0 ? cfg->transfer_timeout
                                                            : WORKER_TRANSFER_TIMEOUT,
                                  s_on_fetched, w))) {
        log_err("cannot create the fetcher: %s", strerror(errno));
        return -1;
    }
    if (cfg->memory_limit) {
        w->page_size = sysconf(_SC_PAGESIZE);
        w->statm_fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
        if (w->statm_fd < 0)
            log_warn("cannot read /proc/self/statm (%s): no PAUSE on memory use",
                     strerror(errno));
    }
    return 0;
}

/* Close the data plane: sockets first, then the store (spill files and
 * directory removed).  Buffers still in ZeroMQ frames live until sent. */
static void s_data_plane_stop(worker_t *w)
{
    fetch_destroy(w->fetch);
    w->fetch = NULL;
    dataserv_destroy(w->data);
    w->data = NULL;
    store_destroy(w->store);
    w->store = NULL;
    if (w->statm_fd >= 0)
        close(w->statm_fd);
    w->statm_fd = -1;
}

/* Large buffers (results, fetched inputs, read-back spills) come and go,
 * often one of the same size after another.  In a mapping of its own each
 * is page-faulted in when filled and unmapped when freed: most of the time
 * of a task that makes an 8 MB result goes there.  So they come from the heap
 * (each executor thread has its own arena) up to a fixed mmap threshold and
 * a freed one is reused by the next; the trim threshold, twice that, keeps
 * the arenas from giving a freed result back (madvise) right away.
 *
 * The freed memory kept counts in the RSS that pausing is decided on, so the
 * threshold is a small share of the memory limit (a few arenas' worth stays
 * well below the 20% between spilling and pausing), and s_check_memory
 * trims the heap before it pauses.  Fixed values also stop glibc's sliding
 * threshold, which would move it up to any size once freed. */
static void s_malloc_tune(uint64_t memory_limit)
{
    uint64_t mm = memory_limit ? memory_limit / WORKER_MMAP_SHARE : WORKER_MMAP_MAX;

    if (mm < WORKER_MMAP_MIN)
        mm = WORKER_MMAP_MIN;
    if (mm > WORKER_MMAP_MAX)
        mm = WORKER_MMAP_MAX;
    mallopt(M_MMAP_THRESHOLD, (int)mm);
    mallopt(M_TRIM_THRESHOLD, (int)(2 * mm));
}

int worker_run(const worker_config_t *cfg)
{
    worker_t ws, *w = &ws;
    struct sigaction sa;
    int code = WORKER_EXIT_ERROR;

    memset(w, 0, sizeof(*w));
    w->cfg = cfg;
    w->statm_fd = -1;
    proto_batch_init(&w->done, MSG_TASK_DONE);
    proto_batch_init(&w->have, MSG_HAVE);
    s_malloc_tune(cfg->memory_limit);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = s_sigpipe;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, NULL);

    /* Not the default loop: libev's default loop reaps every child with
     * waitpid(-1) on SIGCHLD, which would steal the exit status of the
     * commands that shoal.cmd runs on the executor threads. */
    w->loop_thread = pthread_self();
    if (!(w->loop = ev_loop_new(EVFLAG_AUTO))) {
        log_err("cannot create the event loop");
        goto out;
    }
    if (!(w->jobs = u64map_create(1024))) {
        log_err("out of memory");
        goto out;
    }
    if (!(w->zctx = zmq_ctx_new()) || !(w->sock = zmq_socket(w->zctx, ZMQ_DEALER))) {
        log_err("cannot create a ZeroMQ socket: %s", zmq_strerror(errno));
        goto out;
    }
    if (proto_sock_setup(w->sock, cfg->max_frame) < 0) {
        log_err("cannot set up the socket: %s", zmq_strerror(errno));
        goto out;
    }
    if (s_data_plane_start(w) < 0) {
        code = WORKER_EXIT_CONFIG;
        goto out;
    }
    if (zmq_connect(w->sock, cfg->address) < 0) {
        log_err("cannot connect to %s: %s", cfg->address, zmq_strerror(errno));
        code = WORKER_EXIT_CONFIG;
        goto out;
    }
    if (!(w->zw = zwatch_create(w->loop, w->sock, EV_READ, s_on_socket, w))) {
        log_err("cannot watch the socket: %s", strerror(errno));
        goto out;
    }

    ev_async_init(&w->wake, s_on_wake);
    w->wake.data = w;
    ev_async_start(w->loop, &w->wake);
    /* Highest priority: the batch is sent before zwatch's own prepare looks
     * at ZMQ_EVENTS, since a send can consume the socket's edge trigger. */
    ev_prepare_init(&w->flush, s_on_flush);
    ev_set_priority(&w->flush, EV_MAXPRI);
    w->flush.data = w;
    ev_prepare_start(w->loop, &w->flush);
    ev_timer_init(&w->tick, s_on_tick, 1.0, 1.0);
    w->tick.data = w;
    ev_timer_start(w->loop, &w->tick);
    ev_signal_init(&w->sigint, s_on_signal, SIGINT);
    w->sigint.data = w;
    ev_signal_start(w->loop, &w->sigint);
    ev_signal_init(&w->sigterm, s_on_signal, SIGTERM);
    w->sigterm.data = w;
    ev_signal_start(w->loop, &w->sigterm);
    ev_timer_init(&w->lifetime, s_on_lifetime, cfg->lifetime, 0.0);
    w->lifetime.data = w;
    if (cfg->lifetime > 0)
        ev_timer_start(w->loop, &w->lifetime);

    /* The async watcher is started before any executor can notify it. */
    if (!(w->pool = pool_create(cfg->nthreads, s_run_job, s_notify, w))) {
        log_err("cannot start %d executor threads: %s", cfg->nthreads, strerror(errno));
        goto out;
    }

    ev_now_update(w->loop);
    w->last_heard = ev_now(w->loop);
    if (s_send_hello(w) < 0)
        goto out;
    zwatch_start(w->zw);
    if (cfg->memory_limit)
        log_info("worker %s (%d threads, pid %d) connecting to %s; data endpoint %s, memory "
                 "limit %.0f MB", cfg->name, cfg->nthreads, (int)getpid(), cfg->address,
                 dataserv_address(w->data), cfg->memory_limit / 1e6);
    else
        log_info("worker %s (%d threads, pid %d) connecting to %s; data endpoint %s, no "
                 "memory limit", cfg->name, cfg->nthreads, (int)getpid(), cfg->address,
                 dataserv_address(w->data));

    ev_run(w->loop, 0);

    switch (w->stop) {
    case STOP_SIGNAL:
    case STOP_RETIRED:
        /* Report what is finished, then say BYE so that the scheduler
         * places our other tasks elsewhere at once. */
        s_drain_done(w);
        s_flush(w);
        s_send_simple(w, MSG_BYE);
        code = WORKER_EXIT_OK;
        break;
    case STOP_BYE:
        code = WORKER_EXIT_OK;
        break;
    case STOP_LOST:
        code = WORKER_EXIT_LOST;
        break;
    case STOP_REFUSED:
        code = WORKER_EXIT_CONFIG;
        break;
    default:
        code = WORKER_EXIT_ERROR;
        break;
    }
    log_info("worker %s: %llu tasks done, %llu failed, %llu missing inputs", cfg->name,
             (unsigned long long)w->ndone, (unsigned long long)w->nfailed,
             (unsigned long long)w->nmissing);

out:
    zwatch_destroy(w->zw);
    w->zw = NULL;
    if (w->loop) {
        ev_async_stop(w->loop, &w->wake);
        ev_prepare_stop(w->loop, &w->flush);
        ev_timer_stop(w->loop, &w->tick);
        ev_signal_stop(w->loop, &w->sigint);
        ev_signal_stop(w->loop, &w->sigterm);
        ev_timer_stop(w->loop, &w->lifetime);
    }
    while (w->whead)
        s_job_free(w, w->whead);
    if (w->pool) {
        /* Running tasks get their cancelled flag; queued ones never start. */
        s_free_list(w, pool_take_queued(w->pool));
        if (pool_shutdown(w->pool, JOIN_TIMEOUT) < 0) {
            log_warn("worker %s: %zu tasks ignored cancellation for %.0f s: exiting anyway",
                     cfg->name, pool_running(w->pool), JOIN_TIMEOUT);
            /* The stuck tasks hold references on their stored inputs, which
             * therefore stay in memory; the spill files go. */
            s_data_plane_stop(w);
            /* The BYE is queued in ZeroMQ's I/O thread: give it the socket's
             * linger to leave, then go without running atexit handlers while
             * executor threads are still inside library code. */
            zmq_close(w->sock);
            zmq_ctx_term(w->zctx);
            _exit(code);
        }
        s_free_list(w, pool_take_done(w->pool));
        pool_destroy(w->pool);
    }
    s_data_plane_stop(w);
    u64map_destroy(w->jobs);
    proto_batch_destroy(&w->done);
    proto_batch_destroy(&w->have);
    if (w->sock)
        zmq_close(w->sock);
    if (w->zctx)
        zmq_ctx_term(w->zctx);
    if (w->loop)
        ev_loop_destroy(w->loop);
    return code;
}
