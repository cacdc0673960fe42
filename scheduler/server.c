/*
 * server.c - the scheduler's network side (see server.h).
 *
 * One ROUTER socket serves workers and clients.  Each incoming message goes
 * through one dispatch table (s_dispatch): header checked by proto_recv,
 * then known type, registered sender, allowed role, and only then the
 * handler, which validates the body with the mp_* getters.  Whatever is
 * wrong is answered with ERROR and counted; nothing a peer sends can stop
 * the scheduler serving the others.
 *
 * Output to a peer accumulates in its batches (COMPUTE and WCANCEL for a
 * worker, RESULT for a client); peers with something queued are on the
 * dirty list, which an ev_prepare watcher flushes right before the loop
 * sleeps (after running placement once more), or a batch goes out as soon
 * as it passes SERVER_BATCH_FLUSH.  That prepare watcher has the highest
 * priority so that it runs before the zwatch prepare watchers: sending on
 * the ROUTER can consume the edge of ZMQ_FD, and zwatch must ask
 * ZMQ_EVENTS after our last send, not before.
 *
 * Peer lifetime: a peer is freed only at points where no handler holds a
 * pointer to it.  A failed send (EHOSTUNREACH) only marks the peer dead;
 * s_reap removes dead peers afterwards.  A peer whose TCP connection closes
 * is removed when the socket monitor reports DISCONNECTED for the fd its
 * HELLO came in on.  The monitor is drained after each ROUTER message is
 * received and before it is dispatched: every monitor event that happened
 * before the message was queued is then visible, so a HELLO from a new
 * connection that reuses a closed connection's fd number is always
 * preceded by the removal of the old peer, never confused with it.
 */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <inttypes.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "log.h"
#include "mp.h"
#include "proto.h"
#include "state.h"
#include "u64map.h"
#include "util.h"
#include "zwatch.h"

#define NAME_MAX_LEN 255
/* Messages handled per ROUTER callback before giving timers a turn. */
#define RECV_BURST 512
/* Warning lines per peer (and for unregistered senders) per second. */
#define WARN_PER_SEC 3

enum { ROLE_UNREG = 1, ROLE_CLIENT = 2, ROLE_WORKER = 4 };

typedef struct peer peer_t;

/* Work stealing: STEAL requests sent per timer tick at most. */
#define SERVER_STEAL_PER_TICK 64

static int s_parse_resmap(const msgpack_object *o, sched_resource_t *out, size_t *n,
                          const char **why);

struct peer {
    uint8_t ident[PROTO_MAX_IDENT];
    size_t ident_len;
    uint64_t hkey;
    peer_t *hnext;              /* same-hash chain in by_ident */
    peer_t *prev, *next;        /* all peers */
    peer_t *dprev, *dnext;      /* dirty list */
    int dirty;
    int dead;                   /* unreachable: reap soon */
    peer_t *deadnext;
    const char *dead_why;
    int role;
    uint64_t id;
    char name[NAME_MAX_LEN + 1];
    char host[NAME_MAX_LEN + 1];
    int64_t pid;
    unsigned nthreads;
    int fd;                     /* connection fd (ZMQ_SRCFD of HELLO), or -1 */
    double last_seen;
    sched_worker_t *w;
    sched_client_t *c;
    proto_batch_t out;          /* COMPUTE (worker) or RESULT (client) */
    proto_batch_t cancel;       /* WCANCEL (worker) */
    proto_batch_t free;         /* FREE (worker) */
    proto_batch_t steal;        /* STEAL (worker) */
    double warn_t0;
    unsigned warn_n;
};

/* An uploaded task library.  Sent zero-copy to every worker: each queued
 * LIBRARY message holds a reference, dropped by zmq's I/O thread when the
 * frame has gone out, hence the atomic count. */
typedef struct lib {
    atomic_int refs;
    uint64_t hash;
    size_t len;
    uint8_t *data;
    char name[NAME_MAX_LEN + 1];
} lib_t;

struct server {
    struct ev_loop *loop;
    void *zctx;
    void *router;
    void *mon;
    zwatch_t *zr, *zm;
    ev_prepare flush;
    ev_timer tick;
    sched_t *sched;
    u64map_t *by_ident;         /* hash(ident) -> peer chain */
    u64map_t *by_fd;            /* fd + 1 -> peer */
    u64map_t *by_wid;           /* worker id -> peer */
    peer_t *peers;
    size_t nworkers, nclients;
    uint64_t names_given;
    peer_t *dirty;
    peer_t *dead;
    proto_msg_t msg;
    uint64_t *depbuf;
    size_t depcap;
    /* A SUBMIT item's options, decoded (valid until the next item). */
    sched_resource_t resbuf[SCHED_MAX_RESOURCES];
    sched_name_t onlybuf[SCHED_MAX_RESTRICT];
    lib_t *libs[SERVER_MAX_LIBS];
    size_t nlibs;
    double ttl;
    int64_t max_msg;
    int stopped;
    uint64_t nbad;
    double warn_t0;             /* limiter for unregistered senders */
    unsigned warn_n;
    char address[SHOAL_ADDR_MAX];
    char mon_ep[64];
};

/* ---- dispatch table --------------------------------------------------------------- */

typedef void (*handler_fn)(server_t *srv, peer_t *p, proto_msg_t *m);

typedef struct dispatch {
    handler_fn fn;
    unsigned roles;      /* ROLE_* allowed to send it */
    const char *name;
    uint64_t calls;
} dispatch_t;

static void h_hello(server_t *srv, peer_t *p, proto_msg_t *m);
static void h_error(server_t *srv, peer_t *p, proto_msg_t *m);
static void h_heartbeat(server_t *srv, peer_t *p, proto_msg_t *m);
static void h_bye(server_t *srv, peer_t *p, proto_msg_t *m);
static void h_submit(server_t *srv, peer_t *p, proto_msg_t *m);
static void h_release(server_t *srv, peer_t *p, proto_msg_t *m);
static void h_cancel(server_t *srv, peer_t *p, proto_msg_t *m);
static void h_upload_lib(server_t *srv, peer_t *p, proto_msg_t *m);
static void h_status(server_t *srv, peer_t *p, proto_msg_t *m);
static void h_task_done(server_t *srv, peer_t *p, proto_msg_t *m);
static void h_scatter(server_t *srv, peer_t *p, proto_msg_t *m);
static void h_refetch(server_t *srv, peer_t *p, proto_msg_t *m);
static void h_pause(server_t *srv, peer_t *p, proto_msg_t *m);
static void h_steal_reply(server_t *srv, peer_t *p, proto_msg_t *m);
static void h_have(server_t *srv, peer_t *p, proto_msg_t *m);

#define ANY_PEER (ROLE_CLIENT | ROLE_WORKER)

/* The one table: every type the protocol defines has an entry; those only
 * the scheduler sends have no handler and no role may send them. */
static dispatch_t s_dispatch[MSG_TYPE_MAX] = {
    [MSG_HELLO] = {h_hello, ROLE_UNREG | ANY_PEER, "HELLO", 0},
    [MSG_WELCOME] = {NULL, 0, "WELCOME", 0},
    [MSG_ERROR] = {h_error, ANY_PEER, "ERROR", 0},
    [MSG_HEARTBEAT] = {h_heartbeat, ANY_PEER, "HEARTBEAT", 0},
    [MSG_BYE] = {h_bye, ANY_PEER, "BYE", 0},
    [MSG_SUBMIT] = {h_submit, ROLE_CLIENT, "SUBMIT", 0},
    [MSG_RESULT] = {NULL, 0, "RESULT", 0},
    [MSG_RELEASE] = {h_release, ROLE_CLIENT, "RELEASE", 0},
    [MSG_CANCEL] = {h_cancel, ROLE_CLIENT, "CANCEL", 0},
    [MSG_UPLOAD_LIB] = {h_upload_lib, ROLE_CLIENT, "UPLOAD_LIB", 0},
    [MSG_LIB_ACK] = {NULL, 0, "LIB_ACK", 0},
    [MSG_STATUS] = {h_status, ROLE_CLIENT, "STATUS", 0},
    [MSG_STATUS_REPLY] = {NULL, 0, "STATUS_REPLY", 0},
    [MSG_COMPUTE] = {NULL, 0, "COMPUTE", 0},
    [MSG_TASK_DONE] = {h_task_done, ROLE_WORKER, "TASK_DONE", 0},
    [MSG_WCANCEL] = {NULL, 0, "WCANCEL", 0},
    [MSG_LIBRARY] = {NULL, 0, "LIBRARY", 0},
    [MSG_SCATTER] = {h_scatter, ROLE_CLIENT, "SCATTER", 0},
    [MSG_REFETCH] = {h_refetch, ROLE_CLIENT, "REFETCH", 0},
    [MSG_FREE] = {NULL, 0, "FREE", 0},
    [MSG_STEAL] = {NULL, 0, "STEAL", 0},
    [MSG_STEAL_REPLY] = {h_steal_reply, ROLE_WORKER, "STEAL_REPLY", 0},
    [MSG_PAUSE] = {h_pause, ROLE_WORKER, "PAUSE", 0},
    [MSG_HAVE] = {h_have, ROLE_WORKER, "HAVE", 0},
};

static const char *s_role_name(int role)
{
    return role == ROLE_WORKER ? "worker" : role == ROLE_CLIENT ? "client" : "unregistered peer";
}

/* ---- small helpers ------------------------------------------------------------------- */

static int s_warn_ok(double *t0, unsigned *n)
{
    double now = util_now();
    if (now - *t0 >= 1.0) {
        *t0 = now;
        *n = 0;
    }
    return ++*n <= WARN_PER_SEC;
}

