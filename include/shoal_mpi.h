/*
 * shoal_mpi.h - start a shoal cluster inside an MPI job (libshoal_mpi).
 *
 * For programs that are MPI programs themselves, the counterpart of
 * dask_mpi.initialize(): call shoal_mpi_initialize() on every rank right
 * after MPI_Init.  The ranks of `comm` split up:
 *
 *   ranks  rank 0                       rank 1              ranks 2..
 *   >= 3   scheduler                    the client: returns worker each
 *   2      scheduler + the client       worker
 *   1      scheduler + one local worker + the client
 *
 * The scheduler and the workers are child processes (shoal-scheduler,
 * shoal-worker) of their ranks; the scheduler's address reaches every rank
 * through MPI_Bcast.  On the client's rank the call returns 0 with
 * SHOAL_SCHEDULER set in the environment, so shoal_connect(NULL) connects to
 * the cluster.  On every other rank it does not return: the rank serves until
 * the client calls shoal_mpi_finalize(status), then stops its processes,
 * calls MPI_Finalize() and exits with that status, so `mpirun` returns the
 * client's status.
 *
 *     MPI_Init(&argc, &argv);
 *     if (shoal_mpi_initialize(MPI_COMM_WORLD, NULL) < 0)
 *         return 1;                       // every rank: no cluster
 *     shoal_client_t *c = shoal_connect(NULL, &err);
 *     ... submit, gather ...
 *     shoal_disconnect(c);
 *     shoal_mpi_finalize(rc);             // the other ranks exit with rc
 *     MPI_Finalize();
 *     return rc;
 *
 * If the client rank calls MPI_Finalize() (or exits) without having called
 * shoal_mpi_finalize(), the cluster is stopped then with status 0.
 *
 * A scheduler or worker process that dies unexpectedly ends the whole job
 * with MPI_Abort(comm, 1), except that a worker killed by a signal (a task
 * that crashed, the OOM killer) is restarted up to 3 times per rank.
 *
 * Link with -lshoal_mpi -lshoal, in that order, and your MPI library (build
 * with mpicc): libshoal_mpi.so puts libevent ahead of libev, whose
 * libevent-compatible names would otherwise be taken by an Open MPI built on
 * the system libevent (Debian's), crashing MPI_Init (docs/DEPLOY.md).  Call it
 * from the thread that called MPI_Init: the child processes are tied to that
 * thread's life (PR_SET_PDEATHSIG).  Not thread-safe.
 */
#ifndef SHOAL_MPI_H
#define SHOAL_MPI_H

#include <mpi.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct shoal_mpi_opts {
    /* Executor threads per worker; 0: the CPUs this rank may use, shared
     * with the other worker ranks on its node (at least 1). */
    int nthreads;
    /* The scheduler's TCP port; 0: a free one (the default). */
    int scheduler_port;
    /* Address the scheduler binds and advertises.  NULL: the IPv4 address of
     * `interface` if given; else 127.0.0.1 when every rank runs on rank 0's
     * node; else every interface, advertising the first non-loopback IPv4. */
    const char *host;
    /* A network interface of rank 0's node (e.g. "ib0") whose IPv4 address
     * the scheduler uses; NULL: see `host`. */
    const char *interface;
    /* Also write the scheduler file here, for clients outside the job;
     * removed when the cluster stops.  NULL: none. */
    const char *scheduler_file;
    /* Working directory of the scheduler and worker processes; NULL: the
     * current one. */
    const char *local_directory;
    /* NULL-terminated list of task libraries every worker loads (--library);
     * NULL: none (clients can upload theirs). */
    const char *const *libraries;
    /* Directory holding shoal-scheduler and shoal-worker.  NULL: $SHOAL_BINDIR,
     * then the bin/ beside the lib/ holding libshoal_mpi, then the program's
     * own directory and its ../bin, then $PATH. */
    const char *bindir;
} shoal_mpi_opts_t;

/* Collective over `comm`: every rank of it must call this, with the same
 * options (NULL means all defaults).  On the client's rank returns 0 with
 * SHOAL_SCHEDULER (the scheduler's address) and SHOAL_MPI_NWORKERS set in the
 * environment; on the others does not return (see above).  If the cluster
 * could not be started (no shoal-scheduler found, a bad option, the scheduler
 * failed), returns -1 on every rank with errno set and a reason logged on
 * stderr; nothing is left running.  -1 with EINVAL if MPI is not initialized
 * or the call was made before. */
int shoal_mpi_initialize(MPI_Comm comm, const shoal_mpi_opts_t *opts);

/* On the client's rank: stop the cluster, and have every other rank exit
 * with `status` (0 to 255).  Collective with those ranks (they wait for it);
 * returns 0 once every scheduler and worker process has stopped, -1 with
 * EINVAL if this is not the client's rank of an initialized cluster.  Call
 * it before MPI_Finalize; calling it twice is harmless (returns 0). */
int shoal_mpi_finalize(int status);

/* The scheduler's address ("tcp://HOST:PORT") once initialized, else NULL. */
const char *shoal_mpi_address(void);

/* The number of worker processes the cluster starts (for
 * shoal_wait_for_workers), or -1 before initialization. */
int shoal_mpi_nworkers(void);

#ifdef __cplusplus
}
#endif
#endif /* SHOAL_MPI_H */
