/*
 * cluster.c - spawning and stopping real shoal processes for the e2e tests.
 * See cluster.h for the cleanup strategy.
 */
#define _GNU_SOURCE
#include "cluster.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
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

extern char **environ;

#define S_MAX_ARGS 64
#define S_MAX_REG 256
#define S_MAX_CAPTURE (16u << 20)

/* --- small helpers ------------------------------------------------------------ */

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void s_sleep(double s)
{
    struct timespec ts;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void __attribute__((format(printf, 1, 2))) s_warn(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "e2e cluster: %s\n", buf);
}

/* Split `s` on blanks into argv (pointers into buf, which receives a copy).
 * Returns the count, or -1 if there are too many or buf is too small. */
static int s_split(const char *s, char *buf, size_t cap, const char **argv, int max)
{
    int n = 0;
    size_t len;
    char *p;

    if (!s)
        return 0;
    len = strlen(s);
    if (len >= cap)
        return -1;
    memcpy(buf, s, len + 1);
    p = buf;
    for (;;) {
        while (*p && isspace((unsigned char)*p))
            *p++ = '\0';
        if (!*p)
            break;
        if (n >= max)
            return -1;
        argv[n++] = p;
        while (*p && !isspace((unsigned char)*p))
            p++;
    }
    return n;
}

/* --- paths ---------------------------------------------------------------------- */

static int s_exe_dir(char *out, size_t cap)
{
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    char *slash;

    if (n <= 0)
        return -1;
    buf[n] = '\0';
    slash = strrchr(buf, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    if (strlen(buf) >= cap)
        return -1;
    memcpy(out, buf, strlen(buf) + 1);
    return 0;
}

/* realpath of exe_dir/rel into out. */
static int s_from_exe(const char *rel, char *out)
{
    char dir[PATH_MAX], path[PATH_MAX + 64];

    if (s_exe_dir(dir, sizeof dir) < 0)
        return -1;
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, rel) >= sizeof path)
        return -1;
    return realpath(path, out) ? 0 : -1;
}

const char *cluster_bindir(void)
{
    static char dir[PATH_MAX];
    const char *env = getenv("SHOAL_BINDIR");

    if (dir[0])
        return dir;
    if (env && *env) {
        if (!realpath(env, dir)) {
            s_warn("SHOAL_BINDIR=%s: %s", env, strerror(errno));
            dir[0] = '\0';
            return NULL;
        }
        return dir;
    }
    if (s_from_exe("../../../bin", dir) < 0) {
        s_warn("cannot find bin/ from /proc/self/exe (set SHOAL_BINDIR)");
        dir[0] = '\0';
        return NULL;
    }
    return dir;
}

const char *cluster_bin(const char *name)
{
    /* A few slots so that callers can hold two names at once. */
    static char paths[4][PATH_MAX + 64];
    static int next;
    const char *dir = cluster_bindir();
    char *p;

    if (!dir)
        return NULL;
    p = paths[next++ % 4];
    snprintf(p, PATH_MAX + 64, "%s/%s", dir, name);
    return p;
}

const char *cluster_libbasic(void)
{
    static char path[PATH_MAX];
    const char *env = getenv("SHOAL_TEST_LIBBASIC");

    if (path[0])
        return path;
    if (env && *env) {
        if (!realpath(env, path)) {
            path[0] = '\0';
            return NULL;
        }
        return path;
    }
    if (s_from_exe("../libbasic.so", path) < 0) {
        s_warn("cannot find build/test/libbasic.so (set SHOAL_TEST_LIBBASIC)");
        path[0] = '\0';
        return NULL;
    }
    return path;
}

/* --- the fixture's base directory and pid list -------------------------------- */

static char s_base[PATH_MAX];
static char s_pidfile[PATH_MAX + 16];

const char *cluster_tmpbase(void)
{
    const char *t;

    if (s_base[0])
        return s_base;
    t = getenv("TMPDIR");
    return t && *t ? t : "/tmp";
}

