/*
 * test_deploy_jobqueue.c - end to end: `shoal-jobqueue slurm|pbs` against a
 * real single-node Slurm that each test starts in a private directory
 * (munged, slurmctld and slurmd on 127.0.0.1, ports chosen here), and the
 * #PBS path through Slurm's Torque wrapper (qsub/qstat/qdel).
 *
 *   - --dry-run output, directive by directive, for Slurm and PBS; options
 *     that would put bad text into a script are refused;
 *   - --jobs 2: tasks run on the workers of both jobs (each task reports the
 *     $SLURM_JOB_ID it ran in, which must match its worker's name); on exit
 *     no job is left in squeue;
 *   - --adapt 0:2: jobs submitted for waiting tasks, cancelled when idle,
 *     SIGTERM stops everything;
 *   - pbs: the same through qsub, two worker processes per job;
 *   - worker lifetime: the job's workers retire before the walltime, hand
 *     their tasks back, and a new job finishes them;
 *   - jobs whose workers cannot start: shoal-jobqueue gives up after three.
 * Every test ends with an empty queue and no process of ours left: the test
 * process is a child subreaper, so job processes (slurmstepd daemonizes)
 * that outlive their parents come back to it and are found.  Starting the
 * daemons needs root; as another user the Slurm tests say so and pass.
 * The Slurm itself is tests/lib/slurm.c's.
 *
 * The test binary is also the client program given to `--run`:
 *   test_deploy_jobqueue --client PREFIX MINJOBS NTASKS SLEEP WAITWORKERS
 */
#define _GNU_SOURCE
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

#define SLURM_TIMEOUT 150     /* per test with a Slurm in it */

static char s_self[PATH_MAX];        /* this binary: the --run client */

/* ==== small helpers ====================================================== */

/* Count the lines of `text` that contain `needle`. */
static int s_count(const char *text, const char *needle)
{
    int n = 0;
    const char *p = text;

    while ((p = strstr(p, needle))) {
        n++;
        p += strlen(needle);
    }
    return n;
}

static slurm_t s_slurm;              /* the Slurm of the running test */

/* ==== the client program (--client) ======================================= */

/* pid -> worker name, from status snapshots taken while the tasks run (a
 * retiring worker may be gone by the time its results are read). */
typedef struct seen {
    int n;
    int pid[256];
    char name[256][128];
} seen_t;

static void s_snapshot(shoal_client_t *c, seen_t *seen)
{
    shoal_status_info_t st;
    shoal_error_t err;
    int i, k;

    if (shoal_status(c, &st, 10, &err) < 0)
        return;
    for (i = 0; i < st.nworkers; i++) {
        for (k = 0; k < seen->n && seen->pid[k] != st.workers[i].pid; k++)
            ;
        if (k == seen->n && k < 256) {
            seen->pid[k] = st.workers[i].pid;
            snprintf(seen->name[k], sizeof(seen->name[k]), "%s", st.workers[i].name);
            seen->n++;
        }
    }
    shoal_status_free(&st);
}

/* Is `w` PREFIX-JOB or PREFIX-JOB-digits (a worker of --processes > 1)? */
static int s_named_after(const char *w, const char *prefix, const char *job)
{
    size_t pl = strlen(prefix), jl = strlen(job);
    const char *rest;

    if (strncmp(w, prefix, pl) != 0 || w[pl] != '-' || strncmp(w + pl + 1, job, jl) != 0)
        return 0;
    rest = w + pl + 1 + jl;
    return !*rest || (rest[0] == '-' && rest[1] && strspn(rest + 1, "0123456789") ==
                                                        strlen(rest + 1));
}

/*
 * Connect to $SHOAL_SCHEDULER, optionally wait for `waitw` workers, run
 * `ntasks` command tasks that sleep and print $SLURM_JOB_ID and their
 * parent's pid (the worker process that ran them), and check that each ran
 * in the job its worker is named after (PREFIX-JOBID or PREFIX-JOBID-i).
 * Prints one line per task and the number of distinct jobs; returns 0 when
 * every task is right and at least `minjobs` jobs ran tasks.
 */
