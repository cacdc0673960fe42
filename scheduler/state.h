/*
 * state.h - the scheduler's task graph: tasks, their states, workers,
 * clients, placement.  Pure logic: no sockets, no clock, no event loop.
 * Everything this module wants said to a peer goes out through the three
 * callbacks of sched_ops_t, which the server turns into batched messages
 * (and the unit tests record).
 *
 * Task lifecycle (docs/ARCHITECTURE.md draws it):
 *
 *   NEW -> WAITING      submitted, some dependency not yet in memory
 *   NEW -> READY        submitted, every dependency in memory
 *   NEW -> ERRED        a dependency had already failed
 *   NEW -> CANCELLED    a dependency had already been cancelled
 *   WAITING -> READY    the last pending dependency reached memory
 *   WAITING -> ERRED    a dependency failed (transitively)
 *   WAITING -> CANCELLED  cancelled, or a dependency was
 *   READY -> PROCESSING   placed on a worker (COMPUTE)
 *   READY -> CANCELLED
 *   PROCESSING -> MEMORY  the worker returned a result
 *   PROCESSING -> READY   the worker failed it and retries are left, or
 *                         the worker died / left
 *   PROCESSING -> ERRED   failed with no retries left, or 3 workers died
 *                         running it
 *   PROCESSING -> CANCELLED  cancelled (WCANCEL to the worker)
 *   MEMORY/ERRED/CANCELLED -> FORGOTTEN  released and nothing pending
 *                         depends on it: the record is freed
 *
 * Every change goes through one transition function which keeps the
 * per-state counters, the ready queue and the workers' in-flight lists
 * consistent and logs at debug level.
 *
 * Ownership: the module copies everything it is given (ids, names, args,
 * results).  Pointers passed to the callbacks are valid only during the
 * call.  Not thread-safe: one event loop owns it.
 */
#ifndef SHOAL_SCHED_STATE_H
#define SHOAL_SCHED_STATE_H

#include <stddef.h>
#include <stdint.h>

typedef enum task_state {
    TS_NEW = 0,      /* transient: being created */
    TS_WAITING,      /* dependencies pending */
    TS_READY,        /* in the ready queue */
    TS_PROCESSING,   /* assigned to a worker */
    TS_MEMORY,       /* result held by the scheduler */
    TS_ERRED,        /* failed; error text held */
    TS_CANCELLED,    /* cancelled */
    TS_FORGOTTEN,    /* record freed (counter: how many ever were) */
    TS_NSTATES
} task_state_t;

/* Bounds enforced by sched_submit (the server checks them first, too). */
#define SCHED_MAX_FUNC 255
#define SCHED_MAX_NAME 255
#define SCHED_MAX_DEPS 65536
#define SCHED_MAX_RETRIES 65535
#define SCHED_MAX_ERROR 65536     /* longer error texts are truncated */
/* A task that was on this many workers when they died is failed. */
#define SCHED_SUSPICIOUS_MAX 3
/* Prefetch: queue enough on a worker to cover this much work per thread. */
#define SCHED_PREFETCH_US 10000.0
#define SCHED_PREFETCH_MAX 1000
/* Placement gives a worker short tasks in runs of about this much work (see
 * sched_place); functions this long or longer go one task at a time. */
#define SCHED_CHUNK_US 1000.0
/* Resources and restrictions (sched_submit_t, sched_worker_set_resources). */
#define SCHED_MAX_RESOURCES 64    /* per worker and per task */
#define SCHED_MAX_RESNAME 64      /* bytes of a resource name */
#define SCHED_MAX_RESTRICT 1024   /* worker names a task may be restricted to */
/* Client ids occupy the top 24 bits of task ids. */
#define SCHED_MAX_CLIENT_ID ((1ull << 24) - 1)

typedef struct sched sched_t;
typedef struct sched_task sched_task_t;
typedef struct sched_worker sched_worker_t;
typedef struct sched_client sched_client_t;