static int s_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void s_rm_rf(const char *dir)
{
    const char *keep = getenv("SHOAL_E2E_KEEP");

    if (!dir || !dir[0])
        return;
    if (keep && *keep && strcmp(keep, "0") != 0) {
        fprintf(stderr, "e2e cluster: keeping %s\n", dir);
        return;
    }
    nftw(dir, s_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Read /proc/PID/stat: command name, state, ppid, pgrp.  0 or -1. */
static int s_proc_stat(pid_t pid, char *comm, size_t cap, char *state, pid_t *ppid,
                       pid_t *pgrp)
{
    char path[64], buf[1024];
    int fd;
    ssize_t n;
    char *open_p, *close_p, *p, *end;
    size_t clen;

    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    /* "pid (comm) S ppid pgrp ...": comm may contain spaces and parens. */
    open_p = strchr(buf, '(');
    close_p = strrchr(buf, ')');
    if (!open_p || !close_p || close_p < open_p || close_p[1] != ' ')
        return -1;
    clen = (size_t)(close_p - open_p - 1);
    if (comm && cap > 0) {
        if (clen >= cap)
            clen = cap - 1;
        memcpy(comm, open_p + 1, clen);
        comm[clen] = '\0';
    }
    p = close_p + 2;
    if (state)
        *state = *p;
    p++;
    errno = 0;
    long pp = strtol(p, &end, 10);
    if (end == p || errno)
        return -1;
    p = end;
    long pg = strtol(p, &end, 10);
    if (end == p || errno)
        return -1;
    if (ppid)
        *ppid = (pid_t)pp;
    if (pgrp)
        *pgrp = (pid_t)pg;
    return 0;
}

pid_t cluster_ppid(pid_t pid)
{
    pid_t pp;
    return s_proc_stat(pid, NULL, 0, NULL, &pp, NULL) < 0 ? -1 : pp;
}

int proc_alive(pid_t pid)
{
    char state;

    if (pid <= 0)
        return 0;
    if (s_proc_stat(pid, NULL, 0, &state, NULL, NULL) < 0)
        return 0;
    return state != 'Z' && state != 'X';
}

int proc_kill_group(pid_t pgid)
{
    DIR *d;
    struct dirent *e;
    int n = 0;

    if (pgid <= 1)
        return 0;
    d = opendir("/proc");
    if (!d)
        return 0;
    while ((e = readdir(d))) {
        char comm[64], *end;
        pid_t pid, pgrp;
        long v;

        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        v = strtol(e->d_name, &end, 10);
        if (*end || v <= 1)
            continue;
        pid = (pid_t)v;
        if (s_proc_stat(pid, comm, sizeof comm, NULL, NULL, &pgrp) < 0)
            continue;
        if (pgrp != pgid || strncmp(comm, "shoal", 5) != 0)
            continue;
        if (kill(pid, SIGKILL) == 0)
            n++;
    }
    closedir(d);
    return n;
}

void cluster_fixture_setup(void)
{
    char tmpl[PATH_MAX];
    const char *t = getenv("TMPDIR");
    int fd;

    /* Processes orphaned by a test that died (killed by PR_SET_PDEATHSIG, or
     * a supervisor's children) are handed to us instead of to init, which
     * in a container may never reap them: the teardown reaps them. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    snprintf(tmpl, sizeof tmpl, "%s/shoal-e2e-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmpl)) {
        s_warn("mkdtemp %s: %s", tmpl, strerror(errno));
        s_base[0] = '\0';
        return;
    }
    memcpy(s_base, tmpl, strlen(tmpl) + 1);
    snprintf(s_pidfile, sizeof s_pidfile, "%s/pids", s_base);
    fd = open(s_pidfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
}

void cluster_fixture_teardown(void)
{
    FILE *f;
    char line[64];

    if (!s_base[0])
        return;
    f = fopen(s_pidfile, "re");
    if (f) {
        while (fgets(line, sizeof line, f)) {
            char comm[64], *end;
            long v = strtol(line, &end, 10);

            if (end == line || v <= 1)
                continue;
            /* Kill it only if it is still a shoal process: the pid was ours,
             * and a reused pid would not carry that name. */
            if (s_proc_stat((pid_t)v, comm, sizeof comm, NULL, NULL, NULL) == 0 &&
                strncmp(comm, "shoal", 5) == 0)
                kill((pid_t)v, SIGKILL);
            proc_kill_group((pid_t)v);
        }
        fclose(f);
    }
    /* Reap what was handed to us (see the setup), bounded. */
    for (double end = s_now() + 3.0; s_now() < end;) {
        int st;
        pid_t r = waitpid(-1, &st, WNOHANG);
        if (r < 0 && errno != EINTR)
            break;   /* ECHILD: nothing left */
        if (r == 0)
            s_sleep(0.01);
    }
    s_rm_rf(s_base);
    s_base[0] = '\0';
    s_pidfile[0] = '\0';
}

