/*
 * slurm.h - a real, private, single-node Slurm for the end-to-end tests of
 * the launchers (tests/test_deploy_jobqueue.c, tests/test_deploy_mpi_slurm.c).
 *
 * slurm_start() starts munged, slurmctld and slurmd (one node, "localhost",
 * 127.0.0.1, ports chosen here, no cgroups, no accounting) in a fresh
 * directory and returns when the node is idle, with $SLURM_CONF set so that
 * sbatch, squeue, scontrol and Slurm's Torque wrapper (qsub, qstat, qdel)
 * talk to it.  slurm_stop() cancels what is left in the queue, stops the
 * daemons by pid and fails the test if a job was left in the queue or any
 * process of ours is left (the test process is made a child subreaper, so
 * job processes, which slurmstepd daemonizes, come back to it).
 *
 * Unlike cluster.h, these helpers use Check's assertions: call them from a
 * test, not from a fixture (except the fixture functions below).
 *
 * The daemons, as configured here, need root: a test calls
 * slurm_not_root() first and passes with a message when it is not root.
 */
#ifndef SHOAL_TEST_SLURM_H
#define SHOAL_TEST_SLURM_H

#include <limits.h>
#include <stddef.h>
#include <sys/types.h>

#include "cluster.h"

/* Packages the tests need (for messages). */
#define SLURM_PKGS "slurmctld slurmd slurm-client munge slurm-wlm-torque"

typedef struct slurm_opts {
    int cpus;          /* CPUs the node declares, whatever the machine has (0: 4) */
    int min_job_age;   /* seconds slurmctld keeps a finished job's record, for
                          `scontrol show job` (0: 2) */
} slurm_opts_t;

typedef struct slurm {
    char dir[PATH_MAX];          /* state, spool, logs (log/), slurm.conf */
    char conf[PATH_MAX + 32];    /* dir/slurm.conf */
    pid_t munged, ctld, slurmd;
} slurm_t;

/* 1 (after printing "skipped: ... needs root") when not root, else 0. */
int slurm_not_root(void);

/* Unchecked fixture of a tcase whose tests start a Slurm (runs in Check's
 * parent process): a base directory for the clusters, this process a child
 * subreaper; teardown kills by pid what a failed test left (processes whose
 * command line names the directory, and our children) and removes it. */
void slurm_fixture_setup(void);
void slurm_fixture_teardown(void);

/* Start a Slurm (asserts); opts may be NULL. */
void slurm_start(slurm_t *s, const slurm_opts_t *opts);
/* Empty the queue (scancel), stop the daemons, check nothing is left (asserts),
 * remove the directory. */
void slurm_stop(slurm_t *s);

/* Jobs listed by squeue now ("ID STATE" lines copied to ids if not NULL). */
int slurm_jobs_in_queue(char *ids, size_t cap);

/* --- helpers ------------------------------------------------------------------- */

/* `name` looked up in $PATH (then the sbin directories); 0 or -1. */
int slurm_which(const char *name, char *out, size_t cap);
/* Run `name` (found with slurm_which) with the NULL-terminated arguments,
 * at most 30, output captured; asserts it could be run. */
void slurm_cmd(proc_result_t *r, double timeout, const char *name, ...);
/* The last `max` bytes of a file, for messages (static buffer, so one per
 * expression). */
const char *slurm_file_tail(const char *path, size_t max);
/* Reap what has exited, then wait (bounded) until the test process has no
 * child left; those that stay are killed by pid and fail the test. */
void slurm_expect_no_children(double timeout);

#endif
