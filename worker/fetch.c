/*
 * fetch.c - getting task inputs from their holders (see fetch.h).
 *
 * Records:
 *   want  one id being fetched: its holders (copied), which one is next, the
 *         tasks waiting for it; on the queue (not sent yet) or in a request.
 *   req   one GET in flight: up to PROTO_MAX_DATA_FRAMES wants, a deadline;
 *         on its peer's FIFO list.
 *   peer  one data address: DEALER + monitor PAIR (each with a zwatch), the
 *         requests in flight on it; or, after a failure, a dead mark without
 *         sockets that makes requests to it fail at once until it expires.
 *
 * Lifetimes: a want is freed when it succeeds, when its last holder fails,
 * or when nobody waits for it any more and it is not in flight.  Callbacks
 * into the worker may unwant other ids, which can free *queued* wants, never
 * in-flight ones nor requests nor peers: so loops over a request's wants and
 * over peers are safe across callbacks, and loops over the queue restart
 * from its head after each callback.  Peer sockets are closed only in
 * s_reap (called from fetch_pump and fetch_tick), never inside their own
 * watcher's callback.
 */
#define _GNU_SOURCE
#include "fetch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "log.h"
#include "mp.h"
#include "proto.h"
#include "u64map.h"
#include "util.h"
#include "zwatch.h"

/* Queue entries looked at when filling one GET with more ids for the same
 * holder: bounds the cost of batching when the queue is long. */
#define BATCH_SCAN_MAX 256
/* Messages taken from one peer socket per callback. */
#define RECV_BURST 32
/* A request may take this long, plus a second per this many bytes expected. */
#define SLOW_BYTES_PER_SEC (16u << 20)
/* ZMQ_CONNECT_TIMEOUT: a host that does not answer SYNs is given up on
 * (and reported as CONNECT_RETRIED) after this many ms. */
#define CONNECT_TIMEOUT_MS 10000

typedef struct req req_t;
typedef struct peer peer_t;

typedef struct want {
    uint64_t id;
    uint64_t nbytes;
    char **holders;              /* one allocation: pointers, then strings */
    uint32_t nholders, next;     /* next: index of the holder to ask */
    fetch_waiter_t *waiters;
    uint32_t nwaiters, cap;
    struct want *qprev, *qnext;  /* the queue, while queued */
    int queued;
    req_t *req;                  /* the request it is in, while in flight */
} want_t;

struct req {
    uint64_t no;
    peer_t *peer;
    want_t *wants[PROTO_MAX_DATA_FRAMES];
    uint32_t n;
    double deadline;
    req_t *prev, *next;          /* the peer's in-flight list, oldest first */
};

struct peer {
    fetch_t *f;
    char addr[FETCH_ADDR_MAX];
    uint64_t key;                /* hash of addr: u64map key */
    peer_t *hnext;               /* chain of peers with the same key */
    peer_t *prev, *next;         /* all peers, least recently used first */
    void *sock, *mon;
    zwatch_t *zw, *zmon;
    int dead;                    /* sockets closed (or being closed) */
    int reap;                    /* sockets still to be closed by s_reap */
    double dead_until;
    double last_used;
    req_t *rhead, *rtail;
    size_t nreq;
};

struct fetch {
    struct ev_loop *loop;
    void *zctx;
    int64_t max_frame;
    int limit;
    double timeout;
    fetch_done_fn done;
    void *arg;
    u64map_t *wants;             /* id -> want_t */
    u64map_t *peers;             /* key -> peer_t chain */
    want_t *qhead, *qtail;
    peer_t *phead, *ptail;
    size_t nlive;                /* peers with sockets */
    size_t ninflight;
    int nreap;
    ev_idle kick;                /* one more loop iteration: see s_peer_open */
    uint64_t next_req;
    uint64_t nmon;
    fetch_stats_t st;
};

/* ---- queue -------------------------------------------------------------- */