/* Copy a peer-supplied string for logs and status: control characters
 * become '?'. */
static void s_clean_copy(char *dst, size_t cap, const char *src, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    dst[n] = '\0';
}

/*
 * Prefetch distances for batch handlers (see sched_prefetch): the id map's
 * line PF_MAP items ahead, the record PF_TASK items ahead, once its line has
 * had time to arrive.
 */
#define PF_MAP 16
#define PF_TASK 8

/* The id of batch item it if it is an integer (the first field of an array
 * item, or the item itself), else 0.  Only a hint for prefetching: the item
 * is validated when its turn comes. */
static inline uint64_t s_hint_id(const msgpack_object *it)
{
    if (it->type == MSGPACK_OBJECT_ARRAY && it->via.array.size > 0)
        it = it->via.array.ptr;
    return it->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? it->via.u64 : 0;
}

/* Before handling item i of n: prefetch for the items further on. */
static inline void s_prefetch_items(server_t *srv, const msgpack_object *items, size_t i,
                                    size_t n, int record)
{
    if (i + PF_MAP < n)
        sched_prefetch(srv->sched, s_hint_id(&items[i + PF_MAP]));
    if (record && i + PF_TASK < n)
        sched_prefetch_task(srv->sched, s_hint_id(&items[i + PF_TASK]));
}

static uint64_t s_ident_key(const uint8_t *ident, size_t len)
{
    uint64_t h = util_fnv1a64(ident, len);
    return h ? h : 1;
}

static peer_t *s_peer_find(server_t *srv, const uint8_t *ident, size_t len)
{
    if (len == 0)
        return NULL;
    for (peer_t *p = u64map_get(srv->by_ident, s_ident_key(ident, len)); p; p = p->hnext)
        if (p->ident_len == len && memcmp(p->ident, ident, len) == 0)
            return p;
    return NULL;
}

static void s_mark_dead(server_t *srv, peer_t *p, const char *why)
{
    if (p->dead)
        return;
    p->dead = 1;
    p->dead_why = why;
    p->deadnext = srv->dead;
    srv->dead = p;
    /* No more tasks for it until it is reaped (maybe from inside
     * sched_place: pausing is safe there). */
    if (p->role == ROLE_WORKER)
        sched_worker_pause(srv->sched, p->w);
}

/* A send to p failed: an unreachable peer is gone, anything else is ours. */
static void s_send_failed(server_t *srv, peer_t *p, const char *what)
{
    if (errno == EHOSTUNREACH) {
        s_mark_dead(srv, p, "connection lost");
        return;
    }
    log_err("sending %s to %s %s failed: %s", what, s_role_name(p->role), p->name,
            zmq_strerror(errno));
}

static void s_send_to(server_t *srv, peer_t *p, int type, const void *body, size_t len)
{
    if (p->dead)
        return;
    if (proto_send(srv->router, p->ident, p->ident_len, type, body, len, NULL, 0) < 0)
        s_send_failed(srv, p, proto_type_name(type));
}

