/*
 * client.c - libshoal's connection: resolving the address, the handshake,
 * the background I/O thread and its zmq_poll loop, the protocol handlers,
 * the request/reply calls (status, library upload, waiting for workers) and
 * shoal_disconnect.  Futures and submission are in future.c, the data plane
 * (fetching results from workers, scatter) in data.c, command tasks in
 * cmd.c, the local cluster in local.c; the locking scheme is described in
 * client_int.h.
 *
 * The I/O thread does not use libev: libev exports libevent's function
 * names, and an MPI program linking libshoal next to Open MPI's libevent
 * would get the wrong ones.  zmq_poll handles ZMQ_FD's edge triggering
 * itself (it asks ZMQ_EVENTS before sleeping), an eventfd replaces
 * ev_async, and the poll timeout is computed from the next deadline.
 */
#define _GNU_SOURCE
#include "client_int.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "mp.h"

/* Default connect timeout, heartbeat period and how long the scheduler may
 * stay silent before the connection is declared dead. */
#define CLIENT_DEFAULT_TIMEOUT 10.0
#define CLIENT_HEARTBEAT 1.0
#define CLIENT_DEAD_AFTER 30.0
/* How long disconnect lets queued messages (BYE, releases) drain. */
#define CLIENT_LINGER_MS 1000
/* Messages handled per poll before the loop flushes and looks at its other
 * sockets again (zmq_poll does not sleep while more are pending). */
#define CLIENT_RECV_BURST 256
#define CLIENT_UPLOAD_TIMEOUT 60.0
#define CLIENT_WORKER_POLL 0.1
/* Bound on the worker list of a STATUS_REPLY we are willing to copy. */
#define CLIENT_MAX_STATUS_WORKERS (1u << 20)

/* ---- small helpers ------------------------------------------------------ */

int client_fail(shoal_error_t *err, int errnum, const char *fmt, ...)
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

void client_abstime(double timeout, struct timespec *ts)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    if (timeout > 1e9)
        timeout = 1e9;
    time_t sec = (time_t)timeout;
    long nsec = (long)((timeout - (double)sec) * 1e9);
    ts->tv_sec += sec;
    ts->tv_nsec += nsec;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}


int client_u64vec_push(u64vec_t *v, uint64_t x)
{
    if (v->n == v->cap) {
        size_t ncap = v->cap ? v->cap * 2 : 64;
        uint64_t *nv = realloc(v->v, ncap * sizeof *nv);
        if (!nv)
            return -1;
        v->v = nv;
        v->cap = ncap;
    }
    v->v[v->n++] = x;
    return 0;
}