static void s_q_remove(fetch_t *f, want_t *w)
{
    if (!w->queued)
        return;
    if (w->qprev)
        w->qprev->qnext = w->qnext;
    else
        f->qhead = w->qnext;
    if (w->qnext)
        w->qnext->qprev = w->qprev;
    else
        f->qtail = w->qprev;
    w->qprev = w->qnext = NULL;
    w->queued = 0;
}

static void s_q_push_tail(fetch_t *f, want_t *w)
{
    w->qnext = NULL;
    w->qprev = f->qtail;
    if (f->qtail)
        f->qtail->qnext = w;
    else
        f->qhead = w;
    f->qtail = w;
    w->queued = 1;
}

/* Retries go first: they are the oldest wants. */
static void s_q_push_head(fetch_t *f, want_t *w)
{
    w->qprev = NULL;
    w->qnext = f->qhead;
    if (f->qhead)
        f->qhead->qprev = w;
    else
        f->qtail = w;
    f->qhead = w;
    w->queued = 1;
}

/* ---- wants -------------------------------------------------------------- */

static void s_want_free(want_t *w)
{
    free(w->holders);
    free(w->waiters);
    free(w);
}

/* Remove from the map and free a want that is neither queued nor in flight. */
static void s_want_drop(fetch_t *f, want_t *w)
{
    u64map_del(f->wants, w->id);
    s_want_free(w);
}

static void s_want_succeed(fetch_t *f, want_t *w, store_buf_t *buf)
{
    u64map_del(f->wants, w->id);
    f->st.nreceived++;
    f->st.bytes += buf->len;
    if (w->nwaiters)
        f->done(f->arg, w->id, buf, w->waiters, w->nwaiters);
    else
        store_buf_unref(buf);
    s_want_free(w);
}

/* The current holder failed for w (which is neither queued nor in flight):
 * try the next one, or give up and tell the waiters. */
static void s_want_advance(fetch_t *f, want_t *w)
{
    if (w->nwaiters == 0) {
        s_want_drop(f, w);
        return;
    }
    if (++w->next < w->nholders) {
        f->st.nfailovers++;
        s_q_push_head(f, w);
        return;
    }
    u64map_del(f->wants, w->id);
    log_info("result %llu could not be fetched from any of its %u holders",
             (unsigned long long)w->id, w->nholders);
    f->done(f->arg, w->id, NULL, w->waiters, w->nwaiters);
    s_want_free(w);
}

int fetch_want(fetch_t *f, uint64_t id, uint64_t nbytes, const char *const *holders,
               size_t nholders, void *task, uint32_t index)
{
    want_t *w = u64map_get(f->wants, id);
    size_t i, n = 0, strbytes = 0;
    char *at;

    if (!w) {
        for (i = 0; i < nholders && n < FETCH_MAX_HOLDERS; i++) {
            size_t len = strnlen(holders[i], FETCH_ADDR_MAX);
            if (len >= FETCH_ADDR_MAX || strncmp(holders[i], "tcp://", 6) != 0)
                continue;
            strbytes += len + 1;
            n++;
        }
        if (n == 0 || id == 0) {
            errno = EINVAL;
            return -1;
        }
        if (!(w = calloc(1, sizeof(*w))))
            goto nomem;
        if (!(w->holders = malloc(n * sizeof(char *) + strbytes))) {
            free(w);
            goto nomem;
        }
        at = (char *)(w->holders + n);
        for (i = 0; i < nholders && w->nholders < n; i++) {
            size_t len = strnlen(holders[i], FETCH_ADDR_MAX);
            if (len >= FETCH_ADDR_MAX || strncmp(holders[i], "tcp://", 6) != 0)
                continue;
            memcpy(at, holders[i], len + 1);
            w->holders[w->nholders++] = at;
            at += len + 1;
        }
        w->id = id;
        /* The size comes from the scheduler and only steers batching and
         * deadlines; no frame can be larger than max_frame anyway. */
        w->nbytes = f->max_frame > 0 && nbytes > (uint64_t)f->max_frame
                        ? (uint64_t)f->max_frame : nbytes;
        if (u64map_put(f->wants, id, w) < 0) {
            s_want_free(w);
            goto nomem;
        }
        s_q_push_tail(f, w);
    }
    if (w->nwaiters == w->cap) {
        uint32_t ncap = w->cap ? w->cap * 2 : 2;
        fetch_waiter_t *nw = realloc(w->waiters, ncap * sizeof(*nw));
        if (!nw) {
            if (w->nwaiters == 0 && !w->req) {
                s_q_remove(f, w);
                s_want_drop(f, w);
            }
            goto nomem;
        }
        w->waiters = nw;
        w->cap = ncap;
    }
    w->waiters[w->nwaiters].task = task;
    w->waiters[w->nwaiters].index = index;
    w->nwaiters++;
    return 0;
nomem:
    errno = ENOMEM;
    return -1;
}