static void s_error_to(server_t *srv, const proto_msg_t *m, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Answer the sender of m with ERROR.  A sender we cannot reach is not worth
 * more than that: if it is registered it is marked dead. */
static void s_error_to(server_t *srv, const proto_msg_t *m, int code, const char *fmt, ...)
{
    if (m->ident_len == 0)
        return;
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (proto_send_error(srv->router, m->ident, m->ident_len, code, "%s", text) < 0 &&
        errno == EHOSTUNREACH) {
        peer_t *p = s_peer_find(srv, m->ident, m->ident_len);
        if (p)
            s_mark_dead(srv, p, "connection lost");
    }
}

static void s_bad(server_t *srv, peer_t *p, const proto_msg_t *m, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A malformed message: ERROR code 1 to the sender, a (rate-limited) log
 * line, a count. */
static void s_bad(server_t *srv, peer_t *p, const proto_msg_t *m, const char *fmt, ...)
{
    char text[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    srv->nbad++;
    /* A frame-level error leaves no usable type. */
    const char *what = m->hdr.type && strcmp(proto_type_name(m->hdr.type), "UNKNOWN")
                           ? proto_type_name(m->hdr.type) : "message";
    int ok = p ? s_warn_ok(&p->warn_t0, &p->warn_n) : s_warn_ok(&srv->warn_t0, &srv->warn_n);
    if (ok) {
        if (p)
            log_warn("bad %s from %s %s: %s", what, s_role_name(p->role), p->name, text);
        else
            log_warn("bad %s from an unregistered peer: %s", what, text);
    }
    s_error_to(srv, m, PERR_BAD_MESSAGE, "bad %s: %s", what, text);
}

/* ---- output batches ----------------------------------------------------------------- */

static void s_dirty(server_t *srv, peer_t *p)
{
    if (p->dirty)
        return;
    p->dirty = 1;
    p->dprev = NULL;
    p->dnext = srv->dirty;
    if (srv->dirty)
        srv->dirty->dprev = p;
    srv->dirty = p;
}

static void s_undirty(server_t *srv, peer_t *p)
{
    if (!p->dirty)
        return;
    if (p->dprev)
        p->dprev->dnext = p->dnext;
    else
        srv->dirty = p->dnext;
    if (p->dnext)
        p->dnext->dprev = p->dprev;
    p->dprev = p->dnext = NULL;
    p->dirty = 0;
}

static void s_flush_peer(server_t *srv, peer_t *p)
{
    s_undirty(srv, p);
    if (p->dead) {
        /* Nobody to send to; drop what was queued. */
        proto_batch_destroy(&p->out);
        proto_batch_destroy(&p->cancel);
        proto_batch_destroy(&p->free);
        proto_batch_destroy(&p->steal);
        return;
    }
    /* COMPUTE before WCANCEL: a task assigned and cancelled in the same
     * iteration must reach the worker in that order. */
    if (proto_batch_count(&p->out) &&
        proto_batch_send(&p->out, srv->router, p->ident, p->ident_len) < 0)
        s_send_failed(srv, p, proto_type_name(p->out.type));
    if (!p->dead && proto_batch_count(&p->cancel) &&
        proto_batch_send(&p->cancel, srv->router, p->ident, p->ident_len) < 0)
        s_send_failed(srv, p, "WCANCEL");
    if (!p->dead && proto_batch_count(&p->free) &&
        proto_batch_send(&p->free, srv->router, p->ident, p->ident_len) < 0)
        s_send_failed(srv, p, "FREE");
    if (!p->dead && proto_batch_count(&p->steal) &&
        proto_batch_send(&p->steal, srv->router, p->ident, p->ident_len) < 0)
        s_send_failed(srv, p, "STEAL");
}

static void s_batch_added(server_t *srv, peer_t *p, proto_batch_t *b)
{
    if (proto_batch_bytes(b) >= SERVER_BATCH_FLUSH)
        s_flush_peer(srv, p);
    else
        s_dirty(srv, p);
}

/* ---- packing items ------------------------------------------------------------------- */

/*
 * COMPUTE and RESULT items are packed by hand, straight into the batch's
 * buffer: the size of an item is known before it is written, so the buffer
 * grows once per item (at most), and each field is a few stores instead of
 * a msgpack_sbuffer_write call per header and per body.  The encodings are
 * the ones msgpack-c's packer chooses (the smallest), so the bytes on the
 * wire are the same as before.
 */

/* Room for n more bytes at the end of the batch; where they start.  Out of
 * memory aborts, as in proto_batch_add: half an item cannot be taken back,
 * and a batch without it would be corrupt. */
static uint8_t *s_batch_room(proto_batch_t *b, size_t n)
{
    msgpack_sbuffer *sb = &b->sbuf;
    if (sb->alloc - sb->size < n) {
        size_t cap = sb->alloc ? sb->alloc : MSGPACK_SBUFFER_INIT_SIZE;
        while (cap - sb->size < n) {
            if (cap > ((size_t)-1) / 2) {
                cap = 0;
                break;
            }
            cap *= 2;
        }
        char *d = cap ? realloc(sb->data, cap) : NULL;
        if (!d) {
            log_err("out of memory packing a %s batch", proto_type_name(b->type));
            abort();
        }
        sb->data = d;
        sb->alloc = cap;
    }
    return (uint8_t *)sb->data + sb->size;
}

static inline uint8_t *s_put_be(uint8_t *o, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--)
        *o++ = (uint8_t)(v >> (8 * i));
    return o;
}

enum { U64_MAX_LEN = 9, HDR_MAX_LEN = 5 };

static inline uint8_t *s_put_u64(uint8_t *o, uint64_t v)
{
    if (v < 128) {
        *o++ = (uint8_t)v;
        return o;
    }
    if (v < 256) {
        *o++ = 0xcc;
        return s_put_be(o, v, 1);
    }
    if (v < 65536) {
        *o++ = 0xcd;
        return s_put_be(o, v, 2);
    }
    if (v <= UINT32_MAX) {
        *o++ = 0xce;
        return s_put_be(o, v, 4);
    }
    *o++ = 0xcf;
    return s_put_be(o, v, 8);
}

/* Header of a str (0xa0/0xd9/0xda/0xdb) or bin (-/0xc4/0xc5/0xc6) of n
 * bytes; n < 2^32 (every payload here came out of one such object or is a
 * short text). */
static inline uint8_t *s_put_str_hdr(uint8_t *o, size_t n)
{
    if (n < 32) {
        *o++ = (uint8_t)(0xa0 | n);
        return o;
    }
    if (n < 256) {
        *o++ = 0xd9;
        return s_put_be(o, n, 1);
    }
    if (n < 65536) {
        *o++ = 0xda;
        return s_put_be(o, n, 2);
    }
    *o++ = 0xdb;
    return s_put_be(o, n, 4);
}

static inline uint8_t *s_put_bin_hdr(uint8_t *o, size_t n)
{
    if (n < 256) {
        *o++ = 0xc4;
        return s_put_be(o, n, 1);
    }
    if (n < 65536) {
        *o++ = 0xc5;
        return s_put_be(o, n, 2);
    }
    *o++ = 0xc6;
    return s_put_be(o, n, 4);
}

static inline uint8_t *s_put_array_hdr(uint8_t *o, size_t n)
{
    if (n < 16) {
        *o++ = (uint8_t)(0x90 | n);
        return o;
    }
    if (n < 65536) {
        *o++ = 0xdc;
        return s_put_be(o, n, 2);
    }
    *o++ = 0xdd;
    return s_put_be(o, n, 4);
}

static inline uint8_t *s_put_bytes(uint8_t *o, const void *p, size_t n)
{
    if (n)
        memcpy(o, p, n);
    return o + n;
}

/* ---- state callbacks ------------------------------------------------------------------ */

/* Data endpoint addresses: tcp://host:port within 255 bytes. */
#define DATA_ADDR_MAX 255

/*
 * COMPUTE item: [id, func, args: bin, deps], each dep
 * [dep_id, result: bin] when the scheduler holds the result, or
 * [dep_id, nil, nbytes, [holder data addresses...]] when workers keep it.
 */
static void cb_compute(void *ctx, void *wuser, const sched_task_t *t)
{
    server_t *srv = ctx;
    peer_t *p = wuser;
    if (p->dead)
        return; /* about to be reaped: the task is put back then */
    size_t flen, alen, nd = sched_task_ndeps(t);
    const void *func = sched_task_func_packed(t, &flen);
    const void *args;
    sched_task_args(t, &args, &alen);
    size_t need = 1 + U64_MAX_LEN + flen + HDR_MAX_LEN + alen + HDR_MAX_LEN;
    for (size_t i = 0; i < nd; i++) {
        uint64_t did;
        const void *res;
        size_t rlen, nh;
        sched_task_dep(t, i, &did, &res, &rlen);
        sched_task_holders(srv->sched, sched_task_dep_task(t, i), &nh, NULL);
        need += 1 + U64_MAX_LEN + HDR_MAX_LEN + rlen + U64_MAX_LEN + HDR_MAX_LEN +
                nh * (HDR_MAX_LEN + DATA_ADDR_MAX);
    }
    proto_batch_add(&p->out);
    uint8_t *o = s_batch_room(&p->out, need), *start = o;
    *o++ = 0x94;
    o = s_put_u64(o, sched_task_id(t));
    o = s_put_bytes(o, func, flen);
    o = s_put_bin_hdr(o, alen);
    o = s_put_bytes(o, args, alen);
    o = s_put_array_hdr(o, nd);
    for (size_t i = 0; i < nd; i++) {
        uint64_t did;
        const void *res;
        size_t rlen;
        sched_task_dep(t, i, &did, &res, &rlen);
        size_t nh;
        uint64_t nbytes;
        sched_worker_t *const *hs =
            sched_task_holders(srv->sched, sched_task_dep_task(t, i), &nh, &nbytes);
        if (!hs) {
            /* Held here: the short form, as before the data plane. */
            *o++ = 0x92;
            o = s_put_u64(o, did);
            o = s_put_bin_hdr(o, rlen);
            o = s_put_bytes(o, res, rlen);
            continue;
        }
        *o++ = 0x94;
        o = s_put_u64(o, did);
        *o++ = 0xc0;
        o = s_put_u64(o, nbytes);
        o = s_put_array_hdr(o, nh);
        for (size_t j = 0; j < nh; j++) {
            const char *a = sched_worker_data(hs[j]);
            size_t al = strlen(a);
            o = s_put_str_hdr(o, al);
            o = s_put_bytes(o, a, al);
        }
    }
    p->out.sbuf.size += (size_t)(o - start);
    s_batch_added(srv, p, &p->out);
}

/* RESULT item: [id, status, payload: bin (ok) or str, worker: str or nil]. */
static void s_pack_result(server_t *srv, peer_t *p, uint64_t id, int status,
                          const void *payload, size_t len, const char *worker)
{
    if (p->dead)
        return;
    size_t wlen = worker ? strlen(worker) : 0;
    proto_batch_add(&p->out);
    uint8_t *o = s_batch_room(&p->out, 1 + U64_MAX_LEN + 1 + HDR_MAX_LEN + len +
                                           HDR_MAX_LEN + wlen);
    uint8_t *start = o;
    *o++ = 0x94;
    o = s_put_u64(o, id);
    *o++ = (uint8_t)status; /* TASK_OK, TASK_ERR or TASK_CANCELLED: a fixint */
    o = status == TASK_OK ? s_put_bin_hdr(o, len) : s_put_str_hdr(o, len);
    o = s_put_bytes(o, payload, len);
    if (worker) {
        o = s_put_str_hdr(o, wlen);
        o = s_put_bytes(o, worker, wlen);
    } else {
        *o++ = 0xc0;
    }
    p->out.sbuf.size += (size_t)(o - start);
    s_batch_added(srv, p, &p->out);
}

static void cb_result(void *ctx, void *cuser, uint64_t id, int status, const void *payload,
                      size_t len, const char *worker)
{
    s_pack_result(ctx, cuser, id, status, payload, len, worker);
}

/* RESULT item of a result kept on workers:
 * [id, 0, nil, worker: str|nil, nbytes, [holder data addresses...]]. */
static void cb_result_kept(void *ctx, void *cuser, const sched_task_t *t, const char *worker)
{
    server_t *srv = ctx;
    peer_t *p = cuser;
    if (p->dead)
        return;
    size_t nh;
    uint64_t nbytes;
    sched_worker_t *const *hs = sched_task_holders(srv->sched, t, &nh, &nbytes);
    msgpack_packer *pk = proto_batch_add(&p->out);
    msgpack_pack_array(pk, 6);
    msgpack_pack_uint64(pk, sched_task_id(t));
    msgpack_pack_int(pk, TASK_OK);
    msgpack_pack_nil(pk);
    if (worker)
        mp_pack_cstr(pk, worker);
    else
        msgpack_pack_nil(pk);
    msgpack_pack_uint64(pk, nbytes);
    msgpack_pack_array(pk, (uint32_t)nh);
    for (size_t j = 0; j < nh; j++)
        mp_pack_cstr(pk, sched_worker_data(hs[j]));
    s_batch_added(srv, p, &p->out);
}

static void cb_steal(void *ctx, void *wuser, uint64_t id)
{
    server_t *srv = ctx;
    peer_t *p = wuser;
    if (p->dead)
        return;
    msgpack_pack_uint64(proto_batch_add(&p->steal), id);
    s_batch_added(srv, p, &p->steal);
}

static void cb_wfree(void *ctx, void *wuser, uint64_t id)
{
    server_t *srv = ctx;
    peer_t *p = wuser;
    if (p->dead)
        return;
    msgpack_pack_uint64(proto_batch_add(&p->free), id);
    s_batch_added(srv, p, &p->free);
}

static void cb_wcancel(void *ctx, void *wuser, uint64_t id)
{
    server_t *srv = ctx;
    peer_t *p = wuser;
    if (p->dead)
        return;
    msgpack_pack_uint64(proto_batch_add(&p->cancel), id);
    s_batch_added(srv, p, &p->cancel);
}

/* ---- peers -------------------------------------------------------------------------- */

/*
 * Remove a peer now: its worker's tasks go back to the queue (counted
 * against them if `crashed`), its client's tasks are released.  Only call
 * where no caller up the stack still uses p.
 */
static void s_peer_remove(server_t *srv, peer_t *p, const char *why, int crashed)
{
    /* Off the dead list if it is on it (the list is short: peers found
     * unreachable since the last reap). */
    for (peer_t **pp = &srv->dead; *pp; pp = &(*pp)->deadnext) {
        if (*pp == p) {
            *pp = p->deadnext;
            break;
        }
    }
    p->dead = 1; /* the state callbacks below must not queue output for it */
    if (p->role == ROLE_WORKER) {
        log_info("worker %s left: %s (%u tasks to place again)", p->name, why,
                 sched_worker_running(p->w));
        sched_worker_remove(srv->sched, p->w, crashed);
        srv->nworkers--;
    } else {
        log_info("client %s left: %s", p->name, why);
        sched_client_remove(srv->sched, p->c);
        srv->nclients--;
    }
    /* Unlink from every index. */
    peer_t *head = u64map_get(srv->by_ident, p->hkey);
    if (head == p) {
        if (p->hnext)
            u64map_put(srv->by_ident, p->hkey, p->hnext);
        else
            u64map_del(srv->by_ident, p->hkey);
    } else {
        for (peer_t *q = head; q; q = q->hnext) {
            if (q->hnext == p) {
                q->hnext = p->hnext;
                break;
            }
        }
    }
    if (p->fd >= 0 && u64map_get(srv->by_fd, (uint64_t)p->fd + 1) == p)
        u64map_del(srv->by_fd, (uint64_t)p->fd + 1);
    if (p->role == ROLE_WORKER && p->id && u64map_get(srv->by_wid, p->id) == p)
        u64map_del(srv->by_wid, p->id);
    if (p->prev)
        p->prev->next = p->next;
    else
        srv->peers = p->next;
    if (p->next)
        p->next->prev = p->prev;
    s_undirty(srv, p);
    proto_batch_destroy(&p->out);
    proto_batch_destroy(&p->cancel);
    proto_batch_destroy(&p->free);
    proto_batch_destroy(&p->steal);
    free(p);
}

/* Remove the peers found unreachable. */
static void s_reap(server_t *srv)
{
    while (srv->dead) {
        peer_t *p = srv->dead;
        s_peer_remove(srv, p, p->dead_why ? p->dead_why : "connection lost", 1);
    }
}

/* ---- the socket monitor ----------------------------------------------------------------- */

/* Read every pending monitor event; a DISCONNECTED fd removes the peer
 * that registered on it. */
static void s_monitor_drain(server_t *srv)
{
    for (;;) {
        zmq_msg_t ev;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, srv->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&ev);
            return;
        }
        uint16_t event = 0;
        uint32_t value = 0;
        int ok = zmq_msg_size(&ev) >= 6;
        if (ok) {
            const uint8_t *d = zmq_msg_data(&ev);
            memcpy(&event, d, 2);
            memcpy(&value, d + 2, 4);
        }
        int more = zmq_msg_more(&ev);
        zmq_msg_close(&ev);
        /* The second part (the endpoint) is already here: drain it. */
        while (more) {
            zmq_msg_t part;
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, srv->mon, 0) < 0) {
                zmq_msg_close(&part);
                break;
            }
            more = zmq_msg_more(&part);
            zmq_msg_close(&part);
        }
        if (!ok)
            continue;
        if (event == ZMQ_EVENT_DISCONNECTED) {
            peer_t *p = u64map_get(srv->by_fd, (uint64_t)value + 1);
            log_debug("monitor: fd %u disconnected%s%s", value, p ? ", peer " : "",
                      p ? p->name : "");
            if (p)
                s_peer_remove(srv, p, "connection closed", 1);
        } else if (event == ZMQ_EVENT_ACCEPTED) {
            log_debug("monitor: fd %u accepted", value);
        }
    }
}

