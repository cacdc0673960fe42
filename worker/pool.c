/*
 * pool.c - executor threads, the job queue and the done queue (see pool.h).
 *
 * Tiny jobs run inline.  Handing a job to an executor and its outcome back
 * costs two thread wake-ups: the executor sleeping on its condition
 * variable, then the event loop sleeping in epoll.  On a small or virtual
 * machine each is tens of microseconds, far more than a no-op task, and
 * both sit on the path of every sequential submit-then-result round trip.
 * So pool_submit runs a lone job on the submitting thread when the pool is
 * idle and the job's function has proved itself tiny (see s_inline_ok);
 * the outcome goes on the done list as usual.
 *
 * The risk of that is a function that is usually tiny but not always: the
 * loop thread would be stuck in it.  The rules keep it small (max_us is
 * POOL_INLINE_MAX_US unless pool_set_inline said otherwise):
 *   - a function qualifies only after POOL_INLINE_STREAK consecutive runs
 *     of at most max_us each (any longer run starts the count again), so
 *     functions whose duration varies do not qualify;
 *   - a function seen running POOL_INLINE_BAN_FACTOR * max_us or more,
 *     ever, wherever it ran, never runs inline again, so a function can
 *     hold up the loop at most once in the life of the process;
 *   - only when no other job is queued or running, so inline runs never
 *     delay other jobs or run alongside them (the pool still runs at most
 *     nthreads jobs at a time), and only a lone job (a batch of them is
 *     work for the executors).
 */
#define _GNU_SOURCE
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

/* Durations of each function run, kept per pool in a small open-addressing
 * table keyed by the function pointer (functions beyond its size are never
 * run inline). */
#define FSTAT_SLOTS 64

typedef struct fstat {
    shoal_task_fn fn;        /* NULL: free slot */
    uint32_t streak;         /* consecutive runs of at most max_us */
    int banned;              /* ran POOL_INLINE_BAN_FACTOR * max_us or more once */
} fstat_t;

typedef struct pool_exec {
    pool_t *pool;
    pthread_t tid;
    pthread_cond_t cv;           /* this executor's own wake-up */
    int woken;                   /* set (under the lock) by whoever wakes it */
    int joined;
    struct pool_exec *next_idle; /* idle stack link */
    pool_job_t *cur;             /* job it is running, under the lock */
} pool_exec_t;

struct pool {
    pthread_mutex_t mu;
    pool_job_t *qhead, *qtail;   /* job queue, FIFO, doubly linked */
    size_t nqueued;
    pool_job_t *dhead, *dtail;   /* done list, FIFO, singly linked */
    size_t nrunning;
    pool_exec_t *idle;           /* executors waiting for work (a stack: the
                                    most recently idle one is the warmest) */
    int stopping;
    int nthreads;                /* threads started */
    unsigned inline_us;          /* max_us of an inline-able run; 0: never */
    uint64_t ninline;            /* jobs run inline so far */
    pool_run_fn run;
    pool_notify_fn notify;
    void *arg;
    fstat_t fstats[FSTAT_SLOTS]; /* under mu */
    pool_exec_t execs[];
};

static inline uint64_t s_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* The stats slot of fn (claimed if new and there is room), or NULL.  Lock
 * held. */
static fstat_t *s_fstat(pool_t *p, shoal_task_fn fn, int claim)
{
    if (!fn)
        return NULL;
    size_t h = (size_t)(((uintptr_t)fn >> 4) * 0x9e3779b97f4a7c15ULL >> 58);
    for (size_t k = 0; k < FSTAT_SLOTS; k++) {
        fstat_t *f = &p->fstats[(h + k) % FSTAT_SLOTS];
        if (f->fn == fn)
            return f;
        if (!f->fn) {
            if (!claim)
                return NULL;
            f->fn = fn;
            return f;
        }
    }
    return NULL;
}

/* Record how long a run of fn took.  Lock held. */
static void s_fstat_note(pool_t *p, shoal_task_fn fn, uint64_t us)
{
    fstat_t *f = s_fstat(p, fn, 1);
    if (!f)
        return;
    uint64_t max_us = p->inline_us ? p->inline_us : POOL_INLINE_MAX_US;
    if (us >= POOL_INLINE_BAN_FACTOR * max_us)
        f->banned = 1;
    if (us <= max_us) {
        if (f->streak < UINT32_MAX)
            f->streak++;
    } else {
        f->streak = 0;
    }
}

/* May this job run inline now?  Lock held. */
static int s_inline_ok(pool_t *p, const pool_job_t *j)
{
    if (!p->inline_us || j->next || p->nqueued || p->nrunning || !j->fn)
        return 0;
    const fstat_t *f = s_fstat(p, j->fn, 0);
    return f && !f->banned && f->streak >= POOL_INLINE_STREAK;
}

/* Append a finished job to the done list; 1 if the list was empty (the
 * loop must be told).  Lock held. */
