/*
 * data.c - the client's side of the data plane (docs/DATAPLANE.md): getting
 * results that stay on workers straight from their data endpoints, and
 * scatter (putting the caller's data on workers).  Bytes move between this
 * process and the workers, never through the scheduler.
 *
 * Everything here but the API entry points (shoal_scatter*) runs in the
 * client's I/O thread, inside its zmq_poll loop (client.c):
 *
 *   - a peer is one DEALER socket connected to one worker's data endpoint,
 *     cached by address and reused, with a socket monitor so that a worker
 *     that is gone (connection refused, connection lost) is noticed at once
 *     rather than after a timeout;
 *   - a fetch is one result being got: it tries the holders the scheduler
 *     named in order; when every one failed it sends REFETCH and the
 *     scheduler answers with a fresh RESULT (client.c restarts the fetch);
 *   - requests: GET (up to 16 ids, about 64 MiB) and PUT (likewise), at most
 *     CDATA_PEER_INFLIGHT in flight per peer; the others wait in the peer's
 *     queues.  Each request has a deadline (a base plus the time its bytes
 *     take at a slow rate) that is pushed back whenever the peer answers
 *     something: a peer that stops answering has failed, and everything it
 *     had goes to the next holder (or worker);
 *   - a received data frame becomes the future's bytes without a copy
 *     (client_future_take_bytes keeps the zmq_msg).
 *
 * Only peers with requests in flight are polled; idle ones are closed after
 * a while.  With no results on workers none of this costs anything: the
 * loop polls its three fixed items.
 */
#define _GNU_SOURCE
#include "client_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mp.h"
#include "u64map.h"

#define CDATA_PEER_INFLIGHT 4
#define CDATA_IDS_PER_REQ PROTO_MAX_DATA_FRAMES
/* A request is closed at this many bytes (one item may be larger). */
#define CDATA_REQ_BYTES (64u << 20)
/* A peer must answer a request within CDATA_TIMEOUT plus the time its
 * bytes take at CDATA_MIN_RATE bytes/s, counted from the request or from
 * the peer's last answer. */
#define CDATA_TIMEOUT 10.0
#define CDATA_MIN_RATE 20e6
#define CDATA_MAX_PEERS 64
#define CDATA_IDLE_CLOSE 60.0
#define CDATA_CONNECT_TIMEOUT_MS 5000
#define CDATA_RECV_BURST 64
/* Scatter: bytes of one piece (a frame, with room for nothing else), how
 * many puts one call may make, how long to wait for the worker list. */
#define CDATA_MAX_PIECE ((size_t)PROTO_DEFAULT_MAX_FRAME - 4096)
#define CDATA_MAX_PUTS (1u << 22)
#define CDATA_STATUS_TIMEOUT 30.0

/* ---- scatter pieces and jobs ------------------------------------------------ */

/* One packed piece of scattered data, shared by the job and every frame
 * that carries it (ZeroMQ drops its references from its own threads). */
typedef struct sbuf {
    int refs; /* atomic */
    size_t len;
    char data[];
} sbuf_t;