static int s_client(const char *prefix, int minjobs, int ntasks, const char *sleep_s,
                    int waitw)
{
    enum { MAXT = 256, MAXJ = 32 };
    static seen_t seen;
    char jobs[MAXJ][64], script[256];
    int njobs = 0, i, rc = 0;
    shoal_future_t *fs[MAXT];
    shoal_error_t err;
    shoal_client_t *c;
    double end;

    if (ntasks > MAXT)
        ntasks = MAXT;
    memset(&seen, 0, sizeof(seen));
    if (!(c = shoal_connect(NULL, &err))) {
        fprintf(stderr, "client: cannot connect: %s\n", err.msg);
        return 1;
    }
    if (waitw > 0 && shoal_wait_for_workers(c, waitw, 120, &err) < 0) {
        fprintf(stderr, "client: workers did not come: %s\n", err.msg);
        shoal_disconnect(c);
        return 1;
    }
    snprintf(script, sizeof(script), "sleep %s; echo \"${SLURM_JOB_ID:-none} $PPID\"",
             sleep_s);
    for (i = 0; i < ntasks; i++) {
        const char *argv[] = {"/bin/sh", "-c", script, NULL};
        shoal_cmd_t cmd = {.argv = argv};
        if (!(fs[i] = shoal_submit_cmd(c, &cmd, NULL, &err))) {
            fprintf(stderr, "client: submit: %s\n", err.msg);
            ntasks = i;
            rc = 1;
            break;
        }
    }
    end = e2e_now() + 240;
    do {
        s_snapshot(c, &seen);
    } while (shoal_wait(fs, (size_t)ntasks, SHOAL_ALL_COMPLETED, 0.1, NULL) < 0 &&
             e2e_now() < end);
    for (i = 0; i < ntasks; i++) {
        shoal_cmd_result_t r;
        const char *w = NULL, *fw;
        char job[64] = "", line[128];
        int pid = 0, k;
        size_t n;

        if (shoal_cmd_result(fs[i], 0, &r, &err) < 0) {
            fprintf(stderr, "client: task %d: %s\n", i, err.msg);
            rc = 1;
            continue;
        }
        n = r.out_len < sizeof(line) - 1 ? r.out_len : sizeof(line) - 1;
        memcpy(line, r.out, n);
        line[n] = '\0';
        {
            /* "JOBID PID" */
            char *sp = strchr(line, ' ');
            if (sp && (size_t)(sp - line) < sizeof(job)) {
                snprintf(job, sizeof(job), "%.*s", (int)(sp - line), line);
                pid = (int)strtol(sp + 1, NULL, 10);
            }
        }
        for (k = 0; k < seen.n; k++)
            if (seen.pid[k] == pid)
                w = seen.name[k];
        printf("task %d ran in job %s on worker %s\n", i, job, w ? w : "?");
        fw = shoal_future_worker(fs[i]);
        if (r.exit_code != 0 || !w || !s_named_after(w, prefix, job) ||
            (fw && strcmp(fw, w) != 0)) {
            fprintf(stderr, "client: task %d: job '%s' does not match worker '%s' (pid %d, "
                    "exit %d)\n", i, job, w ? w : "?", pid, r.exit_code);
            rc = 1;
            continue;
        }
        for (k = 0; k < njobs && strcmp(jobs[k], job); k++)
            ;
        if (k == njobs && njobs < MAXJ)
            snprintf(jobs[njobs++], sizeof(jobs[0]), "%s", job);
    }
    printf("distinct jobs: %d\n", njobs);
    if (njobs < minjobs) {
        fprintf(stderr, "client: tasks ran in %d jobs, expected at least %d\n", njobs,
                minjobs);
        rc = 1;
    }
    for (i = 0; i < ntasks; i++)
        shoal_release(fs[i]);
    shoal_disconnect(c);
    fflush(stdout);
    return rc;
}

/* ==== running shoal-jobqueue ============================================== */

/* shoal-jobqueue with the given arguments (NULL-terminated list, at most
 * 60); its output captured. */
static void s_jobqueue(proc_result_t *r, double timeout, const char *const *args)
{
    const char *argv[64];
    const char *bin = cluster_bin("shoal-jobqueue");
    int n = 1;

    ck_assert_msg(bin && access(bin, X_OK) == 0, "bin/shoal-jobqueue not built");
    argv[0] = bin;
    while (args[n - 1] && n < 63) {
        argv[n] = args[n - 1];
        n++;
    }
    argv[n] = NULL;
    ck_assert(proc_run(argv, (const char *[]){"SHOAL_LOG_LEVEL=info", NULL}, NULL, 0,
                       timeout, r) == 0);
    if (getenv("SHOAL_E2E_VERBOSE"))
        fprintf(stderr, "---- shoal-jobqueue stdout:\n%s---- stderr:\n%s----\n", r->out,
                r->err);
    ck_assert_msg(!r->timed_out, "shoal-jobqueue did not finish in %.0f s; stderr:\n%s",
                  timeout, r->err);
}

/* The text after `key` in out, up to the end of its line (static). */
static const char *s_after(const char *text, const char *key)
{
    static char buf[256];
    const char *p = strstr(text, key);
    size_t n;

    if (!p)
        return NULL;
    p += strlen(key);
    n = strcspn(p, "\n");
    snprintf(buf, sizeof(buf), "%.*s", (int)(n < 255 ? n : 255), p);
    return buf;
}

/* Each string of `want` must be a whole line of `text`, in this order
 * (other lines may come between). */
