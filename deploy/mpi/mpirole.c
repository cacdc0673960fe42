/*
 * mpirole.c - the ranks of an MPI job as a shoal cluster (see mpirole.h).
 *
 * Why child processes rather than running the scheduler and worker event
 * loops inside the rank: the executables are the tested ones, a task that
 * crashes its worker does not take the MPI rank with it (the rank restarts
 * the worker), and the rank stays free to watch both its process and MPI.
 *
 * Why nonblocking collectives polled with naps: Open MPI's blocking calls
 * spin a core while they wait.  A worker rank waits for hours for the
 * client's status; spinning would steal a core from its own worker.
 */
#define _GNU_SOURCE
#include "mpirole.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

extern char **environ;

#define MAX_THREADS 1024
/* Longest wait between two polls of MPI and the child processes. */
#define MAX_NAP 0.05

enum { KID_SCHED, KID_WORKER, KID_PROGRAM, KID_N };
static const char *const s_kid_name[KID_N] = {"scheduler", "worker", "program"};

struct mpirole {
    MPI_Comm comm;
    int rank, size;
    int client_rank;                 /* -1: no client */
    int is_sched, is_worker;
    int nworkers;                    /* worker processes in the whole cluster */
    int nthreads;                    /* of this rank's worker (resolved) */
    int restarts;                    /* of this rank's worker so far */
    int stopping;                    /* child exits are expected now */
    MPI_Request done_req;            /* non-client ranks: the client's status */
    int done_posted;
    int done_status;
    pid_t kid[KID_N];                /* 0: not running */
    int kid_group[KID_N];            /* it leads its own process group */
    char address[SHOAL_ADDR_MAX];
    char sfile[PATH_MAX];            /* the user's scheduler file, or "" */
    char local_dir[PATH_MAX];        /* "" : inherit */
    char bindir[PATH_MAX];           /* "" : $PATH */
    char *libs[MPIROLE_MAX_LIBRARIES];
    int nlibs;
    char client_desc[128];
};

/* ---- signals ------------------------------------------------------------------------ */

static volatile sig_atomic_t s_signal;

static void s_on_signal(int sig)
{
    s_signal = sig;
}

void mpirole_catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: a nap is cut short by the signal. */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

/* ---- small helpers ------------------------------------------------------------------- */

static void s_nap(double *nap)
{
    struct timespec ts = {0, (long)(*nap * 1e9)};
    nanosleep(&ts, NULL);
    *nap *= 2;
    if (*nap > MAX_NAP)
        *nap = MAX_NAP;
}

static void s_describe(int status, char *buf, size_t cap)
{
    if (status < 0)
        snprintf(buf, cap, "exited (status unknown)");
    else if (WIFEXITED(status))
        snprintf(buf, cap, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, cap, "was killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, cap, "stopped (status 0x%x)", (unsigned)status);
}

/* Host names and addresses: letters, digits, . - _ : (IPv6). */
static int s_valid_host(const char *h)
{
    size_t n = strlen(h);
    if (n == 0 || n > 200)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_' || c == ':'))
            return 0;
    }
    return 1;
}

/* An absolute version of path (relative ones against the cwd); 0 or -1. */
static int s_absolute(const char *path, char *out, size_t cap)
{
    if (path[0] == '/')
        return util_fmt(out, cap, "%s", path);
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd))
        return -1;
    return util_fmt(out, cap, "%s/%s", cwd, path);
}

static int s_is_exec(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* Find prog in $PATH before forking (the child may only make
 * async-signal-safe calls).  0 or -1 (ENOENT). */
static int s_search_path(const char *prog, char *out, size_t cap)
{
    const char *path = getenv("PATH");
    if (!path || !path[0])
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *end = strchr(path, ':');
        size_t len = end ? (size_t)(end - path) : strlen(path);
        if (len == 0) {
            if (util_fmt(out, cap, "./%s", prog) == 0 && s_is_exec(out))
                return 0;
        } else if (util_fmt(out, cap, "%.*s/%s", (int)len, path, prog) == 0 &&
                   s_is_exec(out)) {
            return 0;
        }
        if (!end)
            break;
        path = end + 1;
    }
    errno = ENOENT;
    return -1;
}

/* The IPv4 address of interface `name`; 0 or -1. */
static int s_iface_ipv4(const char *name, char *out, size_t cap)
{
    struct ifaddrs *ifs = NULL;
    int rc = -1;
    if (getifaddrs(&ifs) < 0)
        return -1;
    for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || strcmp(i->ifa_name, name))
            continue;
        const struct sockaddr_in *sin = (const struct sockaddr_in *)i->ifa_addr;
        if (inet_ntop(AF_INET, &sin->sin_addr, out, (socklen_t)cap)) {
            rc = 0;
            break;
        }
    }
    freeifaddrs(ifs);
    return rc;
}

