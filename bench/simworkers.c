/*
 * simworkers.c - a load generator that speaks the worker protocol.
 *
 *   simworkers ADDRESS [--n K] [--nthreads T] [--quiet]
 *
 * K simulated workers, each its own DEALER socket, all in this one process:
 * each says HELLO as a worker with T threads, answers every COMPUTE item at
 * once with TASK_DONE ok (result nil) in one batch per COMPUTE message, and
 * sends a HEARTBEAT every second.  Nothing runs, so what a benchmark measures
 * against them is the scheduler (and the client), not task execution.
 *
 * One loop serves all K sockets without touching each one per iteration: the
 * ZMQ_FD of every socket is in one epoll set, and only sockets that epoll
 * reported (or that still had input after a send) are serviced.  ZMQ_FD is
 * edge-triggered, which is why a socket is re-checked with ZMQ_EVENTS after
 * anything that may have consumed its notification.
 *
 * On SIGINT/SIGTERM (or BYE from the scheduler) every worker says BYE and the
 * program prints one JSON line: {"workload": "simworkers", "workers": K,
 * "completed": N, ...}.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "mp.h"
#include "proto.h"
#include "util.h"

#define MAX_WORKERS 10000
#define SERVICE_BURST 64   /* messages per socket per turn: fairness */

typedef struct sim {
    void *sock;
    int welcomed;
    int queued;            /* on the to-service stack */
    uint64_t completed;
    proto_batch_t out;     /* TASK_DONE items being collected */
} sim_t;

static volatile sig_atomic_t s_stop;

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

static int s_send_hello(sim_t *w, int idx, int nthreads)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    char name[96];
    int rc;

    snprintf(name, sizeof name, "sim-%ld-%d", (long)getpid(), idx);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 6);
    mp_pack_cstr(&pk, "role");
    mp_pack_cstr(&pk, "worker");
    mp_pack_cstr(&pk, "name");
    mp_pack_cstr(&pk, name);
    mp_pack_cstr(&pk, "host");
    mp_pack_cstr(&pk, util_hostname());
    mp_pack_cstr(&pk, "pid");
    msgpack_pack_int64(&pk, (int64_t)getpid());
    mp_pack_cstr(&pk, "nthreads");
    msgpack_pack_int(&pk, nthreads);
    mp_pack_cstr(&pk, "proto");
    msgpack_pack_int(&pk, PROTO_VERSION);
    rc = proto_send(w->sock, NULL, 0, MSG_HELLO, sb.data, sb.size, NULL, 0);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static const char s_nil = (char)0xc0;

/* Answer every item of one COMPUTE batch.  Returns the number of bad items. */
static unsigned s_on_compute(sim_t *w, const msgpack_object *body)
{
    const msgpack_object *items;
    size_t n;
    unsigned bad = 0;

    if (mp_array(body, &items, &n) < 0)
        return 1;
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *f;
        size_t nf;
        uint64_t id;
        if (mp_array(&items[i], &f, &nf) < 0 || nf < 1 || mp_u64(&f[0], &id) < 0) {
            bad++;
            continue;
        }
        msgpack_packer *pk = proto_batch_add(&w->out);
        msgpack_pack_array(pk, 4);
        msgpack_pack_uint64(pk, id);
        msgpack_pack_int(pk, TASK_OK);
        mp_pack_bin(pk, &s_nil, 1);
        msgpack_pack_int(pk, 0);
        w->completed++;
    }
    return bad;
}

/* Does the socket have input ready?  Also re-arms its edge-triggered fd. */
static int s_readable(void *sock)
{
    int ev = 0;
    size_t len = sizeof ev;
    if (zmq_getsockopt(sock, ZMQ_EVENTS, &ev, &len) < 0)
        return 0;
    return (ev & ZMQ_POLLIN) != 0;
}

typedef struct loop {
    sim_t *w;
    int n, nthreads;
    int *stack, top;
    uint64_t bad, errors, bye;
    int welcomed;
} loop_t;

static void s_push(loop_t *l, int i)
{
    if (!l->w[i].queued) {
        l->w[i].queued = 1;
        l->stack[l->top++] = i;
    }
}

