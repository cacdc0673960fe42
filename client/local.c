/*
 * local.c - the embedded default cluster: when a client is given no address
 * it starts `shoal-scheduler` on 127.0.0.1 (port chosen by the kernel, the
 * address read back from a scheduler file) and N `shoal-worker` processes,
 * as children of this process, and stops them in shoal_disconnect().
 *
 * The binaries are looked up in: $SHOAL_BINDIR; the bin/ directory beside
 * the lib/ holding libshoal (dladdr), which is the installed layout and the
 * build tree's; the directory of the running program and its ../bin,
 * ../../bin, ../../../bin (statically linked programs in the build tree);
 * finally $PATH.
 *
 * The children are stopped by shoal_disconnect() (SIGTERM, then SIGKILL after
 * 5 s).  If the client dies without disconnecting (exit without disconnect,
 * a crash, SIGKILL), they get SIGTERM from the kernel: they are started by a
 * keeper thread with PR_SET_PDEATHSIG (see s_spawn).
 */
#define _GNU_SOURCE
#include "client_int.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LOCAL_SFILE_TIMEOUT 10.0
#define LOCAL_TERM_GRACE 5.0

struct local_cluster {
    pid_t sched;           /* 0 once reaped */
    pid_t *workers;        /* 0 once reaped */
    int nworkers;
    int nspawned;
    int nthreads;
    double timeout;
    char bindir[PATH_MAX]; /* "" means: search $PATH */
    char sfile[PATH_MAX];
    char addr[SHOAL_ADDR_MAX];
    /* The keeper thread: the parent of the children (see s_spawn). */
    pthread_t keeper;
    int keeper_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started, stop;     /* under mu */
    int rc, errnum;
    shoal_error_t err;
};

static int s_has_bins(const char *dir)
{
    char p[PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/shoal-scheduler", dir);
    if (access(p, X_OK) != 0)
        return 0;
    snprintf(p, sizeof p, "%s/shoal-worker", dir);
    return access(p, X_OK) == 0;
}

/* Directory part of path (in place). */
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

static int s_try(char *out, size_t cap, const char *dir, const char *suffix)
{
    char cand[PATH_MAX];
    if (util_fmt(cand, sizeof cand, "%s%s", dir, suffix) < 0)
        return 0;
    char real[PATH_MAX];
    if (!realpath(cand, real))
        return 0;
    if (!s_has_bins(real))
        return 0;
    return util_fmt(out, cap, "%s", real) == 0;
}

static void s_find_bindir(char *out, size_t cap)
{
    const char *env = getenv("SHOAL_BINDIR");
    out[0] = '\0';
    if (env && env[0]) {
        snprintf(out, cap, "%s", env);
        return;
    }
    Dl_info info;
    char dir[PATH_MAX];
    if (dladdr((void *)shoal_connect_opts, &info) && info.dli_fname &&
        realpath(info.dli_fname, dir)) {
        s_dirname(dir);
        if (s_try(out, cap, dir, "/../bin"))
            return;
    }
    ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
    if (n > 0) {
        dir[n] = '\0';
        s_dirname(dir);
        static const char *const rel[] = {"", "/../bin", "/../../bin", "/../../../bin"};
        for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++)
            if (s_try(out, cap, dir, rel[i]))
                return;
    }
    out[0] = '\0'; /* $PATH */
}

/* Find prog in $PATH (done before fork: the child may only make
 * async-signal-safe calls, which a PATH search with allocation is not). */
static int s_search_path(const char *prog, char *out, size_t cap)
{
    const char *path = getenv("PATH");
    if (!path || !path[0])
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *end = strchr(path, ':');
        size_t n = end ? (size_t)(end - path) : strlen(path);
        if (util_fmt(out, cap, "%.*s%s%s", (int)n, n ? path : ".", "/", prog) == 0 &&
            access(out, X_OK) == 0)
            return 0;
        path += n;
        if (*path == ':')
            path++;
    }
    return -1;
}