static void s_wake(shoal_client_t *c)
{
    uint64_t one = 1;
    /* EAGAIN means the counter is already non-zero: the thread wakes anyway. */
    while (write(c->wakefd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

/* Wake the I/O thread so that it drains the outgoing queues.  One write per
 * drain is enough: `wake_pending` stays set until the loop has taken the
 * queues, so a burst of submissions costs one wakeup. */
void client_wake_locked(shoal_client_t *c)
{
    if (c->wakefd < 0 || !c->thread_started)
        return;
    if (c->driver == DRIVER_FREE) {
        /* Nobody sleeps on the socket: the API call sends it itself on
         * its way out (client_kick), or the parked I/O thread does. */
        c->kick_pending = 1;
        return;
    }
    if (!c->wake_pending) {
        c->wake_pending = 1;
        s_wake(c);
    }
}

subbatch_t *client_subbatch_new(void)
{
    subbatch_t *s = malloc(sizeof *s);
    if (!s)
        return NULL;
    proto_batch_init(&s->b, MSG_SUBMIT);
    s->next = NULL;
    return s;
}

void client_subbatch_free(subbatch_t *s)
{
    if (!s)
        return;
    proto_batch_destroy(&s->b);
    free(s);
}

static void s_fmt_seconds(char *buf, size_t cap, double s)
{
    snprintf(buf, cap, "%g s", s);
}

/* ---- outgoing messages (I/O thread) ------------------------------------- */

static int s_send_body(shoal_client_t *c, int type, const msgpack_sbuffer *sb)
{
    if (proto_send(c->sock, NULL, 0, type, sb ? sb->data : NULL, sb ? sb->size : 0,
                   NULL, 0) < 0) {
        log_warn("could not send %s to the scheduler: %s", proto_type_name(type),
                 zmq_strerror(errno));
        return -1;
    }
    return 0;
}

static void s_send_hello(shoal_client_t *c)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int rc = msgpack_pack_map(&pk, 5);
    rc |= mp_pack_cstr(&pk, "role");
    rc |= mp_pack_cstr(&pk, "client");
    rc |= mp_pack_cstr(&pk, "name");
    rc |= mp_pack_cstr(&pk, c->name);
    rc |= mp_pack_cstr(&pk, "host");
    rc |= mp_pack_cstr(&pk, util_hostname());
    rc |= mp_pack_cstr(&pk, "pid");
    rc |= msgpack_pack_int64(&pk, (int64_t)getpid());
    rc |= mp_pack_cstr(&pk, "proto");
    rc |= msgpack_pack_int(&pk, PROTO_VERSION);
    if (rc == 0)
        s_send_body(c, MSG_HELLO, &sb);
    else
        log_err("out of memory packing HELLO");
    msgpack_sbuffer_destroy(&sb);
}

/* Pack `[id...]` and send it as `type`, in messages of at most
 * CLIENT_IDS_PER_MSG ids; empties v. */
static void s_send_ids(shoal_client_t *c, int type, u64vec_t *v, msgpack_sbuffer *sb)
{
    for (size_t at = 0; at < v->n; at += CLIENT_IDS_PER_MSG) {
        size_t k = v->n - at < CLIENT_IDS_PER_MSG ? v->n - at : CLIENT_IDS_PER_MSG;
        msgpack_packer pk;
        sb->size = 0;
        msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
        int rc = msgpack_pack_array(&pk, (uint32_t)k);
        for (size_t i = 0; i < k && rc == 0; i++)
            rc = msgpack_pack_uint64(&pk, v->v[at + i]);
        if (rc == 0)
            s_send_body(c, type, sb);
        else
            log_err("out of memory packing %s", proto_type_name(type));
    }
    v->n = 0;
}

static void s_free_frame(void *data, void *hint)
{
    (void)hint;
    free(data);
}

/*
 * Take everything the API queued and send it.  Runs in the I/O thread right
 * before every zmq_poll, so submissions made while the loop was busy go out
 * together.  The lock is held only to swap the queues; the
 * sends happen outside it.  Order matters: other messages first (a library
 * upload precedes the tasks that need it), then submissions, then cancels
 * and releases (a task submitted in this round may depend on one released
 * in it; the scheduler must see the dependent first).
 */
static void s_flush(shoal_client_t *c)
{
    static const u64vec_t empty;
    u64vec_t rel, can, fq;
    subbatch_t *subs, *nb = NULL;
    outmsg_t *q;
    scat_job_t *jobs;

    pthread_mutex_lock(&c->mu);
    c->wake_pending = 0;
    c->kick_pending = 0;
    /* The full batches, and the open one if it has anything (if a new one
     * cannot be allocated it stays open and goes next time). */
    if (c->sub->b.count > 0 && (nb = client_subbatch_new())) {
        if (c->full_tail)
            c->full_tail->next = c->sub;
        else
            c->full_head = c->sub;
        c->full_tail = c->sub;
        c->sub = nb;
    }
    subs = c->full_head;
    c->full_head = c->full_tail = NULL;
    /* Releases are not urgent, and sent right behind a submission they
     * would often reach the scheduler as a second wake-up of its own: they
     * wait until CLIENT_RELEASE_DELAY after a flush first saw them, or
     * until CLIENT_RELEASE_BATCH of them are queued. */
    rel = empty;
    if (c->rel.n > 0) {
        double now = util_now();
        if (c->rel_since == 0)
            c->rel_since = now;
        if (c->rel.n >= CLIENT_RELEASE_BATCH || c->stopping ||
            now - c->rel_since >= CLIENT_RELEASE_DELAY) {
            rel = c->rel;
            c->rel = empty;
            c->rel_since = 0;
        }
    }
    can = c->can;
    c->can = empty;
    q = c->outq_head;
    c->outq_head = c->outq_tail = NULL;
    fq = c->fetchq;
    c->fetchq = empty;
    jobs = c->scat_head;
    c->scat_head = c->scat_tail = NULL;
    pthread_mutex_unlock(&c->mu);

    /* Data-plane work first: a scatter job sends its SCATTER only once its
     * PUTs are acknowledged, and fetches need nothing from the scheduler. */
    if (fq.n)
        cdata_fetch(c->data, fq.v, fq.n);
    if (jobs)
        cdata_scatter(c->data, jobs);

    while (q) {
        outmsg_t *next = q->next;
        proto_frame_t fr = {.data = q->data, .len = q->len, .free_fn = s_free_frame};
        if (proto_send(c->sock, NULL, 0, q->type, q->body.data, q->body.size, &fr,
                       q->data ? 1 : 0) < 0)
            log_warn("could not send %s to the scheduler: %s", proto_type_name(q->type),
                     zmq_strerror(errno));
        msgpack_sbuffer_destroy(&q->body);
        free(q);
        q = next;
    }
    while (subs) {
        subbatch_t *next = subs->next;
        if (proto_batch_send(&subs->b, c->sock, NULL, 0) < 0)
            log_err("could not send SUBMIT to the scheduler: %s", zmq_strerror(errno));
        client_subbatch_free(subs);
        subs = next;
    }

    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    s_send_ids(c, MSG_CANCEL, &can, &sb);
    s_send_ids(c, MSG_RELEASE, &rel, &sb);
    msgpack_sbuffer_destroy(&sb);

    /* Give the vectors back for reuse unless new ones were started. */
    pthread_mutex_lock(&c->mu);
    if (!c->rel.v)
        c->rel = rel;
    else
        free(rel.v);
    if (!c->can.v)
        c->can = can;
    else
        free(can.v);
    fq.n = 0;
    if (!c->fetchq.v)
        c->fetchq = fq;
    else
        free(fq.v);
    pthread_mutex_unlock(&c->mu);
}

/* ---- connection state (I/O thread, lock held) --------------------------- */

static void s_fail_requests_locked(shoal_client_t *c, const char *msg)
{
    for (creq_t *r = c->reqs; r; r = r->next) {
        if (r->done)
            continue;
        r->failed = 1;
        r->done = 1;
        snprintf(r->err, sizeof r->err, "%s", msg);
    }
}

/* The connection is gone for good (until the scheduler answers again):
 * complete every pending future and request so that no caller waits
 * forever, and refuse new work. */
static void s_declare_dead_locked(shoal_client_t *c, const char *msg)
{
    if (c->dead)
        return;
    c->dead = 1;
    snprintf(c->dead_msg, sizeof c->dead_msg, "%s", msg);
    client_fail_pending(c, msg);
    s_fail_requests_locked(c, msg);
    pthread_cond_broadcast(&c->cond);
}

static void s_handshake_failed_locked(shoal_client_t *c, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void s_handshake_failed_locked(shoal_client_t *c, int errnum, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->state_err, sizeof c->state_err, fmt, ap);
    va_end(ap);
    c->state_errno = errnum;
    c->state = CSTATE_FAILED;
    pthread_cond_broadcast(&c->cond);
}

/* ---- handlers (I/O thread) ---------------------------------------------- */

static void s_on_welcome(shoal_client_t *c, proto_msg_t *m)
{
    uint64_t id = 0;
    const msgpack_object *o = mp_map_get(&m->body, "id");
    int bad = mp_u64(o, &id) < 0 || id == 0 || id >= (1ULL << (64 - CLIENT_ID_SHIFT));

    pthread_mutex_lock(&c->mu);
    if (bad) {
        if (c->state == CSTATE_CONNECTING)
            s_handshake_failed_locked(c, EPROTO,
                                      "the scheduler at %s sent a malformed WELCOME",
                                      c->address);
        else
            log_warn("ignoring a malformed WELCOME from the scheduler");
        pthread_mutex_unlock(&c->mu);
        return;
    }
    c->client_id = id;
    if (c->state == CSTATE_CONNECTING) {
        c->state = CSTATE_READY;
    } else if (c->rehello || c->dead) {
        log_info("registered again with the scheduler at %s (client id %llu)", c->address,
                 (unsigned long long)id);
        c->dead = 0;
        c->dead_msg[0] = '\0';
    }
    c->rehello = 0;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

static void s_on_error(shoal_client_t *c, proto_msg_t *m)
{
    int64_t code = 0;
    const char *text = "";
    size_t tlen = 0;
    if (mp_i64(mp_map_get(&m->body, "code"), &code) < 0)
        code = 0;
    if (mp_str(mp_map_get(&m->body, "message"), &text, &tlen) < 0) {
        text = "(no message)";
        tlen = strlen(text);
    }
    int tl = tlen > 300 ? 300 : (int)tlen;

    pthread_mutex_lock(&c->mu);
    if (c->state == CSTATE_CONNECTING) {
        s_handshake_failed_locked(c, code == PERR_VERSION ? EPROTONOSUPPORT : ECONNREFUSED,
                                  "the scheduler at %s refused the connection: %.*s",
                                  c->address, tl, text);
    } else if (code == PERR_NOT_REGISTERED) {
        /* The scheduler does not know us: it restarted.  Whatever it had of
         * ours is gone, so fail what is pending and register again.  Further
         * ERROR 4s answer messages sent before the new HELLO; ignore them
         * until the WELCOME. */
        if (!c->rehello && c->state == CSTATE_READY && !c->stopping) {
            char msg[512];
            snprintf(msg, sizeof msg,
                     "the scheduler at %s restarted and lost this task; submit it again",
                     c->address);
            log_warn("the scheduler at %s restarted; registering again", c->address);
            client_fail_pending(c, msg);
            s_fail_requests_locked(c, msg);
            pthread_cond_broadcast(&c->cond);
            c->rehello = 1;
            pthread_mutex_unlock(&c->mu);
            s_send_hello(c);
            return;
        }
    } else {
        log_warn("the scheduler reported an error (code %lld): %.*s", (long long)code, tl,
                 text);
    }
    pthread_mutex_unlock(&c->mu);
}

static void s_on_bye(shoal_client_t *c)
{
    pthread_mutex_lock(&c->mu);
    if (c->state == CSTATE_CONNECTING) {
        s_handshake_failed_locked(c, ECONNREFUSED, "the scheduler at %s is shutting down",
                                  c->address);
    } else if (c->state == CSTATE_READY) {
        s_declare_dead_locked(c, "scheduler shut down");
    }
    pthread_mutex_unlock(&c->mu);
}

/* Bounds on what one RESULT item may name as holders. */
#define CLIENT_MAX_HOLDERS 64

/*
 * RESULT items: [id, status, payload, worker, nbytes, [holder addresses]]
 * (the last two since the data plane; 4-field items are still accepted).
 * Status 0 with payload nil and a holder list means the result stays on
 * those workers: the future is FINISHED and its bytes are fetched when
 * asked for.  A RESULT for a FINISHED remote future (the answer to our
 * REFETCH, or news from the scheduler) brings new holders, the bytes
 * themselves, or the news that the result is lost.
 */
static void s_on_result(shoal_client_t *c, proto_msg_t *m)
{
    const msgpack_object *items;
    size_t n;
    if (mp_array(&m->body, &items, &n) < 0) {
        log_warn("ignoring a malformed RESULT from the scheduler");
        return;
    }
    size_t bad = 0, completed = 0;
    u64vec_t again = {0};
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *it, *hs = NULL;
        size_t k, nh = 0;
        uint64_t id, nbytes = 0;
        int64_t st;
        if (mp_array(&items[i], &it, &k) < 0 || k < 3 || mp_u64(&it[0], &id) < 0 ||
            mp_i64(&it[1], &st) < 0) {
            bad++;
            continue;
        }
        const char *w = NULL;
        size_t wlen = 0;
        if (k >= 4 && !mp_is_nil(&it[3]) && mp_str(&it[3], &w, &wlen) < 0) {
            bad++;
            continue;
        }
        const void *p;
        size_t plen;
        int remote = 0;
        if (mp_bin(&it[2], &p, &plen) < 0) {
            if (!mp_is_nil(&it[2])) {
                bad++;
                continue;
            }
            p = "";
            plen = 0;
            if (st == TASK_OK && k >= 6) {
                /* The result is on the holders. */
                if ((!mp_is_nil(&it[4]) && mp_u64(&it[4], &nbytes) < 0) ||
                    mp_array(&it[5], &hs, &nh) < 0) {
                    bad++;
                    continue;
                }
                if (nh > CLIENT_MAX_HOLDERS)
                    nh = CLIENT_MAX_HOLDERS;
                remote = 1;
            }
        }
        shoal_future_t *f = ftab_get(&c->futures, id);
        if (!f)
            continue; /* released meanwhile */
        if (f->status != SHOAL_PENDING) {
            /* A duplicate, or news of a result kept on workers: the answer
             * to a REFETCH, or the scheduler telling that it is lost. */
            if (f->status != SHOAL_FINISHED || !f->remote)
                continue;
            if (st == TASK_OK && remote) {
                if (client_future_set_holders(f, nbytes, hs, nh) < 0) {
                    client_future_lost(f, "out of memory storing the result's holders");
                } else if (f->fetch == FETCH_REFETCH) {
                    f->fetch = FETCH_QUEUED;
                    if (client_u64vec_push(&again, id) < 0)
                        client_future_lost(f, "out of memory fetching the result");
                }
            } else if (st == TASK_OK) {
                client_future_take_copy(f, p, plen);
            } else {
                char msg[600];
                snprintf(msg, sizeof msg, "%s%.*s",
                         st == TASK_CANCELLED ? "cancelled: " : "", (int)(plen > 500 ? 500 : plen),
                         (const char *)p);
                client_future_lost(f, msg);
            }
            completed++;
            continue;
        }
        switch (st) {
        case TASK_OK:
            if (remote)
                client_future_complete_remote(f, w, wlen, nbytes, hs, nh);
            else
                client_future_complete(f, SHOAL_FINISHED, p, plen, NULL, 0, w, wlen);
            break;
        case TASK_CANCELLED:
            client_future_complete(f, SHOAL_CANCELLED, NULL, 0, p, plen, w, wlen);
            break;
        default:
            client_future_complete(f, SHOAL_ERROR, NULL, 0, p, plen, w, wlen);
            break;
        }
        completed++;
    }
    if (completed)
        pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
    if (again.n)
        cdata_fetch(c->data, again.v, again.n);
    free(again.v);
    if (bad)
        log_warn("ignored %zu malformed RESULT item(s) from the scheduler", bad);
}

static creq_t *s_find_req_locked(shoal_client_t *c, const msgpack_object *body, int type)
{
    uint64_t req;
    if (mp_u64(mp_map_get(body, "req"), &req) < 0)
        return NULL;
    for (creq_t *r = c->reqs; r; r = r->next)
        if (r->req == req && r->reply_type == type && !r->done)
            return r;
    return NULL;
}

static void s_on_lib_ack(shoal_client_t *c, proto_msg_t *m)
{
    pthread_mutex_lock(&c->mu);
    creq_t *r = s_find_req_locked(c, &m->body, MSG_LIB_ACK);
    if (r) {
        int ok = 0;
        if (mp_bool(mp_map_get(&m->body, "ok"), &ok) < 0) {
            r->failed = 1;
            snprintf(r->err, sizeof r->err, "the scheduler sent a malformed LIB_ACK");
        } else if (!ok) {
            const char *t = "no reason given";
            size_t tl = strlen(t);
            mp_str(mp_map_get(&m->body, "error"), &t, &tl);
            r->failed = 2; /* refused, as opposed to lost */
            snprintf(r->err, sizeof r->err, "%.*s", (int)(tl > 400 ? 400 : tl), t);
        }
        r->done = 1;
        pthread_cond_broadcast(&c->cond);
    }
    pthread_mutex_unlock(&c->mu);
}

/* Copy a str into a fixed buffer, truncating. */
static void s_copy_str(const msgpack_object *o, char *dst, size_t cap)
{
    const char *p;
    size_t n;
    dst[0] = '\0';
    if (mp_str(o, &p, &n) < 0)
        return;
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, p, n);
    dst[n] = '\0';
}

static uint64_t s_map_u64(const msgpack_object *map, const char *key)
{
    uint64_t v = 0;
    if (mp_u64(mp_map_get(map, key), &v) < 0)
        v = 0;
    return v;
}

static int s_clamp_int(const msgpack_object *o)
{
    int64_t v = 0;
    if (mp_i64(o, &v) < 0)
        return 0;
    if (v > INT32_MAX)
        return INT32_MAX;
    if (v < INT32_MIN)
        return INT32_MIN;
    return (int)v;
}

/* Decode a STATUS_REPLY body into out (workers malloc'd).  0 or -1. */
static int s_decode_status(const msgpack_object *body, shoal_status_info_t *out)
{
    const msgpack_object *tasks = mp_map_get(body, "tasks");
    const msgpack_object *ws;
    size_t nw;
    memset(out, 0, sizeof *out);
    if (mp_array(mp_map_get(body, "workers"), &ws, &nw) < 0 ||
        nw > CLIENT_MAX_STATUS_WORKERS)
        return -1;
    out->nclients = s_clamp_int(mp_map_get(body, "clients"));
    out->waiting = s_map_u64(tasks, "waiting");
    out->ready = s_map_u64(tasks, "ready");
    out->processing = s_map_u64(tasks, "processing");
    out->memory = s_map_u64(tasks, "memory");
    out->erred = s_map_u64(tasks, "erred");
    out->total = s_map_u64(tasks, "total");
    if (nw) {
        out->workers = calloc(nw, sizeof *out->workers);
        if (!out->workers)
            return -1;
    }
    for (size_t i = 0; i < nw; i++) {
        const msgpack_object *it;
        size_t k;
        shoal_worker_info_t *w = &out->workers[i];
        if (mp_array(&ws[i], &it, &k) < 0 || k < 6) {
            free(out->workers);
            out->workers = NULL;
            return -1;
        }
        s_copy_str(&it[0], w->name, sizeof w->name);
        s_copy_str(&it[1], w->host, sizeof w->host);
        w->pid = s_clamp_int(&it[2]);
        w->nthreads = s_clamp_int(&it[3]);
        w->running = s_clamp_int(&it[4]);
        if (mp_u64(&it[5], &w->completed) < 0)
            w->completed = 0;
        /* Since the data plane: [..., id, data address, stored bytes, paused].
         * An address that does not fit is left out rather than cut. */
        if (k >= 7 && mp_u64(&it[6], &w->id) < 0)
            w->id = 0;
        if (k >= 8 && mp_strcpy(&it[7], w->data, sizeof w->data) < 0)
            w->data[0] = '\0';
        if (k >= 9 && mp_u64(&it[8], &w->stored_bytes) < 0)
            w->stored_bytes = 0;
        if (k >= 10 && mp_bool(&it[9], &w->paused) < 0)
            w->paused = 0;
        if (w->nthreads > 0 && out->nthreads <= INT32_MAX - w->nthreads)
            out->nthreads += w->nthreads;
    }
    out->nworkers = (int)nw;
    return 0;
}

static void s_on_status_reply(shoal_client_t *c, proto_msg_t *m)
{
    pthread_mutex_lock(&c->mu);
    creq_t *r = s_find_req_locked(c, &m->body, MSG_STATUS_REPLY);
    if (r) {
        if (s_decode_status(&m->body, r->status) < 0) {
            r->failed = 1;
            snprintf(r->err, sizeof r->err, "the scheduler sent a malformed STATUS_REPLY");
        }
        r->done = 1;
        pthread_cond_broadcast(&c->cond);
    }
    pthread_mutex_unlock(&c->mu);
}

static void s_dispatch(shoal_client_t *c, proto_msg_t *m)
{
    switch (m->hdr.type) {
    case MSG_WELCOME: s_on_welcome(c, m); break;
    case MSG_ERROR: s_on_error(c, m); break;
    case MSG_HEARTBEAT: break;
    case MSG_BYE: s_on_bye(c); break;
    case MSG_RESULT: s_on_result(c, m); break;
    case MSG_LIB_ACK: s_on_lib_ack(c, m); break;
    case MSG_STATUS_REPLY: s_on_status_reply(c, m); break;
    default:
        log_warn("ignoring unexpected %s (type %d) from the scheduler",
                 proto_type_name(m->hdr.type), m->hdr.type);
        break;
    }
}

/* ---- the I/O loop ------------------------------------------------------- */

/* Receive and handle up to CLIENT_RECV_BURST messages from the scheduler. */
static void s_sock_recv(shoal_client_t *c)
{
    for (int i = 0; i < CLIENT_RECV_BURST; i++) {
        proto_msg_t m;
        if (proto_recv(c->sock, 0, &m, ZMQ_DONTWAIT) < 0) {
            if (errno == EAGAIN)
                break;
            if (errno == EPROTONOSUPPORT) {
                /* A scheduler of another protocol version: its answer to
                 * our HELLO cannot be read, but its header says why. */
                int v = m.hdr.version;
                proto_msg_close(&m);
                pthread_mutex_lock(&c->mu);
                if (c->state == CSTATE_CONNECTING)
                    s_handshake_failed_locked(c, EPROTONOSUPPORT,
                                              "the scheduler at %s speaks protocol version %d; "
                                              "this client speaks version %d",
                                              c->address, v, PROTO_VERSION);
                pthread_mutex_unlock(&c->mu);
                log_warn("ignoring a message of protocol version %d from the scheduler", v);
                continue;
            }
            if (errno == EBADMSG) {
                log_warn("ignoring a malformed message from the scheduler");
                proto_msg_close(&m);
                continue;
            }
            if (errno != EINTR)
                log_err("receiving from the scheduler failed: %s", zmq_strerror(errno));
            break;
        }
        c->last_heard = util_now();
        s_dispatch(c, &m);
        proto_msg_close(&m);
    }
}

/* Socket monitor events.  A closed TCP connection means the scheduler has
 * dropped us (and our tasks) or is gone: fail what is pending now rather
 * than after the heartbeat timeout.  ZeroMQ reconnects by itself; when it
 * has connected again we say HELLO, and the WELCOME of whatever scheduler
 * listens there now makes the client usable again. */
static void s_mon_recv(shoal_client_t *c)
{
    for (int i = 0; i < CLIENT_RECV_BURST; i++) {
        zmq_msg_t ev;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, c->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&ev);
            return;
        }
        uint16_t event = 0;
        if (zmq_msg_size(&ev) >= 6)
            memcpy(&event, zmq_msg_data(&ev), sizeof event);
        int more = zmq_msg_more(&ev);
        zmq_msg_close(&ev);
        while (more) { /* the endpoint part, already here */
            zmq_msg_t part;
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, c->mon, 0) < 0) {
                zmq_msg_close(&part);
                break;
            }
            more = zmq_msg_more(&part);
            zmq_msg_close(&part);
        }
        if (c->state != CSTATE_READY)
            continue; /* the handshake has its own timeout */
        if (event == ZMQ_EVENT_CONNECTED) {
            /* Connected again after a loss: say HELLO to whoever listens
             * there now; its WELCOME puts us back in business. */
            pthread_mutex_lock(&c->mu);
            int again = c->dead && !c->rehello && !c->stopping;
            if (again)
                c->rehello = 1;
            pthread_mutex_unlock(&c->mu);
            if (again)
                s_send_hello(c);
            continue;
        }
        if (event != ZMQ_EVENT_DISCONNECTED)
            continue;
        /* What the scheduler sent before closing comes first: a BYE there
         * says why the connection went ("scheduler shut down"). */
        s_sock_recv(c);
        pthread_mutex_lock(&c->mu);
        c->rehello = 0;
        if (!c->dead && !c->stopping) {
            char msg[384];
            snprintf(msg, sizeof msg, "lost connection to the scheduler at %s", c->address);
            log_warn("%s", msg);
            s_declare_dead_locked(c, msg);
        }
        pthread_mutex_unlock(&c->mu);
    }
}

