/*
 * dataserv.h - the worker's data endpoint (docs/DATAPLANE.md): a ROUTER
 * socket that serves stored results by id (GET -> DATA) and takes data from
 * clients (PUT -> PUT_ACK).  No registration: any peer that can connect may
 * ask.  Requests are bounded (PROTO_MAX_DATA_FRAMES ids, frames within the
 * message size limit); a malformed one is answered with ERROR and the
 * endpoint goes on serving.
 *
 * Found results are sent zero-copy: each DATA frame points into the stored
 * buffer and holds a reference on it until ZeroMQ has sent it.
 *
 * Runs on the worker's loop thread, like the store it serves from.
 */
#ifndef SHOAL_WORKER_DATASERV_H
#define SHOAL_WORKER_DATASERV_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define DATASERV_ADDR_MAX 300

typedef struct dataserv dataserv_t;

/* Called when serving grew the memory the store uses: a PUT stored data, or
 * a GET read spilled results back (the worker then checks its memory). */
typedef void (*dataserv_stored_fn)(void *arg);

typedef struct dataserv_config {
    struct ev_loop *loop;
    void *zctx;
    int64_t max_frame;       /* ZMQ_MAXMSGSIZE, and the bound on one PUT */
    store_t *store;          /* borrowed */
    const char *host;        /* address to bind and advertise */
    int port;                /* 0: an ephemeral port */
    const char *name;        /* the worker's name, for error texts */
    dataserv_stored_fn stored;
    void *arg;
} dataserv_config_t;

/* Bind the endpoint on tcp://HOST:PORT (or, if HOST cannot be bound, on
 * every interface, still advertising HOST) and start serving.  NULL with a
 * reason in err on failure. */
dataserv_t *dataserv_create(const dataserv_config_t *cfg, char *err, size_t errcap);

/* "tcp://HOST:PORT": what peers and clients connect to. */
const char *dataserv_address(const dataserv_t *d);

/* While paused (memory over the pause threshold) PUTs are refused with
 * PUT_ACK ok=false. */
void dataserv_set_paused(dataserv_t *d, int paused);

typedef struct dataserv_stats {
    uint64_t ngets, nputs, nerrors;
    uint64_t items_sent, bytes_sent;
} dataserv_stats_t;

void dataserv_stats(const dataserv_t *d, dataserv_stats_t *out);

/* Stop serving and close the socket (frames already queued keep their
 * buffers alive until sent or dropped).  Accepts NULL. */
void dataserv_destroy(dataserv_t *d);

/* The host a worker advertises when no --contact-address is given:
 * 127.0.0.1 if the scheduler address `sched` (tcp://HOST:PORT) is a
 * loopback address, else the first non-loopback IPv4 address of an
 * interface that is up, else 127.0.0.1.  0, or -1 if out is too small. */
int dataserv_default_host(const char *sched, char *out, size_t cap);

#endif