static void s_lines_in_order(const char *text, const char *const *want)
{
    const char *at = text;
    size_t i;

    for (i = 0; want[i]; i++) {
        size_t wl = strlen(want[i]);
        for (;;) {
            size_t ll = strcspn(at, "\n");
            ck_assert_msg(*at, "line \"%s\" missing (or out of order) in:\n%s", want[i],
                          text);
            if (ll == wl && !strncmp(at, want[i], wl)) {
                at += ll + (at[ll] == '\n');
                break;
            }
            at += ll + (at[ll] == '\n');
        }
    }
}

/* The address in a scheduler file, waiting up to `timeout` for it. */
static int s_sfile_address(const char *path, double timeout, char *out, size_t cap)
{
    double end = e2e_now() + timeout;

    for (;;) {
        char buf[4096];
        const char *p, *q;
        FILE *f = fopen(path, "r");
        size_t n = 0;

        if (f) {
            n = fread(buf, 1, sizeof(buf) - 1, f);
            fclose(f);
        }
        buf[n] = '\0';
        if ((p = strstr(buf, "\"address\"")) && (p = strchr(p + 9, '"')) &&
            (q = strchr(p + 1, '"')) && (size_t)(q - p - 1) < cap) {
            snprintf(out, cap, "%.*s", (int)(q - p - 1), p + 1);
            return 0;
        }
        if (e2e_now() > end)
            return -1;
        e2e_sleep(0.05);
    }
}

/* ==== --dry-run ============================================================ */

START_TEST(dry_run_slurm)
{
    char logdir[PATH_MAX], cmdline[PATH_MAX + 512];
    const char *wbin = cluster_bin("shoal-worker");
    proc_result_t r;

    snprintf(logdir, sizeof(logdir), "%s/jq-logs-%d", cluster_tmpbase(), (int)getpid());
    s_jobqueue(&r, 20, (const char *[]){
        "slurm", "--dry-run", "--host", "10.9.8.7", "--scheduler-port", "9911",
        "--jobs", "3", "--cores", "8", "--processes", "2", "--memory", "16GiB",
        "--walltime", "02:00:00", "--queue", "compute", "--account", "proj-42",
        "--job-name", "sim", "--job-extra", "--exclusive", "--job-extra",
        "--constraint=ib&haswell", "--prologue", "module load gcc/12",
        "--prologue", "export OMP_NUM_THREADS=1 && cd \"$HOME\"",
        "--log-directory", logdir, "--worker-extra", "--library",
        "--worker-extra", "/opt/my lib's/libt.so", NULL});
    ck_assert_msg(r.exit_code == 0, "dry run failed: %s", r.err);
    snprintf(cmdline, sizeof(cmdline),
             "exec '%s' 'tcp://10.9.8.7:9911' --nthreads 4 --nworkers 2 --name "
             "'sim'-\"${SLURM_JOB_ID:-$$}\" --death-timeout 60 --lifetime 6840s "
             "'--library' '/opt/my lib'\\''s/libt.so'", wbin);
    {
        char e[PATH_MAX + 64], o[PATH_MAX + 64];
        snprintf(e, sizeof(e), "#SBATCH -e %s/sim-%%j.err", logdir);
        snprintf(o, sizeof(o), "#SBATCH -o %s/sim-%%j.out", logdir);
        s_lines_in_order(r.out, (const char *[]){
            "#!/usr/bin/env bash", "#SBATCH -J sim", "#SBATCH -n 1",
            "#SBATCH --cpus-per-task=8", "#SBATCH --mem=16G", "#SBATCH -t 02:00:00",
            "#SBATCH -p compute", "#SBATCH -A proj-42", e, o, "#SBATCH --exclusive",
            "#SBATCH --constraint=ib&haswell", "", "module load gcc/12",
            "export OMP_NUM_THREADS=1 && cd \"$HOME\"", "", cmdline, NULL});
    }
    /* Nothing else: 12 directives, a shebang, the blank lines, 2 prologue
     * lines and the command. */
    ck_assert_int_eq(s_count(r.out, "#SBATCH"), 11);
    ck_assert_int_eq(s_count(r.out, "\n"), 17);
    /* The log directory was created; no job was submitted, nothing started. */
    {
        struct stat st;
        ck_assert_int_eq(stat(logdir, &st), 0);
        ck_assert(S_ISDIR(st.st_mode));
        rmdir(logdir);
    }
    proc_result_free(&r);

    /* Defaults: one core, one process, an hour, no memory line; the
     * script is valid bash. */
    s_jobqueue(&r, 20, (const char *[]){"slurm", "--dry-run", "--host", "127.0.0.1",
                                        NULL});
    ck_assert_int_eq(r.exit_code, 0);
    s_lines_in_order(r.out, (const char *[]){
        "#!/usr/bin/env bash", "#SBATCH -J shoal-worker", "#SBATCH -n 1",
        "#SBATCH --cpus-per-task=1", "#SBATCH -t 01:00:00", NULL});
    ck_assert_ptr_null(strstr(r.out, "--mem"));
    ck_assert_ptr_null(strstr(r.out, "#SBATCH -p"));
    CONTAINS(r.out, "'tcp://127.0.0.1:8686' --nthreads 1 --nworkers 1 --name "
                    "'shoal-worker'-\"${SLURM_JOB_ID:-$$}\" --death-timeout 60 "
                    "--lifetime 3420s\n");
    {
        proc_result_t b;
        slurm_cmd(&b, 10, "bash", "-n", "-c", r.out, NULL);
        ck_assert_msg(b.exit_code == 0, "bash -n: %s", b.err);
        proc_result_free(&b);
    }
    proc_result_free(&r);

    /* --lifetime-margin 0: no lifetime; a margin: walltime minus it. */
    s_jobqueue(&r, 20, (const char *[]){"slurm", "--dry-run", "--host", "h1",
                                        "--walltime", "1-00:00:00", "--lifetime-margin",
                                        "0", NULL});
    ck_assert_int_eq(r.exit_code, 0);
    ck_assert(strstr(r.out, "#SBATCH -t 24:00:00\n"));
    ck_assert_ptr_null(strstr(r.out, "--lifetime"));
    proc_result_free(&r);
    s_jobqueue(&r, 20, (const char *[]){"slurm", "--dry-run", "--host", "h1",
                                        "--walltime", "90m", "--lifetime-margin", "10m",
                                        "--memory", "1500MB", NULL});
    ck_assert_int_eq(r.exit_code, 0);
    ck_assert(strstr(r.out, "#SBATCH -t 01:30:00\n"));
    ck_assert(strstr(r.out, "#SBATCH --mem=1431M\n"));
    ck_assert(strstr(r.out, " --lifetime 4800s\n"));
    proc_result_free(&r);
}
END_TEST