void fetch_unwant(fetch_t *f, uint64_t id, void *task)
{
    want_t *w = u64map_get(f->wants, id);
    uint32_t i = 0;

    if (!w)
        return;
    while (i < w->nwaiters) {
        if (w->waiters[i].task == task)
            w->waiters[i] = w->waiters[--w->nwaiters];
        else
            i++;
    }
    if (w->nwaiters == 0 && !w->req) {
        s_q_remove(f, w);
        s_want_drop(f, w);
    }
}

/* ---- peers -------------------------------------------------------------- */

static uint64_t s_key(const char *addr)
{
    uint64_t k = util_fnv1a64(addr, strlen(addr));
    return k ? k : 1;   /* 0 is not a valid u64map key */
}

static peer_t *s_peer_find(fetch_t *f, const char *addr)
{
    peer_t *p = u64map_get(f->peers, s_key(addr));

    for (; p; p = p->hnext)
        if (!strcmp(p->addr, addr))
            return p;
    return NULL;
}

static void s_peer_touch(fetch_t *f, peer_t *p)
{
    if (f->ptail == p)
        return;
    if (p->prev)
        p->prev->next = p->next;
    else
        f->phead = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->prev = f->ptail;
    p->next = NULL;
    f->ptail->next = p;
    f->ptail = p;
}

/* Close a peer's sockets (deferred from s_peer_down; not inside their
 * watchers' callbacks). */
static void s_peer_close(fetch_t *f, peer_t *p)
{
    zwatch_destroy(p->zw);
    zwatch_destroy(p->zmon);
    p->zw = p->zmon = NULL;
    if (p->sock) {
        zmq_socket_monitor(p->sock, NULL, 0);
        zmq_close(p->sock);   /* linger 0: queued GETs are dropped */
    }
    if (p->mon)
        zmq_close(p->mon);
    p->sock = p->mon = NULL;
    if (p->reap) {
        p->reap = 0;
        f->nreap--;
    }
}

static void s_peer_unlink_free(fetch_t *f, peer_t *p)
{
    peer_t *h = u64map_get(f->peers, p->key), **pp;

    if (h == p) {
        if (p->hnext)
            u64map_put(f->peers, p->key, p->hnext);   /* replaces: cannot fail */
        else
            u64map_del(f->peers, p->key);
    } else {
        for (pp = &h; *pp; pp = &(*pp)->hnext)
            if (*pp == p) {
                *pp = p->hnext;
                break;
            }
    }
    if (p->prev)
        p->prev->next = p->next;
    else
        f->phead = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        f->ptail = p->prev;
    s_peer_close(f, p);
    free(p);
}

static void s_req_fail(fetch_t *f, req_t *r);
static void s_on_peer(struct ev_loop *loop, zwatch_t *zw, int revents, void *arg);
static void s_on_monitor(struct ev_loop *loop, zwatch_t *zw, int revents, void *arg);

/* The peer is unreachable: every request on it fails over, and the address
 * is avoided for FETCH_DEAD_SECS. */
