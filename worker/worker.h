/*
 * worker.h - one worker process: an event loop on the calling thread that
 * owns the DEALER socket to the scheduler, the data endpoint (dataserv.h),
 * the result store (store.h) and the transfers from peers (fetch.h), plus a
 * pool of executor threads (pool.h) that run the tasks.
 */
#ifndef SHOAL_WORKER_WORKER_H
#define SHOAL_WORKER_WORKER_H

#include <stdint.h>

#include "tasklib.h"

#define WORKER_NAME_MAX 128
/* --resources: at most this many, names [A-Za-z0-9_.-]{1,63}. */
#define WORKER_MAX_RESOURCES 64
#define WORKER_RESOURCE_NAME_MAX 64
/* Defaults of --transfer-limit and --transfer-timeout. */
#define WORKER_TRANSFER_LIMIT 4
#define WORKER_TRANSFER_TIMEOUT 30.0
/* Memory thresholds, as fractions of the memory limit: stored results over
 * SPILL are spilled to disk; process RSS over PAUSE sends PAUSE, and below
 * RESUME again un-pauses. */
#define WORKER_SPILL_FRACTION 0.6
#define WORKER_PAUSE_FRACTION 0.8
#define WORKER_RESUME_FRACTION 0.7

typedef struct worker_resource {
    char name[WORKER_RESOURCE_NAME_MAX];
    double amount;           /* finite, >= 0 */
} worker_resource_t;

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
    /* Data plane (docs/DATAPLANE.md). */
    const char *contact_host;     /* host advertised for the data endpoint (and
                                     bound); NULL: dataserv_default_host() */
    int data_port;                /* 0: ephemeral */
    const worker_resource_t *resources;
    size_t nresources;
    uint64_t memory_limit;        /* bytes; 0: no limit (no spilling, no PAUSE) */
    const char *local_directory;  /* parent of the spill directory; NULL: the
                                     runtime directory */
    int transfer_limit;           /* GETs in flight; 0: WORKER_TRANSFER_LIMIT */
    double transfer_timeout;      /* seconds per GET; 0: WORKER_TRANSFER_TIMEOUT */
} worker_config_t;

/* Parse --resources "GPU=2,MEM=10e9" into out[] (at most
 * WORKER_MAX_RESOURCES).  Names: [A-Za-z0-9_.-]{1,63}, each once; amounts:
 * finite numbers >= 0.  0, or -1 with a reason in err. */
int worker_parse_resources(const char *spec, worker_resource_t *out, size_t *n, char *err,
                           size_t errcap);

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
