/*
 * zmqfloor.c - what the transport allows, measured in the same run as the
 * benchmark: a ZeroMQ ROUTER/DEALER pair over loopback TCP.
 *
 *   zmqfloor [--rt N] [--oneway M] [--size BYTES]
 *
 *   round trip  N ping-pongs of one small message DEALER -> ROUTER -> DEALER
 *               (median, p99 microseconds), after N/10 unmeasured ones
 *   busy round trip
 *               the same with the DEALER side busy-polling for the answer
 *               (non-blocking receive and sched_yield, as a waiting shoal
 *               client does: client.c, "Busy-polling")
 *   one-way     M small messages DEALER -> ROUTER as fast as they go
 *               (messages per second, timed at the receiver)
 *
 * The ROUTER side runs in a thread with its own ZeroMQ context (so its own
 * I/O thread), as a scheduler would be in its own process.  Prints one JSON
 * line.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "util.h"

#define MAX_MSGS 100000000L
#define MAX_SIZE 65536L

typedef struct server {
    void *ctx, *sock;
    long rt, oneway;
    double t_first, t_last;   /* one-way phase, at the receiver */
    int failed;
} server_t;

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Receive [routing id, payload]; returns the routing id length or -1. */
static int s_recv2(void *sock, char *id, size_t idcap, char *buf, size_t cap)
{
    int n = zmq_recv(sock, id, idcap, 0);
    int more = 0;
    size_t len = sizeof more;
    if (n < 0)
        return -1;
    zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len);
    if (!more || zmq_recv(sock, buf, cap, 0) < 0)
        return -1;
    return n > (int)idcap ? (int)idcap : n;
}

static void *s_server(void *arg)
{
    server_t *s = arg;
    char id[256], buf[MAX_SIZE];
    int idlen = 0;

    /* Echo the warm-up and the measured round trips, both kinds. */
    for (long i = 0; i < 2 * (s->rt + s->rt / 10); i++) {
        if ((idlen = s_recv2(s->sock, id, sizeof id, buf, sizeof buf)) < 0 ||
            zmq_send(s->sock, id, (size_t)idlen, ZMQ_SNDMORE) < 0 ||
            zmq_send(s->sock, buf, 1, 0) < 0)
            goto fail;
    }
    /* Count the one-way stream, then acknowledge it. */
    for (long i = 0; i < s->oneway; i++) {
        if ((idlen = s_recv2(s->sock, id, sizeof id, buf, sizeof buf)) < 0)
            goto fail;
        if (i == 0)
            s->t_first = s_now();
    }
    s->t_last = s_now();
    if (zmq_send(s->sock, id, (size_t)idlen, ZMQ_SNDMORE) < 0 || zmq_send(s->sock, "k", 1, 0) < 0)
        goto fail;
    return NULL;
fail:
    fprintf(stderr, "zmqfloor: server: %s\n", zmq_strerror(errno));
    s->failed = 1;
    return NULL;
}