static void s_peer_down(fetch_t *f, peer_t *p, const char *why)
{
    if (!p->dead) {
        log_info("data endpoint %s: %s (%zu requests fail over)", p->addr, why, p->nreq);
        p->dead = 1;
        p->dead_until = ev_now(f->loop) + FETCH_DEAD_SECS;
        zwatch_stop(p->zw);
        zwatch_stop(p->zmon);
        if (p->sock || p->mon) {
            p->reap = 1;
            f->nreap++;
        }
        f->nlive--;
    }
    while (p->rhead)
        s_req_fail(f, p->rhead);
}

/* Open sockets for p (new, or dead and expired).  0 or -1. */
static int s_peer_open(fetch_t *f, peer_t *p)
{
    int zero = 0, ctimeout = CONNECT_TIMEOUT_MS;
    char ep[96];

    if (util_fmt(ep, sizeof(ep), "inproc://shoal-fetch-%p-%llu", (void *)f,
                 (unsigned long long)++f->nmon) < 0)
        return -1;
    if (!(p->sock = zmq_socket(f->zctx, ZMQ_DEALER)) ||
        proto_sock_setup(p->sock, f->max_frame) < 0 ||
        zmq_setsockopt(p->sock, ZMQ_LINGER, &zero, sizeof(zero)) < 0 ||
        zmq_setsockopt(p->sock, ZMQ_CONNECT_TIMEOUT, &ctimeout, sizeof(ctimeout)) < 0)
        goto error;
    /* The monitor first, so that no connection event escapes it. */
    if (zmq_socket_monitor(p->sock, ep, ZMQ_EVENT_CONNECT_RETRIED |
                                            ZMQ_EVENT_DISCONNECTED) < 0 ||
        !(p->mon = zmq_socket(f->zctx, ZMQ_PAIR)) || zmq_connect(p->mon, ep) < 0)
        goto error;
    if (!(p->zw = zwatch_create(f->loop, p->sock, EV_READ, s_on_peer, p)) ||
        !(p->zmon = zwatch_create(f->loop, p->mon, EV_READ, s_on_monitor, p)))
        goto error;
    if (zmq_connect(p->sock, p->addr) < 0)
        goto error;
    zwatch_start(p->zw);
    zwatch_start(p->zmon);
    /* Peers are opened from fetch_pump, in the loop's prepare phase, which
     * has already picked the prepare watchers it runs: the new zwatches'
     * would first run after the loop slept, with no io watcher armed for
     * the reply.  An idle watcher makes that sleep a poll. */
    ev_idle_start(f->loop, &f->kick);
    p->dead = 0;
    f->nlive++;
    return 0;
error:
    log_warn("cannot connect to data endpoint %s: %s", p->addr, zmq_strerror(errno));
    s_peer_close(f, p);
    return -1;
}

/* Room for one more live peer: close the least recently used idle one. */
static void s_peer_evict(fetch_t *f)
{
    peer_t *p;

    if (f->nlive < FETCH_MAX_PEERS)
        return;
    for (p = f->phead; p; p = p->next) {
        if (!p->dead && p->nreq == 0) {
            log_debug("closing idle connection to data endpoint %s", p->addr);
            s_peer_unlink_free(f, p);
            f->nlive--;
            return;
        }
    }
}

/* The live peer for addr, connecting if need be; NULL if it is marked dead
 * or cannot be connected (then it is marked dead). */
static peer_t *s_peer_get(fetch_t *f, const char *addr)
{
    peer_t *p = s_peer_find(f, addr), *h;
    double now = ev_now(f->loop);

    if (p) {
        p->last_used = now;
        s_peer_touch(f, p);
        if (!p->dead)
            return p;
        if (now < p->dead_until || p->reap)
            return NULL;
        s_peer_evict(f);
        if (s_peer_open(f, p) < 0) {
            p->dead_until = now + FETCH_DEAD_SECS;
            return NULL;
        }
        return p;
    }
    /* Room first: the new peer must not be the one evicted. */
    s_peer_evict(f);
    if (!(p = calloc(1, sizeof(*p))))
        return NULL;
    p->f = f;
    memcpy(p->addr, addr, strnlen(addr, FETCH_ADDR_MAX - 1));
    p->key = s_key(p->addr);
    p->last_used = now;
    h = u64map_get(f->peers, p->key);
    p->hnext = h;
    if (u64map_put(f->peers, p->key, p) < 0) {
        free(p);
        return NULL;
    }
    p->prev = f->ptail;
    if (f->ptail)
        f->ptail->next = p;
    else
        f->phead = p;
    f->ptail = p;
    if (s_peer_open(f, p) < 0) {
        p->dead = 1;
        p->dead_until = now + FETCH_DEAD_SECS;
        return NULL;
    }
    return p;
}