static void s_heartbeat(shoal_client_t *c)
{
    /* Heartbeats only once registered (before the WELCOME the scheduler
     * would answer them with "not registered") and while the connection is
     * thought alive: ZeroMQ would queue those sent to nobody without bound.
     * A lost connection is taken up again by the monitor's CONNECTED. */
    if (c->state != CSTATE_READY)
        return;
    pthread_mutex_lock(&c->mu);
    int dead = c->dead;
    pthread_mutex_unlock(&c->mu);
    if (dead)
        return;
    s_send_body(c, MSG_HEARTBEAT, NULL);
    if (util_now() - c->last_heard > CLIENT_DEAD_AFTER) {
        pthread_mutex_lock(&c->mu);
        if (!c->dead) {
            char msg[384];
            snprintf(msg, sizeof msg,
                     "lost connection to the scheduler at %s (nothing heard for %.0f s)",
                     c->address, CLIENT_DEAD_AFTER);
            log_err("%s", msg);
            s_declare_dead_locked(c, msg);
        }
        pthread_mutex_unlock(&c->mu);
    }
}

/* Poll items of the loop: these first, then the data plane's. */
enum { PI_SOCK = 0, PI_MON = 1, PI_WAKE = 2, PI_FIXED = 3 };

/*
 * Busy-polling.  A round trip to a worker and back crosses four ZeroMQ
 * hops, each of which wakes three threads; on a small machine a wake-up
 * that lands on an idle CPU costs 20-40 us (the hypervisor has to resume
 * it), and a caller asleep in zmq_poll is the last of them.  A caller that
 * keeps polling instead stays on its CPU, and the rest of the chain runs on
 * the others, where the wake-ups are cheap: the sequential round trip
 * falls from about 200 to about 125 us on two cores.  It pays only while
 * few tasks are unfinished (with many, the workers need the CPU it would
 * burn), and only while answers come soon: the spin is at most spin_us,
 * and it is skipped while the callers' recent waits (a running average)
 * were longer than that.  The I/O thread never spins.
 */