static int s_has_bins(const char *dir)
{
    char p[PATH_MAX + 32];
    if (util_fmt(p, sizeof p, "%s/shoal-scheduler", dir) < 0 || !s_is_exec(p))
        return 0;
    return util_fmt(p, sizeof p, "%s/shoal-worker", dir) == 0 && s_is_exec(p);
}

static void s_dirname(char *path)
{
    char *slash = strrchr(path, '/');
    if (slash == path)
        path[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        snprintf(path, 2, ".");
}

static int s_try_dir(char *out, size_t cap, const char *dir, const char *suffix)
{
    char cand[PATH_MAX], real[PATH_MAX];
    if (util_fmt(cand, sizeof cand, "%s%s", dir, suffix) < 0 || !realpath(cand, real) ||
        !s_has_bins(real))
        return 0;
    return util_fmt(out, cap, "%s", real) == 0;
}

void mpirole_find_bindir(const char *hint, const void *anchor, char *out, size_t cap)
{
    const char *env = getenv("SHOAL_BINDIR");
    char dir[PATH_MAX];
    Dl_info info;

    out[0] = '\0';
    if (hint && hint[0]) {
        snprintf(out, cap, "%s", hint);
        return;
    }
    if (env && env[0]) {
        snprintf(out, cap, "%s", env);
        return;
    }
    /* The installed layout (and the build tree's): PREFIX/lib/libshoal_mpi.so
     * beside PREFIX/bin. */
    if (anchor && dladdr(anchor, &info) && info.dli_fname &&
        realpath(info.dli_fname, dir)) {
        s_dirname(dir);
        if (s_try_dir(out, cap, dir, "") || s_try_dir(out, cap, dir, "/../bin"))
            return;
    }
    ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
    if (n > 0) {
        dir[n] = '\0';
        s_dirname(dir);
        static const char *const rel[] = {"", "/../bin", "/../../bin", "/../../../bin"};
        for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++)
            if (s_try_dir(out, cap, dir, rel[i]))
                return;
    }
    out[0] = '\0';
}

/* ---- child processes ------------------------------------------------------------------ */

static int s_is_mpi_var(const char *kv)
{
    return strncmp(kv, "OMPI_", 5) == 0 || strncmp(kv, "PMIX_", 5) == 0;
}

/* Our environment minus the MPI launcher's variables (a child that is an
 * MPI program itself must not take them for its own) and minus the names
 * set in `extra`, plus `extra`.  The strings are not copied: the array
 * lives until the fork.  NULL on allocation failure. */
static char **s_child_env(char *const extra[])
{
    size_t n = 0, nextra = 0, k = 0;
    while (environ && environ[n])
        n++;
    while (extra && extra[nextra])
        nextra++;
    char **env = calloc(n + nextra + 1, sizeof *env);
    if (!env)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const char *kv = environ[i];
        int skip = s_is_mpi_var(kv);
        for (size_t j = 0; j < nextra && !skip; j++) {
            const char *eq = strchr(extra[j], '=');
            size_t len = eq ? (size_t)(eq - extra[j]) + 1 : strlen(extra[j]);
            skip = strncmp(kv, extra[j], len) == 0;
        }
        if (!skip)
            env[k++] = (char *)kv;
    }
    for (size_t j = 0; j < nextra; j++)
        env[k++] = extra[j];
    env[k] = NULL;
    return env;
}

/*
 * Start `path` with argv and envp as this rank's child of kind `kind`.  The
 * child dies with us (PR_SET_PDEATHSIG from this thread), keeps only fds
 * 0-2, gets default signal dispositions, its own process group if `group`,
 * stdin from /dev/null if `null_in`, and `cwd` if not NULL.  Exec failures
 * come back through a close-on-exec pipe.  Returns the pid or -1.
 */
