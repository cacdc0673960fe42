/*
 * test_faults.c - end to end: failures.  Workers killed while running tasks
 * (supervised and not), a worker that stops answering, a task that crashes
 * its worker, the scheduler killed or stopped under a client, unreachable
 * schedulers, and malformed or hostile frames sent straight to the
 * scheduler's socket.  After each, the survivors must still work.
 *
 * The raw-socket tests build frames by hand from docs/PROTOCOL.md (header
 * 'S' 'H' version type 0 0 0 0, then a MessagePack body) instead of using
 * common/proto.c, so they check the scheduler against the specification.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "e2e.h"

/* --- worker faults ---------------------------------------------------------------- */

static shoal_future_t **s_submit_slow(shoal_client_t *c, int n, double secs)
{
    shoal_future_t **fs = calloc((size_t)n, sizeof *fs);

    ck_assert(fs != NULL);
    for (int i = 0; i < n; i++)
        fs[i] = SUB_SLOW(c, i, secs, NULL);
    return fs;
}

static void s_check_slow(shoal_future_t **fs, int n, double timeout)
{
    shoal_error_t err;

    ck_assert_msg(shoal_gather(fs, (size_t)n, timeout, &err) == 0, "gather: %s", err.msg);
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(I64(fs[i]), i + 1);
        shoal_release(fs[i]);
    }
    free(fs);
}

START_TEST(test_supervised_worker_killed)
{
    enum { N = 40 };
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 1, .worker_args = "--nworkers 2");
    shoal_client_t *c = cl->client;
    pid_t sup = cl->worker_pid[0], victim = 0;
    shoal_status_info_t st;
    shoal_future_t **fs;
    int nchild = 0;

    fs = s_submit_slow(c, N, 0.2);
    e2e_sleep(0.8);
    STATUS(c, &st);
    ck_assert_int_eq(st.nworkers, 2);
    for (int i = 0; i < st.nworkers; i++) {
        pid_t p = (pid_t)st.workers[i].pid;
        /* Only ever kill a process we can prove is the supervisor's child. */
        ck_assert_msg(p > 1 && cluster_ppid(p) == sup,
                      "worker %s pid %d is not a child of supervisor %d",
                      st.workers[i].name, (int)p, (int)sup);
        nchild++;
        if (!victim && st.workers[i].running > 0)
            victim = p;
    }
    shoal_status_free(&st);
    ck_assert_int_eq(nchild, 2);
    ck_assert_msg(victim > 0, "no worker was running a task 0.8 s in");
    ck_assert_int_eq(kill(victim, SIGKILL), 0);

    /* Every task completes, with the right result. */
    s_check_slow(fs, N, 45.0);
    /* The supervisor is still there and has replaced its child. */
    ck_assert(proc_alive(sup));
    ck_assert_msg(cluster_wait_nworkers(c, 2, 15.0) == 0, "the crashed worker was not restarted");
    STATUS(c, &st);
    for (int i = 0; i < st.nworkers; i++) {
        ck_assert_msg(st.workers[i].pid != victim, "the killed worker is still listed");
        ck_assert_int_eq(cluster_ppid((pid_t)st.workers[i].pid), sup);
    }
    shoal_status_free(&st);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_plain_worker_killed)
{
    enum { N = 20 };
    cluster_t *cl = CLUSTER(.nworkers = 2, .nthreads = 1);
    shoal_client_t *c = cl->client;
    shoal_status_info_t st;
    shoal_future_t **fs, *f;
    const char *w;

    fs = s_submit_slow(c, N, 0.2);
    e2e_sleep(0.5);
    ck_assert_int_eq(cluster_signal_worker(cl, 0, SIGKILL, 1), 0);
    /* Its tasks are run again on the other worker. */
    s_check_slow(fs, N, 40.0);
    ck_assert_msg(cluster_wait_nworkers(c, 1, 15.0) == 0, "the dead worker is still listed");
    STATUS(c, &st);
    ck_assert_str_eq(st.workers[0].name, "e2e-w1");
    shoal_status_free(&st);
    f = SUB_S(c, "fail", NULL, "after-kill");
    CONTAINS(ERRTEXT(f), "after-kill");
    w = shoal_future_worker(f);
    ck_assert_msg(w && strcmp(w, "e2e-w1") == 0, "failed on worker %s", w ? w : "(null)");
    shoal_release(f);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_worker_stops_answering)
{
    enum { N = 12 };
    cluster_t *cl = CLUSTER(.nworkers = 2, .nthreads = 1, .sched_args = "--worker-ttl 2");
    shoal_client_t *c = cl->client;
    shoal_future_t **fs;
    double t0;

    fs = s_submit_slow(c, N, 0.2);
    e2e_sleep(0.3);
    /* Frozen: the TCP connection stays up but no heartbeat comes. */
    ck_assert_int_eq(kill(cl->worker_pid[0], SIGSTOP), 0);
    t0 = e2e_now();
    s_check_slow(fs, N, 30.0);
    ck_assert_msg(e2e_now() - t0 < 20.0, "tasks of the frozen worker took %.1f s",
                  e2e_now() - t0);
    ck_assert_msg(cluster_wait_nworkers(c, 1, 10.0) == 0,
                  "the frozen worker was not removed after --worker-ttl");
    /* Thawed, it finds it was forgotten (ERROR code 4) and registers again;
     * its stale results must not disturb anything. */
    ck_assert_int_eq(kill(cl->worker_pid[0], SIGCONT), 0);
    ck_assert_msg(cluster_wait_nworkers(c, 2, 15.0) == 0,
                  "the thawed worker did not register again");
    fs = s_submit_slow(c, 6, 0.1);
    s_check_slow(fs, 6, 20.0);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_crashing_task)
{
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 1, .worker_args = "--nworkers 2");
    shoal_client_t *c = cl->client;
    shoal_future_t *f, *ok;
    double t0 = e2e_now();

    /* A task that kills every worker it runs on must end up failed, not be
     * placed again forever. */
    f = SUB_0(c, "crash", NULL);
    ck_assert_msg(e2e_wait_done(f, 40.0) == 0, "a crashing task never finished (%.0f s)",
                  e2e_now() - t0);
    ck_assert_int_eq(shoal_future_status(f), SHOAL_ERROR);
    ck_assert(shoal_future_error(f) && shoal_future_error(f)[0]);
    shoal_release(f);
    ck_assert_msg(cluster_wait_nworkers(c, 2, 20.0) == 0, "workers were not restarted");
    ok = SUB_I(c, "inc", NULL, 1);
    ck_assert_int_eq(I64(ok), 2);
    shoal_release(ok);
    cluster_stop(cl);
}
END_TEST