/*
 * Start prog (from bindir, or $PATH) with argv: stdin from /dev/null, stdout
 * to our stderr (logs must not mix with the program's output), stderr
 * inherited unless $SHOAL_LOCAL_QUIET is set, signals reset, no other file
 * descriptor inherited, and PR_SET_PDEATHSIG so that the child gets SIGTERM
 * when its parent thread - the cluster's keeper thread, which lives until
 * local_stop() - goes away, the process dying included.  That is what
 * posix_spawn cannot do, hence fork + exec.  An exec failure comes back
 * through a close-on-exec pipe.
 */
static pid_t s_spawn(local_cluster_t *lc, const char *prog, char *argv[],
                     shoal_error_t *err)
{
    char path[PATH_MAX + 32];
    const char *quiet = getenv("SHOAL_LOCAL_QUIET");
    int is_quiet = quiet && quiet[0] && strcmp(quiet, "0") != 0;
    int pfd[2];

    if (lc->bindir[0]) {
        snprintf(path, sizeof path, "%s/%s", lc->bindir, prog);
        if (access(path, X_OK) != 0) {
            client_fail(err, errno,
                        "cannot start the local cluster: %s: %s (set $SHOAL_BINDIR to the "
                        "directory holding shoal-scheduler and shoal-worker)",
                        path, strerror(errno));
            return -1;
        }
    } else if (s_search_path(prog, path, sizeof path) < 0) {
        client_fail(err, ENOENT,
                    "cannot start the local cluster: %s is not next to libshoal nor in "
                    "$PATH (set $SHOAL_BINDIR to the directory holding shoal-scheduler and "
                    "shoal-worker)",
                    prog);
        return -1;
    }
    argv[0] = path;
    if (pipe2(pfd, O_CLOEXEC) < 0) {
        client_fail(err, errno, "cannot start %s: pipe: %s", path, strerror(errno));
        return -1;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(pfd[0]);
        close(pfd[1]);
        client_fail(err, e, "cannot start %s: fork: %s", path, strerror(e));
        return -1;
    }
    if (pid == 0) {
        /* Child: async-signal-safe calls only. */
        int e;
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127); /* the parent died before prctl took effect */
        int null_in = open("/dev/null", O_RDONLY);
        if (null_in < 0 || dup2(null_in, 0) < 0)
            goto fail;
        if (is_quiet) {
            int null_out = open("/dev/null", O_WRONLY);
            if (null_out < 0 || dup2(null_out, 1) < 0 || dup2(null_out, 2) < 0)
                goto fail;
        } else if (dup2(2, 1) < 0) {
            goto fail;
        }
        /* Keep fds 0-2 and the error pipe (close-on-exec anyway): a child
         * holding, say, the write end of a pipe the application reads
         * would keep it from ever seeing EOF.  (close_range needs Linux
         * 5.9; on older kernels the descriptors are inherited.) */
        if (pfd[1] > 3)
            syscall(SYS_close_range, 3u, (unsigned)pfd[1] - 1, 0u);
        syscall(SYS_close_range, (unsigned)pfd[1] + 1, ~0u, 0u);
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        for (int sig = 1; sig < NSIG; sig++)
            sigaction(sig, &dfl, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(path, argv);
    fail:
        e = errno;
        while (write(pfd[1], &e, sizeof e) < 0 && errno == EINTR)
            ;
        _exit(127);
    }
    close(pfd[1]);
    int child_err = 0;
    ssize_t r;
    while ((r = read(pfd[0], &child_err, sizeof child_err)) < 0 && errno == EINTR)
        ;
    close(pfd[0]);
    if (r > 0) {
        int status;
        waitpid(pid, &status, 0);
        client_fail(err, child_err,
                    "could not start %s for the local cluster: %s (set $SHOAL_BINDIR to "
                    "the directory holding shoal-scheduler and shoal-worker)",
                    path, strerror(child_err));
        return -1;
    }
    return pid;
}