/* --- pid registry -------------------------------------------------------------- */

static volatile pid_t s_reg[S_MAX_REG];
static int s_reg_installed;

/* Async-signal-safe: kill each registered (hence unreaped: its pid and
 * process group are still ours) process and its group. */
static void s_kill_registered(void)
{
    for (int i = 0; i < S_MAX_REG; i++) {
        pid_t p = s_reg[i];
        if (p > 0) {
            kill(-p, SIGKILL);
            kill(p, SIGKILL);
        }
    }
}

static void s_atexit(void)
{
    s_kill_registered();
}

static void s_fatal(int sig)
{
    s_kill_registered();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void s_reg_install(void)
{
    static const int sigs[] = {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTERM, SIGINT};
    struct sigaction sa;

    if (s_reg_installed)
        return;
    s_reg_installed = 1;
    atexit(s_atexit);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_fatal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND;
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction old;
        /* Leave alone a handler someone else installed. */
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_DFL)
            sigaction(sigs[i], &sa, NULL);
    }
}

static void s_register(pid_t pid)
{
    s_reg_install();
    for (int i = 0; i < S_MAX_REG; i++) {
        if (s_reg[i] == 0) {
            s_reg[i] = pid;
            break;
        }
    }
    if (s_pidfile[0]) {
        int fd = open(s_pidfile, O_WRONLY | O_APPEND | O_CLOEXEC);
        if (fd >= 0) {
            char line[32];
            int n = snprintf(line, sizeof line, "%d\n", (int)pid);
            if (write(fd, line, (size_t)n) < 0)
                s_warn("cannot record pid %d", (int)pid);
            close(fd);
        }
    }
}

void proc_forget(pid_t pid)
{
    for (int i = 0; i < S_MAX_REG; i++)
        if (s_reg[i] == pid)
            s_reg[i] = 0;
}

/* --- spawning -------------------------------------------------------------------- */

/* The environment for a child: ours, with env_extra applied.  The strings
 * point into environ/env_extra; the array is malloc'd. */
static char **s_build_env(const char *const env_extra[])
{
    size_t n = 0, nextra = 0, k = 0;
    char **envp;

    while (environ[n])
        n++;
    while (env_extra && env_extra[nextra])
        nextra++;
    envp = calloc(n + nextra + 1, sizeof *envp);
    if (!envp)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const char *e = environ[i], *eq = strchr(e, '=');
        size_t klen = eq ? (size_t)(eq - e) : strlen(e);
        int overridden = 0;

        for (size_t j = 0; j < nextra; j++) {
            const char *x = env_extra[j], *xeq = strchr(x, '=');
            size_t xlen = xeq ? (size_t)(xeq - x) : strlen(x);
            if (xlen == klen && memcmp(x, e, klen) == 0) {
                overridden = 1;
                break;
            }
        }
        if (!overridden)
            envp[k++] = (char *)e;
    }
    for (size_t j = 0; j < nextra; j++)
        if (strchr(env_extra[j], '='))
            envp[k++] = (char *)env_extra[j];
    envp[k] = NULL;
    return envp;
}

/* In the child between fork and exec: async-signal-safe calls only (the test
 * process may have threads: a client's I/O thread). */
static void __attribute__((noreturn))
s_child(const char *const argv[], char **envp, pid_t parent, int in_fd, int out_fd,
        int err_fd, const char *cwd)
{
    sigset_t all;
    int devnull;

    setpgid(0, 0);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
        _exit(127);
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    signal(SIGPIPE, SIG_DFL);
    if (in_fd < 0) {
        devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0 && devnull != 0) {
            dup2(devnull, 0);
            close(devnull);
        }
    } else if (in_fd != 0) {
        dup2(in_fd, 0);
    }
    if (out_fd >= 0 && out_fd != 1)
        dup2(out_fd, 1);
    if (err_fd >= 0 && err_fd != 2)
        dup2(err_fd, 2);
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3U, ~0U, 0U) < 0)
#endif
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
    if (cwd && chdir(cwd) < 0)
        _exit(127);
    execve(argv[0], (char *const *)argv, envp);
    _exit(127);
}

