/*
 * fake.h - the harness the worker's end-to-end tests share: start
 * bin/shoal-worker processes (killed with the test, by pid), and play the
 * scheduler with a ROUTER socket driven by the proto_* functions.
 *
 * Included by one test file each (all functions are static); not a module.
 */
#ifndef SHOAL_WORKER_TEST_FAKE_H
#define SHOAL_WORKER_TEST_FAKE_H

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "exec.h"
#include "mp.h"
#include "proto.h"
#include "util.h"

#define S_UNUSED __attribute__((unused))

#define MAX_PIDS 16
static pid_t s_pids[MAX_PIDS];
static int s_npids;
static char s_worker_bin[PATH_MAX];

static char s_tmpdir[PATH_MAX];      /* removed at exit if set */

static S_UNUSED void s_kill_all(void)
{
    char cmd[PATH_MAX + 16];
    int i;

    for (i = 0; i < s_npids; i++)
        if (s_pids[i] > 0) {
            kill(s_pids[i], SIGKILL);
            waitpid(s_pids[i], NULL, 0);
            s_pids[i] = 0;
        }
    if (s_tmpdir[0] && util_fmt(cmd, sizeof(cmd), "rm -rf '%s'", s_tmpdir) == 0 &&
        system(cmd) == 0)
        s_tmpdir[0] = '\0';
}

static S_UNUSED void s_track(pid_t pid)
{
    if (s_npids < MAX_PIDS)
        s_pids[s_npids++] = pid;
}

/* The repository root (from this binary's path, build/test/worker/test_worker)
 * and the worker binary: $SHOAL_WORKER_BIN or ROOT/bin/shoal-worker. */
static char s_root[PATH_MAX];

static S_UNUSED void s_find_worker_bin(void)
{
    char self[PATH_MAX];
    ssize_t n;
    const char *env = getenv("SHOAL_WORKER_BIN");

    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = '\0';
        util_fmt(s_root, sizeof(s_root), "%s", dirname(dirname(dirname(dirname(self)))));
    } else {
        util_fmt(s_root, sizeof(s_root), ".");
    }
    if (env)
        util_fmt(s_worker_bin, sizeof(s_worker_bin), "%s", env);
    else
        util_fmt(s_worker_bin, sizeof(s_worker_bin), "%s/bin/shoal-worker", s_root);
}

/* Start bin/shoal-worker with the given arguments (NULL-terminated).  The
 * child dies with this test process (PR_SET_PDEATHSIG), and s_kill_all kills
 * it at exit in any case. */
static S_UNUSED pid_t s_start_log(const char *const *args, const char *log);

static S_UNUSED pid_t s_start(const char *const *args)
{
    return s_start_log(args, NULL);
}

/* Like s_start, with the worker's stderr (its log) in the file `log` when
 * that is not NULL. */
static S_UNUSED pid_t s_start_log(const char *const *args, const char *log)
{
    const char *argv[32];
    pid_t pid, parent = getpid();
    int i;

    argv[0] = s_worker_bin;
    for (i = 0; args[i] && i < 30; i++)
        argv[i + 1] = args[i];
    argv[i + 1] = NULL;
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(99);
        if (log) {
            int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
            if (fd < 0 || dup2(fd, 2) < 0)
                _exit(97);
        }
        execv(s_worker_bin, (char *const *)argv);
        _exit(98);
    }
    s_track(pid);
    return pid;
}

/* waitpid with a deadline; returns the status, or -1 on timeout. */
static S_UNUSED int s_wait_exit(pid_t pid, double secs)
{
    double end = util_now() + secs;
    int st, i;

    while (util_now() < end) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            for (i = 0; i < s_npids; i++)
                if (s_pids[i] == pid)
                    s_pids[i] = 0;
            return st;
        }
        usleep(10000);
    }
    return -1;
}

typedef struct fake {
    void *ctx;
    void *sock;
    char endpoint[256];
} fake_t;

static S_UNUSED void s_fake_open(fake_t *f)
{
    size_t len = sizeof(f->endpoint);

    memset(f, 0, sizeof(*f));
    f->ctx = zmq_ctx_new();
    ck_assert_ptr_nonnull(f->ctx);
    f->sock = zmq_socket(f->ctx, ZMQ_ROUTER);
    ck_assert_ptr_nonnull(f->sock);
    ck_assert_int_eq(proto_sock_setup(f->sock, PROTO_DEFAULT_MAX_FRAME), 0);
    ck_assert_int_eq(zmq_bind(f->sock, "tcp://127.0.0.1:*"), 0);
    ck_assert_int_eq(zmq_getsockopt(f->sock, ZMQ_LAST_ENDPOINT, f->endpoint, &len), 0);
}

