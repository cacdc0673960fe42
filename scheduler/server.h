/*
 * server.h - the scheduler's network side: one ROUTER socket in a libev
 * loop, the peer table, the message dispatch table, output batching, the
 * socket monitor that notices dead connections, heartbeats, and the task
 * libraries clients upload.  The task graph itself is state.h.
 */
#ifndef SHOAL_SCHED_SERVER_H
#define SHOAL_SCHED_SERVER_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

typedef struct server server_t;

typedef struct server_opts {
    struct ev_loop *loop;
    /* Interface/address to bind and advertise; NULL binds every interface
     * and advertises the first non-loopback IPv4 address (else 127.0.0.1). */
    const char *host;
    int port;            /* 0: an ephemeral port */
    double worker_ttl;   /* seconds without a message before a worker is
                          * dropped (clients: 3x); <= 0 means 10 */
    int64_t max_msg;     /* ZMQ_MAXMSGSIZE and the bound on task args;
                          * <= 0 means PROTO_DEFAULT_MAX_FRAME */
} server_opts_t;

/* Bounds on uploaded task libraries. */
#define SERVER_MAX_LIBS 64
#define SERVER_MAX_LIB_SIZE (512ull << 20)
/* A batch is sent as soon as it passes this size, not only before sleeping. */
#define SERVER_BATCH_FLUSH (1u << 20)

/* Bind, start watching.  NULL on failure with a reason in err. */
server_t *server_create(const server_opts_t *o, char *err, size_t errcap);

/* "tcp://HOST:PORT", the address peers should connect to. */
const char *server_address(const server_t *s);

/* Orderly stop: flush pending output, send BYE to every peer, stop all
 * watchers (ev_run returns once nothing else is active).  Idempotent. */
void server_shutdown(server_t *s);

/* Close the sockets (waiting at most 1 s for queued output) and free
 * everything.  Accepts NULL. */
void server_destroy(server_t *s);

/* Messages refused as malformed so far (for tests and logs). */
uint64_t server_bad_messages(const server_t *s);

#endif