static void s_monitor_cb(struct ev_loop *loop, zwatch_t *w, int revents, void *arg)
{
    (void)loop;
    (void)w;
    server_t *srv = arg;
    if (revents & EV_ERROR) {
        log_err("socket monitor failed; dead connections are now found by heartbeat only");
        return;
    }
    s_monitor_drain(srv);
    s_reap(srv);
}

/* ---- handlers ------------------------------------------------------------------------ */

static void s_send_libraries(server_t *srv, peer_t *p);

static void h_hello(server_t *srv, peer_t *p, proto_msg_t *m)
{
    const msgpack_object *b = &m->body;
    if (b->type != MSGPACK_OBJECT_MAP) {
        s_bad(srv, p, m, "body must be a map");
        return;
    }
    const msgpack_object *o = mp_map_get(b, "proto");
    int64_t pv = PROTO_VERSION;
    if (o && mp_i64(o, &pv) < 0) {
        s_bad(srv, p, m, "\"proto\" must be an integer");
        return;
    }
    if (pv != PROTO_VERSION) {
        s_error_to(srv, m, PERR_VERSION,
                   "protocol version %" PRId64 " not supported (this scheduler speaks %d)", pv,
                   PROTO_VERSION);
        return;
    }
    o = mp_map_get(b, "role");
    int role = o && mp_str_eq(o, "client") ? ROLE_CLIENT
             : o && mp_str_eq(o, "worker") ? ROLE_WORKER : 0;
    if (!role) {
        s_bad(srv, p, m, "\"role\" must be \"client\" or \"worker\"");
        return;
    }
    const char *name = NULL, *host = NULL;
    size_t nlen = 0, hlen = 0;
    o = mp_map_get(b, "name");
    if (o && !mp_is_nil(o) && (mp_str(o, &name, &nlen) < 0 || nlen > NAME_MAX_LEN)) {
        s_bad(srv, p, m, "\"name\" must be a string of at most %d bytes", NAME_MAX_LEN);
        return;
    }
    o = mp_map_get(b, "host");
    if (o && !mp_is_nil(o) && (mp_str(o, &host, &hlen) < 0 || hlen > NAME_MAX_LEN)) {
        s_bad(srv, p, m, "\"host\" must be a string of at most %d bytes", NAME_MAX_LEN);
        return;
    }
    int64_t pid = 0;
    o = mp_map_get(b, "pid");
    if (o && !mp_is_nil(o) && (mp_i64(o, &pid) < 0 || pid < 0 || pid > INT32_MAX)) {
        s_bad(srv, p, m, "\"pid\" must be a non-negative integer");
        return;
    }
    int64_t nthreads = 0;
    char data[DATA_ADDR_MAX + 1] = "";
    sched_resource_t res[SCHED_MAX_RESOURCES];
    size_t nres = 0;
    if (role == ROLE_WORKER) {
        o = mp_map_get(b, "nthreads");
        if (!o || mp_i64(o, &nthreads) < 0 || nthreads < 1 || nthreads > 65536) {
            s_bad(srv, p, m, "\"nthreads\" must be an integer in [1, 65536]");
            return;
        }
        o = mp_map_get(b, "data");
        if (o && !mp_is_nil(o) &&
            (mp_strcpy(o, data, sizeof data) < 0 || strncmp(data, "tcp://", 6) != 0 ||
             !strchr(data + 6, ':') || strpbrk(data, " \t\r\n"))) {
            s_bad(srv, p, m, "\"data\" must be a tcp://host:port address of at most %d bytes",
                  DATA_ADDR_MAX);
            return;
        }
        o = mp_map_get(b, "resources");
        const char *why = NULL;
        if (o && !mp_is_nil(o) && s_parse_resmap(o, res, &nres, &why) < 0) {
            s_bad(srv, p, m, "\"resources\": %s", why);
            return;
        }
        o = mp_map_get(b, "memory_limit");
        uint64_t ml;
        if (o && !mp_is_nil(o) && mp_u64(o, &ml) < 0) {
            s_bad(srv, p, m, "\"memory_limit\" must be a non-negative integer");
            return;
        }
    }

    /* A second HELLO from the same routing id re-registers it. */
    if (p)
        s_peer_remove(srv, p, "registered again", 0);
    /* A live peer on the same fd has lost its connection (its fd was closed
     * and reused) even if the monitor has not said so. */
    if (m->srcfd >= 0) {
        peer_t *old = u64map_get(srv->by_fd, (uint64_t)m->srcfd + 1);
        if (old)
            s_peer_remove(srv, old, "connection closed (fd reused)", 1);
    }

    peer_t *np = calloc(1, sizeof *np);
    if (!np) {
        s_error_to(srv, m, PERR_BAD_REQUEST, "scheduler out of memory");
        return;
    }
    memcpy(np->ident, m->ident, m->ident_len);
    np->ident_len = m->ident_len;
    np->hkey = s_ident_key(np->ident, np->ident_len);
    np->role = role;
    np->fd = m->srcfd;
    np->pid = pid;
    np->nthreads = (unsigned)nthreads;
    np->last_seen = util_now();
    srv->names_given++;
    if (name && nlen)
        s_clean_copy(np->name, sizeof np->name, name, nlen);
    else
        snprintf(np->name, sizeof np->name, "%s-%" PRIu64, s_role_name(role), srv->names_given);
    if (host && hlen)
        s_clean_copy(np->host, sizeof np->host, host, hlen);
    else
        snprintf(np->host, sizeof np->host, "?");
    proto_batch_init(&np->out, role == ROLE_WORKER ? MSG_COMPUTE : MSG_RESULT);
    proto_batch_init(&np->cancel, MSG_WCANCEL);
    proto_batch_init(&np->free, MSG_FREE);
    proto_batch_init(&np->steal, MSG_STEAL);

    if (role == ROLE_WORKER) {
        np->w = sched_worker_add(srv->sched, np->name, np->nthreads, np);
        if (np->w && (sched_worker_set_data(np->w, data) < 0 ||
                      sched_worker_set_resources(srv->sched, np->w, res, nres) < 0)) {
            sched_worker_remove(srv->sched, np->w, 0);
            np->w = NULL;
        }
        if (np->w)
            np->id = sched_worker_id(np->w);
    } else {
        np->c = sched_client_add(srv->sched, np);
        if (np->c)
            np->id = sched_client_id(np->c);
    }
    if (!np->w && !np->c) {
        s_error_to(srv, m, PERR_BAD_REQUEST, "cannot register: %s", strerror(errno));
        free(np);
        return;
    }
    peer_t *head = u64map_get(srv->by_ident, np->hkey);
    np->hnext = head;
    if (u64map_put(srv->by_ident, np->hkey, np) < 0 ||
        (np->fd >= 0 && u64map_put(srv->by_fd, (uint64_t)np->fd + 1, np) < 0) ||
        (np->w && u64map_put(srv->by_wid, np->id, np) < 0)) {
        if (np->fd >= 0 && u64map_get(srv->by_fd, (uint64_t)np->fd + 1) == np)
            u64map_del(srv->by_fd, (uint64_t)np->fd + 1);
        /* Out of memory in an index: undo. */
        if (u64map_get(srv->by_ident, np->hkey) == np) {
            if (head)
                u64map_put(srv->by_ident, np->hkey, head);
            else
                u64map_del(srv->by_ident, np->hkey);
        }
        if (np->w)
            sched_worker_remove(srv->sched, np->w, 0);
        if (np->c)
            sched_client_remove(srv->sched, np->c);
        free(np);
        s_error_to(srv, m, PERR_BAD_REQUEST, "scheduler out of memory");
        return;
    }
    np->next = srv->peers;
    if (srv->peers)
        srv->peers->prev = np;
    srv->peers = np;
    if (role == ROLE_WORKER)
        srv->nworkers++;
    else
        srv->nclients++;

    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    mp_pack_cstr(&pk, "id");
    msgpack_pack_uint64(&pk, np->id);
    mp_pack_cstr(&pk, "name");
    mp_pack_cstr(&pk, np->name);
    mp_pack_cstr(&pk, "nworkers");
    msgpack_pack_uint64(&pk, srv->nworkers);
    s_send_to(srv, np, MSG_WELCOME, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);

    if (role == ROLE_WORKER) {
        log_info("worker %s joined from %s (pid %" PRId64 ", %u threads), id %" PRIu64
                 ", %zu workers",
                 np->name, np->host, np->pid, np->nthreads, np->id, srv->nworkers);
        /* Libraries go out before any COMPUTE (those wait in the batch). */
        s_send_libraries(srv, np);
    } else {
        log_info("client %s joined from %s (pid %" PRId64 "), id %" PRIu64, np->name,
                 np->host, np->pid, np->id);
    }
}

