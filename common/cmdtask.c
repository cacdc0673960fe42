/*
 * cmdtask.c - the built-in "shoal.cmd" task: run a command line, feed its
 * stdin, capture its stdout and stderr, honour a timeout and cancellation.
 *
 * Several executor threads run commands at once, so everything here is
 * per-call: the pipes are created O_CLOEXEC (a command spawned by another
 * thread does not inherit them), the child gets exactly fds 0-2 (closefrom
 * in the spawn), and SIGPIPE from feeding stdin to a command that stopped
 * reading is blocked in this thread only and consumed, never by changing the
 * process-wide disposition, which belongs to the program embedding us.
 *
 * The child runs in a process group of its own so that a timeout or a
 * cancellation kills what it started too: SIGTERM to the group, SIGKILL
 * S_KILL_GRACE seconds later.  The child is always reaped before returning.
 */
#define _GNU_SOURCE
#include "cmdtask.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define S_MAX_ENV 65536
#define S_SLICE_MS 50          /* longest sleep between checks */
#define S_KILL_GRACE 2.0       /* SIGTERM -> SIGKILL */
/* After SIGKILL, how long to keep reading pipes that something outside the
 * process group (a daemon that called setsid) still holds open. */
#define S_PIPE_GRACE 2.0
#define S_TRUNC_NOTE "[shoal: output truncated]\n"

typedef struct s_cmd {
    char **argv;        /* NULL-terminated, strings in argv_buf */
    char *argv_buf;
    char **envp;        /* NULL: inherit */
    char *env_buf;
    char *cwd;
    const void *in;     /* stdin bytes (point into the task arguments) */
    size_t in_len;
    int has_in;
    double timeout;     /* <= 0: none */
} s_cmd_t;

typedef struct s_out {
    char *p;
    size_t len, cap;
    int truncated;
} s_out_t;

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void s_cmd_free(s_cmd_t *c)
{
    free(c->argv);
    free(c->argv_buf);
    free(c->envp);
    free(c->env_buf);
    free(c->cwd);
}

static int s_key_is(const msgpack_object *k, const char *s)
{
    size_t n = strlen(s);
    return k->via.str.size == n && memcmp(k->via.str.ptr, s, n) == 0;
}

/* Copy an array of strs into one buffer of NUL-terminated strings and a
 * NULL-terminated pointer array.  `what` names the field in errors.  If
 * need_eq, every string must look like "K=V" with a non-empty K. */
static int s_strv(shoal_task_ctx_t *ctx, const msgpack_object *o, const char *what,
                  size_t min, size_t max, int need_eq, char ***vp, char **bufp)
{
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < min ||
        o->via.array.size > max)
        return shoal_task_error(ctx, "shoal.cmd: \"%s\" must be an array of %zu to %zu "
                                "strings", what, min, max);
    size_t n = o->via.array.size, total = 0;
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *s = &o->via.array.ptr[i];
        if (s->type != MSGPACK_OBJECT_STR)
            return shoal_task_error(ctx, "shoal.cmd: %s[%zu] is not a string", what, i);
        if (memchr(s->via.str.ptr, '\0', s->via.str.size))
            return shoal_task_error(ctx, "shoal.cmd: %s[%zu] contains a NUL byte", what, i);
        if (need_eq) {
            const char *eq = memchr(s->via.str.ptr, '=', s->via.str.size);
            if (!eq || eq == s->via.str.ptr)
                return shoal_task_error(ctx, "shoal.cmd: %s[%zu] is not of the form "
                                        "NAME=VALUE", what, i);
        }
        total += (size_t)s->via.str.size + 1;
    }
    char **v = malloc((n + 1) * sizeof *v);
    char *buf = malloc(total ? total : 1);
    if (!v || !buf) {
        free(v);
        free(buf);
        return shoal_task_error(ctx, "shoal.cmd: out of memory");
    }
    char *w = buf;
    for (size_t i = 0; i < n; i++) {
        const msgpack_object_str *s = &o->via.array.ptr[i].via.str;
        memcpy(w, s->ptr, s->size);
        w[s->size] = '\0';
        v[i] = w;
        w += s->size + 1;
    }
    v[n] = NULL;
    *vp = v;
    *bufp = buf;
    return 0;
}

