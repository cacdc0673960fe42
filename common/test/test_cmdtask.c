/*
 * test_cmdtask.c - the built-in command task: output capture, exit status
 * and signals, stdin, cwd, env, timeout, cancellation, bad arguments,
 * output limits, concurrency.  Every command it starts is reaped by the code
 * under test; each test checks that no child is left behind.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <msgpack.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cmdtask.h"
#include "exec.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct cmd {
    const char *const *argv;
    const char *const *env;
    const char *cwd;
    const void *in;
    size_t in_len;
    double timeout;
} cmd_t;

typedef struct out {
    int rc;
    char err[1024];
    int64_t exit_code;
    int64_t sig;
    int timed_out;
    char *out;
    size_t out_len;
    char *errout;
    size_t err_len;
    void *data;
    msgpack_zone z;
} out_t;

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

static void pack_cmd(msgpack_packer *pk, const cmd_t *c)
{
    size_t n = 0, ne = 0;
    while (c->argv[n])
        n++;
    msgpack_pack_array(pk, 1);
    msgpack_pack_map(pk, 5);
    pack_str(pk, "argv");
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++)
        pack_str(pk, c->argv[i]);
    pack_str(pk, "env");
    if (c->env) {
        while (c->env[ne])
            ne++;
        msgpack_pack_array(pk, ne);
        for (size_t i = 0; i < ne; i++)
            pack_str(pk, c->env[i]);
    } else {
        msgpack_pack_nil(pk);
    }
    pack_str(pk, "cwd");
    if (c->cwd)
        pack_str(pk, c->cwd);
    else
        msgpack_pack_nil(pk);
    pack_str(pk, "stdin");
    if (c->in) {
        msgpack_pack_bin(pk, c->in_len);
        msgpack_pack_bin_body(pk, c->in, c->in_len);
    } else {
        msgpack_pack_nil(pk);
    }
    pack_str(pk, "timeout");
    if (c->timeout > 0)
        msgpack_pack_double(pk, c->timeout);
    else
        msgpack_pack_nil(pk);
}

static int key_is(const msgpack_object *k, const char *s)
{
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(s) &&
           memcmp(k->via.str.ptr, s, k->via.str.size) == 0;
}

/* Run raw packed args through exec_task + cmdtask_run, decode the result. */
static void run_raw(const void *args, size_t len, volatile const int *cancelled,
                    out_t *o)
{
    exec_result_t r;
    memset(o, 0, sizeof *o);
    msgpack_zone_init(&o->z, 1024);
    o->rc = exec_task(cmdtask_run, 1, "test", cancelled, args, len, NULL, 0, &r);
    if (o->rc < 0) {
        snprintf(o->err, sizeof o->err, "%s", r.err);
        return;
    }
    o->data = r.data;
    msgpack_object m;
    size_t off = 0;
    ck_assert_int_eq(msgpack_unpack(r.data, r.len, &off, &o->z, &m), MSGPACK_UNPACK_SUCCESS);
    ck_assert_int_eq(m.type, MSGPACK_OBJECT_MAP);
    ck_assert_uint_eq(m.via.map.size, 5);
    int seen = 0;
    for (uint32_t i = 0; i < m.via.map.size; i++) {
        const msgpack_object *k = &m.via.map.ptr[i].key, *v = &m.via.map.ptr[i].val;
        if (key_is(k, "exit")) {
            ck_assert(v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
                      v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER);
            o->exit_code = v->via.i64;
            seen |= 1;
        } else if (key_is(k, "signal")) {
            o->sig = v->via.i64;
            seen |= 2;
        } else if (key_is(k, "timed_out")) {
            ck_assert_int_eq(v->type, MSGPACK_OBJECT_BOOLEAN);
            o->timed_out = v->via.boolean;
            seen |= 4;
        } else if (key_is(k, "stdout")) {
            ck_assert_int_eq(v->type, MSGPACK_OBJECT_BIN);
            o->out = (char *)v->via.bin.ptr;
            o->out_len = v->via.bin.size;
            seen |= 8;
        } else if (key_is(k, "stderr")) {
            ck_assert_int_eq(v->type, MSGPACK_OBJECT_BIN);
            o->errout = (char *)v->via.bin.ptr;
            o->err_len = v->via.bin.size;
            seen |= 16;
        }
    }
    ck_assert_int_eq(seen, 31);
}