static pid_t s_spawn(mpirole_t *m, int kind, const char *path, char *const argv[],
                     char *const envp[], int group, int null_in, const char *cwd)
{
    int pfd[2];
    long maxfd = sysconf(_SC_OPEN_MAX);
    if (maxfd < 0 || maxfd > 65536)
        maxfd = 65536;
    if (pipe2(pfd, O_CLOEXEC) < 0) {
        log_err("rank %d: cannot start the %s: pipe: %s", m->rank, s_kid_name[kind],
                strerror(errno));
        return -1;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(pfd[0]);
        close(pfd[1]);
        log_err("rank %d: cannot start the %s: fork: %s", m->rank, s_kid_name[kind],
                strerror(e));
        return -1;
    }
    if (pid == 0) {
        /* Child: async-signal-safe calls only. */
        int e;
        const char *step = "prctl";
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127); /* the rank died before prctl took effect */
        if (group && setpgid(0, 0) < 0) {
            step = "setpgid";
            goto fail;
        }
        if (null_in) {
            int fd = open("/dev/null", O_RDONLY);
            if (fd < 0 || dup2(fd, 0) < 0) {
                step = "/dev/null";
                goto fail;
            }
            if (fd > 2)
                close(fd);
        }
        if (cwd && chdir(cwd) < 0) {
            step = "chdir";
            goto fail;
        }
        /* A child holding MPI's sockets or shared-memory descriptors could
         * keep them alive past the rank; keep only 0-2 and the error pipe. */
        if (syscall(SYS_close_range, (unsigned)pfd[1] + 1, ~0u, 0u) < 0)
            for (int fd = pfd[1] + 1; fd < maxfd; fd++)
                close(fd);
        for (int fd = 3; fd < pfd[1]; fd++)
            close(fd);
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        for (int sig = 1; sig < NSIG; sig++)
            sigaction(sig, &dfl, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execve(path, argv, envp);
        step = "exec";
    fail:
        e = errno;
        /* errno, then which step failed (a short literal). */
        while (write(pfd[1], &e, sizeof e) < 0 && errno == EINTR)
            ;
        while (write(pfd[1], step, strlen(step) + 1) < 0 && errno == EINTR)
            ;
        _exit(127);
    }
    close(pfd[1]);
    if (group)
        setpgid(pid, pid); /* both sides, so a kill(-pid) right away finds it */
    int child_err = 0;
    char step[32] = "";
    ssize_t r;
    while ((r = read(pfd[0], &child_err, sizeof child_err)) < 0 && errno == EINTR)
        ;
    if (r > 0) {
        ssize_t s;
        while ((s = read(pfd[0], step, sizeof step - 1)) < 0 && errno == EINTR)
            ;
        step[s > 0 ? s : 0] = '\0';
    }
    close(pfd[0]);
    if (r > 0) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        log_err("rank %d: cannot start the %s %s: %s: %s", m->rank, s_kid_name[kind], path,
                step, strerror(child_err));
        errno = child_err;
        return -1;
    }
    m->kid[kind] = pid;
    m->kid_group[kind] = group;
    return pid;
}

/* Has kid `kind` exited?  Reaps it (kid[kind] becomes 0) and fills *status
 * (-1 if someone else reaped it).  1 if it exited, 0 if still running. */
static int s_reap(mpirole_t *m, int kind, int *status)
{
    pid_t pid = m->kid[kind];
    if (pid <= 0)
        return 0;
    pid_t r = waitpid(pid, status, WNOHANG);
    if (r == 0 || (r < 0 && errno == EINTR))
        return 0;
    if (r < 0)
        *status = -1; /* ECHILD: SIGCHLD ignored by the program, reaped for us */
    m->kid[kind] = 0;
    return 1;
}

/* Send sig, wait up to `grace` s, then SIGKILL and reap.  A kid that leads
 * its own process group (the program) gets the signals as a group, and what
 * it leaves in the group is killed after it. */