/* Decode the argument map (see SHOAL_CMD_FUNC in shoal.h).  Unknown keys are
 * refused: a misspelt "timeout" silently ignored would run unbounded. */
static int s_parse(shoal_task_ctx_t *ctx, const msgpack_object *args, s_cmd_t *c)
{
    const msgpack_object *argv = NULL;

    if (shoal_nargs(args) != 1 || args->via.array.ptr[0].type != MSGPACK_OBJECT_MAP)
        return shoal_task_error(ctx, "shoal.cmd: expects one argument, a map with "
                                "\"argv\"");
    const msgpack_object_map *m = &args->via.array.ptr[0].via.map;
    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key, *v = &m->ptr[i].val;
        if (k->type != MSGPACK_OBJECT_STR)
            return shoal_task_error(ctx, "shoal.cmd: map keys must be strings");
        int nil = v->type == MSGPACK_OBJECT_NIL;
        if (s_key_is(k, "argv")) {
            argv = v;
        } else if (s_key_is(k, "env")) {
            free(c->envp);
            free(c->env_buf);
            c->envp = NULL;
            c->env_buf = NULL;
            if (!nil && s_strv(ctx, v, "env", 0, S_MAX_ENV, 1, &c->envp, &c->env_buf) < 0)
                return -1;
        } else if (s_key_is(k, "cwd")) {
            free(c->cwd);
            c->cwd = NULL;
            if (nil)
                continue;
            if (v->type != MSGPACK_OBJECT_STR || v->via.str.size == 0 ||
                v->via.str.size >= PATH_MAX ||
                memchr(v->via.str.ptr, '\0', v->via.str.size))
                return shoal_task_error(ctx, "shoal.cmd: \"cwd\" must be a path");
            c->cwd = strndup(v->via.str.ptr, v->via.str.size);
            if (!c->cwd)
                return shoal_task_error(ctx, "shoal.cmd: out of memory");
        } else if (s_key_is(k, "stdin")) {
            c->has_in = !nil;
            if (v->type == MSGPACK_OBJECT_BIN) {
                c->in = v->via.bin.ptr;
                c->in_len = v->via.bin.size;
            } else if (v->type == MSGPACK_OBJECT_STR) {
                c->in = v->via.str.ptr;
                c->in_len = v->via.str.size;
            } else if (!nil) {
                return shoal_task_error(ctx, "shoal.cmd: \"stdin\" must be bytes or nil");
            }
        } else if (s_key_is(k, "timeout")) {
            double t = 0;
            if (v->type == MSGPACK_OBJECT_FLOAT32 || v->type == MSGPACK_OBJECT_FLOAT64)
                t = v->via.f64;
            else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                t = (double)v->via.u64;
            else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
                t = (double)v->via.i64;
            else if (!nil)
                return shoal_task_error(ctx, "shoal.cmd: \"timeout\" must be a number "
                                        "of seconds or nil");
            if (isnan(t))
                return shoal_task_error(ctx, "shoal.cmd: \"timeout\" is not a number");
            c->timeout = t > 1e9 ? 1e9 : t;
        } else {
            int n = k->via.str.size > 64 ? 64 : (int)k->via.str.size;
            return shoal_task_error(ctx, "shoal.cmd: unknown key \"%.*s\"", n,
                                    k->via.str.ptr);
        }
    }
    if (!argv)
        return shoal_task_error(ctx, "shoal.cmd: \"argv\" is missing");
    if (s_strv(ctx, argv, "argv", 1, CMDTASK_MAX_ARGV, 0, &c->argv, &c->argv_buf) < 0)
        return -1;
    if (c->argv[0][0] == '\0')
        return shoal_task_error(ctx, "shoal.cmd: argv[0] is empty");
    return 0;
}

/* Keep fds 0-2 free of our pipe ends, so the child's dup2 onto 0-2 never
 * finds its source already sitting there (when this process runs with a
 * standard fd closed). */