static void run(const cmd_t *c, volatile const int *cancelled, out_t *o)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pack_cmd(&pk, c);
    run_raw(sb.data, sb.size, cancelled, o);
    msgpack_sbuffer_destroy(&sb);
}

static void out_free(out_t *o)
{
    free(o->data);
    msgpack_zone_destroy(&o->z);
}

static int out_is(const out_t *o, const char *s)
{
    return o->out_len == strlen(s) && memcmp(o->out, s, o->out_len) == 0;
}

/* No child of this process may be left (running or zombie). */
static void assert_no_children(void)
{
    errno = 0;
    ck_assert_int_eq(waitpid(-1, NULL, WNOHANG), -1);
    ck_assert_int_eq(errno, ECHILD);
}

/* --- tests ------------------------------------------------------------------- */

START_TEST(test_echo)
{
    const char *argv[] = {"echo", "hello", "world", NULL};
    cmd_t c = {.argv = argv};
    out_t o;
    run(&c, NULL, &o);
    ck_assert_msg(o.rc == 0, "%s", o.err);
    ck_assert(out_is(&o, "hello world\n"));
    ck_assert_int_eq(o.exit_code, 0);
    ck_assert_int_eq(o.sig, 0);
    ck_assert_int_eq(o.timed_out, 0);
    ck_assert_uint_eq(o.err_len, 0);
    out_free(&o);
    assert_no_children();
}
END_TEST

START_TEST(test_stderr_exit)
{
    const char *argv[] = {"sh", "-c", "echo out; echo oops >&2; exit 3", NULL};
    cmd_t c = {.argv = argv};
    out_t o;
    run(&c, NULL, &o);
    ck_assert_int_eq(o.rc, 0);
    ck_assert(out_is(&o, "out\n"));
    ck_assert_uint_eq(o.err_len, 5);
    ck_assert_mem_eq(o.errout, "oops\n", 5);
    ck_assert_int_eq(o.exit_code, 3);
    ck_assert_int_eq(o.sig, 0);
    out_free(&o);
    assert_no_children();
}
END_TEST

START_TEST(test_signal)
{
    const char *argv[] = {"sh", "-c", "kill -9 $$", NULL};
    cmd_t c = {.argv = argv};
    out_t o;
    run(&c, NULL, &o);
    ck_assert_int_eq(o.rc, 0);
    ck_assert_int_eq(o.exit_code, -1);
    ck_assert_int_eq(o.sig, 9);
    ck_assert_int_eq(o.timed_out, 0);
    out_free(&o);
    assert_no_children();
}
END_TEST

START_TEST(test_stdin_roundtrip)
{
    size_t n = 1 << 20;
    unsigned char *in = malloc(n);
    for (size_t i = 0; i < n; i++)
        in[i] = (unsigned char)(i * 7 + (i >> 11));
    const char *argv[] = {"cat", NULL};
    cmd_t c = {.argv = argv, .in = in, .in_len = n};
    out_t o;
    run(&c, NULL, &o);
    ck_assert_int_eq(o.rc, 0);
    ck_assert_int_eq(o.exit_code, 0);
    ck_assert_uint_eq(o.out_len, n);
    ck_assert(memcmp(o.out, in, n) == 0);
    out_free(&o);

    /* Empty stdin, and none at all: both read as end of file. */
    c.in_len = 0;
    run(&c, NULL, &o);
    ck_assert_int_eq(o.rc, 0);
    ck_assert_uint_eq(o.out_len, 0);
    out_free(&o);
    c.in = NULL;
    run(&c, NULL, &o);
    ck_assert_int_eq(o.rc, 0);
    ck_assert_uint_eq(o.out_len, 0);
    out_free(&o);
    free(in);
    assert_no_children();
}
END_TEST