/* Poll without sleeping for up to spin_us; the result of the last poll. */
static int s_spin_poll(shoal_client_t *c, zmq_pollitem_t *items, int n)
{
    double end = util_now() + (double)c->spin_us * 1e-6;
    int rc;
    /* Yielding between polls lets a thread of the chain that the kernel
     * queued on this CPU run at once, instead of after a time slice (tail
     * round trips of 600-700 us without it). */
    while ((rc = zmq_poll(items, n, 0)) == 0 && util_now() < end)
        sched_yield();
    return rc;
}

/* A caller's wait (seconds, from its turn's poll to the poll's return) goes
 * into the average that decides whether spinning pays. */
#define CLIENT_WAIT_SAMPLE_MAX 0.01
static void s_note_wait(shoal_client_t *c, double waited)
{
    if (waited > CLIENT_WAIT_SAMPLE_MAX)
        waited = CLIENT_WAIT_SAMPLE_MAX;
    c->wait_avg += (waited - c->wait_avg) * 0.25;
}

/*
 * One turn of the I/O loop, run by whoever holds the driver token (see
 * "Who drives the socket" in client_int.h): send what the API queued (the
 * "flush before sleeping" of the batching scheme: whatever accumulated while
 * the loop was busy goes out together), then sleep until a socket has input,
 * an API thread writes the eventfd, the next deadline (heartbeat, data-plane
 * request timeouts) comes, or max_ms passes (-1: no limit of the caller's),
 * and handle what came.  A caller's turn (`caller`) may busy-poll first.
 */