static void s_stop_kid(mpirole_t *m, int kind, int sig, double grace)
{
    pid_t pid = m->kid[kind];
    int status = 0;
    if (pid <= 0)
        return;
    int group = m->kid_group[kind];
    kill(group ? -pid : pid, sig);
    double deadline = util_now() + grace, nap = 0.001;
    while (util_now() < deadline) {
        if (s_reap(m, kind, &status))
            goto reaped;
        s_nap(&nap);
    }
    log_warn("rank %d: the %s (pid %d) did not stop within %.0f s; killing it", m->rank,
             s_kid_name[kind], (int)pid, grace);
    kill(group ? -pid : pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    m->kid[kind] = 0;
reaped:
    if (group)
        kill(-pid, SIGKILL); /* what the program left running in its group */
}

static void s_remove_sfile(mpirole_t *m)
{
    char addr[SHOAL_ADDR_MAX], err[256];
    if (!m->sfile[0])
        return;
    /* The scheduler removes it on a clean exit; this is for one that was
     * killed.  Leave a file that names another scheduler alone. */
    if (util_sfile_read(m->sfile, 0, addr, sizeof addr, err, sizeof err) == 0 &&
        strcmp(addr, m->address) == 0)
        unlink(m->sfile);
}

/* Stop every process of this rank, in the order that loses least work. */
static void s_teardown(mpirole_t *m, double grace)
{
    m->stopping = 1;
    s_stop_kid(m, KID_PROGRAM, SIGTERM, grace);
    s_stop_kid(m, KID_WORKER, SIGTERM, grace);
    s_stop_kid(m, KID_SCHED, SIGTERM, grace);
    s_remove_sfile(m);
}

static void s_abort(mpirole_t *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Something this rank cannot recover from: end the whole job, now. */
static void s_abort(mpirole_t *m, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_err("rank %d: %s; ending the MPI job", m->rank, msg);
    s_teardown(m, 5.0);
    MPI_Abort(m->comm, 1);
    _exit(1);
}

static void s_check_signal(mpirole_t *m)
{
    int sig = s_signal;
    if (!sig)
        return;
    log_warn("rank %d: got signal %d (%s): stopping this rank's processes", m->rank, sig,
             strsignal(sig));
    s_teardown(m, 5.0);
    _exit(128 + sig);
}

static int s_start_worker(mpirole_t *m);

/* Outside the shutdown, a scheduler or worker that exits is a failure: the
 * scheduler's state is gone, so the job ends; a worker killed by a signal is
 * restarted (its tasks were placed elsewhere by the scheduler). */
static void s_check_kids(mpirole_t *m)
{
    int status;
    char how[128];
    if (m->stopping)
        return;
    if (s_reap(m, KID_SCHED, &status)) {
        s_describe(status, how, sizeof how);
        s_abort(m, "the scheduler %s", how);
    }
    if (s_reap(m, KID_WORKER, &status)) {
        s_describe(status, how, sizeof how);
        if (status < 0 || !WIFSIGNALED(status) || m->restarts >= MPIROLE_MAX_RESTARTS)
            s_abort(m, "the worker %s%s", how,
                    m->restarts >= MPIROLE_MAX_RESTARTS ? " (restarted too often)" : "");
        m->restarts++;
        log_warn("rank %d: the worker %s; restarting it (%d of %d)", m->rank, how,
                 m->restarts, MPIROLE_MAX_RESTARTS);
        if (s_start_worker(m) < 0)
            s_abort(m, "cannot restart the worker");
    }
}

/* Poll `req` (NULL: none) until it completes, napping in between and
 * watching signals and (with `watch`) this rank's processes. */
static void s_wait(mpirole_t *m, MPI_Request *req, int watch)
{
    double nap = 0.001;
    for (;;) {
        int flag = 0;
        if (req) {
            MPI_Test(req, &flag, MPI_STATUS_IGNORE);
            if (flag)
                return;
        }
        s_check_signal(m);
        if (watch)
            s_check_kids(m);
        s_nap(&nap);
    }
}

/* ---- starting ----------------------------------------------------------------------------- */

static int s_start_worker(mpirole_t *m)
{
    char path[PATH_MAX + 32], nthreads[16], name[64];
    char *argv[8 + 2 * MPIROLE_MAX_LIBRARIES];
    int a = 0;

    if (m->bindir[0] ? util_fmt(path, sizeof path, "%s/shoal-worker", m->bindir) < 0
                     : s_search_path("shoal-worker", path, sizeof path) < 0) {
        log_err("rank %d: shoal-worker not found in %s (set $SHOAL_BINDIR)", m->rank,
                m->bindir[0] ? m->bindir : "$PATH");
        return -1;
    }
    snprintf(nthreads, sizeof nthreads, "%d", m->nthreads);
    /* A restarted worker gets a new name: the scheduler may not have dropped
     * the old one yet. */
    if (m->restarts)
        snprintf(name, sizeof name, "mpi-rank-%d.%d", m->rank, m->restarts);
    else
        snprintf(name, sizeof name, "mpi-rank-%d", m->rank);
    argv[a++] = "shoal-worker";
    argv[a++] = m->address;
    argv[a++] = "--nthreads";
    argv[a++] = nthreads;
    argv[a++] = "--name";
    argv[a++] = name;
    for (int i = 0; i < m->nlibs; i++) {
        argv[a++] = "--library";
        argv[a++] = m->libs[i];
    }
    argv[a] = NULL;
    char **env = s_child_env(NULL);
    if (!env) {
        log_err("rank %d: out of memory", m->rank);
        return -1;
    }
    pid_t pid = s_spawn(m, KID_WORKER, path, argv, env, 0, 1,
                        m->local_dir[0] ? m->local_dir : NULL);
    free(env);
    if (pid < 0)
        return -1;
    log_debug("rank %d: worker %s pid %d, %d threads, on %s", m->rank, name, (int)pid,
              m->nthreads, util_hostname());
    return 0;
}

/* Rank 0: start the scheduler and read its address.  0 or -1 with a reason
 * in err. */
static int s_start_scheduler(mpirole_t *m, const mpirole_opts_t *o, int single_node,
                             char *err, size_t cap)
{
    char path[PATH_MAX + 32], port[16], host[256] = "", sfile[PATH_MAX];
    char tmpdir[PATH_MAX] = "";
    char *argv[10];
    int a = 0, status;

    if (m->bindir[0] ? util_fmt(path, sizeof path, "%s/shoal-scheduler", m->bindir) < 0
                     : s_search_path("shoal-scheduler", path, sizeof path) < 0) {
        util_fmt(err, cap, "shoal-scheduler not found in %s (set $SHOAL_BINDIR)",
                 m->bindir[0] ? m->bindir : "$PATH");
        return -1;
    }
    if (o->host) {
        snprintf(host, sizeof host, "%s", o->host);
    } else if (o->interface) {
        if (s_iface_ipv4(o->interface, host, sizeof host) < 0) {
            util_fmt(err, cap, "interface %s has no IPv4 address on %s", o->interface,
                     util_hostname());
            return -1;
        }
    } else if (single_node && m->client_rank >= 0) {
        /* Everyone who talks to it is on this node: do not listen on the
         * network at all. */
        snprintf(host, sizeof host, "127.0.0.1");
    }
    if (m->sfile[0]) {
        /* A leftover file from an earlier job would be read as our address. */
        if (unlink(m->sfile) < 0 && errno != ENOENT) {
            util_fmt(err, cap, "cannot replace the scheduler file %s: %s", m->sfile,
                     strerror(errno));
            return -1;
        }
        snprintf(sfile, sizeof sfile, "%s", m->sfile);
    } else {
        /* Private: only rank 0 reads it, then it goes (the address travels
         * by MPI_Bcast). */
        if (util_fmt(tmpdir, sizeof tmpdir, "%s/mpi-XXXXXX", util_runtime_dir()) < 0 ||
            !mkdtemp(tmpdir) ||
            util_fmt(sfile, sizeof sfile, "%s/scheduler.json", tmpdir) < 0) {
            util_fmt(err, cap, "cannot create a directory in %s: %s", util_runtime_dir(),
                     strerror(errno));
            return -1;
        }
    }
    snprintf(port, sizeof port, "%d", o->port);
    argv[a++] = "shoal-scheduler";
    argv[a++] = "--port";
    argv[a++] = port;
    argv[a++] = "--scheduler-file";
    argv[a++] = sfile;
    if (host[0]) {
        argv[a++] = "--host";
        argv[a++] = host;
    }
    argv[a] = NULL;

    char **env = s_child_env(NULL);
    if (!env) {
        util_fmt(err, cap, "out of memory");
        goto fail;
    }
    pid_t pid = s_spawn(m, KID_SCHED, path, argv, env, 0, 1,
                        m->local_dir[0] ? m->local_dir : NULL);
    free(env);
    if (pid < 0) {
        util_fmt(err, cap, "cannot start %s: %s", path, strerror(errno));
        goto fail;
    }
    double deadline = util_now() + MPIROLE_START_TIMEOUT, nap = 0.001;
    char why[256];
    for (;;) {
        if (util_sfile_read(sfile, 0, m->address, sizeof m->address, why, sizeof why) == 0)
            break;
        if (errno != ENOENT) {
            util_fmt(err, cap, "bad scheduler file: %s", why);
            goto fail;
        }
        if (s_reap(m, KID_SCHED, &status)) {
            char how[128];
            s_describe(status, how, sizeof how);
            util_fmt(err, cap, "the scheduler %s before listening (see its log above)", how);
            goto fail;
        }
        if (util_now() > deadline) {
            util_fmt(err, cap, "the scheduler did not write %s within %.0f s", sfile,
                     MPIROLE_START_TIMEOUT);
            goto fail;
        }
        s_nap(&nap);
    }
    if (tmpdir[0]) {
        /* The scheduler tolerates its file being gone when it exits. */
        unlink(sfile);
        rmdir(tmpdir);
    }
    return 0;
fail:
    s_stop_kid(m, KID_SCHED, SIGTERM, 5.0);
    if (tmpdir[0]) {
        unlink(sfile);
        rmdir(tmpdir);
    }
    m->address[0] = '\0';
    return -1;
}

/* Threads per worker when not given: this rank's CPUs (its affinity mask:
 * what mpirun's binding or the batch system grants), but no more than its
 * share of the node among the worker ranks on it (ranks that are not bound
 * all see the whole node). */
static int s_auto_threads(int local_workers)
{
    long affinity = util_ncpus();
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (online < 1)
        online = affinity;
    long share = online / (local_workers > 0 ? local_workers : 1);
    long t = affinity < share ? affinity : share;
    if (t < 1)
        t = 1;
    if (t > MAX_THREADS)
        t = MAX_THREADS;
    return (int)t;
}

static int s_check_opts(const mpirole_opts_t *o, int rank)
{
    const char *bad = NULL;
    int nlibs = 0;
    if (o->nthreads < 0 || o->nthreads > MAX_THREADS)
        bad = "nthreads must be from 0 (automatic) to 1024";
    else if (o->port < 0 || o->port > 65535)
        bad = "the scheduler port must be from 0 to 65535";
    else if (o->host && !s_valid_host(o->host))
        bad = "the host must be a host name or address (letters, digits, . - _ :)";
    else if (o->interface && (!o->interface[0] || strlen(o->interface) >= IFNAMSIZ))
        bad = "the interface name must be 1 to 15 characters";
    else if (o->host && o->interface)
        bad = "give a host or an interface, not both";
    else if (o->scheduler_file && (!o->scheduler_file[0] ||
                                   strlen(o->scheduler_file) >= PATH_MAX - 256))
        bad = "the scheduler file path is empty or too long";
    else if (o->local_directory && (!o->local_directory[0] ||
                                    strlen(o->local_directory) >= PATH_MAX - 256))
        bad = "the local directory path is empty or too long";
    else if (o->bindir && strlen(o->bindir) >= PATH_MAX - 32)
        bad = "the bin directory path is too long";
    for (; !bad && o->libraries && o->libraries[nlibs]; nlibs++) {
        if (nlibs >= MPIROLE_MAX_LIBRARIES)
            bad = "too many task libraries (at most 64)";
        else if (!o->libraries[nlibs][0] || strlen(o->libraries[nlibs]) >= PATH_MAX - 256)
            bad = "a task library path is empty or too long";
    }
    if (bad) {
        log_err("rank %d: bad options: %s", rank, bad);
        return -1;
    }
    return 0;
}

/* Fixed-size so that every rank can post its receive before knowing it. */
typedef struct {
    int ok;
    char text[SHOAL_ADDR_MAX + 512];
} s_hello_t;

static void s_log_layout(const mpirole_t *m, const mpirole_opts_t *o)
{
    char threads[48], workers[48];
    int t = o->nthreads ? o->nthreads : m->size == 1 ? m->nthreads : 0;
    if (t)
        snprintf(threads, sizeof threads, "%d thread%s", t, t == 1 ? "" : "s");
    else
        snprintf(threads, sizeof threads, "threads: the CPUs of its rank");
    /* The ranks that run only a worker. */
    int first = m->client_rank == 1 ? 2 : 1;
    if (m->size - 1 == first)
        snprintf(workers, sizeof workers, "rank %d one worker", first);
    else
        snprintf(workers, sizeof workers, "ranks %d-%d one worker each", first, m->size - 1);
    const char *client = m->client_desc;
    if (m->client_rank < 0) {
        if (m->size == 1)
            log_info("1 rank: it runs the scheduler and one worker (%s); "
                     "no client program: serving until the job is stopped", threads);
        else
            log_info("%d ranks: rank 0 runs the scheduler, %s (%s); no client program: "
                     "serving until the job is stopped", m->size, workers, threads);
    } else if (m->size == 1) {
        log_info("1 rank: it runs the scheduler, one worker (%s) and %s, as child "
                 "processes (start 3 or more ranks for a scheduler rank, a client rank "
                 "and worker ranks)", threads, client);
    } else if (m->size == 2) {
        log_info("2 ranks: rank 0 runs the scheduler and %s, %s (%s) (start 3 or more "
                 "ranks for a scheduler rank, a client rank and worker ranks)", client,
                 workers, threads);
    } else {
        log_info("%d ranks: rank 0 runs the scheduler, rank 1 %s, %s (%s)", m->size, client,
                 workers, threads);
    }
}

mpirole_t *mpirole_start(MPI_Comm comm, const mpirole_opts_t *o)
{
    mpirole_t *m = calloc(1, sizeof *m);
    MPI_Comm node = MPI_COMM_NULL;
    int node_size = 0, local_workers = 0, ok, all_ok = 0;
    s_hello_t hello;
    MPI_Request req;

    if (!m) {
        log_err("out of memory");
        MPI_Abort(comm, 1);
        return NULL;
    }
    m->comm = MPI_COMM_NULL;
    /* Our own communicator: our collectives never match the program's. */
    if (MPI_Comm_dup(comm, &m->comm) != MPI_SUCCESS) {
        log_err("MPI_Comm_dup failed");
        free(m);
        errno = EIO;
        return NULL;
    }
    MPI_Comm_rank(m->comm, &m->rank);
    MPI_Comm_size(m->comm, &m->size);
    ok = s_check_opts(o, m->rank) == 0;
    if (ok) {
        for (int i = 0; o->libraries && o->libraries[i]; i++) {
            char abs[PATH_MAX];
            if (s_absolute(o->libraries[i], abs, sizeof abs) < 0 ||
                !(m->libs[m->nlibs] = strdup(abs))) {
                log_err("rank %d: cannot use the task library path %s", m->rank,
                        o->libraries[i]);
                ok = 0;
                break;
            }
            m->nlibs++;
        }
        if (ok && o->scheduler_file && s_absolute(o->scheduler_file, m->sfile,
                                                  sizeof m->sfile) < 0)
            ok = 0;
        if (ok && o->local_directory) {
            if (s_absolute(o->local_directory, m->local_dir, sizeof m->local_dir) < 0 ||
                util_mkdir_p(m->local_dir) < 0) {
                log_err("rank %d: cannot create the local directory %s: %s", m->rank,
                        o->local_directory, strerror(errno));
                ok = 0;
            }
        }
        snprintf(m->client_desc, sizeof m->client_desc, "%s",
                 o->client_desc ? o->client_desc : "the client");
    }

    /* Roles (mpirole.h). */
    if (o->have_client)
        m->client_rank = m->size >= 3 ? 1 : 0;
    else
        m->client_rank = -1;
    m->is_sched = m->rank == 0;
    if (m->client_rank == 1)
        m->is_worker = m->rank >= 2;
    else
        m->is_worker = m->size == 1 || m->rank >= 1;
    if (m->client_rank == 1)
        m->nworkers = m->size - 2;
    else
        m->nworkers = m->size == 1 ? 1 : m->size - 1;
    if (m->is_sched || m->is_worker)
        mpirole_find_bindir(o->bindir, (const void *)mpirole_start, m->bindir,
                            sizeof m->bindir);

    /* Who shares this node: for the default thread count, and to keep a
     * single-node job's scheduler off the network. */
    int is_worker = m->is_worker;
    MPI_Comm_split_type(m->comm, MPI_COMM_TYPE_SHARED, m->rank, MPI_INFO_NULL, &node);
    MPI_Comm_size(node, &node_size);
    MPI_Allreduce(&is_worker, &local_workers, 1, MPI_INT, MPI_SUM, node);
    MPI_Comm_free(&node);
    m->nthreads = o->nthreads > 0 ? o->nthreads : s_auto_threads(local_workers);

    /* Everyone agrees on the options before anything starts. */
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, m->comm);
    if (!all_ok)
        goto fail;

    memset(&hello, 0, sizeof hello);
    if (m->rank == 0) {
        s_log_layout(m, o);
        hello.ok = s_start_scheduler(m, o, node_size == m->size, hello.text,
                                     sizeof hello.text) == 0;
        if (hello.ok) {
            snprintf(hello.text, sizeof hello.text, "%s", m->address);
            log_info("scheduler at %s (pid %d, on %s)", m->address, (int)m->kid[KID_SCHED],
                     util_hostname());
        } else {
            log_err("rank 0: cannot start the scheduler: %s", hello.text);
        }
    }
    MPI_Ibcast(&hello, (int)sizeof hello, MPI_BYTE, 0, m->comm, &req);
    s_wait(m, &req, 0);
    if (!hello.ok) {
        log_debug("rank %d: no scheduler; giving up", m->rank);
        goto fail;
    }
    hello.text[sizeof hello.text - 1] = '\0';
    util_fmt(m->address, sizeof m->address, "%s", hello.text);

    ok = m->is_worker ? s_start_worker(m) == 0 : 1;
    MPI_Iallreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, m->comm, &req);
    s_wait(m, &req, 0);
    if (!all_ok) {
        if (m->rank == 0)
            log_err("rank 0: a worker could not be started (see above); stopping");
        goto fail;
    }
    if (m->client_rank >= 0 && m->rank != m->client_rank) {
        MPI_Ibcast(&m->done_status, 1, MPI_INT, m->client_rank, m->comm, &m->done_req);
        m->done_posted = 1;
    }
    return m;

fail:
    s_teardown(m, MPIROLE_STOP_GRACE);
    MPI_Comm_free(&m->comm);
    mpirole_destroy(m);
    errno = EIO;
    return NULL;
}

