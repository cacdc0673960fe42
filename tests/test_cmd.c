/*
 * test_cmd.c - end to end: command tasks through the client library
 * (stdout, stderr, exit status, signals, stdin, cwd, env, timeouts,
 * cancellation, large output) and through the `shoal` command-line client
 * (submit --array, map, status, failures, bad options).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "e2e.h"

#define ARGV(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Run a command task and wait for its decoded result (asserts success). */
static shoal_future_t *s_cmd(shoal_client_t *c, const shoal_cmd_t *cmd,
                             shoal_cmd_result_t *res, double timeout)
{
    shoal_error_t err;
    shoal_future_t *f;

    memset(&err, 0, sizeof err);
    f = shoal_submit_cmd(c, cmd, NULL, &err);
    ck_assert_msg(f != NULL, "shoal_submit_cmd(%s): %s", cmd->argv[0], err.msg);
    memset(res, 0, sizeof *res);
    ck_assert_msg(shoal_cmd_result(f, timeout, res, &err) == 0, "command %s: %s",
                  cmd->argv[0], err.msg);
    return f;
}

/* Output as a NUL-terminated string (the result's bytes are not). */
static char *s_str(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    ck_assert(s != NULL);
    if (n)
        memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

#define OUT_EQ(res, expect)                                                            \
    do {                                                                               \
        char *o_ = s_str((res).out, (res).out_len);                                    \
        ck_assert_msg(strcmp(o_, (expect)) == 0, "stdout \"%s\", expected \"%s\"", o_, \
                      (expect));                                                       \
        free(o_);                                                                      \
    } while (0)
#define ERR_EQ(res, expect)                                                            \
    do {                                                                               \
        char *o_ = s_str((res).err, (res).err_len);                                    \
        ck_assert_msg(strcmp(o_, (expect)) == 0, "stderr \"%s\", expected \"%s\"", o_, \
                      (expect));                                                       \
        free(o_);                                                                      \
    } while (0)

START_TEST(test_cmd_output_and_status)
{
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 4);
    shoal_client_t *c = cl->client;
    shoal_cmd_result_t r;
    shoal_future_t *f;
    shoal_cmd_t cmd = {.argv = ARGV("sh", "-c", "echo hello; echo oops >&2; exit 3")};

    f = s_cmd(c, &cmd, &r, E2E_WAIT);
    /* A command that ran is a successful task, whatever its exit status. */
    ck_assert_int_eq(shoal_future_status(f), SHOAL_FINISHED);
    ck_assert_int_eq(r.exit_code, 3);
    ck_assert_int_eq(r.signal, 0);
    ck_assert_int_eq(r.timed_out, 0);
    OUT_EQ(r, "hello\n");
    ERR_EQ(r, "oops\n");
    shoal_release(f);

    cmd.argv = ARGV("true");
    f = s_cmd(c, &cmd, &r, E2E_WAIT);
    ck_assert_int_eq(r.exit_code, 0);
    ck_assert_uint_eq(r.out_len, 0);
    ck_assert_uint_eq(r.err_len, 0);
    shoal_release(f);

    /* Killed by a signal. */
    cmd.argv = ARGV("sh", "-c", "kill -9 $$");
    f = s_cmd(c, &cmd, &r, E2E_WAIT);
    ck_assert_int_eq(r.signal, SIGKILL);
    ck_assert_int_eq(r.exit_code, -1);
    ck_assert_int_eq(r.timed_out, 0);
    shoal_release(f);

    /* The raw result map follows the documented layout. */
    {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_object obj;
        shoal_error_t err;
        static const char *keys[] = {"exit", "signal", "timed_out", "stdout", "stderr"};
        shoal_cmd_t c2 = {.argv = ARGV("sh", "-c", "printf abc; exit 4")};

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        /* The task's arguments: one array holding the command map. */
        msgpack_pack_array(&pk, 1);
        ck_assert_int_eq(shoal_pack_cmd(&pk, &c2), 0);
        f = e2e_sub_raw(__FILE__, __LINE__, c, SHOAL_CMD_FUNC, NULL, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        ck_assert_msg(shoal_result_object(f, E2E_WAIT, &obj, &err) == 0, "cmd: %s", err.msg);
        ck_assert_int_eq(obj.type, MSGPACK_OBJECT_MAP);
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
            int found = 0;
            for (uint32_t i = 0; i < obj.via.map.size; i++) {
                const msgpack_object *key = &obj.via.map.ptr[i].key;
                const msgpack_object *val = &obj.via.map.ptr[i].val;
                if (key->type != MSGPACK_OBJECT_STR || key->via.str.size != strlen(keys[k]) ||
                    memcmp(key->via.str.ptr, keys[k], key->via.str.size) != 0)
                    continue;
                found = 1;
                if (k == 0)
                    ck_assert(val->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
                              val->via.u64 == 4);
                if (k == 3)
                    ck_assert(val->type == MSGPACK_OBJECT_BIN && val->via.bin.size == 3 &&
                              memcmp(val->via.bin.ptr, "abc", 3) == 0);
            }
            ck_assert_msg(found, "command result has no \"%s\"", keys[k]);
        }
        shoal_release(f);
    }
    cluster_stop(cl);
}
END_TEST

