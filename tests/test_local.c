/*
 * test_local.c - end to end: how a client finds its cluster.  The local
 * cluster started by shoal_connect(NULL) (and torn down by disconnect), the
 * in-process inline:// mode, $SHOAL_SCHEDULER / $SHOAL_SCHEDULER_FILE, and
 * task libraries uploaded from the client to workers that have none,
 * including a worker that joins after the upload.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "e2e.h"

#define MAXP 256

/* The pids of our direct children (from /proc). */
static int s_children(pid_t *out, int max)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;

    ck_assert(d != NULL);
    while ((e = readdir(d)) && n < max) {
        char *end;
        long v = strtol(e->d_name, &end, 10);
        if (*end || v <= 1 || !isdigit((unsigned char)e->d_name[0]))
            continue;
        if (cluster_ppid((pid_t)v) == getpid())
            out[n++] = (pid_t)v;
    }
    closedir(d);
    return n;
}

/* Point the library at this tree's binaries and a private runtime dir, with
 * no scheduler named in the environment. */
static void s_local_env(void)
{
    char rt[700];
    const char *bindir = cluster_bindir();

    ck_assert(bindir != NULL);
    unsetenv("SHOAL_SCHEDULER");
    unsetenv("SHOAL_SCHEDULER_FILE");
    setenv("SHOAL_BINDIR", bindir, 1);
    snprintf(rt, sizeof rt, "%s/rt-%d", cluster_tmpbase(), (int)getpid());
    mkdir(rt, 0700);
    setenv("SHOAL_RUNTIME_DIR", rt, 1);
    if (!getenv("SHOAL_LOG_LEVEL"))
        setenv("SHOAL_LOG_LEVEL", "warn", 1);
}

/* The small workload run against every kind of connection: a dependency
 * graph, a failure and its dependent, and a command. */
static void s_workload(shoal_client_t *c)
{
    shoal_submit_opts_t fo = {.name = "wl-failer"};
    shoal_future_t *a, *b, *x, *y, *z, *f, *g, *cmdf;
    shoal_cmd_t cmd = {.argv = (const char *const[]){"sh", "-c", "echo cmd-out; exit 2", NULL}};
    shoal_cmd_result_t r;
    shoal_error_t err;

    a = SUB_I(c, "inc", NULL, 1);
    b = SUB_I(c, "inc", NULL, 10);
    x = SUB_F(c, "inc", NULL, a);
    y = SUB_F(c, "inc", NULL, b);
    z = SUB_F(c, "mul", NULL, x, y);
    ck_assert_int_eq(I64(z), 36);

    f = SUB_S(c, "fail", &fo, "wl-boom");
    g = SUB_F(c, "inc", NULL, f);
    CONTAINS(ERRTEXT(f), "wl-boom");
    CONTAINS(ERRTEXT(g), "wl-boom");
    CONTAINS(ERRTEXT(g), "wl-failer");

    cmdf = shoal_submit_cmd(c, &cmd, NULL, &err);
    ck_assert_msg(cmdf != NULL, "submit cmd: %s", err.msg);
    ck_assert_msg(shoal_cmd_result(cmdf, E2E_WAIT, &r, &err) == 0, "cmd: %s", err.msg);
    ck_assert_int_eq(r.exit_code, 2);
    ck_assert_uint_eq(r.out_len, 8);
    ck_assert(memcmp(r.out, "cmd-out\n", 8) == 0);

    shoal_release(a);
    shoal_release(b);
    shoal_release(x);
    shoal_release(y);
    shoal_release(z);
    shoal_release(f);
    shoal_release(g);
    shoal_release(cmdf);
}

/* Wait until none of pids[] exists any more: kill(pid, 0) fails with ESRCH
 * (a zombie would still answer: the library must reap its children). */
static void s_all_gone(const pid_t *pids, int n, double timeout)
{
    double end = e2e_now() + timeout;

    for (int i = 0; i < n; i++) {
        while (!(kill(pids[i], 0) == -1 && errno == ESRCH) && e2e_now() < end)
            e2e_sleep(0.02);
        ck_assert_msg(kill(pids[i], 0) == -1 && errno == ESRCH,
                      "process %d still exists %.0f s after shoal_disconnect%s", (int)pids[i],
                      timeout, proc_alive(pids[i]) ? "" : " (an unreaped zombie)");
    }
}