static void s_sbuf_unref(sbuf_t *b)
{
    if (b && __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(b);
}

static void s_sbuf_free_cb(void *data, void *hint)
{
    (void)data;
    s_sbuf_unref(hint);
}

typedef struct scat_worker {
    char name[128];
    char addr[SHOAL_ADDR_MAX];
    uint64_t id;
} scat_worker_t;

typedef struct scat_item {
    sbuf_t *buf;
    uint64_t id;
    size_t start;     /* its first worker (round robin) */
    size_t tried;     /* workers tried so far (not broadcast) */
    uint32_t nok;     /* workers that stored it: ok[0..nok-1] */
    uint32_t *ok;
} scat_item_t;

struct scat_job {
    scat_job_t *next;
    int broadcast;
    size_t n, nw;
    scat_item_t *items;
    scat_worker_t *w;
    size_t outstanding;   /* (piece, worker) puts not resolved yet */
    char why[256];        /* the last failure */
    /* under c->mu: set once by the I/O thread, which then forgets the job */
    int done;
    int failed;
    char err[512];
};

void client_scat_job_free(scat_job_t *job)
{
    while (job) {
        scat_job_t *next = job->next;
        for (size_t i = 0; i < job->n && job->items; i++) {
            s_sbuf_unref(job->items[i].buf);
            free(job->items[i].ok);
        }
        free(job->items);
        free(job->w);
        free(job);
        job = next;
    }
}

/* ---- state ---------------------------------------------------------------------- */

typedef struct fetch {
    uint64_t id;
    uint64_t nbytes;
    size_t next;          /* the next holder to try */
    struct fetch *qnext;  /* in a peer's queue */
    char why[200];        /* why the last holder failed */
} fetch_t;

enum { DREQ_GET = 1, DREQ_PUT = 2 };

typedef struct dreq {
    struct dreq *next;
    int type;
    uint64_t req;
    double deadline;
    uint64_t bytes;
    size_t n;
    fetch_t *fetches[CDATA_IDS_PER_REQ];  /* GET */
    scat_job_t *job;                      /* PUT: the job, the worker, the pieces */
    size_t widx;
    size_t items[CDATA_IDS_PER_REQ];
} dreq_t;

typedef struct dpeer {
    struct dpeer *next;
    char addr[SHOAL_ADDR_MAX];
    void *sock, *mon;
    int pi;                 /* its poll items at the last fill, or -1 */
    int dead;               /* failed: closed at the next sweep */
    double last_used;
    dreq_t *unsent_head, *unsent_tail;  /* PUTs waiting for the window */
    fetch_t *fq_head, *fq_tail;         /* fetches waiting for the window */
    dreq_t *inflight;
    unsigned ninflight;
} dpeer_t;

struct cdata {
    shoal_client_t *c;
    dpeer_t *peers;
    size_t npeers;
    size_t nactive;         /* peers with requests in flight */
    size_t nbusy;           /* peers with anything to do */
    size_t ndead;
    u64map_t *fetches;      /* id -> fetch_t */
    u64vec_t refetch;       /* ids to REFETCH at the next pump */
    uint64_t next_req;
    unsigned ninflight;
    scat_job_t *jobs;       /* running */
    unsigned seq;           /* monitor endpoint names */
    unsigned enq_seq;       /* counts work queued on peers */
    double next_idle_check;
};

cdata_t *cdata_create(shoal_client_t *c)
{
    cdata_t *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->c = c;
    d->fetches = u64map_create(16);
    if (!d->fetches) {
        free(d);
        return NULL;
    }
    return d;
}

static void s_peer_close(dpeer_t *p)
{
    int zero = 0;
    if (p->mon) {
        zmq_socket_monitor(p->sock, NULL, 0);
        zmq_close(p->mon);
    }
    if (p->sock) {
        zmq_setsockopt(p->sock, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(p->sock);
    }
    p->sock = p->mon = NULL;
}

/* Free a peer and its requests (the fetches and jobs they refer to are
 * not touched: this is for the end, or for a peer already emptied). */
static void s_peer_free(dpeer_t *p)
{
    s_peer_close(p);
    for (dreq_t *r = p->inflight; r;) {
        dreq_t *next = r->next;
        free(r);
        r = next;
    }
    for (dreq_t *r = p->unsent_head; r;) {
        dreq_t *next = r->next;
        free(r);
        r = next;
    }
    free(p);
}

void cdata_destroy(cdata_t *d)
{
    if (!d)
        return;
    while (d->peers) {
        dpeer_t *p = d->peers;
        d->peers = p->next;
        s_peer_free(p);
    }
    size_t pos = 0;
    uint64_t id;
    void *v;
    while (u64map_next(d->fetches, &pos, &id, &v))
        free(v);
    u64map_destroy(d->fetches);
    free(d->refetch.v);
    free(d);
}

/* ---- peers ------------------------------------------------------------------------ */

static int s_peer_has_work(const dpeer_t *p)
{
    return p->ninflight || p->unsent_head || p->fq_head;
}

/* Call before and after changing a peer's queues, to keep nbusy. */
#define BUSY_BEFORE(p) int busy0_ = s_peer_has_work(p)
#define BUSY_AFTER(d, p)                                        \
    do {                                                        \
        int busy1_ = s_peer_has_work(p);                        \
        if (busy1_ != busy0_)                                   \
            (d)->nbusy += busy1_ ? 1 : (size_t)-1;              \
    } while (0)

static double s_deadline(double now, uint64_t bytes)
{
    return now + CDATA_TIMEOUT + (double)bytes / CDATA_MIN_RATE;
}

static void s_inflight_add(cdata_t *d, dpeer_t *p, dreq_t *r)
{
    if (p->ninflight++ == 0) {
        d->nactive++;
        /* Monitor events from while the peer was idle are stale: ZeroMQ
         * reconnects by itself, and a peer that is really gone says so
         * again when this request cannot be delivered. */
        for (;;) {
            zmq_msg_t ev;
            zmq_msg_init(&ev);
            int rc = zmq_msg_recv(&ev, p->mon, ZMQ_DONTWAIT);
            zmq_msg_close(&ev);
            if (rc < 0)
                break;
        }
    }
    d->ninflight++;
    r->next = p->inflight;
    p->inflight = r;
}

static void s_inflight_del(cdata_t *d, dpeer_t *p, dreq_t *r)
{
    for (dreq_t **pp = &p->inflight; *pp; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            r->next = NULL;
            if (--p->ninflight == 0)
                d->nactive--;
            d->ninflight--;
            return;
        }
    }
}

/* Make room in the cache: the least recently used idle peer is closed at
 * the next sweep (never freed here: callers up the stack may be walking
 * the list, or be handling that very peer). */
static void s_evict_idle(cdata_t *d)
{
    dpeer_t *victim = NULL;
    for (dpeer_t *p = d->peers; p; p = p->next) {
        if (p->dead || s_peer_has_work(p))
            continue;
        if (!victim || p->last_used < victim->last_used)
            victim = p;
    }
    if (victim) {
        victim->dead = 1;
        d->ndead++;
    }
}

/* The peer for a data endpoint address, connected if new.  NULL (with a
 * reason in why) if the address is unusable. */
static dpeer_t *s_peer_get(cdata_t *d, const char *addr, char *why, size_t whycap)
{
    for (dpeer_t *p = d->peers; p; p = p->next) {
        if (!p->dead && strcmp(p->addr, addr) == 0) {
            p->last_used = util_now();
            return p;
        }
    }
    if (strncmp(addr, "tcp://", 6) != 0 || strlen(addr) >= SHOAL_ADDR_MAX) {
        snprintf(why, whycap, "'%.100s' is not a tcp:// data endpoint", addr);
        return NULL;
    }
    if (d->npeers - d->ndead >= CDATA_MAX_PEERS)
        s_evict_idle(d);
    dpeer_t *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(why, whycap, "out of memory connecting to %s", addr);
        return NULL;
    }
    snprintf(p->addr, sizeof p->addr, "%s", addr);
    p->pi = -1;
    p->last_used = util_now();
    char mon_ep[96];
    int cto = CDATA_CONNECT_TIMEOUT_MS, zero = 0;
    snprintf(mon_ep, sizeof mon_ep, "inproc://shoal-client-data-%p-%u", (void *)d, d->seq++);
    p->sock = zmq_socket(d->c->zctx, ZMQ_DEALER);
    if (!p->sock || proto_sock_setup(p->sock, PROTO_DEFAULT_MAX_FRAME) < 0 ||
        zmq_setsockopt(p->sock, ZMQ_CONNECT_TIMEOUT, &cto, sizeof cto) < 0 ||
        zmq_socket_monitor(p->sock, mon_ep,
                           ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_CONNECT_RETRIED) < 0 ||
        !(p->mon = zmq_socket(d->c->zctx, ZMQ_PAIR)) ||
        zmq_setsockopt(p->mon, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
        zmq_connect(p->mon, mon_ep) < 0 || zmq_connect(p->sock, addr) < 0) {
        snprintf(why, whycap, "cannot connect to %.100s: %s", addr, zmq_strerror(errno));
        s_peer_free(p);
        return NULL;
    }
    p->next = d->peers;
    d->peers = p;
    d->npeers++;
    return p;
}

/* Close the peers that failed. */
static void s_sweep(cdata_t *d)
{
    if (!d->ndead)
        return;
    for (dpeer_t **pp = &d->peers; *pp;) {
        dpeer_t *p = *pp;
        if (p->dead) {
            *pp = p->next;
            d->npeers--;
            s_peer_free(p);
        } else {
            pp = &p->next;
        }
    }
    d->ndead = 0;
}

/* ---- fetches ----------------------------------------------------------------------- */

static void s_fetch_drop(cdata_t *d, fetch_t *ft)
{
    u64map_del(d->fetches, ft->id);
    free(ft);
}

static void s_fetch_enqueue(cdata_t *d, dpeer_t *p, fetch_t *ft)
{
    BUSY_BEFORE(p);
    d->enq_seq++;
    ft->qnext = NULL;
    if (p->fq_tail)
        p->fq_tail->qnext = ft;
    else
        p->fq_head = ft;
    p->fq_tail = ft;
    BUSY_AFTER(d, p);
}

/*
 * Send ft to its next holder.  When none is left: REFETCH (the scheduler
 * answers with a fresh RESULT, and client.c starts a new fetch), unless
 * that was tried CLIENT_MAX_REFETCH times or the scheduler is out of reach,
 * in which case the result is lost.  `why` (may be NULL) says why the
 * previous holder failed.
 */
static void s_fetch_advance(cdata_t *d, fetch_t *ft, const char *why)
{
    shoal_client_t *c = d->c;
    char addr[SHOAL_ADDR_MAX];
    if (why)
        snprintf(ft->why, sizeof ft->why, "%s", why);
    for (;;) {
        pthread_mutex_lock(&c->mu);
        shoal_future_t *f = ftab_get(&c->futures, ft->id);
        if (!f || f->status != SHOAL_FINISHED || !f->remote) {
            /* Released, or the bytes came another way. */
            pthread_mutex_unlock(&c->mu);
            s_fetch_drop(d, ft);
            return;
        }
        if (ft->next >= f->nholders) {
            if (c->dead || c->stopping || f->refetches >= CLIENT_MAX_REFETCH ||
                client_u64vec_push(&d->refetch, ft->id) < 0) {
                char msg[600], label[CLIENT_MAX_FUNC + 32];
                if (f->name)
                    snprintf(label, sizeof label, "%s", f->name);
                else
                    snprintf(label, sizeof label, "%llu", (unsigned long long)f->id);
                snprintf(msg, sizeof msg,
                         "the result of task %s is lost: no worker could send it (%s)%s", label,
                         ft->why[0] ? ft->why : "no holder known",
                         c->dead ? "; the scheduler is out of reach"
                                 : f->refetches ? "; asked the scheduler again, in vain" : "");
                client_future_lost(f, msg);
                pthread_cond_broadcast(&c->cond);
            } else {
                f->refetches++;
                f->fetch = FETCH_REFETCH;
            }
            pthread_mutex_unlock(&c->mu);
            s_fetch_drop(d, ft);
            return;
        }
        snprintf(addr, sizeof addr, "%s", f->holders[ft->next++]);
        ft->nbytes = f->nbytes;
        pthread_mutex_unlock(&c->mu);
        char pwhy[200];
        dpeer_t *p = s_peer_get(d, addr, pwhy, sizeof pwhy);
        if (p) {
            s_fetch_enqueue(d, p, ft);
            return;
        }
        snprintf(ft->why, sizeof ft->why, "%s", pwhy);
    }
}

void cdata_fetch(cdata_t *d, const uint64_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (ids[i] == 0 || u64map_get(d->fetches, ids[i]))
            continue; /* already being fetched */
        fetch_t *ft = calloc(1, sizeof *ft);
        if (!ft || u64map_put(d->fetches, ids[i], ft) < 0) {
            free(ft);
            /* Leave the future asked-for but unqueued: its waiter gives up
             * on its deadline.  Say so now rather than silently. */
            shoal_client_t *c = d->c;
            pthread_mutex_lock(&c->mu);
            shoal_future_t *f = ftab_get(&c->futures, ids[i]);
            if (f) {
                client_future_lost(f, "out of memory fetching the result");
                pthread_cond_broadcast(&c->cond);
            }
            pthread_mutex_unlock(&c->mu);
            continue;
        }
        ft->id = ids[i];
        s_fetch_advance(d, ft, NULL);
    }
}