/* --- raw frames -------------------------------------------------------------------- */

typedef struct raw_msg {
    int nparts;
    uint8_t hdr[8];
    size_t hdr_len;
    msgpack_unpacked body;   /* strs and bins point into raw */
    int body_ok;
    char *raw;               /* copy of the body frame */
} raw_msg_t;

static void s_hdr(uint8_t *h, int version, int type)
{
    h[0] = 'S';
    h[1] = 'H';
    h[2] = (uint8_t)version;
    h[3] = (uint8_t)type;
    h[4] = h[5] = h[6] = h[7] = 0;
}

static void *s_dealer(void *ctx, const char *addr)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;

    ck_assert(s != NULL);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_SNDHWM, &zero, sizeof zero);
    ck_assert_int_eq(zmq_connect(s, addr), 0);
    return s;
}

/* Send parts[0..n-1] as one multipart message. */
static void s_send(void *s, const void *const *parts, const size_t *lens, int n)
{
    for (int i = 0; i < n; i++)
        ck_assert_msg(zmq_send(s, parts[i], lens[i], i + 1 < n ? ZMQ_SNDMORE : 0) >= 0,
                      "zmq_send: %s", zmq_strerror(zmq_errno()));
}

/* Header + body. */
static void s_send2(void *s, int version, int type, const void *body, size_t len)
{
    uint8_t h[8];
    const void *parts[2] = {h, body};
    size_t lens[2] = {8, len};

    s_hdr(h, version, type);
    s_send(s, parts, lens, 2);
}