static void h_error(server_t *srv, peer_t *p, proto_msg_t *m)
{
    (void)srv;
    int64_t code = 0;
    const char *text = "";
    size_t tlen = 0;
    const msgpack_object *o = mp_map_get(&m->body, "code");
    if (o)
        mp_i64(o, &code);
    o = mp_map_get(&m->body, "message");
    if (o && mp_str(o, &text, &tlen) < 0) {
        text = "";
        tlen = 0;
    }
    /* Never answered (two peers could bounce errors forever). */
    if (s_warn_ok(&p->warn_t0, &p->warn_n))
        log_warn("%s %s reports error %" PRId64 ": %.*s", s_role_name(p->role), p->name, code,
                 (int)(tlen > 300 ? 300 : tlen), text);
}

static void h_heartbeat(server_t *srv, peer_t *p, proto_msg_t *m)
{
    (void)m;
    s_send_to(srv, p, MSG_HEARTBEAT, NULL, 0);
}

static void h_bye(server_t *srv, peer_t *p, proto_msg_t *m)
{
    (void)m;
    s_peer_remove(srv, p, "said goodbye", 0);
}

/* {name: amount} into out[0..*n) (at most SCHED_MAX_RESOURCES, names of
 * 1..SCHED_MAX_RESNAME bytes, each once, amounts finite and >= 0).  The
 * names point into the message. */
static int s_parse_resmap(const msgpack_object *o, sched_resource_t *out, size_t *n,
                          const char **why)
{
    if (o->type != MSGPACK_OBJECT_MAP) {
        *why = "resources must be a map of names to amounts";
        return -1;
    }
    if (o->via.map.size > SCHED_MAX_RESOURCES) {
        *why = "more than 64 resources";
        return -1;
    }
    *n = 0;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        sched_resource_t *r = &out[i];
        if (mp_str(&kv->key, &r->name, &r->name_len) < 0 || r->name_len == 0 ||
            r->name_len > SCHED_MAX_RESNAME || memchr(r->name, '\0', r->name_len)) {
            *why = "resource names must be strings of 1 to 64 bytes";
            return -1;
        }
        if (mp_f64(&kv->val, &r->amount) < 0 || !(r->amount >= 0) || r->amount > 1e300) {
            *why = "resource amounts must be finite numbers >= 0";
            return -1;
        }
        for (uint32_t j = 0; j < i; j++) {
            if (out[j].name_len == r->name_len && memcmp(out[j].name, r->name, r->name_len) == 0) {
                *why = "a resource is named twice";
                return -1;
            }
        }
        (*n)++;
    }
    return 0;
}

/* SUBMIT options {"resources": {name: amount}, "workers": [names]}. */
static int s_parse_options(server_t *srv, const msgpack_object *o, sched_submit_t *sub,
                           const char **why)
{
    if (o->type != MSGPACK_OBJECT_MAP) {
        *why = "options must be nil or a map";
        return -1;
    }
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        if (mp_str_eq(&kv->key, "resources")) {
            if (mp_is_nil(&kv->val))
                continue;
            if (s_parse_resmap(&kv->val, srv->resbuf, &sub->nres, why) < 0)
                return -1;
            sub->res = srv->resbuf;
        } else if (mp_str_eq(&kv->key, "workers")) {
            if (mp_is_nil(&kv->val))
                continue;
            const msgpack_object *names;
            size_t nn;
            if (mp_array(&kv->val, &names, &nn) < 0) {
                *why = "workers must be an array of worker names";
                return -1;
            }
            if (nn > SCHED_MAX_RESTRICT) {
                *why = "restricted to more than 1024 workers";
                return -1;
            }
            for (size_t j = 0; j < nn; j++) {
                sched_name_t *w = &srv->onlybuf[j];
                if (mp_str(&names[j], &w->p, &w->len) < 0 || w->len == 0 ||
                    w->len > SCHED_MAX_NAME || memchr(w->p, '\0', w->len)) {
                    *why = "worker names must be strings of 1 to 255 bytes";
                    return -1;
                }
            }
            sub->only = srv->onlybuf;
            sub->nonly = nn;
        } else {
            /* Unknown options would change placement in ways this
             * scheduler cannot honour: refuse rather than ignore. */
            *why = "unknown option (known: resources, workers)";
            return -1;
        }
    }
    return 0;
}

/* Field i of a SUBMIT item; sets *why on failure. */
static int s_parse_submit(server_t *srv, const msgpack_object *it, size_t n, sched_submit_t *sub,
                          const char **why)
{
    memset(sub, 0, sizeof *sub);
    if (mp_u64(&it[0], &sub->id) < 0) {
        *why = "id must be an unsigned integer";
        return -1;
    }
    if (mp_str(&it[1], &sub->func, &sub->func_len) < 0 || sub->func_len == 0 ||
        sub->func_len > SCHED_MAX_FUNC) {
        *why = "func must be a string of 1 to 255 bytes";
        return -1;
    }
    if (mp_bin(&it[2], &sub->args, &sub->args_len) < 0) {
        *why = "args must be bin";
        return -1;
    }
    if ((int64_t)sub->args_len > srv->max_msg) {
        *why = "args larger than the maximum message size";
        return -1;
    }
    const msgpack_object *deps;
    size_t nd;
    if (mp_array(&it[3], &deps, &nd) < 0) {
        *why = "deps must be an array";
        return -1;
    }
    if (nd > SCHED_MAX_DEPS) {
        *why = "more than 65536 dependencies";
        return -1;
    }
    if (nd > srv->depcap) {
        size_t cap = srv->depcap ? srv->depcap : 64;
        while (cap < nd)
            cap *= 2;
        uint64_t *v = realloc(srv->depbuf, cap * sizeof *v);
        if (!v) {
            *why = "scheduler out of memory";
            return -1;
        }
        srv->depbuf = v;
        srv->depcap = cap;
    }
    for (size_t i = 0; i < nd; i++) {
        if (mp_u64(&deps[i], &srv->depbuf[i]) < 0) {
            *why = "deps must be task ids";
            return -1;
        }
    }
    sub->deps = srv->depbuf;
    sub->ndeps = nd;
    int64_t v;
    if (mp_i64(&it[4], &v) < 0 || v < INT32_MIN || v > INT32_MAX) {
        *why = "priority must be a 32-bit integer";
        return -1;
    }
    sub->priority = (int32_t)v;
    if (mp_i64(&it[5], &v) < 0 || v < 0 || v > SCHED_MAX_RETRIES) {
        *why = "retries must be an integer in [0, 65535]";
        return -1;
    }
    sub->retries = (uint32_t)v;
    if (n > 6 && !mp_is_nil(&it[6]) &&
        (mp_str(&it[6], &sub->name, &sub->name_len) < 0 || sub->name_len > SCHED_MAX_NAME)) {
        *why = "name must be nil or a string of at most 255 bytes";
        return -1;
    }
    if (n > 7 && !mp_is_nil(&it[7]) && s_parse_options(srv, &it[7], sub, why) < 0)
        return -1;
    return 0;
}

static void h_submit(server_t *srv, peer_t *p, proto_msg_t *m)
{
    const msgpack_object *items;
    size_t n;
    if (mp_array(&m->body, &items, &n) < 0) {
        s_bad(srv, p, m, "body must be an array of submissions");
        return;
    }
    size_t bad = 0;
    const char *first_why = NULL;
    for (size_t i = 0; i < n; i++) {
        /* New ids: only the map line is worth loading. */
        s_prefetch_items(srv, items, i, n, 0);
        const msgpack_object *it;
        size_t k;
        uint64_t id = 0;
        sched_submit_t sub;
        const char *why = "each submission must be an array of 6 to 8 fields";
        if (mp_array(&items[i], &it, &k) < 0 || k < 6 || k > 8 ||
            s_parse_submit(srv, it, k, &sub, &why) < 0) {
            /* With a readable id the client's future can still complete. */
            if (mp_array(&items[i], &it, &k) == 0 && k > 0 && mp_u64(&it[0], &id) == 0 &&
                id != 0) {
                char text[300];
                snprintf(text, sizeof text, "malformed submission: %s", why);
                s_pack_result(srv, p, id, TASK_ERR, text, strlen(text), NULL);
            }
            if (!bad++)
                first_why = why;
            continue;
        }
        sched_submit(srv->sched, p->c, &sub);
    }
    if (bad)
        s_bad(srv, p, m, "%zu of %zu submissions malformed (first: %s)", bad, n, first_why);
}

