/*
 * mpirole.h - the ranks of an MPI job as a shoal cluster: who runs what,
 * starting the scheduler and worker processes, handing the address around
 * with MPI, watching the processes, and the collective shutdown.  Shared by
 * the shoal-mpi program (main.c) and the C call of libshoal_mpi
 * (shoal_mpi.c).
 *
 * Roles by the size of the communicator (`client` is optional: without one
 * the cluster serves outside clients until the job is signalled):
 *
 *   size >= 3: rank 0 scheduler, rank 1 client, ranks >= 2 one worker each
 *   size 2:    rank 0 scheduler + client, rank 1 worker
 *   size 1:    rank 0 scheduler + worker + client
 *   no client: rank 0 scheduler (+ a worker if alone), ranks >= 1 workers
 *
 * The shutdown protocol, every step a nonblocking collective polled every
 * 50 ms at most (no rank spins in MPI while its processes work): the client
 * rank broadcasts the exit status (ranks wait for it in MPI_Ibcast from the
 * start); each rank stops its worker; a barrier; rank 0 stops the scheduler;
 * a barrier.  A scheduler or worker that dies outside the shutdown ends the
 * job with MPI_Abort (a worker killed by a signal is restarted first, up to
 * MPIROLE_MAX_RESTARTS times).  SIGINT, SIGTERM or SIGHUP (mpirun passes them
 * on) make a rank stop its processes and _exit(128 + signal).
 *
 * Every child process gets PR_SET_PDEATHSIG(SIGTERM), runs with the MPI
 * variables (OMPI_*, PMIX_*) removed from its environment and descriptors 3
 * and up closed, and stdin from /dev/null (except the client program).
 *
 * Functions print their failures on stderr (log.h) and return -1/NULL.
 */
#ifndef SHOAL_MPIROLE_H
#define SHOAL_MPIROLE_H

#include <mpi.h>

/* Internal to libshoal_mpi.so and shoal-mpi: not exported. */
#pragma GCC visibility push(hidden)

#define MPIROLE_MAX_RESTARTS 3
#define MPIROLE_MAX_LIBRARIES 64
/* How long a stopped scheduler or worker gets before SIGKILL. */
#define MPIROLE_STOP_GRACE 10.0
/* How long rank 0 waits for the scheduler to listen. */
#define MPIROLE_START_TIMEOUT 30.0

typedef struct mpirole mpirole_t;

typedef struct mpirole_opts {
    int have_client;              /* a client rank exists (see above) */
    int nthreads;                 /* per worker; 0: automatic */
    int port;                     /* 0: ephemeral */
    const char *host;             /* NULL: see shoal_mpi.h */
    const char *interface;
    const char *scheduler_file;   /* NULL: private, removed once read */
    const char *local_directory;  /* NULL: cwd */
    const char *const *libraries; /* NULL-terminated or NULL */
    const char *bindir;           /* NULL: search (mpirole_find_bindir) */
    const char *client_desc;      /* for log lines, e.g. the program name */
} mpirole_opts_t;

/* Collective over comm (duplicated internally).  Starts this rank's
 * scheduler and worker processes and broadcasts the address.  NULL on every
 * rank if the scheduler could not be started (or the options are bad);
 * nothing is left running then. */
mpirole_t *mpirole_start(MPI_Comm comm, const mpirole_opts_t *o);

int mpirole_is_client(const mpirole_t *m);
int mpirole_rank(const mpirole_t *m);
const char *mpirole_address(const mpirole_t *m);
int mpirole_nworkers(const mpirole_t *m);

/* Install the SIGINT/SIGTERM/SIGHUP handlers the wait loops act on. */
void mpirole_catch_signals(void);

/* Client rank: run argv[0] (a path, or a name searched in $PATH) with
 * SHOAL_SCHEDULER and SHOAL_MPI_NWORKERS set, in its own process group,
 * watching this rank's own scheduler/worker meanwhile.  Returns its exit
 * status (128 + signal if killed; 127 if it could not be started).  When it
 * exits, whatever it left running in its process group gets SIGTERM. */
int mpirole_run_program(mpirole_t *m, char *const argv[]);

/* Not the client rank: serve until the client's status arrives; returns it.
 * Without a client rank, serves until a signal (which does not return). */
int mpirole_serve(mpirole_t *m);

/* Every rank: the collective shutdown (the client rank passes its status,
 * the others the one mpirole_serve returned).  Returns the status.  Frees
 * the communicator; call mpirole_destroy afterwards. */
int mpirole_stop(mpirole_t *m, int status);

/* Free (after mpirole_stop).  Accepts NULL. */
void mpirole_destroy(mpirole_t *m);

/* Find the directory holding shoal-scheduler and shoal-worker: `hint` if
 * not NULL, $SHOAL_BINDIR, the bin/ beside the directory of the object
 * holding `anchor` (dladdr), the running program's directory and its ../bin,
 * ../../bin, ../../../bin.  "" (search $PATH) if none has them. */
void mpirole_find_bindir(const char *hint, const void *anchor, char *out, size_t cap);

#pragma GCC visibility pop

#endif