START_TEST(test_cmd_stdin_cwd_env)
{
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 4);
    shoal_client_t *c = cl->client;
    shoal_cmd_result_t r;
    shoal_future_t *f;
    shoal_cmd_t cmd;
    enum { IN = 200000 };
    char *in = malloc(IN), real[PATH_MAX], expect[PATH_MAX + 8];

    ck_assert(in != NULL);
    for (int i = 0; i < IN; i++)
        in[i] = (char)(i % 251);   /* binary, with NULs */

    /* stdin goes through byte for byte (larger than a pipe buffer). */
    memset(&cmd, 0, sizeof cmd);
    cmd.argv = ARGV("cat");
    cmd.stdin_data = in;
    cmd.stdin_len = IN;
    f = s_cmd(c, &cmd, &r, E2E_WAIT);
    ck_assert_int_eq(r.exit_code, 0);
    ck_assert_uint_eq(r.out_len, IN);
    ck_assert_msg(memcmp(r.out, in, IN) == 0, "cat returned different bytes");
    shoal_release(f);

    /* cwd */
    ck_assert(realpath(cl->dir, real) != NULL);
    memset(&cmd, 0, sizeof cmd);
    cmd.argv = ARGV("sh", "-c", "pwd -P");
    cmd.cwd = real;
    f = s_cmd(c, &cmd, &r, E2E_WAIT);
    snprintf(expect, sizeof expect, "%s\n", real);
    OUT_EQ(r, expect);
    shoal_release(f);

    /* env replaces the environment... */
    memset(&cmd, 0, sizeof cmd);
    cmd.argv = ARGV("/bin/sh", "-c", "echo \"$FOO|${HOME-unset}|$BAR\"");
    cmd.env = ARGV("FOO=bar baz", "BAR=");
    f = s_cmd(c, &cmd, &r, E2E_WAIT);
    OUT_EQ(r, "bar baz|unset|\n");
    shoal_release(f);
    /* ...and NULL inherits the worker's (the cluster sets SHOAL_RUNTIME_DIR). */
    memset(&cmd, 0, sizeof cmd);
    cmd.argv = ARGV("sh", "-c", "echo \"${SHOAL_RUNTIME_DIR-missing}\"");
    f = s_cmd(c, &cmd, &r, E2E_WAIT);
    snprintf(expect, sizeof expect, "%s/run\n", cl->dir);
    OUT_EQ(r, expect);
    shoal_release(f);

    free(in);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_cmd_timeout)
{
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 4);
    shoal_client_t *c = cl->client;
    shoal_cmd_result_t r;
    shoal_future_t *f, *g;
    shoal_cmd_t cmd;
    double t0 = e2e_now();

    memset(&cmd, 0, sizeof cmd);
    cmd.argv = ARGV("sleep", "30");
    cmd.timeout = 0.5;
    f = s_cmd(c, &cmd, &r, 20.0);
    ck_assert_int_eq(r.timed_out, 1);
    ck_assert_int_ne(r.exit_code, 0);
    ck_assert_msg(e2e_now() - t0 < 6.0, "a 0.5 s timeout took %.2f s", e2e_now() - t0);
    shoal_release(f);

    /* A command that ignores SIGTERM is still stopped (SIGKILL after a grace
     * period); the ignored disposition is inherited by sleep too. */
    t0 = e2e_now();
    cmd.argv = ARGV("sh", "-c", "trap '' TERM; sleep 30; echo survived");
    cmd.timeout = 0.5;
    g = s_cmd(c, &cmd, &r, 25.0);
    ck_assert_int_eq(r.timed_out, 1);
    ck_assert_msg(r.out_len == 0, "the command survived its timeout");
    ck_assert_msg(e2e_now() - t0 < 20.0, "killing took %.2f s", e2e_now() - t0);
    shoal_release(g);

    /* Without a timeout a command just runs. */
    cmd.argv = ARGV("sh", "-c", "sleep 0.3; echo done");
    cmd.timeout = 0;
    f = s_cmd(c, &cmd, &r, E2E_WAIT);
    ck_assert_int_eq(r.timed_out, 0);
    OUT_EQ(r, "done\n");
    shoal_release(f);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_cmd_cannot_start)
{
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 2);
    shoal_client_t *c = cl->client;
    static const char *const progs[] = {"/nonexistent/shoal-e2e-prog",
                                        "shoal-e2e-no-such-command-xyz"};

    for (size_t i = 0; i < 2; i++) {
        shoal_cmd_t cmd = {.argv = (const char *const[]){progs[i], "arg", NULL}};
        shoal_cmd_result_t r;
        shoal_error_t err;
        shoal_future_t *f = shoal_submit_cmd(c, &cmd, NULL, &err);
        ck_assert_msg(f != NULL, "submit: %s", err.msg);
        memset(&err, 0, sizeof err);
        ck_assert_int_eq(shoal_cmd_result(f, E2E_WAIT, &r, &err), -1);
        ck_assert_int_eq(shoal_future_status(f), SHOAL_ERROR);
        ck_assert_msg(err.msg[0], "no reason given for %s", progs[i]);
        shoal_release(f);
    }
    /* An empty argv is refused (by the client or as a failed task). */
    {
        shoal_cmd_t cmd = {.argv = (const char *const[]){NULL}};
        shoal_cmd_result_t r;
        shoal_error_t err;
        shoal_future_t *f = shoal_submit_cmd(c, &cmd, NULL, &err);
        if (f) {
            ck_assert_int_eq(shoal_cmd_result(f, E2E_WAIT, &r, &err), -1);
            shoal_release(f);
        }
        ck_assert(err.msg[0] != '\0');
    }
    cluster_stop(cl);
}
END_TEST

