/*
 * shoal_mpi.c - the C call for MPI programs (shoal_mpi.h), on top of
 * mpirole.c.
 *
 * The client rank's cluster must stop even when the program forgets
 * shoal_mpi_finalize(): otherwise the other ranks would wait for its status
 * forever while it waits in MPI_Finalize for them.  Two hooks catch that:
 * an attribute on MPI_COMM_SELF, whose delete callback MPI_Finalize runs
 * first thing while MPI still works (MPI standard, "Allowing User Functions
 * at Process Termination"), and an atexit() handler for a program that
 * exits without MPI_Finalize.  Both stop the cluster with status 0.
 */
#define _GNU_SOURCE
#include "shoal_mpi.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "mpirole.h"

enum { ST_NONE, ST_RUNNING, ST_DONE };

static struct {
    int state;
    mpirole_t *m;
    pid_t pid;           /* the process that initialized (atexit runs in forks too) */
    int keyval;          /* MPI_KEYVAL_INVALID when none */
    int in_hook;
    int atexit_done;
    char address[256];
    int nworkers;
} s_mpi = {.keyval = MPI_KEYVAL_INVALID, .nworkers = -1};

static void s_stop(int status)
{
    mpirole_stop(s_mpi.m, status);
    mpirole_destroy(s_mpi.m);
    s_mpi.m = NULL;
    s_mpi.state = ST_DONE;
    s_mpi.address[0] = '\0';
}

static int s_self_delete(MPI_Comm comm, int keyval, void *val, void *extra)
{
    (void)comm;
    (void)keyval;
    (void)val;
    (void)extra;
    if (s_mpi.state == ST_RUNNING && getpid() == s_mpi.pid) {
        log_warn("MPI_Finalize without shoal_mpi_finalize(): stopping the cluster "
                 "with status 0");
        s_mpi.in_hook = 1;
        s_stop(0);
        s_mpi.in_hook = 0;
    }
    return MPI_SUCCESS;
}

static void s_atexit(void)
{
    int init = 0, fin = 0;
    if (s_mpi.state != ST_RUNNING || getpid() != s_mpi.pid)
        return;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (!init || fin)
        return;
    log_warn("exit without shoal_mpi_finalize(): stopping the cluster with status 0");
    s_stop(0);
}

int shoal_mpi_initialize(MPI_Comm comm, const shoal_mpi_opts_t *opts)
{
    static const shoal_mpi_opts_t defaults;
    int init = 0, fin = 0;
    mpirole_opts_t ro;
    char env[32];

    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (!init || fin || s_mpi.state != ST_NONE || comm == MPI_COMM_NULL) {
        errno = EINVAL;
        return -1;
    }
    if (!opts)
        opts = &defaults;
    log_init("shoal-mpi");
    memset(&ro, 0, sizeof ro);
    ro.have_client = 1;
    ro.nthreads = opts->nthreads;
    ro.port = opts->scheduler_port;
    ro.host = opts->host;
    ro.interface = opts->interface;
    ro.scheduler_file = opts->scheduler_file;
    ro.local_directory = opts->local_directory;
    ro.libraries = opts->libraries;
    ro.bindir = opts->bindir;
    ro.client_desc = "the client";

    mpirole_t *m = mpirole_start(comm, &ro);
    if (!m) {
        errno = EIO;
        return -1;
    }
    if (!mpirole_is_client(m)) {
        /* This rank's life from now on: serve, stop with everyone, exit with
         * the client's status. */
        mpirole_catch_signals();
        int status = mpirole_serve(m);
        status = mpirole_stop(m, status);
        mpirole_destroy(m);
        MPI_Finalize();
        exit(status);
    }

    s_mpi.m = m;
    s_mpi.pid = getpid();
    s_mpi.nworkers = mpirole_nworkers(m);
    snprintf(s_mpi.address, sizeof s_mpi.address, "%s", mpirole_address(m));
    snprintf(env, sizeof env, "%d", s_mpi.nworkers);
    if (setenv("SHOAL_SCHEDULER", s_mpi.address, 1) < 0 ||
        setenv("SHOAL_MPI_NWORKERS", env, 1) < 0) {
        int e = errno;
        log_err("cannot set SHOAL_SCHEDULER: %s", strerror(e));
        s_stop(1);
        errno = e;
        return -1;
    }
    s_mpi.state = ST_RUNNING;
    if (MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, s_self_delete, &s_mpi.keyval,
                               NULL) == MPI_SUCCESS) {
        if (MPI_Comm_set_attr(MPI_COMM_SELF, s_mpi.keyval, NULL) != MPI_SUCCESS) {
            MPI_Comm_free_keyval(&s_mpi.keyval);
            s_mpi.keyval = MPI_KEYVAL_INVALID;
        }
    }
    if (!s_mpi.atexit_done && atexit(s_atexit) == 0)
        s_mpi.atexit_done = 1;
    return 0;
}

int shoal_mpi_finalize(int status)
{
    if (s_mpi.state == ST_DONE)
        return 0;
    if (s_mpi.state != ST_RUNNING) {
        errno = EINVAL;
        return -1;
    }
    s_stop(status);
    /* The MPI_Finalize hook has nothing left to do. */
    if (s_mpi.keyval != MPI_KEYVAL_INVALID && !s_mpi.in_hook) {
        MPI_Comm_delete_attr(MPI_COMM_SELF, s_mpi.keyval);
        MPI_Comm_free_keyval(&s_mpi.keyval);
        s_mpi.keyval = MPI_KEYVAL_INVALID;
    }
    return 0;
}

const char *shoal_mpi_address(void)
{
    return s_mpi.state == ST_RUNNING ? s_mpi.address : NULL;
}

int shoal_mpi_nworkers(void)
{
    return s_mpi.state == ST_NONE ? -1 : s_mpi.nworkers;
}