/* Receive up to SERVICE_BURST messages from worker i and answer them. */
static void s_service(loop_t *l, int i)
{
    sim_t *w = &l->w[i];
    int k;

    for (k = 0; k < SERVICE_BURST; k++) {
        proto_msg_t m;
        int rc = proto_recv(w->sock, 0, &m, ZMQ_DONTWAIT);
        if (rc < 0 && errno == EAGAIN)
            break;
        if (rc < 0 && errno != EBADMSG && errno != EPROTONOSUPPORT) {
            if (errno != EINTR)
                l->errors++;
            break;
        }
        if (rc < 0) {   /* malformed: consumed, count it */
            l->bad++;
            proto_msg_close(&m);
            continue;
        }
        switch (m.hdr.type) {
        case MSG_WELCOME:
            if (!w->welcomed)
                l->welcomed++;
            w->welcomed = 1;
            break;
        case MSG_COMPUTE:
            l->bad += s_on_compute(w, &m.body);
            break;
        case MSG_ERROR: {
            const msgpack_object *code = mp_map_get(&m.body, "code");
            int64_t c = 0;
            if (code && mp_i64(code, &c) == 0 && c == PERR_NOT_REGISTERED) {
                /* The scheduler restarted: register again. */
                if (w->welcomed)
                    l->welcomed--;
                w->welcomed = 0;
                s_send_hello(w, i, l->nthreads);
            } else {
                l->errors++;
                if (l->errors <= 5) {
                    const msgpack_object *msg = mp_map_get(&m.body, "message");
                    const char *p = "?";
                    size_t len = 1;
                    if (msg)
                        mp_str(msg, &p, &len);
                    fprintf(stderr, "simworkers: worker %d: scheduler error %" PRId64
                            ": %.*s\n", i, c, (int)(len > 200 ? 200 : len), p);
                }
            }
            break;
        }
        case MSG_BYE:
            l->bye++;
            s_stop = 1;
            break;
        default:   /* HEARTBEAT echoes, LIBRARY, WCANCEL: nothing to do */
            break;
        }
        proto_msg_close(&m);
    }
    if (proto_batch_send(&w->out, w->sock, NULL, 0) < 0)
        l->errors++;
    if (k == SERVICE_BURST || s_readable(w->sock))
        s_push(l, i);
}

