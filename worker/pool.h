/*
 * pool.h - the worker's executor threads and the two queues between them and
 * the event loop.
 *
 * The event loop (one thread) submits jobs; N executor threads take them in
 * FIFO order, run them through a callback and hand them back on a done queue;
 * the loop is told that the done queue went from empty to non-empty through a
 * notify callback (the worker uses ev_async_send) and takes the whole queue at
 * once.  One mutex guards both queues, so an executor pays one lock round per
 * task: it returns the finished job and takes the next one in the same
 * critical section.  Idle executors wait on their own condition variable and
 * are woken one by one, only as many as there are new jobs, so a busy pool is
 * never signalled at all.
 *
 * One exception to "executors run the jobs": a lone job submitted to an idle
 * pool whose function has proved itself tiny (POOL_INLINE_STREAK runs in a
 * row of at most POOL_INLINE_MAX_US, never one of POOL_INLINE_BAN_FACTOR
 * times that or more, as the run callback reports in duration_us; inline
 * runs are also timed by the pool) is run by pool_submit itself, on the
 * calling thread, and is on the done list (notify called) when pool_submit
 * returns.  That saves the two thread wake-ups of the hand-off, which cost
 * far more than such a job.  So the run callback must not depend on the
 * loop thread being free (it never waits for the loop).  pool_set_inline
 * changes the bound or turns it off.
 *
 * Ownership: a job belongs to the submitter until pool_submit, to the pool
 * while queued or running, and to the submitter again once it comes back from
 * pool_take_done, pool_cancel (when that returns 1) or pool_take_queued.  The
 * pool never allocates or frees jobs.
 *
 * pool_submit, pool_cancel, pool_take_done, pool_take_queued, pool_shutdown
 * and pool_destroy must be called from one thread (the loop); the callbacks
 * run on executor threads (and, for inline runs, on that thread).
 */
#ifndef SHOAL_WORKER_POOL_H
#define SHOAL_WORKER_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "exec.h"
#include "shoal_task.h"

enum { POOL_JOB_NEW = 0, POOL_JOB_QUEUED, POOL_JOB_RUNNING, POOL_JOB_DONE };

typedef struct pool_job {
    /* Links: the job queue (doubly linked, so a cancelled job leaves it in
     * O(1)), then the done list.  Owned by the pool while the job is in it. */
    struct pool_job *next, *prev;
    int state;                   /* POOL_JOB_*, read under the pool lock */
    volatile int cancelled;      /* set by pool_cancel; polled by the task */

    uint64_t id;
    /* Input, set by the submitter; the worker points args/deps into the same
     * allocation as the job. */
    shoal_task_fn fn;
    const void *args;
    size_t args_len;
    exec_dep_t *deps;
    size_t ndeps;

    /* Outcome, filled by the run callback on the executor thread. */
    int status;                  /* TASK_OK / TASK_ERR */
    void *out;                   /* malloc'd: packed result or error text */
    size_t out_len;
    uint64_t duration_us;        /* how long the run took: the pool reads it
                                    to tell tiny functions (see above) */
} pool_job_t;

typedef struct pool pool_t;

/* Inline runs (see above): a run of at most POOL_INLINE_MAX_US counts as
 * tiny; POOL_INLINE_STREAK tiny runs in a row qualify a function; one run of
 * POOL_INLINE_BAN_FACTOR * POOL_INLINE_MAX_US (1 ms) or more disqualifies it
 * for good. */
#define POOL_INLINE_MAX_US 50
#define POOL_INLINE_STREAK 32
#define POOL_INLINE_BAN_FACTOR 20

/* Runs one job on an executor thread (or, inline, on the thread calling
 * pool_submit).  It is called even for a job that was cancelled while
 * running (the flag is then set), never for one cancelled while queued. */
typedef void (*pool_run_fn)(pool_job_t *job, void *arg);
/* Called when the done queue becomes non-empty: on an executor thread, or
 * on the thread calling pool_submit after an inline run.  Must be
 * thread-safe and must not call back into the pool. */
typedef void (*pool_notify_fn)(void *arg);

/* Start `nthreads` executors (1..1024).  NULL with errno on failure (no
 * threads are left running). */
pool_t *pool_create(int nthreads, pool_run_fn run, pool_notify_fn notify, void *arg);

/* Queue a list of jobs (linked through ->next, NULL-terminated, in order) at
 * the tail of the job queue.  Wakes at most one idle executor per job; or
 * runs a lone tiny job right here (see above).  Returns the number of jobs
 * queued (or run), or -1 (ESHUTDOWN) after pool_shutdown: the jobs then
 * still belong to the caller. */
int pool_submit(pool_t *p, pool_job_t *head);

/* Cancel a job that was submitted and has not come back from pool_take_done.
 * Returns 1 if it was still queued: it is removed and belongs to the caller
 * again (never run, never on the done list).  Returns 0 if it is running or
 * already finished: its cancelled flag is set and it will come back through
 * pool_take_done as usual. */
int pool_cancel(pool_t *p, pool_job_t *job);

/* Take every finished job, oldest first, linked through ->next; NULL if none. */
pool_job_t *pool_take_done(pool_t *p);

/* Remove and return every job still queued (linked through ->next), oldest
 * first.  Used at shutdown; jobs taken this way were never run. */
pool_job_t *pool_take_queued(pool_t *p);

/* Counters (taken under the lock; for tests and statistics). */
size_t pool_queued(pool_t *p);
size_t pool_running(pool_t *p);
int pool_nthreads(const pool_t *p);

/* Count runs of at most max_us as tiny (POOL_INLINE_MAX_US by default), or
 * never run jobs inline (max_us 0). */
void pool_set_inline(pool_t *p, unsigned max_us);
/* Jobs run inline so far. */
uint64_t pool_inlined(pool_t *p);

/* Stop the executors: no more jobs are started, running jobs get their
 * cancelled flag set, and the threads are joined, waiting at most `timeout`
 * seconds in all.  Returns 0 when every thread has exited, -1 (ETIMEDOUT)
 * when some are still stuck in a task that ignores cancellation: the pool
 * must then not be destroyed (those threads still use it); the caller is
 * expected to exit the process.  Idempotent. */
int pool_shutdown(pool_t *p, double timeout);

/* Shut down (if not done yet, with a 5 s bound) and free the pool.  Jobs
 * still queued or done are NOT freed: take them first.  If threads could not
 * be joined the pool is deliberately leaked.  Accepts NULL. */
void pool_destroy(pool_t *p);

#endif
