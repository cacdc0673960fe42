/*
 * batch.c - batch system commands (see batch.h).
 */
#define _GNU_SOURCE
#include "batch.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

extern char **environ;

/* Ids per command line: keeps scancel/squeue argument lists modest. */
#define IDS_PER_CALL 100

static void s_err(char *err, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void s_err(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;

    if (!err || !cap)
        return;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

/* argv[0] as execvp would find it, resolved here: the child of a fork in a
 * threaded process must only make async-signal-safe calls. */
static int s_find_program(const char *name, char *out, size_t cap)
{
    const char *path = getenv("PATH"), *p, *end;

    if (strchr(name, '/'))
        return util_fmt(out, cap, "%s", name) == 0 && access(out, X_OK) == 0 ? 0 : -1;
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    for (p = path; *p; p = *end ? end + 1 : end) {
        end = strchr(p, ':');
        if (!end)
            end = p + strlen(p);
        if (end > p && util_fmt(out, cap, "%.*s/%s", (int)(end - p), p, name) == 0 &&
            access(out, X_OK) == 0)
            return 0;
    }
    return -1;
}

static int s_pending(const sigset_t *set)
{
    sigset_t pend;
    int s;

    if (!set || sigpending(&pend) < 0)
        return 0;
    for (s = 1; s < NSIG; s++)
        if (sigismember(set, s) == 1 && sigismember(&pend, s) == 1)
            return 1;
    return 0;
}

int batch_run(const char *const argv[], const char *cwd, double timeout,
              const sigset_t *interrupt, batch_out_t *out)
{
    char path[PATH_MAX];
    int fds[2] = {-1, -1}, devnull = -1, st = 0, e, killed = 0;
    double deadline = util_now() + timeout;
    pid_t pid;

    out->len = 0;
    out->text[0] = '\0';
    out->status = 0;
    if (s_find_program(argv[0], path, sizeof(path)) < 0) {
        errno = ENOENT;
        return -1;
    }
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -1;
    if ((devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0)
        goto fail;
    pid = fork();
    if (pid < 0)
        goto fail;
    if (pid == 0) {
        struct sigaction sa;
        sigset_t none;

        setpgid(0, 0);
        if (dup2(devnull, 0) < 0 || dup2(fds[1], 1) < 0 || dup2(fds[1], 2) < 0)
            _exit(126);
        if (cwd && chdir(cwd) < 0)
            _exit(126);
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = SIG_DFL;
        sigaction(SIGPIPE, &sa, NULL);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execve(path, (char *const *)argv, environ);
        _exit(127);
    }
    setpgid(pid, pid);
    close(fds[1]);
    fds[1] = -1;
    close(devnull);
    devnull = -1;

    /* Read to EOF, keeping the first BATCH_OUT_MAX - 1 bytes. */
    for (;;) {
        struct pollfd pfd = {fds[0], POLLIN, 0};
        char buf[4096];
        ssize_t n;
        int left_ms = (int)((deadline - util_now()) * 1000);

        if (left_ms <= 0 || s_pending(interrupt)) {
            killed = left_ms <= 0 ? ETIMEDOUT : EINTR;
            break;
        }
        if (poll(&pfd, 1, left_ms < 100 ? left_ms : 100) < 0 && errno != EINTR) {
            killed = errno;
            break;
        }
        if (!(pfd.revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        n = read(fds[0], buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (out->len < BATCH_OUT_MAX - 1) {
            size_t take = (size_t)n;
            if (take > BATCH_OUT_MAX - 1 - out->len)
                take = BATCH_OUT_MAX - 1 - out->len;
            memcpy(out->text + out->len, buf, take);
            out->len += take;
        }
    }
    out->text[out->len] = '\0';
    close(fds[0]);
    fds[0] = -1;

    /* The output is closed; the command itself gets the rest of its time. */
    while (!killed) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR) {
            killed = errno;
            break;
        }
        if (util_now() >= deadline)
            killed = ETIMEDOUT;
        else if (s_pending(interrupt))
            killed = EINTR;
        else
            usleep(5000);
    }
    if (killed) {
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        errno = killed;
        return -1;
    }
    out->status = st;
    return 0;

fail:
    e = errno;
    if (fds[0] >= 0)
        close(fds[0]);
    if (fds[1] >= 0)
        close(fds[1]);
    if (devnull >= 0)
        close(devnull);
    errno = e;
    return -1;
}

int batch_have_commands(jq_system_t sys, char *missing, size_t cap)
{
    static const char *const slurm[] = {"sbatch", "squeue", "scancel", NULL};
    static const char *const pbs[] = {"qsub", "qstat", "qdel", NULL};
    const char *const *c = sys == JQ_PBS ? pbs : slurm;
    char path[PATH_MAX];

    for (; *c; c++) {
        if (s_find_program(*c, path, sizeof(path)) < 0) {
            util_fmt(missing, cap, "%s", *c);
            return -1;
        }
    }
    return 0;
}

/* ---- parsing ------------------------------------------------------------- */

int batch_valid_id(const char *s)
{
    size_t n = s ? strlen(s) : 0, i;

    if (n == 0 || n >= BATCH_ID_MAX)
        return 0;
    if (!((s[0] >= '0' && s[0] <= '9') || (s[0] >= 'a' && s[0] <= 'z') ||
          (s[0] >= 'A' && s[0] <= 'Z')))
        return 0;
    for (i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              strchr("._-[]@", c)))
            return 0;
    }
    return 1;
}

/* The output, trimmed and shortened, for error messages. */
static const char *s_show_out(const batch_out_t *o, char *buf, size_t cap)
{
    size_t i, n = 0;
    const char *t = o->text;

    while (*t == ' ' || *t == '\n' || *t == '\t')
        t++;
    for (i = 0; t[i] && n + 1 < cap; i++)
        buf[n++] = (t[i] == '\n' || t[i] == '\r' || t[i] == '\t') ? ' ' : t[i];
    while (n > 0 && buf[n - 1] == ' ')
        n--;
    buf[n] = '\0';
    if (!n)
        util_fmt(buf, cap, "no output");
    return buf;
}

static const char *s_status_text(int st, char *buf, size_t cap)
{
    if (WIFEXITED(st))
        util_fmt(buf, cap, "exit status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        util_fmt(buf, cap, "signal %d", WTERMSIG(st));
    else
        util_fmt(buf, cap, "status %d", st);
    return buf;
}

static int s_ok(const batch_out_t *o)
{
    return WIFEXITED(o->status) && WEXITSTATUS(o->status) == 0;
}

static void s_run_failed(const char *cmd, char *err, size_t errcap)
{
    if (errno == ENOENT)
        s_err(err, errcap, "%s: command not found (is the batch system's client "
              "installed and in PATH?)", cmd);
    else if (errno == ETIMEDOUT)
        s_err(err, errcap, "%s did not finish within %.0f s", cmd, BATCH_TIMEOUT);
    else if (errno == EINTR)
        s_err(err, errcap, "%s interrupted", cmd);
    else
        s_err(err, errcap, "cannot run %s: %s", cmd, strerror(errno));
}

/* The job id in sbatch's output: "Submitted batch job N" (possibly with
 * " on cluster C"), or N alone / "N;cluster" (--parsable). */
static int s_parse_sbatch(const char *text, char *id, size_t cap)
{
    static const char key[] = "Submitted batch job ";
    const char *p = strstr(text, key);
    size_t n = 0;
    int parsable = 0;

    if (p) {
        p += sizeof(key) - 1;
    } else {
        p = text;
        while (*p == ' ' || *p == '\n')
            p++;
        parsable = 1;
    }
    while (p[n] >= '0' && p[n] <= '9')
        n++;
    if (n == 0 || n >= cap || n >= BATCH_ID_MAX)
        return -1;
    if (parsable && p[n] != '\0' && p[n] != '\n' && p[n] != ' ' && p[n] != ';')
        return -1;
    memcpy(id, p, n);
    id[n] = '\0';
    return 0;
}

/* qsub prints the job id ("1234.server", or "1234" from Slurm's wrapper) on
 * its last non-empty line. */
static int s_parse_qsub(const char *text, char *id, size_t cap)
{
    const char *end = text + strlen(text), *b;
    size_t n;

    while (end > text && (end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\r'))
        end--;
    b = end;
    while (b > text && b[-1] != '\n')
        b--;
    while (b < end && *b == ' ')
        b++;
    n = (size_t)(end - b);
    if (n == 0 || n >= cap || n >= BATCH_ID_MAX)
        return -1;
    memcpy(id, b, n);
    id[n] = '\0';
    return batch_valid_id(id) ? 0 : -1;
}

int batch_submit(jq_system_t sys, const char *script, const char *cwd,
                 const sigset_t *interrupt, char *id, size_t idcap, char *err,
                 size_t errcap)
{
    const char *cmd = sys == JQ_PBS ? "qsub" : "sbatch";
    const char *argv[] = {cmd, script, NULL};
    batch_out_t *o = malloc(sizeof(*o));
    char show[512], stb[64];
    int rc = -1;

    if (!o) {
        s_err(err, errcap, "out of memory");
        return -1;
    }
    if (batch_run(argv, cwd, BATCH_TIMEOUT, interrupt, o) < 0) {
        s_run_failed(cmd, err, errcap);
        goto out;
    }
    if (!s_ok(o)) {
        s_err(err, errcap, "%s failed (%s): %s", cmd,
              s_status_text(o->status, stb, sizeof(stb)), s_show_out(o, show, sizeof(show)));
        goto out;
    }
    if ((sys == JQ_PBS ? s_parse_qsub : s_parse_sbatch)(o->text, id, idcap) < 0) {
        s_err(err, errcap, "cannot find the job id in the output of %s: %s", cmd,
              s_show_out(o, show, sizeof(show)));
        goto out;
    }
    rc = 0;
out:
    free(o);
    return rc;
}

/* Output that says a job id is unknown (the job left the queue). */
static int s_says_unknown(const char *text)
{
    return strcasestr(text, "Invalid job id") || strcasestr(text, "Unknown Job Id") ||
           strcasestr(text, "does not exist");
}

int batch_cancel(jq_system_t sys, const char *const ids[], size_t n,
                 const sigset_t *interrupt, char *err, size_t errcap)
{
    const char *cmd = sys == JQ_PBS ? "qdel" : "scancel";
    const char *argv[IDS_PER_CALL + 2];
    batch_out_t *o = malloc(sizeof(*o));
    char show[512], stb[64];
    size_t i = 0, k;
    int rc = 0;

    if (!o) {
        s_err(err, errcap, "out of memory");
        return -1;
    }
    while (i < n) {
        argv[0] = cmd;
        for (k = 0; k < IDS_PER_CALL && i < n; k++, i++)
            argv[k + 1] = ids[i];
        argv[k + 1] = NULL;
        if (batch_run(argv, NULL, BATCH_TIMEOUT, interrupt, o) < 0) {
            s_run_failed(cmd, err, errcap);
            rc = -1;
            continue;
        }
        if (!s_ok(o) && !s_says_unknown(o->text)) {
            s_err(err, errcap, "%s failed (%s): %s", cmd,
                  s_status_text(o->status, stb, sizeof(stb)),
                  s_show_out(o, show, sizeof(show)));
            rc = -1;
        }
    }
    free(o);
    return rc;
}

/* Split the next line off *p (modified in place); NULL at the end. */
static char *s_next_line(char **p)
{
    char *l = *p, *nl;

    if (!*l)
        return NULL;
    nl = strchr(l, '\n');
    if (nl) {
        *nl = '\0';
        *p = nl + 1;
    } else {
        *p = l + strlen(l);
    }
    return l;
}

/* Up to `max` white-space separated fields of a line. */
static size_t s_fields(char *line, char **f, size_t max)
{
    size_t n = 0;
    char *p = line;

    while (n < max) {
        while (*p == ' ' || *p == '\t' || *p == '\r')
            p++;
        if (!*p)
            break;
        f[n++] = p;
        while (*p && *p != ' ' && *p != '\t' && *p != '\r')
            p++;
        if (*p)
            *p++ = '\0';
    }
    return n;
}

/* Does the id printed by qstat (possibly "1234.serv*", shortened) name our
 * job `id`?  PBS ids are unique by their number on one server. */
static int s_pbs_same(const char *shown, const char *id)
{
    size_t a = strcspn(shown, ".*"), b = strcspn(id, ".");

    if (!strcmp(shown, id))
        return 1;
    return a == b && a > 0 && !strncmp(shown, id, a);
}

static int s_query_chunk(jq_system_t sys, const char *const ids[], size_t n,
                         const sigset_t *interrupt, char (*states)[BATCH_STATE_MAX],
                         batch_out_t *o, char *err, size_t errcap)
{
    const char *argv[IDS_PER_CALL + 8];
    char joined[IDS_PER_CALL * BATCH_ID_MAX + 1], show[512], stb[64];
    char (*got)[BATCH_STATE_MAX];
    char *p, *line, *f[8];
    const char *cmd;
    size_t i, k = 0, len = 0;

    if (sys == JQ_SLURM) {
        cmd = "squeue";
        for (i = 0; i < n; i++) {
            int w = snprintf(joined + len, sizeof(joined) - len, "%s%s", i ? "," : "",
                             ids[i]);
            if (w < 0 || (size_t)w >= sizeof(joined) - len)
                return -1;
            len += (size_t)w;
        }
        argv[k++] = cmd;
        argv[k++] = "-h";
        argv[k++] = "-o";
        argv[k++] = "%i %T";
        argv[k++] = "-j";
        argv[k++] = joined;
    } else {
        cmd = "qstat";
        argv[k++] = cmd;
        for (i = 0; i < n; i++)
            argv[k++] = ids[i];
    }
    argv[k] = NULL;
    if (batch_run(argv, NULL, BATCH_TIMEOUT, interrupt, o) < 0) {
        s_run_failed(cmd, err, errcap);
        return -1;
    }
    if (!s_ok(o) && !s_says_unknown(o->text)) {
        s_err(err, errcap, "%s failed (%s): %s", cmd,
              s_status_text(o->status, stb, sizeof(stb)), s_show_out(o, show, sizeof(show)));
        return -1;
    }
    if (!(got = calloc(n, sizeof(*got)))) {
        s_err(err, errcap, "out of memory");
        return -1;
    }
    p = o->text;
    while ((line = s_next_line(&p))) {
        size_t nf = s_fields(line, f, 8);
        const char *st;

        if (sys == JQ_SLURM) {
            /* "ID STATE" */
            if (nf != 2)
                continue;
            st = f[1];
        } else {
            /* "ID NAME USER TIME S QUEUE", after two header lines. */
            if (nf < 6 || !strcmp(f[0], "Job") || f[0][0] == '-')
                continue;
            st = f[4];
        }
        for (i = 0; i < n; i++) {
            if (sys == JQ_SLURM ? !strcmp(f[0], ids[i]) : s_pbs_same(f[0], ids[i])) {
                util_fmt(got[i], BATCH_STATE_MAX, "%.*s", BATCH_STATE_MAX - 1, st);
                break;
            }
        }
    }
    /* Everything not listed has left the queue. */
    memcpy(states, got, n * sizeof(*got));
    free(got);
    return 0;
}

int batch_query(jq_system_t sys, const char *const ids[], size_t n,
                const sigset_t *interrupt, char (*states)[BATCH_STATE_MAX], char *err,
                size_t errcap)
{
    batch_out_t *o;
    size_t i;
    int rc = 0;

    if (n == 0)
        return 0;
    if (!(o = malloc(sizeof(*o)))) {
        s_err(err, errcap, "out of memory");
        return -1;
    }
    for (i = 0; i < n && rc == 0; i += IDS_PER_CALL) {
        size_t k = n - i < IDS_PER_CALL ? n - i : IDS_PER_CALL;
        rc = s_query_chunk(sys, ids + i, k, interrupt, states + i, o, err, errcap);
    }
    free(o);
    return rc;
}

int batch_state_ended(jq_system_t sys, const char *state)
{
    static const char *const slurm_done[] = {
        "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
        "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "REVOKED", "SPECIAL_EXIT", NULL,
    };
    size_t i;

    if (!state[0])
        return 1;
    if (sys == JQ_PBS)
        return !strcmp(state, "C") || !strcmp(state, "F") || !strcmp(state, "X");
    for (i = 0; slurm_done[i]; i++)
        if (!strcmp(state, slurm_done[i]))
            return 1;
    return 0;
}

int batch_state_running(jq_system_t sys, const char *state)
{
    if (sys == JQ_PBS)
        return !strcmp(state, "R") || !strcmp(state, "E");
    return !strcmp(state, "RUNNING") || !strcmp(state, "COMPLETING");
}