/* ---- scatter: the I/O side ----------------------------------------------------------- */

/* Queue PUTs of pieces idx[0..k-1] of job to worker w (split into requests
 * of at most CDATA_IDS_PER_REQ pieces and about CDATA_REQ_BYTES). */
static void s_put_queue(cdata_t *d, scat_job_t *job, size_t w, const size_t *idx, size_t k);

/* A PUT failed (refused, peer gone, no answer): each of its pieces moves to
 * the next worker, or (broadcast, or no worker left) is settled without it. */
static void s_put_failed(cdata_t *d, dreq_t *r, const char *why)
{
    scat_job_t *job = r->job;
    snprintf(job->why, sizeof job->why, "worker %.60s (%.80s): %.100s", job->w[r->widx].name,
             job->w[r->widx].addr, why);
    for (size_t i = 0; i < r->n; i++) {
        scat_item_t *it = &job->items[r->items[i]];
        if (!job->broadcast && ++it->tried < job->nw) {
            size_t one = r->items[i];
            s_put_queue(d, job, (it->start + it->tried) % job->nw, &one, 1);
        } else {
            job->outstanding--;
        }
    }
    free(r);
}

static void s_put_ok(dreq_t *r)
{
    scat_job_t *job = r->job;
    for (size_t i = 0; i < r->n; i++) {
        scat_item_t *it = &job->items[r->items[i]];
        it->ok[it->nok++] = (uint32_t)r->widx;
        job->outstanding--;
    }
    free(r);
}

static void s_put_queue(cdata_t *d, scat_job_t *job, size_t w, const size_t *idx, size_t k)
{
    char why[200];
    dpeer_t *p = s_peer_get(d, job->w[w].addr, why, sizeof why);
    size_t at = 0;
    while (at < k) {
        dreq_t *r = calloc(1, sizeof *r);
        if (!r) {
            /* Settle what is left as stored nowhere. */
            snprintf(job->why, sizeof job->why, "out of memory");
            job->outstanding -= k - at;
            return;
        }
        r->type = DREQ_PUT;
        r->job = job;
        r->widx = w;
        while (at < k && r->n < CDATA_IDS_PER_REQ &&
               (r->n == 0 || r->bytes + job->items[idx[at]].buf->len <= CDATA_REQ_BYTES)) {
            r->bytes += job->items[idx[at]].buf->len;
            r->items[r->n++] = idx[at++];
        }
        if (!p) {
            s_put_failed(d, r, why);
            continue;
        }
        BUSY_BEFORE(p);
        d->enq_seq++;
        if (p->unsent_tail)
            p->unsent_tail->next = r;
        else
            p->unsent_head = r;
        p->unsent_tail = r;
        BUSY_AFTER(d, p);
    }
}

