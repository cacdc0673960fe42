/*
 * test_deploy_mpi_slurm.c - end to end: shoal-mpi inside batch job scripts
 * that call mpirun, on a real single-node Slurm (tests/lib/slurm.c: munged,
 * slurmctld and slurmd on 127.0.0.1, the node declaring 4 CPUs).
 *
 *   - an #SBATCH script (-N 1 --ntasks=4) runs
 *     `mpirun --allow-run-as-root --oversubscribe -n 4 shoal-mpi -- CLIENT`:
 *     the primes example's sums in the job's output, the client run in the
 *     job with 2 workers, mpirun's status 0 recorded by the script and the
 *     job's ExitCode 0:0 in `scontrol show job`;
 *   - an #PBS script (select=1:ncpus=4:mpiprocs=4) submitted with qsub
 *     (Slurm's Torque wrapper) whose mpirun has no -n: it takes its 4 ranks
 *     from the allocation;
 *   - a failing client (`sh -c 'exit 7'`): mpirun returns 7, the script
 *     records it and exits with it, the job is FAILED with ExitCode 7:0.
 * After each job no process of the job is left (the test process is a child
 * subreaper: slurmstepd daemonizes, and whatever outlives the job comes
 * back to it, where /proc shows it), no job is left in squeue, and the
 * daemons are stopped by pid.
 *
 * Nothing special is needed in the scripts: in a Slurm allocation Open MPI
 * selects its slurm components, which read the nodes and slots (one per
 * task) from the job's environment, and on a single node start the ranks
 * itself (srun only starts its daemons on other nodes).
 *
 * Starting the daemons needs root: as another user the tests say so and
 * pass.  mpirun must be installed (openmpi-bin): a missing one fails.
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e.h"
#include "slurm.h"

#define TEST_TIMEOUT 90       /* per test: a Slurm, one job, the cleanup */
#define JOB_TIMEOUT 60.0      /* submission to the end of the job */
#define GONE_TIMEOUT 15.0     /* for the job's processes to leave */
#define MAXPROC 4096

static const char *const s_primes_lines[] = {
    "100000 : Sum = 454396537\n",
    "200000 : Sum = 1709600813\n",
    "300000 : Sum = 3709507114\n",
};

static slurm_t s_slurm;           /* the Slurm of the running test */
static char s_work[PATH_MAX];     /* its directory for scripts and results */

/* The end of a long text: Check refuses failure messages of more than a
 * few KiB, so the messages carry tails and the whole text goes to stderr. */
static const char *s_end(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    return !s ? "(null)" : n > 1000 ? s + n - 1000 : s;
}

#define HAS(hay, needle)                                                               \
    do {                                                                               \
        const char *h_ = (hay), *n_ = (needle);                                        \
        if (!h_ || !strstr(h_, n_)) {                                                  \
            fprintf(stderr, "---- looked for \"%s\" in:\n%s\n----\n", n_, h_ ? h_ : ""); \
            ck_abort_msg("expected \"%s\" in output ending:\n%s", n_, s_end(h_));       \
        }                                                                              \
    } while (0)

/* ---- paths and files ------------------------------------------------------------ */

/* ROOT/rel, where the test runs as ROOT/build/test/e2e/NAME; one of a few
 * rotating buffers.  Asserts it is there. */
static const char *s_repo(const char *rel)
{
    static char bufs[4][PATH_MAX];
    static int next;
    char exe[PATH_MAX], *b = bufs[next++ % 4];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    int up;

    ck_assert_msg(n > 0, "readlink /proc/self/exe: %s", strerror(errno));
    exe[n] = '\0';
    for (up = 0; up < 4; up++) {
        char *slash = strrchr(exe, '/');
        ck_assert(slash != NULL && slash != exe);
        *slash = '\0';
    }
    ck_assert_msg(snprintf(b, PATH_MAX, "%s/%s", exe, rel) < PATH_MAX, "path too long: %s",
                  exe);
    ck_assert_msg(access(b, X_OK) == 0, "%s: %s (run make first)", b, strerror(errno));
    return b;
}

/* `s` quoted for the shell ('...', with ' as '\''), into out (asserts it
 * fits). */