pid_t proc_spawn(const char *const argv[], const char *const env_extra[], int in_fd,
                 int out_fd, int err_fd, const char *cwd)
{
    char **envp = s_build_env(env_extra);
    pid_t parent = getpid(), pid;

    if (!envp)
        return -1;
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        s_warn("fork: %s", strerror(errno));
        free(envp);
        return -1;
    }
    if (pid == 0)
        s_child(argv, envp, parent, in_fd, out_fd, err_fd, cwd);
    free(envp);
    setpgid(pid, pid);   /* also in the parent: no race with a group kill */
    s_register(pid);
    return pid;
}

int cluster_waitpid(pid_t pid, double timeout)
{
    double end = s_now() + timeout;
    int st;

    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            proc_forget(pid);
            return st;
        }
        if (r < 0 && errno != EINTR) {
            proc_forget(pid);
            return -1;
        }
        if (s_now() >= end)
            return -1;
        s_sleep(0.01);
    }
}

/* Wait for `pid` to exit WITHOUT reaping it (so its pid and group stay
 * ours).  1 if it exited, 0 on timeout. */
static int s_wait_exit_nowait(pid_t pid, double timeout)
{
    double end = s_now() + timeout;

    for (;;) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0) {
            if (si.si_pid == pid)
                return 1;
        } else if (errno != EINTR) {
            return 1;   /* not our child any more: nothing to wait for */
        }
        if (s_now() >= end)
            return 0;
        s_sleep(0.01);
    }
}

/* Kill the group of an unreaped child of ours and reap it. */
static void s_kill_reap(pid_t pid)
{
    int st;

    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    proc_forget(pid);
}

/* --- running a command with captured output ------------------------------------- */

static int s_append(char **buf, size_t *len, size_t *cap, const char *p, size_t n)
{
    if (*len + n + 1 > S_MAX_CAPTURE)
        n = S_MAX_CAPTURE - 1 - *len;
    if (*len + n + 1 > *cap) {
        size_t nc = *cap ? *cap : 4096;
        char *nb;
        while (nc < *len + n + 1)
            nc *= 2;
        nb = realloc(*buf, nc);
        if (!nb)
            return -1;
        *buf = nb;
        *cap = nc;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

int proc_run(const char *const argv[], const char *const env_extra[], const void *in,
             size_t in_len, double timeout, proc_result_t *r)
{
    int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1};
    size_t out_cap = 0, err_cap = 0, in_off = 0;
    double start = s_now(), end = start + timeout;
    pid_t pid = -1;
    int st = 0, reaped = 0;

    memset(r, 0, sizeof *r);
    r->exit_code = -1;
    signal(SIGPIPE, SIG_IGN);
    if (pipe2(pin, O_CLOEXEC) < 0 || pipe2(pout, O_CLOEXEC) < 0 ||
        pipe2(perr, O_CLOEXEC) < 0)
        goto error;
    pid = proc_spawn(argv, env_extra, pin[0], pout[1], perr[1], NULL);
    if (pid < 0)
        goto error;
    close(pin[0]);
    close(pout[1]);
    close(perr[1]);
    pin[0] = pout[1] = perr[1] = -1;
    fcntl(pin[1], F_SETFL, O_NONBLOCK);
    if (!in || in_len == 0) {
        close(pin[1]);
        pin[1] = -1;
    }
    /* Both buffers always exist, even when empty. */
    if (s_append(&r->out, &r->out_len, &out_cap, "", 0) < 0 ||
        s_append(&r->err, &r->err_len, &err_cap, "", 0) < 0)
        goto kill;

    while (pout[0] >= 0 || perr[0] >= 0 || pin[1] >= 0) {
        struct pollfd p[3];
        int np = 0, ms;
        double left = end - s_now();

        if (left <= 0) {
            r->timed_out = 1;
            break;
        }
        if (pout[0] >= 0)
            p[np++] = (struct pollfd){.fd = pout[0], .events = POLLIN};
        if (perr[0] >= 0)
            p[np++] = (struct pollfd){.fd = perr[0], .events = POLLIN};
        if (pin[1] >= 0)
            p[np++] = (struct pollfd){.fd = pin[1], .events = POLLOUT};
        ms = (int)(left * 1000) + 1;
        if (poll(p, (nfds_t)np, ms) < 0) {
            if (errno == EINTR)
                continue;
            goto kill;
        }
        for (int i = 0; i < np; i++) {
            if (!p[i].revents)
                continue;
            if (p[i].fd == pin[1]) {
                ssize_t w = write(pin[1], (const char *)in + in_off, in_len - in_off);
                if (w > 0)
                    in_off += (size_t)w;
                if ((w < 0 && errno != EAGAIN && errno != EINTR) || in_off >= in_len) {
                    close(pin[1]);
                    pin[1] = -1;
                }
                continue;
            }
            char buf[65536];
            ssize_t n = read(p[i].fd, buf, sizeof buf);
            if (n > 0) {
                if (p[i].fd == pout[0])
                    s_append(&r->out, &r->out_len, &out_cap, buf, (size_t)n);
                else
                    s_append(&r->err, &r->err_len, &err_cap, buf, (size_t)n);
            } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                if (p[i].fd == pout[0]) {
                    close(pout[0]);
                    pout[0] = -1;
                } else {
                    close(perr[0]);
                    perr[0] = -1;
                }
            }
        }
    }
    /* Output closed: wait for the exit within what is left of the timeout. */
    while (!r->timed_out) {
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid) {
            reaped = 1;
            proc_forget(pid);
            break;
        }
        if (w < 0 && errno != EINTR)
            break;
        if (s_now() >= end) {
            r->timed_out = 1;
            break;
        }
        s_sleep(0.005);
    }