int mpirole_is_client(const mpirole_t *m)
{
    return m->rank == m->client_rank;
}

int mpirole_rank(const mpirole_t *m)
{
    return m->rank;
}

const char *mpirole_address(const mpirole_t *m)
{
    return m->address;
}

int mpirole_nworkers(const mpirole_t *m)
{
    return m->nworkers;
}

/* ---- running ---------------------------------------------------------------------------- */

int mpirole_run_program(mpirole_t *m, char *const argv[])
{
    char path[PATH_MAX], sched_env[SHOAL_ADDR_MAX + 32], nw_env[48], how[128];
    int status = 0;

    if (strchr(argv[0], '/')) {
        if (util_fmt(path, sizeof path, "%s", argv[0]) < 0) {
            log_err("rank %d: program path too long", m->rank);
            return 127;
        }
    } else if (s_search_path(argv[0], path, sizeof path) < 0) {
        log_err("rank %d: %s: command not found", m->rank, argv[0]);
        return 127;
    }
    snprintf(sched_env, sizeof sched_env, "SHOAL_SCHEDULER=%s", m->address);
    snprintf(nw_env, sizeof nw_env, "SHOAL_MPI_NWORKERS=%d", m->nworkers);
    char *extra[] = {sched_env, nw_env, NULL};
    char **env = s_child_env(extra);
    if (!env) {
        log_err("rank %d: out of memory", m->rank);
        return 127;
    }
    /* stdin stays: mpirun forwards its own stdin to rank 0's.  Its own
     * process group lets us stop what it starts in the background too; but
     * not when it reads a terminal (shoal-mpi run without mpirun), where a
     * background group would be stopped by SIGTTIN. */
    int group = !isatty(0);
    pid_t pid = s_spawn(m, KID_PROGRAM, path, argv, env, group, 0, NULL);
    free(env);
    if (pid < 0)
        return errno == ENOENT ? 127 : 126;
    log_debug("rank %d: %s is pid %d", m->rank, argv[0], (int)pid);

    double nap = 0.001;
    while (!s_reap(m, KID_PROGRAM, &status)) {
        s_check_signal(m);
        s_check_kids(m);
        s_nap(&nap);
    }
    /* Background processes it left behind would outlive the job. */
    if (group)
        kill(-pid, SIGTERM);
    s_describe(status, how, sizeof how);
    if (status < 0)
        status = 0;
    else if (WIFEXITED(status))
        status = WEXITSTATUS(status);
    else if (WIFSIGNALED(status))
        status = 128 + WTERMSIG(status);
    else
        status = 1;
    log_info("rank %d: %s %s; stopping the cluster", m->rank, argv[0], how);
    return status;
}