static const char *s_shq(char *out, size_t cap, const char *s)
{
    size_t o = 0;

    ck_assert(cap > 2);
    out[o++] = '\'';
    for (; *s; s++) {
        const char *piece = *s == '\'' ? "'\\''" : NULL;
        size_t len = piece ? 4 : 1;
        ck_assert_msg(o + len + 2 <= cap, "path too long to quote: %s", s);
        if (piece)
            memcpy(out + o, piece, len);
        else
            out[o] = *s;
        o += len;
    }
    out[o++] = '\'';
    out[o] = '\0';
    return out;
}

static void s_write(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    size_t len = strlen(text);

    ck_assert_msg(fd >= 0, "cannot create %s: %s", path, strerror(errno));
    ck_assert_int_eq(write(fd, text, len), (ssize_t)len);
    close(fd);
}

/* A whole (small) file, NUL-terminated, malloc'd; "" if it is missing. */
static char *s_slurp(const char *path)
{
    enum { MAX = 4 << 20 };
    char *buf = malloc(MAX + 1);
    FILE *f = fopen(path, "r");
    size_t n = 0;

    ck_assert(buf != NULL);
    if (f) {
        n = fread(buf, 1, MAX, f);
        fclose(f);
    }
    buf[n] = '\0';
    return buf;
}

/* ---- jobs ----------------------------------------------------------------------- */

typedef struct job {
    char id[32];
    char state[32];            /* JobState when it ended */
    int exit_code, exit_signal; /* ExitCode=CODE:SIGNAL */
    char out[PATH_MAX], err[PATH_MAX];   /* StdOut, StdErr */
    char *stdout_text, *stderr_text;
} job_t;

/* The value of `key` (" Name=") in scontrol's one-line output, up to the
 * next space; 0, or -1 if absent. */
static int s_field(const char *line, const char *key, char *out, size_t cap)
{
    const char *p = strstr(line, key);
    size_t n;

    if (!p)
        return -1;
    p += strlen(key);
    n = strcspn(p, " \n");
    if (n >= cap)
        return -1;
    memcpy(out, p, n);
    out[n] = '\0';
    return 0;
}

/* Submit `script` with `submit` (sbatch or qsub, run in the work
 * directory): the job id is the last word of what it prints. */
static void s_submit(const char *submit, const char *script, job_t *j)
{
    proc_result_t r;
    const char *w;
    size_t n;

    memset(j, 0, sizeof(*j));
    ck_assert_int_eq(chdir(s_work), 0);
    slurm_cmd(&r, 30, submit, script, NULL);
    ck_assert_msg(r.exit_code == 0, "%s failed (%d): %s%s", submit, r.exit_code, r.out, r.err);
    n = strlen(r.out);
    while (n > 0 && isspace((unsigned char)r.out[n - 1]))
        r.out[--n] = '\0';
    w = strrchr(r.out, ' ');
    w = w ? w + 1 : r.out;
    ck_assert_msg(*w && strspn(w, "0123456789") == strlen(w) && strlen(w) < sizeof(j->id),
                  "%s printed no job id: %s", submit, r.out);
    snprintf(j->id, sizeof(j->id), "%s", w);
    proc_result_free(&r);
}

static int s_terminal(const char *state)
{
    static const char *const done[] = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT",
                                       "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                                       "DEADLINE", "PREEMPTED", NULL};
    int i;

    for (i = 0; done[i]; i++)
        if (!strcmp(state, done[i]))
            return 1;
    return 0;
}

/* "CODE:SIGNAL" -> the two numbers; 0 or -1. */
static int s_exit_code(const char *text, int *code, int *sig)
{
    char *end;
    long c = strtol(text, &end, 10), g;

    if (end == text || *end != ':')
        return -1;
    text = end + 1;
    g = strtol(text, &end, 10);
    if (end == text || *end)
        return -1;
    *code = (int)c;
    *sig = (int)g;
    return 0;
}

/* Wait (bounded) for the job to end; fill in its state, exit code and
 * output.  slurmctld keeps the record of a finished job MinJobAge seconds
 * (300 here), so `scontrol show job` still has it; there is no accounting
 * daemon for sacct. */