static int s_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    long rt = 10000, oneway = 2000000, size = 16;
    char endpoint[256], *payload = NULL, reply[16];
    size_t elen = sizeof endpoint;
    server_t s;
    pthread_t th;
    int started = 0, rc = 1;
    void *cctx = NULL, *dealer = NULL;
    double *us = NULL, *bus = NULL;

    memset(&s, 0, sizeof s);
    for (int a = 1; a < argc; a++) {
        long *dst, min = 1, max = MAX_MSGS;
        if (strcmp(argv[a], "--rt") == 0)
            dst = &rt;
        else if (strcmp(argv[a], "--oneway") == 0)
            dst = &oneway;
        else if (strcmp(argv[a], "--size") == 0)
            dst = &size, max = MAX_SIZE;
        else {
            fprintf(stderr, "usage: zmqfloor [--rt N] [--oneway M] [--size BYTES]\n");
            return 2;
        }
        if (a + 1 >= argc || util_parse_long(argv[a + 1], min, max, dst) < 0) {
            fprintf(stderr, "zmqfloor: %s: expected a number from %ld to %ld\n", argv[a], min,
                    max);
            return 2;
        }
        a++;
    }
    payload = calloc(1, (size_t)size);
    us = calloc((size_t)rt, sizeof *us);
    bus = calloc((size_t)rt, sizeof *bus);
    s.ctx = zmq_ctx_new();
    cctx = zmq_ctx_new();
    if (!payload || !us || !bus || !s.ctx || !cctx)
        goto out;
    s.rt = rt;
    s.oneway = oneway;
    s.sock = zmq_socket(s.ctx, ZMQ_ROUTER);
    dealer = zmq_socket(cctx, ZMQ_DEALER);
    int zero = 0;
    if (!s.sock || !dealer || zmq_setsockopt(s.sock, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
        zmq_setsockopt(dealer, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
        zmq_bind(s.sock, "tcp://127.0.0.1:*") < 0 ||
        zmq_getsockopt(s.sock, ZMQ_LAST_ENDPOINT, endpoint, &elen) < 0 ||
        zmq_connect(dealer, endpoint) < 0) {
        fprintf(stderr, "zmqfloor: set-up: %s\n", zmq_strerror(errno));
        goto out;
    }
    if (pthread_create(&th, NULL, s_server, &s) != 0)
        goto out;
    started = 1;

    for (long i = 0; i < rt + rt / 10; i++) {
        double t0 = s_now();
        if (zmq_send(dealer, payload, (size_t)size, 0) < 0 ||
            zmq_recv(dealer, reply, sizeof reply, 0) < 0) {
            fprintf(stderr, "zmqfloor: round trip: %s\n", zmq_strerror(errno));
            goto out;
        }
        if (i >= rt / 10)
            us[i - rt / 10] = (s_now() - t0) * 1e6;
    }
    for (long i = 0; i < rt + rt / 10; i++) {
        double t0 = s_now();
        int n;
        if (zmq_send(dealer, payload, (size_t)size, 0) < 0)
            n = -1;
        else
            while ((n = zmq_recv(dealer, reply, sizeof reply, ZMQ_DONTWAIT)) < 0 &&
                   errno == EAGAIN)
                sched_yield();
        if (n < 0) {
            fprintf(stderr, "zmqfloor: busy round trip: %s\n", zmq_strerror(errno));
            goto out;
        }
        if (i >= rt / 10)
            bus[i - rt / 10] = (s_now() - t0) * 1e6;
    }
    double t0 = s_now();
    for (long i = 0; i < oneway; i++) {
        if (zmq_send(dealer, payload, (size_t)size, 0) < 0) {
            fprintf(stderr, "zmqfloor: one-way: %s\n", zmq_strerror(errno));
            goto out;
        }
    }
    if (zmq_recv(dealer, reply, sizeof reply, 0) < 0)
        goto out;
    double t_send = s_now() - t0;
    pthread_join(th, NULL);
    started = 0;
    if (s.failed)
        goto out;
    qsort(us, (size_t)rt, sizeof *us, s_cmp_double);
    qsort(bus, (size_t)rt, sizeof *bus, s_cmp_double);
    double span = s.t_last - s.t_first;
    long p99 = (long)(0.99 * (double)(rt - 1));
    printf("{\"system\": \"zeromq\", \"workload\": \"floor\", \"size\": %ld, \"rt_n\": %ld, "
           "\"rt_median_us\": %.1f, \"rt_p99_us\": %.1f, \"rt_busy_median_us\": %.1f, "
           "\"rt_busy_p99_us\": %.1f, \"oneway_n\": %ld, "
           "\"oneway_msgs_per_s\": %.1f, \"oneway_send_seconds\": %.6f}\n",
           size, rt, us[rt / 2], us[p99], bus[rt / 2], bus[p99], oneway,
           span > 0 ? (double)(oneway - 1) / span : 0.0, t_send);
    rc = 0;
out:
    if (started) {
        /* Unblock the server: closing its context makes its recv fail. */
        zmq_close(dealer);
        dealer = NULL;
        zmq_ctx_shutdown(s.ctx);
        pthread_join(th, NULL);
    }
    if (dealer)
        zmq_close(dealer);
    if (s.sock)
        zmq_close(s.sock);
    if (cctx)
        zmq_ctx_term(cctx);
    if (s.ctx)
        zmq_ctx_term(s.ctx);
    free(payload);
    free(us);
    free(bus);
    return rc;
}