static void s_job_finish(cdata_t *d, scat_job_t *job, const char *fail)
{
    shoal_client_t *c = d->c;
    for (scat_job_t **pp = &d->jobs; *pp; pp = &(*pp)->next) {
        if (*pp == job) {
            *pp = job->next;
            break;
        }
    }
    job->next = NULL;
    pthread_mutex_lock(&c->mu);
    job->done = 1;
    if (fail) {
        job->failed = 1;
        snprintf(job->err, sizeof job->err, "%s", fail);
    }
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

/*
 * Once every put of a job is settled: tell the scheduler where each piece
 * is (one SCATTER batch, split like SUBMIT), and hand the job back.  A
 * piece that reached no worker fails the job; those that did are still
 * announced so that releasing their futures frees them on their workers.
 * Called only from cdata_pump, never from inside the put handling: the
 * job is freed by its caller as soon as it is handed back, and the put
 * handling may still be walking it further up the stack.
 */
static void s_job_settle(cdata_t *d, scat_job_t *job)
{
    shoal_client_t *c = d->c;
    size_t missing = 0, first_missing = 0;
    for (size_t i = 0; i < job->n; i++) {
        if (job->items[i].nok == 0 && missing++ == 0)
            first_missing = i;
    }
    pthread_mutex_lock(&c->mu);
    int dead = c->dead;
    char dead_msg[sizeof c->dead_msg];
    snprintf(dead_msg, sizeof dead_msg, "%s", c->dead_msg);
    pthread_mutex_unlock(&c->mu);
    if (dead) {
        char msg[600];
        snprintf(msg, sizeof msg, "cannot scatter: %s", dead_msg);
        s_job_finish(d, job, msg);
        return;
    }
    proto_batch_t b;
    proto_batch_init(&b, MSG_SCATTER);
    int rc = 0;
    for (size_t i = 0; i < job->n && rc == 0; i++) {
        const scat_item_t *it = &job->items[i];
        if (!it->nok)
            continue;
        msgpack_packer *pk = proto_batch_add(&b);
        rc |= msgpack_pack_array(pk, 3);
        rc |= msgpack_pack_uint64(pk, it->id);
        rc |= msgpack_pack_uint64(pk, it->buf->len);
        rc |= msgpack_pack_array(pk, it->nok);
        for (uint32_t k = 0; k < it->nok; k++)
            rc |= msgpack_pack_uint64(pk, job->w[it->ok[k]].id);
        if (rc == 0 && proto_batch_bytes(&b) >= CLIENT_BATCH_BYTES)
            rc = proto_batch_send(&b, c->sock, NULL, 0);
    }
    if (rc == 0)
        rc = proto_batch_send(&b, c->sock, NULL, 0);
    proto_batch_destroy(&b);
    char msg[600];
    if (rc < 0) {
        snprintf(msg, sizeof msg, "cannot scatter: sending SCATTER to the scheduler failed: %s",
                 zmq_strerror(errno));
        s_job_finish(d, job, msg);
    } else if (missing) {
        snprintf(msg, sizeof msg,
                 "cannot scatter: %zu of %zu piece(s) could not be stored on any worker "
                 "(piece %zu; last failure: %s)",
                 missing, job->n, first_missing, job->why[0] ? job->why : "unknown");
        s_job_finish(d, job, msg);
    } else {
        s_job_finish(d, job, NULL);
    }
}

void cdata_scatter(cdata_t *d, scat_job_t *jobs)
{
    while (jobs) {
        scat_job_t *job = jobs;
        jobs = job->next;
        job->next = d->jobs;
        d->jobs = job;
        size_t *idx = malloc((job->n ? job->n : 1) * sizeof *idx);
        if (!idx) {
            s_job_finish(d, job, "cannot scatter: out of memory");
            continue;
        }
        job->outstanding = job->broadcast ? job->n * job->nw : job->n;
        for (size_t w = 0; w < job->nw; w++) {
            size_t k = 0;
            for (size_t i = 0; i < job->n; i++)
                if (job->broadcast || job->items[i].start == w)
                    idx[k++] = i;
            if (k)
                s_put_queue(d, job, w, idx, k);
        }
        free(idx);
    }
}

/* ---- sending -------------------------------------------------------------------------- */

static int s_pack_req(msgpack_sbuffer *sb, uint64_t req, const uint64_t *ids, size_t n)
{
    msgpack_packer pk;
    sb->size = 0;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    int rc = msgpack_pack_map(&pk, 2);
    rc |= mp_pack_cstr(&pk, "req");
    rc |= msgpack_pack_uint64(&pk, req);
    rc |= mp_pack_cstr(&pk, "ids");
    rc |= msgpack_pack_array(&pk, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        rc |= msgpack_pack_uint64(&pk, ids[i]);
    return rc ? -1 : 0;
}

static int s_send_put(cdata_t *d, dpeer_t *p, dreq_t *r, msgpack_sbuffer *sb)
{
    uint64_t ids[CDATA_IDS_PER_REQ];
    proto_frame_t fr[CDATA_IDS_PER_REQ];
    for (size_t i = 0; i < r->n; i++) {
        sbuf_t *b = r->job->items[r->items[i]].buf;
        ids[i] = r->job->items[r->items[i]].id;
        __atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED);
        fr[i] = (proto_frame_t){.data = b->data, .len = b->len, .free_fn = s_sbuf_free_cb,
                                .hint = b};
    }
    r->req = ++d->next_req;
    if (s_pack_req(sb, r->req, ids, r->n) < 0) {
        for (size_t i = 0; i < r->n; i++)
            s_sbuf_unref(fr[i].hint);
        errno = ENOMEM;
        return -1;
    }
    /* proto_send gives every frame back exactly once, sent or not. */
    return proto_send(p->sock, NULL, 0, MSG_PUT, sb->data, sb->size, fr, r->n);
}

static int s_send_get(cdata_t *d, dpeer_t *p, dreq_t *r, msgpack_sbuffer *sb)
{
    uint64_t ids[CDATA_IDS_PER_REQ];
    for (size_t i = 0; i < r->n; i++)
        ids[i] = r->fetches[i]->id;
    r->req = ++d->next_req;
    if (s_pack_req(sb, r->req, ids, r->n) < 0) {
        errno = ENOMEM;
        return -1;
    }
    return proto_send(p->sock, NULL, 0, MSG_GET, sb->data, sb->size, NULL, 0);
}

/* Fill p's window from its queues. */
static void s_peer_pump(cdata_t *d, dpeer_t *p, msgpack_sbuffer *sb, double now)
{
    while (!p->dead && p->ninflight < CDATA_PEER_INFLIGHT && (p->unsent_head || p->fq_head)) {
        BUSY_BEFORE(p);
        dreq_t *r;
        int rc;
        if (p->unsent_head) {
            r = p->unsent_head;
            p->unsent_head = r->next;
            if (!p->unsent_head)
                p->unsent_tail = NULL;
            r->next = NULL;
            rc = s_send_put(d, p, r, sb);
        } else {
            r = calloc(1, sizeof *r);
            if (!r) {
                BUSY_AFTER(d, p);
                return; /* try again next time round */
            }
            r->type = DREQ_GET;
            while (p->fq_head && r->n < CDATA_IDS_PER_REQ &&
                   (r->n == 0 || r->bytes + p->fq_head->nbytes <= CDATA_REQ_BYTES)) {
                fetch_t *ft = p->fq_head;
                p->fq_head = ft->qnext;
                if (!p->fq_head)
                    p->fq_tail = NULL;
                ft->qnext = NULL;
                r->bytes += ft->nbytes;
                r->fetches[r->n++] = ft;
            }
            rc = s_send_get(d, p, r, sb);
        }
        if (rc == 0) {
            r->deadline = s_deadline(now, r->bytes);
            s_inflight_add(d, p, r);
            p->last_used = now;
            BUSY_AFTER(d, p);
            continue;
        }
        char why[200];
        snprintf(why, sizeof why, "cannot send to %.120s: %.60s", p->addr, zmq_strerror(errno));
        BUSY_AFTER(d, p);
        if (r->type == DREQ_PUT) {
            s_put_failed(d, r, why);
        } else {
            for (size_t i = 0; i < r->n; i++)
                s_fetch_advance(d, r->fetches[i], why);
            free(r);
        }
    }
}

long cdata_pump(cdata_t *d)
{
    shoal_client_t *c = d->c;
    s_sweep(d);
    if (d->refetch.n) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        for (size_t at = 0; at < d->refetch.n; at += CLIENT_IDS_PER_MSG) {
            size_t k = d->refetch.n - at;
            if (k > CLIENT_IDS_PER_MSG)
                k = CLIENT_IDS_PER_MSG;
            sb.size = 0;
            int rc = msgpack_pack_array(&pk, (uint32_t)k);
            for (size_t i = 0; i < k; i++)
                rc |= msgpack_pack_uint64(&pk, d->refetch.v[at + i]);
            if (rc || proto_send(c->sock, NULL, 0, MSG_REFETCH, sb.data, sb.size, NULL, 0) < 0)
                log_warn("could not send REFETCH to the scheduler: %s", zmq_strerror(errno));
        }
        msgpack_sbuffer_destroy(&sb);
        d->refetch.n = 0;
    }
    /* Settled jobs, however they settled (acks, failures, send errors). */
    for (scat_job_t *j = d->jobs, *next; j; j = next) {
        next = j->next;
        if (!j->outstanding)
            s_job_settle(d, j);
    }
    if (!d->nbusy)
        return -1;
    double now = util_now(), first = 0;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    /* A failed send moves work to other peers, possibly new ones (at the
     * head of the list): go round again until nothing moved, so that no
     * work waits through the poll unsent. */
    unsigned seq;
    do {
        seq = d->enq_seq;
        for (dpeer_t *p = d->peers; p; p = p->next)
            s_peer_pump(d, p, &sb, now);
    } while (seq != d->enq_seq);
    msgpack_sbuffer_destroy(&sb);
    for (scat_job_t *j = d->jobs, *next; j; j = next) {
        next = j->next;
        if (!j->outstanding)
            s_job_settle(d, j);
    }
    for (dpeer_t *p = d->peers; p; p = p->next)
        for (dreq_t *r = p->inflight; r; r = r->next)
            if (first == 0 || r->deadline < first)
                first = r->deadline;
    if (first == 0)
        return -1;
    return first <= now ? 0 : (long)((first - now) * 1000.0) + 1;
}

