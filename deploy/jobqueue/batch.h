/*
 * batch.h - talking to the batch system through its commands: sbatch /
 * squeue / scancel for Slurm, qsub / qstat / qdel for PBS (or Slurm's Torque
 * wrapper, which accepts the same commands and #PBS scripts).
 *
 * Every command runs as a child process with stdin from /dev/null, its
 * output captured (bounded: BATCH_OUT_MAX bytes are kept, the rest read and
 * dropped) and a time limit, after which it is killed.  Nothing here
 * interprets a shell: arguments go to execve as they are.
 */
#ifndef SHOAL_JOBQUEUE_BATCH_H
#define SHOAL_JOBQUEUE_BATCH_H

#include <stddef.h>
#include <sys/types.h>

#include "jobscript.h"

#define BATCH_OUT_MAX 65536
#define BATCH_ID_MAX 64          /* job ids, NUL included */
#define BATCH_STATE_MAX 24       /* state names, NUL included */
#define BATCH_TIMEOUT 60.0       /* seconds a command may take */

typedef struct batch_out {
    int status;                  /* raw wait status */
    char text[BATCH_OUT_MAX];    /* stdout and stderr together, NUL-terminated */
    size_t len;
} batch_out_t;

/* Run argv[0] (searched in PATH) with `argv`, in directory `cwd` (NULL: ours),
 * in a process group of its own.  When `interrupt` is not NULL, the command
 * is abandoned (killed) as soon as one of those signals is pending in this
 * process (they are expected to be blocked and taken with sigtimedwait).
 * Returns 0 when it ran (whatever its exit status) or -1: errno ENOENT (not
 * found), ETIMEDOUT (killed after `timeout`), EINTR (interrupted), or the
 * error of fork/pipe. */
int batch_run(const char *const argv[], const char *cwd, double timeout,
              const sigset_t *interrupt, batch_out_t *out);

/* Submit the job script at `script`.  On success the job id (validated:
 * letters, digits and . _ - [ ] @) is in id.  -1 with a sentence in err,
 * quoting the command's output. */
int batch_submit(jq_system_t sys, const char *script, const char *cwd,
                 const sigset_t *interrupt, char *id, size_t idcap, char *err,
                 size_t errcap);

/* Cancel these jobs (scancel / qdel).  Jobs that are gone already are not an
 * error.  0 or -1 with err. */
int batch_cancel(jq_system_t sys, const char *const ids[], size_t n,
                 const sigset_t *interrupt, char *err, size_t errcap);

/* Ask for the state of these jobs.  states[i] gets the batch system's state
 * ("PENDING", "RUNNING", ... for Slurm; "Q", "R", ... for PBS), or "" when the
 * job is no longer in the queue (finished, cancelled, failed).  0, or -1 with
 * err when the query failed (states[] then unchanged). */
int batch_query(jq_system_t sys, const char *const ids[], size_t n,
                const sigset_t *interrupt, char (*states)[BATCH_STATE_MAX], char *err,
                size_t errcap);

/* Non-zero if a state from batch_query means the job has ended. */
int batch_state_ended(jq_system_t sys, const char *state);
/* Non-zero if the job is running (its workers may be connected). */
int batch_state_running(jq_system_t sys, const char *state);

/* 0 if the batch system's three commands are found in PATH, else -1 with
 * the name of the first missing one in `missing`. */
int batch_have_commands(jq_system_t sys, char *missing, size_t cap);

/* Non-zero if s looks like a job id we accept. */
int batch_valid_id(const char *s);

#endif