kill:
    if (!reaped && pid > 0) {
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        proc_forget(pid);
    }
    for (int i = 0; i < 2; i++) {
        if (pin[i] >= 0) close(pin[i]);
        if (pout[i] >= 0) close(pout[i]);
        if (perr[i] >= 0) close(perr[i]);
    }
    r->status = st;
    r->exited = WIFEXITED(st);
    r->exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    r->signaled = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
    r->elapsed = s_now() - start;
    if (!r->out || !r->err) {
        proc_result_free(r);
        return -1;
    }
    return 0;

error:
    s_warn("cannot run %s: %s", argv[0], strerror(errno));
    for (int i = 0; i < 2; i++) {
        if (pin[i] >= 0) close(pin[i]);
        if (pout[i] >= 0) close(pout[i]);
        if (perr[i] >= 0) close(perr[i]);
    }
    return -1;
}

void proc_result_free(proc_result_t *r)
{
    if (!r)
        return;
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
    r->out_len = r->err_len = 0;
}

/* --- clusters ---------------------------------------------------------------------- */

/* The environment of cluster processes: quieter logs unless the caller asked
 * for a level, and uploaded libraries kept in the cluster's directory. */
static void s_cluster_env(cluster_t *cl, char *rundir, size_t cap, const char **env)
{
    int n = 0;

    snprintf(rundir, cap, "SHOAL_RUNTIME_DIR=%s/run", cl->dir);
    env[n++] = rundir;
    if (!getenv("SHOAL_LOG_LEVEL"))
        env[n++] = "SHOAL_LOG_LEVEL=warn";
    env[n] = NULL;
}

/* Extract the "address" string of a scheduler file.  0 or -1. */
static int s_read_sfile(const char *path, char *addr, size_t cap)
{
    char buf[65536];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;
    char *p, *q;

    if (fd < 0)
        return -1;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    p = strstr(buf, "\"address\"");
    if (!p)
        return -1;
    p = strchr(p + 9, ':');
    if (!p)
        return -1;
    p = strchr(p, '"');
    if (!p)
        return -1;
    p++;
    q = strchr(p, '"');
    if (!q || (size_t)(q - p) >= cap || q == p)
        return -1;
    memcpy(addr, p, (size_t)(q - p));
    addr[q - p] = '\0';
    return 0;
}

static int s_count_nworkers_opt(const char *args)
{
    char buf[1024];
    const char *argv[S_MAX_ARGS];
    int n = s_split(args, buf, sizeof buf, argv, S_MAX_ARGS);

    for (int i = 0; i < n; i++) {
        if (strcmp(argv[i], "--nworkers") == 0 && i + 1 < n)
            return atoi(argv[i + 1]);
        if (strncmp(argv[i], "--nworkers=", 11) == 0)
            return atoi(argv[i] + 11);
    }
    return 1;
}