/*
 * What the state machine asks to be sent.  `wuser`/`cuser` are the opaque
 * pointers given to sched_worker_add/sched_client_add.
 *   compute: send task t to the worker (read it with the sched_task_*
 *            accessors during the call);
 *   result:  tell the client the outcome of task id: status TASK_OK (payload
 *            = packed result bytes), TASK_ERR or TASK_CANCELLED (payload =
 *            text, not NUL-terminated); worker: name or NULL;
 *   wcancel: tell the worker to abandon task id.
 */
typedef struct sched_ops {
    void (*compute)(void *ctx, void *wuser, const sched_task_t *t);
    void (*result)(void *ctx, void *cuser, uint64_t id, int status, const void *payload,
                   size_t len, const char *worker);
    void (*wcancel)(void *ctx, void *wuser, uint64_t id);
    /* result_kept: task t finished and its result stays on workers: tell the
     *          client (read nbytes and holders with sched_task_holders);
     * wfree:   tell the worker to drop its stored result id (FREE).
     * Either may be NULL. */
    void (*result_kept)(void *ctx, void *cuser, const sched_task_t *t, const char *worker);
    void (*wfree)(void *ctx, void *wuser, uint64_t id);
    /* steal:   ask the worker to give queued task id back (STEAL; answered
     *          with sched_steal_reply).  May be NULL: no stealing. */
    void (*steal)(void *ctx, void *wuser, uint64_t id);
} sched_ops_t;

/* Create an empty scheduler state; `ops` is copied.  NULL + errno. */
sched_t *sched_create(const sched_ops_t *ops, void *ctx);
/* Free everything (tasks, workers, clients) without calling any callback.
 * Accepts NULL. */
void sched_destroy(sched_t *s);

/* ---- clients -------------------------------------------------------------- */

/* Register a client; it gets the next client id (1, 2, ...).  NULL + errno:
 * ENOSPC when the 24-bit id space is used up, ENOMEM. */
sched_client_t *sched_client_add(sched_t *s, void *cuser);
uint64_t sched_client_id(const sched_client_t *c);
/* The client is gone: release every task it still holds (as sched_release)
 * and free the record. */
void sched_client_remove(sched_t *s, sched_client_t *c);

/* ---- workers -------------------------------------------------------------- */

/* Register a worker with `nthreads` (>= 1) executor threads; `name` is
 * copied (used in error texts).  NULL + errno.  Call sched_place after. */
sched_worker_t *sched_worker_add(sched_t *s, const char *name, unsigned nthreads,
                                 void *wuser);
uint64_t sched_worker_id(const sched_worker_t *w);
const char *sched_worker_name(const sched_worker_t *w);
unsigned sched_worker_nthreads(const sched_worker_t *w);
/* Tasks assigned to it now (PROCESSING), and finished since it joined. */
unsigned sched_worker_running(const sched_worker_t *w);
uint64_t sched_worker_completed(const sched_worker_t *w);
/* The in-flight limit the worker has now (nthreads plus prefetch). */
unsigned sched_worker_limit(const sched_t *s, const sched_worker_t *w);
/*
 * The worker is gone.  Its PROCESSING tasks go back to READY.  If `crashed`
 * (connection lost, heartbeat timeout) each such task's suspicious count is
 * incremented and a task that reaches SCHED_SUSPICIOUS_MAX fails with
 * "task X was running on 3 workers that died (last: W)".  An orderly leave
 * (BYE) does not count against the tasks.  Frees the record.  Call
 * sched_place after.
 */
void sched_worker_remove(sched_t *s, sched_worker_t *w, int crashed);
/* The worker's data endpoint address ("tcp://host:port", copied; NULL or
 * "" for none).  0 or -1 (ENOMEM, EINVAL when longer than 255 bytes). */
int sched_worker_set_data(sched_worker_t *w, const char *addr);
/* Its address, "" when none was given. */
const char *sched_worker_data(const sched_worker_t *w);
/* Bytes of results it holds (the sum of their nbytes), and how many. */
uint64_t sched_worker_stored(const sched_worker_t *w);
size_t sched_worker_nheld(const sched_worker_t *w);
/* A named amount (resources), and a name (restrictions); neither needs to
 * be NUL-terminated. */