/* Receive one message within `timeout`; 0, or -1 on timeout. */
static int s_recv(void *s, double timeout, raw_msg_t *m)
{
    zmq_pollitem_t it = {.socket = s, .events = ZMQ_POLLIN};
    int more = 1;

    memset(m, 0, sizeof *m);
    msgpack_unpacked_init(&m->body);
    if (zmq_poll(&it, 1, (long)(timeout * 1000)) <= 0)
        return -1;
    while (more) {
        zmq_msg_t part;
        size_t ml = sizeof more;
        zmq_msg_init(&part);
        ck_assert(zmq_msg_recv(&part, s, 0) >= 0);
        if (m->nparts == 0) {
            m->hdr_len = zmq_msg_size(&part) < 8 ? zmq_msg_size(&part) : 8;
            memcpy(m->hdr, zmq_msg_data(&part), m->hdr_len);
        } else if (m->nparts == 1) {
            size_t off = 0, n = zmq_msg_size(&part);
            m->raw = malloc(n ? n : 1);
            ck_assert(m->raw != NULL);
            memcpy(m->raw, zmq_msg_data(&part), n);
            m->body_ok = msgpack_unpack_next(&m->body, m->raw, n, &off) ==
                             MSGPACK_UNPACK_SUCCESS && off == n;
        }
        m->nparts++;
        zmq_getsockopt(s, ZMQ_RCVMORE, &more, &ml);
        zmq_msg_close(&part);
    }
    return 0;
}

static void s_msg_free(raw_msg_t *m)
{
    msgpack_unpacked_destroy(&m->body);
    free(m->raw);
    m->raw = NULL;
}

