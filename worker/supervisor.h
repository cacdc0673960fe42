/*
 * supervisor.h - `shoal-worker --nworkers M` (M > 1): the parent process
 * starts M worker processes and restarts one that crashes.
 *
 * Each child is this same executable run again (fork, then exec of the
 * path /proc/self/exe links to) with the parent's arguments and a hidden first option,
 * SUPERVISOR_CHILD_OPT NAME-i, that makes it a single worker named NAME-i.
 * Exec gives every child a fresh process image: no event loop, signal
 * handlers or library state inherited from the supervisor.
 */
#ifndef SHOAL_WORKER_SUPERVISOR_H
#define SHOAL_WORKER_SUPERVISOR_H

/* The hidden option that marks a supervised child (see main.c). */
#define SUPERVISOR_CHILD_OPT "--supervised-name"

/* Restart backoff: first delay, cap, and the running time after which a
 * child counts as healthy again (its next crash restarts at the first delay). */
#define SUPERVISOR_BACKOFF_MIN 0.5
#define SUPERVISOR_BACKOFF_MAX 10.0
#define SUPERVISOR_HEALTHY_AFTER 60.0
/* After SIGINT/SIGTERM, children still alive after this long get SIGKILL. */
#define SUPERVISOR_KILL_AFTER 10.0

typedef struct supervisor_config {
    const char *name;        /* base name: children are NAME-0 .. NAME-(M-1) */
    int nworkers;            /* M, 2..1024 */
    int argc;                /* the supervisor's own command line, passed on */
    char *const *argv;
} supervisor_config_t;

/* Run the supervisor until every child has exited for good: exited 0 (the
 * scheduler said BYE), exited with a status that restarting cannot fix
 * (WORKER_EXIT_CONFIG, WORKER_EXIT_LOST, 127: exec failed), or was stopped
 * after SIGINT/SIGTERM reached the supervisor (forwarded to every child;
 * SIGKILL after SUPERVISOR_KILL_AFTER seconds).  A child that dies of a
 * signal or exits with another status is restarted after a backoff.
 * Must be called before the process creates threads or a ZeroMQ context.
 * Returns the supervisor's exit status: 0 when every child ended cleanly,
 * else the highest final child status. */
int supervisor_run(const supervisor_config_t *cfg);

#endif