typedef struct sched_resource {
    const char *name;           /* 1..SCHED_MAX_RESNAME bytes */
    size_t name_len;
    double amount;              /* finite, >= 0 */
} sched_resource_t;
typedef struct sched_name {
    const char *p;
    size_t len;                 /* 1..SCHED_MAX_NAME */
} sched_name_t;
/*
 * The resources w declared (HELLO "resources"; n <= SCHED_MAX_RESOURCES,
 * names distinct).  Call it right after sched_worker_add, before any task
 * is placed on w.  0 or -1 + errno (EINVAL for bad names or amounts, EBUSY
 * when w already has tasks, ENOMEM).
 */
int sched_worker_set_resources(sched_t *s, sched_worker_t *w, const sched_resource_t *r,
                               size_t n);
/* How much of resource `name` w declared and how much its processing
 * tasks use now (both 0 when it has none of it). */
double sched_worker_resource(const sched_worker_t *w, const char *name, double *used);
/* PAUSE from the worker: while paused it gets no new tasks (those it has
 * stay).  Call sched_place after. */
void sched_worker_set_paused(sched_t *s, sched_worker_t *w, int paused);
int sched_worker_paused(const sched_worker_t *w);
/* Stop placing tasks on w (it is about to be removed: a send to it failed).
 * Safe to call from inside a callback of sched_place. */
void sched_worker_pause(sched_t *s, sched_worker_t *w);

/* ---- tasks ---------------------------------------------------------------- */

typedef struct sched_submit {
    uint64_t id;                /* != 0, not in use */
    const char *func;           /* 1..SCHED_MAX_FUNC bytes, not NUL-terminated */
    size_t func_len;
    const void *args;           /* packed msgpack array (copied) */
    size_t args_len;            /* < 4 GiB (what one bin can carry) */
    const uint64_t *deps;       /* ids of known tasks; duplicates allowed */
    size_t ndeps;               /* <= SCHED_MAX_DEPS */
    int32_t priority;           /* higher first */
    uint32_t retries;           /* <= SCHED_MAX_RETRIES */
    const char *name;           /* optional label, or NULL */
    size_t name_len;            /* <= SCHED_MAX_NAME */
    /* Placement constraints (see sched_place), both optional: the task
     * runs only on a worker that declared at least these amounts (which
     * count as used there while it is processing), and only on workers
     * with one of these names.  Copied. */
    const sched_resource_t *res;
    size_t nres;                /* <= SCHED_MAX_RESOURCES */
    const sched_name_t *only;
    size_t nonly;               /* <= SCHED_MAX_RESTRICT */
} sched_submit_t;

/*
 * Submit a task for client c.  Returns 0 when a task record was created
 * (it may have failed or been cancelled at once because of a dependency,
 * which is reported with a result callback), or -1 when it was refused:
 * the reason was reported to the client with a TASK_ERR result callback
 * ("duplicate task id", "unknown dependency N", "out of memory", ...) and
 * errno is EEXIST, ENOENT, EINVAL or ENOMEM.  Call sched_place after.
 */
int sched_submit(sched_t *s, sched_client_t *c, const sched_submit_t *sub);

/*
 * Worker w finished task id: status TASK_OK with the packed result (copied),
 * or anything else with the error text.  duration_us feeds the duration
 * average that sizes the prefetch.  Ignored (returns -1, errno ESRCH) when
 * the task is not processing on w (cancelled, reassigned, unknown); 0
 * otherwise.  Call sched_place after.
 */
int sched_task_done(sched_t *s, sched_worker_t *w, uint64_t id, int status,
                    const void *payload, size_t len, uint64_t duration_us);

/*
 * Worker w finished task id and keeps the result (nbytes packed bytes) in
 * its store: w becomes its holder.  Same rules as sched_task_done.
 */
int sched_task_done_kept(sched_t *s, sched_worker_t *w, uint64_t id, uint64_t nbytes,
                         uint64_t duration_us);