static void s_raise_nofile(int need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)need) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)need ? rl.rlim_max : (rlim_t)need;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    const char *address = NULL;
    char addr[SHOAL_ADDR_MAX], aerr[256];
    long nworkers = 1000, nthreads = 1;
    int quiet = 0, ep = -1, rc = 1;
    void *ctx = NULL;
    loop_t l;

    memset(&l, 0, sizeof l);
    for (int a = 1; a < argc; a++) {
        const char *k = argv[a], *v = a + 1 < argc ? argv[a + 1] : NULL;
        if (strcmp(k, "--n") == 0) {
            if (util_parse_long(v, 1, MAX_WORKERS, &nworkers) < 0) {
                fprintf(stderr, "simworkers: --n: expected 1 to %d\n", MAX_WORKERS);
                return 2;
            }
            a++;
        } else if (strcmp(k, "--nthreads") == 0) {
            if (util_parse_long(v, 1, 1024, &nthreads) < 0) {
                fprintf(stderr, "simworkers: --nthreads: expected 1 to 1024\n");
                return 2;
            }
            a++;
        } else if (strcmp(k, "--quiet") == 0) {
            quiet = 1;
        } else if (strcmp(k, "--help") == 0) {
            printf("usage: simworkers ADDRESS [--n K] [--nthreads T] [--quiet]\n");
            return 0;
        } else if (k[0] != '-' && !address) {
            address = k;
        } else {
            fprintf(stderr, "simworkers: unexpected argument '%s'\n", k);
            return 2;
        }
    }
    if (!address) {
        fprintf(stderr, "usage: simworkers ADDRESS [--n K] [--nthreads T] [--quiet]\n");
        return 2;
    }
    if (util_normalize_address(address, addr, sizeof addr, aerr, sizeof aerr) < 0) {
        fprintf(stderr, "simworkers: bad address '%s': %s\n", address, aerr);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    /* Each socket costs a TCP fd and a mailbox fd here. */
    s_raise_nofile((int)nworkers * 3 + 64);
    l.n = (int)nworkers;
    l.nthreads = (int)nthreads;
    l.w = calloc((size_t)nworkers, sizeof *l.w);
    l.stack = calloc((size_t)nworkers, sizeof *l.stack);
    ctx = zmq_ctx_new();
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (!l.w || !l.stack || !ctx || ep < 0) {
        fprintf(stderr, "simworkers: cannot set up: %s\n", strerror(errno));
        goto out;
    }
    if (zmq_ctx_set(ctx, ZMQ_MAX_SOCKETS, (int)nworkers + 64) < 0) {
        fprintf(stderr, "simworkers: cannot allow %ld sockets: %s\n", nworkers,
                zmq_strerror(errno));
        goto out;
    }
    for (int i = 0; i < l.n; i++) {
        sim_t *w = &l.w[i];
        int fd;
        size_t len = sizeof fd;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u32 = (uint32_t)i};

        proto_batch_init(&w->out, MSG_TASK_DONE);
        w->sock = zmq_socket(ctx, ZMQ_DEALER);
        if (!w->sock || proto_sock_setup(w->sock, PROTO_DEFAULT_MAX_FRAME) < 0 ||
            zmq_connect(w->sock, addr) < 0 ||
            zmq_getsockopt(w->sock, ZMQ_FD, &fd, &len) < 0 ||
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0 || s_send_hello(w, i, l.nthreads) < 0) {
            fprintf(stderr, "simworkers: worker %d: %s\n", i, zmq_strerror(errno));
            goto out;
        }
        s_push(&l, i);
    }

    double t_hb = util_now() + 1.0, t_start = util_now(), t_ready = -1;
    while (!s_stop) {
        while (l.top > 0 && !s_stop) {
            int i = l.stack[--l.top];
            l.w[i].queued = 0;
            s_service(&l, i);
        }
        if (t_ready < 0 && l.welcomed == l.n) {
            t_ready = util_now();
            if (!quiet)
                fprintf(stderr, "simworkers: %d workers registered in %.3f s\n", l.n,
                        t_ready - t_start);
        }
        struct epoll_event evs[256];
        int ne = epoll_wait(ep, evs, 256, l.top > 0 ? 0 : 100);
        for (int e = 0; e < ne; e++)
            s_push(&l, (int)evs[e].data.u32);
        double now = util_now();
        if (now >= t_hb) {
            t_hb = now + 1.0;
            for (int i = 0; i < l.n; i++) {
                if (!l.w[i].welcomed)
                    continue;
                proto_send(l.w[i].sock, NULL, 0, MSG_HEARTBEAT, &s_nil, 1, NULL, 0);
                /* The send may have eaten the fd's edge. */
                if (s_readable(l.w[i].sock))
                    s_push(&l, i);
            }
        }
    }
    uint64_t total = 0;
    for (int i = 0; i < l.n; i++) {
        total += l.w[i].completed;
        if (l.w[i].sock && !l.bye)
            proto_send(l.w[i].sock, NULL, 0, MSG_BYE, &s_nil, 1, NULL, 0);
    }
    printf("{\"system\": \"shoal\", \"workload\": \"simworkers\", \"workers\": %d, "
           "\"registered\": %d, \"completed\": %" PRIu64 ", "
           "\"bad_items\": %" PRIu64 ", \"errors\": %" PRIu64 "}\n",
           l.n, l.welcomed, total, l.bad, l.errors);
    fflush(stdout);
    rc = 0;
out:
    if (l.w) {
        for (int i = 0; i < l.n; i++) {
            if (l.w[i].sock)
                zmq_close(l.w[i].sock);
            proto_batch_destroy(&l.w[i].out);
        }
    }
    if (ctx)
        zmq_ctx_term(ctx);
    if (ep >= 0)
        close(ep);
    free(l.w);
    free(l.stack);
    return rc;
}