int cluster_add_worker(cluster_t *cl, int nthreads, const char *extra_args,
                       int with_library)
{
    const char *argv[S_MAX_ARGS + 16], *env[4];
    char extra[1024], nthr[32], rundir[700];
    const char *bin = cluster_bin("shoal-worker");
    int n = 0, k, idx = cl->nprocs;
    pid_t pid;

    if (idx >= CLUSTER_MAX_PROCS || !bin)
        return -1;
    snprintf(nthr, sizeof nthr, "%d", nthreads > 0 ? nthreads : 1);
    snprintf(cl->worker_name[idx], sizeof cl->worker_name[idx], "e2e-w%d", idx);
    argv[n++] = bin;
    argv[n++] = "--nthreads";
    argv[n++] = nthr;
    argv[n++] = "--name";
    argv[n++] = cl->worker_name[idx];
    argv[n++] = "--death-timeout";
    argv[n++] = "20";
    if (with_library) {
        const char *lib = cluster_libbasic();
        if (!lib)
            return -1;
        argv[n++] = "--library";
        argv[n++] = lib;
    }
    k = s_split(extra_args, extra, sizeof extra, argv + n, S_MAX_ARGS);
    if (k < 0) {
        s_warn("too many worker arguments: %s", extra_args);
        return -1;
    }
    n += k;
    argv[n++] = cl->address;
    argv[n] = NULL;
    s_cluster_env(cl, rundir, sizeof rundir, env);
    pid = proc_spawn(argv, env, -1, -1, -1, cl->dir);
    if (pid < 0)
        return -1;
    cl->worker_pid[idx] = pid;
    cl->nprocs++;
    return idx;
}

cluster_t *cluster_start_opts(const cluster_opts_t *o)
{
    const char *argv[S_MAX_ARGS + 16], *env[4];
    char extra[1024], tmpl[PATH_MAX], rundir[700];
    const char *bin = cluster_bin("shoal-scheduler");
    double timeout = o->start_timeout > 0 ? o->start_timeout : 20.0;
    double end = s_now() + timeout;
    shoal_connect_opts_t copts;
    shoal_error_t err;
    cluster_t *cl;
    int n = 0, k;

    if (!bin)
        return NULL;
    if (!o->no_library && !cluster_libbasic())
        return NULL;
    cl = calloc(1, sizeof *cl);
    if (!cl)
        return NULL;
    snprintf(tmpl, sizeof tmpl, "%s/cluster-XXXXXX", cluster_tmpbase());
    if (!mkdtemp(tmpl) || strlen(tmpl) >= sizeof cl->dir) {
        s_warn("mkdtemp %s: %s", tmpl, strerror(errno));
        free(cl);
        return NULL;
    }
    memcpy(cl->dir, tmpl, strlen(tmpl) + 1);
    snprintf(cl->sfile, sizeof cl->sfile, "%s/s.json", cl->dir);

    argv[n++] = bin;
    argv[n++] = "--host";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--port";
    argv[n++] = "0";
    argv[n++] = "--scheduler-file";
    argv[n++] = cl->sfile;
    k = s_split(o->sched_args, extra, sizeof extra, argv + n, S_MAX_ARGS);
    if (k < 0)
        goto error;
    n += k;
    argv[n] = NULL;
    s_cluster_env(cl, rundir, sizeof rundir, env);
    cl->sched_pid = proc_spawn(argv, env, -1, -1, -1, cl->dir);
    if (cl->sched_pid < 0) {
        cl->sched_pid = 0;
        goto error;
    }

    /* The scheduler writes the file (atomically) once it is listening. */
    for (;;) {
        int st;
        if (s_read_sfile(cl->sfile, cl->address, sizeof cl->address) == 0)
            break;
        if (waitpid(cl->sched_pid, &st, WNOHANG) == cl->sched_pid) {
            proc_forget(cl->sched_pid);
            cl->sched_pid = 0;
            s_warn("scheduler exited (status 0x%x) before writing %s", st, cl->sfile);
            goto error;
        }
        if (s_now() > end) {
            s_warn("no scheduler file %s after %.0f s", cl->sfile, timeout);
            goto error;
        }
        s_sleep(0.01);
    }

    for (int i = 0; i < o->nworkers; i++)
        if (cluster_add_worker(cl, o->nthreads, o->worker_args, !o->no_library) < 0)
            goto error;
    cl->expect = o->expect_workers > 0
                     ? o->expect_workers
                     : o->nworkers * s_count_nworkers_opt(o->worker_args);

    memset(&copts, 0, sizeof copts);
    copts.address = cl->address;
    copts.timeout = end - s_now() > 1 ? end - s_now() : 1;
    copts.name = "e2e";
    cl->client = shoal_connect_opts(&copts, &err);
    if (!cl->client) {
        s_warn("connect to %s: %s", cl->address, err.msg);
        goto error;
    }
    if (cl->expect > 0 &&
        shoal_wait_for_workers(cl->client, cl->expect,
                               end - s_now() > 1 ? end - s_now() : 1, &err) < 0) {
        s_warn("waiting for %d workers: %s", cl->expect, err.msg);
        goto error;
    }
    return cl;

error:
    cluster_stop(cl);
    return NULL;
}