/* RELEASE and CANCEL: an array of task ids. */
static void s_ids(server_t *srv, peer_t *p, proto_msg_t *m,
                  int (*fn)(sched_t *, sched_client_t *, uint64_t))
{
    const msgpack_object *items;
    size_t n, bad = 0;
    if (mp_array(&m->body, &items, &n) < 0) {
        s_bad(srv, p, m, "body must be an array of task ids");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        s_prefetch_items(srv, items, i, n, 1);
        uint64_t id;
        if (mp_u64(&items[i], &id) < 0) {
            bad++;
            continue;
        }
        /* Unknown ids (already freed, another client's) are ignored. */
        fn(srv->sched, p->c, id);
    }
    if (bad)
        s_bad(srv, p, m, "%zu of %zu items are not task ids", bad, n);
}

static void h_release(server_t *srv, peer_t *p, proto_msg_t *m)
{
    s_ids(srv, p, m, sched_release);
}

static void h_cancel(server_t *srv, peer_t *p, proto_msg_t *m)
{
    s_ids(srv, p, m, sched_cancel);
}

static void s_lib_unref(void *data, void *hint)
{
    (void)data;
    lib_t *l = hint;
    if (atomic_fetch_sub(&l->refs, 1) == 1) {
        free(l->data);
        free(l);
    }
}

static void s_send_library(server_t *srv, peer_t *p, lib_t *l)
{
    if (p->dead)
        return;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    mp_pack_cstr(&pk, "name");
    mp_pack_cstr(&pk, l->name);
    mp_pack_cstr(&pk, "hash");
    msgpack_pack_uint64(&pk, l->hash);
    atomic_fetch_add(&l->refs, 1);
    proto_frame_t f = {l->data, l->len, s_lib_unref, l};
    /* proto_send calls s_lib_unref exactly once, whatever happens. */
    if (proto_send(srv->router, p->ident, p->ident_len, MSG_LIBRARY, sb.data, sb.size, &f, 1) < 0)
        s_send_failed(srv, p, "LIBRARY");
    msgpack_sbuffer_destroy(&sb);
}

static void s_send_libraries(server_t *srv, peer_t *p)
{
    for (size_t i = 0; i < srv->nlibs; i++)
        s_send_library(srv, p, srv->libs[i]);
}

