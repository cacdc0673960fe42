/*
 * pool.c - executor threads, the job queue and the done queue (see pool.h).
 */
#define _GNU_SOURCE
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

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
    pool_run_fn run;
    pool_notify_fn notify;
    void *arg;
    pool_exec_t execs[];
};

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
            fin->state = POOL_JOB_DONE;
            fin->next = NULL;
            fin->prev = NULL;
            if (p->dtail) {
                p->dtail->next = fin;
            } else {
                p->dhead = fin;
                notify = 1;     /* empty -> non-empty: the loop must look */
            }
            p->dtail = fin;
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