START_TEST(dry_run_pbs)
{
    char logdir[PATH_MAX], cmdline[PATH_MAX + 512], od[PATH_MAX + 32], ed[PATH_MAX + 32];
    const char *wbin = cluster_bin("shoal-worker");
    proc_result_t r;

    snprintf(logdir, sizeof(logdir), "%s/jq-pbs-logs-%d", cluster_tmpbase(), (int)getpid());
    s_jobqueue(&r, 20, (const char *[]){
        "pbs", "--dry-run", "--host", "192.168.1.5", "--scheduler-port", "8787",
        "--cores", "24", "--processes", "4", "--memory", "100GB", "--walltime",
        "00:45:00", "--queue", "workq", "--account", "ABC123", "--job-name", "dask-like",
        "--job-extra", "-l place=scatter:excl", "--job-extra", "-m n",
        "--prologue", "source /etc/profile.d/modules.sh", "--log-directory", logdir,
        NULL});
    ck_assert_msg(r.exit_code == 0, "dry run failed: %s", r.err);
    snprintf(od, sizeof(od), "#PBS -o %s/", logdir);
    snprintf(ed, sizeof(ed), "#PBS -e %s/", logdir);
    snprintf(cmdline, sizeof(cmdline),
             "exec '%s' 'tcp://192.168.1.5:8787' --nthreads 6 --nworkers 4 --name "
             "'dask-like'-\"${PBS_JOBID:-${SLURM_JOB_ID:-$$}}\" --death-timeout 60 "
             "--lifetime 2565s", wbin);
    s_lines_in_order(r.out, (const char *[]){
        "#!/usr/bin/env bash", "#PBS -N dask-like",
        "#PBS -l select=1:ncpus=24:mpiprocs=4:mem=95368mb", "#PBS -l walltime=00:45:00",
        "#PBS -q workq", "#PBS -A ABC123", od, ed, "#PBS -l place=scatter:excl",
        "#PBS -m n", "", "source /etc/profile.d/modules.sh", "", cmdline, NULL});
    ck_assert_int_eq(s_count(r.out, "#PBS"), 9);
    ck_assert_int_eq(s_count(r.out, "\n"), 14);
    rmdir(logdir);
    proc_result_free(&r);

    /* Memory below a GiB in mb; no memory: no mem= at all. */
    s_jobqueue(&r, 20, (const char *[]){"pbs", "--dry-run", "--host", "h", "--memory",
                                        "512MiB", "--cores", "2", NULL});
    ck_assert_int_eq(r.exit_code, 0);
    ck_assert(strstr(r.out, "\n#PBS -l select=1:ncpus=2:mpiprocs=1:mem=512mb\n"));
    ck_assert(strstr(r.out, " --nthreads 2 --nworkers 1 "));
    proc_result_free(&r);
    s_jobqueue(&r, 20, (const char *[]){"pbs", "--dry-run", "--host", "h", NULL});
    ck_assert_int_eq(r.exit_code, 0);
    ck_assert(strstr(r.out, "\n#PBS -l select=1:ncpus=1:mpiprocs=1\n"));
    proc_result_free(&r);

    /* --interface: the address of that interface. */
    s_jobqueue(&r, 20, (const char *[]){"pbs", "--dry-run", "--interface", "lo", NULL});
    ck_assert_int_eq(r.exit_code, 0);
    CONTAINS(r.out, "'tcp://127.0.0.1:8686'");
    proc_result_free(&r);
}
END_TEST

