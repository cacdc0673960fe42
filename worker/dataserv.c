/*
 * dataserv.c - the worker's data endpoint (see dataserv.h).
 */
#define _GNU_SOURCE
#include "dataserv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "log.h"
#include "mp.h"
#include "proto.h"
#include "util.h"
#include "zwatch.h"

/* Messages handled per callback, so that the loop gets to its other work
 * between bursts of requests (zwatch calls again at once). */
#define RECV_BURST 64

struct dataserv {
    dataserv_config_t cfg;
    void *sock;
    zwatch_t *zw;
    char addr[DATASERV_ADDR_MAX];
    int paused;
    dataserv_stats_t st;
};

static void s_seterr(char *err, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void s_seterr(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;

    if (!err || !cap)
        return;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

/* ---- requests ----------------------------------------------------------- */

/* Reply ERROR and count it.  `what` says which request and why. */
static void s_error(dataserv_t *d, proto_msg_t *m, int code, const char *what)
{
    d->st.nerrors++;
    log_debug("data endpoint: %s", what);
    if (m->ident_len == 0)
        return;
    proto_send_error(d->sock, m->ident, m->ident_len, code, "%s", what);
}

/* The "req" and "ids" of a GET or PUT: 0, or -1 after answering ERROR. */
static int s_parse_ids(dataserv_t *d, proto_msg_t *m, const char *type, uint64_t *req,
                       uint64_t *ids, size_t *n)
{
    const msgpack_object *o, *items;
    char what[128];
    size_t i;

    o = mp_map_get(&m->body, "req");
    if (!o || mp_u64(o, req) < 0) {
        util_fmt(what, sizeof(what), "%s needs {\"req\": int, \"ids\": [id...]}", type);
        s_error(d, m, PERR_BAD_MESSAGE, what);
        return -1;
    }
    o = mp_map_get(&m->body, "ids");
    if (!o || mp_array(o, &items, n) < 0) {
        util_fmt(what, sizeof(what), "%s needs \"ids\": an array of task ids", type);
        s_error(d, m, PERR_BAD_MESSAGE, what);
        return -1;
    }
    if (*n > PROTO_MAX_DATA_FRAMES) {
        util_fmt(what, sizeof(what), "%s: %zu ids, at most %d per request", type, *n,
                 PROTO_MAX_DATA_FRAMES);
        s_error(d, m, PERR_TOO_LARGE, what);
        return -1;
    }
    for (i = 0; i < *n; i++) {
        if (mp_u64(&items[i], &ids[i]) < 0 || ids[i] == 0) {
            util_fmt(what, sizeof(what), "%s: ids[%zu] is not a task id", type, i);
            s_error(d, m, PERR_BAD_MESSAGE, what);
            return -1;
        }
    }
    return 0;
}

/* GET {"req", "ids"} -> DATA {"req", "items": [[id, found, nbytes]...]} +
 * one zero-copy frame per found item. */
static void s_on_get(dataserv_t *d, proto_msg_t *m)
{
    uint64_t req, ids[PROTO_MAX_DATA_FRAMES];
    proto_frame_t frames[PROTO_MAX_DATA_FRAMES];
    size_t n, i, nf = 0;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    store_stats_t before, after;

    if (s_parse_ids(d, m, "GET", &req, ids, &n) < 0)
        return;
    d->st.ngets++;
    store_stats(d->cfg.store, &before);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    mp_pack_cstr(&pk, "req");
    msgpack_pack_uint64(&pk, req);
    mp_pack_cstr(&pk, "items");
    msgpack_pack_array(&pk, (uint32_t)n);
    for (i = 0; i < n; i++) {
        store_buf_t *b = store_get(d->cfg.store, ids[i]);
        msgpack_pack_array(&pk, 3);
        msgpack_pack_uint64(&pk, ids[i]);
        if (!b) {
            if (errno != ENOENT)
                log_warn("data endpoint: result %llu cannot be served: %s",
                         (unsigned long long)ids[i], strerror(errno));
            msgpack_pack_false(&pk);
            msgpack_pack_uint64(&pk, 0);
            continue;
        }
        msgpack_pack_true(&pk);
        msgpack_pack_uint64(&pk, b->len);
        /* The reference store_get gave us travels with the frame. */
        frames[nf].data = b->data;
        frames[nf].len = b->len;
        frames[nf].free_fn = store_buf_zmq_free;
        frames[nf].hint = b;
        nf++;
        d->st.bytes_sent += b->len;
    }
    d->st.items_sent += nf;
    /* On failure proto_send has released every frame it did not hand to
     * ZeroMQ (and ZeroMQ the others): no reference leaks either way. */
    if (proto_send(d->sock, m->ident, m->ident_len, MSG_DATA, sb.data, sb.size, frames, nf) <
        0)
        log_debug("data endpoint: DATA not sent: %s", zmq_strerror(errno));
    msgpack_sbuffer_destroy(&sb);
    store_stats(d->cfg.store, &after);
    if (after.nunspills != before.nunspills && d->cfg.stored)
        d->cfg.stored(d->cfg.arg);
}

static void s_put_ack(dataserv_t *d, proto_msg_t *m, uint64_t req, const char *error)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    mp_pack_cstr(&pk, "req");
    msgpack_pack_uint64(&pk, req);
    mp_pack_cstr(&pk, "ok");
    if (error)
        msgpack_pack_false(&pk);
    else
        msgpack_pack_true(&pk);
    mp_pack_cstr(&pk, "error");
    mp_pack_cstr(&pk, error);
    if (proto_send(d->sock, m->ident, m->ident_len, MSG_PUT_ACK, sb.data, sb.size, NULL, 0) < 0)
        log_debug("data endpoint: PUT_ACK not sent: %s", zmq_strerror(errno));
    msgpack_sbuffer_destroy(&sb);
}

/* PUT {"req", "ids"} + one frame per id -> stored (as they are: the frames
 * become the buffers), PUT_ACK. */
static void s_on_put(dataserv_t *d, proto_msg_t *m)
{
    uint64_t req, ids[PROTO_MAX_DATA_FRAMES], total = 0;
    char what[160];
    size_t n, i, k;

    if (s_parse_ids(d, m, "PUT", &req, ids, &n) < 0)
        return;
    if (n == 0 || m->nframes != n) {
        util_fmt(what, sizeof(what), "PUT: %zu ids but %zu data frames", n, m->nframes);
        s_error(d, m, PERR_BAD_MESSAGE, what);
        return;
    }
    for (i = 0; i < n; i++) {
        for (k = 0; k < i; k++)
            if (ids[k] == ids[i]) {
                util_fmt(what, sizeof(what), "PUT: id %llu given twice",
                         (unsigned long long)ids[i]);
                s_error(d, m, PERR_BAD_REQUEST, what);
                return;
            }
        if (proto_frame_size(m, i) == 0) {
            util_fmt(what, sizeof(what), "PUT: frame %zu is empty (not a packed object)", i);
            s_error(d, m, PERR_BAD_MESSAGE, what);
            return;
        }
        total += proto_frame_size(m, i);
    }
    d->st.nputs++;
    if (d->cfg.max_frame > 0 && total > (uint64_t)d->cfg.max_frame) {
        util_fmt(what, sizeof(what), "PUT of %llu bytes is over this worker's limit of %lld "
                 "bytes per request", (unsigned long long)total, (long long)d->cfg.max_frame);
        s_put_ack(d, m, req, what);
        return;
    }
    if (d->paused) {
        util_fmt(what, sizeof(what), "worker %s is paused: its memory is over 80%% of its "
                 "limit", d->cfg.name);
        s_put_ack(d, m, req, what);
        return;
    }
    for (i = 0; i < n; i++) {
        store_buf_t *b = store_buf_from_zmsg(&m->frames[i]);
        if (!b || store_put(d->cfg.store, ids[i], b) < 0) {
            /* All or nothing: the client retries elsewhere or reports. */
            store_buf_unref(b);
            for (k = 0; k < i; k++)
                store_remove(d->cfg.store, ids[k]);
            util_fmt(what, sizeof(what), "worker %s: out of memory storing the data",
                     d->cfg.name);
            s_put_ack(d, m, req, what);
            return;
        }
    }
    s_put_ack(d, m, req, NULL);
    if (d->cfg.stored)
        d->cfg.stored(d->cfg.arg);
}

static void s_on_socket(struct ev_loop *loop, zwatch_t *zw, int revents, void *arg)
{
    dataserv_t *d = arg;
    proto_msg_t m;
    int i;

    (void)loop;
    (void)zw;
    if (revents & EV_ERROR) {
        log_err("data endpoint %s: socket failed; no longer serving", d->addr);
        return;
    }
    for (i = 0; i < RECV_BURST; i++) {
        if (proto_recv(d->sock, 1, &m, ZMQ_DONTWAIT) < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            if (errno == EBADMSG || errno == EPROTONOSUPPORT) {
                int ver = errno == EPROTONOSUPPORT;
                s_error(d, &m, ver ? PERR_VERSION : PERR_BAD_MESSAGE,
                        ver ? "protocol version mismatch" : "malformed message");
                proto_msg_close(&m);
                continue;
            }
            log_err("data endpoint %s: receive failed: %s", d->addr, zmq_strerror(errno));
            return;
        }
        switch (m.hdr.type) {
        case MSG_GET:
            s_on_get(d, &m);
            break;
        case MSG_PUT:
            s_on_put(d, &m);
            break;
        case MSG_ERROR:
            break;   /* never answered, so two endpoints cannot ping-pong */
        default: {
            char what[96];
            util_fmt(what, sizeof(what), "the data endpoint takes GET and PUT, not %s",
                     proto_type_name(m.hdr.type));
            s_error(d, &m, PERR_UNKNOWN_TYPE, what);
            break;
        }
        }
        proto_msg_close(&m);
    }
}

/* ---- setup -------------------------------------------------------------- */

/* "tcp://HOST:PORT" with an IPv6 HOST in brackets. */
static int s_endpoint(char *out, size_t cap, const char *host, const char *port)
{
    if (strchr(host, ':') && host[0] != '[')
        return util_fmt(out, cap, "tcp://[%s]:%s", host, port);
    return util_fmt(out, cap, "tcp://%s:%s", host, port);
}

dataserv_t *dataserv_create(const dataserv_config_t *cfg, char *err, size_t errcap)
{
    dataserv_t *d;
    char ep[DATASERV_ADDR_MAX], last[DATASERV_ADDR_MAX], port[16];
    size_t len = sizeof(last);
    const char *colon;

    if (!cfg || !cfg->loop || !cfg->zctx || !cfg->store || !cfg->host || !*cfg->host ||
        cfg->port < 0 || cfg->port > 65535) {
        s_seterr(err, errcap, "bad data endpoint configuration");
        return NULL;
    }
    if (!(d = calloc(1, sizeof(*d)))) {
        s_seterr(err, errcap, "out of memory");
        return NULL;
    }
    d->cfg = *cfg;
    if (cfg->port)
        util_fmt(port, sizeof(port), "%d", cfg->port);
    else
        util_fmt(port, sizeof(port), "*");
    if (!(d->sock = zmq_socket(cfg->zctx, ZMQ_ROUTER)) ||
        proto_sock_setup(d->sock, cfg->max_frame) < 0) {
        s_seterr(err, errcap, "cannot create the data socket: %s", zmq_strerror(errno));
        goto error;
    }
    if (s_endpoint(ep, sizeof(ep), cfg->host, port) < 0) {
        s_seterr(err, errcap, "contact address too long");
        goto error;
    }
    if (zmq_bind(d->sock, ep) < 0) {
        /* A name or an address of another machine (NAT, a proxy): listen
         * everywhere and let peers reach us through it. */
        int e = errno;
        char any[64];
        util_fmt(any, sizeof(any), "tcp://*:%s", port);
        if (e == EADDRINUSE || zmq_bind(d->sock, any) < 0) {
            s_seterr(err, errcap, "cannot bind the data endpoint %s: %s", ep,
                     zmq_strerror(e == EADDRINUSE ? e : errno));
            goto error;
        }
        log_info("cannot bind %s (%s): listening on all interfaces", ep, zmq_strerror(e));
    }
    if (zmq_getsockopt(d->sock, ZMQ_LAST_ENDPOINT, last, &len) < 0 ||
        !(colon = strrchr(last, ':'))) {
        s_seterr(err, errcap, "cannot read the data endpoint's port");
        goto error;
    }
    if (s_endpoint(d->addr, sizeof(d->addr), cfg->host, colon + 1) < 0) {
        s_seterr(err, errcap, "contact address too long");
        goto error;
    }
    if (!(d->zw = zwatch_create(cfg->loop, d->sock, EV_READ, s_on_socket, d))) {
        s_seterr(err, errcap, "cannot watch the data socket: %s", strerror(errno));
        goto error;
    }
    zwatch_start(d->zw);
    return d;
error:
    dataserv_destroy(d);
    return NULL;
}

const char *dataserv_address(const dataserv_t *d)
{
    return d->addr;
}

void dataserv_set_paused(dataserv_t *d, int paused)
{
    d->paused = paused;
}

void dataserv_stats(const dataserv_t *d, dataserv_stats_t *out)
{
    *out = d->st;
}

void dataserv_destroy(dataserv_t *d)
{
    if (!d)
        return;
    zwatch_destroy(d->zw);
    if (d->sock)
        zmq_close(d->sock);
    free(d);
}

/* The host part of tcp://HOST:PORT (brackets removed). */
static int s_sched_host(const char *sched, char *out, size_t cap)
{
    const char *h = sched, *end;
    size_t n;

    if (!strncmp(h, "tcp://", 6))
        h += 6;
    if (*h == '[') {
        h++;
        end = strchr(h, ']');
    } else {
        end = strrchr(h, ':');
    }
    if (!end)
        end = h + strlen(h);
    n = (size_t)(end - h);
    if (n >= cap)
        return -1;
    memcpy(out, h, n);
    out[n] = '\0';
    return 0;
}

static int s_is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;

    if (!strcmp(host, "localhost") || !strcmp(host, "ip6-localhost"))
        return 1;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) ||
               (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return 0;
}

int dataserv_default_host(const char *sched, char *out, size_t cap)
{
    char host[SHOAL_ADDR_MAX];
    struct ifaddrs *ifs = NULL, *i;
    int found = 0;

    if (sched && s_sched_host(sched, host, sizeof(host)) == 0 && s_is_loopback(host))
        return util_fmt(out, cap, "127.0.0.1");
    if (getifaddrs(&ifs) == 0) {
        for (i = ifs; i && !found; i = i->ifa_next) {
            char buf[INET_ADDRSTRLEN];
            if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET ||
                !(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK))
                continue;
            if (inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, buf,
                          sizeof(buf))) {
                if (util_fmt(out, cap, "%s", buf) < 0) {
                    freeifaddrs(ifs);
                    return -1;
                }
                found = 1;
            }
        }
        freeifaddrs(ifs);
    }
    if (!found)
        return util_fmt(out, cap, "127.0.0.1");
    return 0;
}