static void s_io_step(shoal_client_t *c, long max_ms, int caller)
{
    pthread_mutex_lock(&c->mu);
    /* Live futures may be released while we sleep, and a release does
     * not wake us: bound the sleep so that it goes out. */
    int may_release = c->futures.count > 0 || c->rel.n > 0;
    /* Few tasks unfinished: the wait is measured, and spun if recent ones
     * were short. */
    int timed = caller && c->spin_us > 0 && c->futures.pending <= CLIENT_SPIN_PENDING;
    int spin = timed && max_ms != 0 && c->wait_avg * 1e6 <= (double)c->spin_us;
    pthread_mutex_unlock(&c->mu);

    s_flush(c);
    long data_ms = cdata_pump(c->data);

    /* The sleep: until input, a wakeup, or the next deadline. */
    double now = util_now();
    long ms = c->next_hb <= now ? 0 : (long)((c->next_hb - now) * 1000.0) + 1;
    if (data_ms >= 0 && data_ms < ms)
        ms = data_ms;
    if (may_release && ms > (long)(CLIENT_RELEASE_DELAY * 1000.0))
        ms = (long)(CLIENT_RELEASE_DELAY * 1000.0);
    if (max_ms >= 0 && max_ms < ms)
        ms = max_ms;
    size_t n = PI_FIXED + cdata_npoll(c->data);
    if (n > c->io_cap) {
        zmq_pollitem_t *ni = realloc(c->io_items, n * sizeof *ni);
        if (!ni) {
            /* Poll the scheduler only; the peers wait for memory. */
            log_err("out of memory polling %zu sockets", n);
            n = c->io_cap >= PI_FIXED ? PI_FIXED : 0;
        } else {
            c->io_items = ni;
            c->io_cap = n;
        }
    }
    if (n == 0) {
        usleep(10000); /* no memory for even three poll items: wait for some */
        return;
    }
    zmq_pollitem_t *items = c->io_items;
    items[PI_SOCK] = (zmq_pollitem_t){.socket = c->sock, .events = ZMQ_POLLIN};
    items[PI_MON] = (zmq_pollitem_t){.socket = c->mon, .events = ZMQ_POLLIN};
    items[PI_WAKE] = (zmq_pollitem_t){.fd = c->wakefd, .events = ZMQ_POLLIN};
    int with_data = n > PI_FIXED;
    if (with_data)
        cdata_fill_poll(c->data, items + PI_FIXED);
    double t0 = timed ? util_now() : 0.0;
    int rc = 0;
    if (spin) {
        c->nspins++;
        rc = s_spin_poll(c, items, (int)n);
    }
    if (rc == 0) {
        if (spin && ms > 0) {
            long spent = (long)((util_now() - t0) * 1000.0);
            ms = spent >= ms ? 0 : ms - spent;
        }
        rc = zmq_poll(items, (int)n, ms);
    }
    if (timed)
        s_note_wait(c, util_now() - t0);
    if (rc < 0) {
        if (errno != EINTR) {
            log_err("zmq_poll failed: %s", zmq_strerror(errno));
            usleep(10000); /* never spin on a persistent error */
        }
        return;
    }
    if (with_data)
        cdata_after_poll(c->data, items + PI_FIXED);
    if (items[PI_WAKE].revents & ZMQ_POLLIN) {
        uint64_t v;
        while (read(c->wakefd, &v, sizeof v) < 0 && errno == EINTR)
            ;
    }
    if (items[PI_SOCK].revents & ZMQ_POLLIN)
        s_sock_recv(c);
    if (items[PI_MON].revents & ZMQ_POLLIN)
        s_mon_recv(c);
    now = util_now();
    if (now >= c->next_hb) {
        s_heartbeat(c);
        c->next_hb = now + CLIENT_HEARTBEAT;
    }
    cdata_timers(c->data);
}

/* The token goes back after a caller's turn.  When other threads wait too,
 * or something was queued that this turn did not send, the I/O thread takes
 * it up at once rather than after its park interval. */
static void s_release_token_locked(shoal_client_t *c)
{
    c->driver = DRIVER_FREE;
    if (c->nwaiters > 0 || c->kick_pending || c->wake_pending || c->stopping) {
        c->io_retake = 1;
        pthread_cond_signal(&c->io_cond);
    }
}

/*
 * The I/O thread: takes the token whenever nobody else has it and drives
 * the loop; hands it to a waiting caller that asks (want_drive) and parks
 * while callers drive, taking it back once they have left it alone for a
 * park interval or asked it to.
 */
static void *s_io_main(void *arg)
{
    shoal_client_t *c = arg;

    c->last_heard = util_now();
    c->next_hb = c->last_heard + CLIENT_HEARTBEAT;
    s_send_hello(c); /* the token is ours from the start */
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (c->driver != DRIVER_IO) {
            if (c->driver == DRIVER_FREE &&
                (c->io_retake || c->stopping || c->kick_pending)) {
                c->driver = DRIVER_IO;
                break;
            }
            /* While a caller holds the token (it may sleep in its poll
             * for long, waiting on a long task), look less often. */
            uint64_t seq = c->drive_seq;
            struct timespec park;
            client_abstime(c->driver == DRIVER_FREE ? CLIENT_PARK : CLIENT_PARK_HELD, &park);
            pthread_cond_timedwait(&c->io_cond, &c->mu, &park);
            if (c->driver == DRIVER_FREE && c->drive_seq == seq) {
                c->driver = DRIVER_IO; /* callers left it alone: back to us */
                break;
            }
        }
        c->io_retake = 0;
        int stopping = c->stopping;
        int ready = c->state == CSTATE_READY;
        pthread_mutex_unlock(&c->mu);
        if (stopping) {
            s_flush(c);
            if (ready)
                s_send_body(c, MSG_BYE, NULL);
            break;
        }
        s_io_step(c, -1, 0);
        pthread_mutex_lock(&c->mu);
        if (c->want_drive && !c->stopping) {
            /* A caller waits and would rather read its answer itself than
             * be woken for it: the token is free for it now. */
            c->want_drive = 0;
            c->driver = DRIVER_FREE;
            pthread_cond_broadcast(&c->cond);
        }
    }
    cdata_shutdown(c->data, "the client is disconnecting");
    return NULL;
}

/*
 * Wait for something to happen (a completion, a reply, a state change);
 * callers re-check their own condition.  With the driver token free, the
 * waiting thread drives the loop itself for one turn instead of sleeping:
 * the scheduler's answer then wakes this thread directly, not the I/O
 * thread which would in turn wake this one.  With the I/O thread driving,
 * the first waiter asks it to hand the token over.
 */