START_TEST(test_cmd_large_output_and_many)
{
    enum { N = 100 };
    cluster_t *cl = CLUSTER(.nworkers = 2, .nthreads = 2);
    shoal_client_t *c = cl->client;
    shoal_cmd_result_t r;
    shoal_future_t *f, *fs[N];
    shoal_cmd_t cmd;
    shoal_error_t err;

    /* Large stdout and stderr at the same time: no deadlock, nothing lost. */
    memset(&cmd, 0, sizeof cmd);
    cmd.argv = ARGV("sh", "-c",
                    "head -c 3000000 /dev/zero | tr '\\0' a & "
                    "head -c 2000000 /dev/zero | tr '\\0' b >&2; wait");
    f = s_cmd(c, &cmd, &r, E2E_WAIT);
    ck_assert_uint_eq(r.out_len, 3000000);
    ck_assert_uint_eq(r.err_len, 2000000);
    for (size_t i = 0; i < r.out_len; i += 4999)
        ck_assert(r.out[i] == 'a');
    for (size_t i = 0; i < r.err_len; i += 4999)
        ck_assert(r.err[i] == 'b');
    shoal_release(f);

    /* Many small commands at once, each with its own output. */
    for (int i = 0; i < N; i++) {
        char arg[32];
        shoal_cmd_t ci;
        snprintf(arg, sizeof arg, "line-%d", i);
        memset(&ci, 0, sizeof ci);
        ci.argv = ARGV("echo", arg);   /* copied at submit */
        fs[i] = shoal_submit_cmd(c, &ci, NULL, &err);
        ck_assert_msg(fs[i] != NULL, "submit %d: %s", i, err.msg);
    }
    ck_assert_msg(shoal_gather(fs, N, 40.0, &err) == 0, "gather: %s", err.msg);
    for (int i = 0; i < N; i++) {
        char expect[32];
        ck_assert(shoal_cmd_result(fs[i], 1.0, &r, &err) == 0);
        snprintf(expect, sizeof expect, "line-%d\n", i);
        OUT_EQ(r, expect);
        shoal_release(fs[i]);
    }
    cluster_stop(cl);
}
END_TEST

