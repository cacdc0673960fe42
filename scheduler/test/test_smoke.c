/*
 * test_smoke.c - end-to-end checks of bin/shoal-scheduler over the wire:
 * handshake, garbage of every kind answered with the right ERROR (and the
 * scheduler still serving afterwards), a task graph through a fake worker,
 * dead-connection detection, release, options, and SIGTERM (BYE, exit 0,
 * scheduler file removed).
 *
 * Each test starts its own scheduler on an ephemeral port (--port 0) and
 * reads the address from its scheduler file.  The scheduler is killed by
 * pid in teardown, and gets SIGKILL from the kernel if the test process
 * dies first (PR_SET_PDEATHSIG), so no test leaves one behind.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "mp.h"
#include "proto.h"
#include "util.h"

static pid_t g_pid = -1;
static char g_dir[64];
static char g_sfile[PATH_MAX];
static char g_addr[SHOAL_ADDR_MAX];
static void *g_ctx;
static const char *g_ttl = "30";

/* ---- starting and stopping the scheduler ---------------------------------------------- */

/* bin/shoal-scheduler of this tree: this binary is build/test/scheduler/X. */
static void s_bin_path(char *out, size_t cap)
{
    const char *env = getenv("SHOAL_SCHEDULER_BIN");
    if (env && *env) {
        snprintf(out, cap, "%s", env);
        return;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    ck_assert_int_gt(n, 0);
    self[n] = '\0';
    for (int up = 0; up < 4; up++) {
        char *slash = strrchr(self, '/');
        ck_assert_ptr_nonnull(slash);
        *slash = '\0';
    }
    ck_assert_int_eq(util_fmt(out, cap, "%s/bin/shoal-scheduler", self), 0);
}

/* Run the scheduler with `args` (NULL-terminated, after argv[0]); returns
 * its pid. */
static pid_t s_spawn(const char *const *args, int quiet)
{
    char bin[PATH_MAX];
    s_bin_path(bin, sizeof bin);
    ck_assert_msg(access(bin, X_OK) == 0, "%s is not built", bin);
    const char *argv[32];
    size_t k = 0;
    argv[k++] = bin;
    for (size_t i = 0; args[i] && k < 31; i++)
        argv[k++] = args[i];
    argv[k] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        if (quiet) {
            int fd = open("/dev/null", O_WRONLY);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
            }
        }
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Wait up to `timeout` s for pid to exit; its wait status, or -1. */
static int s_wait_exit(pid_t pid, double timeout)
{
    double end = util_now() + timeout;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        if (r < 0 || util_now() > end)
            return -1;
        usleep(10000);
    }
}

static void setup(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/shoal-smoke-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(g_dir));
    snprintf(g_sfile, sizeof g_sfile, "%s/scheduler.json", g_dir);
    const char *args[] = {"--port", "0", "--scheduler-file", g_sfile, "--worker-ttl", g_ttl,
                          "--log-level", "warn", NULL};
    g_pid = s_spawn(args, getenv("SHOAL_TEST_VERBOSE") == NULL);
    char err[256];
    ck_assert_msg(util_sfile_read(g_sfile, 10.0, g_addr, sizeof g_addr, err, sizeof err) == 0,
                  "no scheduler file: %s", err);
    g_ctx = zmq_ctx_new();
    ck_assert_ptr_nonnull(g_ctx);
}

static void setup_short_ttl(void)
{
    g_ttl = "1";
    setup();
}

static void teardown(void)
{
    if (g_pid > 0) {
        kill(g_pid, SIGKILL);
        waitpid(g_pid, NULL, 0);
        g_pid = -1;
    }
    if (g_ctx) {
        zmq_ctx_term(g_ctx);
        g_ctx = NULL;
    }
    unlink(g_sfile);
    rmdir(g_dir);
}

/* ---- wire helpers ------------------------------------------------------------------------ */

static void *s_connect(void)
{
    void *s = zmq_socket(g_ctx, ZMQ_DEALER);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(proto_sock_setup(s, 0), 0);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    ck_assert_int_eq(zmq_connect(s, g_addr), 0);
    return s;
}

static void s_raw(void *s, const void *hdr, size_t hl, const void *body, size_t bl, int with_body)
{
    ck_assert_int_ge(zmq_send(s, hdr, hl, with_body ? ZMQ_SNDMORE : 0), 0);
    if (with_body)
        ck_assert_int_ge(zmq_send(s, body, bl, 0), 0);
}

static void s_send(void *s, int type, const msgpack_sbuffer *sb)
{
    ck_assert_int_eq(proto_send(s, NULL, 0, type, sb ? sb->data : NULL, sb ? sb->size : 0,
                                NULL, 0), 0);
}

static proto_msg_t g_m;

/* The next message other than a heartbeat within `timeout` s, which must be
 * of type `want`; it stays in g_m until the next call. */