static const msgpack_object *s_get(const msgpack_object *map, const char *key)
{
    if (map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
            memcmp(k->via.str.ptr, key, k->via.str.size) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

/* Wait for a message of `type` (skipping others); returns 0 and fills m. */
static int s_expect(void *s, int type, double timeout, raw_msg_t *m)
{
    double end = e2e_now() + timeout;

    for (;;) {
        double left = end - e2e_now();
        if (left <= 0 || s_recv(s, left, m) < 0)
            return -1;
        if (m->hdr_len == 8 && m->hdr[0] == 'S' && m->hdr[1] == 'H' && m->hdr[3] == type)
            return 0;
        s_msg_free(m);
    }
}

/* Expect an ERROR reply; returns its code. */
static int s_expect_error(void *s, const char *what)
{
    raw_msg_t m;
    const msgpack_object *code, *text;
    int c;

    ck_assert_msg(s_expect(s, 3, 5.0, &m) == 0, "%s: no ERROR reply", what);
    ck_assert_msg(m.hdr[2] == 1, "%s: reply has protocol version %d", what, m.hdr[2]);
    ck_assert_msg(m.body_ok, "%s: ERROR body does not decode", what);
    code = s_get(&m.body.data, "code");
    text = s_get(&m.body.data, "message");
    ck_assert_msg(code && code->type == MSGPACK_OBJECT_POSITIVE_INTEGER,
                  "%s: ERROR without a code", what);
    ck_assert_msg(text && text->type == MSGPACK_OBJECT_STR && text->via.str.size > 0,
                  "%s: ERROR without a message", what);
    c = (int)code->via.u64;
    s_msg_free(&m);
    return c;
}

static void s_pack_hello(msgpack_sbuffer *sb, const char *role)
{
    msgpack_packer pk;

    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    shoal_pack_cstr(&pk, "role");
    shoal_pack_cstr(&pk, role);
    shoal_pack_cstr(&pk, "name");
    shoal_pack_cstr(&pk, "raw-e2e");
    shoal_pack_cstr(&pk, "host");
    shoal_pack_cstr(&pk, "localhost");
    shoal_pack_cstr(&pk, "pid");
    msgpack_pack_int(&pk, (int)getpid());
    shoal_pack_cstr(&pk, "proto");
    msgpack_pack_int(&pk, 1);
}

/* A registered raw client socket; *client_id receives the WELCOME id. */
static void *s_raw_client(void *ctx, const char *addr, uint64_t *client_id)
{
    void *s = s_dealer(ctx, addr);
    msgpack_sbuffer sb;
    raw_msg_t m;
    const msgpack_object *id;

    s_pack_hello(&sb, "client");
    s_send2(s, 1, 1, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    ck_assert_msg(s_expect(s, 2, 5.0, &m) == 0, "no WELCOME to a correct HELLO");
    ck_assert(m.body_ok);
    id = s_get(&m.body.data, "id");
    ck_assert_msg(id && id->type == MSGPACK_OBJECT_POSITIVE_INTEGER, "WELCOME without an id");
    *client_id = id->via.u64;
    s_msg_free(&m);
    return s;
}

/* SUBMIT of one task inc(x) with task id `id`, optionally depending on dep. */
static void s_raw_submit(void *s, uint64_t id, int64_t x, uint64_t dep)
{
    msgpack_sbuffer sb, args;
    msgpack_packer pk, ak;

    msgpack_sbuffer_init(&args);
    msgpack_packer_init(&ak, &args, msgpack_sbuffer_write);
    msgpack_pack_array(&ak, 1);
    if (dep) {
        unsigned char be[8];
        for (int i = 0; i < 8; i++)
            be[i] = (unsigned char)(dep >> (56 - 8 * i));
        msgpack_pack_ext(&ak, 8, SHOAL_EXT_FUTURE);
        msgpack_pack_ext_body(&ak, be, 8);
    } else {
        msgpack_pack_int64(&ak, x);
    }
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 1);          /* the batch */
    msgpack_pack_array(&pk, 7);          /* one item */
    msgpack_pack_uint64(&pk, id);
    shoal_pack_cstr(&pk, "inc");
    msgpack_pack_bin(&pk, args.size);
    msgpack_pack_bin_body(&pk, args.data, args.size);
    msgpack_pack_array(&pk, dep ? 1 : 0);
    if (dep)
        msgpack_pack_uint64(&pk, dep);
    msgpack_pack_int(&pk, 0);
    msgpack_pack_int(&pk, 0);
    msgpack_pack_nil(&pk);
    s_send2(s, 1, 10, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    msgpack_sbuffer_destroy(&args);
}

/* Wait for the RESULT item of task `id`; returns its status, fills *value
 * with the integer result for status 0. */
static int s_raw_result(void *s, uint64_t id, int64_t *value)
{
    double end = e2e_now() + 10.0;

    for (;;) {
        raw_msg_t m;
        double left = end - e2e_now();
        ck_assert_msg(left > 0 && s_expect(s, 11, left, &m) == 0, "no RESULT for task %llu",
                      (unsigned long long)id);
        ck_assert(m.body_ok && m.body.data.type == MSGPACK_OBJECT_ARRAY);
        for (uint32_t i = 0; i < m.body.data.via.array.size; i++) {
            const msgpack_object *it = &m.body.data.via.array.ptr[i];
            int st;
            ck_assert(it->type == MSGPACK_OBJECT_ARRAY && it->via.array.size >= 3);
            if (it->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
                it->via.array.ptr[0].via.u64 != id)
                continue;
            st = (int)it->via.array.ptr[1].via.u64;
            if (st == 0 && value) {
                const msgpack_object *p = &it->via.array.ptr[2];
                msgpack_unpacked up;
                ck_assert(p->type == MSGPACK_OBJECT_BIN);
                msgpack_unpacked_init(&up);
                ck_assert(msgpack_unpack_next(&up, p->via.bin.ptr, p->via.bin.size, NULL) ==
                          MSGPACK_UNPACK_SUCCESS);
                ck_assert(up.data.type == MSGPACK_OBJECT_POSITIVE_INTEGER);
                *value = (int64_t)up.data.via.u64;
                msgpack_unpacked_destroy(&up);
            }
            if (st == 1)
                ck_assert_msg(it->via.array.ptr[2].type == MSGPACK_OBJECT_STR &&
                                  it->via.array.ptr[2].via.str.size > 0,
                              "an error RESULT without its reason");
            s_msg_free(&m);
            return st;
        }
        s_msg_free(&m);
    }
}

/* Watch a socket for ZMQ_EVENT_DISCONNECTED. */
static void *s_monitor(void *ctx, void *s, const char *name)
{
    char ep[64];
    void *mon;

    snprintf(ep, sizeof ep, "inproc://%s", name);
    ck_assert_int_eq(zmq_socket_monitor(s, ep, ZMQ_EVENT_DISCONNECTED), 0);
    mon = zmq_socket(ctx, ZMQ_PAIR);
    ck_assert(mon != NULL);
    ck_assert_int_eq(zmq_connect(mon, ep), 0);
    return mon;
}

static int s_wait_disconnected(void *mon, double timeout)
{
    raw_msg_t m;
    int rc = -1;

    /* Event frame: uint16 event, uint32 value; then the endpoint frame. */
    while (s_recv(mon, timeout, &m) == 0) {
        uint16_t ev;
        memcpy(&ev, m.hdr, sizeof ev);
        s_msg_free(&m);
        if (ev == ZMQ_EVENT_DISCONNECTED) {
            rc = 0;
            break;
        }
    }
    return rc;
}

/* --- scheduler faults -------------------------------------------------------------- */

START_TEST(test_scheduler_killed)
{
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 1);
    shoal_client_t *c = cl->client;
    shoal_future_t *s, *dep, *late;
    shoal_status_info_t st;
    shoal_error_t err;
    double t0;

    s = SUB_SLOW(c, 0, 60.0, NULL);
    dep = SUB_F(c, "inc", NULL, s);
    e2e_sleep(0.3);
    ck_assert_int_eq(cluster_signal_scheduler(cl, SIGKILL, 1), 0);
    t0 = e2e_now();
    /* Pending futures fail within a bounded time instead of hanging. */
    ck_assert_msg(e2e_wait_done(s, 15.0) == 0, "future still pending %.0f s after the "
                  "scheduler died", e2e_now() - t0);
    ck_assert_msg(e2e_now() - t0 < 15.0, "took %.1f s", e2e_now() - t0);
    ck_assert_int_eq(shoal_future_status(s), SHOAL_ERROR);
    ck_assert(e2e_wait_done(dep, 5.0) == 0);
    ck_assert_int_eq(shoal_future_status(dep), SHOAL_ERROR);
    fprintf(stderr, "test_scheduler_killed: futures failed %.2f s after the kill: %s\n",
            e2e_now() - t0, shoal_future_error(s));
    /* New work on a dead connection fails too (now or promptly). */
    memset(&err, 0, sizeof err);
    late = shoal_submit(c, "inc", "\x91\x01", 2, NULL, &err);
    if (late) {
        ck_assert_msg(e2e_wait_done(late, 10.0) == 0, "a task submitted after the loss hangs");
        ck_assert_int_eq(shoal_future_status(late), SHOAL_ERROR);
        shoal_release(late);
    } else {
        ck_assert(err.msg[0] != '\0');
    }
    ck_assert_int_eq(shoal_status(c, &st, 2.0, &err), -1);
    shoal_release(s);
    shoal_release(dep);
    t0 = e2e_now();
    cluster_stop(cl);   /* includes shoal_disconnect: must not hang either */
    ck_assert_msg(e2e_now() - t0 < 15.0, "stopping took %.1f s", e2e_now() - t0);
}
END_TEST

START_TEST(test_scheduler_terminated)
{
    cluster_t *cl = CLUSTER(.nworkers = 2, .nthreads = 1);
    shoal_client_t *c = cl->client;
    shoal_future_t *s;
    pid_t sched = cl->sched_pid;
    double t0;
    int status;

    void *ctx = zmq_ctx_new(), *raw;
    uint64_t cid;
    raw_msg_t m;

    /* A raw client too, to see the BYE on the wire. */
    ck_assert(ctx != NULL);
    raw = s_raw_client(ctx, cl->address, &cid);
    s = SUB_SLOW(c, 0, 60.0, NULL);
    e2e_sleep(0.3);
    t0 = e2e_now();
    ck_assert_int_eq(kill(sched, SIGTERM), 0);
    status = cluster_waitpid(sched, 10.0);
    ck_assert_msg(status != -1, "the scheduler ignored SIGTERM for 10 s");
    cl->sched_pid = 0;
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "scheduler exit status 0x%x after SIGTERM", status);
    ck_assert_msg(s_expect(raw, 5, 2.0, &m) == 0,
                  "the scheduler shut down without sending BYE to its clients");
    s_msg_free(&m);
    zmq_close(raw);
    zmq_ctx_term(ctx);
    /* It said goodbye: the client fails pending futures at once... */
    CONTAINS(ERRTEXT_T(s, 5.0), "shut down");
    ck_assert_msg(e2e_now() - t0 < 5.0, "futures failed %.1f s after the shutdown",
                  e2e_now() - t0);
    /* ...and the workers exit on their own. */
    for (int i = 0; i < cl->nprocs; i++) {
        int ws = cluster_waitpid(cl->worker_pid[i], 10.0);
        ck_assert_msg(ws != -1, "worker %d still running after the scheduler's BYE", i);
        cl->worker_pid[i] = 0;
    }
    shoal_release(s);
    cluster_stop(cl);
}
END_TEST

/* A TCP port on 127.0.0.1 that nobody listens on (bound, read, closed). */
static int s_free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    ck_assert(fd >= 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    ck_assert(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

START_TEST(test_connect_unreachable)
{
    char addr[64], path[700];
    shoal_connect_opts_t o;
    shoal_error_t err;
    shoal_client_t *c;
    double t0;
    int e;
    FILE *f;
    static const char *const bad[] = {"tcp://bad host:1", "127.0.0.1:99999", "tcp://:",
                                      "tcp://127.0.0.1:-5", ""};

    snprintf(addr, sizeof addr, "tcp://127.0.0.1:%d", s_free_port());
    memset(&o, 0, sizeof o);
    o.address = addr;
    o.timeout = 1.0;
    t0 = e2e_now();
    memset(&err, 0, sizeof err);
    c = shoal_connect_opts(&o, &err);
    e = errno;
    ck_assert_msg(c == NULL, "connected to a port nobody listens on");
    ck_assert_msg(e == ETIMEDOUT, "errno %d (%s), expected ETIMEDOUT", e, strerror(e));
    ck_assert_msg(e2e_now() - t0 < 3.0, "a 1 s connect timeout took %.2f s", e2e_now() - t0);
    ck_assert(err.msg[0] != '\0');

    /* Malformed addresses are refused at once. */
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&o, 0, sizeof o);
        o.address = bad[i];
        o.timeout = 5.0;
        t0 = e2e_now();
        memset(&err, 0, sizeof err);
        c = shoal_connect_opts(&o, &err);
        ck_assert_msg(c == NULL, "connected to \"%s\"", bad[i]);
        ck_assert_msg(err.msg[0] != '\0', "no reason for \"%s\"", bad[i]);
        ck_assert_msg(e2e_now() - t0 < 3.0, "\"%s\" took %.2f s", bad[i], e2e_now() - t0);
    }

    /* A scheduler file that does not exist, or holds garbage. */
    memset(&o, 0, sizeof o);
    snprintf(path, sizeof path, "%s/no-such-scheduler.json", cluster_tmpbase());
    o.scheduler_file = path;
    o.timeout = 1.0;
    t0 = e2e_now();
    c = shoal_connect_opts(&o, &err);
    ck_assert(c == NULL);
    ck_assert_msg(e2e_now() - t0 < 4.0, "missing scheduler file took %.2f s", e2e_now() - t0);
    snprintf(path, sizeof path, "%s/garbage-%d.json", cluster_tmpbase(), (int)getpid());
    f = fopen(path, "w");
    ck_assert(f != NULL);
    fputs("{\"address\": 12, \"type\": [\"x\"", f);
    fclose(f);
    t0 = e2e_now();
    c = shoal_connect_opts(&o, &err);
    unlink(path);
    ck_assert(c == NULL);
    ck_assert_msg(e2e_now() - t0 < 4.0, "garbage scheduler file took %.2f s", e2e_now() - t0);
}
END_TEST

START_TEST(test_malformed_frames)
{
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 1, .sched_args = "--max-message-size 1MB");
    void *ctx = zmq_ctx_new();
    void *s, *reg, *mon;
    msgpack_sbuffer sb;
    uint64_t cid;
    int64_t v = 0;
    int code;

    ck_assert(ctx != NULL);

    /* Garbage header. */
    s = s_dealer(ctx, cl->address);
    {
        const void *p[2] = {"XXXXXXXX", "\xc0"};
        size_t l[2] = {8, 1};
        s_send(s, p, l, 2);
        ck_assert_int_eq(s_expect_error(s, "garbage header"), 1);
    }
    /* A header that is too short, alone. */
    {
        const void *p[1] = {"SH"};
        size_t l[1] = {2};
        s_send(s, p, l, 1);
        ck_assert_int_eq(s_expect_error(s, "short header"), 1);
    }
    /* Wrong protocol version. */
    s_pack_hello(&sb, "client");
    s_send2(s, 2, 1, sb.data, sb.size);
    ck_assert_int_eq(s_expect_error(s, "version 2"), 2);
    /* Truncated MessagePack body. */
    s_send2(s, 1, 1, sb.data, sb.size - 3);
    ck_assert_int_eq(s_expect_error(s, "truncated body"), 1);
    /* Trailing bytes after the body. */
    {
        msgpack_sbuffer_write(&sb, "\xc0", 1);
        s_send2(s, 1, 1, sb.data, sb.size);
        ck_assert_int_eq(s_expect_error(s, "trailing bytes"), 1);
    }
    msgpack_sbuffer_destroy(&sb);
    /* Messages before HELLO. */
    s_send2(s, 1, 10, "\x90", 1);
    ck_assert_int_eq(s_expect_error(s, "SUBMIT before HELLO"), 4);
    s_send2(s, 1, 4, "\xc0", 1);
    ck_assert_int_eq(s_expect_error(s, "HEARTBEAT before HELLO"), 4);
    /* HELLO with a body of the wrong shape, and with an unknown role. */
    s_send2(s, 1, 1, "\x81\xa4role\x05", 7);
    code = s_expect_error(s, "HELLO with role 5");
    ck_assert_msg(code == 1 || code == 6, "HELLO with role 5: code %d", code);
    s_pack_hello(&sb, "alien");
    s_send2(s, 1, 1, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    code = s_expect_error(s, "HELLO with role alien");
    ck_assert_msg(code == 1 || code == 6, "HELLO with role alien: code %d", code);
    zmq_close(s);

    /* A registered client. */
    reg = s_raw_client(ctx, cl->address, &cid);
    {
        static const int types[] = {0, 9, 31, 32, 200, 255};
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
            char what[64];
            snprintf(what, sizeof what, "unknown type %d", types[i]);
            s_send2(reg, 1, types[i], "\xc0", 1);
            ck_assert_int_eq(s_expect_error(reg, what), 3);
        }
    }
    /* A worker's message from a client is refused. */
    s_send2(reg, 1, 21, "\x90", 1);
    code = s_expect_error(reg, "TASK_DONE from a client");
    ck_assert_msg(code >= 1 && code <= 6, "TASK_DONE from a client: code %d", code);
    /* Too many data frames. */
    {
        uint8_t h[8];
        const void *p[22];
        size_t l[22];
        s_hdr(h, 1, 16);
        p[0] = h;
        l[0] = 8;
        p[1] = "\x81\xa3req\x01";
        l[1] = 6;
        for (int i = 2; i < 22; i++) {
            p[i] = "x";
            l[i] = 1;
        }
        s_send(reg, p, l, 22);
        ck_assert_int_eq(s_expect_error(reg, "20 data frames"), 1);
    }
    /* A well-formed SUBMIT through the raw socket works... */
    s_raw_submit(reg, (cid << 40) | 1, 41, 0);
    ck_assert_int_eq(s_raw_result(reg, (cid << 40) | 1, &v), 0);
    ck_assert_int_eq(v, 42);
    /* ...a duplicate id, or a dependency on an unknown id, gets an error RESULT. */
    s_raw_submit(reg, (cid << 40) | 1, 5, 0);
    ck_assert_int_eq(s_raw_result(reg, (cid << 40) | 1, NULL), 1);
    s_raw_submit(reg, (cid << 40) | 2, 0, (cid << 40) | 999);
    ck_assert_int_eq(s_raw_result(reg, (cid << 40) | 2, NULL), 1);
    /* STATUS answers with the documented reply. */
    s_send2(reg, 1, 16, "\x81\xa3req\x07", 6);
    {
        raw_msg_t m;
        const msgpack_object *req, *workers, *tasks;
        ck_assert_msg(s_expect(reg, 17, 5.0, &m) == 0, "no STATUS_REPLY");
        ck_assert(m.body_ok);
        req = s_get(&m.body.data, "req");
        workers = s_get(&m.body.data, "workers");
        tasks = s_get(&m.body.data, "tasks");
        ck_assert(req && req->type == MSGPACK_OBJECT_POSITIVE_INTEGER && req->via.u64 == 7);
        ck_assert(workers && workers->type == MSGPACK_OBJECT_ARRAY &&
                  workers->via.array.size == 1);
        ck_assert(tasks && s_get(tasks, "total"));
        s_msg_free(&m);
    }
    /* Junk inside well-formed messages: no crash (replies are optional). */
    s_send2(reg, 1, 10, "\x93\x01\xa1x\xc0", 5);            /* items that are not tasks */
    s_send2(reg, 1, 10, "\x91\x97\xa1x\x01\x02\x03\x04\x05\x06", 10);
    s_send2(reg, 1, 12, "\x93\xa1x\xff\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 13);
    s_send2(reg, 1, 13, "\x92\x01\x02", 3);                /* CANCEL unknown ids */
    s_send2(reg, 1, 16, "\x80", 1);                        /* STATUS without req */
    s_send2(reg, 1, 14, "\x82\xa3req\x01\xa4name\xa1x", 13); /* UPLOAD_LIB, no frame */
    s_send2(reg, 1, 5, "\xc0", 1);                         /* BYE */
    e2e_sleep(0.2);
    zmq_close(reg);

    /* Random junk, reproducibly. */
    s = s_dealer(ctx, cl->address);
    reg = s_raw_client(ctx, cl->address, &cid);
    srand(12345);
    for (int i = 0; i < 300; i++) {
        unsigned char buf[2][64];
        const void *p[2] = {buf[0], buf[1]};
        size_t l[2];
        for (int k = 0; k < 2; k++) {
            l[k] = (size_t)(rand() % 64);
            for (size_t j = 0; j < l[k]; j++)
                buf[k][j] = (unsigned char)rand();
        }
        if (i % 2) {   /* a valid header, random body */
            s_hdr(buf[0], 1, rand() % 40);
            l[0] = 8;
        }
        s_send(i % 3 ? reg : s, p, l, 2);
    }
    e2e_sleep(0.5);
    zmq_close(s);
    zmq_close(reg);

    /* An oversized frame: the scheduler drops that connection... */
    s = s_dealer(ctx, cl->address);
    mon = s_monitor(ctx, s, "mon-big");
    {
        size_t big = 2u << 20;
        char *body = calloc(1, big);
        uint8_t h[8];
        const void *p[2] = {h, body};
        size_t l[2] = {8, big};
        ck_assert(body != NULL);
        s_hdr(h, 1, 1);
        s_send(s, p, l, 2);
        free(body);
    }
    ck_assert_msg(s_wait_disconnected(mon, 10.0) == 0,
                  "the scheduler did not drop a connection that sent 2 MB over a 1 MB limit");
    zmq_close(mon);
    zmq_close(s);

    /* ...and survives: still running, and a normal client gets work done. */
    ck_assert_msg(proc_alive(cl->sched_pid), "the scheduler died");
    {
        shoal_client_t *c2;
        shoal_error_t err;
        shoal_status_info_t st;
        shoal_future_t *f;

        c2 = shoal_connect(cl->address, &err);
        ck_assert_msg(c2 != NULL, "connect after the abuse: %s", err.msg);
        f = SUB_I(c2, "inc", NULL, 99);
        ck_assert_int_eq(I64(f), 100);
        shoal_release(f);
        STATUS(c2, &st);
        ck_assert_int_eq(st.nworkers, 1);
        shoal_status_free(&st);
        shoal_disconnect(c2);
    }
    zmq_ctx_term(ctx);
    cluster_stop(cl);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("e2e_faults");
    TCase *w = e2e_tcase("worker_faults");
    TCase *sc = e2e_tcase("scheduler_faults");
    TCase *raw = e2e_tcase("raw_frames");

    e2e_add(w, test_supervised_worker_killed);
    e2e_add(w, test_plain_worker_killed);
    e2e_add(w, test_worker_stops_answering);
    e2e_add(w, test_crashing_task);
    e2e_add(sc, test_scheduler_killed);
    e2e_add(sc, test_scheduler_terminated);
    e2e_add(sc, test_connect_unreachable);
    e2e_add(raw, test_malformed_frames);
    suite_add_tcase(s, w);
    suite_add_tcase(s, sc);
    suite_add_tcase(s, raw);
    return s;
}

int main(void)
{
    return e2e_run(s_suite());
}