int mpirole_serve(mpirole_t *m)
{
    if (!m->done_posted) {
        s_wait(m, NULL, 1); /* ends only by a signal or an abort */
        return 1;
    }
    s_wait(m, &m->done_req, 1);
    m->done_posted = 0;
    return m->done_status;
}

int mpirole_stop(mpirole_t *m, int status)
{
    MPI_Request req;

    m->stopping = 1;
    if (m->rank == m->client_rank) {
        m->done_status = status & 0xff;
        MPI_Ibcast(&m->done_status, 1, MPI_INT, m->client_rank, m->comm, &req);
        s_wait(m, &req, 0);
    }
    /* Workers first, so that they leave with a BYE rather than finding the
     * scheduler gone. */
    s_stop_kid(m, KID_WORKER, SIGTERM, MPIROLE_STOP_GRACE);
    MPI_Ibarrier(m->comm, &req);
    s_wait(m, &req, 0);
    s_stop_kid(m, KID_SCHED, SIGTERM, MPIROLE_STOP_GRACE);
    s_remove_sfile(m);
    /* Nobody finalizes (and exits) while rank 0 still has a scheduler. */
    MPI_Ibarrier(m->comm, &req);
    s_wait(m, &req, 0);
    MPI_Comm_free(&m->comm);
    if (m->rank == 0)
        log_info("cluster stopped; exit status %d", m->done_status);
    return m->done_status;
}

void mpirole_destroy(mpirole_t *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->nlibs; i++)
        free(m->libs[i]);
    free(m);
}