START_TEST(test_cmd_cancel_kills)
{
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 1);
    shoal_client_t *c = cl->client;
    shoal_future_t *f, *g;
    shoal_cmd_result_t r;
    shoal_error_t err;
    char pidfile[700], buf[64];
    shoal_cmd_t cmd;
    FILE *fp = NULL;
    long pid = 0;
    double end;

    snprintf(pidfile, sizeof pidfile, "%s/cmd.pid", cl->dir);
    memset(&cmd, 0, sizeof cmd);
    cmd.argv = ARGV("sh", "-c", "echo $$ > cmd.pid.tmp && mv cmd.pid.tmp cmd.pid && exec sleep 60");
    cmd.cwd = cl->dir;
    f = shoal_submit_cmd(c, &cmd, NULL, &err);
    ck_assert_msg(f != NULL, "submit: %s", err.msg);
    end = e2e_now() + 10.0;
    while (!(fp = fopen(pidfile, "r")) && e2e_now() < end)
        e2e_sleep(0.02);
    ck_assert_msg(fp != NULL, "the command did not start");
    ck_assert(fgets(buf, sizeof buf, fp) != NULL);
    fclose(fp);
    pid = strtol(buf, NULL, 10);
    ck_assert_msg(pid > 1 && proc_alive((pid_t)pid), "command pid %ld not running", pid);

    ck_assert_int_eq(shoal_cancel(f), 0);
    CANCELLED(f, 3.0);
    /* The process is gone (killed and reaped by the worker). */
    end = e2e_now() + 10.0;
    while (proc_alive((pid_t)pid) && e2e_now() < end)
        e2e_sleep(0.05);
    ck_assert_msg(!proc_alive((pid_t)pid), "cancelled command %ld still running", pid);
    /* And the single executor thread is free. */
    memset(&cmd, 0, sizeof cmd);
    cmd.argv = ARGV("echo", "next");
    g = s_cmd(c, &cmd, &r, 10.0);
    OUT_EQ(r, "next\n");
    shoal_release(f);
    shoal_release(g);
    cluster_stop(cl);
}
END_TEST

/* --- the command-line client ---------------------------------------------------- */

