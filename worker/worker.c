/*
 * worker.c - one worker process (see worker.h).
 *
 * Threads: the calling thread runs a libev loop that owns the ZeroMQ DEALER
 * socket, the id -> job map and the outgoing TASK_DONE batch; nothing else
 * touches them.  Executor threads (pool.c) only see the jobs handed to them.
 *
 * Path of a task: COMPUTE item -> validated, function resolved, arguments and
 * dependency results copied into one allocation with the job -> pool job queue
 * -> an executor runs it with exec_task -> pool done queue -> ev_async wakes
 * the loop, which appends [id, status, payload, duration_us] to the TASK_DONE
 * batch -> the batch is sent before the loop sleeps (ev_prepare) or once it
 * passes 1 MiB.  Per task that is one malloc for the job, one for the result
 * (made by exec_task), a hash-map insert and delete, and one lock round on each
 * side of the pool; no system call of its own.
 */
#define _GNU_SOURCE
#include "worker.h"

#include <errno.h>
#include <ev.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "exec.h"
#include "log.h"
#include "mp.h"
#include "pool.h"
#include "proto.h"
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

typedef enum {
    STOP_NONE = 0,
    STOP_SIGNAL,      /* SIGINT/SIGTERM: tell the scheduler BYE */
    STOP_BYE,         /* the scheduler said BYE */
    STOP_LOST,        /* death timeout */
    STOP_REFUSED,     /* the scheduler refused us (version) */
    STOP_ERROR,       /* socket failure */
    STOP_RETIRED,     /* lifetime over: tell the scheduler BYE */
} stop_reason_t;

typedef struct worker {
    const worker_config_t *cfg;
    struct ev_loop *loop;
    void *zctx;
    void *sock;
    zwatch_t *zw;
    pool_t *pool;
    u64map_t *jobs;              /* id -> pool_job_t, queued or running */
    proto_batch_t done;          /* TASK_DONE items not sent yet */
    ev_async wake;               /* executors -> loop: done queue non-empty */
    ev_prepare flush;            /* send the batch before the loop sleeps */
    ev_timer tick;               /* heartbeat + death timeout */
    ev_signal sigint, sigterm;
    ev_timer lifetime;           /* retirement, then its grace period */
    double last_heard;           /* ev_now of the last message received */
    double last_hello;           /* ev_now of the last HELLO sent */
    int welcomed;
    int retiring;                /* lifetime over: no new work is started */
    double grace;                /* seconds running tasks get once retiring */
    stop_reason_t stop;
    uint64_t ndone, nfailed;
} worker_t;

typedef void (*s_handler_fn)(worker_t *w, proto_msg_t *m);

/* ---- executor side ------------------------------------------------------ */

/* Runs on an executor thread: the only worker code that does. */
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

/* Runs on an executor thread; ev_async_send is thread-safe and coalesces. */
static void s_notify(void *arg)
{
    worker_t *w = arg;
    ev_async_send(w->loop, &w->wake);
}

/* ---- output ------------------------------------------------------------- */

static void s_flush(worker_t *w)
{
    if (proto_batch_count(&w->done) == 0)
        return;
    if (proto_batch_send(&w->done, w->sock, NULL, 0) < 0)
        log_err("sending TASK_DONE failed: %s", zmq_strerror(errno));
}

static void s_add_done(worker_t *w, uint64_t id, int status, const void *payload,
                       size_t len, uint64_t duration_us)
{
    msgpack_packer *pk = proto_batch_add(&w->done);

    msgpack_pack_array(pk, 4);
    msgpack_pack_uint64(pk, id);
    msgpack_pack_int(pk, status);
    if (status == TASK_OK)
        mp_pack_bin(pk, payload, len);
    else
        mp_pack_strn(pk, payload, len);
    msgpack_pack_uint64(pk, duration_us);
    if (status == TASK_OK)
        w->ndone++;
    else
        w->nfailed++;
    if (proto_batch_bytes(&w->done) > DONE_FLUSH_BYTES)
        s_flush(w);
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

static int s_send_hello(worker_t *w)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    int rc;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 6);
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
    rc = proto_send(w->sock, NULL, 0, MSG_HELLO, sb.data, sb.size, NULL, 0);
    w->last_hello = ev_now(w->loop);
    if (rc < 0)
        log_err("sending HELLO failed: %s", zmq_strerror(errno));
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static void s_stop(worker_t *w, stop_reason_t why)
{
    if (w->stop == STOP_NONE)
        w->stop = why;
    ev_break(w->loop, EVBREAK_ALL);
}