/*
 * Worker w could not run task id: the dependencies deps[0..n) could not be
 * fetched from any holder (TASK_MISSING).  Their holders are dropped (and
 * told to FREE them), lost results are computed again, and the task goes
 * back to waiting; it does not count as a retry.  -1 (ESRCH) when the task
 * is not processing on w.
 */
int sched_task_missing(sched_t *s, sched_worker_t *w, uint64_t id, const uint64_t *deps,
                       size_t n);

/*
 * Client c asks again for the outcome of task id (its holders failed):
 * a result in memory is reported again (with its current holders); one
 * that is lost is computed again and reported when done; a pending task is
 * reported when it finishes anyway.  -1 (ESRCH) for unknown ids and tasks
 * of other clients.
 */
int sched_refetch(sched_t *s, sched_client_t *c, uint64_t id);

/*
 * Client c has put data (nbytes packed bytes) under task id on the workers
 * ws[0..n) (n >= 1): record a task in MEMORY held by them.  It cannot be
 * recomputed: when its last holder is lost it fails with "scattered data
 * lost with worker W".  Refused like sched_submit (duplicate id, invalid
 * id, out of memory: TASK_ERR result callback, -1).
 */
int sched_scatter(sched_t *s, sched_client_t *c, uint64_t id, uint64_t nbytes,
                  sched_worker_t *const *ws, size_t n);

/*
 * Client c drops its interest in task id.  The record is freed once it is
 * finished and no pending task depends on it; a pending task that nothing
 * depends on is cancelled (WCANCEL if running) and freed.  Tasks of other
 * clients and unknown ids are ignored (-1, ESRCH).
 */
int sched_release(sched_t *s, sched_client_t *c, uint64_t id);

/*
 * Client c cancels task id: a waiting, ready or processing task becomes
 * CANCELLED (reported "cancelled"; WCANCEL if it was running; the worker's
 * slot is free at once), and so does every task depending on it, reported
 * "dependency X was cancelled".  Finished tasks are left alone (0).  Tasks
 * of other clients and unknown ids: -1, ESRCH.
 */
int sched_cancel(sched_t *s, sched_client_t *c, uint64_t id);

/* Assign ready tasks to workers with free capacity, highest priority first,
 * then oldest; spreads over workers round-robin, idle threads first.  Tasks
 * of a function measured to take less than SCHED_CHUNK_US go in runs of
 * about SCHED_CHUNK_US of work per worker and turn, instead of one.
 *
 * Tasks with resources or restrictions wait in a queue of their own per
 * "kind" (the same requirements), first come first served within a kind,
 * and go before unconstrained tasks: each goes to a worker with room whose
 * name is allowed and whose free amounts cover the task's, idle workers
 * first.  A kind that no connected worker could ever run stays ready (it
 * waits for such a worker) and is logged once as a warning. */
void sched_place(sched_t *s);

/*
 * Work stealing, for the periodic timer.  When the ready queue is empty and
 * some workers have idle threads while others hold more assigned tasks than
 * threads (tasks queued there, not started), ask those for some of their
 * most recently assigned tasks back (steal callback): at most as many as
 * the idle threads, as the victim has queued, and `max` in all.  Only tasks
 * without constraints whose inputs are held by the scheduler or are cheap
 * to move (kept input bytes at most SCHED_STEAL_BYTES, or moving them at
 * SCHED_STEAL_BPS takes less than the function's average duration) are
 * asked for.  Returns how many were asked for.  O(workers + max).
 */
#define SCHED_STEAL_BYTES (1u << 20)
#define SCHED_STEAL_BPS 1e8
size_t sched_steal(sched_t *s, size_t max);
/*
 * Worker w answered a STEAL for task id: ok (it was still queued and is
 * given back: the task is ready again, to be placed elsewhere; call
 * sched_place after) or not (it has started: it stays).  -1 (ESRCH) when
 * no steal of that task from w is pending; 0 otherwise.
 */
int sched_steal_reply(sched_t *s, sched_worker_t *w, uint64_t id, int ok);