/* ---- requests ----------------------------------------------------------- */

static void s_req_unlink(fetch_t *f, req_t *r)
{
    peer_t *p = r->peer;

    if (r->prev)
        r->prev->next = r->next;
    else
        p->rhead = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        p->rtail = r->prev;
    p->nreq--;
    f->ninflight--;
}

/* Every id of r moves on to its next holder. */
static void s_req_fail(fetch_t *f, req_t *r)
{
    uint32_t i;

    s_req_unlink(f, r);
    for (i = 0; i < r->n; i++) {
        want_t *w = r->wants[i];
        w->req = NULL;
        s_want_advance(f, w);
    }
    free(r);
}

/* Send GET for r on its peer.  0 or -1. */
static int s_req_send(req_t *r)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    uint32_t i;
    int rc;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    mp_pack_cstr(&pk, "req");
    msgpack_pack_uint64(&pk, r->no);
    mp_pack_cstr(&pk, "ids");
    msgpack_pack_array(&pk, r->n);
    for (i = 0; i < r->n; i++)
        msgpack_pack_uint64(&pk, r->wants[i]->id);
    rc = proto_send(r->peer->sock, NULL, 0, MSG_GET, sb.data, sb.size, NULL, 0);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* Close the sockets of peers that went down. */
static void s_reap(fetch_t *f)
{
    peer_t *p;

    if (f->nreap == 0)
        return;
    for (p = f->phead; p && f->nreap > 0; p = p->next)
        if (p->reap)
            s_peer_close(f, p);
}

void fetch_pump(fetch_t *f)
{
    s_reap(f);
    while (f->ninflight < (size_t)f->limit && f->qhead) {
        want_t *w = f->qhead, *x, *xn;
        const char *addr = w->holders[w->next];
        uint64_t bytes = w->nbytes;
        peer_t *p;
        req_t *r;
        int scan = 0;

        s_q_remove(f, w);
        if (!(p = s_peer_get(f, addr))) {
            /* Dead or unreachable: next holder (this may call back, which
             * may change the queue: start again from its head). */
            s_want_advance(f, w);
            continue;
        }
        if (!(r = calloc(1, sizeof(*r)))) {
            s_q_push_head(f, w);
            log_err("out of memory for a data request");
            return;
        }
        r->no = ++f->next_req;
        r->peer = p;
        r->wants[r->n++] = w;
        w->req = r;
        for (x = f->qhead; x && r->n < PROTO_MAX_DATA_FRAMES && scan < BATCH_SCAN_MAX;
             x = xn, scan++) {
            xn = x->qnext;
            if (bytes + x->nbytes > FETCH_BATCH_BYTES || strcmp(x->holders[x->next], addr))
                continue;
            s_q_remove(f, x);
            r->wants[r->n++] = x;
            x->req = r;
            bytes += x->nbytes;
        }
        r->deadline = ev_now(f->loop) + f->timeout + (double)bytes / SLOW_BYTES_PER_SEC;
        r->prev = p->rtail;
        if (p->rtail)
            p->rtail->next = r;
        else
            p->rhead = r;
        p->rtail = r;
        p->nreq++;
        f->ninflight++;
        f->st.nrequests++;
        if (s_req_send(r) < 0)
            s_peer_down(f, p, "sending a request failed");
    }
    s_reap(f);
}