/* A command that never reads its stdin: feeding it gets EPIPE, which must
 * neither kill this process nor leave a SIGPIPE pending. */
START_TEST(test_stdin_not_read)
{
    size_t n = 4 << 20;
    char *in = calloc(1, n);
    const char *argv[] = {"true", NULL};
    cmd_t c = {.argv = argv, .in = in, .in_len = n};
    out_t o;
    for (int i = 0; i < 3; i++) {
        run(&c, NULL, &o);
        ck_assert_int_eq(o.rc, 0);
        ck_assert_int_eq(o.exit_code, 0);
        out_free(&o);
    }
    sigset_t pending;
    ck_assert_int_eq(sigpending(&pending), 0);
    ck_assert_int_eq(sigismember(&pending, SIGPIPE), 0);
    free(in);
    assert_no_children();
}
END_TEST

/* The host ignoring SIGPIPE must not make commands ignore it: `yes` in a
 * pipeline would then complain of a broken pipe instead of dying quietly. */
START_TEST(test_sigpipe_default)
{
    struct sigaction ign = {.sa_handler = SIG_IGN}, old;
    sigaction(SIGPIPE, &ign, &old);
    const char *argv[] = {"sh", "-c", "yes | head -c 10 >/dev/null; echo done", NULL};
    cmd_t c = {.argv = argv, .timeout = 10};
    out_t o;
    run(&c, NULL, &o);
    sigaction(SIGPIPE, &old, NULL);
    ck_assert_int_eq(o.rc, 0);
    ck_assert(out_is(&o, "done\n"));
    ck_assert_msg(o.err_len == 0, "%.*s", (int)o.err_len, o.errout);
    out_free(&o);
    assert_no_children();
}
END_TEST

START_TEST(test_cwd)
{
    char dir[] = "/tmp/shoal-cmd-cwd-XXXXXX";
    char real[PATH_MAX];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ck_assert_ptr_nonnull(realpath(dir, real));
    const char *argv[] = {"pwd", "-P", NULL};
    cmd_t c = {.argv = argv, .cwd = dir};
    out_t o;
    run(&c, NULL, &o);
    ck_assert_msg(o.rc == 0, "%s", o.err);
    ck_assert_uint_eq(o.out_len, strlen(real) + 1);
    ck_assert_mem_eq(o.out, real, strlen(real));
    out_free(&o);
    rmdir(dir);

    /* A relative program path is taken relative to the new directory. */
    const char *argv_rel[] = {"./true", NULL};
    cmd_t crel = {.argv = argv_rel, .cwd = "/bin"};
    run(&crel, NULL, &o);
    ck_assert_msg(o.rc == 0, "%s", o.err);
    ck_assert_int_eq(o.exit_code, 0);
    out_free(&o);

    /* A directory that does not exist is a task error that says so. */
    run(&c, NULL, &o);
    ck_assert_int_eq(o.rc, -1);
    ck_assert_msg(strstr(o.err, "cannot change to directory") != NULL, "%s", o.err);
    out_free(&o);
    assert_no_children();
}
END_TEST

START_TEST(test_env)
{
    const char *argv[] = {"env", NULL};
    const char *env[] = {"FOO=bar", "EMPTY=", NULL};
    cmd_t c = {.argv = argv, .env = env};
    out_t o;
    run(&c, NULL, &o);
    ck_assert_msg(o.rc == 0, "%s", o.err);
    /* Exactly the given environment, nothing inherited. */
    ck_assert(out_is(&o, "FOO=bar\nEMPTY=\n"));
    out_free(&o);

    /* nil env inherits ours. */
    setenv("SHOAL_CMDTASK_TEST", "inherited", 1);
    const char *argv2[] = {"sh", "-c", "echo $SHOAL_CMDTASK_TEST", NULL};
    cmd_t c2 = {.argv = argv2};
    run(&c2, NULL, &o);
    ck_assert_int_eq(o.rc, 0);
    ck_assert(out_is(&o, "inherited\n"));
    out_free(&o);
    unsetenv("SHOAL_CMDTASK_TEST");
    assert_no_children();
}
END_TEST