int client_cond_wait(shoal_client_t *c, const struct timespec *deadline)
{
    if (!c->inline_mode && c->thread_started && !c->stopping) {
        if (c->driver == DRIVER_FREE) {
            long ms = -1;
            c->driver = DRIVER_CALLER;
            c->drive_seq++;
            if (deadline) {
                struct timespec now;
                clock_gettime(CLOCK_MONOTONIC, &now);
                double left = (double)(deadline->tv_sec - now.tv_sec) +
                              (double)(deadline->tv_nsec - now.tv_nsec) * 1e-9;
                ms = left <= 0 ? 0 : (long)(left * 1000.0) + 1;
            }
            pthread_mutex_unlock(&c->mu);
            s_io_step(c, ms, 1);
            pthread_mutex_lock(&c->mu);
            s_release_token_locked(c);
            return ms == 0 ? ETIMEDOUT : 0;
        }
        if (c->driver == DRIVER_IO && !c->want_drive && c->nwaiters == 0) {
            c->want_drive = 1;
            if (!c->wake_pending) {
                c->wake_pending = 1;
                s_wake(c);
            }
        }
    }
    int rc = 0;
    c->nwaiters++;
    if (!deadline)
        pthread_cond_wait(&c->cond, &c->mu);
    else
        rc = pthread_cond_timedwait(&c->cond, &c->mu, deadline) == ETIMEDOUT ? ETIMEDOUT : 0;
    c->nwaiters--;
    return rc;
}

void client_kick(shoal_client_t *c)
{
    if (c->inline_mode || !c->thread_started)
        return;
    pthread_mutex_lock(&c->mu);
    if (c->kick_pending && c->driver == DRIVER_FREE && !c->stopping) {
        c->driver = DRIVER_CALLER;
        c->drive_seq++;
        pthread_mutex_unlock(&c->mu);
        s_flush(c);
        pthread_mutex_lock(&c->mu);
        s_release_token_locked(c);
    }
    pthread_mutex_unlock(&c->mu);
}

/* ---- client object ------------------------------------------------------ */

static shoal_client_t *s_client_new(const char *name, shoal_error_t *err)
{
    shoal_client_t *c = calloc(1, sizeof *c);
    if (!c) {
        client_fail(err, ENOMEM, "out of memory creating the client");
        return NULL;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cond, &ca);
    pthread_cond_init(&c->io_cond, &ca);
    pthread_condattr_destroy(&ca);
    c->driver = DRIVER_IO; /* the I/O thread's from its start */
    c->next_n = 1;
    c->wakefd = -1;
    c->sub = client_subbatch_new();
    if (!c->sub) {
        client_fail(err, ENOMEM, "out of memory creating the client");
        shoal_disconnect(c);
        return NULL;
    }
    if (name && name[0])
        snprintf(c->name, sizeof c->name, "%s", name);
    else
        snprintf(c->name, sizeof c->name, "%s-%ld", program_invocation_short_name,
                 (long)getpid());
    return c;
}

static int s_setup_inline(shoal_client_t *c, shoal_error_t *err)
{
    c->inline_mode = 1;
    c->client_id = CLIENT_INLINE_ID;
    c->state = CSTATE_READY;
    snprintf(c->address, sizeof c->address, "inline://");
    c->tl = tasklib_create();
    if (!c->tl)
        return client_fail(err, errno ? errno : ENOMEM,
                           "could not create the inline task registry: %s", strerror(errno));
    return 0;
}

/* Open the socket, start the I/O thread and wait for the WELCOME. */
static int s_connect_remote(shoal_client_t *c, const char *addr, double timeout,
                            shoal_error_t *err)
{
    char tbuf[64];
    snprintf(c->address, sizeof c->address, "%s", addr);
    c->zctx = zmq_ctx_new();
    if (!c->zctx)
        return client_fail(err, errno, "could not create a ZeroMQ context: %s",
                           zmq_strerror(errno));
    c->sock = zmq_socket(c->zctx, ZMQ_DEALER);
    if (!c->sock || proto_sock_setup(c->sock, PROTO_DEFAULT_MAX_FRAME) < 0)
        return client_fail(err, errno, "could not create a ZeroMQ socket: %s",
                           zmq_strerror(errno));
    /* The monitor before connecting, so that no disconnection escapes it. */
    char mon_ep[64];
    snprintf(mon_ep, sizeof mon_ep, "inproc://shoal-client-monitor-%p", (void *)c);
    if (zmq_socket_monitor(c->sock, mon_ep, ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_CONNECTED) < 0 ||
        !(c->mon = zmq_socket(c->zctx, ZMQ_PAIR)) || zmq_connect(c->mon, mon_ep) < 0)
        return client_fail(err, errno, "could not monitor the client socket: %s",
                           zmq_strerror(errno));
    int zero = 0;
    zmq_setsockopt(c->mon, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_connect(c->sock, addr) < 0)
        return client_fail(err, EINVAL, "invalid scheduler address '%s': %s", addr,
                           zmq_strerror(errno));
    c->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c->wakefd < 0)
        return client_fail(err, errno, "could not create the client's wakeup eventfd: %s",
                           strerror(errno));
    c->data = cdata_create(c);
    if (!c->data)
        return client_fail(err, ENOMEM, "out of memory creating the client's data plane");

    /* The I/O thread gets no signals: the application's handlers run in its
     * own threads, as it expects. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&c->thread, NULL, s_io_main, c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return client_fail(err, rc, "could not start the client I/O thread: %s",
                           strerror(rc));
    c->thread_started = 1;

    struct timespec deadline;
    client_abstime(timeout, &deadline);
    pthread_mutex_lock(&c->mu);
    while (c->state == CSTATE_CONNECTING) {
        if (client_cond_wait(c, &deadline) == ETIMEDOUT)
            break;
    }
    int state = c->state;
    pthread_mutex_unlock(&c->mu);
    if (state == CSTATE_READY)
        return 0;
    if (state == CSTATE_FAILED)
        return client_fail(err, c->state_errno, "%s", c->state_err);
    s_fmt_seconds(tbuf, sizeof tbuf, timeout);
    return client_fail(err, ETIMEDOUT,
                       "could not reach the scheduler at %s within %s (is it running?)",
                       addr, tbuf);
}

/* Normalise a user-given address into buf; "inline://" is passed through. */
static int s_normalize(const char *in, char *buf, size_t cap, const char *what,
                       shoal_error_t *err)
{
    char why[256];
    if (strcmp(in, "inline://") == 0) {
        snprintf(buf, cap, "%s", in);
        return 0;
    }
    if (util_normalize_address(in, buf, cap, why, sizeof why) < 0)
        return client_fail(err, EINVAL, "invalid scheduler address '%s'%s: %s", in, what,
                           why);
    return 0;
}

static int s_read_sfile(const char *path, double timeout, char *buf, size_t cap,
                        shoal_error_t *err)
{
    char why[256];
    if (util_sfile_read(path, timeout, buf, cap, why, sizeof why) < 0) {
        int e = errno ? errno : ENOENT;
        return client_fail(err, e, "could not read the scheduler address from %s: %s", path,
                           why);
    }
    return 0;
}

static int s_wait_workers(shoal_client_t *c, int n, double timeout, local_cluster_t *lc,
                          shoal_error_t *err);

shoal_client_t *shoal_connect(const char *address, shoal_error_t *err)
{
    shoal_connect_opts_t o = {0};
    o.address = address;
    return shoal_connect_opts(&o, err);
}