/* ---- peer failure and input ------------------------------------------------------------ */

/* p has failed: everything it had goes elsewhere, and it is closed at the
 * next sweep (not now: the poll items of this round may still name it). */
static void s_peer_fail(cdata_t *d, dpeer_t *p, const char *why)
{
    if (p->dead)
        return;
    BUSY_BEFORE(p);
    p->dead = 1;
    d->ndead++;
    dreq_t *in = p->inflight, *un = p->unsent_head;
    fetch_t *fq = p->fq_head;
    p->inflight = p->unsent_head = p->unsent_tail = NULL;
    p->fq_head = p->fq_tail = NULL;
    if (p->ninflight)
        d->nactive--;
    d->ninflight -= p->ninflight;
    p->ninflight = 0;
    BUSY_AFTER(d, p);
    log_debug("data endpoint %s failed: %s", p->addr, why);
    for (dreq_t *lists[2] = {in, un}, **l = lists; l < lists + 2; l++) {
        for (dreq_t *r = *l; r;) {
            dreq_t *next = r->next;
            if (r->type == DREQ_PUT) {
                s_put_failed(d, r, why);
            } else {
                for (size_t i = 0; i < r->n; i++)
                    s_fetch_advance(d, r->fetches[i], why);
                free(r);
            }
            r = next;
        }
    }
    while (fq) {
        fetch_t *next = fq->qnext;
        s_fetch_advance(d, fq, why);
        fq = next;
    }
}

static dreq_t *s_take_req(cdata_t *d, dpeer_t *p, const msgpack_object *body, int type)
{
    uint64_t req;
    if (mp_u64(mp_map_get(body, "req"), &req) < 0)
        return NULL;
    for (dreq_t *r = p->inflight; r; r = r->next) {
        if (r->req == req && r->type == type) {
            BUSY_BEFORE(p);
            s_inflight_del(d, p, r);
            BUSY_AFTER(d, p);
            return r;
        }
    }
    return NULL; /* a late answer to a request given up on */
}

/* The peer answered: it is alive, so its other requests get more time. */
static void s_progress(dpeer_t *p, double now)
{
    p->last_used = now;
    for (dreq_t *r = p->inflight; r; r = r->next)
        r->deadline = s_deadline(now, r->bytes);
}

/*
 * DATA {"req", "items": [[id, found, nbytes]...]} + one frame per found
 * item.  Everything is checked before anything is used: the items must be
 * ids of this request, the frames must be as many as the found items and
 * of the sizes announced.  A malformed answer counts as "not found" for
 * the whole request (the next holder is tried).
 */
static void s_on_data(cdata_t *d, dpeer_t *p, proto_msg_t *m)
{
    shoal_client_t *c = d->c;
    dreq_t *r = s_take_req(d, p, &m->body, DREQ_GET);
    if (!r)
        return;
    const msgpack_object *items;
    size_t k, nfound = 0;
    int bad = mp_array(mp_map_get(&m->body, "items"), &items, &k) < 0 || k > r->n;
    size_t frame_of[CDATA_IDS_PER_REQ]; /* per fetch of r: its frame, or SIZE_MAX */
    for (size_t i = 0; i < r->n; i++)
        frame_of[i] = SIZE_MAX;
    for (size_t i = 0; !bad && i < k; i++) {
        const msgpack_object *it;
        size_t n;
        uint64_t id, nbytes = 0;
        int found = 0;
        if (mp_array(&items[i], &it, &n) < 0 || n < 2 || mp_u64(&it[0], &id) < 0 ||
            mp_bool(&it[1], &found) < 0 || (found && (n < 3 || mp_u64(&it[2], &nbytes) < 0))) {
            bad = 1;
            break;
        }
        if (!found)
            continue;
        size_t j = 0;
        while (j < r->n && r->fetches[j]->id != id)
            j++;
        if (j == r->n || frame_of[j] != SIZE_MAX || nfound >= m->nframes ||
            proto_frame_size(m, nfound) != nbytes) {
            bad = 1;
            break;
        }
        frame_of[j] = nfound++;
    }
    if (!bad && nfound != m->nframes)
        bad = 1;
    char why[300];
    if (bad) {
        log_warn("ignoring a malformed DATA from the worker at %s", p->addr);
        snprintf(why, sizeof why, "the worker at %s sent a malformed DATA", p->addr);
    } else {
        snprintf(why, sizeof why, "the worker at %s does not have it", p->addr);
    }
    s_progress(p, util_now());
    if (!bad && nfound) {
        pthread_mutex_lock(&c->mu);
        for (size_t j = 0; j < r->n; j++) {
            if (frame_of[j] == SIZE_MAX)
                continue;
            shoal_future_t *f = ftab_get(&c->futures, r->fetches[j]->id);
            if (f)
                client_future_take_bytes(f, &m->frames[frame_of[j]]);
        }
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->mu);
    }
    for (size_t j = 0; j < r->n; j++) {
        if (!bad && frame_of[j] != SIZE_MAX)
            s_fetch_drop(d, r->fetches[j]);
        else
            s_fetch_advance(d, r->fetches[j], why);
    }
    free(r);
}