START_TEST(bad_options)
{
    static const struct {
        const char *args[8];
        const char *says;
    } cases[] = {
        {{NULL}, "slurm or pbs"},
        {{"lsf", NULL}, "slurm or pbs"},
        {{"slurm", "--job-extra", "--x\n#SBATCH --y", NULL}, "newline"},
        {{"slurm", "--job-extra", "--comment=$(reboot)", NULL}, "'$'"},
        {{"slurm", "--job-extra", "--comment=a;b", NULL}, "';'"},
        {{"slurm", "--job-extra", "   ", NULL}, "blank"},
        {{"pbs", "--prologue", "echo a\necho b", NULL}, "newline"},
        {{"slurm", "--job-name", "a b", NULL}, "--job-name"},
        {{"slurm", "--job-name", "-x", NULL}, "--job-name"},
        {{"slurm", "--queue", "q;rm", NULL}, "--queue"},
        {{"pbs", "--account", "a`b`", NULL}, "--account"},
        {{"slurm", "--log-directory", "/tmp/has space", NULL}, "space"},
        {{"slurm", "--walltime", "25:61:00", NULL}, "--walltime"},
        {{"slurm", "--walltime", "soon", NULL}, "--walltime"},
        {{"slurm", "--cores", "4", "--processes", "3", NULL}, "--processes 3"},
        {{"slurm", "--cores", "0", NULL}, "--cores"},
        {{"slurm", "--memory", "lots", NULL}, "--memory"},
        {{"slurm", "--adapt", "3:1", NULL}, "MIN 3"},
        {{"slurm", "--adapt", "3", NULL}, "MIN:MAX"},
        {{"slurm", "--scheduler-port", "70000", NULL}, "--scheduler-port"},
        {{"slurm", "--dry-run", "--scheduler-port", "0", NULL}, "fixed"},
        {{"slurm", "--host", "a b", NULL}, "--host"},
        {{"slurm", "--host", "h", "--interface", "lo", NULL}, "not both"},
        {{"slurm", "--interface", "nosuchif0", "--dry-run", NULL}, "nosuchif0"},
        {{"slurm", "--walltime", "00:01:00", "--lifetime-margin", "2m", NULL}, "margin"},
        {{"slurm", "--worker-extra", "a\tb\x01", NULL}, "control"},
        {{"slurm", "--bogus", NULL}, "unknown option"},
        {{"slurm", "extra", NULL}, "unexpected"},
        {{"slurm", "--run", NULL}, "PROGRAM"},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        proc_result_t r;
        s_jobqueue(&r, 20, cases[i].args);
        ck_assert_msg(r.exit_code == 2, "case %zu: exit %d, want 2 (stderr: %s)", i,
                      r.exit_code, r.err);
        ck_assert_msg(e2e_contains(r.err, cases[i].says),
                      "case %zu: stderr \"%s\" does not mention \"%s\"", i, r.err,
                      cases[i].says);
        ck_assert_msg(r.out_len == 0, "case %zu printed a script", i);
        proc_result_free(&r);
    }
}
END_TEST

/* ==== against a real Slurm ================================================= */

/* A working directory for one run (output files of the PBS wrapper land in
 * the directory qsub runs in). */
static void s_workdir(char *out, size_t cap, const char *tag)
{
    snprintf(out, cap, "%s/%s", s_slurm.dir, tag);
    ck_assert_int_eq(mkdir(out, 0755), 0);
    ck_assert_int_eq(chdir(out), 0);
}

/* --jobs 2 --cores 1: tasks run on the workers of both jobs; when the
 * program is done every job is cancelled and gone from the queue. */
