/*
 * worker.h - one worker process: an event loop on the calling thread that
 * owns the DEALER socket to the scheduler, plus a pool of executor threads
 * (pool.h) that run the tasks.
 */
#ifndef SHOAL_WORKER_WORKER_H
#define SHOAL_WORKER_WORKER_H

#include <stdint.h>

#include "tasklib.h"

#define WORKER_NAME_MAX 128

/* Exit statuses of a worker process.  The supervisor (supervisor.h) restarts
 * a child that dies of a signal or exits WORKER_EXIT_ERROR; the other
 * statuses are final. */
enum {
    WORKER_EXIT_OK = 0,      /* BYE from the scheduler, or SIGINT/SIGTERM */
    WORKER_EXIT_ERROR = 1,   /* runtime failure */
    WORKER_EXIT_CONFIG = 2,  /* bad command line or configuration, refused by
                                the scheduler (protocol version) */
    WORKER_EXIT_LOST = 3,    /* nothing heard from the scheduler for the death
                                timeout: restarting would not help */
};

typedef struct worker_config {
    const char *address;     /* normalised "tcp://HOST:PORT" */
    const char *name;        /* at most WORKER_NAME_MAX - 1 bytes */
    int nthreads;            /* executor threads, 1..1024 */
    double death_timeout;    /* seconds without a message from the scheduler */
    int64_t max_frame;       /* ZMQ_MAXMSGSIZE */
    tasklib_t *lib;          /* task registry (borrowed; libraries given with
                                --library already loaded) */
    double lifetime;         /* seconds after start at which the worker retires
                                (see worker_run); 0: never */
} worker_config_t;

/* The grace period of a retiring worker: min(lifetime / 10, this). */
#define WORKER_RETIRE_GRACE_MAX 60.0

/* Run the worker until the scheduler says BYE, a signal asks it to stop, the
 * death timeout passes, or it retires.  Returns the process exit status
 * (WORKER_EXIT_*).
 *
 * Retiring (cfg->lifetime > 0, like Dask's --lifetime): once the lifetime is
 * up the worker takes no more work.  Queued tasks are dropped unrun, as are
 * tasks in any COMPUTE that arrives later; running tasks may finish for a
 * grace period of min(lifetime / 10, WORKER_RETIRE_GRACE_MAX) seconds and
 * are reported; then the worker says BYE, so the scheduler places every task
 * it still counted on this worker elsewhere, and returns WORKER_EXIT_OK.
 * Tasks still running when the grace period ends are cancelled, unreported.
 * The point is a batch job that ends before its walltime without losing the
 * tasks in it to the batch system's kill.
 * Installs handlers for SIGINT and SIGTERM, in a libev loop of its own: the
 * default loop would reap (waitpid(-1)) the children of command tasks.  If
 * executor threads are stuck in a task at shutdown for more than 5 s, the
 * process is ended with _exit() from here (they cannot be freed safely). */
int worker_run(const worker_config_t *cfg);

#endif