cluster_t *cluster_start(int nworkers, int nthreads, const char *extra_worker_args)
{
    cluster_opts_t o;

    memset(&o, 0, sizeof o);
    o.nworkers = nworkers;
    o.nthreads = nthreads;
    o.worker_args = extra_worker_args;
    return cluster_start_opts(&o);
}

static int s_signal(pid_t *pidp, int sig, int reap)
{
    pid_t pid = *pidp;

    if (pid <= 0) {
        errno = ESRCH;
        return -1;
    }
    if (kill(pid, sig) < 0)
        return -1;
    if (sig == SIGKILL || reap) {
        if (cluster_waitpid(pid, 10.0) == -1) {
            s_warn("pid %d did not exit after signal %d", (int)pid, sig);
            s_kill_reap(pid);
        }
        *pidp = 0;
        /* A killed worker supervisor may leave children behind. */
        proc_kill_group(pid);
    }
    return 0;
}

int cluster_signal_worker(cluster_t *cl, int i, int sig, int reap)
{
    if (!cl || i < 0 || i >= cl->nprocs) {
        errno = EINVAL;
        return -1;
    }
    return s_signal(&cl->worker_pid[i], sig, reap);
}

int cluster_signal_scheduler(cluster_t *cl, int sig, int reap)
{
    if (!cl) {
        errno = EINVAL;
        return -1;
    }
    return s_signal(&cl->sched_pid, sig, reap);
}

int cluster_wait_nworkers(shoal_client_t *c, int n, double timeout)
{
    double end = s_now() + timeout;

    for (;;) {
        shoal_status_info_t st;
        shoal_error_t err;
        if (shoal_status(c, &st, 5.0, &err) == 0) {
            int have = st.nworkers;
            shoal_status_free(&st);
            if (have == n)
                return 0;
        }
        if (s_now() >= end)
            return -1;
        s_sleep(0.05);
    }
}

void cluster_stop(cluster_t *cl)
{
    pid_t *pids[CLUSTER_MAX_PROCS + 1];
    int n = 0;
    double end;

    if (!cl)
        return;
    shoal_disconnect(cl->client);
    cl->client = NULL;
    for (int i = 0; i < cl->nprocs; i++)
        if (cl->worker_pid[i] > 0)
            pids[n++] = &cl->worker_pid[i];
    if (cl->sched_pid > 0)
        pids[n++] = &cl->sched_pid;
    for (int i = 0; i < n; i++)
        kill(*pids[i], SIGTERM);
    /* Orderly shutdown first, bounded; then the whole group goes, so a
     * supervisor's children cannot outlive the test. */
    end = s_now() + 5.0;
    for (int i = 0; i < n; i++) {
        double left = end - s_now();
        if (!s_wait_exit_nowait(*pids[i], left > 0 ? left : 0))
            s_warn("pid %d ignored SIGTERM for 5 s; killing it", (int)*pids[i]);
        s_kill_reap(*pids[i]);
        *pids[i] = 0;
    }
    s_rm_rf(cl->dir);
    free(cl);
}