static void s_wait_job(job_t *j)
{
    double end = e2e_now() + JOB_TIMEOUT;
    char line[8192] = "", code[32], log[PATH_MAX + 32];

    for (;;) {
        proc_result_t r;
        slurm_cmd(&r, 20, "scontrol", "-o", "show", "job", j->id, NULL);
        ck_assert_msg(r.exit_code == 0, "scontrol show job %s: %s", j->id, r.err);
        snprintf(line, sizeof(line), " %s", r.out);
        proc_result_free(&r);
        ck_assert_msg(s_field(line, " JobState=", j->state, sizeof(j->state)) == 0,
                      "no JobState in: %s", line);
        if (s_terminal(j->state))
            break;
        if (e2e_now() > end) {
            snprintf(log, sizeof(log), "%s/log/slurmd.log", s_slurm.dir);
            ck_abort_msg("job %s did not end in %.0f s (%s); slurmd log ends:\n%s", j->id,
                         JOB_TIMEOUT, j->state, slurm_file_tail(log, 1500));
        }
        e2e_sleep(0.2);
    }
    ck_assert_msg(s_field(line, " ExitCode=", code, sizeof(code)) == 0 &&
                  s_exit_code(code, &j->exit_code, &j->exit_signal) == 0,
                  "no ExitCode in: %s", line);
    ck_assert_msg(s_field(line, " StdOut=", j->out, sizeof(j->out)) == 0 &&
                  s_field(line, " StdErr=", j->err, sizeof(j->err)) == 0,
                  "no StdOut/StdErr in: %s", line);
    j->stdout_text = s_slurp(j->out);
    j->stderr_text = s_slurp(j->err);
    if (getenv("SHOAL_E2E_VERBOSE"))
        fprintf(stderr, "---- job %s %s %d:%d\n---- stdout:\n%s---- stderr:\n%s----\n",
                j->id, j->state, j->exit_code, j->exit_signal, j->stdout_text,
                j->stderr_text);
}

static void s_job_free(job_t *j)
{
    free(j->stdout_text);
    free(j->stderr_text);
    j->stdout_text = j->stderr_text = NULL;
}

/* The job ended as expected: its state, its ExitCode, and mpirun's status
 * as the script recorded it in STATUSFILE. */
static void s_expect_end(const job_t *j, const char *state, int code, const char *statusfile)
{
    char want[32], *got = s_slurp(statusfile);

    if (strcmp(j->state, state) != 0 || j->exit_code != code || j->exit_signal != 0) {
        fprintf(stderr, "---- job %s stdout:\n%s\n---- stderr:\n%s\n----\n", j->id,
                j->stdout_text, j->stderr_text);
        ck_abort_msg("job %s: %s, ExitCode %d:%d; expected %s, %d:0; stderr ends:\n%s",
                     j->id, j->state, j->exit_code, j->exit_signal, state, code,
                     s_end(j->stderr_text));
    }
    snprintf(want, sizeof(want), "%d\n", code);
    ck_assert_msg(!strcmp(got, want), "mpirun's status recorded by the job: \"%s\", want %d",
                  got, code);
    free(got);
}

/* ---- what the job leaves ------------------------------------------------------------- */

typedef struct {
    pid_t pid, ppid;
    char state;
    char comm[32];
} s_proc_t;

/* /proc/PID/stat: the command name may hold spaces and parentheses (it
 * ends at the last ')'). */
static int s_stat(pid_t pid, s_proc_t *p)
{
    char path[64], buf[1024];
    ssize_t n;
    int fd;
    char *l, *r;
    size_t clen;

    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return -1;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    l = strchr(buf, '(');
    r = strrchr(buf, ')');
    if (!l || !r || r < l || r[1] != ' ' || !r[2] || r[3] != ' ')
        return -1;
    clen = (size_t)(r - l - 1);
    if (clen >= sizeof p->comm)
        clen = sizeof p->comm - 1;
    memcpy(p->comm, l + 1, clen);
    p->comm[clen] = '\0';
    p->pid = pid;
    p->state = r[2];
    p->ppid = (pid_t)strtol(r + 4, NULL, 10);
    return 0;
}