void fetch_tick(fetch_t *f, double now)
{
    peer_t *p, *next;

    for (p = f->phead; p; p = next) {
        next = p->next;
        if (!p->dead && p->rhead && p->rhead->deadline < now) {
            /* Requests on one connection are answered in order: the oldest
             * being late means the peer is stuck or the link is. */
            s_peer_down(f, p, "request timed out");
        }
    }
    /* Forget dead marks that expired (their requests are all gone). */
    for (p = f->phead; p; p = next) {
        next = p->next;
        if (p->dead && !p->reap && p->nreq == 0 && now >= p->dead_until)
            s_peer_unlink_free(f, p);
    }
    s_reap(f);
}

/* ---- receiving ---------------------------------------------------------- */

static req_t *s_req_find(peer_t *p, uint64_t no)
{
    req_t *r;

    for (r = p->rhead; r; r = r->next)
        if (r->no == no)
            return r;
    return NULL;
}

/* DATA {"req", "items": [[id, found, nbytes]...]} + one frame per found
 * item.  Anything that does not match the request exactly fails it over. */
static void s_on_data(fetch_t *f, peer_t *p, proto_msg_t *m)
{
    const msgpack_object *o, *items, *it;
    uint64_t no;
    size_t n, k, in, nfound = 0, frame = 0;
    req_t *r;
    uint32_t i;

    o = mp_map_get(&m->body, "req");
    if (!o || mp_u64(o, &no) < 0) {
        log_warn("data endpoint %s: DATA without a request number", p->addr);
        if (p->rhead)
            s_req_fail(f, p->rhead);
        return;
    }
    if (!(r = s_req_find(p, no))) {
        log_debug("data endpoint %s: DATA for unknown request %llu ignored", p->addr,
                  (unsigned long long)no);
        return;
    }
    o = mp_map_get(&m->body, "items");
    if (!o || mp_array(o, &items, &n) < 0 || n != r->n)
        goto bad;
    for (k = 0; k < n; k++) {
        uint64_t id, nb;
        int found;
        if (mp_array(&items[k], &it, &in) < 0 || in != 3 || mp_u64(&it[0], &id) < 0 ||
            id != r->wants[k]->id || mp_bool(&it[1], &found) < 0 || mp_u64(&it[2], &nb) < 0)
            goto bad;
        if (found) {
            if (nfound >= m->nframes || proto_frame_size(m, nfound) != nb || nb == 0)
                goto bad;
            nfound++;
        }
    }
    if (nfound != m->nframes)
        goto bad;

    s_req_unlink(f, r);
    for (i = 0; i < r->n; i++) {
        want_t *w = r->wants[i];
        int found = 0;
        w->req = NULL;
        mp_bool(&items[i].via.array.ptr[1], &found);
        if (found) {
            store_buf_t *b = store_buf_from_zmsg(&m->frames[frame++]);
            if (b) {
                s_want_succeed(f, w, b);
                continue;
            }
            log_err("out of memory taking result %llu", (unsigned long long)w->id);
        } else {
            log_debug("data endpoint %s does not have %llu", p->addr,
                      (unsigned long long)w->id);
        }
        s_want_advance(f, w);
    }
    free(r);
    return;
bad:
    log_warn("data endpoint %s: malformed DATA for request %llu: trying other holders",
             p->addr, (unsigned long long)no);
    s_req_fail(f, r);
}

static void s_on_peer(struct ev_loop *loop, zwatch_t *zw, int revents, void *arg)
{
    peer_t *p = arg;
    fetch_t *f = p->f;
    proto_msg_t m;
    int i;

    (void)loop;
    (void)zw;
    if (revents & EV_ERROR) {
        s_peer_down(f, p, "socket error");
        return;
    }
    for (i = 0; i < RECV_BURST && !p->dead; i++) {
        if (proto_recv(p->sock, 0, &m, ZMQ_DONTWAIT) < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            if (errno == EBADMSG || errno == EPROTONOSUPPORT) {
                log_warn("data endpoint %s sent a malformed message", p->addr);
                proto_msg_close(&m);
                /* Replies come in order: it was the answer to the oldest. */
                if (p->rhead)
                    s_req_fail(f, p->rhead);
                continue;
            }
            s_peer_down(f, p, zmq_strerror(errno));
            return;
        }
        if (m.hdr.type == MSG_DATA) {
            s_on_data(f, p, &m);
        } else if (m.hdr.type == MSG_ERROR) {
            const msgpack_object *t = mp_map_get(&m.body, "message");
            const char *text = "";
            size_t tl = 0;
            if (!t || mp_str(t, &text, &tl) < 0)
                tl = 0;
            log_warn("data endpoint %s answered ERROR: %.*s", p->addr,
                     (int)(tl > 300 ? 300 : tl), text);
            if (p->rhead)
                s_req_fail(f, p->rhead);
        } else {
            log_warn("data endpoint %s sent unexpected %s", p->addr,
                     proto_type_name(m.hdr.type));
        }
        proto_msg_close(&m);
    }
}