static void s_on_put_ack(cdata_t *d, dpeer_t *p, proto_msg_t *m)
{
    dreq_t *r = s_take_req(d, p, &m->body, DREQ_PUT);
    if (!r)
        return;
    s_progress(p, util_now());
    int ok = 0;
    if (mp_bool(mp_map_get(&m->body, "ok"), &ok) < 0)
        ok = 0;
    if (ok) {
        s_put_ok(r);
        return;
    }
    const char *t = "no reason given";
    size_t tl = strlen(t);
    mp_str(mp_map_get(&m->body, "error"), &t, &tl);
    char why[300];
    snprintf(why, sizeof why, "refused: %.*s", (int)(tl > 200 ? 200 : tl), t);
    s_put_failed(d, r, why);
}

static void s_peer_recv(cdata_t *d, dpeer_t *p)
{
    for (int i = 0; i < CDATA_RECV_BURST && !p->dead; i++) {
        proto_msg_t m;
        if (proto_recv(p->sock, 0, &m, ZMQ_DONTWAIT) < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            char why[300];
            if (errno == EBADMSG || errno == EPROTONOSUPPORT) {
                proto_msg_close(&m);
                snprintf(why, sizeof why, "the worker at %s sent a malformed message", p->addr);
            } else {
                snprintf(why, sizeof why, "receiving from %s failed: %s", p->addr,
                         zmq_strerror(errno));
            }
            log_warn("%s", why);
            s_peer_fail(d, p, why);
            return;
        }
        switch (m.hdr.type) {
        case MSG_DATA: s_on_data(d, p, &m); break;
        case MSG_PUT_ACK: s_on_put_ack(d, p, &m); break;
        case MSG_ERROR: {
            /* The data endpoint refused a request; it does not say which,
             * so everything sent there goes elsewhere. */
            const char *t = "(no message)";
            size_t tl = strlen(t);
            mp_str(mp_map_get(&m.body, "message"), &t, &tl);
            char why[300];
            snprintf(why, sizeof why, "the worker at %s answered: %.*s", p->addr,
                     (int)(tl > 200 ? 200 : tl), t);
            log_warn("%s", why);
            s_peer_fail(d, p, why);
            break;
        }
        default:
            log_warn("ignoring unexpected %s from the worker at %s", proto_type_name(m.hdr.type),
                     p->addr);
            break;
        }
        proto_msg_close(&m);
    }
}

static void s_peer_mon(cdata_t *d, dpeer_t *p)
{
    for (int i = 0; i < CDATA_RECV_BURST && !p->dead; i++) {
        zmq_msg_t ev;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, p->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&ev);
            return;
        }
        uint16_t event = 0;
        if (zmq_msg_size(&ev) >= 6)
            memcpy(&event, zmq_msg_data(&ev), sizeof event);
        int more = zmq_msg_more(&ev);
        zmq_msg_close(&ev);
        while (more) {
            zmq_msg_t part;
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, p->mon, 0) < 0) {
                zmq_msg_close(&part);
                break;
            }
            more = zmq_msg_more(&part);
            zmq_msg_close(&part);
        }
        if (!p->ninflight)
            continue; /* idle: nothing lost; ZeroMQ reconnects if it can */
        /* What arrived before the connection went is still good. */
        if (event == ZMQ_EVENT_DISCONNECTED)
            s_peer_recv(d, p);
        char why[300];
        snprintf(why, sizeof why, "%s %s", event == ZMQ_EVENT_DISCONNECTED
                                               ? "lost the connection to"
                                               : "cannot connect to",
                 p->addr);
        s_peer_fail(d, p, why);
    }
}

/* ---- the poll set and deadlines ------------------------------------------------------------ */

size_t cdata_npoll(const cdata_t *d)
{
    return 2 * d->nactive;
}

void cdata_fill_poll(cdata_t *d, zmq_pollitem_t *items)
{
    size_t k = 0;
    for (dpeer_t *p = d->peers; p; p = p->next) {
        if (p->dead || !p->ninflight || k + 2 > 2 * d->nactive) {
            p->pi = -1;
            continue;
        }
        p->pi = (int)k;
        items[k++] = (zmq_pollitem_t){.socket = p->sock, .events = ZMQ_POLLIN};
        items[k++] = (zmq_pollitem_t){.socket = p->mon, .events = ZMQ_POLLIN};
    }
}

void cdata_after_poll(cdata_t *d, const zmq_pollitem_t *items)
{
    /* Handling one peer may create others (at the head of the list, with
     * pi -1) or fail any peer (closed only by the sweep), so the list and
     * the pi indices of this round stay valid throughout. */
    for (dpeer_t *p = d->peers; p; p = p->next) {
        if (p->pi < 0 || p->dead)
            continue;
        if (items[p->pi].revents & ZMQ_POLLIN)
            s_peer_recv(d, p);
        if (!p->dead && (items[p->pi + 1].revents & ZMQ_POLLIN))
            s_peer_mon(d, p);
    }
    for (dpeer_t *p = d->peers; p; p = p->next)
        p->pi = -1;
    s_sweep(d);
}

void cdata_timers(cdata_t *d)
{
    double now = util_now();
    if (d->ninflight) {
        for (dpeer_t *p = d->peers; p; p = p->next) {
            if (p->dead)
                continue;
            for (dreq_t *r = p->inflight; r; r = r->next) {
                if (r->deadline <= now) {
                    char why[300];
                    snprintf(why, sizeof why, "the worker at %s did not answer in time",
                             p->addr);
                    log_warn("%s", why);
                    s_peer_fail(d, p, why);
                    break;
                }
            }
        }
    }
    if (d->npeers && now >= d->next_idle_check) {
        d->next_idle_check = now + 1.0;
        for (dpeer_t *p = d->peers; p; p = p->next) {
            if (!p->dead && !s_peer_has_work(p) && now - p->last_used > CDATA_IDLE_CLOSE) {
                p->dead = 1; /* not failed: just closed, it has nothing */
                d->ndead++;
            }
        }
    }
    s_sweep(d);
}

void cdata_shutdown(cdata_t *d, const char *why)
{
    if (!d)
        return;
    while (d->jobs)
        s_job_finish(d, d->jobs, why);
}