START_TEST(test_local_default)
{
    shoal_client_t *c;
    shoal_status_info_t st;
    shoal_error_t err;
    pid_t pids[MAXP];
    int n = 0, nkids;
    const char *addr;

    s_local_env();
    ck_assert_int_eq(s_children(pids, MAXP), 0);
    c = shoal_connect(NULL, &err);
    ck_assert_msg(c != NULL, "local cluster: %s", err.msg);
    addr = shoal_client_address(c);
    ck_assert_msg(addr && strncmp(addr, "tcp://", 6) == 0, "local cluster address %s",
                  addr ? addr : "(null)");
    ck_assert_msg(shoal_wait_for_workers(c, 1, 20.0, &err) == 0, "workers: %s", err.msg);
    ck_assert_msg(shoal_upload_library(c, cluster_libbasic(), &err) == 0, "upload: %s",
                  err.msg);
    s_workload(c);

    STATUS(c, &st);
    ck_assert_int_ge(st.nworkers, 1);
    ck_assert_int_ge(st.nthreads, st.nworkers);
    for (int i = 0; i < st.nworkers && n < MAXP; i++) {
        ck_assert_msg(st.workers[i].pid > 1, "worker %s has pid %d", st.workers[i].name,
                      st.workers[i].pid);
        ck_assert(proc_alive((pid_t)st.workers[i].pid));
        pids[n++] = (pid_t)st.workers[i].pid;
    }
    shoal_status_free(&st);
    /* The scheduler and workers are processes this one started. */
    nkids = s_children(pids + n, MAXP - n);
    ck_assert_msg(nkids >= 2, "only %d child processes for a local cluster", nkids);
    n += nkids;

    shoal_disconnect(c);
    s_all_gone(pids, n, 10.0);
}
END_TEST

START_TEST(test_local_sized)
{
    shoal_connect_opts_t o;
    shoal_client_t *c;
    shoal_status_info_t st;
    shoal_error_t err;
    shoal_future_t *fs[20];
    pid_t pids[MAXP];
    int n;

    s_local_env();
    memset(&o, 0, sizeof o);
    o.local_nworkers = 2;
    o.local_nthreads = 2;
    o.name = "local-sized";
    c = shoal_connect_opts(&o, &err);
    ck_assert_msg(c != NULL, "local cluster: %s", err.msg);
    ck_assert_msg(shoal_wait_for_workers(c, 2, 20.0, &err) == 0, "workers: %s", err.msg);
    STATUS(c, &st);
    ck_assert_int_eq(st.nworkers, 2);
    ck_assert_int_eq(st.nthreads, 4);
    ck_assert_int_ge(st.nclients, 1);
    shoal_status_free(&st);
    /* Built-in functions need no library. */
    for (int i = 0; i < 20; i++)
        fs[i] = SUB_I(c, "shoal.sum", NULL, i, 100);
    for (int i = 0; i < 20; i++) {
        ck_assert_int_eq(I64(fs[i]), i + 100);
        shoal_release(fs[i]);
    }
    n = s_children(pids, MAXP);
    ck_assert_int_ge(n, 2);
    shoal_disconnect(c);
    s_all_gone(pids, n, 10.0);
}
END_TEST

START_TEST(test_inline)
{
    shoal_client_t *c;
    shoal_error_t err;
    shoal_future_t *fs[100], *u;
    pid_t pids[4];

    c = shoal_connect("inline://", &err);
    ck_assert_msg(c != NULL, "inline: %s", err.msg);
    ck_assert_str_eq(shoal_client_address(c), "inline://");
    /* No processes: everything runs here. */
    ck_assert_int_eq(s_children(pids, 4), 0);
    ck_assert_msg(shoal_upload_library(c, cluster_libbasic(), &err) == 0, "upload: %s",
                  err.msg);
    s_workload(c);
    /* A chain, and an unknown function. */
    fs[0] = SUB_I(c, "inc", NULL, 0);
    for (int i = 1; i < 100; i++)
        fs[i] = SUB_F(c, "inc", NULL, fs[i - 1]);
    ck_assert_int_eq(I64(fs[99]), 100);
    for (int i = 0; i < 100; i++)
        shoal_release(fs[i]);
    u = SUB_I(c, "no_such_function_xyz", NULL, 1);
    CONTAINS(ERRTEXT(u), "no_such_function_xyz");
    shoal_release(u);
    ck_assert_int_eq(s_children(pids, 4), 0);
    shoal_disconnect(c);
}
END_TEST