START_TEST(test_timeout)
{
    const char *argv[] = {"sleep", "10", NULL};
    cmd_t c = {.argv = argv, .timeout = 0.3};
    out_t o;
    sigset_t term, old;
    /* A calling thread that blocks SIGTERM must not pass that on. */
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &term, &old);
    double t0 = now();
    run(&c, NULL, &o);
    double took = now() - t0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    ck_assert_int_eq(o.rc, 0);
    ck_assert_int_eq(o.timed_out, 1);
    ck_assert_int_eq(o.sig, SIGTERM);
    ck_assert_int_eq(o.exit_code, -1);
    ck_assert_msg(took >= 0.29 && took < 1.5, "took %.3f s", took);
    out_free(&o);
    assert_no_children();

    /* A command that finishes in time is not marked. */
    const char *argv2[] = {"true", NULL};
    cmd_t c2 = {.argv = argv2, .timeout = 5};
    run(&c2, NULL, &o);
    ck_assert_int_eq(o.rc, 0);
    ck_assert_int_eq(o.timed_out, 0);
    out_free(&o);
    assert_no_children();
}
END_TEST

/* The whole process group goes: a background child holding stdout open does
 * not keep the task alive past its timeout. */
START_TEST(test_timeout_group)
{
    const char *argv[] = {"sh", "-c", "sleep 30 & echo started", NULL};
    cmd_t c = {.argv = argv, .timeout = 0.4};
    out_t o;
    double t0 = now();
    run(&c, NULL, &o);
    double took = now() - t0;
    ck_assert_int_eq(o.rc, 0);
    ck_assert(out_is(&o, "started\n"));
    ck_assert_int_eq(o.timed_out, 1);
    ck_assert_int_eq(o.exit_code, 0);   /* sh itself exited normally */
    ck_assert_msg(took < 2.0, "took %.3f s", took);
    out_free(&o);
    assert_no_children();
}
END_TEST

/* SIGTERM ignored: SIGKILL follows after the grace period. */
START_TEST(test_timeout_kill)
{
    const char *argv[] = {"sh", "-c", "trap '' TERM; sleep 30", NULL};
    cmd_t c = {.argv = argv, .timeout = 0.2};
    out_t o;
    double t0 = now();
    run(&c, NULL, &o);
    double took = now() - t0;
    ck_assert_int_eq(o.rc, 0);
    ck_assert_int_eq(o.timed_out, 1);
    ck_assert_int_eq(o.sig, SIGKILL);
    ck_assert_msg(took >= 2.1 && took < 4.0, "took %.3f s", took);
    out_free(&o);
    assert_no_children();
}
END_TEST

typedef struct canceller {
    volatile int *flag;
    double after;
} canceller_t;

static void *cancel_later(void *p)
{
    canceller_t *c = p;
    struct timespec ts = {0, (long)(c->after * 1e9)};
    nanosleep(&ts, NULL);
    *c->flag = 1;
    return NULL;
}

START_TEST(test_cancel)
{
    volatile int flag = 0;
    canceller_t cc = {&flag, 0.2};
    pthread_t th;
    const char *argv[] = {"sleep", "10", NULL};
    cmd_t c = {.argv = argv};
    out_t o;
    double t0 = now();
    pthread_create(&th, NULL, cancel_later, &cc);
    run(&c, &flag, &o);
    double took = now() - t0;
    pthread_join(th, NULL);
    ck_assert_int_eq(o.rc, -1);
    ck_assert_str_eq(o.err, "cancelled");
    ck_assert_msg(took >= 0.19 && took < 1.5, "took %.3f s", took);
    out_free(&o);
    assert_no_children();
}
END_TEST