static int s_above2(int fd)
{
    if (fd > 2)
        return fd;
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int e = errno;
    close(fd);
    errno = e;
    return nfd;
}

static int s_pipe(int p[2])
{
    if (pipe2(p, O_CLOEXEC) < 0)
        return -1;
    p[0] = s_above2(p[0]);
    p[1] = s_above2(p[1]);
    if (p[0] < 0 || p[1] < 0) {
        if (p[0] >= 0)
            close(p[0]);
        if (p[1] >= 0)
            close(p[1]);
        return -1;
    }
    return 0;
}

static void s_close(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static int s_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Read what is available on *fd into o, dropping what exceeds the limit.
 * Closes *fd at end of file or on error. */
static void s_drain(int *fd, s_out_t *o)
{
    char scratch[16384];

    /* Bounded rounds per wake-up so that a chatty command does not starve
     * the timeout and cancellation checks. */
    for (int round = 0; round < 64; round++) {
        char *dst;
        size_t room;
        if (o->len < CMDTASK_MAX_OUTPUT && o->len == o->cap) {
            size_t ncap = o->cap ? o->cap * 2 : 4096;
            if (ncap > CMDTASK_MAX_OUTPUT)
                ncap = CMDTASK_MAX_OUTPUT;
            char *np = realloc(o->p, ncap);
            if (np) {
                o->p = np;
                o->cap = ncap;
            }
        }
        if (o->len < o->cap) {
            dst = o->p + o->len;
            room = o->cap - o->len;
            /* A pipe holds far less than this; asking for more only makes
             * checkers (valgrind) validate a huge range on every read. */
            if (room > 256 * 1024)
                room = 256 * 1024;
        } else {
            /* At the limit (or out of memory): keep the pipe flowing so the
             * command does not block, but drop the bytes. */
            dst = scratch;
            room = sizeof scratch;
        }
        ssize_t n = read(*fd, dst, room);
        if (n > 0) {
            if (dst == scratch)
                o->truncated = 1;
            else
                o->len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        s_close(fd);   /* EOF or a read error */
        return;
    }
}

/* Write as much of stdin as the pipe takes now; close it when all is
 * written or the command stopped reading.  SIGPIPE is blocked in this thread
 * (see cmdtask_run); a write that raised it takes it off the pending set so
 * it is not delivered when the mask is restored.  A SIGPIPE that was already
 * pending before the write belongs to someone else and is left alone. */
static void s_feed(int *fd, const char *data, size_t len, size_t *off)
{
    while (*off < len) {
        sigset_t pending;
        int was_pending = 0;
        if (sigpending(&pending) == 0)
            was_pending = sigismember(&pending, SIGPIPE) == 1;
        size_t chunk = len - *off > 65536 ? 65536 : len - *off;
        ssize_t n = write(*fd, data + *off, chunk);
        if (n > 0) {
            *off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0 && errno == EPIPE && !was_pending) {
            sigset_t only;
            struct timespec zero = {0, 0};
            sigemptyset(&only);
            sigaddset(&only, SIGPIPE);
            while (sigtimedwait(&only, NULL, &zero) < 0 && errno == EINTR)
                ;
        }
        break;   /* the command closed its stdin, or another error */
    }
    s_close(fd);
}

/* Is `path` (taken relative to `cwd` when it is relative and cwd is set,
 * as the child will see it after its chdir) an executable regular file?
 * 0, or an errno value as execve would give it. */
static int s_check_exec(const char *path, const char *cwd)
{
    char buf[PATH_MAX];
    struct stat st;
    if (cwd && path[0] != '/') {
        int n = snprintf(buf, sizeof buf, "%s/%s", cwd, path);
        if (n < 0 || (size_t)n >= sizeof buf)
            return ENAMETOOLONG;
        path = buf;
    }
    if (stat(path, &st) < 0)
        return errno;
    if (!S_ISREG(st.st_mode) || access(path, X_OK) < 0)
        return EACCES;
    return 0;
}

/* Find the program the way execvp would (PATH of this process, an empty
 * entry meaning the current directory) and put its path in out.  Doing it
 * here rather than leaving it to posix_spawnp gives a reliable "not found"
 * also where the spawn cannot report exec failures (under valgrind the
 * vfork-style spawn becomes a fork, and a failed exec looks like exit 127).
 * 0, or an errno value. */
static int s_find_program(const char *name, const char *cwd, char *out, size_t cap)
{
    if (strchr(name, '/')) {
        if (strlen(name) >= cap)
            return ENAMETOOLONG;
        memcpy(out, name, strlen(name) + 1);
        return s_check_exec(name, cwd);
    }
    const char *path = getenv("PATH");
    if (!path)
        path = "/bin:/usr/bin";
    int best = ENOENT;
    for (const char *p = path;; ) {
        const char *colon = strchr(p, ':');
        size_t dl = colon ? (size_t)(colon - p) : strlen(p);
        int n = dl ? snprintf(out, cap, "%.*s/%s", (int)dl, p, name)
                   : snprintf(out, cap, "%s", name);
        if (n >= 0 && (size_t)n < cap) {
            int e = s_check_exec(out, cwd);
            if (e == 0)
                return 0;
            /* Like execvp: "permission denied" wins over "not found". */
            if (e == EACCES)
                best = EACCES;
        }
        if (!colon)
            break;
        p = colon + 1;
    }
    return best;
}

/* Start the command.  Returns the pid, or -1 with the task error set. */
static pid_t s_spawn(shoal_task_ctx_t *ctx, const s_cmd_t *c, int in_r, int out_w,
                     int err_w)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, all;
    pid_t pid = -1;
    int rc;

    if ((rc = posix_spawn_file_actions_init(&fa)) != 0)
        return shoal_task_error(ctx, "shoal.cmd: %s", strerror(rc));
    if ((rc = posix_spawnattr_init(&attr)) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return shoal_task_error(ctx, "shoal.cmd: %s", strerror(rc));
    }
    sigemptyset(&none);
    sigfillset(&all);
    /* Own process group (for killing what it starts), a clean signal mask
     * and default dispositions: executor threads may block signals and the
     * host may ignore SIGPIPE, and a command must not inherit either. */
    rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                             POSIX_SPAWN_SETSIGDEF);
    if (!rc)
        rc = posix_spawnattr_setpgroup(&attr, 0);
    if (!rc)
        rc = posix_spawnattr_setsigmask(&attr, &none);
    if (!rc)
        rc = posix_spawnattr_setsigdefault(&attr, &all);
    if (!rc)
        rc = in_r >= 0 ? posix_spawn_file_actions_adddup2(&fa, in_r, 0)
                       : posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (!rc)
        rc = posix_spawn_file_actions_adddup2(&fa, out_w, 1);
    if (!rc)
        rc = posix_spawn_file_actions_adddup2(&fa, err_w, 2);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    /* Whatever the host left open without O_CLOEXEC stays with the host. */
    if (!rc)
        rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
#endif
    if (!rc && c->cwd)
        rc = posix_spawn_file_actions_addchdir_np(&fa, c->cwd);
    if (rc) {
        shoal_task_error(ctx, "shoal.cmd: cannot set up the command: %s", strerror(rc));
        goto out;
    }

    /* Check the directory and find the program first, for clear errors;
     * the spawn itself still reports what changes in between. */
    char prog[PATH_MAX], ebuf[128];
    struct stat st;
    int bad_dir = 0;
    if (c->cwd && stat(c->cwd, &st) < 0)
        bad_dir = errno;
    else if (c->cwd && !S_ISDIR(st.st_mode))
        bad_dir = ENOTDIR;
    if (bad_dir) {
        int e = bad_dir;
        shoal_task_error(ctx, "cannot run '%.200s': cannot change to directory '%.200s': %s",
                         c->argv[0], c->cwd, strerror_r(e, ebuf, sizeof ebuf));
        goto out;
    }
    rc = s_find_program(c->argv[0], c->cwd, prog, sizeof prog);
    if (!rc)
        rc = posix_spawn(&pid, prog, &fa, &attr, c->argv, c->envp ? c->envp : environ);
    if (rc) {
        pid = -1;
        shoal_task_error(ctx, "cannot run '%.400s': %s", c->argv[0],
                         strerror_r(rc, ebuf, sizeof ebuf));
    }
out:
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return pid;
}