/* Our live descendants other than the Slurm daemons: what the job left
 * (slurmstepd, the script, mpirun, orted, shoal-mpi ranks, the scheduler,
 * workers, the client).  slurmctld's and munged's own children (slurmctld
 * keeps a slurmscriptd) are theirs, not the job's; slurmd's are the job's.
 * Returns how many (at most cap). */
static int s_job_leftovers(s_proc_t *out, int cap)
{
    static s_proc_t all[MAXPROC];
    static char in[MAXPROC];
    int nall = 0, n = 0, grew = 1, i, j;
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
    memset(in, 0, sizeof in);
    while (grew) {
        grew = 0;
        for (i = 0; i < nall; i++) {
            int parent_in = all[i].ppid == getpid() && all[i].pid != s_slurm.munged &&
                            all[i].pid != s_slurm.ctld;
            if (in[i])
                continue;
            for (j = 0; j < nall && !parent_in; j++)
                parent_in = in[j] && all[j].pid == all[i].ppid;
            if (parent_in)
                in[i] = grew = 1;
        }
    }
    for (i = 0; i < nall; i++) {
        pid_t p = all[i].pid;
        if (!in[i] || all[i].state == 'Z' || p == s_slurm.slurmd)
            continue;
        if (n < cap)
            out[n++] = all[i];
    }
    return n;
}

/* After the job: within GONE_TIMEOUT nothing of it is left running (the
 * daemons aside); what is left is killed by pid and fails the test. */
static void s_expect_job_gone(void)
{
    s_proc_t ps[256];
    double end = e2e_now() + GONE_TIMEOUT;
    char list[2048] = "";
    size_t off = 0;
    int n, i;

    for (;;) {
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
        n = s_job_leftovers(ps, 256);
        if (n == 0)
            return;
        if (e2e_now() > end)
            break;
        e2e_sleep(0.1);
    }
    for (i = 0; i < n; i++) {
        int w = snprintf(list + off, sizeof list - off, " %d(%s)", (int)ps[i].pid, ps[i].comm);
        kill(ps[i].pid, SIGKILL);
        if (w > 0 && (size_t)w < sizeof list - off)
            off += (size_t)w;
    }
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    ck_abort_msg("%d process(es) left behind by the job:%s", n, list);
}

/* ---- the tests ----------------------------------------------------------------------- */

/* Under `make asan`, LeakSanitizer would fail every MPI process at exit
 * for what Open MPI itself never frees (as in test_deploy_mpi.c); the job
 * inherits our environment (sbatch exports it). */
static void s_lsan_for_mpi(void)
{
    static const char supp[] = "leak:libmpi.so\nleak:libopen-pal.so\nleak:libopen-rte.so\n"
                               "leak:libhwloc.so\nleak:libpmix.so\nleak:libevent\n"
                               "leak:mca_\nleak:_dl_\n";
    char path[PATH_MAX + 32], opts[2 * PATH_MAX];
    const char *old = getenv("LSAN_OPTIONS");

    snprintf(path, sizeof path, "%s/lsan-mpi.supp", s_work);
    s_write(path, supp);
    snprintf(opts, sizeof opts, "%s%ssuppressions=%s:fast_unwind_on_malloc=0", old ? old : "",
             old && *old ? ":" : "", path);
    setenv("LSAN_OPTIONS", opts, 1);
    setenv("OMPI_MCA_mca_base_component_disable_dlclose", "1", 1);
}

/* A Slurm whose node has 4 CPUs and keeps finished jobs' records; the
 * environment the jobs inherit; the work directory (current directory). */
static void s_start(void)
{
    char mpirun[PATH_MAX];

    ck_assert_msg(slurm_which("mpirun", mpirun, sizeof(mpirun)) == 0,
                  "mpirun not found: install Open MPI (make deps: openmpi-bin)");
    slurm_start(&s_slurm, &(slurm_opts_t){.cpus = 4, .min_job_age = 300});
    ck_assert((size_t)snprintf(s_work, sizeof(s_work), "%s/work", s_slurm.dir) <
              sizeof(s_work));
    ck_assert_int_eq(mkdir(s_work, 0755), 0);
    ck_assert_int_eq(chdir(s_work), 0);
    s_lsan_for_mpi();
    /* The checks read shoal-mpi's info lines; nothing of an outer cluster. */
    setenv("SHOAL_LOG_LEVEL", "info", 1);
    unsetenv("SHOAL_SCHEDULER");
    unsetenv("SHOAL_SCHEDULER_FILE");
    unsetenv("SHOAL_BINDIR");
}