START_TEST(test_not_found)
{
    const char *argv[] = {"/nonexistent/shoal-prog", "x", NULL};
    cmd_t c = {.argv = argv};
    out_t o;
    run(&c, NULL, &o);
    ck_assert_int_eq(o.rc, -1);
    ck_assert_str_eq(o.err, "cannot run '/nonexistent/shoal-prog': No such file or directory");
    out_free(&o);
    const char *argv2[] = {"shoal-no-such-program-xyz", NULL};
    cmd_t c2 = {.argv = argv2};
    run(&c2, NULL, &o);
    ck_assert_int_eq(o.rc, -1);
    ck_assert_str_eq(o.err, "cannot run 'shoal-no-such-program-xyz': No such file or directory");
    out_free(&o);
    /* Exists, but is not executable. */
    const char *argv3[] = {"/etc/passwd", NULL};
    cmd_t c3 = {.argv = argv3};
    run(&c3, NULL, &o);
    ck_assert_int_eq(o.rc, -1);
    ck_assert_str_eq(o.err, "cannot run '/etc/passwd': Permission denied");
    out_free(&o);
    assert_no_children();
}
END_TEST

/* Hand-packed argument maps that must be refused with a clear error. */
#define B(lit) lit, sizeof(lit) - 1
START_TEST(test_bad_args)
{
    static const struct {
        const char *bytes;
        size_t len;
        const char *why;
    } cases[] = {
        {B("\x90"), "expects one argument"},
        {B("\x91\x01"), "expects one argument"},
        {B("\x92\x80\x80"), "expects one argument"},
        {B("\x91\x80"), "\"argv\" is missing"},
        {B("\x91\x81\xa4" "argv" "\x90"), "\"argv\" must be an array of 1 to"},
        {B("\x91\x81\xa4" "argv" "\xa2ls"), "\"argv\" must be an array"},
        {B("\x91\x81\xa4" "argv" "\x91\x01"), "argv[0] is not a string"},
        {B("\x91\x81\xa4" "argv" "\x91\xa3" "a\0b"), "contains a NUL byte"},
        {B("\x91\x81\xa4" "argv" "\x91\xa0"), "argv[0] is empty"},
        {B("\x91\x82\xa4" "argv" "\x91\xa2ls" "\xa3" "env" "\x91\xa3" "FOO"),
         "NAME=VALUE"},
        {B("\x91\x82\xa4" "argv" "\x91\xa2ls" "\xa3" "env" "\x91\xa2" "=x"),
         "NAME=VALUE"},
        {B("\x91\x82\xa4" "argv" "\x91\xa2ls" "\xa3" "cwd" "\x05"), "\"cwd\" must be a path"},
        {B("\x91\x82\xa4" "argv" "\x91\xa2ls" "\xa3" "cwd" "\xa0"), "\"cwd\" must be a path"},
        {B("\x91\x82\xa4" "argv" "\x91\xa2ls" "\xa7" "timeout" "\xa1x"), "\"timeout\" must be"},
        {B("\x91\x82\xa4" "argv" "\x91\xa2ls" "\xa5" "stdin" "\x05"), "\"stdin\" must be"},
        {B("\x91\x82\xa4" "argv" "\x91\xa2ls" "\xa6" "tmeout" "\x01"), "unknown key \"tmeout\""},
        {B("\x91\x82\xa4" "argv" "\x91\xa2ls" "\x01\x01"), "keys must be strings"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        out_t o;
        run_raw(cases[i].bytes, cases[i].len, NULL, &o);
        ck_assert_msg(o.rc == -1, "case %zu accepted", i);
        ck_assert_msg(strstr(o.err, cases[i].why) != NULL, "case %zu: '%s'", i, o.err);
        out_free(&o);
    }

    /* Too many arguments. */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 1);
    pack_str(&pk, "argv");
    msgpack_pack_array(&pk, CMDTASK_MAX_ARGV + 1);
    for (int i = 0; i <= CMDTASK_MAX_ARGV; i++)
        pack_str(&pk, "x");
    out_t o;
    run_raw(sb.data, sb.size, NULL, &o);
    ck_assert_int_eq(o.rc, -1);
    ck_assert_ptr_nonnull(strstr(o.err, "\"argv\" must be an array of 1 to 4096"));
    out_free(&o);
    msgpack_sbuffer_destroy(&sb);
    assert_no_children();
}
END_TEST