/* ---- finished jobs ------------------------------------------------------ */

static void s_drain_done(worker_t *w)
{
    pool_job_t *j = pool_take_done(w->pool), *next;

    for (; j; j = next) {
        next = j->next;
        /* A cancelled job was already dropped from the map, and the same id
         * may have been submitted again since: put such an entry back. */
        pool_job_t *x = u64map_del(w->jobs, j->id);
        if (x && x != j)
            u64map_put(w->jobs, j->id, x);
        if (!__atomic_load_n(&j->cancelled, __ATOMIC_ACQUIRE))
            s_add_done(w, j->id, j->status, j->out, j->out_len, j->duration_us);
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
    (void)loop;
    (void)revents;
    s_flush(p->data);
}

/* ---- message handlers --------------------------------------------------- */

static void s_on_welcome(worker_t *w, proto_msg_t *m)
{
    (void)m;
    w->welcomed = 1;
    log_info("worker %s connected to %s", w->cfg->name, w->cfg->address);
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
 * Turn one COMPUTE item into a job (or an immediate TASK_DONE error).
 * Returns the job to queue, or NULL when the item was answered or dropped.
 */
static pool_job_t *s_compute_item(worker_t *w, const msgpack_object *item)
{
    const msgpack_object *f, *deps = NULL;
    size_t n, ndeps = 0, i, fl, alen, total;
    const char *fname;
    const void *args;
    uint64_t id;
    shoal_task_fn fn;
    pool_job_t *j;
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
        const msgpack_object *d;
        size_t dn, dl;
        uint64_t did;
        const void *dp;

        if (mp_array(&deps[i], &d, &dn) < 0 || dn < 2 || mp_u64(&d[0], &did) < 0 ||
            mp_bin(&d[1], &dp, &dl) < 0) {
            log_warn("COMPUTE: task %llu: dependency %zu is not [id, bin]",
                     (unsigned long long)id, i);
            s_add_error(w, id, "malformed COMPUTE item: dependency %zu is not [id, result]",
                        i);
            return NULL;
        }
        total += dl;
    }
    fn = tasklib_find(w->cfg->lib, fname, fl);
    if (!fn) {
        int show = fl > FNAME_SHOW ? FNAME_SHOW : (int)fl;
        s_add_error(w, id, "unknown function '%.*s' on worker %s", show, fname,
                    w->cfg->name);
        return NULL;
    }
    if (u64map_get(w->jobs, id)) {
        /* The scheduler already has this task running here; its outcome will
         * be reported once. */
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
    j->id = id;
    j->fn = fn;
    dv = (exec_dep_t *)(j + 1);
    at = (char *)(dv + ndeps);
    if (alen)
        memcpy(at, args, alen);
    j->args = at;
    j->args_len = alen;
    at += alen;
    for (i = 0; i < ndeps; i++) {
        const msgpack_object *d = deps[i].via.array.ptr;
        const void *dp;
        size_t dl;

        mp_u64(&d[0], &dv[i].id);
        mp_bin(&d[1], &dp, &dl);
        if (dl)
            memcpy(at, dp, dl);
        dv[i].data = at;
        dv[i].len = dl;
        at += dl;
    }
    j->deps = ndeps ? dv : NULL;
    j->ndeps = ndeps;
    if (u64map_put(w->jobs, id, j) < 0) {
        free(j);
        s_add_error(w, id, "worker %s: out of memory", w->cfg->name);
        return NULL;
    }
    return j;
}

static void s_on_compute(worker_t *w, proto_msg_t *m)
{
    const msgpack_object *items;
    pool_job_t *head = NULL, *tail = NULL, *j;
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
        j->next = NULL;
        if (tail)
            tail->next = j;
        else
            head = j;
        tail = j;
    }
    if (head && pool_submit(w->pool, head) < 0) {
        /* Only after shutdown began, which stops the loop first. */
        for (j = head; j; j = head) {
            head = j->next;
            u64map_del(w->jobs, j->id);
            free(j);
        }
    }
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
        pool_job_t *j;

        if (mp_u64(&ids[i], &id) < 0 || id == 0) {
            log_warn("WCANCEL: item %zu is not a task id", i);
            continue;
        }
        if (!(j = u64map_del(w->jobs, id)))
            continue;   /* finished already (or never here) */
        if (pool_cancel(w->pool, j)) {
            free(j);    /* was still queued: never runs */
        } else {
            /* Running (or finished, not yet drained): the flag tells the task
             * to stop, and s_drain_done drops its outcome. */
            log_debug("task %llu cancelled while running", (unsigned long long)id);
        }
    }
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

/* One dispatch table: the scheduler is the only peer, so a type is either
 * handled here or answered with ERROR. */
static const s_handler_fn s_dispatch[MSG_TYPE_MAX] = {
    [MSG_WELCOME] = s_on_welcome,
    [MSG_ERROR] = s_on_error,
    [MSG_HEARTBEAT] = s_on_heartbeat,
    [MSG_BYE] = s_on_bye,
    [MSG_COMPUTE] = s_on_compute,
    [MSG_WCANCEL] = s_on_wcancel,
    [MSG_LIBRARY] = s_on_library,
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
        u64map_del(w->jobs, j->id);
        free(j);
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

/* ---- lifecycle ---------------------------------------------------------- */

static void s_free_list(pool_job_t *j)
{
    pool_job_t *next;

    for (; j; j = next) {
        next = j->next;
        free(j->out);
        free(j);
    }
}

int worker_run(const worker_config_t *cfg)
{
    worker_t ws, *w = &ws;
    struct sigaction sa;
    int code = WORKER_EXIT_ERROR;

    memset(w, 0, sizeof(*w));
    w->cfg = cfg;
    proto_batch_init(&w->done, MSG_TASK_DONE);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = s_sigpipe;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, NULL);

    /* Not the default loop: libev's default loop reaps every child with
     * waitpid(-1) on SIGCHLD, which would steal the exit status of the
     * commands that shoal.cmd runs on the executor threads. */
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
    log_info("worker %s (%d threads, pid %d) connecting to %s", cfg->name,
             cfg->nthreads, (int)getpid(), cfg->address);

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
    log_info("worker %s: %llu tasks done, %llu failed", cfg->name,
             (unsigned long long)w->ndone, (unsigned long long)w->nfailed);

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
    if (w->pool) {
        /* Running tasks get their cancelled flag; queued ones never start. */
        s_free_list(pool_take_queued(w->pool));
        if (pool_shutdown(w->pool, JOIN_TIMEOUT) < 0) {
            log_warn("worker %s: %zu tasks ignored cancellation for %.0f s: exiting anyway",
                     cfg->name, pool_running(w->pool), JOIN_TIMEOUT);
            /* The BYE is queued in ZeroMQ's I/O thread: give it the socket's
             * linger to leave, then go without running atexit handlers while
             * executor threads are still inside library code. */
            zmq_close(w->sock);
            zmq_ctx_term(w->zctx);
            _exit(code);
        }
        s_free_list(pool_take_done(w->pool));
        pool_destroy(w->pool);
    }
    u64map_destroy(w->jobs);
    proto_batch_destroy(&w->done);
    if (w->sock)
        zmq_close(w->sock);
    if (w->zctx)
        zmq_ctx_term(w->zctx);
    if (w->loop)
        ev_loop_destroy(w->loop);
    return code;
}