/* The job's processes gone, the queue empty, the daemons stopped. */
static void s_stop(void)
{
    char ids[4096];

    s_expect_job_gone();
    ck_assert_msg(slurm_jobs_in_queue(ids, sizeof(ids)) == 0, "jobs left in squeue:\n%s",
                  ids);
    ck_assert_int_eq(chdir("/"), 0);
    slurm_stop(&s_slurm);
}

/* Paths for a script: mpirun, shoal-mpi, the primes example, the status
 * file, all shell-quoted. */
typedef struct paths {
    char mpirun[2 * PATH_MAX], shoal_mpi[2 * PATH_MAX], primes[2 * PATH_MAX];
    char status[PATH_MAX + 32], status_q[2 * PATH_MAX + 64], work_q[2 * PATH_MAX];
} paths_t;

static void s_paths(paths_t *p)
{
    char mpirun[PATH_MAX];
    const char *bin = cluster_bin("shoal-mpi");

    ck_assert_int_eq(slurm_which("mpirun", mpirun, sizeof(mpirun)), 0);
    ck_assert_msg(bin && access(bin, X_OK) == 0, "bin/shoal-mpi not built");
    s_shq(p->mpirun, sizeof(p->mpirun), mpirun);
    s_shq(p->shoal_mpi, sizeof(p->shoal_mpi), bin);
    s_shq(p->primes, sizeof(p->primes), s_repo("build/examples/primes"));
    snprintf(p->status, sizeof(p->status), "%s/status", s_work);
    s_shq(p->status_q, sizeof(p->status_q), p->status);
    s_shq(p->work_q, sizeof(p->work_q), s_work);
}

static void s_assert_primes(const char *out)
{
    size_t i;

    for (i = 0; i < sizeof s_primes_lines / sizeof s_primes_lines[0]; i++)
        HAS(out, s_primes_lines[i]);
}

/* #SBATCH -N 1 --ntasks=4, mpirun -n 4: the primes example runs on the
 * job's cluster; the client runs in the job, with 2 workers. */
START_TEST(sbatch_primes)
{
    static char script[65536];
    char path[PATH_MAX + 32], want[PATH_MAX + 64];
    paths_t p;
    job_t j;

    if (slurm_not_root())
        return;
    s_start();
    s_paths(&p);
    snprintf(script, sizeof(script),
             "#!/bin/bash\n"
             "#SBATCH -J shoal-mpi\n"
             "#SBATCH -N 1\n"
             "#SBATCH --ntasks=4\n"
             "#SBATCH -t 00:05:00\n"
             "#SBATCH -o %s/slurm-%%j.out\n"
             "#SBATCH -e %s/slurm-%%j.err\n"
             "echo \"job $SLURM_JOB_ID: $SLURM_NTASKS tasks on $SLURM_JOB_NODELIST\"\n"
             "%s --allow-run-as-root --oversubscribe -n 4 %s -- \\\n"
             "    sh -c 'echo \"client in job $SLURM_JOB_ID, $SHOAL_MPI_NWORKERS workers\"; "
             "exec \"$0\"' %s\n"
             "status=$?\n"
             "echo \"$status\" > %s\n"
             "exit \"$status\"\n",
             s_work, s_work, p.mpirun, p.shoal_mpi, p.primes, p.status_q);
    snprintf(path, sizeof(path), "%s/primes.sbatch", s_work);
    s_write(path, script);
    s_submit("sbatch", path, &j);
    s_wait_job(&j);
    s_expect_end(&j, "COMPLETED", 0, p.status);
    snprintf(want, sizeof(want), "%s/slurm-%s.out", s_work, j.id);
    ck_assert_str_eq(j.out, want);
    s_assert_primes(j.stdout_text);
    snprintf(want, sizeof(want), "job %s: 4 tasks on localhost\n", j.id);
    HAS(j.stdout_text, want);
    snprintf(want, sizeof(want), "client in job %s, 2 workers\n", j.id);
    HAS(j.stdout_text, want);
    HAS(j.stderr_text, "4 ranks: rank 0 runs the scheduler, rank 1");
    HAS(j.stderr_text, "scheduler at tcp://127.0.0.1:");
    HAS(j.stderr_text, "cluster stopped; exit status 0");
    s_job_free(&j);
    s_stop();
}
END_TEST