static void s_lib_ack(server_t *srv, peer_t *p, int64_t req, const char *name, uint64_t hash,
                      const char *error)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    mp_pack_cstr(&pk, "req");
    msgpack_pack_int64(&pk, req);
    mp_pack_cstr(&pk, "name");
    mp_pack_cstr(&pk, name);
    mp_pack_cstr(&pk, "hash");
    msgpack_pack_uint64(&pk, hash);
    mp_pack_cstr(&pk, "ok");
    if (error)
        msgpack_pack_false(&pk);
    else
        msgpack_pack_true(&pk);
    mp_pack_cstr(&pk, "error");
    mp_pack_cstr(&pk, error);
    s_send_to(srv, p, MSG_LIB_ACK, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

static void h_upload_lib(server_t *srv, peer_t *p, proto_msg_t *m)
{
    int64_t req = 0;
    const char *name;
    size_t nlen;
    const msgpack_object *o = mp_map_get(&m->body, "req");
    if (!o || mp_i64(o, &req) < 0) {
        s_bad(srv, p, m, "\"req\" must be an integer");
        return;
    }
    o = mp_map_get(&m->body, "name");
    if (!o || mp_str(o, &name, &nlen) < 0 || nlen == 0 || nlen > NAME_MAX_LEN) {
        s_bad(srv, p, m, "\"name\" must be a string of 1 to %d bytes", NAME_MAX_LEN);
        return;
    }
    char cname[NAME_MAX_LEN + 1];
    s_clean_copy(cname, sizeof cname, name, nlen);
    if (m->nframes != 1) {
        s_bad(srv, p, m, "expected exactly one data frame (the library), got %zu", m->nframes);
        return;
    }
    const uint8_t *data = proto_frame_data(m, 0);
    size_t len = proto_frame_size(m, 0);
    if (len == 0 || len > SERVER_MAX_LIB_SIZE) {
        s_lib_ack(srv, p, req, cname, 0, "library must be 1 byte to 512 MiB");
        return;
    }
    if (len < 4 || memcmp(data, "\177ELF", 4) != 0) {
        s_lib_ack(srv, p, req, cname, 0, "not an ELF shared object");
        return;
    }
    uint64_t hash = util_fnv1a64(data, len);
    for (size_t i = 0; i < srv->nlibs; i++) {
        if (srv->libs[i]->hash == hash && srv->libs[i]->len == len) {
            /* Same bytes: every worker has it (or will) already. */
            s_lib_ack(srv, p, req, cname, hash, NULL);
            return;
        }
    }
    if (srv->nlibs >= SERVER_MAX_LIBS) {
        s_lib_ack(srv, p, req, cname, hash, "too many libraries (at most 64)");
        return;
    }
    lib_t *l = calloc(1, sizeof *l);
    if (l)
        l->data = malloc(len);
    if (!l || !l->data) {
        free(l);
        s_lib_ack(srv, p, req, cname, hash, "scheduler out of memory");
        return;
    }
    atomic_init(&l->refs, 1);
    memcpy(l->data, data, len);
    l->len = len;
    l->hash = hash;
    memcpy(l->name, cname, strlen(cname) + 1);
    srv->libs[srv->nlibs++] = l;
    log_info("library %s (%zu bytes, hash %016" PRIx64 ") uploaded by %s; sending to %zu workers",
             l->name, len, hash, p->name, srv->nworkers);
    for (peer_t *q = srv->peers; q; q = q->next)
        if (q->role == ROLE_WORKER)
            s_send_library(srv, q, l);
    s_lib_ack(srv, p, req, cname, hash, NULL);
}

static void h_status(server_t *srv, peer_t *p, proto_msg_t *m)
{
    int64_t req = 0;
    const msgpack_object *o = mp_map_get(&m->body, "req");
    if (m->body.type != MSGPACK_OBJECT_MAP || !o || mp_i64(o, &req) < 0) {
        s_bad(srv, p, m, "body must be a map with an integer \"req\"");
        return;
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    mp_pack_cstr(&pk, "req");
    msgpack_pack_int64(&pk, req);
    mp_pack_cstr(&pk, "clients");
    msgpack_pack_uint64(&pk, srv->nclients);
    mp_pack_cstr(&pk, "tasks");
    msgpack_pack_map(&pk, 6);
    static const struct {
        const char *key;
        task_state_t st;
    } counts[] = {{"waiting", TS_WAITING}, {"ready", TS_READY}, {"processing", TS_PROCESSING},
                  {"memory", TS_MEMORY}, {"erred", TS_ERRED}};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        mp_pack_cstr(&pk, counts[i].key);
        msgpack_pack_uint64(&pk, sched_count(srv->sched, counts[i].st));
    }
    mp_pack_cstr(&pk, "total");
    msgpack_pack_uint64(&pk, sched_ntasks(srv->sched));
    mp_pack_cstr(&pk, "workers");
    msgpack_pack_array(&pk, (uint32_t)srv->nworkers);
    for (peer_t *q = srv->peers; q; q = q->next) {
        if (q->role != ROLE_WORKER)
            continue;
        msgpack_pack_array(&pk, 10);
        mp_pack_cstr(&pk, q->name);
        mp_pack_cstr(&pk, q->host);
        msgpack_pack_int64(&pk, q->pid);
        msgpack_pack_unsigned_int(&pk, q->nthreads);
        msgpack_pack_unsigned_int(&pk, sched_worker_running(q->w));
        msgpack_pack_uint64(&pk, sched_worker_completed(q->w));
        msgpack_pack_uint64(&pk, q->id);
        mp_pack_cstr(&pk, sched_worker_data(q->w));
        msgpack_pack_uint64(&pk, sched_worker_stored(q->w));
        if (sched_worker_paused(q->w))
            msgpack_pack_true(&pk);
        else
            msgpack_pack_false(&pk);
    }
    s_send_to(srv, p, MSG_STATUS_REPLY, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

static void h_task_done(server_t *srv, peer_t *p, proto_msg_t *m)
{
    const msgpack_object *items;
    size_t n, bad = 0;
    if (mp_array(&m->body, &items, &n) < 0) {
        s_bad(srv, p, m, "body must be an array of outcomes");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        s_prefetch_items(srv, items, i, n, 1);
        const msgpack_object *it;
        size_t k;
        uint64_t id, dur;
        int64_t status;
        const void *payload = "";
        size_t plen = 0;
        if (mp_array(&items[i], &it, &k) < 0 || (k != 4 && k != 5) || mp_u64(&it[0], &id) < 0 ||
            mp_i64(&it[1], &status) < 0 || status < TASK_OK || status > TASK_MISSING ||
            mp_u64(&it[3], &dur) < 0) {
            bad++;
            continue;
        }
        if (status == TASK_MISSING) {
            /* [id, 3, [dep ids], ...]: inputs no holder could give. */
            const msgpack_object *ds;
            size_t nd;
            if (mp_array(&it[2], &ds, &nd) < 0 || nd > SCHED_MAX_DEPS) {
                bad++;
                continue;
            }
            uint64_t *v = nd ? malloc(nd * sizeof *v) : NULL;
            if (nd && !v) {
                log_err("out of memory handling a TASK_MISSING from %s", p->name);
                continue;
            }
            size_t nv = 0;
            for (size_t j = 0; j < nd; j++)
                if (mp_u64(&ds[j], &v[nv]) == 0)
                    nv++;
            if (sched_task_missing(srv->sched, p->w, id, v, nv) < 0)
                log_debug("ignored TASK_MISSING of task %" PRIu64 " from %s", id, p->name);
            free(v);
            continue;
        }
        if (status == TASK_OK && k == 5 && mp_is_nil(&it[2])) {
            /* The result stays in the worker's store. */
            uint64_t nbytes;
            if (mp_u64(&it[4], &nbytes) < 0) {
                bad++;
                continue;
            }
            if (sched_task_done_kept(srv->sched, p->w, id, nbytes, dur) < 0)
                log_debug("ignored outcome of task %" PRIu64 " from %s (not running there)", id,
                          p->name);
            continue;
        }
        if (mp_bin(&it[2], &payload, &plen) < 0) {
            /* An error may come without text; a result may not. */
            if (status == TASK_OK || !mp_is_nil(&it[2])) {
                bad++;
                continue;
            }
            payload = "";
            plen = 0;
        }
        if (sched_task_done(srv->sched, p->w, id, (int)status, payload, plen, dur) < 0)
            log_debug("ignored outcome of task %" PRIu64 " from %s (not running there)", id,
                      p->name);
    }
    if (bad)
        s_bad(srv, p, m, "%zu of %zu outcomes malformed", bad, n);
}

/* SCATTER: batch of [id, nbytes, [worker ids]]: data the client has PUT on
 * those workers.  Unknown workers or ids get an error RESULT. */
static void h_scatter(server_t *srv, peer_t *p, proto_msg_t *m)
{
    const msgpack_object *items;
    size_t n, bad = 0;
    if (mp_array(&m->body, &items, &n) < 0) {
        s_bad(srv, p, m, "body must be an array of [id, nbytes, [worker ids]]");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *it, *wids;
        size_t k, nw;
        uint64_t id, nbytes;
        if (mp_array(&items[i], &it, &k) < 0 || k != 3 || mp_u64(&it[0], &id) < 0) {
            bad++;
            continue;
        }
        const char *why = NULL;
        char text[300];
        sched_worker_t **ws = NULL;
        size_t nws = 0;
        if (mp_u64(&it[1], &nbytes) < 0) {
            why = "nbytes must be an unsigned integer";
        } else if (mp_array(&it[2], &wids, &nw) < 0 || nw == 0) {
            why = "workers must be a non-empty array of worker ids";
        } else if (nw > srv->nworkers) {
            why = "cannot scatter: more worker ids than workers";
        } else if (!(ws = malloc(nw * sizeof *ws))) {
            why = "scheduler out of memory";
        } else {
            for (size_t j = 0; j < nw && !why; j++) {
                uint64_t wid;
                peer_t *q = NULL;
                if (mp_u64(&wids[j], &wid) == 0)
                    q = u64map_get(srv->by_wid, wid);
                if (!q || q->dead) {
                    snprintf(text, sizeof text, "cannot scatter: unknown worker id in item %zu", i);
                    why = text;
                } else {
                    ws[nws++] = q->w;
                }
            }
        }
        if (why) {
            free(ws);
            if (id)
                s_pack_result(srv, p, id, TASK_ERR, why, strlen(why), NULL);
            bad++;
            continue;
        }
        sched_scatter(srv->sched, p->c, id, nbytes, ws, nws);
        free(ws);
    }
    if (bad)
        log_debug("%zu of %zu SCATTER items from %s refused", bad, n, p->name);
}

static void h_refetch(server_t *srv, peer_t *p, proto_msg_t *m)
{
    s_ids(srv, p, m, sched_refetch);
}

/* HAVE [id...]: copies the worker fetched for its tasks and keeps; each
 * becomes a holder of its result, or is answered with FREE when nothing
 * wants those bytes any more. */
static void h_have(server_t *srv, peer_t *p, proto_msg_t *m)
{
    const msgpack_object *items;
    size_t n, bad = 0;
    if (mp_array(&m->body, &items, &n) < 0) {
        s_bad(srv, p, m, "body must be an array of task ids");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t id;
        if (mp_u64(&items[i], &id) < 0 || id == 0) {
            bad++;
            continue;
        }
        sched_replica_add(srv->sched, p->w, id);
    }
    if (bad)
        s_bad(srv, p, m, "%zu of %zu items are not task ids", bad, n);
}

/* PAUSE {"paused": bool}: a worker over its memory target takes no new
 * tasks until it says otherwise. */
static void h_pause(server_t *srv, peer_t *p, proto_msg_t *m)
{
    int paused;
    if (mp_bool(mp_map_get(&m->body, "paused"), &paused) < 0) {
        s_bad(srv, p, m, "body must be {\"paused\": bool}");
        return;
    }
    log_info("worker %s %s", p->name, paused ? "paused (memory)" : "resumed");
    sched_worker_set_paused(srv->sched, p->w, paused);
}

/* STEAL_REPLY [[id, ok]...]: tasks given back are placed again (by the
 * flush watcher); a reply for a steal not pending (the task finished or
 * was cancelled meanwhile) is ignored. */
static void h_steal_reply(server_t *srv, peer_t *p, proto_msg_t *m)
{
    const msgpack_object *items;
    size_t n, bad = 0;
    if (mp_array(&m->body, &items, &n) < 0) {
        s_bad(srv, p, m, "body must be an array of [id, ok]");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *it;
        size_t k;
        uint64_t id;
        int ok;
        if (mp_array(&items[i], &it, &k) < 0 || k != 2 || mp_u64(&it[0], &id) < 0 ||
            mp_bool(&it[1], &ok) < 0) {
            bad++;
            continue;
        }
        sched_steal_reply(srv->sched, p->w, id, ok);
    }
    if (bad)
        s_bad(srv, p, m, "%zu of %zu items are not [id, ok]", bad, n);
}

/* ---- receiving ------------------------------------------------------------------------- */

static void s_dispatch_msg(server_t *srv, proto_msg_t *m)
{
    int type = m->hdr.type;
    dispatch_t *d = type < MSG_TYPE_MAX ? &s_dispatch[type] : NULL;
    peer_t *p = s_peer_find(srv, m->ident, m->ident_len);
    if (!d || !d->name) {
        srv->nbad++;
        if (p ? s_warn_ok(&p->warn_t0, &p->warn_n) : s_warn_ok(&srv->warn_t0, &srv->warn_n))
            log_warn("unknown message type %d from %s", type, p ? p->name : "unregistered peer");
        s_error_to(srv, m, PERR_UNKNOWN_TYPE, "unknown message type %d", type);
        return;
    }
    if (!p && type != MSG_HELLO) {
        /* Also what a peer of a previous scheduler instance sees: it sends
         * HELLO again.  Errors are not answered (no ping-pong). */
        if (type != MSG_ERROR)
            s_error_to(srv, m, PERR_NOT_REGISTERED, "not registered: send HELLO first");
        return;
    }
    int role = p ? p->role : ROLE_UNREG;
    if (!(d->roles & role) || !d->fn) {
        srv->nbad++;
        if (s_warn_ok(&p->warn_t0, &p->warn_n))
            log_warn("%s %s sent %s, which it may not send", s_role_name(role), p->name, d->name);
        s_error_to(srv, m, PERR_BAD_REQUEST, "%s may not be sent by a %s", d->name,
                   s_role_name(role));
        return;
    }
    if (p)
        p->last_seen = util_now();
    d->calls++;
    d->fn(srv, p, m); /* may free p */
}

static void s_router_cb(struct ev_loop *loop, zwatch_t *w, int revents, void *arg)
{
    (void)loop;
    (void)w;
    server_t *srv = arg;
    if (revents & EV_ERROR) {
        log_err("the ROUTER socket failed; stopping");
        server_shutdown(srv);
        return;
    }
    proto_msg_t *m = &srv->msg;
    for (int i = 0; i < RECV_BURST && !srv->stopped; i++) {
        int rc = proto_recv(srv->router, 1, m, ZMQ_DONTWAIT);
        int e = errno;
        if (rc < 0 && e != EBADMSG && e != EPROTONOSUPPORT) {
            if (e != EAGAIN && e != EINTR)
                log_err("receive failed: %s", zmq_strerror(e));
            break;
        }
        /* Monitor events that precede this message first (see top). */
        s_monitor_drain(srv);
        s_reap(srv);
        if (rc == 0) {
            s_dispatch_msg(srv, m);
        } else {
            peer_t *p = s_peer_find(srv, m->ident, m->ident_len);
            if (e == EPROTONOSUPPORT) {
                srv->nbad++;
                if (p ? s_warn_ok(&p->warn_t0, &p->warn_n)
                      : s_warn_ok(&srv->warn_t0, &srv->warn_n))
                    log_warn("message with protocol version %u from %s", m->hdr.version,
                             p ? p->name : "unregistered peer");
                s_error_to(srv, m, PERR_VERSION,
                           "protocol version %u not supported (this scheduler speaks %d)",
                           m->hdr.version, PROTO_VERSION);
            } else {
                s_bad(srv, p, m, "malformed frames (header or body)");
            }
        }
        proto_msg_close(m);
        s_reap(srv);
    }
}

/* ---- loop watchers ------------------------------------------------------------------------ */

/* Before the loop sleeps: place what can be placed, send every batch. */
static void s_flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    server_t *srv = (server_t *)((char *)w - offsetof(server_t, flush));
    if (srv->stopped)
        return;
    for (;;) {
        sched_place(srv->sched);
        if (!srv->dirty && !srv->dead)
            break;
        while (srv->dirty)
            s_flush_peer(srv, srv->dirty);
        /* A peer found gone puts its tasks back: place again. */
        s_reap(srv);
    }
}

/* The one periodic timer: heartbeat timeouts. */
static void s_tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    server_t *srv = (server_t *)((char *)w - offsetof(server_t, tick));
    double now = util_now();
    peer_t *next;
    for (peer_t *p = srv->peers; p; p = next) {
        next = p->next; /* removal below frees only p */
        double limit = p->role == ROLE_WORKER ? srv->ttl : 3 * srv->ttl;
        if (!p->dead && now - p->last_seen > limit) {
            char why[64];
            snprintf(why, sizeof why, "no message for %.0f s", now - p->last_seen);
            s_peer_remove(srv, p, why, 1);
        }
    }
    s_reap(srv);
    /* Rebalance: idle threads take queued tasks from busy workers.  A
     * bounded number per tick; the flush watcher sends the STEALs. */
    size_t asked = sched_steal(srv->sched, SERVER_STEAL_PER_TICK);
    if (asked)
        log_debug("asked for %zu queued tasks back for idle workers", asked);
}

/* ---- setup --------------------------------------------------------------------------------- */

/* The first IPv4 address of an interface that is up and not loopback. */
static int s_first_ipv4(char *out, size_t cap)
{
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) < 0)
        return -1;
    int rc = -1;
    for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET)
            continue;
        if ((i->ifa_flags & IFF_LOOPBACK) || !(i->ifa_flags & IFF_UP))
            continue;
        const struct sockaddr_in *sin = (const struct sockaddr_in *)i->ifa_addr;
        if (inet_ntop(AF_INET, &sin->sin_addr, out, (socklen_t)cap)) {
            rc = 0;
            break;
        }
    }
    freeifaddrs(ifs);
    return rc;
}