static proto_msg_t *s_expect(void *s, int want, double timeout)
{
    proto_msg_close(&g_m);
    double end = util_now() + timeout;
    for (;;) {
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        long ms = (long)((end - util_now()) * 1000);
        ck_assert_msg(ms > 0, "no %s within %.1f s", proto_type_name(want), timeout);
        zmq_poll(&it, 1, ms);
        if (!(it.revents & ZMQ_POLLIN))
            continue;
        ck_assert_int_eq(proto_recv(s, 0, &g_m, ZMQ_DONTWAIT), 0);
        if (g_m.hdr.type == MSG_HEARTBEAT && want != MSG_HEARTBEAT) {
            proto_msg_close(&g_m);
            continue;
        }
        ck_assert_msg(g_m.hdr.type == want, "expected %s, got %s", proto_type_name(want),
                      proto_type_name(g_m.hdr.type));
        return &g_m;
    }
}

/* Nothing arrives within `timeout` s (heartbeats aside). */
static void s_expect_nothing(void *s, double timeout)
{
    double end = util_now() + timeout;
    for (;;) {
        long ms = (long)((end - util_now()) * 1000);
        if (ms <= 0)
            return;
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        zmq_poll(&it, 1, ms);
        if (!(it.revents & ZMQ_POLLIN))
            continue;
        proto_msg_close(&g_m);
        ck_assert_int_eq(proto_recv(s, 0, &g_m, ZMQ_DONTWAIT), 0);
        ck_assert_msg(g_m.hdr.type == MSG_HEARTBEAT, "unexpected %s",
                      proto_type_name(g_m.hdr.type));
    }
}

static int64_t s_expect_error(void *s)
{
    proto_msg_t *m = s_expect(s, MSG_ERROR, 5);
    const msgpack_object *o = mp_map_get(&m->body, "code");
    int64_t code = -1;
    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(mp_i64(o, &code), 0);
    ck_assert_ptr_nonnull(mp_map_get(&m->body, "message"));
    return code;
}

static void s_pk(msgpack_sbuffer *sb, msgpack_packer *pk)
{
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
}

/* HELLO as `role`; returns the id from WELCOME. */
static uint64_t s_hello(void *s, const char *role, const char *name)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    s_pk(&sb, &pk);
    int worker = !strcmp(role, "worker");
    msgpack_pack_map(&pk, worker ? 6 : 5);
    mp_pack_cstr(&pk, "role");
    mp_pack_cstr(&pk, role);
    mp_pack_cstr(&pk, "name");
    mp_pack_cstr(&pk, name);
    mp_pack_cstr(&pk, "host");
    mp_pack_cstr(&pk, "localhost");
    mp_pack_cstr(&pk, "pid");
    msgpack_pack_int(&pk, getpid());
    mp_pack_cstr(&pk, "proto");
    msgpack_pack_int(&pk, PROTO_VERSION);
    if (worker) {
        mp_pack_cstr(&pk, "nthreads");
        msgpack_pack_int(&pk, 2);
    }
    s_send(s, MSG_HELLO, &sb);
    msgpack_sbuffer_destroy(&sb);
    proto_msg_t *m = s_expect(s, MSG_WELCOME, 5);
    uint64_t id = 0;
    const msgpack_object *o = mp_map_get(&m->body, "id");
    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(mp_u64(o, &id), 0);
    ck_assert_uint_ge(id, 1);
    ck_assert(mp_str_eq(mp_map_get(&m->body, "name"), name));
    return id;
}

/* STATUS; returns the "tasks" map value for key (and checks req echo). */
static uint64_t s_status(void *s, const char *key, uint64_t *nclients, uint64_t *nworkers)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    s_pk(&sb, &pk);
    msgpack_pack_map(&pk, 1);
    mp_pack_cstr(&pk, "req");
    msgpack_pack_int(&pk, 77);
    s_send(s, MSG_STATUS, &sb);
    msgpack_sbuffer_destroy(&sb);
    proto_msg_t *m = s_expect(s, MSG_STATUS_REPLY, 5);
    int64_t req = 0;
    ck_assert_int_eq(mp_i64(mp_map_get(&m->body, "req"), &req), 0);
    ck_assert_int_eq(req, 77);
    uint64_t v = 0;
    if (nclients)
        ck_assert_int_eq(mp_u64(mp_map_get(&m->body, "clients"), nclients), 0);
    const msgpack_object *w = mp_map_get(&m->body, "workers"), *items;
    size_t nw;
    ck_assert_int_eq(mp_array(w, &items, &nw), 0);
    if (nworkers)
        *nworkers = nw;
    ck_assert_int_eq(mp_u64(mp_map_get(mp_map_get(&m->body, "tasks"), key), &v), 0);
    return v;
}

/* One SUBMIT item: [id, func, args, deps, prio, retries, name]. */
static void s_pack_submit(msgpack_packer *pk, uint64_t id, const char *func,
                          const uint64_t *deps, size_t nd, const char *name)
{
    msgpack_pack_array(pk, 7);
    msgpack_pack_uint64(pk, id);
    mp_pack_cstr(pk, func);
    mp_pack_bin(pk, "\x91\x01", 2);
    msgpack_pack_array(pk, (uint32_t)nd);
    for (size_t i = 0; i < nd; i++)
        msgpack_pack_uint64(pk, deps[i]);
    msgpack_pack_int(pk, 0);
    msgpack_pack_int(pk, 0);
    mp_pack_cstr(pk, name);
}

/* ---- tests ------------------------------------------------------------------------------- */

