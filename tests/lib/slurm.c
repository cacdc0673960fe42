/*
 * slurm.c - a private single-node Slurm for the end-to-end tests (see
 * slurm.h).
 */
#define _GNU_SOURCE
#include "slurm.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e.h"

/* ==== small helpers ====================================================== */

/* PATH lookup: proc_run/proc_spawn exec a path; the daemons are in sbin,
 * which a user's PATH may lack. */
int slurm_which(const char *name, char *out, size_t cap)
{
    static const char *const dirs[] = {"/usr/local/sbin", "/usr/local/bin", "/usr/sbin",
                                       "/usr/bin", "/sbin", "/bin", NULL};
    const char *path = getenv("PATH");
    char buf[4096];
    size_t i;

    if (path && strlen(path) < sizeof(buf)) {
        char *save = NULL, *d;
        memcpy(buf, path, strlen(path) + 1);
        for (d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
            snprintf(out, cap, "%s/%s", d, name);
            if (access(out, X_OK) == 0)
                return 0;
        }
    }
    for (i = 0; dirs[i]; i++) {
        snprintf(out, cap, "%s/%s", dirs[i], name);
        if (access(out, X_OK) == 0)
            return 0;
    }
    return -1;
}

static int s_free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port;

    ck_assert_int_ge(fd, 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static void s_write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

    ck_assert_msg(fd >= 0, "cannot create %s: %s", path, strerror(errno));
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

const char *slurm_file_tail(const char *path, size_t max)
{
    static char buf[4096];
    FILE *f = fopen(path, "r");
    long size;
    size_t n;

    if (max >= sizeof(buf))
        max = sizeof(buf) - 1;
    if (!f)
        return "(no file)";
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fseek(f, size > (long)max ? size - (long)max : 0, SEEK_SET);
    n = fread(buf, 1, max, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

void slurm_cmd(proc_result_t *r, double timeout, const char *name, ...)
{
    const char *argv[32];
    char path[PATH_MAX];
    va_list ap;
    int n = 1;

    ck_assert_msg(slurm_which(name, path, sizeof(path)) == 0, "%s not found", name);
    argv[0] = path;
    va_start(ap, name);
    while (n < 31 && (argv[n] = va_arg(ap, const char *)))
        n++;
    va_end(ap);
    argv[n] = NULL;
    ck_assert_msg(proc_run(argv, NULL, NULL, 0, timeout, r) == 0, "cannot run %s", name);
}

/* ==== processes left behind ============================================== */

/* Our children, from /proc (with PR_SET_CHILD_SUBREAPER, orphans too). */
static int s_children(pid_t *out, int max)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;

    if (!d)
        return 0;
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

static void s_cmdline(pid_t pid, char *out, size_t cap)
{
    char path[64];
    ssize_t n, i;
    int fd;

    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    out[0] = '\0';
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return;
    n = read(fd, out, cap - 1);
    close(fd);
    if (n < 0)
        n = 0;
    for (i = 0; i < n; i++)
        if (!out[i])
            out[i] = ' ';
    out[n] = '\0';
}

void slurm_expect_no_children(double timeout)
{
    double end = e2e_now() + timeout;
    pid_t kids[64];
    char left[2048] = "", cmd[256];
    int n, i;

    for (;;) {
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
        n = s_children(kids, 64);
        if (n == 0)
            return;
        if (e2e_now() > end)
            break;
        e2e_sleep(0.1);
    }
    for (i = 0; i < n; i++) {
        size_t l = strlen(left);
        s_cmdline(kids[i], cmd, sizeof(cmd));
        snprintf(left + l, sizeof(left) - l, " [%d: %s]", (int)kids[i], cmd);
        kill(kids[i], SIGKILL);
    }
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    ck_abort_msg("processes left behind:%s", left);
}

/* ==== the daemons ========================================================== */

static pid_t s_daemon(const slurm_t *s, const char *name, const char *logname,
                      const char *const *args)
{
    const char *argv[16];
    char path[PATH_MAX], log[PATH_MAX + 64];
    pid_t pid;
    int fd, n = 1;

    ck_assert_msg(slurm_which(name, path, sizeof(path)) == 0,
                  "%s is not installed (packages: " SLURM_PKGS "; `make deps`)", name);
    argv[0] = path;
    while (args[n - 1] && n < 15) {
        argv[n] = args[n - 1];
        n++;
    }
    argv[n] = NULL;
    snprintf(log, sizeof(log), "%s/log/%s", s->dir, logname);
    fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert_int_ge(fd, 0);
    pid = proc_spawn(argv, NULL, -1, fd, fd, s->dir);
    close(fd);
    ck_assert_msg(pid > 0, "cannot start %s", name);
    return pid;
}

/* Cancel every job of our cluster and wait (bounded) for the queue to
 * empty; returns the jobs still listed (0 when empty). */
static int s_drain(double timeout)
{
    double end = e2e_now() + timeout;
    char squeue[PATH_MAX], scancel[PATH_MAX];
    proc_result_t r;
    int left = -1;

    if (slurm_which("squeue", squeue, sizeof(squeue)) < 0 ||
        slurm_which("scancel", scancel, sizeof(scancel)) < 0)
        return -1;
    for (;;) {
        const char *qa[] = {squeue, "-h", "-o", "%i", NULL};
        char *p, *save = NULL;
        const char *ca[64];
        int n = 1;

        if (proc_run(qa, NULL, NULL, 0, 20, &r) < 0)
            return -1;
        left = 0;
        ca[0] = scancel;
        for (p = strtok_r(r.out, "\n", &save); p && n < 63; p = strtok_r(NULL, "\n", &save))
            if (*p)
                ca[n++] = p, left++;
        ca[n] = NULL;
        if (left && n > 1) {
            proc_result_t c;
            if (proc_run(ca, NULL, NULL, 0, 20, &c) == 0)
                proc_result_free(&c);
        }
        proc_result_free(&r);
        if (!left || e2e_now() > end)
            return left;
        e2e_sleep(0.5);
    }
}

static void s_stop_pid(pid_t *pid)
{
    if (*pid > 0) {
        kill(*pid, SIGTERM);
        if (cluster_waitpid(*pid, 15) == -1) {
            kill(*pid, SIGKILL);
            cluster_waitpid(*pid, 5);
        }
        *pid = 0;
    }
}

static void s_rm_rf(const char *dir)
{
    char cmd[PATH_MAX + 32];

    if (dir[0] && !getenv("SHOAL_E2E_KEEP")) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", dir);
    }
}

int slurm_not_root(void)
{
    if (geteuid() == 0)
        return 0;
    printf("skipped: starting slurmctld/slurmd/munged needs root\n");
    return 1;
}

/*
 * The fixture runs in Check's parent process around the tests: a directory
 * that holds each test's cluster, and the cleanup of what a failed test
 * leaves (Check's forked test process ends with _exit on a failed
 * assertion, so nothing of its own runs).  The daemons die with their test
 * process (PR_SET_PDEATHSIG); what may outlive it are job processes
 * (slurmstepd daemonizes, and what the job started under it), which, this
 * process being a child subreaper too, come back here.  Teardown kills by
 * pid those children and any process whose command line names the
 * directory (a daemon), then removes the directory.
 */
static char s_base[PATH_MAX - 64];

void slurm_fixture_setup(void)
{
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    snprintf(s_base, sizeof(s_base), "%s/shoal-slurm-test-XXXXXX", cluster_tmpbase());
    if (!mkdtemp(s_base) || chmod(s_base, 0755) < 0) {
        fprintf(stderr, "cannot create %s: %s\n", s_base, strerror(errno));
        s_base[0] = '\0';
    }
}

void slurm_fixture_teardown(void)
{
    DIR *d;
    struct dirent *e;
    pid_t kids[64];
    double end = e2e_now() + 10;
    int n, i;

    if (s_base[0] && (d = opendir("/proc"))) {
        while ((e = readdir(d))) {
            char cmd[1024];
            long v = strtol(e->d_name, NULL, 10);
            if (v <= 1 || v == getpid())
                continue;
            s_cmdline((pid_t)v, cmd, sizeof(cmd));
            if (strstr(cmd, s_base))
                kill((pid_t)v, SIGKILL);
        }
        closedir(d);
    }
    while ((n = s_children(kids, 64)) > 0 && e2e_now() < end) {
        for (i = 0; i < n; i++)
            kill(kids[i], SIGKILL);
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
        e2e_sleep(0.05);
    }
    s_rm_rf(s_base);
    s_base[0] = '\0';
}

void slurm_start(slurm_t *s, const slurm_opts_t *opts)
{
    static char conf[65536];
    char key[PATH_MAX + 32], sock[PATH_MAX + 32], sub[PATH_MAX + 32];
    unsigned char keybytes[128];
    int ctld_port = s_free_port(), slurmd_port = s_free_port(), fd, i;
    int cpus = opts && opts->cpus > 0 ? opts->cpus : 4;
    int min_job_age = opts && opts->min_job_age > 0 ? opts->min_job_age : 2;
    double end;

    while (slurmd_port == ctld_port)
        slurmd_port = s_free_port();
    /* Orphaned job processes (slurmstepd daemonizes) come back to us. */
    ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    memset(s, 0, sizeof(*s));
    snprintf(s->dir, sizeof(s->dir), "%s/slurm-XXXXXX", s_base[0] ? s_base : cluster_tmpbase());
    ck_assert_ptr_nonnull(mkdtemp(s->dir));
    /* munged wants every directory on its socket's path searchable by all. */
    ck_assert_int_eq(chmod(s->dir, 0755), 0);
    for (i = 0; i < 4; i++) {
        static const char *const subs[] = {"munge", "state", "spool", "log"};
        snprintf(sub, sizeof(sub), "%s/%s", s->dir, subs[i]);
        ck_assert_int_eq(mkdir(sub, 0755), 0);
    }

    /* A fresh munge key: 1024 random bits, readable by us only. */
    snprintf(key, sizeof(key), "%s/munge/munge.key", s->dir);
    fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(read(fd, keybytes, sizeof(keybytes)), (ssize_t)sizeof(keybytes));
    close(fd);
    fd = open(key, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0400);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, keybytes, sizeof(keybytes)), (ssize_t)sizeof(keybytes));
    close(fd);
    snprintf(sock, sizeof(sock), "%s/munge/munge.socket", s->dir);
    {
        char a1[PATH_MAX + 64], a2[PATH_MAX + 64], a3[PATH_MAX + 64], a4[PATH_MAX + 64],
            a5[PATH_MAX + 64];
        snprintf(a1, sizeof(a1), "--socket=%s", sock);
        snprintf(a2, sizeof(a2), "--key-file=%s", key);
        snprintf(a3, sizeof(a3), "--log-file=%s/log/munged.log", s->dir);
        snprintf(a4, sizeof(a4), "--pid-file=%s/munge/munged.pid", s->dir);
        snprintf(a5, sizeof(a5), "--seed-file=%s/munge/munged.seed", s->dir);
        s->munged = s_daemon(s, "munged", "munged.out",
                             (const char *[]){"-F", a1, a2, a3, a4, a5, NULL});
    }
    end = e2e_now() + 15;
    while (access(sock, F_OK) != 0) {
        char log[PATH_MAX + 64];
        snprintf(log, sizeof(log), "%s/log/munged.out", s->dir);
        ck_assert_msg(proc_alive(s->munged), "munged exited: %s", slurm_file_tail(log, 1500));
        ck_assert_msg(e2e_now() < end, "munged did not create its socket");
        e2e_sleep(0.05);
    }

    /* One node, 127.0.0.1, no cgroups, no accounting: what a CI container
     * can run.  config_overrides: the node is what we say, whatever the
     * machine's cores and memory. */
    snprintf(s->conf, sizeof(s->conf), "%s/slurm.conf", s->dir);
    snprintf(conf, sizeof(conf),
             "ClusterName=shoaltest\n"
             "SlurmctldHost=localhost(127.0.0.1)\n"
             "SlurmctldPort=%d\n"
             "SlurmdPort=%d\n"
             "SlurmUser=root\n"
             "SlurmdUser=root\n"
             "AuthType=auth/munge\n"
             "CredType=cred/munge\n"
             "AuthInfo=socket=%s\n"
             "StateSaveLocation=%s/state\n"
             "SlurmdSpoolDir=%s/spool\n"
             "SlurmctldPidFile=%s/slurmctld.pid\n"
             "SlurmdPidFile=%s/slurmd.pid\n"
             "SlurmctldLogFile=%s/log/slurmctld.log\n"
             "SlurmdLogFile=%s/log/slurmd.log\n"
             "ProctrackType=proctrack/linuxproc\n"
             "TaskPlugin=task/none\n"
             "SelectType=select/cons_tres\n"
             "SelectTypeParameters=CR_Core\n"
             "SlurmdParameters=config_overrides\n"
             "JobAcctGatherType=jobacct_gather/none\n"
             "AccountingStorageType=accounting_storage/none\n"
             "MpiDefault=none\n"
             "SwitchType=switch/none\n"
             "ReturnToService=2\n"
             "InactiveLimit=0\n"
             "MinJobAge=%d\n"
             "KillWait=5\n"
             "SchedulerType=sched/backfill\n"
             "NodeName=localhost NodeAddr=127.0.0.1 CPUs=%d RealMemory=4000 State=UNKNOWN\n"
             "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP\n",
             ctld_port, slurmd_port, sock, s->dir, s->dir, s->dir, s->dir, s->dir, s->dir,
             min_job_age, cpus);
    s_write_file(s->conf, conf, 0644);
    setenv("SLURM_CONF", s->conf, 1);

    s->ctld = s_daemon(s, "slurmctld", "slurmctld.out",
                       (const char *[]){"-D", "-i", "-f", s->conf, NULL});
    s->slurmd = s_daemon(s, "slurmd", "slurmd.out",
                         (const char *[]){"-D", "-f", s->conf, "-N", "localhost", NULL});
    /* Ready when the node is idle. */
    end = e2e_now() + 40;
    for (;;) {
        proc_result_t r;
        int idle;
        char log[PATH_MAX + 64];

        slurm_cmd(&r, 10, "sinfo", "-h", "-o", "%T", NULL);
        idle = r.exit_code == 0 && !strncmp(r.out, "idle", 4);
        proc_result_free(&r);
        if (idle)
            break;
        snprintf(log, sizeof(log), "%s/log/slurmctld.log", s->dir);
        ck_assert_msg(proc_alive(s->ctld), "slurmctld exited: %s", slurm_file_tail(log, 1500));
        snprintf(log, sizeof(log), "%s/log/slurmd.log", s->dir);
        ck_assert_msg(proc_alive(s->slurmd), "slurmd exited: %s", slurm_file_tail(log, 1500));
        ck_assert_msg(e2e_now() < end, "the Slurm node did not become idle: %s",
                      slurm_file_tail(log, 1500));
        e2e_sleep(0.2);
    }
}

void slurm_stop(slurm_t *s)
{
    int left = s_drain(30);

    s_stop_pid(&s->slurmd);
    s_stop_pid(&s->ctld);
    s_stop_pid(&s->munged);
    ck_assert_msg(left == 0, "%d jobs still in the queue at the end", left);
    slurm_expect_no_children(20);
    s_rm_rf(s->dir);
    s->dir[0] = '\0';
}

int slurm_jobs_in_queue(char *ids, size_t cap)
{
    proc_result_t r;
    int n = 0;
    char *p;

    slurm_cmd(&r, 20, "squeue", "-h", "-o", "%i %T", NULL);
    ck_assert_msg(r.exit_code == 0, "squeue failed: %s", r.err);
    for (p = r.out; *p; p++)
        if (*p == '\n')
            n++;
    if (ids)
        snprintf(ids, cap, "%s", r.out);
    proc_result_free(&r);
    return n;
}