START_TEST(slurm_jobs_run_tasks)
{
    char work[PATH_MAX + 16], logs[PATH_MAX + 32], ids[4096];
    const char *id1, *id2;
    char j1[64], j2[64];
    proc_result_t r;

    if (slurm_not_root())
        return;
    slurm_start(&s_slurm, NULL);
    s_workdir(work, sizeof(work), "run");
    snprintf(logs, sizeof(logs), "%s/logs", work);
    s_jobqueue(&r, 120, (const char *[]){
        "slurm", "--host", "127.0.0.1", "--scheduler-port", "0", "--jobs", "2",
        "--cores", "1", "--memory", "200MB", "--walltime", "00:10:00", "--job-name",
        "jqt", "--log-directory", logs, "--poll-interval", "1", "--death-timeout", "20",
        "--run", s_self, "--client", "jqt", "2", "12", "0.3", "2", NULL});
    ck_assert_msg(r.exit_code == 0, "exit %d\nstdout:\n%s\nstderr:\n%s", r.exit_code, r.out,
                  r.err);
    /* Both jobs submitted, both ran tasks (the client checked each task's
     * $SLURM_JOB_ID against its worker's name). */
    id1 = s_after(r.err, "submitted job ");
    ck_assert_ptr_nonnull(id1);
    snprintf(j1, sizeof(j1), "%.*s", (int)strcspn(id1, " "), id1);
    id2 = s_after(strstr(r.err, "submitted job ") + 1, "submitted job ");
    ck_assert_ptr_nonnull(id2);
    snprintf(j2, sizeof(j2), "%.*s", (int)strcspn(id2, " "), id2);
    ck_assert_str_ne(j1, j2);
    CONTAINS(r.out, "distinct jobs: 2\n");
    {
        char want[PATH_MAX + 256];
        snprintf(want, sizeof(want), " ran in job %s on worker jqt-%s\n", j1, j1);
        CONTAINS(r.out, want);
        snprintf(want, sizeof(want), " ran in job %s on worker jqt-%s\n", j2, j2);
        CONTAINS(r.out, want);
        /* States were shown; both cancelled at the end and seen gone. */
        snprintf(want, sizeof(want), "job %s: RUNNING", j1);
        CONTAINS(r.err, want);
        snprintf(want, sizeof(want), "cancelling job %s (shutting down)", j2);
        CONTAINS(r.err, want);
        snprintf(want, sizeof(want), "job %s has ended", j1);
        CONTAINS(r.err, want);
        snprintf(want, sizeof(want), "job %s has ended", j2);
        CONTAINS(r.err, want);
        /* The job output went to the log directory, the workers named after
         * the jobs and told to retire 60 s before the walltime. */
        snprintf(want, sizeof(want), "%s/jqt-%s.err", logs, j1);
        ck_assert_msg(access(want, F_OK) == 0, "no %s", want);
        CONTAINS(slurm_file_tail(want, 4000), "worker jqt-");
    }
    ck_assert_int_eq(slurm_jobs_in_queue(ids, sizeof(ids)), 0);
    proc_result_free(&r);
    ck_assert_int_eq(chdir("/"), 0);
    slurm_stop(&s_slurm);
}
END_TEST

/* --adapt 0:2: no job until tasks wait; then jobs run them; idle jobs are
 * cancelled down to none; SIGTERM ends shoal-jobqueue cleanly. */
