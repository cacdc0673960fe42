/*
 * remote.c - an ssh client child with its output read line by line
 * (see remote.h).
 */
#define _GNU_SOURCE
#include "remote.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define S_LABEL_MAX 256
#define S_LAST_MAX 512
/* Bytes read per callback: bounded so that one chatty host cannot starve
 * the others; the io watcher fires again while data is left. */
#define S_READ_CHUNK 65536

struct remote {
    struct ev_loop *loop;
    remote_ops_t ops;
    void *arg;
    char label[S_LABEL_MAX];
    pid_t pid;
    int in_fd;          /* write end of the client's stdin, -1 once closed */
    int out_fd;         /* read end of its stdout+stderr, -1 once at EOF */
    ev_io io;
    ev_child child;
    int exited;         /* the client has been reaped */
    int reported;       /* `exited` callback made */
    int status;
    double start;
    size_t len;         /* bytes of an unfinished line in buf */
    char buf[REMOTE_LINE_MAX + 1];
    char last[S_LAST_MAX];
};

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Hand one line (buf[0..n), n <= REMOTE_LINE_MAX) to the callback.  Control
 * characters are replaced so that a remote host cannot drive our terminal. */
static void s_emit(remote_t *r, char *line, size_t n)
{
    while (n > 0 && line[n - 1] == '\r')
        n--;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)line[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            line[i] = '?';
    }
    line[n] = '\0';
    if (n > 0) {
        size_t k = n < S_LAST_MAX - 1 ? n : S_LAST_MAX - 1;
        memcpy(r->last, line, k);
        r->last[k] = '\0';
    }
    if (r->ops.line)
        r->ops.line(r, line, n, r->arg);
}

/* Split what is in buf into lines; keep an unfinished tail. */
static void s_split(remote_t *r)
{
    size_t start = 0;

    for (size_t i = 0; i < r->len; i++) {
        if (r->buf[i] == '\n') {
            s_emit(r, r->buf + start, i - start);
            start = i + 1;
        }
    }
    if (start > 0) {
        memmove(r->buf, r->buf + start, r->len - start);
        r->len -= start;
    }
    /* A line longer than the buffer goes out in pieces. */
    if (r->len == REMOTE_LINE_MAX) {
        s_emit(r, r->buf, r->len);
        r->len = 0;
    }
}

static void s_report(remote_t *r)
{
    if (r->reported || !r->exited || r->out_fd >= 0)
        return;
    r->reported = 1;
    if (r->ops.exited)
        r->ops.exited(r, r->status, r->arg);
}

static void s_close_out(remote_t *r)
{
    if (r->out_fd < 0)
        return;
    ev_io_stop(r->loop, &r->io);
    close(r->out_fd);
    r->out_fd = -1;
    if (r->len > 0) {
        s_emit(r, r->buf, r->len);
        r->len = 0;
    }
}

/* Read up to `budget` bytes.  Returns 1 at EOF or on a read error, else 0. */
static int s_read(remote_t *r, size_t budget)
{
    while (budget > 0) {
        size_t room = REMOTE_LINE_MAX - r->len;
        ssize_t n = read(r->out_fd, r->buf + r->len, room < budget ? room : budget);

        if (n > 0) {
            r->len += (size_t)n;
            budget -= (size_t)n;
            s_split(r);
            continue;
        }
        if (n == 0)
            return 1;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        return 1;
    }
    return 0;
}

static void s_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    remote_t *r = w->data;

    (void)loop;
    (void)revents;
    if (s_read(r, S_READ_CHUNK)) {
        s_close_out(r);
        s_report(r);
    }
}

static void s_child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
    remote_t *r = w->data;

    (void)revents;
    ev_child_stop(loop, w);
    r->exited = 1;
    r->status = w->rstatus;
    /* Everything the client wrote is in the pipe by now.  Read it to the end
     * but no further: a process it left behind (an ssh ControlPersist
     * master, say) could hold the pipe open for ever. */
    if (r->out_fd >= 0) {
        for (int i = 0; i < 64; i++)
            if (s_read(r, S_READ_CHUNK))
                break;
        s_close_out(r);
    }
    if (r->in_fd >= 0) {
        close(r->in_fd);
        r->in_fd = -1;
    }
    s_report(r);
}