/*
 * Worker w now keeps a copy of result id, fetched from a peer for a task of
 * its own (HAVE).  While the result is kept on workers and its bytes are
 * still wanted (a client future or a pending task), w becomes one more
 * holder: placement counts the copy, peers may fetch from it, and it
 * outlives its first holder.  Otherwise (released, lost and being computed
 * again, unknown) w is told to drop it (wfree).  Returns 1 if recorded,
 * 0 if w was told to drop it, -1 (ENOMEM: also told to drop it).
 */
int sched_replica_add(sched_t *s, sched_worker_t *w, uint64_t id);

/*
 * Hints for handlers of batches: start loading what a sched_* call for task
 * id will touch, a few items before that call, so that the cache misses of
 * the next items overlap with the work on this one.  sched_prefetch loads
 * the line of the id map; sched_prefetch_task (issued later, once that line
 * is in) the task's record.  They change nothing.
 */
void sched_prefetch(const sched_t *s, uint64_t id);
void sched_prefetch_task(const sched_t *s, uint64_t id);

/* ---- task accessors (for the compute callback) --------------------------- */

uint64_t sched_task_id(const sched_task_t *t);
/* NUL-terminated function name (interned). */
const char *sched_task_func(const sched_task_t *t, size_t *len);
/* The same name packed as one MessagePack str (header and bytes, *len in
 * all), ready to be copied into a message as it is. */
const void *sched_task_func_packed(const sched_task_t *t, size_t *len);
void sched_task_args(const sched_task_t *t, const void **p, size_t *n);
size_t sched_task_ndeps(const sched_task_t *t);
/* Dependency i: its id and packed result (it is in memory while t runs). */
void sched_task_dep(const sched_task_t *t, size_t i, uint64_t *id, const void **p,
                    size_t *n);

/* Dependency i as a task (to read its holders). */
const sched_task_t *sched_task_dep_task(const sched_task_t *t, size_t i);
/* If t's result is kept on workers: its holders (*n of them; the array is
 * valid until the state changes) and *nbytes.  NULL (with *n = 0) when the
 * result is held by the scheduler (inline) or t is not in memory. */
sched_worker_t *const *sched_task_holders(const sched_t *s, const sched_task_t *t, size_t *n,
                                          uint64_t *nbytes);

/* ---- introspection -------------------------------------------------------- */

/* Tasks in state st now (TS_FORGOTTEN: records freed so far). */
uint64_t sched_count(const sched_t *s, task_state_t st);
/* Live task records. */
size_t sched_ntasks(const sched_t *s);
size_t sched_nworkers(const sched_t *s);
/* State of task id, or TS_FORGOTTEN if there is no such record. */
task_state_t sched_state_of(const sched_t *s, uint64_t id);
/* Holders of task id's kept result (*n), or NULL. */
sched_worker_t *const *sched_holders_of(const sched_t *s, uint64_t id, size_t *n);
/* Suspicious count and retries left of task id (-1 if unknown). */
int sched_task_suspicious(const sched_t *s, uint64_t id);
/* Bytes of interned function names held now, and how many distinct names. */
size_t sched_interned(const sched_t *s);
const char *sched_state_name(task_state_t st);
/* Average task duration in microseconds (< 0: none measured yet). */
double sched_avg_duration_us(const sched_t *s);

typedef struct sched_stats {
    uint64_t submitted;    /* records created */
    uint64_t refused;      /* submissions refused */
    uint64_t completed;    /* reached MEMORY */
    uint64_t failed;       /* reached ERRED */
    uint64_t cancelled;    /* reached CANCELLED */
    uint64_t retried;      /* errors retried */
    uint64_t requeued;     /* put back in READY after a worker left */
    uint64_t stale;        /* TASK_DONE ignored */
    uint64_t steals;       /* STEAL requests sent */
    uint64_t stolen;       /* tasks given back by a STEAL */
    uint64_t dropped;      /* released results whose bytes were freed while
                            * kept results still hold their records */
    uint64_t replicas;     /* copies recorded as holders (HAVE) */
} sched_stats_t;
void sched_get_stats(const sched_t *s, sched_stats_t *out);

#endif