static int s_pack_bin(msgpack_packer *pk, const char *key, const char *p, size_t n)
{
    size_t kl = strlen(key);
    if (msgpack_pack_str(pk, kl) < 0 || msgpack_pack_str_body(pk, key, kl) < 0 ||
        msgpack_pack_bin(pk, n) < 0)
        return -1;
    return n ? msgpack_pack_bin_body(pk, p, n) : 0;
}

static int s_pack_int(msgpack_packer *pk, const char *key, int v)
{
    size_t kl = strlen(key);
    if (msgpack_pack_str(pk, kl) < 0 || msgpack_pack_str_body(pk, key, kl) < 0)
        return -1;
    return msgpack_pack_int(pk, v);
}

/* Add the truncation note to stderr (beyond the limit: it is ours). */
static void s_note_truncation(s_out_t *e)
{
    size_t nl = strlen(S_TRUNC_NOTE);
    int lead = e->len > 0 && e->p[e->len - 1] != '\n';
    size_t need = e->len + (size_t)lead + nl;
    if (need > e->cap) {
        char *np = realloc(e->p, need);
        if (!np)
            return;
        e->p = np;
        e->cap = need;
    }
    if (lead)
        e->p[e->len++] = '\n';
    memcpy(e->p + e->len, S_TRUNC_NOTE, nl);
    e->len += nl;
}