static void s_on_monitor(struct ev_loop *loop, zwatch_t *zw, int revents, void *arg)
{
    peer_t *p = arg;
    fetch_t *f = p->f;

    (void)loop;
    (void)zw;
    if (revents & EV_ERROR) {
        s_peer_down(f, p, "monitor failed");
        return;
    }
    while (!p->dead) {
        zmq_msg_t ev, ep;
        uint16_t event = 0;
        int more;

        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, p->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&ev);
            return;
        }
        if (zmq_msg_size(&ev) >= 2)
            memcpy(&event, zmq_msg_data(&ev), 2);
        more = zmq_msg_more(&ev);
        zmq_msg_close(&ev);
        while (more) {
            zmq_msg_init(&ep);
            if (zmq_msg_recv(&ep, p->mon, 0) < 0) {
                zmq_msg_close(&ep);
                break;
            }
            more = zmq_msg_more(&ep);
            zmq_msg_close(&ep);
        }
        if (event == ZMQ_EVENT_CONNECT_RETRIED)
            s_peer_down(f, p, "connection refused or failed");
        else if (event == ZMQ_EVENT_DISCONNECTED)
            s_peer_down(f, p, "connection lost");
    }
}

/* ---- lifecycle ---------------------------------------------------------- */

static void s_on_kick(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)revents;
    ev_idle_stop(loop, w);
}

fetch_t *fetch_create(struct ev_loop *loop, void *zctx, int64_t max_frame, int limit,
                      double timeout, fetch_done_fn done, void *arg)
{
    fetch_t *f;

    if (!loop || !zctx || !done || limit < 1 || limit > 1024 || !(timeout > 0)) {
        errno = EINVAL;
        return NULL;
    }
    if (!(f = calloc(1, sizeof(*f))))
        return NULL;
    f->loop = loop;
    f->zctx = zctx;
    f->max_frame = max_frame;
    f->limit = limit;
    f->timeout = timeout;
    f->done = done;
    f->arg = arg;
    ev_idle_init(&f->kick, s_on_kick);
    f->wants = u64map_create(256);
    f->peers = u64map_create(64);
    if (!f->wants || !f->peers) {
        fetch_destroy(f);
        errno = ENOMEM;
        return NULL;
    }
    return f;
}

void fetch_destroy(fetch_t *f)
{
    size_t pos = 0;
    uint64_t id;
    void *v;

    if (!f)
        return;
    ev_idle_stop(f->loop, &f->kick);
    while (f->phead) {
        peer_t *p = f->phead;
        req_t *r, *rn;
        for (r = p->rhead; r; r = rn) {
            rn = r->next;
            free(r);
        }
        p->rhead = p->rtail = NULL;
        p->nreq = 0;
        s_peer_unlink_free(f, p);
    }
    if (f->wants)
        while (u64map_next(f->wants, &pos, &id, &v))
            s_want_free(v);
    u64map_destroy(f->wants);
    u64map_destroy(f->peers);
    free(f);
}

void fetch_stats(const fetch_t *f, fetch_stats_t *out)
{
    *out = f->st;
    out->wanted = u64map_size(f->wants);
    out->inflight = f->ninflight;
    out->peers = f->nlive;
}