shoal_client_t *shoal_connect_opts(const shoal_connect_opts_t *opts, shoal_error_t *err)
{
    static const shoal_connect_opts_t defaults;
    char addr[SHOAL_ADDR_MAX];
    if (!opts)
        opts = &defaults;
    double timeout = opts->timeout > 0 ? opts->timeout : CLIENT_DEFAULT_TIMEOUT;
    if (opts->local_nworkers < 0 || opts->local_nthreads < 0) {
        client_fail(err, EINVAL, "local_nworkers and local_nthreads must not be negative");
        return NULL;
    }

    long spin = opts->spin_us < 0 ? 0 : opts->spin_us > 0 ? opts->spin_us : CLIENT_SPIN_US;
    const char *env_spin = getenv("SHOAL_SPIN_US");
    if (opts->spin_us == 0 && env_spin && env_spin[0] &&
        util_parse_long(env_spin, 0, CLIENT_SPIN_MAX_US, &spin) < 0) {
        client_fail(err, EINVAL, "$SHOAL_SPIN_US must be a whole number of microseconds "
                    "from 0 to %d, not '%.40s'", CLIENT_SPIN_MAX_US, env_spin);
        return NULL;
    }
    if (spin > CLIENT_SPIN_MAX_US) {
        client_fail(err, EINVAL, "spin_us must be at most %d microseconds", CLIENT_SPIN_MAX_US);
        return NULL;
    }

    shoal_client_t *c = s_client_new(opts->name, err);
    if (!c)
        return NULL;
    c->spin_us = spin;

    const char *env_addr = getenv("SHOAL_SCHEDULER");
    const char *env_file = getenv("SHOAL_SCHEDULER_FILE");
    int rc;
    if (opts->address) {
        rc = s_normalize(opts->address, addr, sizeof addr, "", err);
    } else if (opts->scheduler_file) {
        rc = s_read_sfile(opts->scheduler_file, timeout, addr, sizeof addr, err);
    } else if (env_addr && env_addr[0]) {
        rc = s_normalize(env_addr, addr, sizeof addr, " (from $SHOAL_SCHEDULER)", err);
    } else if (env_file && env_file[0]) {
        rc = s_read_sfile(env_file, timeout, addr, sizeof addr, err);
    } else {
        /* The embedded default: a scheduler and workers of our own. */
        int nworkers = opts->local_nworkers;
        if (nworkers == 0) {
            long n = util_ncpus();
            nworkers = n < 1 ? 1 : n > 256 ? 256 : (int)n;
        }
        int nthreads = opts->local_nthreads > 0 ? opts->local_nthreads : 1;
        c->local = local_start(nworkers, nthreads, timeout, err);
        if (!c->local)
            goto error;
        if (s_connect_remote(c, local_address(c->local), timeout, err) < 0)
            goto error;
        /* Wait for the workers so that the first task does not race them. */
        if (s_wait_workers(c, local_nworkers(c->local), timeout > 30 ? timeout : 30,
                           c->local, err) < 0)
            goto error;
        return c;
    }
    if (rc < 0)
        goto error;
    if (strcmp(addr, "inline://") == 0)
        rc = s_setup_inline(c, err);
    else
        rc = s_connect_remote(c, addr, timeout, err);
    if (rc < 0)
        goto error;
    return c;

error:;
    int e = errno;
    shoal_disconnect(c);
    errno = e;
    return NULL;
}

const char *shoal_client_address(const shoal_client_t *c)
{
    return c ? c->address : NULL;
}

