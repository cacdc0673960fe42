/*
 * test_deploy_mpi.c - end to end: shoal-mpi and the C call of libshoal_mpi
 * under a real Open MPI mpirun (single node, oversubscribed).
 *
 * Every test runs mpirun as a child of the test process, which is made a
 * child subreaper (PR_SET_CHILD_SUBREAPER): whatever the job leaves running
 * after mpirun is gone (a rank, a scheduler, a worker, the client program or
 * something it started) is reparented to the test, where the test finds it
 * by walking /proc and fails, after killing it by pid.  Fault tests find the
 * scheduler and worker processes the same way, as descendants of mpirun.
 *
 * mpirun must be installed (openmpi-bin, `make deps`): a missing mpirun
 * fails the tests rather than skipping them.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e.h"

#define RUN_TIMEOUT 60.0
#define GONE_TIMEOUT 15.0
#define MAXPROC 4096

static const char *const s_primes_lines[] = {
    "100000 : Sum = 454396537\n",
    "200000 : Sum = 1709600813\n",
    "300000 : Sum = 3709507114\n",
};

/* The end of a long output: Check refuses failure messages of more than a
 * few KiB, so the messages carry tails and the whole text goes to stderr. */
static const char *s_tail(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    return !s ? "(null)" : n > 1000 ? s + n - 1000 : s;
}

/* hay contains needle, else fail showing where it was looked for. */
#define HAS(hay, needle)                                                               \
    do {                                                                               \
        const char *h_ = (hay), *n_ = (needle);                                        \
        if (!h_ || !strstr(h_, n_)) {                                                  \
            fprintf(stderr, "---- looked for \"%s\" in:\n%s\n----\n", n_, h_ ? h_ : ""); \
            ck_abort_msg("expected \"%s\" in output ending:\n%s", n_, s_tail(h_));      \
        }                                                                              \
    } while (0)

/* ---- paths ------------------------------------------------------------------------ */

/* The repository root: the test runs as ROOT/build/test/e2e/NAME. */
static const char *s_root(void)
{
    static char root[PATH_MAX];
    char exe[PATH_MAX];

    if (root[0])
        return root;
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    ck_assert_msg(n > 0, "readlink /proc/self/exe: %s", strerror(errno));
    exe[n] = '\0';
    for (int up = 0; up < 4; up++) {
        char *slash = strrchr(exe, '/');
        ck_assert(slash != NULL && slash != exe);
        *slash = '\0';
    }
    snprintf(root, sizeof root, "%s", exe);
    return root;
}

/* ROOT/rel, in one of a few rotating buffers. */
static const char *s_path(const char *rel)
{
    static char bufs[8][PATH_MAX];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, PATH_MAX, "%s/%s", s_root(), rel);
    ck_assert_msg(access(b, X_OK) == 0, "%s: %s (run make first)", b, strerror(errno));
    return b;
}

static const char *s_shoal_mpi(void)
{
    const char *p = cluster_bin("shoal-mpi");
    ck_assert_msg(p != NULL && access(p, X_OK) == 0, "bin/shoal-mpi not built");
    return p;
}

static const char *s_mpirun(void)
{
    static char path[PATH_MAX];
    const char *env = getenv("PATH");

    if (path[0])
        return path;
    if (!env)
        env = "/usr/bin:/bin";
    while (*env) {
        const char *end = strchr(env, ':');
        size_t len = end ? (size_t)(end - env) : strlen(env);
        if (len > 0 && len < sizeof path - 16) {
            snprintf(path, sizeof path, "%.*s/mpirun", (int)len, env);
            if (access(path, X_OK) == 0)
                return path;
        }
        if (!end)
            break;
        env = end + 1;
    }
    path[0] = '\0';
    ck_abort_msg("mpirun not found in $PATH: install Open MPI (make deps: openmpi-bin, "
                 "libopenmpi-dev)");
    return NULL;
}

/* ---- processes ---------------------------------------------------------------------- */

typedef struct {
    pid_t pid, ppid;
    char state;
    char comm[32];
} s_proc_t;

/* Parse /proc/PID/stat (the command name may hold spaces and parentheses:
 * it ends at the last ')'). */
