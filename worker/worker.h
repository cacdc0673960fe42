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
} worker_config_t;

/* Run the worker until the scheduler says BYE, a signal asks it to stop, or
 * the death timeout passes.  Returns the process exit status (WORKER_EXIT_*).
 * Installs handlers for SIGINT and SIGTERM, in a libev loop of its own: the
 * default loop would reap (waitpid(-1)) the children of command tasks.  If
 * executor threads are stuck in a task at shutdown for more than 5 s, the
 * process is ended with _exit() from here (they cannot be freed safely). */
int worker_run(const worker_config_t *cfg);

#endif