START_TEST(test_truncation)
{
    /* 2 MiB more than the limit, plus a little stderr. */
    char script[128];
    snprintf(script, sizeof script, "head -c %u /dev/zero; echo tail >&2",
             CMDTASK_MAX_OUTPUT + (2u << 20));
    const char *argv[] = {"sh", "-c", script, NULL};
    cmd_t c = {.argv = argv, .timeout = 60};
    out_t o;
    double t0 = now();
    run(&c, NULL, &o);
    double took = now() - t0;
    ck_assert_int_eq(o.rc, 0);
    ck_assert_int_eq(o.exit_code, 0);
    ck_assert_uint_eq(o.out_len, CMDTASK_MAX_OUTPUT);
    const char note[] = "tail\n[shoal: output truncated]\n";
    ck_assert_uint_eq(o.err_len, sizeof note - 1);
    ck_assert_mem_eq(o.errout, note, sizeof note - 1);
    out_free(&o);
    fprintf(stderr, "test_truncation: %.2f s\n", took);
    assert_no_children();
}
END_TEST

static void *run_many(void *p)
{
    long k = (long)p;
    char word[32];
    snprintf(word, sizeof word, "w%ld", k);
    const char *argv[] = {"echo", word, NULL};
    cmd_t c = {.argv = argv};
    for (int i = 0; i < 15; i++) {
        out_t o;
        run(&c, NULL, &o);
        ck_assert_int_eq(o.rc, 0);
        ck_assert_uint_eq(o.out_len, strlen(word) + 1);
        ck_assert_mem_eq(o.out, word, strlen(word));
        out_free(&o);
    }
    return NULL;
}

/* Several threads at once; the commands see only fds 0-2 (no pipe of a
 * concurrent spawn leaks into them, which would also delay their EOF). */
START_TEST(test_concurrent)
{
    pthread_t th[4];
    for (long i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, run_many, (void *)i);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);

    const char *argv[] = {"sh", "-c", "ls /proc/$$/fd", NULL};
    cmd_t c = {.argv = argv};
    out_t o;
    run(&c, NULL, &o);
    ck_assert_int_eq(o.rc, 0);
    ck_assert_msg(out_is(&o, "0\n1\n2\n"), "%.*s", (int)o.out_len, o.out);
    out_free(&o);
    assert_no_children();
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("cmdtask");
    TCase *tc = tcase_create("cmdtask");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_echo);
    tcase_add_test(tc, test_stderr_exit);
    tcase_add_test(tc, test_signal);
    tcase_add_test(tc, test_stdin_roundtrip);
    tcase_add_test(tc, test_stdin_not_read);
    tcase_add_test(tc, test_sigpipe_default);
    tcase_add_test(tc, test_cwd);
    tcase_add_test(tc, test_env);
    tcase_add_test(tc, test_timeout);
    tcase_add_test(tc, test_timeout_group);
    tcase_add_test(tc, test_timeout_kill);
    tcase_add_test(tc, test_cancel);
    tcase_add_test(tc, test_not_found);
    tcase_add_test(tc, test_bad_args);
    tcase_add_test(tc, test_truncation);
    tcase_add_test(tc, test_concurrent);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