static int s_stat(pid_t pid, s_proc_t *p)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    char *l = strchr(buf, '('), *r = strrchr(buf, ')');
    if (!l || !r || r < l || r[1] != ' ' || !r[2] || r[3] != ' ')
        return -1;
    size_t clen = (size_t)(r - l - 1);
    if (clen >= sizeof p->comm)
        clen = sizeof p->comm - 1;
    memcpy(p->comm, l + 1, clen);
    p->comm[clen] = '\0';
    p->pid = pid;
    p->state = r[2];
    p->ppid = (pid_t)strtol(r + 4, NULL, 10);
    return 0;
}

/* The live (not zombie) descendants of `root`; returns how many (at most
 * cap). */
static int s_descendants(pid_t root, s_proc_t *out, int cap)
{
    static s_proc_t all[MAXPROC];
    int nall = 0, n = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;

    ck_assert(d != NULL);
    while ((e = readdir(d)) && nall < MAXPROC) {
        char *end;
        long v = strtol(e->d_name, &end, 10);
        if (*end || v <= 1 || !isdigit((unsigned char)e->d_name[0]))
            continue;
        if (s_stat((pid_t)v, &all[nall]) == 0)
            nall++;
    }
    closedir(d);
    /* Grow the set from root until it stops growing. */
    char in[MAXPROC] = {0};
    int grew = 1;
    while (grew) {
        grew = 0;
        for (int i = 0; i < nall; i++) {
            if (in[i])
                continue;
            int parent_in = all[i].ppid == root;
            for (int j = 0; j < nall && !parent_in; j++)
                parent_in = in[j] && all[j].pid == all[i].ppid;
            if (parent_in) {
                in[i] = 1;
                grew = 1;
            }
        }
    }
    for (int i = 0; i < nall; i++)
        if (in[i] && all[i].state != 'Z' && n < cap)
            out[n++] = all[i];
    return n;
}

/* The first descendant of root named `comm` other than `not`, or 0. */
static pid_t s_find(pid_t root, const char *comm, pid_t not)
{
    s_proc_t ps[256];
    int n = s_descendants(root, ps, 256);
    for (int i = 0; i < n; i++)
        if (!strcmp(ps[i].comm, comm) && ps[i].pid != not)
            return ps[i].pid;
    return 0;
}

static pid_t s_wait_find(pid_t root, const char *comm, pid_t not, double timeout)
{
    double end = e2e_now() + timeout;
    pid_t p;
    while (!(p = s_find(root, comm, not)) && e2e_now() < end)
        e2e_sleep(0.05);
    return p;
}

/* Wait until nothing the test started is left (reaping what is reparented
 * to us); whatever is still there after GONE_TIMEOUT is killed by pid and
 * fails the test. */
static void s_assert_all_gone(void)
{
    s_proc_t ps[256];
    double end = e2e_now() + GONE_TIMEOUT;
    int n;
    for (;;) {
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
        n = s_descendants(getpid(), ps, 256);
        if (n == 0 || e2e_now() > end)
            break;
        e2e_sleep(0.05);
    }
    if (n == 0)
        return;
    char list[2048] = "";
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        kill(ps[i].pid, SIGKILL);
        int w = snprintf(list + off, sizeof list - off, " %d(%s)", (int)ps[i].pid,
                         ps[i].comm);
        if (w > 0 && (size_t)w < sizeof list - off)
            off += (size_t)w;
    }
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    ck_abort_msg("%d process(es) left behind by the MPI job:%s", n, list);
}

/* Under `make asan`, LeakSanitizer would fail every MPI process at exit
 * for what Open MPI itself never frees; suppress leaks allocated inside
 * Open MPI.  Open MPI is built without frame pointers, so only the slow
 * unwinder sees its frames; its plugins stay loaded so that they have names. */