static S_UNUSED void s_fake_close(fake_t *f)
{
    int zero = 0;
    zmq_setsockopt(f->sock, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_close(f->sock);
    zmq_ctx_term(f->ctx);
}

/* Receive one message within timeout_ms; 0 or -1 (timeout). */
static S_UNUSED int s_recv(fake_t *f, proto_msg_t *m, int timeout_ms)
{
    double end = util_now() + timeout_ms / 1000.0;

    for (;;) {
        zmq_pollitem_t it = {f->sock, 0, ZMQ_POLLIN, 0};
        int left = (int)((end - util_now()) * 1000);
        if (left < 0)
            return -1;
        if (zmq_poll(&it, 1, left) < 0 && errno != EINTR)
            return -1;
        if (proto_recv(f->sock, 1, m, ZMQ_DONTWAIT) == 0)
            return 0;
        ck_assert_msg(errno == EAGAIN || errno == EINTR, "proto_recv: %s",
                      zmq_strerror(errno));
    }
}

/* Receive until a message of `type` arrives (others are skipped). */
static S_UNUSED int s_recv_type(fake_t *f, proto_msg_t *m, int type, int timeout_ms)
{
    double end = util_now() + timeout_ms / 1000.0;

    while (util_now() < end) {
        int left = (int)((end - util_now()) * 1000);
        if (s_recv(f, m, left > 0 ? left : 1) < 0)
            return -1;
        if (m->hdr.type == type)
            return 0;
        proto_msg_close(m);
    }
    return -1;
}

typedef struct peer {
    uint8_t ident[PROTO_MAX_IDENT];
    size_t ident_len;
    int64_t pid;
    char name[128];
    char data[256];          /* its data endpoint, "tcp://HOST:PORT" */
    uint64_t memory_limit;
} peer_t;

/* Wait for a HELLO and check its fields (also the data plane's: "data",
 * "resources", "memory_limit"). */
static S_UNUSED void s_expect_hello(fake_t *f, peer_t *p, int nthreads)
{
    proto_msg_t m;
    const msgpack_object *o;
    int64_t v;

    ck_assert_msg(s_recv_type(f, &m, MSG_HELLO, 10000) == 0, "no HELLO from the worker");
    o = mp_map_get(&m.body, "role");
    ck_assert(o && mp_str_eq(o, "worker"));
    o = mp_map_get(&m.body, "name");
    ck_assert(o && mp_strcpy(o, p->name, sizeof(p->name)) == 0);
    o = mp_map_get(&m.body, "pid");
    ck_assert(o && mp_i64(o, &p->pid) == 0 && p->pid > 0);
    o = mp_map_get(&m.body, "host");
    ck_assert(o && !mp_is_nil(o));
    o = mp_map_get(&m.body, "nthreads");
    ck_assert(o && mp_i64(o, &v) == 0);
    if (nthreads > 0)
        ck_assert_int_eq(v, nthreads);
    o = mp_map_get(&m.body, "proto");
    ck_assert(o && mp_i64(o, &v) == 0 && v == PROTO_VERSION);
    o = mp_map_get(&m.body, "data");
    ck_assert(o && mp_strcpy(o, p->data, sizeof(p->data)) == 0);
    ck_assert_msg(!strncmp(p->data, "tcp://", 6), "data address %s", p->data);
    o = mp_map_get(&m.body, "resources");
    ck_assert(o && o->type == MSGPACK_OBJECT_MAP);
    o = mp_map_get(&m.body, "memory_limit");
    ck_assert(o && mp_u64(o, &p->memory_limit) == 0);
    memcpy(p->ident, m.ident, m.ident_len);
    p->ident_len = m.ident_len;
    proto_msg_close(&m);
}

static S_UNUSED void s_send_packed(fake_t *f, const peer_t *p, int type, msgpack_sbuffer *sb)
{
    ck_assert_int_eq(proto_send(f->sock, p->ident, p->ident_len, type, sb->data, sb->size,
                                NULL, 0), 0);
}

static S_UNUSED void s_send_nil(fake_t *f, const peer_t *p, int type)
{
    static const uint8_t nil = 0xc0;
    ck_assert_int_eq(proto_send(f->sock, p->ident, p->ident_len, type, &nil, 1, NULL, 0), 0);
}

static S_UNUSED void s_welcome(fake_t *f, const peer_t *p, int id)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    mp_pack_cstr(&pk, "id");
    msgpack_pack_int(&pk, id);
    mp_pack_cstr(&pk, "name");
    mp_pack_cstr(&pk, p->name);
    mp_pack_cstr(&pk, "nworkers");
    msgpack_pack_int(&pk, 1);
    s_send_packed(f, p, MSG_WELCOME, &sb);
    msgpack_sbuffer_destroy(&sb);
}

/* Packed argument arrays, built with a printf-like mini language:
 * 'i' int64, 'd' double, 's' string, 'r' future reference (uint64). */
static S_UNUSED void s_pack_args(msgpack_sbuffer *sb, const char *spec, ...)
{
    msgpack_packer pk;
    va_list ap;
    const char *c;

    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, (uint32_t)strlen(spec));
    va_start(ap, spec);
    for (c = spec; *c; c++) {
        switch (*c) {
        case 'i': msgpack_pack_int64(&pk, va_arg(ap, int64_t)); break;
        case 'd': msgpack_pack_double(&pk, va_arg(ap, double)); break;
        case 's': mp_pack_cstr(&pk, va_arg(ap, const char *)); break;
        case 'r': exec_pack_ref(&pk, va_arg(ap, uint64_t)); break;
        }
    }
    va_end(ap);
}

/* One COMPUTE item [id, func, args, []] into the batch. */
static S_UNUSED void s_item(proto_batch_t *b, uint64_t id, const char *fn, msgpack_sbuffer *args)
{
    msgpack_packer *pk = proto_batch_add(b);
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint64(pk, id);
    mp_pack_cstr(pk, fn);
    mp_pack_bin(pk, args->data, args->size);
    msgpack_pack_array(pk, 0);
    msgpack_sbuffer_destroy(args);
}

#endif