/* Run bin/shoal with argv (argv[0] is replaced by the binary's path). */
static void s_cli(const char *const *argv_in, const char *in, proc_result_t *r,
                  double timeout)
{
    const char *argv[64];
    size_t n = 0;
    const char *bin = cluster_bin("shoal");
    static const char *const env[] = {"SHOAL_SCHEDULER", "SHOAL_SCHEDULER_FILE", NULL};

    ck_assert(bin != NULL);
    argv[n++] = bin;
    for (size_t i = 1; argv_in[i] && n < 63; i++)
        argv[n++] = argv_in[i];
    argv[n] = NULL;
    ck_assert_msg(proc_run(argv, env, in, in ? strlen(in) : 0, timeout, r) == 0,
                  "cannot run %s", bin);
    ck_assert_msg(!r->timed_out, "shoal %s did not finish within %.0f s (stderr: %s)",
                  argv[1] ? argv[1] : "", timeout, r->err);
}

START_TEST(test_cli_submit_array)
{
    cluster_t *cl = CLUSTER(.nworkers = 2, .nthreads = 2);
    proc_result_t r;
    char expect[256];
    size_t n = 0;

    for (int i = 1; i <= 20; i++)
        n += (size_t)snprintf(expect + n, sizeof expect - n, "%d\n", i);
    s_cli(ARGV("shoal", "submit", "--scheduler", cl->address, "--array", "1-20", "--", "sh",
               "-c", "echo {}"),
          NULL, &r, 30.0);
    ck_assert_msg(r.exited && r.exit_code == 0, "exit %d, stderr: %s", r.exit_code, r.err);
    ck_assert_msg(strcmp(r.out, expect) == 0, "stdout:\n%s", r.out);
    proc_result_free(&r);

    /* Order is the array's, not completion order: later indices finish first. */
    s_cli(ARGV("shoal", "submit", "--scheduler-file", cl->sfile, "--array", "1-4", "--",
               "sh", "-c", "sleep 0.$((5 - {})); echo i{}"),
          NULL, &r, 30.0);
    ck_assert_msg(r.exited && r.exit_code == 0, "exit %d, stderr: %s", r.exit_code, r.err);
    ck_assert_msg(strcmp(r.out, "i1\ni2\ni3\ni4\n") == 0, "stdout:\n%s", r.out);
    proc_result_free(&r);

    /* A single command. */
    s_cli(ARGV("shoal", "submit", "--scheduler", cl->address, "--", "echo", "single"), NULL,
          &r, 30.0);
    ck_assert_msg(r.exited && r.exit_code == 0, "exit %d, stderr: %s", r.exit_code, r.err);
    ck_assert_str_eq(r.out, "single\n");
    proc_result_free(&r);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_cli_map)
{
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 4);
    proc_result_t r;
    char in[1024], expect[1024];
    size_t ni = 0, ne = 0;

    for (int i = 1; i <= 50; i++) {
        ni += (size_t)snprintf(in + ni, sizeof in - ni, "l%d\n", i);
        ne += (size_t)snprintf(expect + ne, sizeof expect - ne, "xl%d\n", i);
    }
    s_cli(ARGV("shoal", "map", "--scheduler", cl->address, "--", "echo", "x{}"), in, &r,
          30.0);
    ck_assert_msg(r.exited && r.exit_code == 0, "exit %d, stderr: %s", r.exit_code, r.err);
    ck_assert_msg(strcmp(r.out, expect) == 0, "stdout:\n%s", r.out);
    proc_result_free(&r);

    /* Input order even when the first lines finish last. */
    s_cli(ARGV("shoal", "map", "--scheduler", cl->address, "--", "sh", "-c",
               "sleep 0.{}; echo x{}"),
          "3\n2\n1\n0\n", &r, 30.0);
    ck_assert_msg(r.exited && r.exit_code == 0, "exit %d, stderr: %s", r.exit_code, r.err);
    ck_assert_msg(strcmp(r.out, "x3\nx2\nx1\nx0\n") == 0, "stdout:\n%s", r.out);
    proc_result_free(&r);

    /* No input: nothing to do, success. */
    s_cli(ARGV("shoal", "map", "--scheduler", cl->address, "--", "echo", "{}"), "", &r, 30.0);
    ck_assert_msg(r.exited && r.exit_code == 0, "exit %d, stderr: %s", r.exit_code, r.err);
    ck_assert_str_eq(r.out, "");
    proc_result_free(&r);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_cli_failures)
{
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 4);
    proc_result_t r;

    s_cli(ARGV("shoal", "submit", "--scheduler", cl->address, "--", "sh", "-c", "exit 3"),
          NULL, &r, 30.0);
    ck_assert_msg(r.exited && r.exit_code != 0, "a failing command: exit %d", r.exit_code);
    proc_result_free(&r);

    s_cli(ARGV("shoal", "submit", "--scheduler", cl->address, "--",
               "/nonexistent/shoal-e2e-prog"),
          NULL, &r, 30.0);
    ck_assert_msg(r.exited && r.exit_code != 0, "a missing program: exit %d", r.exit_code);
    ck_assert_msg(r.err_len > 0, "no message for a missing program");
    proc_result_free(&r);

    /* One failing line makes map fail; the other lines still print in order. */
    s_cli(ARGV("shoal", "map", "--scheduler", cl->address, "--", "sh", "-c",
               "test {} != 3 && echo ok{}"),
          "1\n2\n3\n4\n5\n", &r, 30.0);
    ck_assert_msg(r.exited && r.exit_code != 0, "map with a failing task: exit %d",
                  r.exit_code);
    ck_assert_msg(strstr(r.out, "ok1\nok2\n") && strstr(r.out, "ok4\nok5\n"),
                  "stdout:\n%s", r.out);
    proc_result_free(&r);

    /* An array with one failing index. */
    s_cli(ARGV("shoal", "submit", "--scheduler", cl->address, "--array", "1-5", "--", "sh",
               "-c", "test {} != 4"),
          NULL, &r, 30.0);
    ck_assert_msg(r.exited && r.exit_code != 0, "array with a failing task: exit %d",
                  r.exit_code);
    proc_result_free(&r);

    /* And success is 0. */
    s_cli(ARGV("shoal", "submit", "--scheduler", cl->address, "--array", "1-5", "--",
               "true"),
          NULL, &r, 30.0);
    ck_assert_msg(r.exited && r.exit_code == 0, "exit %d, stderr: %s", r.exit_code, r.err);
    proc_result_free(&r);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_cli_status)
{
    cluster_t *cl = CLUSTER(.nworkers = 2, .nthreads = 3);
    proc_result_t r;

    s_cli(ARGV("shoal", "status", "--scheduler", cl->address), NULL, &r, 20.0);
    ck_assert_msg(r.exited && r.exit_code == 0, "exit %d, stderr: %s", r.exit_code, r.err);
    ck_assert_msg(strstr(r.out, "e2e-w0") && strstr(r.out, "e2e-w1"),
                  "status does not list the workers:\n%s", r.out);
    proc_result_free(&r);

    s_cli(ARGV("shoal", "status", "--scheduler-file", cl->sfile), NULL, &r, 20.0);
    ck_assert_msg(r.exited && r.exit_code == 0, "exit %d, stderr: %s", r.exit_code, r.err);
    ck_assert_msg(strstr(r.out, "e2e-w0") && strstr(r.out, "e2e-w1"),
                  "status does not list the workers:\n%s", r.out);
    proc_result_free(&r);
    cluster_stop(cl);
}
END_TEST