static int s_done_push(pool_t *p, pool_job_t *fin)
{
    fin->state = POOL_JOB_DONE;
    fin->next = NULL;
    fin->prev = NULL;
    int was_empty = p->dtail == NULL;
    if (p->dtail)
        p->dtail->next = fin;
    else
        p->dhead = fin;
    p->dtail = fin;
    return was_empty;
}

/*
 * The executor loop.  The lock is held except while a job runs and while the
 * loop is notified, so that giving back the finished job and taking the next
 * one cost one critical section together.
 */
static void *s_exec_main(void *a)
{
    pool_exec_t *e = a;
    pool_t *p = e->pool;
    pool_job_t *fin = NULL;
    int notify = 0;

    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (fin) {
            e->cur = NULL;
            p->nrunning--;
            /* The run callback's own measure: no clock reads of ours on
             * the busy path. */
            s_fstat_note(p, fin->fn, fin->duration_us);
            if (s_done_push(p, fin))
                notify = 1;     /* empty -> non-empty: the loop must look */
            fin = NULL;
        }
        if (!p->stopping && p->qhead) {
            pool_job_t *j = p->qhead;
            p->qhead = j->next;
            if (p->qhead)
                p->qhead->prev = NULL;
            else
                p->qtail = NULL;
            p->nqueued--;
            j->next = j->prev = NULL;
            j->state = POOL_JOB_RUNNING;
            e->cur = j;
            p->nrunning++;
            pthread_mutex_unlock(&p->mu);
            if (notify) {
                p->notify(p->arg);
                notify = 0;
            }
            p->run(j, p->arg);
            fin = j;
            pthread_mutex_lock(&p->mu);
            continue;
        }
        if (notify) {
            /* Notify outside the lock, then look at the queue again: a job
             * may have arrived meanwhile. */
            pthread_mutex_unlock(&p->mu);
            p->notify(p->arg);
            notify = 0;
            pthread_mutex_lock(&p->mu);
            continue;
        }
        if (p->stopping)
            break;
        e->woken = 0;
        e->next_idle = p->idle;
        p->idle = e;
        while (!e->woken && !p->stopping)
            pthread_cond_wait(&e->cv, &p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

pool_t *pool_create(int nthreads, pool_run_fn run, pool_notify_fn notify, void *arg)
{
    pool_t *p;
    int i, rc;

    if (nthreads < 1 || nthreads > 1024 || !run || !notify) {
        errno = EINVAL;
        return NULL;
    }
    p = calloc(1, sizeof(*p) + (size_t)nthreads * sizeof(p->execs[0]));
    if (!p)
        return NULL;
    if ((rc = pthread_mutex_init(&p->mu, NULL)) != 0) {
        free(p);
        errno = rc;
        return NULL;
    }
    p->run = run;
    p->notify = notify;
    p->arg = arg;
    p->inline_us = POOL_INLINE_MAX_US;
    for (i = 0; i < nthreads; i++) {
        pool_exec_t *e = &p->execs[i];
        e->pool = p;
        if ((rc = pthread_cond_init(&e->cv, NULL)) != 0)
            goto error;
        if ((rc = pthread_create(&e->tid, NULL, s_exec_main, e)) != 0) {
            pthread_cond_destroy(&e->cv);
            goto error;
        }
        p->nthreads++;
    }
    return p;

error:
    /* Threads already started are idle (nothing was submitted): stop them. */
    pool_shutdown(p, 1e9);
    for (i = 0; i < p->nthreads; i++)
        pthread_cond_destroy(&p->execs[i].cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
    errno = rc;
    return NULL;
}

int pool_submit(pool_t *p, pool_job_t *head)
{
    pool_exec_t *wake[64];
    size_t nwake = 0, i;
    int n = 0;

    pthread_mutex_lock(&p->mu);
    if (p->stopping) {
        pthread_mutex_unlock(&p->mu);
        errno = ESHUTDOWN;
        return -1;
    }
    if (head && s_inline_ok(p, head)) {
        /* Run it here (see the top of this file).  It counts as running, so
         * the pool looks busy to anyone who asks meanwhile. */
        head->state = POOL_JOB_RUNNING;
        p->nrunning++;
        pthread_mutex_unlock(&p->mu);
        /* Timed here, not only by the callback: this is the run that must
         * not go unnoticed if it was long. */
        uint64_t t0 = s_now_us();
        p->run(head, p->arg);
        uint64_t us = s_now_us() - t0;
        if (head->duration_us > us)
            us = head->duration_us;
        pthread_mutex_lock(&p->mu);
        p->nrunning--;
        p->ninline++;
        s_fstat_note(p, head->fn, us);
        int notify = s_done_push(p, head);
        pthread_mutex_unlock(&p->mu);
        if (notify)
            p->notify(p->arg);
        return 1;
    }
    while (head) {
        pool_job_t *j = head;
        head = j->next;
        j->next = NULL;
        j->prev = p->qtail;
        j->state = POOL_JOB_QUEUED;
        if (p->qtail)
            p->qtail->next = j;
        else
            p->qhead = j;
        p->qtail = j;
        p->nqueued++;
        n++;
        /* One idle executor per new job, no more: a woken executor keeps
         * taking jobs until the queue is empty, so busy executors are never
         * signalled. */
        if (p->idle) {
            pool_exec_t *e = p->idle;
            p->idle = e->next_idle;
            e->woken = 1;
            if (nwake < sizeof(wake) / sizeof(wake[0]))
                wake[nwake++] = e;
            else
                pthread_cond_signal(&e->cv);
        }
    }
    pthread_mutex_unlock(&p->mu);
    /* Signalled outside the lock so the woken thread does not block on it
     * at once.  The executors live as long as the pool. */
    for (i = 0; i < nwake; i++)
        pthread_cond_signal(&wake[i]->cv);
    return n;
}

int pool_cancel(pool_t *p, pool_job_t *job)
{
    int removed = 0;

    pthread_mutex_lock(&p->mu);
    if (job->state == POOL_JOB_QUEUED) {
        if (job->prev)
            job->prev->next = job->next;
        else
            p->qhead = job->next;
        if (job->next)
            job->next->prev = job->prev;
        else
            p->qtail = job->prev;
        job->next = job->prev = NULL;
        job->state = POOL_JOB_NEW;
        p->nqueued--;
        removed = 1;
    }
    __atomic_store_n(&job->cancelled, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&p->mu);
    return removed;
}

pool_job_t *pool_take_done(pool_t *p)
{
    pool_job_t *head;

    pthread_mutex_lock(&p->mu);
    head = p->dhead;
    p->dhead = p->dtail = NULL;
    pthread_mutex_unlock(&p->mu);
    return head;
}

pool_job_t *pool_take_queued(pool_t *p)
{
    pool_job_t *head, *j;

    pthread_mutex_lock(&p->mu);
    head = p->qhead;
    p->qhead = p->qtail = NULL;
    p->nqueued = 0;
    for (j = head; j; j = j->next) {
        j->prev = NULL;
        j->state = POOL_JOB_NEW;
    }
    pthread_mutex_unlock(&p->mu);
    return head;
}

size_t pool_queued(pool_t *p)
{
    size_t n;

    pthread_mutex_lock(&p->mu);
    n = p->nqueued;
    pthread_mutex_unlock(&p->mu);
    return n;
}

size_t pool_running(pool_t *p)
{
    size_t n;

    pthread_mutex_lock(&p->mu);
    n = p->nrunning;
    pthread_mutex_unlock(&p->mu);
    return n;
}

int pool_nthreads(const pool_t *p)
{
    return p->nthreads;
}

void pool_set_inline(pool_t *p, unsigned max_us)
{
    pthread_mutex_lock(&p->mu);
    p->inline_us = max_us;
    pthread_mutex_unlock(&p->mu);
}

uint64_t pool_inlined(pool_t *p)
{
    uint64_t n;

    pthread_mutex_lock(&p->mu);
    n = p->ninline;
    pthread_mutex_unlock(&p->mu);
    return n;
}

int pool_shutdown(pool_t *p, double timeout)
{
    struct timespec deadline;
    int i, stuck = 0;

    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    for (i = 0; i < p->nthreads; i++) {
        pool_exec_t *e = &p->execs[i];
        if (e->cur)
            __atomic_store_n(&e->cur->cancelled, 1, __ATOMIC_RELEASE);
        e->woken = 1;
        pthread_cond_signal(&e->cv);
    }
    p->idle = NULL;
    pthread_mutex_unlock(&p->mu);

    /* pthread_timedjoin_np measures against CLOCK_REALTIME. */
    clock_gettime(CLOCK_REALTIME, &deadline);
    if (timeout > 1e6)
        timeout = 1e6;
    if (timeout < 0)
        timeout = 0;
    deadline.tv_sec += (time_t)timeout;
    deadline.tv_nsec += (long)((timeout - (double)(time_t)timeout) * 1e9);
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    for (i = 0; i < p->nthreads; i++) {
        pool_exec_t *e = &p->execs[i];
        if (e->joined)
            continue;
        if (pthread_timedjoin_np(e->tid, NULL, &deadline) == 0)
            e->joined = 1;
        else
            stuck++;
    }
    if (stuck) {
        errno = ETIMEDOUT;
        return -1;
    }
    return 0;
}

void pool_destroy(pool_t *p)
{
    int i;

    if (!p)
        return;
    if (pool_shutdown(p, 5.0) < 0)
        return;     /* stuck threads still use p: leak it, the process exits */
    for (i = 0; i < p->nthreads; i++)
        pthread_cond_destroy(&p->execs[i].cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