/* In the child, between fork and exec. */
static void __attribute__((noreturn))
s_child(char *const argv[], int in_fd, int out_fd, pid_t parent)
{
    sigset_t none;
    char msg[512];
    int n;

    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Ignored signals stay ignored across exec: give ssh the defaults. */
    signal(SIGPIPE, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
        _exit(255);
    if (dup2(in_fd, STDIN_FILENO) < 0 || dup2(out_fd, STDOUT_FILENO) < 0 ||
        dup2(out_fd, STDERR_FILENO) < 0)
        _exit(255);
    execvp(argv[0], argv);
    n = snprintf(msg, sizeof msg, "cannot run %s: %s\n", argv[0], strerror(errno));
    if (n > 0)
        (void)!write(STDERR_FILENO, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    /* 255, like ssh's own failures: the remote command never ran. */
    _exit(255);
}

remote_t *remote_start(struct ev_loop *loop, const char *label, char *const argv[],
                       const remote_ops_t *ops, void *arg)
{
    int in[2] = {-1, -1}, out[2] = {-1, -1}, e;
    pid_t parent = getpid();
    remote_t *r;

    if (!loop || !label || !argv || !argv[0] || !ops) {
        errno = EINVAL;
        return NULL;
    }
    r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->loop = loop;
    r->ops = *ops;
    r->arg = arg;
    snprintf(r->label, sizeof r->label, "%s", label);
    r->in_fd = r->out_fd = -1;
    /* O_CLOEXEC: each ssh child must hold only its own pipes, or closing
     * one host's stdin would not reach it while a sibling keeps it open. */
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0)
        goto error;
    r->start = s_now();
    r->pid = fork();
    if (r->pid < 0)
        goto error;
    if (r->pid == 0)
        s_child(argv, in[0], out[1], parent);
    setpgid(r->pid, r->pid);   /* also done by the child; either may win */
    close(in[0]);
    close(out[1]);
    r->in_fd = in[1];
    r->out_fd = out[0];
    fcntl(r->out_fd, F_SETFL, fcntl(r->out_fd, F_GETFL) | O_NONBLOCK);
    ev_io_init(&r->io, s_io_cb, r->out_fd, EV_READ);
    r->io.data = r;
    ev_io_start(loop, &r->io);
    ev_child_init(&r->child, s_child_cb, r->pid, 0);
    r->child.data = r;
    ev_child_start(loop, &r->child);
    return r;

error:
    e = errno;
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0)
            close(in[i]);
        if (out[i] >= 0)
            close(out[i]);
    }
    free(r);
    errno = e;
    return NULL;
}

void remote_close_stdin(remote_t *r)
{
    if (r && r->in_fd >= 0) {
        close(r->in_fd);
        r->in_fd = -1;
    }
}

void remote_kill(remote_t *r, int sig)
{
    if (r && !r->exited && r->pid > 0)
        kill(r->pid, sig);
}

int remote_running(const remote_t *r)
{
    return r && !r->reported;
}

pid_t remote_pid(const remote_t *r)
{
    return r ? r->pid : -1;
}

const char *remote_label(const remote_t *r)
{
    return r ? r->label : "";
}

const char *remote_last_line(const remote_t *r)
{
    return r ? r->last : "";
}

double remote_age(const remote_t *r)
{
    return r ? s_now() - r->start : 0;
}

void remote_destroy(remote_t *r)
{
    if (!r)
        return;
    if (!r->exited && r->pid > 0) {
        ev_child_stop(r->loop, &r->child);
        kill(r->pid, SIGKILL);
        while (waitpid(r->pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    if (r->out_fd >= 0) {
        ev_io_stop(r->loop, &r->io);
        close(r->out_fd);
    }
    if (r->in_fd >= 0)
        close(r->in_fd);
    free(r);
}