/* A bad invocation: exit `code` (or any non-zero if code < 0), a message on
 * stderr, promptly. */
static void s_bad(const char *const *argv, int code)
{
    proc_result_t r;
    char what[512];
    size_t n = 0;

    for (size_t i = 1; argv[i] && n < sizeof what; i++)
        n += (size_t)snprintf(what + n, sizeof what - n, "%s ", argv[i]);
    s_cli(argv, NULL, &r, 15.0);
    ck_assert_msg(r.exited, "shoal %s: killed by signal %d", what, r.signaled);
    if (code >= 0)
        ck_assert_msg(r.exit_code == code, "shoal %s: exit %d, expected %d", what,
                      r.exit_code, code);
    else
        ck_assert_msg(r.exit_code != 0, "shoal %s: exit 0", what);
    ck_assert_msg(r.err_len > 0, "shoal %s: no message on stderr", what);
    proc_result_free(&r);
}

/* Same for another binary of ours. */
static void s_bad_bin(const char *name, const char *const *args)
{
    const char *argv[32];
    proc_result_t r;
    size_t n = 0;

    argv[n++] = cluster_bin(name);
    for (size_t i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    ck_assert(proc_run(argv, NULL, NULL, 0, 15.0, &r) == 0);
    ck_assert_msg(!r.timed_out, "%s %s: still running after 15 s", name, args[0]);
    ck_assert_msg(r.exited && r.exit_code != 0, "%s %s: exit %d signal %d", name, args[0],
                  r.exit_code, r.signaled);
    ck_assert_msg(r.err_len > 0, "%s %s: no message on stderr", name, args[0]);
    proc_result_free(&r);
}

START_TEST(test_cli_bad_options)
{
    s_bad(ARGV("shoal"), 2);
    s_bad(ARGV("shoal", "--no-such-option"), 2);
    s_bad(ARGV("shoal", "frobnicate"), 2);
    s_bad(ARGV("shoal", "submit", "--scheduler", "127.0.0.1:1", "--array", "1-x", "--",
               "echo"),
          2);
    s_bad(ARGV("shoal", "submit", "--scheduler", "127.0.0.1:1", "--array", "5-1", "--",
               "echo"),
          2);
    s_bad(ARGV("shoal", "submit", "--scheduler", "127.0.0.1:1", "--array",
               "1-99999999999999999999", "--", "echo"),
          2);
    s_bad(ARGV("shoal", "submit", "--scheduler", "127.0.0.1:1"), 2);
    s_bad(ARGV("shoal", "submit", "--scheduler", "127.0.0.1:1", "--bogus", "--", "echo"), 2);
    s_bad(ARGV("shoal", "map", "--scheduler"), 2);
    s_bad(ARGV("shoal", "status", "--scheduler", "tcp://bad host:99999"), -1);

    s_bad_bin("shoal-scheduler", ARGV("--no-such-option"));
    s_bad_bin("shoal-scheduler", ARGV("--port", "99999"));
    s_bad_bin("shoal-scheduler", ARGV("--port", "12ab"));
    s_bad_bin("shoal-scheduler", ARGV("--max-message-size", "lots"));
    s_bad_bin("shoal-worker", ARGV("--no-such-option", "127.0.0.1:1"));
    s_bad_bin("shoal-worker", ARGV("--nthreads", "abc", "127.0.0.1:1"));
    s_bad_bin("shoal-worker", ARGV("--nthreads", "-3", "127.0.0.1:1"));
    s_bad_bin("shoal-worker", ARGV("--nworkers", "0", "127.0.0.1:1"));
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("e2e_cmd");
    TCase *lib = e2e_tcase("cmd_library");
    TCase *cli = e2e_tcase("cmd_cli");

    e2e_add(lib, test_cmd_output_and_status);
    e2e_add(lib, test_cmd_stdin_cwd_env);
    e2e_add(lib, test_cmd_timeout);
    e2e_add(lib, test_cmd_cannot_start);
    e2e_add(lib, test_cmd_large_output_and_many);
    e2e_add(lib, test_cmd_cancel_kills);
    e2e_add(cli, test_cli_submit_array);
    e2e_add(cli, test_cli_map);
    e2e_add(cli, test_cli_failures);
    e2e_add(cli, test_cli_status);
    e2e_add(cli, test_cli_bad_options);
    suite_add_tcase(s, lib);
    suite_add_tcase(s, cli);
    return s;
}

int main(void)
{
    return e2e_run(s_suite());
}