START_TEST(test_garbage)
{
    void *c = s_connect();
    uint8_t hdr[PROTO_HDR_SIZE];
    static const uint8_t nil = 0xc0;

    /* Anything but HELLO before HELLO: not registered. */
    proto_hdr_encode(hdr, MSG_SUBMIT, 0);
    s_raw(c, hdr, sizeof hdr, "\x90", 1, 1);
    ck_assert_int_eq(s_expect_error(c), PERR_NOT_REGISTERED);
    proto_hdr_encode(hdr, MSG_STATUS, 0);
    s_raw(c, hdr, sizeof hdr, &nil, 1, 1);
    ck_assert_int_eq(s_expect_error(c), PERR_NOT_REGISTERED);
    /* Garbage before HELLO is still answered. */
    s_raw(c, "XXXXXXXX", 8, &nil, 1, 1);
    ck_assert_int_eq(s_expect_error(c), PERR_BAD_MESSAGE);

    uint64_t cid = s_hello(c, "client", "smoke-client");
    ck_assert_uint_ge(cid, 1);

    /* bad magic */
    memcpy(hdr, "XH\x01\x10\0\0\0\0", 8);
    s_raw(c, hdr, 8, &nil, 1, 1);
    ck_assert_int_eq(s_expect_error(c), PERR_BAD_MESSAGE);
    /* short header */
    s_raw(c, "SH\x01", 3, &nil, 1, 1);
    ck_assert_int_eq(s_expect_error(c), PERR_BAD_MESSAGE);
    /* wrong version */
    memcpy(hdr, "SH\x07\x10\0\0\0\0", 8);
    s_raw(c, hdr, 8, &nil, 1, 1);
    ck_assert_int_eq(s_expect_error(c), PERR_VERSION);
    /* truncated msgpack: an array of 3 with one element */
    proto_hdr_encode(hdr, MSG_SUBMIT, 0);
    s_raw(c, hdr, 8, "\x93\x01", 2, 1);
    ck_assert_int_eq(s_expect_error(c), PERR_BAD_MESSAGE);
    /* trailing bytes after the object */
    s_raw(c, hdr, 8, "\x90\x90", 2, 1);
    ck_assert_int_eq(s_expect_error(c), PERR_BAD_MESSAGE);
    /* huge declared lengths: str32, array32, map32, bin32 of 4 GiB */
    const char *huge[] = {"\xdb\xff\xff\xff\xff", "\xdd\xff\xff\xff\xff",
                          "\xdf\xff\xff\xff\xff", "\xc6\xff\xff\xff\xffxx"};
    for (size_t i = 0; i < 4; i++) {
        s_raw(c, hdr, 8, huge[i], strlen(huge[i]) < 5 ? 5 : strlen(huge[i]), 1);
        ck_assert_int_eq(s_expect_error(c), PERR_BAD_MESSAGE);
    }
    /* a SUBMIT item array claiming 65535 elements inside a tiny body */
    s_raw(c, hdr, 8, "\x91\xdc\xff\xff", 4, 1);
    ck_assert_int_eq(s_expect_error(c), PERR_BAD_MESSAGE);
    /* unknown types */
    proto_hdr_encode(hdr, 9, 0);
    s_raw(c, hdr, 8, &nil, 1, 1);
    ck_assert_int_eq(s_expect_error(c), PERR_UNKNOWN_TYPE);
    proto_hdr_encode(hdr, 250, 0);
    s_raw(c, hdr, 8, &nil, 1, 1);
    ck_assert_int_eq(s_expect_error(c), PERR_UNKNOWN_TYPE);
    /* a type a client may not send */
    proto_hdr_encode(hdr, MSG_TASK_DONE, 0);
    s_raw(c, hdr, 8, "\x90", 1, 1);
    ck_assert_int_eq(s_expect_error(c), PERR_BAD_REQUEST);
    proto_hdr_encode(hdr, MSG_COMPUTE, 0);
    s_raw(c, hdr, 8, "\x90", 1, 1);
    ck_assert_int_eq(s_expect_error(c), PERR_BAD_REQUEST);
    /* header without a body frame: nil body, wrong shape for SUBMIT */
    proto_hdr_encode(hdr, MSG_SUBMIT, 0);
    s_raw(c, hdr, 8, NULL, 0, 0);
    ck_assert_int_eq(s_expect_error(c), PERR_BAD_MESSAGE);
    /* well-formed msgpack, wrong shapes */
    s_raw(c, hdr, 8, "\x81\xa1x\x01", 4, 1); /* SUBMIT body a map */
    ck_assert_int_eq(s_expect_error(c), PERR_BAD_MESSAGE);
    proto_hdr_encode(hdr, MSG_STATUS, 0);
    s_raw(c, hdr, 8, "\x90", 1, 1);
    ck_assert_int_eq(s_expect_error(c), PERR_BAD_MESSAGE);
    proto_hdr_encode(hdr, MSG_RELEASE, 0);
    s_raw(c, hdr, 8, "\x92\xa1x\x01", 4, 1); /* ["x", 1] */
    ck_assert_int_eq(s_expect_error(c), PERR_BAD_MESSAGE);
    proto_hdr_encode(hdr, MSG_HELLO, 0);
    s_raw(c, hdr, 8, "\x81\xa4role\xa3" "cat", 10, 1);
    ck_assert_int_eq(s_expect_error(c), PERR_BAD_MESSAGE);
    proto_hdr_encode(hdr, MSG_UPLOAD_LIB, 0);
    s_raw(c, hdr, 8, "\x82\xa3req\x01\xa4name\xa1x", 12, 1); /* no data frame */
    ck_assert_int_eq(s_expect_error(c), PERR_BAD_MESSAGE);

    /* A malformed submission with a readable id completes that future. */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    s_pk(&sb, &pk);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 7);
    msgpack_pack_uint64(&pk, (cid << 40) | 1);
    msgpack_pack_int(&pk, 5); /* func must be a string */
    mp_pack_bin(&pk, "\x90", 1);
    msgpack_pack_array(&pk, 0);
    msgpack_pack_int(&pk, 0);
    msgpack_pack_int(&pk, 0);
    msgpack_pack_nil(&pk);
    s_send(c, MSG_SUBMIT, &sb);
    msgpack_sbuffer_destroy(&sb);
    ck_assert_int_eq(s_expect_error(c), PERR_BAD_MESSAGE);
    proto_msg_t *m = s_expect(c, MSG_RESULT, 5);
    const msgpack_object *items, *it;
    size_t n, k;
    ck_assert_int_eq(mp_array(&m->body, &items, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(mp_array(&items[0], &it, &k), 0);
    ck_assert_uint_eq(k, 4);
    int64_t st;
    ck_assert_int_eq(mp_i64(&it[1], &st), 0);
    ck_assert_int_eq(st, 1);

    /* An unknown dependency and a duplicate id: RESULT status 1. */
    s_pk(&sb, &pk);
    msgpack_pack_array(&pk, 3);
    uint64_t unknown = (cid << 40) | 999;
    s_pack_submit(&pk, (cid << 40) | 2, "shoal.noop", NULL, 0, NULL);
    s_pack_submit(&pk, (cid << 40) | 2, "shoal.noop", NULL, 0, NULL);
    s_pack_submit(&pk, (cid << 40) | 3, "shoal.noop", &unknown, 1, NULL);
    s_send(c, MSG_SUBMIT, &sb);
    msgpack_sbuffer_destroy(&sb);
    m = s_expect(c, MSG_RESULT, 5);
    ck_assert_int_eq(mp_array(&m->body, &items, &n), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(mp_array(&items[0], &it, &k), 0);
    ck_assert(mp_str_eq(&it[2], "duplicate task id"));
    ck_assert_int_eq(mp_array(&items[1], &it, &k), 0);
    char want[64];
    snprintf(want, sizeof want, "unknown dependency %" PRIu64, unknown);
    ck_assert(mp_str_eq(&it[2], want));

    /* Heartbeats are echoed. */
    s_send(c, MSG_HEARTBEAT, NULL);
    s_expect(c, MSG_HEARTBEAT, 5);

    /* A second, never-registered connection throwing garbage. */
    void *g = s_connect();
    for (int i = 0; i < 50; i++) {
        s_raw(g, "\x00\x01\x02", 3, "\xff\xff", 2, 1);
        ck_assert_int_eq(s_expect_error(g), PERR_BAD_MESSAGE);
    }
    zmq_close(g);

    /* Still serving: STATUS answers, one client, one task (the ready one). */
    uint64_t nclients = 0;
    ck_assert_uint_eq(s_status(c, "total", &nclients, NULL), 1);
    ck_assert_uint_eq(nclients, 1);
    ck_assert_uint_eq(s_status(c, "ready", NULL, NULL), 1);
    zmq_close(c);
}
END_TEST

START_TEST(test_tasks_through_worker)
{
    void *c = s_connect(), *w = s_connect();
    uint64_t cid = s_hello(c, "client", "cl");
    s_hello(w, "worker", "wk");
    uint64_t a = (cid << 40) | 1, b = (cid << 40) | 2, e = (cid << 40) | 3, f = (cid << 40) | 4;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    s_pk(&sb, &pk);
    msgpack_pack_array(&pk, 4);
    s_pack_submit(&pk, a, "fa", NULL, 0, "A");
    s_pack_submit(&pk, b, "fb", &a, 1, NULL);
    s_pack_submit(&pk, e, "fe", NULL, 0, "E");
    s_pack_submit(&pk, f, "ff", &e, 1, NULL);
    s_send(c, MSG_SUBMIT, &sb);
    msgpack_sbuffer_destroy(&sb);

    /* The worker gets a and e (b and f wait). */
    proto_msg_t *m = s_expect(w, MSG_COMPUTE, 5);
    const msgpack_object *items, *it, *deps;
    size_t n, k, nd;
    ck_assert_int_eq(mp_array(&m->body, &items, &n), 0);
    ck_assert_uint_eq(n, 2);
    uint64_t id;
    ck_assert_int_eq(mp_array(&items[0], &it, &k), 0);
    ck_assert_uint_eq(k, 4);
    ck_assert_int_eq(mp_u64(&it[0], &id), 0);
    ck_assert_uint_eq(id, a);
    ck_assert(mp_str_eq(&it[1], "fa"));

    /* a succeeds, e fails */
    s_pk(&sb, &pk);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_uint64(&pk, a);
    msgpack_pack_int(&pk, 0);
    mp_pack_bin(&pk, "\xa3res", 4);
    msgpack_pack_uint64(&pk, 50);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_uint64(&pk, e);
    msgpack_pack_int(&pk, 1);
    mp_pack_cstr(&pk, "kaboom");
    msgpack_pack_uint64(&pk, 50);
    s_send(w, MSG_TASK_DONE, &sb);
    msgpack_sbuffer_destroy(&sb);

    /* b arrives with a's result in place. */
    m = s_expect(w, MSG_COMPUTE, 5);
    ck_assert_int_eq(mp_array(&m->body, &items, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(mp_array(&items[0], &it, &k), 0);
    ck_assert_int_eq(mp_u64(&it[0], &id), 0);
    ck_assert_uint_eq(id, b);
    ck_assert_int_eq(mp_array(&it[3], &deps, &nd), 0);
    ck_assert_uint_eq(nd, 1);
    const msgpack_object *pair;
    size_t np;
    ck_assert_int_eq(mp_array(&deps[0], &pair, &np), 0);
    ck_assert_uint_eq(np, 2);
    ck_assert_int_eq(mp_u64(&pair[0], &id), 0);
    ck_assert_uint_eq(id, a);
    const void *rp;
    size_t rl;
    ck_assert_int_eq(mp_bin(&pair[1], &rp, &rl), 0);
    ck_assert_uint_eq(rl, 4);
    ck_assert_int_eq(memcmp(rp, "\xa3res", 4), 0);

    /* The client has a's result, e's error (with the worker's name) and
     * f's propagated error. */
    int seen = 0;
    while (seen != 7) {
        m = s_expect(c, MSG_RESULT, 5);
        ck_assert_int_eq(mp_array(&m->body, &items, &n), 0);
        for (size_t i = 0; i < n; i++) {
            int64_t st;
            ck_assert_int_eq(mp_array(&items[i], &it, &k), 0);
            ck_assert_int_eq(mp_u64(&it[0], &id), 0);
            ck_assert_int_eq(mp_i64(&it[1], &st), 0);
            if (id == a) {
                ck_assert_int_eq(st, 0);
                seen |= 1;
            } else if (id == e) {
                ck_assert_int_eq(st, 1);
                ck_assert(mp_str_eq(&it[2], "kaboom"));
                ck_assert(mp_str_eq(&it[3], "wk"));
                seen |= 2;
            } else if (id == f) {
                ck_assert_int_eq(st, 1);
                ck_assert(mp_str_eq(&it[2], "dependency E failed: kaboom"));
                seen |= 4;
            } else {
                ck_abort_msg("unexpected result for %" PRIu64, id);
            }
        }
    }
    uint64_t nworkers = 0;
    ck_assert_uint_eq(s_status(c, "processing", NULL, &nworkers), 1);
    ck_assert_uint_eq(nworkers, 1);

    /* Released while running and nothing depends on it: WCANCEL. */
    s_pk(&sb, &pk);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_uint64(&pk, a);
    msgpack_pack_uint64(&pk, b);
    msgpack_pack_uint64(&pk, e);
    msgpack_pack_uint64(&pk, f);
    s_send(c, MSG_RELEASE, &sb);
    msgpack_sbuffer_destroy(&sb);
    m = s_expect(w, MSG_WCANCEL, 5);
    ck_assert_int_eq(mp_array(&m->body, &items, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(mp_u64(&items[0], &id), 0);
    ck_assert_uint_eq(id, b);
    ck_assert_uint_eq(s_status(c, "total", NULL, NULL), 0);
    /* Its late outcome is ignored quietly. */
    s_pk(&sb, &pk);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_uint64(&pk, b);
    msgpack_pack_int(&pk, 0);
    mp_pack_bin(&pk, "\xc0", 1);
    msgpack_pack_uint64(&pk, 5);
    s_send(w, MSG_TASK_DONE, &sb);
    msgpack_sbuffer_destroy(&sb);
    s_expect_nothing(w, 0.2);
    ck_assert_uint_eq(s_status(c, "total", NULL, NULL), 0);
    zmq_close(w);
    zmq_close(c);
}
END_TEST

/* A worker whose connection closes is noticed at once (TTL here is 30 s):
 * its task goes to another worker. */
START_TEST(test_dead_worker)
{
    void *c = s_connect(), *w1 = s_connect();
    uint64_t cid = s_hello(c, "client", "cl");
    s_hello(w1, "worker", "w1");
    uint64_t a = (cid << 40) | 1;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    s_pk(&sb, &pk);
    msgpack_pack_array(&pk, 1);
    s_pack_submit(&pk, a, "slow", NULL, 0, NULL);
    s_send(c, MSG_SUBMIT, &sb);
    msgpack_sbuffer_destroy(&sb);
    s_expect(w1, MSG_COMPUTE, 5);
    double t0 = util_now();
    zmq_close(w1);
    for (;;) {
        if (s_status(c, "ready", NULL, NULL) == 1)
            break;
        ck_assert_msg(util_now() - t0 < 5, "the closed worker was not noticed");
        usleep(20000);
    }
    void *w2 = s_connect();
    s_hello(w2, "worker", "w2");
    proto_msg_t *m = s_expect(w2, MSG_COMPUTE, 5);
    const msgpack_object *items, *it;
    size_t n, k;
    uint64_t id;
    ck_assert_int_eq(mp_array(&m->body, &items, &n), 0);
    ck_assert_int_eq(mp_array(&items[0], &it, &k), 0);
    ck_assert_int_eq(mp_u64(&it[0], &id), 0);
    ck_assert_uint_eq(id, a);
    /* The client leaving releases its task: cancelled on w2. */
    s_send(c, MSG_BYE, NULL);
    m = s_expect(w2, MSG_WCANCEL, 5);
    zmq_close(c);
    zmq_close(w2);
}
END_TEST

/* SUBMIT options on the wire: restrictions and resources are honoured,
 * bad ones refused item by item with a reason; a worker's HELLO
 * "resources" is validated; STEAL_REPLY items for nothing are ignored. */
START_TEST(test_submit_options)
{
    void *c = s_connect(), *w = s_connect(), *g = s_connect();
    uint64_t cid = s_hello(c, "client", "cl");
    s_hello(w, "worker", "plain");
    /* A worker declaring a resource badly is refused... */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    s_pk(&sb, &pk);
    msgpack_pack_map(&pk, 5);
    mp_pack_cstr(&pk, "role");
    mp_pack_cstr(&pk, "worker");
    mp_pack_cstr(&pk, "name");
    mp_pack_cstr(&pk, "gpu");
    mp_pack_cstr(&pk, "proto");
    msgpack_pack_int(&pk, PROTO_VERSION);
    mp_pack_cstr(&pk, "nthreads");
    msgpack_pack_int(&pk, 4);
    mp_pack_cstr(&pk, "resources");
    msgpack_pack_map(&pk, 1);
    mp_pack_cstr(&pk, "GPU");
    mp_pack_cstr(&pk, "one");
    s_send(g, MSG_HELLO, &sb);
    msgpack_sbuffer_destroy(&sb);
    ck_assert_int_eq(s_expect_error(g), PERR_BAD_MESSAGE);
    /* ...and registered when it declares it well. */
    s_pk(&sb, &pk);
    msgpack_pack_map(&pk, 5);
    mp_pack_cstr(&pk, "role");
    mp_pack_cstr(&pk, "worker");
    mp_pack_cstr(&pk, "name");
    mp_pack_cstr(&pk, "gpu");
    mp_pack_cstr(&pk, "proto");
    msgpack_pack_int(&pk, PROTO_VERSION);
    mp_pack_cstr(&pk, "nthreads");
    msgpack_pack_int(&pk, 4);
    mp_pack_cstr(&pk, "resources");
    msgpack_pack_map(&pk, 1);
    mp_pack_cstr(&pk, "GPU");
    msgpack_pack_double(&pk, 1.0);
    s_send(g, MSG_HELLO, &sb);
    msgpack_sbuffer_destroy(&sb);
    s_expect(g, MSG_WELCOME, 5);

    /* Three GPU=1 tasks, one restricted to "plain", two malformed. */
    uint64_t id[6];
    for (int i = 0; i < 6; i++)
        id[i] = (cid << 40) | (uint64_t)(i + 1);
    s_pk(&sb, &pk);
    msgpack_pack_array(&pk, 6);
    for (int i = 0; i < 6; i++) {
        msgpack_pack_array(&pk, 8);
        msgpack_pack_uint64(&pk, id[i]);
        mp_pack_cstr(&pk, "f");
        mp_pack_bin(&pk, "\x90", 1);
        msgpack_pack_array(&pk, 0);
        msgpack_pack_int(&pk, 0);
        msgpack_pack_int(&pk, 0);
        msgpack_pack_nil(&pk);
        if (i < 3) {
            msgpack_pack_map(&pk, 1);
            mp_pack_cstr(&pk, "resources");
            msgpack_pack_map(&pk, 1);
            mp_pack_cstr(&pk, "GPU");
            msgpack_pack_int(&pk, 1);
        } else if (i == 3) {
            msgpack_pack_map(&pk, 1);
            mp_pack_cstr(&pk, "workers");
            msgpack_pack_array(&pk, 1);
            mp_pack_cstr(&pk, "plain");
        } else if (i == 4) {
            msgpack_pack_map(&pk, 1);
            mp_pack_cstr(&pk, "colour");
            msgpack_pack_int(&pk, 1);
        } else {
            msgpack_pack_map(&pk, 1);
            mp_pack_cstr(&pk, "resources");
            msgpack_pack_map(&pk, 1);
            mp_pack_cstr(&pk, "GPU");
            msgpack_pack_int(&pk, -1);
        }
    }
    s_send(c, MSG_SUBMIT, &sb);
    msgpack_sbuffer_destroy(&sb);
    s_expect_error(c); /* 2 of 6 malformed */

    /* One GPU: the gpu worker gets exactly one task, "plain" its own. */
    const msgpack_object *items, *it;
    size_t n, k;
    uint64_t got;
    proto_msg_t *m = s_expect(g, MSG_COMPUTE, 5);
    ck_assert_int_eq(mp_array(&m->body, &items, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(mp_array(&items[0], &it, &k), 0);
    ck_assert_int_eq(mp_u64(&it[0], &got), 0);
    ck_assert_uint_eq(got, id[0]);
    m = s_expect(w, MSG_COMPUTE, 5);
    ck_assert_int_eq(mp_array(&m->body, &items, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(mp_array(&items[0], &it, &k), 0);
    ck_assert_int_eq(mp_u64(&it[0], &got), 0);
    ck_assert_uint_eq(got, id[3]);
    s_expect_nothing(g, 0.2);

    /* The malformed ones got their reason. */
    int seen = 0;
    while (seen != 3) {
        m = s_expect(c, MSG_RESULT, 5);
        ck_assert_int_eq(mp_array(&m->body, &items, &n), 0);
        for (size_t i = 0; i < n; i++) {
            const char *t;
            size_t tl;
            ck_assert_int_eq(mp_array(&items[i], &it, &k), 0);
            ck_assert_int_eq(mp_u64(&it[0], &got), 0);
            ck_assert_int_eq(mp_str(&it[2], &t, &tl), 0);
            char text[256];
            snprintf(text, sizeof text, "%.*s", (int)tl, t);
            if (got == id[4] && strstr(text, "unknown option"))
                seen |= 1;
            if (got == id[5] && strstr(text, "amounts"))
                seen |= 2;
        }
    }
    ck_assert_uint_eq(s_status(c, "ready", NULL, NULL), 2);

    /* A STEAL_REPLY for nothing is ignored; the GPU task finishing frees
     * the GPU for the next one. */
    s_pk(&sb, &pk);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint64(&pk, id[0]);
    msgpack_pack_true(&pk);
    s_send(g, MSG_STEAL_REPLY, &sb);
    msgpack_sbuffer_destroy(&sb);
    s_pk(&sb, &pk);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_uint64(&pk, id[0]);
    msgpack_pack_int(&pk, 0);
    mp_pack_bin(&pk, "\x01", 1);
    msgpack_pack_uint64(&pk, 50);
    s_send(g, MSG_TASK_DONE, &sb);
    msgpack_sbuffer_destroy(&sb);
    m = s_expect(g, MSG_COMPUTE, 5);
    ck_assert_int_eq(mp_array(&m->body, &items, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(mp_array(&items[0], &it, &k), 0);
    ck_assert_int_eq(mp_u64(&it[0], &got), 0);
    ck_assert_uint_eq(got, id[1]);
    zmq_close(c);
    zmq_close(w);
    zmq_close(g);
}
END_TEST

/* A library upload is validated, stored, acknowledged and sent to every
 * worker, including ones that join later, before any task. */
START_TEST(test_library)
{
    void *c = s_connect(), *w1 = s_connect();
    s_hello(c, "client", "cl");
    s_hello(w1, "worker", "w1");
    msgpack_sbuffer sb;
    msgpack_packer pk;
    s_pk(&sb, &pk);
    msgpack_pack_map(&pk, 2);
    mp_pack_cstr(&pk, "req");
    msgpack_pack_int(&pk, 5);
    mp_pack_cstr(&pk, "name");
    mp_pack_cstr(&pk, "libx.so");
    /* not ELF: refused with ok=false */
    proto_frame_t bad = {"hello", 5, NULL, NULL};
    ck_assert_int_eq(proto_send(c, NULL, 0, MSG_UPLOAD_LIB, sb.data, sb.size, &bad, 1), 0);
    proto_msg_t *m = s_expect(c, MSG_LIB_ACK, 5);
    int ok = 1;
    ck_assert_int_eq(mp_bool(mp_map_get(&m->body, "ok"), &ok), 0);
    ck_assert_int_eq(ok, 0);
    static const char elf[] = "\177ELF fake library bytes";
    proto_frame_t good = {elf, sizeof elf, NULL, NULL};
    ck_assert_int_eq(proto_send(c, NULL, 0, MSG_UPLOAD_LIB, sb.data, sb.size, &good, 1), 0);
    msgpack_sbuffer_destroy(&sb);
    m = s_expect(c, MSG_LIB_ACK, 5);
    ck_assert_int_eq(mp_bool(mp_map_get(&m->body, "ok"), &ok), 0);
    ck_assert_int_eq(ok, 1);
    uint64_t hash = 0;
    ck_assert_int_eq(mp_u64(mp_map_get(&m->body, "hash"), &hash), 0);
    ck_assert_uint_eq(hash, util_fnv1a64(elf, sizeof elf));
    int64_t req = 0;
    ck_assert_int_eq(mp_i64(mp_map_get(&m->body, "req"), &req), 0);
    ck_assert_int_eq(req, 5);

    m = s_expect(w1, MSG_LIBRARY, 5);
    ck_assert(mp_str_eq(mp_map_get(&m->body, "name"), "libx.so"));
    ck_assert_uint_eq(m->nframes, 1);
    ck_assert_uint_eq(proto_frame_size(m, 0), sizeof elf);
    ck_assert_int_eq(memcmp(proto_frame_data(m, 0), elf, sizeof elf), 0);

    void *w2 = s_connect();
    s_hello(w2, "worker", "w2");
    m = s_expect(w2, MSG_LIBRARY, 5);
    ck_assert_uint_eq(proto_frame_size(m, 0), sizeof elf);
    zmq_close(w2);
    zmq_close(w1);
    zmq_close(c);
}
END_TEST

/* A worker that stays connected but says nothing is dropped after
 * --worker-ttl (1 s here) and its task placed again; a client that keeps
 * talking stays. */
START_TEST(test_heartbeat_ttl)
{
    void *c = s_connect(), *w1 = s_connect();
    uint64_t cid = s_hello(c, "client", "cl");
    s_hello(w1, "worker", "mute");
    uint64_t a = (cid << 40) | 1;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    s_pk(&sb, &pk);
    msgpack_pack_array(&pk, 1);
    s_pack_submit(&pk, a, "f", NULL, 0, NULL);
    s_send(c, MSG_SUBMIT, &sb);
    msgpack_sbuffer_destroy(&sb);
    s_expect(w1, MSG_COMPUTE, 5);
    double t0 = util_now();
    uint64_t nworkers = 1;
    while (s_status(c, "ready", NULL, &nworkers) != 1 || nworkers != 0) {
        ck_assert_msg(util_now() - t0 < 6, "silent worker not dropped");
        usleep(100000);
    }
    /* not before its TTL */
    ck_assert(util_now() - t0 > 0.5);
    /* It is unknown now: its next message gets "not registered". */
    s_send(w1, MSG_HEARTBEAT, NULL);
    ck_assert_int_eq(s_expect_error(w1), PERR_NOT_REGISTERED);
    uint64_t nclients = 0;
    s_status(c, "total", &nclients, NULL);
    ck_assert_uint_eq(nclients, 1);
    zmq_close(w1);
    zmq_close(c);
}
END_TEST

START_TEST(test_sigterm)
{
    void *c = s_connect(), *w = s_connect();
    s_hello(c, "client", "cl");
    s_hello(w, "worker", "wk");
    struct stat stbuf;
    ck_assert_int_eq(stat(g_sfile, &stbuf), 0);
    ck_assert_int_eq(kill(g_pid, SIGTERM), 0);
    s_expect(c, MSG_BYE, 5);
    s_expect(w, MSG_BYE, 5);
    int st = s_wait_exit(g_pid, 5);
    ck_assert_int_ne(st, -1);
    g_pid = -1;
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 0);
    ck_assert_int_eq(stat(g_sfile, &stbuf), -1);
    ck_assert_int_eq(errno, ENOENT);
    zmq_close(c);
    zmq_close(w);
}
END_TEST

/* Options: no fixture (no scheduler running). */
static int s_run_status(const char *const *args)
{
    pid_t pid = s_spawn(args, 1);
    int st = s_wait_exit(pid, 10);
    if (st == -1) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

START_TEST(test_options)
{
    const char *help[] = {"--help", NULL};
    const char *version[] = {"--version", NULL};
    const char *badport[] = {"--port", "70000", NULL};
    const char *badport2[] = {"--port", "12ab", NULL};
    const char *unknown[] = {"--frobnicate", NULL};
    const char *missing[] = {"--port", NULL};
    const char *extra[] = {"--port", "0", "surplus", NULL};
    const char *badttl[] = {"--worker-ttl", "-3", NULL};
    const char *badsize[] = {"--max-message-size", "12 parsecs", NULL};
    const char *badlevel[] = {"--log-level", "loud", NULL};
    const char *badhost[] = {"--host", "a b;c", NULL};
    ck_assert_int_eq(s_run_status(help), 0);
    ck_assert_int_eq(s_run_status(version), 0);
    ck_assert_int_eq(s_run_status(badport), 2);
    ck_assert_int_eq(s_run_status(badport2), 2);
    ck_assert_int_eq(s_run_status(unknown), 2);
    ck_assert_int_eq(s_run_status(missing), 2);
    ck_assert_int_eq(s_run_status(extra), 2);
    ck_assert_int_eq(s_run_status(badttl), 2);
    ck_assert_int_eq(s_run_status(badsize), 2);
    ck_assert_int_eq(s_run_status(badlevel), 2);
    ck_assert_int_eq(s_run_status(badhost), 2);
}
END_TEST

Suite *smoke_suite(void)
{
    Suite *s = suite_create("scheduler_smoke");
    TCase *tc = tcase_create("wire");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_garbage);
    tcase_add_test(tc, test_tasks_through_worker);
    tcase_add_test(tc, test_dead_worker);
    tcase_add_test(tc, test_submit_options);
    tcase_add_test(tc, test_library);
    tcase_add_test(tc, test_sigterm);
    suite_add_tcase(s, tc);
    TCase *tt = tcase_create("ttl");
    tcase_add_checked_fixture(tt, setup_short_ttl, teardown);
    tcase_set_timeout(tt, 30);
    tcase_add_test(tt, test_heartbeat_ttl);
    suite_add_tcase(s, tt);
    TCase *to = tcase_create("options");
    tcase_set_timeout(to, 30);
    tcase_add_test(to, test_options);
    suite_add_tcase(s, to);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(smoke_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
