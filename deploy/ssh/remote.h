/*
 * remote.h - one `ssh HOST COMMAND` child of shoal-ssh, in a libev loop.
 *
 * The ssh client is started with fork+exec: its stdin is a pipe whose write
 * end only we hold, its stdout and stderr one pipe that we read line by
 * line.  Closing the stdin pipe (remote_close_stdin) makes ssh send EOF on
 * the session, which the remote wrapper (see main.c) takes as the order to
 * stop the remote process; that is also what happens when this process dies,
 * however it dies, because the pipe's write end closes with it.
 *
 * The ssh client runs in its own process group (a Ctrl-C on the terminal
 * reaches only shoal-ssh, which then stops the remote processes in order)
 * and gets SIGTERM if shoal-ssh dies (PR_SET_PDEATHSIG).
 *
 * Callbacks: `line` for each line of output (without its newline, control
 * characters replaced by '?', at most REMOTE_LINE_MAX bytes: longer lines
 * arrive in pieces), then `exited` once, with the raw wait status, after the
 * output has been read to its end.
 */
#ifndef SHOAL_REMOTE_H
#define SHOAL_REMOTE_H

#include <stddef.h>
#include <sys/types.h>

#include <ev.h>

#define REMOTE_LINE_MAX 4096

typedef struct remote remote_t;

typedef struct remote_ops {
    void (*line)(remote_t *r, const char *line, size_t len, void *arg);
    void (*exited)(remote_t *r, int status, void *arg);
} remote_ops_t;

/* Start argv (argv[0] searched in PATH) under `loop`, which must be the
 * default loop (child watchers need it).  `label` (copied) names the remote
 * in messages.  NULL with errno on failure (nothing left running). */
remote_t *remote_start(struct ev_loop *loop, const char *label, char *const argv[],
                       const remote_ops_t *ops, void *arg);

/* Close our end of the ssh client's stdin (idempotent). */
void remote_close_stdin(remote_t *r);

/* Send sig to the ssh client if it is still running. */
void remote_kill(remote_t *r, int sig);

/* Non-zero until `exited` has been called. */
int remote_running(const remote_t *r);

pid_t remote_pid(const remote_t *r);
const char *remote_label(const remote_t *r);
/* The last non-empty line of output (for error messages); "" if none. */
const char *remote_last_line(const remote_t *r);
/* Seconds since the remote was started. */
double remote_age(const remote_t *r);

/* Stop watching and free.  A still running ssh client is sent SIGKILL and
 * reaped.  Accepts NULL. */
void remote_destroy(remote_t *r);

#endif