void shoal_disconnect(shoal_client_t *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->stopping = 1;
    s_fail_requests_locked(c, "the client is disconnecting");
    pthread_cond_broadcast(&c->cond);
    pthread_cond_signal(&c->io_cond);
    pthread_mutex_unlock(&c->mu);
    if (c->thread_started) {
        s_wake(c);
        pthread_join(c->thread, NULL);
        c->thread_started = 0;
    }
    int was_ready = c->state == CSTATE_READY && !c->dead;

    /* Free every future still alive: the caller's and the iterators'.  The
     * documented contract is that none is used after disconnect.  Before
     * the sockets close: a future may hold a received ZeroMQ frame. */
    {
        size_t n = c->futures.count, i = 0, pos = 0;
        shoal_future_t **all = n ? malloc(n * sizeof *all) : NULL;
        shoal_future_t *f;
        if (all) {
            while (i < n && ftab_next(&c->futures, &pos, &f))
                all[i++] = f;
            for (size_t j = 0; j < i; j++)
                client_future_free(all[j]);
            free(all);
        }
        ftab_destroy(&c->futures);
    }
    cdata_destroy(c->data);
    c->data = NULL;
    if (c->sock)
        zmq_socket_monitor(c->sock, NULL, 0);
    if (c->mon) {
        zmq_close(c->mon);
        c->mon = NULL;
    }
    if (c->sock) {
        /* Let the BYE and the last releases go out, but never wait long for
         * a scheduler that is not there. */
        int linger = was_ready ? CLIENT_LINGER_MS : 0;
        zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(c->sock);
        c->sock = NULL;
    }
    if (c->zctx) {
        while (zmq_ctx_term(c->zctx) < 0 && errno == EINTR)
            ;
        c->zctx = NULL;
    }
    if (c->wakefd >= 0) {
        close(c->wakefd);
        c->wakefd = -1;
    }
    local_stop(c->local);
    c->local = NULL;

    client_subbatch_free(c->sub);
    while (c->full_head) {
        subbatch_t *next = c->full_head->next;
        client_subbatch_free(c->full_head);
        c->full_head = next;
    }
    free(c->rel.v);
    free(c->can.v);
    free(c->fetchq.v);
    /* Jobs never handed to the I/O thread (none in practice: shoal_scatter
     * queues nothing once the client is stopping). */
    client_scat_job_free(c->scat_head);
    c->scat_head = c->scat_tail = NULL;
    for (outmsg_t *q = c->outq_head; q;) {
        outmsg_t *next = q->next;
        msgpack_sbuffer_destroy(&q->body);
        free(q->data);
        free(q);
        q = next;
    }
    tasklib_destroy(c->tl);
    free(c->io_items);
    pthread_cond_destroy(&c->io_cond);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* ---- requests ----------------------------------------------------------- */

static uint64_t s_next_req(shoal_client_t *c)
{
    return __atomic_add_fetch(&c->next_req, 1, __ATOMIC_RELAXED);
}

/*
 * Queue `body` (taken) with an optional data frame (taken, malloc'd) and wait
 * for the reply matched to `r`.  0 on success, -1 with err on failure,
 * timeout (ETIMEDOUT) or loss of the connection.
 */
static int s_request(shoal_client_t *c, int type, msgpack_sbuffer *body, void *data,
                     size_t len, creq_t *r, double timeout, shoal_error_t *err)
{
    char tbuf[64];
    outmsg_t *q = calloc(1, sizeof *q);
    if (!q) {
        msgpack_sbuffer_destroy(body);
        free(data);
        return client_fail(err, ENOMEM, "out of memory");
    }
    q->type = type;
    q->body = *body;
    q->data = data;
    q->len = len;

    struct timespec deadline;
    client_abstime(timeout < 0 ? 1e9 : timeout, &deadline);
    pthread_mutex_lock(&c->mu);
    if (c->dead || c->stopping) {
        int e = c->stopping ? ESHUTDOWN : ENOTCONN;
        char msg[sizeof c->dead_msg];
        snprintf(msg, sizeof msg, "%s", c->stopping ? "the client is disconnecting"
                                                    : c->dead_msg);
        pthread_mutex_unlock(&c->mu);
        msgpack_sbuffer_destroy(&q->body);
        free(q->data);
        free(q);
        return client_fail(err, e, "%s", msg);
    }
    r->next = c->reqs;
    c->reqs = r;
    if (c->outq_tail)
        c->outq_tail->next = q;
    else
        c->outq_head = q;
    c->outq_tail = q;
    client_wake_locked(c);
    int timed_out = 0;
    while (!r->done) {
        if (client_cond_wait(c, timeout < 0 ? NULL : &deadline) == ETIMEDOUT) {
            timed_out = !r->done;
            break;
        }
    }
    for (creq_t **pp = &c->reqs; *pp; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (timed_out) {
        s_fmt_seconds(tbuf, sizeof tbuf, timeout);
        return client_fail(err, ETIMEDOUT, "the scheduler at %s did not answer %s within %s",
                           c->address, proto_type_name(type), tbuf);
    }
    if (r->failed)
        return client_fail(err, EIO, "%s", r->err);
    return 0;
}

int client_status(shoal_client_t *c, shoal_status_info_t *out, double timeout,
                  shoal_error_t *err)
{
    creq_t r = {0};
    r.req = s_next_req(c);
    r.reply_type = MSG_STATUS_REPLY;
    r.status = out;
    memset(out, 0, sizeof *out);

    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (msgpack_pack_map(&pk, 1) || mp_pack_cstr(&pk, "req") ||
        msgpack_pack_uint64(&pk, r.req)) {
        msgpack_sbuffer_destroy(&sb);
        return client_fail(err, ENOMEM, "out of memory");
    }
    if (s_request(c, MSG_STATUS, &sb, NULL, 0, &r, timeout, err) < 0) {
        /* A reply decoded just before a timeout would otherwise leak. */
        int e = errno;
        shoal_status_free(out);
        errno = e;
        return -1;
    }
    return 0;
}

static int s_inline_status(shoal_client_t *c, shoal_status_info_t *out, shoal_error_t *err)
{
    memset(out, 0, sizeof *out);
    out->workers = calloc(1, sizeof *out->workers);
    if (!out->workers)
        return client_fail(err, ENOMEM, "out of memory");
    out->nworkers = 1;
    out->nthreads = 1;
    out->nclients = 1;
    shoal_worker_info_t *w = &out->workers[0];
    snprintf(w->name, sizeof w->name, "inline");
    snprintf(w->host, sizeof w->host, "%s", util_hostname());
    w->pid = (int)getpid();
    w->nthreads = 1;
    pthread_mutex_lock(&c->mu);
    size_t pos = 0;
    shoal_future_t *f;
    while (ftab_next(&c->futures, &pos, &f)) {
        out->total++;
        if (f->status == SHOAL_FINISHED)
            out->memory++;
        else if (f->status == SHOAL_ERROR)
            out->erred++;
    }
    w->completed = c->next_n - 1;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

int shoal_status(shoal_client_t *c, shoal_status_info_t *out, double timeout,
                 shoal_error_t *err)
{
    if (!c || !out)
        return client_fail(err, EINVAL, "shoal_status: client and output must not be NULL");
    if (c->inline_mode)
        return s_inline_status(c, out, err);
    return client_status(c, out, timeout, err);
}

void shoal_status_free(shoal_status_info_t *s)
{
    if (!s)
        return;
    free(s->workers);
    s->workers = NULL;
    s->nworkers = 0;
}

static int s_wait_workers(shoal_client_t *c, int n, double timeout, local_cluster_t *lc,
                          shoal_error_t *err)
{
    char tbuf[64];
    double start = util_now();
    int have = 0;
    for (;;) {
        if (lc && local_check(lc, err) < 0)
            return -1;
        double left = timeout < 0 ? 1e9 : timeout - (util_now() - start);
        if (left < 0)
            left = 0;
        shoal_status_info_t st;
        /* Each STATUS gets at least a moment to be answered, even with a
         * zero timeout. */
        if (client_status(c, &st, left > 0.5 ? left : 0.5, err) < 0)
            return -1;
        have = st.nworkers;
        shoal_status_free(&st);
        if (have >= n)
            return 0;
        double nap = CLIENT_WORKER_POLL;
        if (timeout >= 0) {
            double rest = timeout - (util_now() - start);
            if (rest <= 0)
                break;
            if (rest < nap)
                nap = rest;
        }
        /* Sleep on the condition variable (wakes early on a lost
         * connection, which the next STATUS then reports). */
        struct timespec d;
        client_abstime(nap, &d);
        pthread_mutex_lock(&c->mu);
        while (!c->dead && !c->stopping && client_cond_wait(c, &d) != ETIMEDOUT)
            ;
        pthread_mutex_unlock(&c->mu);
    }
    s_fmt_seconds(tbuf, sizeof tbuf, timeout);
    return client_fail(err, ETIMEDOUT, "only %d of %d worker(s) connected to %s within %s",
                       have, n, c->address, tbuf);
}

int shoal_wait_for_workers(shoal_client_t *c, int n, double timeout, shoal_error_t *err)
{
    if (!c)
        return client_fail(err, EINVAL, "shoal_wait_for_workers: no client");
    /* An inline client runs everything itself: there is nothing to wait for. */
    if (n <= 0 || c->inline_mode)
        return 0;
    return s_wait_workers(c, n, timeout, c->local, err);
}

/* ---- library upload ----------------------------------------------------- */

/* Read a whole regular file of at most `max` bytes. */
static void *s_read_file(const char *path, size_t max, size_t *len, shoal_error_t *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        client_fail(err, errno, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        int e = errno;
        close(fd);
        client_fail(err, S_ISREG(st.st_mode) ? e : EINVAL, "%s is not a regular file", path);
        return NULL;
    }
    if (st.st_size <= 0 || (uint64_t)st.st_size > max) {
        close(fd);
        client_fail(err, st.st_size <= 0 ? EINVAL : EFBIG,
                    "%s is %s (a library must be 1 byte to %zu MiB)", path,
                    st.st_size <= 0 ? "empty" : "too large", max >> 20);
        return NULL;
    }
    size_t n = (size_t)st.st_size, got = 0;
    char *buf = malloc(n);
    if (!buf) {
        close(fd);
        client_fail(err, ENOMEM, "out of memory reading %s", path);
        return NULL;
    }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            close(fd);
            free(buf);
            client_fail(err, e, "error reading %s: %s", path,
                        r < 0 ? strerror(e) : "file shrank while reading");
            return NULL;
        }
        got += (size_t)r;
    }
    close(fd);
    *len = n;
    return buf;
}

int shoal_upload_library(shoal_client_t *c, const char *path, shoal_error_t *err)
{
    if (!c || !path || !path[0])
        return client_fail(err, EINVAL, "shoal_upload_library: no client or no path");
    if (c->inline_mode) {
        char why[512];
        if (tasklib_load(c->tl, path, why, sizeof why) < 0)
            return client_fail(err, errno ? errno : EINVAL, "%s", why);
        return 0;
    }
    size_t len;
    void *data = s_read_file(path, CLIENT_MAX_LIB, &len, err);
    if (!data)
        return -1;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;

    creq_t r = {0};
    r.req = s_next_req(c);
    r.reply_type = MSG_LIB_ACK;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (msgpack_pack_map(&pk, 2) || mp_pack_cstr(&pk, "req") ||
        msgpack_pack_uint64(&pk, r.req) || mp_pack_cstr(&pk, "name") ||
        mp_pack_cstr(&pk, base)) {
        msgpack_sbuffer_destroy(&sb);
        free(data);
        return client_fail(err, ENOMEM, "out of memory");
    }
    if (s_request(c, MSG_UPLOAD_LIB, &sb, data, len, &r, CLIENT_UPLOAD_TIMEOUT, err) < 0) {
        if (r.failed == 2 && err) {
            char why[sizeof r.err];
            snprintf(why, sizeof why, "%s", r.err);
            client_fail(err, EIO, "the scheduler refused the library %s: %s", path, why);
        }
        return -1;
    }
    return 0;
}