START_TEST(slurm_adapt)
{
    char work[PATH_MAX + 16], sfile[PATH_MAX + 32], outp[PATH_MAX + 32],
        errp[PATH_MAX + 32], ids[4096];
    const char *bin = cluster_bin("shoal-jobqueue");
    shoal_client_t *c;
    shoal_status_info_t st;
    shoal_error_t err;
    double end;
    pid_t jq;
    int fo, fe, status, rc;

    if (slurm_not_root())
        return;
    slurm_start(&s_slurm, NULL);
    s_workdir(work, sizeof(work), "adapt");
    snprintf(sfile, sizeof(sfile), "%s/sched.json", work);
    snprintf(outp, sizeof(outp), "%s/jq.out", work);
    snprintf(errp, sizeof(errp), "%s/jq.err", work);
    fo = open(outp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    fe = open(errp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert(fo >= 0 && fe >= 0);
    jq = proc_spawn((const char *[]){bin, "slurm", "--host", "127.0.0.1",
                                     "--scheduler-port", "0", "--scheduler-file", sfile,
                                     "--adapt", "0:2", "--adapt-interval", "0.5",
                                     "--adapt-wait-count", "4", "--cores", "1",
                                     "--walltime", "00:10:00", "--job-name", "ad",
                                     "--poll-interval", "1", "--death-timeout", "20", NULL},
                    (const char *[]){"SHOAL_LOG_LEVEL=info", NULL}, -1, fo, fe, work);
    close(fo);
    close(fe);
    ck_assert_int_gt(jq, 0);

    /* No tasks, MIN 0: no job is submitted. */
    {
        char addr[256];
        ck_assert_msg(s_sfile_address(sfile, 30, addr, sizeof(addr)) == 0,
                      "no scheduler file:\n%s", slurm_file_tail(errp, 2000));
        setenv("SHOAL_SCHEDULER", addr, 1);
    }
    e2e_sleep(2.0);
    ck_assert_msg(slurm_jobs_in_queue(NULL, 0) == 0, "a job was submitted with nothing to do");

    /* Tasks waiting: jobs come and run them (checked as in --run). */
    rc = s_client("ad", 1, 10, "0.5", 0);
    ck_assert_msg(rc == 0, "client failed; jobqueue log:\n%s", slurm_file_tail(errp, 3000));
    CONTAINS(slurm_file_tail(errp, 4000), "adapt: ");

    /* Idle: every job is cancelled (MIN 0) and its workers leave. */
    c = shoal_connect(NULL, &err);
    ck_assert_msg(c != NULL, "%s", err.msg);
    end = e2e_now() + 60;
    for (;;) {
        int n;
        ck_assert_int_eq(shoal_status(c, &st, 10, &err), 0);
        n = st.nworkers;
        shoal_status_free(&st);
        if (n == 0 && slurm_jobs_in_queue(ids, sizeof(ids)) == 0)
            break;
        ck_assert_msg(e2e_now() < end, "adapt did not scale down: %d workers, queue:\n%s\n%s",
                      n, ids, slurm_file_tail(errp, 3000));
        e2e_sleep(0.5);
    }
    shoal_disconnect(c);
    CONTAINS(slurm_file_tail(errp, 8000), "(adapt: not needed)");

    /* SIGTERM: a clean stop, exit 0, the scheduler file removed. */
    ck_assert_int_eq(kill(jq, SIGTERM), 0);
    status = cluster_waitpid(jq, 60);
    ck_assert_msg(status != -1, "shoal-jobqueue did not stop after SIGTERM");
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d:\n%s", status,
                  slurm_file_tail(errp, 3000));
    ck_assert_int_ne(access(sfile, F_OK), 0);
    CONTAINS(slurm_file_tail(errp, 2000), "SIGTERM received");
    ck_assert_int_eq(chdir("/"), 0);
    slurm_stop(&s_slurm);
}
END_TEST

/* #PBS through qsub (Slurm's Torque wrapper), two worker processes per job:
 * workers named NAME-JOBID-0/1 are matched to the job. */
START_TEST(pbs_qsub)
{
    char work[PATH_MAX + 16], logs[PATH_MAX + 32], ids[4096], want[128], job[64];
    const char *id;
    proc_result_t r;

    if (slurm_not_root())
        return;
    slurm_start(&s_slurm, NULL);
    s_workdir(work, sizeof(work), "pbs");
    snprintf(logs, sizeof(logs), "%s/logs", work);
    s_jobqueue(&r, 120, (const char *[]){
        "pbs", "--host", "127.0.0.1", "--scheduler-port", "0", "--jobs", "1",
        "--cores", "2", "--processes", "2", "--memory", "300MB", "--walltime",
        "00:05:00", "--job-name", "pq", "--poll-interval", "1", "--death-timeout", "20",
        "--log-directory", logs, "--prologue", "echo prologue ran in $SLURM_JOB_ID",
        "--run", s_self, "--client", "pq", "1", "6", "0.2", "2", NULL});
    ck_assert_msg(r.exit_code == 0, "exit %d\nstdout:\n%s\nstderr:\n%s", r.exit_code, r.out,
                  r.err);
    id = s_after(r.err, "submitted job ");
    ck_assert_ptr_nonnull(id);
    snprintf(job, sizeof(job), "%.*s", (int)strcspn(id, " "), id);
    CONTAINS(r.out, "distinct jobs: 1\n");
    snprintf(want, sizeof(want), "on worker pq-%s-0\n", job);
    CONTAINS(r.out, want);
    snprintf(want, sizeof(want), "on worker pq-%s-1\n", job);
    CONTAINS(r.out, want);
    /* qstat's one-letter state, and qdel at the end. */
    snprintf(want, sizeof(want), "job %s: R", job);
    CONTAINS(r.err, want);
    snprintf(want, sizeof(want), "cancelling job %s (shutting down)", job);
    CONTAINS(r.err, want);
    /* The wrapper's default output file, in the directory qsub ran in (the
     * log directory): the prologue ran in the job. */
    {
        char outf[2 * PATH_MAX];
        snprintf(outf, sizeof(outf), "%s/pq.sh.o%s", logs, job);
        snprintf(want, sizeof(want), "prologue ran in %s", job);
        CONTAINS(slurm_file_tail(outf, 4000), want);
    }
    ck_assert_int_eq(slurm_jobs_in_queue(ids, sizeof(ids)), 0);
    proc_result_free(&r);
    ck_assert_int_eq(chdir("/"), 0);
    slurm_stop(&s_slurm);
}
END_TEST

/* The workers retire before the walltime (--lifetime-margin 54s of 1 min:
 * 6 s), handing their queued tasks back; the job ends by itself, a new one
 * is submitted (--jobs 1) and finishes the work. */
START_TEST(slurm_lifetime_hands_back)
{
    char work[PATH_MAX + 16], want[160], j1[64];
    const char *id;
    proc_result_t r;

    if (slurm_not_root())
        return;
    slurm_start(&s_slurm, NULL);
    s_workdir(work, sizeof(work), "life");
    s_jobqueue(&r, 140, (const char *[]){
        "slurm", "--host", "127.0.0.1", "--scheduler-port", "0", "--jobs", "1",
        "--cores", "1", "--walltime", "00:01:00", "--lifetime-margin", "54s",
        "--job-name", "lt", "--poll-interval", "1", "--death-timeout", "20",
        "--run", s_self, "--client", "lt", "2", "20", "0.4", "1", NULL});
    ck_assert_msg(r.exit_code == 0, "exit %d\nstdout:\n%s\nstderr:\n%s", r.exit_code, r.out,
                  r.err);
    id = s_after(r.err, "submitted job ");
    ck_assert_ptr_nonnull(id);
    snprintf(j1, sizeof(j1), "%.*s", (int)strcspn(id, " "), id);
    /* The first job ended on its own, not cancelled; a second one came. */
    snprintf(want, sizeof(want), "job %s has ended (its workers retired", j1);
    CONTAINS(r.err, want);
    ck_assert_int_ge(s_count(r.err, "submitted job "), 2);
    {
        const char *d = s_after(r.out, "distinct jobs: ");
        ck_assert_msg(d && atoi(d) >= 2, "tasks ran in %s jobs", d ? d : "?");
    }
    /* Every task ran exactly once (20 lines) and succeeded. */
    ck_assert_int_eq(s_count(r.out, " ran in job "), 20);
    {
        char outf[2 * PATH_MAX];
        snprintf(outf, sizeof(outf), "%s/slurm-%s.out", work, j1);
        CONTAINS(slurm_file_tail(outf, 4000), "retiring");
    }
    ck_assert_int_eq(slurm_jobs_in_queue(NULL, 0), 0);
    proc_result_free(&r);
    ck_assert_int_eq(chdir("/"), 0);
    slurm_stop(&s_slurm);
}
END_TEST

/* Jobs whose workers cannot start (no such program): after three in a row
 * shoal-jobqueue gives up, exit 1, pointing at the job output. */
START_TEST(slurm_broken_jobs_give_up)
{
    char work[PATH_MAX + 16], logs[PATH_MAX + 32];
    proc_result_t r;

    if (slurm_not_root())
        return;
    slurm_start(&s_slurm, NULL);
    s_workdir(work, sizeof(work), "broken");
    snprintf(logs, sizeof(logs), "%s/logs", work);
    s_jobqueue(&r, 120, (const char *[]){
        "slurm", "--host", "127.0.0.1", "--scheduler-port", "0", "--jobs", "1",
        "--worker-bin", "/nonexistent/shoal-worker", "--log-directory", logs,
        "--poll-interval", "0.5", NULL});
    ck_assert_msg(r.exit_code == 1, "exit %d\n%s", r.exit_code, r.err);
    CONTAINS(r.err, "not executable here");
    ck_assert_int_eq(s_count(r.err, "ended before any of its workers connected: see its "
                                    "output in "), 3);
    CONTAINS(r.err, "3 jobs in a row ended before their workers connected: giving up");
    ck_assert_int_eq(s_count(r.err, "submitted job "), 3);
    ck_assert_int_eq(slurm_jobs_in_queue(NULL, 0), 0);
    proc_result_free(&r);
    ck_assert_int_eq(chdir("/"), 0);
    slurm_stop(&s_slurm);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("deploy_jobqueue");
    /* The cluster fixture: a temporary directory (cluster_tmpbase) for the
     * log directories these tests create, removed afterwards. */
    TCase *tc = e2e_tcase("script");

    e2e_add(tc, dry_run_slurm);
    e2e_add(tc, dry_run_pbs);
    e2e_add(tc, bad_options);
    suite_add_tcase(s, tc);
    tc = tcase_create("slurm");
    tcase_set_timeout(tc, SLURM_TIMEOUT);
    tcase_add_unchecked_fixture(tc, slurm_fixture_setup, slurm_fixture_teardown);
    e2e_add(tc, slurm_jobs_run_tasks);
    e2e_add(tc, slurm_adapt);
    e2e_add(tc, pbs_qsub);
    e2e_add(tc, slurm_lifetime_hands_back);
    e2e_add(tc, slurm_broken_jobs_give_up);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv)
{
    ssize_t n = readlink("/proc/self/exe", s_self, sizeof(s_self) - 1);

    s_self[n > 0 ? n : 0] = '\0';
    if (argc == 7 && !strcmp(argv[1], "--client"))
        return s_client(argv[2], atoi(argv[3]), atoi(argv[4]), argv[5], atoi(argv[6]));
    return e2e_run(s_suite());
}