static void s_seterr(char *err, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void s_seterr(char *err, size_t cap, const char *fmt, ...)
{
    if (!err || !cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

server_t *server_create(const server_opts_t *o, char *err, size_t errcap)
{
    static const sched_ops_t ops = {cb_compute, cb_result, cb_wcancel, cb_result_kept,
                                    cb_wfree, cb_steal};
    if (!o || !o->loop || o->port < 0 || o->port > 65535 ||
        (o->host && (!*o->host || strlen(o->host) > 200))) {
        s_seterr(err, errcap, "invalid server options");
        errno = EINVAL;
        return NULL;
    }
    server_t *srv = calloc(1, sizeof *srv);
    if (!srv) {
        s_seterr(err, errcap, "out of memory");
        return NULL;
    }
    srv->loop = o->loop;
    srv->ttl = o->worker_ttl > 0 ? o->worker_ttl : 10.0;
    srv->max_msg = o->max_msg > 0 ? o->max_msg : PROTO_DEFAULT_MAX_FRAME;
    srv->sched = sched_create(&ops, srv);
    srv->by_ident = u64map_create(64);
    srv->by_fd = u64map_create(64);
    srv->by_wid = u64map_create(64);
    if (!srv->sched || !srv->by_ident || !srv->by_fd || !srv->by_wid) {
        s_seterr(err, errcap, "out of memory");
        goto error;
    }
    srv->zctx = zmq_ctx_new();
    if (!srv->zctx) {
        s_seterr(err, errcap, "zmq_ctx_new: %s", zmq_strerror(errno));
        goto error;
    }
    srv->router = zmq_socket(srv->zctx, ZMQ_ROUTER);
    if (!srv->router || proto_sock_setup(srv->router, srv->max_msg) < 0) {
        s_seterr(err, errcap, "cannot set up the ROUTER socket: %s", zmq_strerror(errno));
        goto error;
    }
    int one = 1;
    if (zmq_setsockopt(srv->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one) < 0) {
        s_seterr(err, errcap, "ZMQ_ROUTER_MANDATORY: %s", zmq_strerror(errno));
        goto error;
    }
    /* The monitor before bind, so no connection escapes it. */
    snprintf(srv->mon_ep, sizeof srv->mon_ep, "inproc://shoal-sched-monitor-%p", (void *)srv);
    if (zmq_socket_monitor(srv->router, srv->mon_ep,
                           ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_ACCEPTED) < 0) {
        s_seterr(err, errcap, "zmq_socket_monitor: %s", zmq_strerror(errno));
        goto error;
    }
    srv->mon = zmq_socket(srv->zctx, ZMQ_PAIR);
    if (!srv->mon || zmq_connect(srv->mon, srv->mon_ep) < 0) {
        s_seterr(err, errcap, "cannot connect the monitor: %s", zmq_strerror(errno));
        goto error;
    }

    char ep[300];
    const char *bind_host = o->host ? o->host : "*";
    int v6 = strchr(bind_host, ':') && bind_host[0] != '[';
    snprintf(ep, sizeof ep, v6 ? "tcp://[%s]:%d" : "tcp://%s:%d", bind_host, o->port);
    if (zmq_bind(srv->router, ep) < 0) {
        s_seterr(err, errcap, "cannot bind %s: %s", ep, zmq_strerror(errno));
        goto error;
    }
    char last[300];
    size_t llen = sizeof last;
    long port = -1;
    if (zmq_getsockopt(srv->router, ZMQ_LAST_ENDPOINT, last, &llen) == 0) {
        last[sizeof last - 1] = '\0';
        const char *colon = strrchr(last, ':');
        if (colon && util_parse_long(colon + 1, 1, 65535, &port) < 0)
            port = -1;
    }
    if (port < 0) {
        s_seterr(err, errcap, "cannot read back the bound port");
        goto error;
    }
    char adv[256];
    if (o->host)
        snprintf(adv, sizeof adv, v6 ? "[%s]" : "%s", o->host);
    else if (s_first_ipv4(adv, sizeof adv) < 0)
        snprintf(adv, sizeof adv, "127.0.0.1");
    if (util_fmt(srv->address, sizeof srv->address, "tcp://%s:%ld", adv, port) < 0) {
        s_seterr(err, errcap, "address too long");
        goto error;
    }

    srv->zr = zwatch_create(srv->loop, srv->router, EV_READ, s_router_cb, srv);
    srv->zm = zwatch_create(srv->loop, srv->mon, EV_READ, s_monitor_cb, srv);
    if (!srv->zr || !srv->zm) {
        s_seterr(err, errcap, "cannot watch the sockets: %s", strerror(errno));
        goto error;
    }
    zwatch_start(srv->zr);
    zwatch_start(srv->zm);
    ev_prepare_init(&srv->flush, s_flush_cb);
    ev_set_priority(&srv->flush, EV_MAXPRI);
    ev_prepare_start(srv->loop, &srv->flush);
    ev_timer_init(&srv->tick, s_tick_cb, 1.0, 1.0);
    ev_timer_start(srv->loop, &srv->tick);
    return srv;

error:;
    int e = errno;
    server_destroy(srv);
    errno = e ? e : EINVAL;
    return NULL;
}

const char *server_address(const server_t *s)
{
    return s->address;
}

uint64_t server_bad_messages(const server_t *s)
{
    return s->nbad;
}

void server_shutdown(server_t *srv)
{
    if (!srv || srv->stopped)
        return;
    /* Results already decided still reach their clients; nothing new is
     * placed. */
    while (srv->dirty)
        s_flush_peer(srv, srv->dirty);
    for (peer_t *p = srv->peers; p; p = p->next)
        s_send_to(srv, p, MSG_BYE, NULL, 0);
    srv->stopped = 1;
    zwatch_stop(srv->zr);
    zwatch_stop(srv->zm);
    ev_prepare_stop(srv->loop, &srv->flush);
    ev_timer_stop(srv->loop, &srv->tick);
    if (log_get_level() >= LOG_LVL_DEBUG) {
        for (int t = 0; t < MSG_TYPE_MAX; t++)
            if (s_dispatch[t].calls)
                log_debug("handled %" PRIu64 " %s", s_dispatch[t].calls, s_dispatch[t].name);
        log_debug("refused %" PRIu64 " malformed messages", srv->nbad);
    }
}

void server_destroy(server_t *srv)
{
    if (!srv)
        return;
    zwatch_destroy(srv->zr);
    zwatch_destroy(srv->zm);
    if (srv->loop) {
        ev_prepare_stop(srv->loop, &srv->flush);
        ev_timer_stop(srv->loop, &srv->tick);
    }
    if (srv->router && srv->mon_ep[0])
        zmq_socket_monitor(srv->router, NULL, 0);
    if (srv->mon) {
        int zero = 0;
        zmq_setsockopt(srv->mon, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(srv->mon);
    }
    if (srv->router) {
        int linger = 1000;
        zmq_setsockopt(srv->router, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(srv->router);
    }
    if (srv->zctx)
        zmq_ctx_term(srv->zctx);
    /* zmq is done with every frame now: drop our own library references. */
    for (size_t i = 0; i < srv->nlibs; i++)
        s_lib_unref(NULL, srv->libs[i]);
    while (srv->peers) {
        peer_t *p = srv->peers;
        srv->peers = p->next;
        proto_batch_destroy(&p->out);
        proto_batch_destroy(&p->cancel);
        free(p);
    }
    sched_destroy(srv->sched);
    u64map_destroy(srv->by_ident);
    u64map_destroy(srv->by_fd);
    u64map_destroy(srv->by_wid);
    free(srv->depbuf);
    free(srv);
}