int cmdtask_run(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    s_cmd_t c = {0};
    s_out_t o = {0}, e = {0};
    int in_p[2] = {-1, -1}, out_p[2] = {-1, -1}, err_p[2] = {-1, -1};
    int rc = -1, status = 0, reaped = 0, timed_out = 0, cancelled = 0;
    int stage = 0;               /* 0 running, 1 SIGTERM sent, 2 SIGKILL sent */
    double stage_at = 0;
    size_t in_off = 0;
    pid_t pid = -1;
    sigset_t pipe_set, old_mask;
    int masked = 0;

    if (s_parse(ctx, args, &c) < 0)
        goto done;
    if ((c.has_in && s_pipe(in_p) < 0) || s_pipe(out_p) < 0 || s_pipe(err_p) < 0) {
        shoal_task_error(ctx, "shoal.cmd: cannot create pipes: %s", strerror(errno));
        goto done;
    }
    pid = s_spawn(ctx, &c, in_p[0], out_p[1], err_p[1]);
    s_close(&in_p[0]);
    s_close(&out_p[1]);
    s_close(&err_p[1]);
    if (pid < 0)
        goto done;

    /* Past this point the child exists: every path goes through the reaping
     * below. */
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    masked = pthread_sigmask(SIG_BLOCK, &pipe_set, &old_mask) == 0;
    if ((in_p[1] >= 0 && s_nonblock(in_p[1]) < 0) || s_nonblock(out_p[0]) < 0 ||
        s_nonblock(err_p[0]) < 0) {
        /* Cannot happen with valid fds; end the command rather than block. */
        kill(-pid, SIGKILL);
        stage = 2;
        stage_at = s_now();
    }
    if (in_p[1] >= 0 && c.in_len == 0)
        s_close(&in_p[1]);

    double start = s_now();
    double deadline = c.timeout > 0 ? start + c.timeout : 0;
    int backoff_ms = 1;
    for (;;) {
        struct pollfd pf[3];
        int nfds = 0, ii = -1, io = -1, ie = -1;
        if (in_p[1] >= 0) {
            ii = nfds;
            pf[nfds++] = (struct pollfd){.fd = in_p[1], .events = POLLOUT};
        }
        if (out_p[0] >= 0) {
            io = nfds;
            pf[nfds++] = (struct pollfd){.fd = out_p[0], .events = POLLIN};
        }
        if (err_p[0] >= 0) {
            ie = nfds;
            pf[nfds++] = (struct pollfd){.fd = err_p[0], .events = POLLIN};
        }
        if (reaped && out_p[0] < 0 && err_p[0] < 0)
            break;

        double now = s_now();
        double wait = S_SLICE_MS / 1000.0;
        if (stage == 0 && deadline > 0 && deadline - now < wait)
            wait = deadline - now;
        if (stage == 1 && stage_at + S_KILL_GRACE - now < wait)
            wait = stage_at + S_KILL_GRACE - now;
        if (out_p[0] < 0 && err_p[0] < 0) {
            /* Only waiting for the exit, which closing the pipes precedes by
             * a moment: poll for it quickly, then back off. */
            if (wait > backoff_ms / 1000.0)
                wait = backoff_ms / 1000.0;
            if (backoff_ms < S_SLICE_MS)
                backoff_ms *= 2;
        }
        int ms = wait > 0 ? (int)ceil(wait * 1000.0) : 0;
        if (poll(pf, (nfds_t)nfds, ms) > 0) {
            if (ii >= 0 && pf[ii].revents)
                s_feed(&in_p[1], c.in, c.in_len, &in_off);
            if (io >= 0 && pf[io].revents)
                s_drain(&out_p[0], &o);
            if (ie >= 0 && pf[ie].revents)
                s_drain(&err_p[0], &e);
        }

        if (!reaped) {
            pid_t w = waitpid(pid, &status, WNOHANG);
            if (w == pid) {
                reaped = 1;
            } else if (w < 0 && errno == ECHILD) {
                /* Someone else in this process reaped it (a waitpid(-1)
                 * elsewhere): the status is lost. */
                reaped = 1;
                status = -1;
            }
        }
        if (reaped && out_p[0] < 0 && err_p[0] < 0)
            break;   /* finished: do not call a timeout on a finished command */

        now = s_now();
        if (stage == 0) {
            if (shoal_task_cancelled(ctx))
                cancelled = 1;
            else if (deadline > 0 && now >= deadline)
                timed_out = 1;
            if (cancelled || timed_out) {
                kill(-pid, SIGTERM);
                stage = 1;
                stage_at = now;
            }
        } else if (stage == 1 && now >= stage_at + S_KILL_GRACE) {
            kill(-pid, SIGKILL);
            stage = 2;
            stage_at = now;
        } else if (stage == 2 && reaped && now >= stage_at + S_PIPE_GRACE) {
            break;   /* something outside the group holds the pipes open */
        }
    }
    if (!reaped) {
        while (waitpid(pid, &status, 0) < 0) {
            if (errno != EINTR) {
                status = -1;
                break;
            }
        }
    }

    if (cancelled) {
        shoal_task_error(ctx, "cancelled");
        goto done;
    }
    if (o.truncated || e.truncated)
        s_note_truncation(&e);

    int exit_code = -1, sig = 0;
    if (status != -1 && WIFEXITED(status))
        exit_code = WEXITSTATUS(status);
    else if (status != -1 && WIFSIGNALED(status))
        sig = WTERMSIG(status);
    if (msgpack_pack_map(out, 5) < 0 || s_pack_int(out, "exit", exit_code) < 0 ||
        s_pack_int(out, "signal", sig) < 0 || msgpack_pack_str(out, 9) < 0 ||
        msgpack_pack_str_body(out, "timed_out", 9) < 0 ||
        (timed_out ? msgpack_pack_true(out) : msgpack_pack_false(out)) < 0 ||
        s_pack_bin(out, "stdout", o.p, o.len) < 0 ||
        s_pack_bin(out, "stderr", e.p, e.len) < 0) {
        shoal_task_error(ctx, "shoal.cmd: out of memory packing the result");
        goto done;
    }
    rc = 0;

done:
    if (masked)
        pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    s_close(&in_p[0]);
    s_close(&in_p[1]);
    s_close(&out_p[0]);
    s_close(&out_p[1]);
    s_close(&err_p[0]);
    s_close(&err_p[1]);
    free(o.p);
    free(e.p);
    s_cmd_free(&c);
    return rc;
}