START_TEST(test_scheduler_env)
{
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 1);
    shoal_connect_opts_t o;
    shoal_client_t *c;
    shoal_status_info_t st;
    shoal_error_t err;
    shoal_future_t *f;
    char hostport[256];

    /* $SHOAL_SCHEDULER_FILE */
    unsetenv("SHOAL_SCHEDULER");
    setenv("SHOAL_SCHEDULER_FILE", cl->sfile, 1);
    c = shoal_connect(NULL, &err);
    ck_assert_msg(c != NULL, "via SHOAL_SCHEDULER_FILE: %s", err.msg);
    ck_assert_str_eq(shoal_client_address(c), cl->address);
    f = SUB_I(c, "inc", NULL, 1);
    ck_assert_int_eq(I64(f), 2);
    shoal_release(f);
    STATUS(c, &st);   /* our cluster, not a new local one */
    ck_assert_int_eq(st.nworkers, 1);
    ck_assert_str_eq(st.workers[0].name, "e2e-w0");
    shoal_status_free(&st);
    shoal_disconnect(c);

    /* $SHOAL_SCHEDULER wins over $SHOAL_SCHEDULER_FILE. */
    setenv("SHOAL_SCHEDULER", cl->address, 1);
    setenv("SHOAL_SCHEDULER_FILE", "/nonexistent/shoal-e2e.json", 1);
    c = shoal_connect(NULL, &err);
    ck_assert_msg(c != NULL, "via SHOAL_SCHEDULER: %s", err.msg);
    ck_assert_str_eq(shoal_client_address(c), cl->address);
    shoal_disconnect(c);

    /* opts.scheduler_file, with nothing in the environment. */
    unsetenv("SHOAL_SCHEDULER");
    unsetenv("SHOAL_SCHEDULER_FILE");
    memset(&o, 0, sizeof o);
    o.scheduler_file = cl->sfile;
    c = shoal_connect_opts(&o, &err);
    ck_assert_msg(c != NULL, "via opts.scheduler_file: %s", err.msg);
    ck_assert_str_eq(shoal_client_address(c), cl->address);
    shoal_disconnect(c);

    /* HOST:PORT without the scheme. */
    ck_assert(strncmp(cl->address, "tcp://", 6) == 0);
    snprintf(hostport, sizeof hostport, "%s", cl->address + 6);
    c = shoal_connect(hostport, &err);
    ck_assert_msg(c != NULL, "via %s: %s", hostport, err.msg);
    ck_assert_str_eq(shoal_client_address(c), cl->address);
    f = SUB_I(c, "inc", NULL, 2);
    ck_assert_int_eq(I64(f), 3);
    shoal_release(f);
    shoal_disconnect(c);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_upload_library)
{
    cluster_t *cl = CLUSTER(.nworkers = 2, .nthreads = 1, .no_library = 1);
    shoal_client_t *c = cl->client;
    shoal_future_t *f, *fs[4];
    shoal_error_t err;
    char garbage[700];
    const char *w;
    FILE *fp;
    int idx, rc;

    /* Without the library the workers do not know inc... */
    f = SUB_I(c, "inc", NULL, 1);
    CONTAINS(ERRTEXT(f), "inc");
    shoal_release(f);
    /* ...after the upload every worker does. */
    ck_assert_msg(shoal_upload_library(c, cluster_libbasic(), &err) == 0, "upload: %s",
                  err.msg);
    for (int i = 0; i < 4; i++)
        fs[i] = SUB_SLOW(c, i, 0.3, NULL);
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(I64(fs[i]), i + 1);
        shoal_release(fs[i]);
    }
    /* Uploading the same library again is harmless. */
    ck_assert_msg(shoal_upload_library(c, cluster_libbasic(), &err) == 0, "re-upload: %s",
                  err.msg);

    /* A worker that joins later gets it too: make it the only one left. */
    idx = cluster_add_worker(cl, 1, NULL, 0);
    ck_assert_int_ge(idx, 0);
    ck_assert_msg(shoal_wait_for_workers(c, 3, 20.0, &err) == 0, "third worker: %s", err.msg);
    ck_assert_int_eq(cluster_signal_worker(cl, 0, SIGKILL, 1), 0);
    ck_assert_int_eq(cluster_signal_worker(cl, 1, SIGKILL, 1), 0);
    ck_assert_msg(cluster_wait_nworkers(c, 1, 15.0) == 0, "the killed workers are still listed");
    f = SUB_I(c, "mul", NULL, 6, 7);
    ck_assert_int_eq(I64(f), 42);
    w = shoal_future_worker(f);
    if (w)
        ck_assert_str_eq(w, cl->worker_name[idx]);
    shoal_release(f);

    /* A path that does not exist fails on the client side. */
    rc = shoal_upload_library(c, "/nonexistent/libnothing.so", &err);
    ck_assert_int_eq(rc, -1);
    ck_assert(err.msg[0] != '\0');
    /* Bytes that are not a shared object: refused or not, nobody crashes. */
    snprintf(garbage, sizeof garbage, "%s/libgarbage.so", cl->dir);
    fp = fopen(garbage, "w");
    ck_assert(fp != NULL);
    fputs("this is not an ELF shared object\n", fp);
    fclose(fp);
    memset(&err, 0, sizeof err);
    rc = shoal_upload_library(c, garbage, &err);
    if (rc < 0)
        ck_assert(err.msg[0] != '\0');
    f = SUB_I(c, "inc", NULL, 8);
    ck_assert_int_eq(I64(f), 9);
    shoal_release(f);
    ck_assert_msg(cluster_wait_nworkers(c, 1, 2.0) == 0, "a worker died after a bad library");
    ck_assert(proc_alive(cl->worker_pid[idx]));
    cluster_stop(cl);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("e2e_local");
    TCase *tc = e2e_tcase("local");

    e2e_add(tc, test_local_default);
    e2e_add(tc, test_local_sized);
    e2e_add(tc, test_inline);
    e2e_add(tc, test_scheduler_env);
    e2e_add(tc, test_upload_library);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return e2e_run(s_suite());
}