/* ---- scatter: the API side ----------------------------------------------------------------- */

/* Check that buf holds exactly one well-formed MessagePack object, without
 * allocating (a bin or str payload is skipped over, not looked at). */
static int s_one_object(const uint8_t *buf, size_t len)
{
    size_t off = 0;
    uint64_t pending = 1;
    while (pending > 0) {
        if (off >= len)
            return -1;
        uint8_t c = buf[off++];
        uint64_t skip = 0, elems = 0;
        size_t lenbytes = 0;
        if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
            /* fixint, nil, bool */
        } else if ((c & 0xe0) == 0xa0) {
            skip = c & 0x1f;
        } else if ((c & 0xf0) == 0x90) {
            elems = c & 0x0f;
        } else if ((c & 0xf0) == 0x80) {
            elems = 2u * (c & 0x0f);
        } else {
            switch (c) {
            case 0xcc: case 0xd0: skip = 1; break;
            case 0xcd: case 0xd1: skip = 2; break;
            case 0xce: case 0xd2: case 0xca: skip = 4; break;
            case 0xcf: case 0xd3: case 0xcb: skip = 8; break;
            case 0xd4: skip = 2; break;
            case 0xd5: skip = 3; break;
            case 0xd6: skip = 5; break;
            case 0xd7: skip = 9; break;
            case 0xd8: skip = 17; break;
            case 0xc4: case 0xd9: case 0xc7: lenbytes = 1; break;
            case 0xc5: case 0xda: case 0xc8: case 0xdc: case 0xde: lenbytes = 2; break;
            case 0xc6: case 0xdb: case 0xc9: case 0xdd: case 0xdf: lenbytes = 4; break;
            default: return -1;
            }
            if (lenbytes) {
                if (len - off < lenbytes)
                    return -1;
                uint64_t n = 0;
                for (size_t i = 0; i < lenbytes; i++)
                    n = n << 8 | buf[off + i];
                off += lenbytes;
                if (c == 0xdc || c == 0xdd)
                    elems = n;
                else if (c == 0xde || c == 0xdf)
                    elems = 2 * n;
                else if (c >= 0xc7 && c <= 0xc9)
                    skip = n + 1;
                else
                    skip = n;
            }
        }
        if (len - off < skip)
            return -1;
        off += (size_t)skip;
        pending = pending - 1 + elems;
        /* Every object takes a byte at least. */
        if (pending > len - off)
            return -1;
    }
    return off == len ? 0 : -1;
}

/* Make piece i: the packed object (checked) or raw bytes packed as bin. */
static sbuf_t *s_piece(const void *data, size_t len, int raw, size_t i, shoal_error_t *err)
{
    uint8_t hdr[5];
    size_t hl = 0;
    if (raw) {
        if (len <= 0xff) {
            hdr[0] = 0xc4;
            hdr[1] = (uint8_t)len;
            hl = 2;
        } else if (len <= 0xffff) {
            hdr[0] = 0xc5;
            hdr[1] = (uint8_t)(len >> 8);
            hdr[2] = (uint8_t)len;
            hl = 3;
        } else {
            hdr[0] = 0xc6;
            hdr[1] = (uint8_t)(len >> 24);
            hdr[2] = (uint8_t)(len >> 16);
            hdr[3] = (uint8_t)(len >> 8);
            hdr[4] = (uint8_t)len;
            hl = 5;
        }
    } else if (s_one_object(data, len) < 0) {
        client_fail(err, EINVAL, "shoal_scatter: piece %zu is not one well-formed MessagePack "
                                 "object", i);
        return NULL;
    }
    sbuf_t *b = malloc(sizeof *b + hl + len);
    if (!b) {
        client_fail(err, ENOMEM, "out of memory copying piece %zu (%zu bytes)", i, len);
        return NULL;
    }
    b->refs = 1;
    b->len = hl + len;
    memcpy(b->data, hdr, hl);
    if (len)
        memcpy(b->data + hl, data, len);
    return b;
}

/* The workers to put data on: those with a data endpoint, not paused if
 * any is not.  0, or -1 with err. */
static int s_pick_workers(shoal_client_t *c, scat_job_t *job, shoal_error_t *err)
{
    shoal_status_info_t st;
    if (client_status(c, &st, CDATA_STATUS_TIMEOUT, err) < 0)
        return -1;
    size_t usable = 0, awake = 0;
    for (int i = 0; i < st.nworkers; i++) {
        const shoal_worker_info_t *w = &st.workers[i];
        if (w->data[0] && w->id) {
            usable++;
            awake += !w->paused;
        }
    }
    if (usable == 0) {
        int had = st.nworkers;
        shoal_status_free(&st);
        return client_fail(err, had ? ENOTSUP : EAGAIN,
                           had ? "cannot scatter: the scheduler at %s names no worker data "
                                 "endpoint (a scheduler or workers without the data plane)"
                               : "cannot scatter: no worker is connected to %s",
                           c->address);
    }
    job->w = calloc(awake ? awake : usable, sizeof *job->w);
    if (!job->w) {
        shoal_status_free(&st);
        return client_fail(err, ENOMEM, "out of memory");
    }
    for (int i = 0; i < st.nworkers; i++) {
        const shoal_worker_info_t *w = &st.workers[i];
        if (!w->data[0] || !w->id || (awake && w->paused))
            continue;
        scat_worker_t *sw = &job->w[job->nw++];
        snprintf(sw->name, sizeof sw->name, "%s", w->name);
        snprintf(sw->addr, sizeof sw->addr, "%s", w->data);
        sw->id = w->id;
    }
    shoal_status_free(&st);
    return 0;
}