static void s_lsan_for_mpi(void)
{
    static const char supp[] = "leak:libmpi.so\nleak:libopen-pal.so\nleak:libopen-rte.so\n"
                               "leak:libhwloc.so\nleak:libpmix.so\nleak:libevent\n"
                               "leak:mca_\nleak:_dl_\n";
    char path[700], opts[800];
    const char *old = getenv("LSAN_OPTIONS");

    snprintf(path, sizeof path, "%s/lsan-mpi-%d.supp", cluster_tmpbase(), (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_msg(fd >= 0, "%s: %s", path, strerror(errno));
    ck_assert(write(fd, supp, sizeof supp - 1) == (ssize_t)(sizeof supp - 1));
    close(fd);
    snprintf(opts, sizeof opts, "%s%ssuppressions=%s:fast_unwind_on_malloc=0", old ? old : "",
             old && *old ? ":" : "", path);
    setenv("LSAN_OPTIONS", opts, 1);
    setenv("OMPI_MCA_mca_base_component_disable_dlclose", "1", 1);
}

/* Become the subreaper of everything the test starts. */
static void s_setup(void)
{
    ck_assert_msg(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0, "PR_SET_CHILD_SUBREAPER: %s",
                  strerror(errno));
    s_lsan_for_mpi();
    /* The tests read shoal-mpi's info lines. */
    const char *lvl = getenv("SHOAL_LOG_LEVEL");
    if (!lvl || strcmp(lvl, "debug") != 0)
        setenv("SHOAL_LOG_LEVEL", "info", 1);
    unsetenv("SHOAL_SCHEDULER");
    unsetenv("SHOAL_SCHEDULER_FILE");
    unsetenv("SHOAL_BINDIR");
}

/* argv for `mpirun ... -n N args...` (args NULL-terminated). */
static void s_mpi_argv(const char **argv, int cap, int n, const char *const *args)
{
    static char nbuf[16];
    int a = 0;
    snprintf(nbuf, sizeof nbuf, "%d", n);
    argv[a++] = s_mpirun();
    argv[a++] = "--allow-run-as-root";
    argv[a++] = "--oversubscribe";
    argv[a++] = "-n";
    argv[a++] = nbuf;
    for (int i = 0; args[i]; i++) {
        ck_assert(a < cap - 1);
        argv[a++] = args[i];
    }
    argv[a] = NULL;
}

/* Run mpirun -n N args... to completion; the job must leave nothing. */
static void s_run(int n, const char *const *args, proc_result_t *r)
{
    const char *argv[64];
    s_mpi_argv(argv, 64, n, args);
    ck_assert_msg(proc_run(argv, NULL, NULL, 0, RUN_TIMEOUT, r) == 0, "cannot run mpirun");
    ck_assert_msg(!r->timed_out, "mpirun -n %d %s timed out; stderr ends:\n%s", n, args[0],
                  s_tail(r->err));
    s_assert_all_gone();
}

#define EXIT_IS(r, code)                                                                  \
    do {                                                                                  \
        if (!(r)->exited || (r)->exit_code != (code)) {                                   \
            fprintf(stderr, "---- stdout:\n%s\n---- stderr:\n%s\n----\n", (r)->out, (r)->err); \
            ck_abort_msg("exit %d (signal %d), expected %d; stderr ends:\n%s",            \
                         (r)->exit_code, (r)->signaled, (code), s_tail((r)->err));        \
        }                                                                                 \
    } while (0)

static void s_assert_primes(const proc_result_t *r)
{
    for (size_t i = 0; i < sizeof s_primes_lines / sizeof s_primes_lines[0]; i++)
        HAS(r->out, s_primes_lines[i]);
}

/* ---- the program form ------------------------------------------------------------------ */

START_TEST(primes_4_ranks)
{
    proc_result_t r;
    s_setup();
    s_run(4, (const char *const[]){s_shoal_mpi(), "--", s_path("build/examples/primes"),
                                   NULL}, &r);
    EXIT_IS(&r, 0);
    s_assert_primes(&r);
    HAS(r.err, "4 ranks: rank 0 runs the scheduler, rank 1");
    /* Single node: the scheduler stays on loopback. */
    HAS(r.err, "scheduler at tcp://127.0.0.1:");
    /* The workers have no --library: the sums prove that primes found
     * libprimes.so beside itself and uploaded it. */
    HAS(r.err, "exit status 0");
    proc_result_free(&r);
}
END_TEST

START_TEST(failing_program_status)
{
    proc_result_t r;
    s_setup();
    s_run(4, (const char *const[]){s_shoal_mpi(), "--", "sh", "-c", "exit 7", NULL}, &r);
    EXIT_IS(&r, 7);
    HAS(r.err, "sh exited with status 7");
    proc_result_free(&r);

    /* Killed by a signal: 128 + N, like a shell. */
    s_run(3, (const char *const[]){s_shoal_mpi(), "--", "sh", "-c", "kill -USR1 $$", NULL},
          &r);
    EXIT_IS(&r, 128 + SIGUSR1);
    proc_result_free(&r);
}
END_TEST

START_TEST(program_not_found)
{
    proc_result_t r;
    s_setup();
    s_run(3, (const char *const[]){s_shoal_mpi(), "--", "shoal-no-such-program-x", NULL},
          &r);
    EXIT_IS(&r, 127);
    HAS(r.err, "shoal-no-such-program-x: command not found");
    proc_result_free(&r);
}
END_TEST

START_TEST(one_rank)
{
    proc_result_t r;
    s_setup();
    s_run(1, (const char *const[]){s_shoal_mpi(), "--nthreads", "2", "--",
                                   s_path("build/examples/primes"), NULL}, &r);
    EXIT_IS(&r, 0);
    s_assert_primes(&r);
    HAS(r.err, "1 rank: it runs the scheduler, one worker (2 threads) and");
    proc_result_free(&r);
}
END_TEST

START_TEST(two_ranks)
{
    proc_result_t r;
    s_setup();
    s_run(2, (const char *const[]){s_shoal_mpi(), "--", s_path("build/examples/primes"),
                                   NULL}, &r);
    EXIT_IS(&r, 0);
    s_assert_primes(&r);
    HAS(r.err, "2 ranks: rank 0 runs the scheduler and");
    proc_result_free(&r);
}
END_TEST

/* Without mpirun: an MPI singleton, the one-rank layout. */
START_TEST(singleton_without_mpirun)
{
    proc_result_t r;
    s_setup();
    s_mpirun(); /* the singleton needs Open MPI installed just the same */
    const char *argv[] = {s_shoal_mpi(), "--", s_path("build/examples/primes"), NULL};
    ck_assert(proc_run(argv, NULL, NULL, 0, RUN_TIMEOUT, &r) == 0);
    ck_assert(!r.timed_out);
    s_assert_all_gone();
    EXIT_IS(&r, 0);
    s_assert_primes(&r);
    HAS(r.err, "1 rank:");
    proc_result_free(&r);
}
END_TEST

START_TEST(bad_usage)
{
    static const char *const cases[][4] = {
        {"--nthreads", "0", "--", "true"},
        {"--scheduler-port", "70000", "--", "true"},
        {"--host", "bad host", "--", "true"},
        {"--bogus", "--", "true", NULL},
    };
    static const char *const expect[] = {"--nthreads", "--scheduler-port", "--host",
                                         "unknown option"};
    s_setup();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *argv[6] = {s_shoal_mpi()};
        proc_result_t r;
        for (int j = 0; j < 4; j++)
            argv[j + 1] = cases[i][j];
        ck_assert(proc_run(argv, NULL, NULL, 0, RUN_TIMEOUT, &r) == 0);
        EXIT_IS(&r, 2);
        HAS(r.err, expect[i]);
        proc_result_free(&r);
    }
    s_assert_all_gone();
}
END_TEST

/* ---- the C call ------------------------------------------------------------------------ */

START_TEST(c_call_4_ranks)
{
    proc_result_t r;
    s_setup();
    s_run(4, (const char *const[]){s_path("build/deploy/mpi/shoal-mpi-testprog"), NULL}, &r);
    EXIT_IS(&r, 0);
    HAS(r.out, "testprog: ok: 1001 tasks, total 500500, 2 workers");
    HAS(r.err, "rank 1 the client");
    proc_result_free(&r);
}
END_TEST

START_TEST(c_call_status_and_small)
{
    proc_result_t r;
    const char *prog;
    s_setup();
    prog = s_path("build/deploy/mpi/shoal-mpi-testprog");

    /* The client's shoal_mpi_finalize(5) is every rank's exit status. */
    s_run(3, (const char *const[]){prog, "--exit", "5", NULL}, &r);
    EXIT_IS(&r, 5);
    HAS(r.out, "testprog: ok: 1001 tasks, total 500500, 1 workers");
    proc_result_free(&r);

    /* No shoal_mpi_finalize(): MPI_Finalize stops the cluster. */
    s_run(3, (const char *const[]){prog, "--no-finalize", NULL}, &r);
    EXIT_IS(&r, 0);
    HAS(r.out, "testprog: ok");
    HAS(r.err, "MPI_Finalize without shoal_mpi_finalize()");
    proc_result_free(&r);

    s_run(2, (const char *const[]){prog, NULL}, &r);
    EXIT_IS(&r, 0);
    HAS(r.out, "testprog: ok: 1001 tasks, total 500500, 1 workers");
    HAS(r.err, "2 ranks: rank 0 runs the scheduler and the client");
    proc_result_free(&r);

    s_run(1, (const char *const[]){prog, NULL}, &r);
    EXIT_IS(&r, 0);
    HAS(r.out, "testprog: ok: 1001 tasks, total 500500, 1 workers");
    proc_result_free(&r);
}
END_TEST

/* ---- faults ------------------------------------------------------------------------------ */

typedef struct {
    char dir[600];
    char out[700], err[700];
    pid_t pid;
} s_job_t;

/* A fresh directory for a job's files. */
static void s_job_init(s_job_t *j)
{
    memset(j, 0, sizeof *j);
    snprintf(j->dir, sizeof j->dir, "%s/mpi-XXXXXX", cluster_tmpbase());
    ck_assert_msg(mkdtemp(j->dir) != NULL, "mkdtemp: %s", strerror(errno));
}

/* Start mpirun in the background, output to files in the job's directory. */
static void s_job_start(s_job_t *j, int n, const char *const *args)
{
    const char *argv[64];
    snprintf(j->out, sizeof j->out, "%s/out", j->dir);
    snprintf(j->err, sizeof j->err, "%s/err", j->dir);
    int o = open(j->out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int e = open(j->err, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert(o >= 0 && e >= 0);
    s_mpi_argv(argv, 64, n, args);
    j->pid = proc_spawn(argv, NULL, -1, o, e, NULL);
    close(o);
    close(e);
    ck_assert_msg(j->pid > 0, "cannot start mpirun");
}

/* A file's contents (static buffer, bounded). */
static const char *s_slurp(const char *path)
{
    static char buf[1 << 18];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0)
        close(fd);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

/* Wait for mpirun; returns its wait status (asserts it ended in time). */
static int s_job_wait(s_job_t *j, double timeout)
{
    int st = cluster_waitpid(j->pid, timeout);
    if (st == -1) {
        kill(-j->pid, SIGKILL);
        kill(j->pid, SIGKILL);
        cluster_waitpid(j->pid, 5);
        ck_abort_msg("mpirun did not end within %.0f s; stderr ends:\n%s", timeout,
                     s_tail(s_slurp(j->err)));
    }
    proc_forget(j->pid);
    return st;
}

START_TEST(scheduler_dies)
{
    s_job_t j;
    s_setup();
    s_job_init(&j);
    /* The client would wait a minute: the job must end long before. */
    s_job_start(&j, 3, (const char *const[]){s_shoal_mpi(), "--", "sh", "-c",
                                             "sleep 60 & sleep 61; wait", NULL});
    pid_t sched = s_wait_find(j.pid, "shoal-scheduler", 0, 20);
    ck_assert_msg(sched > 0, "no scheduler found; stderr ends:\n%s", s_tail(s_slurp(j.err)));
    ck_assert_msg(s_wait_find(j.pid, "shoal-worker", 0, 20) > 0, "no worker found");
    ck_assert_msg(s_wait_find(j.pid, "sleep", 0, 20) > 0, "no client program found");
    double t0 = e2e_now();
    ck_assert(kill(sched, SIGKILL) == 0);
    int st = s_job_wait(&j, 30);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) != 0, "mpirun status 0x%x", st);
    ck_assert_msg(e2e_now() - t0 < 20, "took %.1f s", e2e_now() - t0);
    s_assert_all_gone();
    HAS(s_slurp(j.err), "the scheduler was killed by signal 9");
    HAS(s_slurp(j.err), "ending the MPI job");
}
END_TEST

START_TEST(worker_restarted)
{
    s_job_t j;
    char go[700], script[2000];
    s_setup();
    s_job_init(&j);
    snprintf(go, sizeof go, "%s/go", j.dir);
    snprintf(script, sizeof script,
             "while [ ! -e '%s' ]; do sleep 0.05; done; exec '%s'", go,
             s_path("build/examples/primes"));
    s_job_start(&j, 3, (const char *const[]){s_shoal_mpi(), "--", "sh", "-c", script,
                                             NULL});
    pid_t w1 = s_wait_find(j.pid, "shoal-worker", 0, 20);
    ck_assert_msg(w1 > 0, "no worker found; stderr ends:\n%s", s_tail(s_slurp(j.err)));
    ck_assert(kill(w1, SIGKILL) == 0);
    /* The only worker rank starts a new one; the client then needs it. */
    pid_t w2 = s_wait_find(j.pid, "shoal-worker", w1, 20);
    ck_assert_msg(w2 > 0, "worker not restarted; stderr ends:\n%s", s_tail(s_slurp(j.err)));
    int fd = open(go, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    ck_assert(fd >= 0);
    close(fd);
    int st = s_job_wait(&j, RUN_TIMEOUT);
    s_assert_all_gone();
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "mpirun status 0x%x; stderr ends:\n%s",
                  st, s_tail(s_slurp(j.err)));
    /* The restarted worker was the only one left to run the sums. */
    HAS(s_slurp(j.err), "restarting it (1 of 3)");
    for (size_t i = 0; i < sizeof s_primes_lines / sizeof s_primes_lines[0]; i++)
        HAS(s_slurp(j.out), s_primes_lines[i]);
}
END_TEST

/* No program: the cluster serves outside clients through --scheduler-file
 * until mpirun is stopped. */
START_TEST(serve_until_stopped)
{
    s_job_t j;
    char sfile[700];
    shoal_error_t err;
    s_setup();
    s_job_init(&j);
    snprintf(sfile, sizeof sfile, "%s/scheduler.json", j.dir);
    s_job_start(&j, 3, (const char *const[]){s_shoal_mpi(), "--scheduler-file", sfile,
                                             NULL});
    shoal_connect_opts_t co = {.scheduler_file = sfile, .timeout = 20};
    shoal_client_t *c = shoal_connect_opts(&co, &err);
    ck_assert_msg(c != NULL, "connect: %s; stderr ends:\n%s", err.msg, s_tail(s_slurp(j.err)));
    ck_assert_msg(shoal_wait_for_workers(c, 2, 20, &err) == 0, "%s", err.msg);
    shoal_future_t *f = SUB_I(c, "shoal.sum", NULL, 20, 22);
    ck_assert_int_eq(I64(f), 42);
    shoal_release(f);
    shoal_disconnect(c);

    ck_assert(kill(j.pid, SIGTERM) == 0);
    s_job_wait(&j, 30);
    s_assert_all_gone();
    ck_assert_msg(access(sfile, F_OK) != 0, "scheduler file %s left behind", sfile);
    HAS(s_slurp(j.err), "no client program: serving until the job is stopped");
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("deploy_mpi");
    TCase *tc = e2e_tcase("program");
    e2e_add(tc, primes_4_ranks);
    e2e_add(tc, failing_program_status);
    e2e_add(tc, program_not_found);
    e2e_add(tc, one_rank);
    e2e_add(tc, two_ranks);
    e2e_add(tc, singleton_without_mpirun);
    e2e_add(tc, bad_usage);
    suite_add_tcase(s, tc);

    tc = e2e_tcase("c_call");
    e2e_add(tc, c_call_4_ranks);
    e2e_add(tc, c_call_status_and_small);
    suite_add_tcase(s, tc);

    tc = e2e_tcase("faults");
    e2e_add(tc, scheduler_dies);
    e2e_add(tc, worker_restarted);
    e2e_add(tc, serve_until_stopped);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return e2e_run(s_suite());
}