/* #PBS select=1:ncpus=4:mpiprocs=4 through qsub; mpirun without -n takes
 * one rank per slot of the allocation: 4. */
START_TEST(qsub_pbs_primes)
{
    static char script[65536];
    char path[PATH_MAX + 32], want[PATH_MAX + 64];
    paths_t p;
    job_t j;

    if (slurm_not_root())
        return;
    s_start();
    s_paths(&p);
    snprintf(script, sizeof(script),
             "#!/bin/bash\n"
             "#PBS -N shoal-mpi\n"
             "#PBS -l select=1:ncpus=4:mpiprocs=4\n"
             "#PBS -l walltime=00:05:00\n"
             "cd %s\n"
             "echo \"job ${PBS_JOBID:-$SLURM_JOB_ID}\"\n"
             "%s --allow-run-as-root --oversubscribe "
             "${PBS_NODEFILE:+--hostfile \"$PBS_NODEFILE\"} %s -- %s\n"
             "status=$?\n"
             "echo \"$status\" > %s\n"
             "exit \"$status\"\n",
             p.work_q, p.mpirun, p.shoal_mpi, p.primes, p.status_q);
    snprintf(path, sizeof(path), "%s/primes.pbs", s_work);
    s_write(path, script);
    s_submit("qsub", path, &j);
    s_wait_job(&j);
    s_expect_end(&j, "COMPLETED", 0, p.status);
    /* The Torque wrapper's default output file, where qsub ran. */
    snprintf(want, sizeof(want), "%s/primes.pbs.o%s", s_work, j.id);
    ck_assert_str_eq(j.out, want);
    s_assert_primes(j.stdout_text);
    snprintf(want, sizeof(want), "job %s\n", j.id);
    HAS(j.stdout_text, want);
    HAS(j.stderr_text, "4 ranks: rank 0 runs the scheduler, rank 1");
    HAS(j.stderr_text, "cluster stopped; exit status 0");
    s_job_free(&j);
    s_stop();
}
END_TEST

/* The client fails with 7: so does mpirun, the script records it and
 * exits with it, and Slurm marks the job FAILED with ExitCode 7:0. */
START_TEST(sbatch_failing_client)
{
    static char script[65536];
    char path[PATH_MAX + 32];
    paths_t p;
    job_t j;

    if (slurm_not_root())
        return;
    s_start();
    s_paths(&p);
    snprintf(script, sizeof(script),
             "#!/bin/bash\n"
             "#SBATCH -J shoal-mpi-fail\n"
             "#SBATCH -N 1 --ntasks=4\n"
             "#SBATCH -t 00:05:00\n"
             "#SBATCH -o %s/fail-%%j.out\n"
             "#SBATCH -e %s/fail-%%j.err\n"
             "%s --allow-run-as-root --oversubscribe -n 4 %s -- sh -c 'exit 7'\n"
             "status=$?\n"
             "echo \"$status\" > %s\n"
             "exit \"$status\"\n",
             s_work, s_work, p.mpirun, p.shoal_mpi, p.status_q);
    snprintf(path, sizeof(path), "%s/fail.sbatch", s_work);
    s_write(path, script);
    s_submit("sbatch", path, &j);
    s_wait_job(&j);
    s_expect_end(&j, "FAILED", 7, p.status);
    HAS(j.stderr_text, "4 ranks: rank 0 runs the scheduler, rank 1 sh");
    HAS(j.stderr_text, "sh exited with status 7");
    s_job_free(&j);
    s_stop();
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("deploy_mpi_slurm");
    TCase *tc = tcase_create("slurm");

    tcase_set_timeout(tc, TEST_TIMEOUT);
    tcase_add_unchecked_fixture(tc, slurm_fixture_setup, slurm_fixture_teardown);
    e2e_add(tc, sbatch_primes);
    e2e_add(tc, qsub_pbs_primes);
    e2e_add(tc, sbatch_failing_client);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return e2e_run(s_suite());
}