static int s_scatter_inline(shoal_client_t *c, scat_job_t *job, shoal_future_t **out,
                            shoal_error_t *err)
{
    size_t made = 0;
    pthread_mutex_lock(&c->mu);
    if (c->next_n + job->n - 1 > CLIENT_N_MAX) {
        pthread_mutex_unlock(&c->mu);
        return client_fail(err, ENOSPC, "this client has used up its task ids; connect again");
    }
    for (; made < job->n; made++) {
        shoal_future_t *f = client_future_new(c, (c->client_id << CLIENT_ID_SHIFT) |
                                                     (c->next_n + made));
        if (!f)
            break;
        out[made] = f;
        client_future_complete(f, SHOAL_FINISHED, job->items[made].buf->data,
                               job->items[made].buf->len, NULL, 0, "inline", 6);
    }
    if (made < job->n) {
        for (size_t i = 0; i < made; i++) {
            out[i]->refs = 0;
            client_future_free(out[i]);
            out[i] = NULL;
        }
        pthread_mutex_unlock(&c->mu);
        return client_fail(err, ENOMEM, "out of memory scattering %zu piece(s)", job->n);
    }
    c->next_n += job->n;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

/* Complete scattered future i (lock held): the bytes here if small, else
 * where the workers keep them.  0 or -1 (ENOMEM). */
static int s_scatter_complete(scat_job_t *job, size_t i, shoal_future_t *f)
{
    const scat_item_t *it = &job->items[i];
    const scat_worker_t *w0 = &job->w[it->ok[0]];
    if (it->buf->len <= PROTO_INLINE_MAX) {
        client_future_complete(f, SHOAL_FINISHED, it->buf->data, it->buf->len, NULL, 0,
                               w0->name, strlen(w0->name));
        return f->status == SHOAL_FINISHED ? 0 : -1;
    }
    char **hs = calloc(it->nok, sizeof *hs);
    if (!hs)
        return -1;
    for (uint32_t k = 0; k < it->nok; k++) {
        if (!(hs[k] = strdup(job->w[it->ok[k]].addr))) {
            while (k)
                free(hs[--k]);
            free(hs);
            return -1;
        }
    }
    f->holders = hs;
    f->nholders = it->nok;
    f->nbytes = it->buf->len;
    f->remote = 1;
    f->fetch = FETCH_NONE;
    client_future_complete(f, SHOAL_FINISHED, NULL, 0, NULL, 0, w0->name, strlen(w0->name));
    return 0;
}

static int s_scatter(shoal_client_t *c, const void *const *data, const size_t *lens, size_t n,
                     int broadcast, int raw, shoal_future_t **out, shoal_error_t *err)
{
    const char *fn = raw ? "shoal_scatter_bytes" : "shoal_scatter";
    if (!c || (n && (!data || !lens || !out)))
        return client_fail(err, EINVAL, "%s: missing argument", fn);
    if (n == 0)
        return 0;
    if (n > CLIENT_N_MAX)
        return client_fail(err, EINVAL, "%s: too many pieces", fn);
    for (size_t i = 0; i < n; i++) {
        if (!data[i] || (!raw && lens[i] == 0) || lens[i] > CDATA_MAX_PIECE)
            return client_fail(err, EINVAL, "%s: piece %zu is %s", fn, i,
                               !data[i]    ? "NULL"
                               : lens[i]   ? "larger than 1 GiB less 4 KiB"
                                           : "empty");
    }
    scat_job_t *job = calloc(1, sizeof *job);
    if (!job || !(job->items = calloc(n, sizeof *job->items))) {
        free(job);
        return client_fail(err, ENOMEM, "out of memory scattering %zu piece(s)", n);
    }
    job->n = n;
    job->broadcast = broadcast != 0;
    int rc = -1;
    for (size_t i = 0; i < n; i++)
        if (!(job->items[i].buf = s_piece(data[i], lens[i], raw, i, err)))
            goto out;
    if (c->inline_mode) {
        rc = s_scatter_inline(c, job, out, err);
        goto out;
    }
    if (s_pick_workers(c, job, err) < 0)
        goto out;
    if (job->broadcast && job->n * job->nw > CDATA_MAX_PUTS) {
        client_fail(err, E2BIG, "%s: %zu pieces to %zu workers is too many puts for one call",
                    fn, job->n, job->nw);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (!(job->items[i].ok = calloc(job->broadcast ? job->nw : 1, sizeof(uint32_t)))) {
            client_fail(err, ENOMEM, "out of memory scattering %zu piece(s)", n);
            goto out;
        }
    }

    /* Ids, futures and the job, queued for the I/O thread; then wait for
     * it to hand the job back.  It always does: every put has a deadline,
     * and a client that stops fails the jobs still running. */
    size_t made = 0;
    pthread_mutex_lock(&c->mu);
    if (c->stopping || c->dead) {
        char msg[sizeof c->dead_msg];
        int e = c->stopping ? ESHUTDOWN : ENOTCONN;
        snprintf(msg, sizeof msg, "%s", c->stopping ? "the client is disconnecting" : c->dead_msg);
        pthread_mutex_unlock(&c->mu);
        client_fail(err, e, "cannot scatter: %s", msg);
        goto out;
    }
    if (c->next_n + n - 1 > CLIENT_N_MAX) {
        pthread_mutex_unlock(&c->mu);
        client_fail(err, ENOSPC, "this client has used up its task ids; connect again");
        goto out;
    }
    for (; made < n; made++) {
        uint64_t id = (c->client_id << CLIENT_ID_SHIFT) | (c->next_n + made);
        shoal_future_t *f = client_future_new(c, id);
        if (!f)
            break;
        out[made] = f;
        job->items[made].id = id;
    }
    if (made < n) {
        for (size_t i = 0; i < made; i++) {
            ftab_del(&c->futures, out[i], c->next_n);
            free(out[i]);
            out[i] = NULL;
        }
        pthread_mutex_unlock(&c->mu);
        client_fail(err, ENOMEM, "out of memory scattering %zu piece(s)", n);
        goto out;
    }
    c->next_n += n;
    size_t rr = c->scatter_rr;
    c->scatter_rr += (unsigned)n;
    for (size_t i = 0; i < n; i++)
        job->items[i].start = (rr + i) % job->nw;
    if (c->scat_tail)
        c->scat_tail->next = job;
    else
        c->scat_head = job;
    c->scat_tail = job;
    client_wake_locked(c);
    while (!job->done)
        client_cond_wait(c, NULL);

    int ok = !job->failed;
    for (size_t i = 0; i < n && ok; i++) {
        /* A connection lost meanwhile failed the pending futures. */
        if (out[i]->status != SHOAL_PENDING) {
            client_fail(err, ENOTCONN, "cannot scatter: %s",
                        out[i]->error ? out[i]->error : "the connection was lost");
            ok = 0;
        }
    }
    for (size_t i = 0; i < n && ok; i++) {
        if (s_scatter_complete(job, i, out[i]) < 0) {
            client_fail(err, ENOMEM, "out of memory scattering %zu piece(s)", n);
            ok = 0;
        }
    }
    if (!ok) {
        if (job->failed)
            client_fail(err, EIO, "%s", job->err);
        /* Releasing them tells the scheduler to free what did arrive. */
        for (size_t i = 0; i < n; i++) {
            out[i]->refs = 0;
            client_future_free(out[i]);
            out[i] = NULL;
        }
    } else {
        rc = 0;
    }
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);

out:;
    int e = errno;
    client_scat_job_free(job);
    errno = e;
    return rc;
}

int shoal_scatter(shoal_client_t *c, const void *const *data, const size_t *lens, size_t n,
                  int broadcast, shoal_future_t **out, shoal_error_t *err)
{
    return s_scatter(c, data, lens, n, broadcast, 0, out, err);
}

int shoal_scatter_bytes(shoal_client_t *c, const void *const *data, const size_t *lens,
                        size_t n, int broadcast, shoal_future_t **out, shoal_error_t *err)
{
    return s_scatter(c, data, lens, n, broadcast, 1, out, err);
}