/* Has pid exited?  Reaps it; fills *status. */
static int s_exited(pid_t pid, int *status)
{
    pid_t r = waitpid(pid, status, WNOHANG);
    if (r == pid)
        return 1;
    if (r < 0 && errno == ECHILD) {
        *status = 0;
        return 1; /* reaped elsewhere (SIGCHLD ignored) */
    }
    return 0;
}

static void s_describe(int status, char *buf, size_t cap)
{
    if (WIFEXITED(status))
        snprintf(buf, cap, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, cap, "was killed by signal %d", WTERMSIG(status));
    else
        snprintf(buf, cap, "exited");
}

/* Start the scheduler, read its address, start the workers.  Runs in the
 * keeper thread.  0, or -1 with err (what was started is stopped by
 * local_stop). */
static int s_start_all(local_cluster_t *lc, shoal_error_t *err)
{
    static unsigned seq;
    char why[256], nt[32], name[64];
    double timeout = lc->timeout;
    int nworkers = lc->nworkers;

    s_find_bindir(lc->bindir, sizeof lc->bindir);
    unsigned n = __atomic_fetch_add(&seq, 1, __ATOMIC_RELAXED);
    if (util_fmt(lc->sfile, sizeof lc->sfile, "%s/local-%ld-%u.json", util_runtime_dir(),
                 (long)getpid(), n) < 0) {
        lc->sfile[0] = '\0';
        return client_fail(err, ENAMETOOLONG, "the runtime directory path is too long");
    }
    unlink(lc->sfile);

    char *sargv[] = {NULL, "--host", "127.0.0.1", "--port", "0", "--scheduler-file",
                     lc->sfile, NULL};
    lc->sched = s_spawn(lc, "shoal-scheduler", sargv, err);
    if (lc->sched < 0) {
        lc->sched = 0;
        return -1;
    }

    /* Wait for the scheduler file, noticing a scheduler that died. */
    double start = util_now();
    for (;;) {
        int status;
        if (util_sfile_read(lc->sfile, 0.05, lc->addr, sizeof lc->addr, why, sizeof why) == 0)
            break;
        if (errno != ENOENT)
            return client_fail(err, EIO, "the local scheduler wrote a bad scheduler file: %s",
                               why);
        if (s_exited(lc->sched, &status)) {
            lc->sched = 0;
            s_describe(status, why, sizeof why);
            return client_fail(err, ECHILD,
                               "the local scheduler (%s%sshoal-scheduler) %s before it was "
                               "ready (is $SHOAL_BINDIR right?)",
                               lc->bindir, lc->bindir[0] ? "/" : "", why);
        }
        double limit = timeout > LOCAL_SFILE_TIMEOUT ? timeout : LOCAL_SFILE_TIMEOUT;
        if (util_now() - start > limit)
            return client_fail(err, ETIMEDOUT,
                               "the local scheduler did not write %s within %g s", lc->sfile,
                               limit);
    }

    snprintf(nt, sizeof nt, "%d", lc->nthreads);
    for (int i = 0; i < nworkers; i++) {
        snprintf(name, sizeof name, "local-%d", i);
        char *wargv[] = {NULL, lc->addr, "--nthreads", nt, "--name", name, NULL};
        pid_t pid = s_spawn(lc, "shoal-worker", wargv, err);
        if (pid < 0)
            return -1;
        lc->workers[i] = pid;
        lc->nspawned = i + 1;
    }
    return 0;
}

/* The keeper thread starts the children and then just exists until
 * local_stop: as their parent thread, its end (or the process's) is what
 * sends them PR_SET_PDEATHSIG. */
static void *s_keeper(void *arg)
{
    local_cluster_t *lc = arg;
    shoal_error_t err = {{0}};
    int rc = s_start_all(lc, &err);
    int e = errno;
    pthread_mutex_lock(&lc->mu);
    lc->rc = rc;
    lc->errnum = e;
    lc->err = err;
    lc->started = 1;
    pthread_cond_broadcast(&lc->cv);
    while (!lc->stop)
        pthread_cond_wait(&lc->cv, &lc->mu);
    pthread_mutex_unlock(&lc->mu);
    return NULL;
}

