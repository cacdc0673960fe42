/*
 * cluster.h - real shoal clusters for the end-to-end tests.
 *
 * cluster_start() spawns bin/shoal-scheduler on 127.0.0.1 with an ephemeral
 * port and a scheduler file in a fresh temporary directory, then the worker
 * processes (with --library build/test/libbasic.so unless told otherwise),
 * and returns once a client sees every worker connected.  cluster_stop()
 * stops everything it started, by pid: SIGTERM, a bounded wait, SIGKILL,
 * waitpid, and removes the temporary directory.
 *
 * Cleanup when a test dies half-way: every process is spawned with fork+exec
 * and PR_SET_PDEATHSIG(SIGKILL), so it dies with the test process however
 * the test process ends (Check's failed assertion calls _exit, a timeout is a
 * SIGKILL).  Each spawned process also leads its own process group, so the
 * processes it forks itself (a worker supervisor's children) can be found and
 * killed by pid.  The spawned pids are kept in a registry that an atexit
 * handler and the fatal-signal handlers (SIGABRT, SIGSEGV, ...) kill.  The
 * unchecked fixture e2e_fixture_setup/teardown (see e2e.h) makes a per-tcase
 * temporary directory in Check's parent process that holds every cluster
 * directory, plus a file listing the spawned pids, and removes / kills what
 * is left of them after the tests of the tcase ran.
 *
 * Binary paths: $SHOAL_BINDIR, else the repository's bin/ found from
 * /proc/self/exe (build/test/e2e/X -> ../../../bin).  The test task library:
 * $SHOAL_TEST_LIBBASIC, else build/test/libbasic.so found likewise.
 *
 * All functions here return -1/NULL on failure with a reason printed on
 * stderr; they never call Check's assertions, so they can be used from
 * fixtures.  None is thread-safe: call them from the test's main thread
 * (PR_SET_PDEATHSIG fires when the forking thread exits).
 */
#ifndef SHOAL_TEST_CLUSTER_H
#define SHOAL_TEST_CLUSTER_H

#include <stddef.h>
#include <sys/types.h>

#include "shoal.h"

#define CLUSTER_MAX_PROCS 32

typedef struct cluster_opts {
    int nworkers;             /* worker processes to start (may be 0) */
    int nthreads;             /* --nthreads of each; 0 means 1 */
    const char *worker_args;  /* extra worker options, split on spaces */
    const char *sched_args;   /* extra scheduler options, split on spaces */
    int no_library;           /* 1: do not pass --library libbasic.so */
    int expect_workers;       /* workers to wait for; 0: nworkers times the
                                 --nworkers M found in worker_args */
    double start_timeout;     /* seconds; 0 means 20 */
} cluster_opts_t;

typedef struct cluster {
    char dir[512];             /* temporary directory (scheduler file, cwd) */
    char sfile[600];           /* scheduler file */
    char address[256];         /* tcp://127.0.0.1:PORT */
    pid_t sched_pid;           /* 0 once reaped */
    int nprocs;                /* worker processes started so far */
    pid_t worker_pid[CLUSTER_MAX_PROCS];   /* 0 once reaped */
    char worker_name[CLUSTER_MAX_PROCS][64];
    shoal_client_t *client;    /* connected client, disconnected by stop */
    int expect;                /* workers expected connected */
} cluster_t;

/* Start a cluster: `nworkers` worker processes with `nthreads` threads each
 * and `extra_worker_args`.  NULL on failure (everything started is stopped). */
cluster_t *cluster_start(int nworkers, int nthreads, const char *extra_worker_args);
cluster_t *cluster_start_opts(const cluster_opts_t *opts);

/* Stop every process, reap them, remove the directory, free.  Accepts NULL. */
void cluster_stop(cluster_t *cl);

/* Start one more worker process (named e2e-w<index>); returns its index, or
 * -1.  Does not wait for it to connect. */
int cluster_add_worker(cluster_t *cl, int nthreads, const char *extra_args,
                       int with_library);

/* Send `sig` to worker process i; for SIGKILL (and when `reap` is set) wait
 * for it to exit (bounded: 10 s).  0 or -1. */
int cluster_signal_worker(cluster_t *cl, int i, int sig, int reap);
/* Likewise for the scheduler. */
int cluster_signal_scheduler(cluster_t *cl, int sig, int reap);

/* Wait up to `timeout` for process `pid` (a child of ours) to exit; returns
 * its wait status, or -1 on timeout/error. */
int cluster_waitpid(pid_t pid, double timeout);

/* Wait until the scheduler reports exactly `n` workers (polling
 * shoal_status).  0 or -1 on timeout. */
int cluster_wait_nworkers(shoal_client_t *c, int n, double timeout);

/* Parent pid of `pid` from /proc, or -1. */
pid_t cluster_ppid(pid_t pid);

/* Paths: the bin directory, one binary in it, and libbasic.so (static
 * strings; NULL if they cannot be found). */
const char *cluster_bindir(void);
const char *cluster_bin(const char *name);
const char *cluster_libbasic(void);

/* Where temporary directories go: the fixture's directory if set, else
 * $TMPDIR or /tmp. */
const char *cluster_tmpbase(void);

/* Unchecked fixture (runs in Check's parent process, around all the tests
 * of a tcase): setup makes the temporary base directory and the pid list
 * that the tests' forked children inherit; teardown kills whatever spawned
 * shoal process is left (by pid, after checking /proc that it is one) and
 * removes the directory.  Set SHOAL_E2E_KEEP=1 to keep the directories. */
void cluster_fixture_setup(void);
void cluster_fixture_teardown(void);

/* --- Processes ---------------------------------------------------------------- */

/* Spawn argv (argv[0] a path) with stdin from /dev/null (or fd `in_fd` if
 * >= 0), stdout/stderr to out_fd/err_fd if >= 0 (else inherited), in its
 * own process group, with PR_SET_PDEATHSIG(SIGKILL), and `env_extra`
 * ("K=V" strings; "K" alone unsets K) applied to our environment.  The pid is
 * registered for emergency cleanup.  Returns the pid or -1. */
pid_t proc_spawn(const char *const argv[], const char *const env_extra[], int in_fd,
                 int out_fd, int err_fd, const char *cwd);

/* Forget a pid that has been reaped. */
void proc_forget(pid_t pid);

/* SIGKILL the members of process group `pgid` whose command name starts with
 * "shoal" (found through /proc), by pid.  Returns how many were signalled. */
int proc_kill_group(pid_t pgid);

/* True if `pid` exists and is not a zombie. */
int proc_alive(pid_t pid);

typedef struct proc_result {
    int status;        /* raw wait status */
    int exited;        /* WIFEXITED */
    int exit_code;     /* WEXITSTATUS, or -1 */
    int signaled;      /* WTERMSIG, or 0 */
    int timed_out;     /* killed by us after `timeout` */
    double elapsed;    /* seconds */
    char *out;         /* NUL-terminated stdout (bounded, 16 MiB) */
    size_t out_len;
    char *err;         /* NUL-terminated stderr (bounded, 16 MiB) */
    size_t err_len;
} proc_result_t;

/* Run argv to completion, feeding `in` (may be NULL) on stdin and capturing
 * stdout and stderr; killed (SIGKILL, its whole group) after `timeout`
 * seconds.  0 when it ran (whatever its status), -1 if it could not. */
int proc_run(const char *const argv[], const char *const env_extra[], const void *in,
             size_t in_len, double timeout, proc_result_t *r);
void proc_result_free(proc_result_t *r);

#endif