local_cluster_t *local_start(int nworkers, int nthreads, double timeout, shoal_error_t *err)
{
    local_cluster_t *lc = calloc(1, sizeof *lc);
    if (!lc) {
        client_fail(err, ENOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&lc->mu, NULL);
    pthread_cond_init(&lc->cv, NULL);
    lc->nworkers = nworkers;
    lc->nthreads = nthreads;
    lc->timeout = timeout;
    lc->workers = calloc((size_t)nworkers, sizeof *lc->workers);
    if (!lc->workers) {
        local_stop(lc);
        client_fail(err, ENOMEM, "out of memory");
        return NULL;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&lc->keeper, NULL, s_keeper, lc);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        local_stop(lc);
        client_fail(err, rc, "cannot start the local cluster: %s", strerror(rc));
        return NULL;
    }
    lc->keeper_started = 1;
    pthread_mutex_lock(&lc->mu);
    while (!lc->started)
        pthread_cond_wait(&lc->cv, &lc->mu);
    pthread_mutex_unlock(&lc->mu);
    if (lc->rc < 0) {
        int e = lc->errnum;
        if (err)
            *err = lc->err;
        local_stop(lc);
        errno = e;
        return NULL;
    }
    return lc;
}

const char *local_address(const local_cluster_t *lc)
{
    return lc->addr;
}

int local_nworkers(const local_cluster_t *lc)
{
    return lc->nworkers;
}

int local_check(local_cluster_t *lc, shoal_error_t *err)
{
    char why[128];
    int status;
    if (lc->sched && s_exited(lc->sched, &status)) {
        lc->sched = 0;
        s_describe(status, why, sizeof why);
        return client_fail(err, ECHILD, "the local scheduler %s", why);
    }
    for (int i = 0; i < lc->nspawned; i++) {
        if (lc->workers[i] && s_exited(lc->workers[i], &status)) {
            lc->workers[i] = 0;
            s_describe(status, why, sizeof why);
            return client_fail(err, ECHILD, "local worker local-%d %s", i, why);
        }
    }
    return 0;
}

static int s_nalive(local_cluster_t *lc)
{
    int status, n = 0;
    if (lc->sched) {
        if (s_exited(lc->sched, &status))
            lc->sched = 0;
        else
            n++;
    }
    for (int i = 0; i < lc->nspawned; i++) {
        if (!lc->workers[i])
            continue;
        if (s_exited(lc->workers[i], &status))
            lc->workers[i] = 0;
        else
            n++;
    }
    return n;
}

static void s_signal_all(local_cluster_t *lc, int sig)
{
    if (lc->sched)
        kill(lc->sched, sig);
    for (int i = 0; i < lc->nspawned; i++)
        if (lc->workers[i])
            kill(lc->workers[i], sig);
}

void local_stop(local_cluster_t *lc)
{
    if (!lc)
        return;
    /* SIGTERM lets the scheduler say BYE and the workers finish cleanly;
     * whatever is still there after the grace period is killed.  The wait
     * polls waitpid every 10 ms: it is bounded and happens once. */
    s_signal_all(lc, SIGTERM);
    double start = util_now();
    while (s_nalive(lc) > 0 && util_now() - start < LOCAL_TERM_GRACE) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (s_nalive(lc) > 0) {
        s_signal_all(lc, SIGKILL);
        int status;
        if (lc->sched)
            waitpid(lc->sched, &status, 0);
        for (int i = 0; i < lc->nspawned; i++)
            if (lc->workers[i])
                waitpid(lc->workers[i], &status, 0);
    }
    if (lc->sfile[0])
        unlink(lc->sfile);
    if (lc->keeper_started) {
        pthread_mutex_lock(&lc->mu);
        lc->stop = 1;
        pthread_cond_broadcast(&lc->cv);
        pthread_mutex_unlock(&lc->mu);
        pthread_join(lc->keeper, NULL);
    }
    pthread_cond_destroy(&lc->cv);
    pthread_mutex_destroy(&lc->mu);
    free(lc->workers);
    free(lc);
}
