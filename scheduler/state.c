/*
 * state.c - the scheduler's task graph and placement (see state.h).
 *
 * Data structures, and why:
 *   - tasks: a tmap (tmap.h: hashed with locality) from task id to record.
 *     A record is 144 bytes plus 8 bytes per dependency; the function name
 *     is interned (refcounted, so a client cycling through names does not
 *     grow the table forever), args are one allocation, freed once the task
 *     finishes.  Args and results of up to TASK_INLINE bytes (a no-op's, a
 *     number, one future reference) live inside the record instead, and
 *     records with at most POOL_DEPS dependencies are recycled through a
 *     bounded free list: in the steady state a task costs no malloc at all,
 *     and a record freed a moment ago is still in cache.
 *   - each pending task lists its distinct dependencies (pointers, valid
 *     because a task holds its dependencies: `nholders` keeps a dependency
 *     alive while any pending task needs it);
 *   - each task lists its dependents as (id, seq) pairs rather than
 *     pointers: a dependent may be cancelled and freed before the
 *     dependency finishes, and checking the submission sequence number on
 *     lookup makes a stale entry harmless (even if the client reuses the id)
 *     without an O(n) removal from the list;
 *   - the ready queue is ordered by (priority desc, seq asc).  Tasks usually
 *     become ready in that very order (submitted at one priority, ready at
 *     once), so it is two parts: a FIFO lane, a list that takes every task
 *     that goes after its tail, O(1) in and out and touching only neighbours;
 *     and a binary heap for the rest (priorities, dependencies that finish
 *     out of order, tasks put back).  The first task is the better of the
 *     two heads.  A heap alone costs log2(n) cache misses per task once a
 *     few thousand tasks are ready;
 *   - workers with free capacity sit on two intrusive lists: "idle" (fewer
 *     tasks than threads) and "prefetch" (threads busy, queue not full).
 *     Placement takes the head of idle, else of prefetch, and moves the
 *     worker to the tail: round robin, O(1) per task, no scan.
 *   - propagation (failure/cancellation of dependents) and freeing use
 *     intrusive stacks threaded through links the task is not using at that
 *     moment (see s_kill and s_gc), so they cannot fail for lack of memory
 *     half-way through a graph.
 */
#include "state.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proto.h"
#include "tmap.h"
#include "u64map.h"
#include "util.h"

/* ---- records ---------------------------------------------------------------- */

typedef struct sstr {
    struct sstr *next;   /* same-hash chain */
    struct sstr *uprev, *unext; /* the list of unused names, while refs == 0 */
    uint64_t hash;
    /* How long this function's tasks take: an exponentially weighted
     * average of duration_us (< 0: none measured yet), and the run length
     * placement uses for them (s_chunk_for). */
    double ewma_us;
    uint32_t chunk;
    uint32_t refs;       /* tasks using the name */
    uint32_t len;
    uint32_t hdrlen;     /* bytes of MessagePack str header in packed[] */
    /* The name packed as a MessagePack str, then a NUL: every COMPUTE item
     * copies these bytes as they are instead of packing the name again. */
    uint8_t packed[];
} sstr_t;

static inline const char *s_str(const sstr_t *e)
{
    return (const char *)e->packed + e->hdrlen;
}

/* A dependent: its id and submission sequence number. */
typedef struct dref {
    uint64_t id;
    uint64_t seq;
} dref_t;

enum {
    TF_RELEASED = 1,     /* its client dropped it (or is gone) */
    TF_HOLDS = 2,        /* holds its deps (nholders of each counts it) */
    TF_MARK = 4,         /* scratch: dedupe of deps in sched_submit */
    TF_INGC = 8,         /* on the gc stack */
    TF_INWORK = 16,      /* on a propagation stack */
    TF_PROPAGATED = 32,  /* its error is a dependency's failure */
    TF_INLDATA = 64,     /* data is in data.inl, not data.ptr */
    TF_POOLED = 128,     /* record has POOL_DEPS slots: recycle it */
};

/* Rare features, kept off the record so the no-op path does not pay for
 * them: a result kept on workers has its side record (task_ext_t) in
 * sched.exts, keyed by task id. */
enum {
    XF_KEPT = 1,        /* result on workers: an ext record exists */
    XF_SCATTERED = 2,   /* client data (SCATTER): cannot be recomputed */
    XF_REMOTE = 4,      /* some dependency's result is (or was) kept on workers */
    XF_CONS = 8,        /* resources/restrictions: sched.treq has its kind */
    XF_STEAL = 16,      /* PROCESSING: a STEAL for it is pending */
    XF_KEEPER = 32,     /* a kept result in MEMORY still holding its inputs'
                         * records (counted in their ext's nkeepers) */
};

/*
 * A kind: one set of placement constraints (resources and allowed worker
 * names), shared by every task that has it (refcounted; sched.treq maps a
 * task id to its kind).  Its ready tasks wait in its own FIFO (through
 * wprev/wnext), not in the main ready queue: placement cannot take them in
 * global order, and when the first task of a kind cannot be placed, none
 * of that kind can, so a blocked kind costs one check per placement round,
 * not one per task.
 */
typedef struct rkind {
    struct rkind *next;           /* same-hash chain in sched.kinds */
    struct rkind *aprev, *anext;  /* sched.akinds: kinds with ready tasks */
    uint64_t hash;
    uint32_t refs;                /* tasks of this kind */
    uint32_t nres, nonly;
    int warned;                   /* "no worker can run it" logged */
    struct sched_task *head, *tail; /* ready tasks */
    size_t nready;
    double *amount;               /* nres */
    char **res;                   /* nres names */
    char **only;                  /* nonly worker names */
} rkind_t;

typedef struct task_ext {
    uint64_t nbytes;
    sched_worker_t **who;         /* holders */
    uint32_t nwho, capwho;
    /* Of the task's nholders, those that are kept results in MEMORY
     * (XF_KEEPER): they hold the record only, for a recomputation should
     * they be lost, and need no bytes. */
    uint32_t nkeepers;
} task_ext_t;

/* Args and results this small are stored inside the record: a no-op's, a
 * number, and the args of a task on one future (an array holding one
 * 10-byte reference). */
#define TASK_INLINE 16
/* Records with room for this many dependencies are recycled... */
#define POOL_DEPS 1
/* ...and at most this many are kept for reuse (~11 MB): a burst of a
 * million tasks does not pin its peak memory forever. */
#define POOL_KEEP 65536

struct sched_task {
    uint64_t id;
    uint64_t seq;                 /* submission order; unique */
    sstr_t *func;
    char *name;                   /* NULL or label */
    /* args while pending, the packed result in MEMORY, "text\0worker\0" in
     * ERRED (data_len = text length; never inline), NULL when CANCELLED.
     * Read it through s_data(): up to TASK_INLINE bytes are inline. */
    union {
        uint8_t *ptr;
        uint8_t inl[TASK_INLINE];
    } data;
    sched_client_t *client;       /* NULL once released */
    sched_task_t *cprev, *cnext;  /* client's list; cnext: gc stack once released */
    sched_worker_t *worker;       /* PROCESSING only */
    /* PROCESSING: the worker's list.  READY in the FIFO lane: that lane.
     * WAITING: wnext threads the propagation stack of s_kill. */
    sched_task_t *wprev, *wnext;
    dref_t *dependents;
    /* Args and results came out of one bin (< 4 GiB); error texts are at
     * most SCHED_MAX_ERROR. */
    uint32_t data_len;
    uint32_t ndependents, capdependents;
    uint32_t ndeps;               /* entries in deps[] while TF_HOLDS */
    uint32_t npending;            /* deps not yet in MEMORY */
    uint32_t nholders;            /* pending tasks holding this one */
    uint32_t heap_idx;
    int32_t priority;
    uint16_t retries;             /* left */
    uint8_t suspicious;
    uint8_t state;
    uint8_t flags;
    uint8_t xflags;               /* XF_* (in what was padding) */
    sched_task_t *deps[];         /* distinct dependencies */
};

/* Memory per pending task is a target (docs/PERFORMANCE.md): a record with
 * one dependency must stay in glibc's 160-byte chunks. */
_Static_assert(sizeof(sched_task_t) + sizeof(sched_task_t *) <= 152,
               "task record grew past its malloc size class");

static inline const uint8_t *s_data(const sched_task_t *t)
{
    return (t->flags & TF_INLDATA) ? t->data.inl : t->data.ptr;
}

static inline void s_data_free(sched_task_t *t)
{
    if (!(t->flags & TF_INLDATA))
        free(t->data.ptr);
    t->flags &= (uint8_t)~TF_INLDATA;
    t->data.ptr = NULL;
    t->data_len = 0;
}

/* Make t's data a copy of p[0..n).  -1 (nothing changed) if out of memory
 * or n does not fit the record's 32-bit length. */
static int s_data_set(sched_task_t *t, const void *p, size_t n)
{
    if (n > UINT32_MAX)
        return -1;
    if (n <= TASK_INLINE) {
        s_data_free(t);
        if (n)
            memcpy(t->data.inl, p, n);
        t->flags |= TF_INLDATA;
        t->data_len = (uint32_t)n;
        return 0;
    }
    uint8_t *buf = malloc(n);
    if (!buf)
        return -1;
    memcpy(buf, p, n);
    s_data_free(t);
    t->data.ptr = buf;
    t->data_len = (uint32_t)n;
    return 0;
}

enum { WL_NONE = 0, WL_IDLE, WL_PREFETCH };

struct sched_worker {
    uint64_t id;
    char *name;
    void *user;
    unsigned nthreads;
    unsigned inflight;
    uint64_t completed;
    int list;                       /* WL_* */
    int removing;
    int paused;                     /* PAUSE: no new tasks */
    sched_worker_t *lprev, *lnext;  /* idle/prefetch list */
    sched_worker_t *prev, *next;    /* all workers */
    sched_task_t *tasks;            /* PROCESSING on it */
    char *data;                     /* data endpoint address, or NULL */
    u64map_t *held;                 /* id -> task whose result it holds */
    uint64_t stored;                /* sum of their nbytes */
    /* Declared resources (sched_worker_set_resources): totals and what
     * its processing constrained tasks use. */
    uint32_t nres;
    char **rname;
    double *rtotal, *rused;
};

struct sched_client {
    uint64_t id;
    void *user;
    sched_task_t *tasks;
    sched_client_t *prev, *next;
};

typedef struct wlist {
    sched_worker_t *head, *tail;
} wlist_t;

struct sched {
    sched_ops_t ops;
    void *ctx;
    tmap_t *tasks;                 /* id -> record */
    u64map_t *exts;                /* id -> task_ext_t, for XF_KEPT tasks */
    u64map_t *strs;                /* hash -> sstr_t chain */
    size_t nstrs;
    sched_task_t **heap;           /* ready tasks not in the FIFO lane */
    size_t nheap, capheap;
    sched_task_t *rq_head, *rq_tail; /* the FIFO lane, through wprev/wnext */
    sstr_t *last_str;              /* the name interned last (a cache) */
    sstr_t *unused_head, *unused_tail; /* names no task uses, oldest first */
    size_t nunused;
    sched_task_t *pool_head, *pool_tail; /* records to reuse, through cnext */
    size_t npool;
    sched_worker_t *workers;
    size_t nworkers;
    sched_client_t *clients;
    wlist_t idle, prefetch;
    uint64_t next_client, next_worker, next_seq;
    uint64_t count[TS_NSTATES];
    double ewma_us;                /* < 0: no sample yet */
    unsigned per_thread;           /* prefetch: extra tasks per thread */
    sched_task_t *gc;              /* stack through cnext */
    sched_stats_t st;
    u64map_t *kinds;               /* hash -> rkind_t chain */
    u64map_t *treq;                /* task id -> rkind_t, for XF_CONS tasks */
    rkind_t *akinds;               /* kinds with ready tasks */
    size_t ncons;                  /* ready tasks in kinds */
    size_t nstealing;              /* STEALs not answered yet */
};

/* heap_idx of a task in no part of the ready queue, and in the FIFO lane;
 * anything else is its position in the heap. */
#define HEAP_NONE UINT32_MAX
#define HEAP_FIFO (UINT32_MAX - 1)
#define HEAP_CONS (UINT32_MAX - 2)   /* in its kind's queue */

static const char *const s_state_names[TS_NSTATES] = {
    [TS_NEW] = "new",           [TS_WAITING] = "waiting", [TS_READY] = "ready",
    [TS_PROCESSING] = "processing", [TS_MEMORY] = "memory", [TS_ERRED] = "erred",
    [TS_CANCELLED] = "cancelled", [TS_FORGOTTEN] = "forgotten",
};

/* The only legal moves (see state.h and docs/ARCHITECTURE.md). */
static const uint8_t s_allowed[TS_NSTATES][TS_NSTATES] = {
    [TS_WAITING] = {[TS_READY] = 1, [TS_ERRED] = 1, [TS_CANCELLED] = 1},
    [TS_READY] = {[TS_PROCESSING] = 1, [TS_CANCELLED] = 1, [TS_WAITING] = 1, [TS_ERRED] = 1},
    [TS_PROCESSING] = {[TS_MEMORY] = 1, [TS_READY] = 1, [TS_ERRED] = 1, [TS_CANCELLED] = 1},
    [TS_NEW] = {[TS_WAITING] = 1, [TS_READY] = 1, [TS_ERRED] = 1, [TS_CANCELLED] = 1,
                [TS_MEMORY] = 1},
    [TS_MEMORY] = {[TS_FORGOTTEN] = 1, [TS_WAITING] = 1, [TS_READY] = 1, [TS_ERRED] = 1},
    [TS_ERRED] = {[TS_FORGOTTEN] = 1},
    [TS_CANCELLED] = {[TS_FORGOTTEN] = 1},
};

const char *sched_state_name(task_state_t st)
{
    return (unsigned)st < TS_NSTATES ? s_state_names[st] : "?";
}

static inline int s_final(const sched_task_t *t)
{
    return t->state == TS_MEMORY || t->state == TS_ERRED || t->state == TS_CANCELLED;
}

/* The task's name, or its id in decimal. */
static const char *s_label(const sched_task_t *t, char *buf, size_t cap)
{
    if (t->name)
        return t->name;
    snprintf(buf, cap, "%" PRIu64, t->id);
    return buf;
}

/* ---- interned function names -------------------------------------------------- */

/*
 * A name whose last task is freed is not freed at once: it goes on the
 * unused list, and only the oldest beyond NAMES_KEEP are dropped.  The name
 * carries what was learnt about the function's durations, and a client
 * typically submits the same functions batch after batch, each batch
 * released before the next arrives.  The table is still bounded: the names
 * in use plus NAMES_KEEP.
 */
#define NAMES_KEEP 64

static unsigned s_chunk_for(double ewma_us);

static void s_unused_unlink(sched_t *s, sstr_t *e)
{
    if (e->uprev)
        e->uprev->unext = e->unext;
    else
        s->unused_head = e->unext;
    if (e->unext)
        e->unext->uprev = e->uprev;
    else
        s->unused_tail = e->uprev;
    e->uprev = e->unext = NULL;
    s->nunused--;
}

/* One more task uses e. */
static sstr_t *s_name_ref(sched_t *s, sstr_t *e)
{
    if (e->refs++ == 0) {
        s_unused_unlink(s, e);
        s->nstrs++;
    }
    s->last_str = e;
    return e;
}

/* Out of the table and freed (it is unused). */
static void s_name_free(sched_t *s, sstr_t *e)
{
    s_unused_unlink(s, e);
    sstr_t *head = u64map_get(s->strs, e->hash);
    if (head == e) {
        /* Replacing an existing key never allocates, so cannot fail. */
        if (e->next)
            u64map_put(s->strs, e->hash, e->next);
        else
            u64map_del(s->strs, e->hash);
    } else {
        for (sstr_t *q = head; q; q = q->next) {
            if (q->next == e) {
                q->next = e->next;
                break;
            }
        }
    }
    if (s->last_str == e)
        s->last_str = NULL;
    free(e);
}

/* n is at most SCHED_MAX_FUNC (255): a fixstr or str8 header. */
static sstr_t *s_intern(sched_t *s, const char *p, size_t n)
{
    /* Batches are mostly one function: check the last one first, before
     * hashing the name. */
    sstr_t *e = s->last_str;
    if (e && e->len == n && memcmp(s_str(e), p, n) == 0)
        return s_name_ref(s, e);
    uint64_t h = util_fnv1a64(p, n);
    if (h == 0)
        h = 1; /* key 0 is reserved by u64map */
    sstr_t *head = u64map_get(s->strs, h);
    for (e = head; e; e = e->next)
        if (e->len == n && memcmp(s_str(e), p, n) == 0)
            return s_name_ref(s, e);
    uint32_t hl = n < 32 ? 1 : 2;
    e = malloc(sizeof *e + hl + n + 1);
    if (!e)
        return NULL;
    e->uprev = e->unext = NULL;
    e->hash = h;
    e->ewma_us = -1;
    e->chunk = s_chunk_for(-1);
    e->refs = 1;
    e->len = (uint32_t)n;
    e->hdrlen = hl;
    if (hl == 1) {
        e->packed[0] = (uint8_t)(0xa0 | n);
    } else {
        e->packed[0] = 0xd9;
        e->packed[1] = (uint8_t)n;
    }
    memcpy(e->packed + hl, p, n);
    e->packed[hl + n] = '\0';
    e->next = head;
    if (u64map_put(s->strs, h, e) < 0) {
        free(e);
        return NULL;
    }
    s->nstrs++;
    s->last_str = e;
    return e;
}

static void s_unintern(sched_t *s, sstr_t *e)
{
    if (!e || --e->refs > 0)
        return;
    s->nstrs--;
    e->unext = NULL;
    e->uprev = s->unused_tail;
    if (s->unused_tail)
        s->unused_tail->unext = e;
    else
        s->unused_head = e;
    s->unused_tail = e;
    s->nunused++;
    if (s->nunused > NAMES_KEEP)
        s_name_free(s, s->unused_head);
}

/* ---- ready heap ------------------------------------------------------------------ */

static inline int s_before(const sched_task_t *a, const sched_task_t *b)
{
    if (a->priority != b->priority)
        return a->priority > b->priority;
    return a->seq < b->seq;
}

static inline void s_heap_set(sched_t *s, size_t i, sched_task_t *t)
{
    s->heap[i] = t;
    t->heap_idx = (uint32_t)i;
}

static void s_heap_up(sched_t *s, size_t i)
{
    sched_task_t *t = s->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!s_before(t, s->heap[p]))
            break;
        s_heap_set(s, i, s->heap[p]);
        i = p;
    }
    s_heap_set(s, i, t);
}

static void s_heap_down(sched_t *s, size_t i)
{
    sched_task_t *t = s->heap[i];
    size_t n = s->nheap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && s_before(s->heap[c + 1], s->heap[c]))
            c++;
        if (!s_before(s->heap[c], t))
            break;
        s_heap_set(s, i, s->heap[c]);
        i = c;
    }
    s_heap_set(s, i, t);
}

/* Capacity is reserved in sched_submit (one slot per pending task), so a
 * push never needs memory. */
static void s_heap_push(sched_t *s, sched_task_t *t)
{
    if (s->nheap >= s->capheap) {
        log_err("BUG: ready heap over its reserved capacity");
        abort();
    }
    s->heap[s->nheap] = t;
    t->heap_idx = (uint32_t)s->nheap;
    s->nheap++;
    s_heap_up(s, s->nheap - 1);
}

static void s_heap_remove(sched_t *s, sched_task_t *t)
{
    size_t i = t->heap_idx;
    sched_task_t *last = s->heap[--s->nheap];
    if (i != s->nheap) {
        s_heap_set(s, i, last);
        s_heap_up(s, i);
        s_heap_down(s, last->heap_idx);
    }
    t->heap_idx = HEAP_NONE;
}

/* Add t to the ready queue: to the FIFO lane if it goes after the lane's
 * tail (or the lane is empty), else to the heap. */
static void s_cons_push(sched_t *s, sched_task_t *t);
static void s_cons_remove(sched_t *s, sched_task_t *t);
static rkind_t *s_kind_ref(sched_t *s, const sched_submit_t *sub);
static void s_kind_unref(sched_t *s, rkind_t *k);
static void s_kind_free(rkind_t *k);
static void s_worker_free_res(sched_worker_t *w);

static void s_ready_push(sched_t *s, sched_task_t *t)
{
    if (t->xflags & XF_CONS) {
        s_cons_push(s, t);
        return;
    }
    sched_task_t *tail = s->rq_tail;
    if (tail && !s_before(tail, t)) {
        s_heap_push(s, t);
        return;
    }
    t->wnext = NULL;
    t->wprev = tail;
    if (tail)
        tail->wnext = t;
    else
        s->rq_head = t;
    s->rq_tail = t;
    t->heap_idx = HEAP_FIFO;
}

static void s_ready_remove(sched_t *s, sched_task_t *t)
{
    if (t->heap_idx != HEAP_FIFO) {
        if (t->heap_idx == HEAP_CONS)
            s_cons_remove(s, t);
        else
            s_heap_remove(s, t);
        return;
    }
    if (t->wprev)
        t->wprev->wnext = t->wnext;
    else
        s->rq_head = t->wnext;
    if (t->wnext)
        t->wnext->wprev = t->wprev;
    else
        s->rq_tail = t->wprev;
    t->wprev = t->wnext = NULL;
    t->heap_idx = HEAP_NONE;
}

/* The first ready task (NULL if none): the better of the two heads. */
static inline sched_task_t *s_ready_first(const sched_t *s)
{
    sched_task_t *f = s->rq_head;
    sched_task_t *h = s->nheap ? s->heap[0] : NULL;
    if (!f)
        return h;
    if (!h)
        return f;
    return s_before(f, h) ? f : h;
}

static int s_heap_reserve(sched_t *s, size_t want)
{
    if (want <= s->capheap)
        return 0;
    size_t cap = s->capheap ? s->capheap * 2 : 1024;
    while (cap < want)
        cap *= 2;
    sched_task_t **h = realloc(s->heap, cap * sizeof *h);
    if (!h)
        return -1;
    s->heap = h;
    s->capheap = cap;
    return 0;
}

/* ---- worker capacity lists -------------------------------------------------------- */

static unsigned s_limit(const sched_t *s, const sched_worker_t *w)
{
    return w->nthreads * (1u + s->per_thread);
}

static void s_wl_unlink(sched_t *s, sched_worker_t *w)
{
    wlist_t *l = w->list == WL_IDLE ? &s->idle : w->list == WL_PREFETCH ? &s->prefetch : NULL;
    if (!l)
        return;
    if (w->lprev)
        w->lprev->lnext = w->lnext;
    else
        l->head = w->lnext;
    if (w->lnext)
        w->lnext->lprev = w->lprev;
    else
        l->tail = w->lprev;
    w->lprev = w->lnext = NULL;
    w->list = WL_NONE;
}

static void s_wl_append(sched_t *s, sched_worker_t *w, int which)
{
    wlist_t *l = which == WL_IDLE ? &s->idle : &s->prefetch;
    w->lnext = NULL;
    w->lprev = l->tail;
    if (l->tail)
        l->tail->lnext = w;
    else
        l->head = w;
    l->tail = w;
    w->list = which;
}

/* Put w at the tail of the list its load says (or on none when full).
 * Moving to the tail after every assignment is what makes placement round
 * robin. */
static void s_relist(sched_t *s, sched_worker_t *w)
{
    s_wl_unlink(s, w);
    if (w->removing || w->paused)
        return;
    if (w->inflight < w->nthreads)
        s_wl_append(s, w, WL_IDLE);
    else if (w->inflight < s_limit(s, w))
        s_wl_append(s, w, WL_PREFETCH);
}

/*
 * Extra tasks queued per thread: enough to cover SCHED_PREFETCH_US of work
 * at the average task duration, so a thread never waits for a round trip
 * to the scheduler, clamped to [1, SCHED_PREFETCH_MAX].  One extra per
 * thread while no duration has been measured.
 */
static unsigned s_prefetch_for(double ewma_us)
{
    if (ewma_us < 0)
        return 1;
    if (ewma_us < SCHED_PREFETCH_US / SCHED_PREFETCH_MAX)
        return SCHED_PREFETCH_MAX;
    double p = SCHED_PREFETCH_US / ewma_us;
    unsigned n = (unsigned)p;
    if ((double)n < p)
        n++;
    return n < 1 ? 1 : n > SCHED_PREFETCH_MAX ? SCHED_PREFETCH_MAX : n;
}

/*
 * Tasks of one function given to a worker in a row before placement moves
 * on: enough for SCHED_CHUNK_US of work at the function's average duration,
 * clamped to [1, SCHED_PREFETCH_MAX]; 1 (plain round robin) for functions
 * that long or longer and for those not measured yet.
 */
static unsigned s_chunk_for(double ewma_us)
{
    if (ewma_us < 0 || ewma_us >= SCHED_CHUNK_US)
        return 1;
    if (ewma_us < SCHED_CHUNK_US / SCHED_PREFETCH_MAX)
        return SCHED_PREFETCH_MAX;
    return (unsigned)(SCHED_CHUNK_US / ewma_us);
}

static void s_update_prefetch(sched_t *s)
{
    unsigned p = s_prefetch_for(s->ewma_us), cur = s->per_thread;
    if (p == cur)
        return;
    /* Relisting is O(workers), and sched_place runs once per loop
     * iteration: follow the average only when it moved by more than an
     * eighth (or reached a bound), not each time its integer part wobbles,
     * which durations of some tens of microseconds do all the time. */
    unsigned diff = p > cur ? p - cur : cur - p;
    if (diff <= cur / 8 && p != 1 && p != SCHED_PREFETCH_MAX)
        return;
    s->per_thread = p;
    for (sched_worker_t *w = s->workers; w; w = w->next)
        s_relist(s, w);
}

/* ---- the transition function ------------------------------------------------------ */

static void s_task_link_worker(sched_task_t *t, sched_worker_t *w)
{
    t->worker = w;
    t->wprev = NULL;
    t->wnext = w->tasks;
    if (w->tasks)
        w->tasks->wprev = t;
    w->tasks = t;
    w->inflight++;
}

static void s_task_unlink_worker(sched_task_t *t)
{
    sched_worker_t *w = t->worker;
    if (t->wprev)
        t->wprev->wnext = t->wnext;
    else
        w->tasks = t->wnext;
    if (t->wnext)
        t->wnext->wprev = t->wprev;
    t->wprev = t->wnext = NULL;
    t->worker = NULL;
    w->inflight--;
}

/* A constrained task starts (sign 1) or stops (-1) using its resources
 * on w.  Amounts are matched by name (both lists are short). */
static void s_res_account(sched_t *s, const sched_task_t *t, sched_worker_t *w, double sign)
{
    const rkind_t *k = u64map_get(s->treq, t->id);
    if (!k)
        return;
    for (uint32_t i = 0; i < k->nres; i++) {
        for (uint32_t j = 0; j < w->nres; j++) {
            if (strcmp(k->res[i], w->rname[j]) == 0) {
                w->rused[j] += sign * k->amount[i];
                /* Sums of fractions drift: an idle resource is exactly 0. */
                if (w->rused[j] < 1e-9 * (w->rtotal[j] > 1 ? w->rtotal[j] : 1))
                    w->rused[j] = 0;
                break;
            }
        }
    }
}

/*
 * The one place a task changes state.  Keeps in step with the state: the
 * per-state counters, the ready heap (member iff READY), the worker's
 * in-flight list and capacity (member iff PROCESSING; `w` names the worker
 * when entering PROCESSING).  An illegal move is a bug in this file, not
 * bad input, so it aborts.
 */
static void s_transition(sched_t *s, sched_task_t *t, task_state_t to, sched_worker_t *w)
{
    task_state_t from = (task_state_t)t->state;
    if (!s_allowed[from][to] || (to == TS_PROCESSING && !w)) {
        log_err("BUG: task %" PRIu64 ": illegal transition %s -> %s", t->id,
                sched_state_name(from), sched_state_name(to));
        abort();
    }
    sched_worker_t *left = NULL;
    switch (from) {
    case TS_READY:
        s_ready_remove(s, t);
        break;
    case TS_PROCESSING:
        left = t->worker;
        if (t->xflags & (XF_CONS | XF_STEAL)) {
            if (t->xflags & XF_STEAL) {
                t->xflags &= (uint8_t)~XF_STEAL; /* a late reply finds nothing */
                s->nstealing--;
            }
            if (t->xflags & XF_CONS)
                s_res_account(s, t, left, -1.0);
        }
        s_task_unlink_worker(t);
        break;
    default:
        break;
    }
    if (from != TS_NEW)
        s->count[from]--;
    t->state = (uint8_t)to;
    s->count[to]++;
    switch (to) {
    case TS_READY:
        s_ready_push(s, t);
        break;
    case TS_PROCESSING:
        s_task_link_worker(t, w);
        if (t->xflags & XF_CONS)
            s_res_account(s, t, w, 1.0);
        s_relist(s, w);
        break;
    case TS_MEMORY:
        s->st.completed++;
        break;
    case TS_ERRED:
        s->st.failed++;
        break;
    case TS_CANCELLED:
        s->st.cancelled++;
        break;
    default:
        break;
    }
    if (left)
        s_relist(s, left);
    log_debug("task %" PRIu64 ": %s -> %s%s%s", t->id, sched_state_name(from),
              sched_state_name(to), w ? " on " : "", w ? w->name : "");
}

/* ---- results kept on workers ------------------------------------------------------ */

static void s_recompute(sched_t *s, sched_task_t *x);
static int s_dependents_reserve(sched_task_t *d);
static sched_task_t *s_running_on(sched_t *s, sched_worker_t *w, uint64_t id);
static int s_refuse(sched_t *s, sched_client_t *c, uint64_t id, int err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void s_kill(sched_t *s, sched_task_t *root, task_state_t to, const char *msg, size_t len,
                   const char *worker);

static inline task_ext_t *s_ext(const sched_t *s, const sched_task_t *t)
{
    return (t->xflags & XF_KEPT) ? u64map_get(s->exts, t->id) : NULL;
}

/* t's ext record, created (empty) if it has none.  NULL if out of memory. */
static task_ext_t *s_ext_make(sched_t *s, sched_task_t *t)
{
    task_ext_t *e = s_ext(s, t);
    if (e)
        return e;
    e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    if (u64map_put(s->exts, t->id, e) < 0) {
        free(e);
        return NULL;
    }
    t->xflags |= XF_KEPT;
    return e;
}

/* w holds t's result.  0 or -1 (out of memory, nothing changed). */
static int s_hold_add(sched_t *s, sched_task_t *t, task_ext_t *e, sched_worker_t *w)
{
    (void)s;
    for (uint32_t i = 0; i < e->nwho; i++)
        if (e->who[i] == w)
            return 0;
    if (e->nwho == e->capwho) {
        uint32_t cap = e->capwho ? e->capwho * 2 : 2;
        sched_worker_t **v = realloc(e->who, cap * sizeof *v);
        if (!v)
            return -1;
        e->who = v;
        e->capwho = cap;
    }
    if (u64map_put(w->held, t->id, t) < 0)
        return -1;
    e->who[e->nwho++] = w;
    w->stored += e->nbytes;
    return 0;
}

/* Holder i of t drops it (FREE sent if `tell`). */
static void s_hold_drop(sched_t *s, sched_task_t *t, task_ext_t *e, uint32_t i, int tell)
{
    sched_worker_t *w = e->who[i];
    e->who[i] = e->who[--e->nwho];
    u64map_del(w->held, t->id);
    w->stored -= e->nbytes < w->stored ? e->nbytes : w->stored;
    if (tell && !w->removing && s->ops.wfree)
        s->ops.wfree(s->ctx, w->user, t->id);
}

/* Forget that t's result is kept anywhere (FREE to the holders if `tell`). */
static void s_ext_free(sched_t *s, sched_task_t *t, int tell)
{
    task_ext_t *e = u64map_del(s->exts, t->id);
    t->xflags &= (uint8_t)~XF_KEPT;
    if (!e)
        return;
    while (e->nwho)
        s_hold_drop(s, t, e, e->nwho - 1, tell);
    free(e->who);
    free(e);
}

/* A kept result in memory with no holder left. */
static int s_is_lost(const sched_t *s, const sched_task_t *t)
{
    if (t->state != TS_MEMORY || !(t->xflags & XF_KEPT))
        return 0;
    const task_ext_t *e = s_ext(s, t);
    return !e || e->nwho == 0;
}

/* ---- reporting and bookkeeping ----------------------------------------------------- */

static void s_report(sched_t *s, const sched_task_t *t, int status, const void *p, size_t n,
                     const char *worker)
{
    if (!t->client || (t->flags & TF_RELEASED) || !s->ops.result)
        return;
    s->ops.result(s->ctx, t->client->user, t->id, status, p, n, worker);
}

/* Error text of an ERRED task (never NULL). */
static const char *s_err_text(const sched_task_t *t, size_t *len)
{
    if (!t->data.ptr || (t->flags & TF_INLDATA)) {
        static const char oom[] = "error text lost (out of memory)";
        *len = sizeof oom - 1;
        return oom;
    }
    *len = t->data_len;
    return (const char *)t->data.ptr;
}

static const char *s_err_worker(const sched_task_t *t)
{
    if (!t->data.ptr || (t->flags & TF_INLDATA))
        return NULL;
    const char *w = (const char *)t->data.ptr + t->data_len + 1;
    return *w ? w : NULL;
}

/* Replace the task's data with "text\0worker\0". */
static void s_set_error(sched_task_t *t, const char *msg, size_t len, const char *worker)
{
    if (len > SCHED_MAX_ERROR)
        len = SCHED_MAX_ERROR;
    size_t wl = worker ? strlen(worker) : 0;
    s_data_free(t);
    uint8_t *d = malloc(len + wl + 2);
    if (!d)
        return;
    memcpy(d, msg, len);
    d[len] = '\0';
    if (wl)
        memcpy(d + len + 1, worker, wl);
    d[len + 1 + wl] = '\0';
    t->data.ptr = d;
    t->data_len = (uint32_t)len;
}

static void s_gc_push(sched_t *s, sched_task_t *t)
{
    if (t->flags & TF_INGC)
        return;
    t->flags |= TF_INGC;
    t->cnext = s->gc; /* released tasks are on no client list */
    s->gc = t;
}

/*
 * t just reached a final state: it no longer needs its dependencies, and
 * nobody will look for it as a dependency to wait on.  Drop the holds
 * (a released dependency nobody else holds becomes garbage), drop the
 * dependents list, and collect t itself if it is released and unheld.
 */
/*
 * A released result kept on workers that only kept results hold (no pending
 * task needs its bytes) is freed on its workers now; its record stays, as a
 * lost result, so that it can be computed again should a holder of one of
 * those kept results die.  Without this a chain of large results would keep
 * every intermediate on the workers until its end was released.  Scattered
 * data cannot be computed again and keeps its bytes.
 */
static void s_maybe_drop_bytes(sched_t *s, sched_task_t *d)
{
    if (!(d->flags & TF_RELEASED) || d->nholders == 0 || d->state != TS_MEMORY ||
        (d->xflags & XF_SCATTERED))
        return;
    task_ext_t *e = s_ext(s, d);
    if (!e || e->nwho == 0 || e->nkeepers < d->nholders)
        return;
    while (e->nwho)
        s_hold_drop(s, d, e, e->nwho - 1, 1);
    s->st.dropped++;
}

/* A kept result in memory holds its inputs for a recomputation only: count
 * it as such (XF_KEEPER), or stop counting it (it is pending again, or
 * gone). */
static void s_keeper_set(sched_t *s, sched_task_t *t, int on)
{
    if (!(t->flags & TF_HOLDS) || !!(t->xflags & XF_KEEPER) == !!on)
        return;
    for (uint32_t i = 0; i < t->ndeps; i++) {
        task_ext_t *e = s_ext(s, t->deps[i]);
        if (!e)
            continue;
        if (on)
            e->nkeepers++;
        else if (e->nkeepers > 0)
            e->nkeepers--;
    }
    if (on)
        t->xflags |= XF_KEEPER;
    else
        t->xflags &= (uint8_t)~XF_KEEPER;
}

static void s_drop_holds(sched_t *s, sched_task_t *t)
{
    if (t->flags & TF_HOLDS) {
        s_keeper_set(s, t, 0);
        for (uint32_t i = 0; i < t->ndeps; i++) {
            sched_task_t *d = t->deps[i];
            if (--d->nholders == 0 && (d->flags & TF_RELEASED))
                s_gc_push(s, d);
            else
                s_maybe_drop_bytes(s, d);
        }
        t->flags &= (uint8_t)~TF_HOLDS;
    }
    t->ndeps = 0;
}

static void s_finalize(sched_t *s, sched_task_t *t)
{
    /* A result kept on workers can be lost with them and then has to be
     * computed again: keep its inputs' records while it is in memory (their
     * bytes go once nothing pending needs them, see s_maybe_drop_bytes; if
     * this result is lost they are computed again in turn). */
    if (!((t->xflags & XF_KEPT) && t->state == TS_MEMORY)) {
        s_drop_holds(s, t);
    } else if (t->flags & TF_HOLDS) {
        s_keeper_set(s, t, 1);
        for (uint32_t i = 0; i < t->ndeps; i++)
            s_maybe_drop_bytes(s, t->deps[i]);
    }
    t->npending = 0;
    free(t->dependents);
    t->dependents = NULL;
    t->ndependents = t->capdependents = 0;
    if ((t->flags & TF_RELEASED) && t->nholders == 0)
        s_gc_push(s, t);
}

/* The dependent behind a reference, if it is still the same task and
 * still waiting. */
static sched_task_t *s_deref(sched_t *s, const dref_t *r)
{
    sched_task_t *d = tmap_get(s->tasks, r->id);
    if (!d || d->seq != r->seq || d->state != TS_WAITING)
        return NULL;
    return d;
}

static void s_push_dependents(sched_t *s, sched_task_t *t, sched_task_t **stack)
{
    for (uint32_t i = 0; i < t->ndependents; i++) {
        sched_task_t *d = s_deref(s, &t->dependents[i]);
        if (!d || (d->flags & TF_INWORK))
            continue;
        /* A WAITING task is on no worker list, so wnext is free. */
        d->flags |= TF_INWORK;
        d->wnext = *stack;
        *stack = d;
    }
}

/* Move one non-final task to ERRED or CANCELLED and report it. */
static void s_end(sched_t *s, sched_task_t *t, task_state_t to, const char *msg, size_t len,
                  const char *worker, int propagated)
{
    if (to == TS_CANCELLED && t->state == TS_PROCESSING && s->ops.wcancel)
        s->ops.wcancel(s->ctx, t->worker->user, t->id);
    if (to == TS_ERRED) {
        s_set_error(t, msg, len, worker);
        if (propagated)
            t->flags |= TF_PROPAGATED;
    } else {
        s_data_free(t);
    }
    s_transition(s, t, to, NULL);
    if (to == TS_ERRED) {
        size_t n;
        const char *text = s_err_text(t, &n);
        s_report(s, t, TASK_ERR, text, n, worker);
    } else {
        s_report(s, t, TASK_CANCELLED, msg, len, NULL);
    }
}

/* "dependency <label> failed: <msg>" / "dependency <label> was cancelled";
 * malloc'd, or NULL. */
static char *s_dep_message(const sched_task_t *root, task_state_t to, const char *msg,
                           size_t len, size_t *out_len)
{
    char lbuf[32];
    const char *label = s_label(root, lbuf, sizeof lbuf);
    size_t ll = strlen(label);
    if (len > SCHED_MAX_ERROR)
        len = SCHED_MAX_ERROR;
    static const char pre[] = "dependency ";
    static const char failed[] = " failed: ";
    static const char cancelled[] = " was cancelled";
    size_t n = sizeof pre - 1 + ll +
               (to == TS_ERRED ? sizeof failed - 1 + len : sizeof cancelled - 1);
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    char *p = out;
    memcpy(p, pre, sizeof pre - 1);
    p += sizeof pre - 1;
    memcpy(p, label, ll);
    p += ll;
    if (to == TS_ERRED) {
        memcpy(p, failed, sizeof failed - 1);
        p += sizeof failed - 1;
        memcpy(p, msg, len);
        p += len;
    } else {
        memcpy(p, cancelled, sizeof cancelled - 1);
        p += sizeof cancelled - 1;
    }
    *p = '\0';
    *out_len = n;
    return out;
}

/*
 * Fail (to = ERRED) or cancel (to = CANCELLED) the non-final task `root`
 * with `msg`, and with it every task that waits on it, directly or not.
 * The dependents get "dependency <root> failed: <msg>" (or "... was
 * cancelled"): they all name the task that actually failed.  Iterative: a
 * chain of a million tasks does not recurse a million deep.
 */
static void s_kill(sched_t *s, sched_task_t *root, task_state_t to, const char *msg, size_t len,
                   const char *worker)
{
    size_t dlen = 0;
    char *dmsg = s_dep_message(root, to, msg, len, &dlen);
    if (!dmsg) {
        static const char oom[] = "a dependency failed (message lost: out of memory)";
        dlen = sizeof oom - 1;
    }
    const char *dtext = dmsg ? dmsg : "a dependency failed (message lost: out of memory)";

    sched_task_t *stack = NULL;
    s_end(s, root, to, msg, len, worker, 0);
    s_push_dependents(s, root, &stack);
    s_finalize(s, root);
    while (stack) {
        sched_task_t *d = stack;
        stack = d->wnext;
        d->wnext = NULL;
        d->flags &= (uint8_t)~TF_INWORK;
        if (d->state != TS_WAITING)
            continue;
        s_end(s, d, to, dtext, dlen, worker, 1);
        s_push_dependents(s, d, &stack);
        s_finalize(s, d);
    }
    free(dmsg);
}

/* A zeroed record with room for ndeps dependencies (TF_POOLED if it has
 * POOL_DEPS), or NULL. */
static sched_task_t *s_record_alloc(sched_t *s, size_t ndeps)
{
    sched_task_t *t;
    if (ndeps > POOL_DEPS)
        return calloc(1, sizeof *t + ndeps * sizeof(sched_task_t *));
    t = s->pool_head;
    if (t) {
        /* The most recently freed record: the one most likely in cache. */
        s->pool_head = t->cnext;
        s->npool--;
        memset(t, 0, sizeof *t);
    } else {
        t = calloc(1, sizeof *t + POOL_DEPS * sizeof(sched_task_t *));
        if (!t)
            return NULL;
    }
    t->flags = TF_POOLED;
    return t;
}

/* Give back a record whose contents were already released. */
static void s_record_free(sched_t *s, sched_task_t *t)
{
    if (!(t->flags & TF_POOLED) || s->npool >= POOL_KEEP) {
        free(t);
        return;
    }
    t->cnext = s->pool_head;
    s->pool_head = t;
    s->npool++;
}

static void s_free(sched_t *s, sched_task_t *t)
{
    s_transition(s, t, TS_FORGOTTEN, NULL);
    if (t->xflags & XF_KEPT)
        s_ext_free(s, t, 1);
    if (t->xflags & XF_CONS)
        s_kind_unref(s, u64map_del(s->treq, t->id));
    s_drop_holds(s, t);
    tmap_del(s->tasks, t->id);
    if (t->client) {
        /* Not reached through the gc (released tasks have no client), but
         * keep the record consistent for sched_destroy-like callers. */
        if (t->cprev)
            t->cprev->cnext = t->cnext;
        else
            t->client->tasks = t->cnext;
        if (t->cnext)
            t->cnext->cprev = t->cprev;
    }
    s_unintern(s, t->func);
    free(t->name);
    s_data_free(t);
    free(t->dependents);
    s_record_free(s, t);
}

/*
 * Free what can be freed: released tasks nobody holds.  A released task
 * that is still pending and that no pending task needs is cancelled first
 * (on its worker, too): nobody wants its result.  Freeing a task drops its
 * holds, which may make its dependencies garbage in turn; they go on the
 * same stack.
 */
static void s_gc(sched_t *s)
{
    static const char why[] = "released";
    while (s->gc) {
        sched_task_t *x = s->gc;
        s->gc = x->cnext;
        x->cnext = NULL;
        x->flags &= (uint8_t)~TF_INGC;
        if (!(x->flags & TF_RELEASED) || x->nholders > 0)
            continue;
        if (!s_final(x)) {
            /* No pending dependents (nholders is 0), so nothing to
             * propagate; s_kill's finalize pushes x back to be freed. */
            s_kill(s, x, TS_CANCELLED, why, sizeof why - 1, NULL);
            continue;
        }
        s_free(s, x);
    }
}

static void s_release(sched_t *s, sched_task_t *t)
{
    if (t->flags & TF_RELEASED)
        return;
    sched_client_t *c = t->client;
    if (c) {
        if (t->cprev)
            t->cprev->cnext = t->cnext;
        else
            c->tasks = t->cnext;
        if (t->cnext)
            t->cnext->cprev = t->cprev;
        t->cprev = t->cnext = NULL;
        t->client = NULL;
    }
    t->flags |= TF_RELEASED;
    if (t->nholders == 0)
        s_gc_push(s, t);
    else
        s_maybe_drop_bytes(s, t);
}

/* ---- lifecycle ---------------------------------------------------------------------- */

sched_t *sched_create(const sched_ops_t *ops, void *ctx)
{
    sched_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    if (ops)
        s->ops = *ops;
    s->ctx = ctx;
    s->tasks = tmap_create(1024);
    s->strs = u64map_create(64);
    s->exts = u64map_create(64);
    s->kinds = u64map_create(16);
    s->treq = u64map_create(16);
    if (!s->tasks || !s->strs || !s->exts || !s->kinds || !s->treq) {
        int e = errno;
        sched_destroy(s);
        errno = e ? e : ENOMEM;
        return NULL;
    }
    s->ewma_us = -1;
    s->per_thread = s_prefetch_for(-1);
    return s;
}

/* Value destructors for sched_destroy's maps. */
static void s_ext_destroy(void *v)
{
    task_ext_t *e = v;
    free(e->who);
    free(e);
}

static void s_sstr_chain_free(void *v)
{
    for (sstr_t *e = v, *n; e; e = n) {
        n = e->next;
        free(e);
    }
}

static void s_kind_chain_free(void *v)
{
    for (rkind_t *k = v, *n; k; k = n) {
        n = k->next;
        s_kind_free(k);
    }
}

void sched_destroy(sched_t *s)
{
    if (!s)
        return;
    if (s->tasks) {
        size_t pos = 0;
        uint64_t key;
        void *val;
        while (tmap_next(s->tasks, &pos, &key, &val)) {
            sched_task_t *t = val;
            free(t->name);
            s_data_free(t);
            free(t->dependents);
            free(t);
        }
        tmap_destroy(s->tasks);
    }
    while (s->pool_head) {
        sched_task_t *t = s->pool_head;
        s->pool_head = t->cnext;
        free(t);
    }
    u64map_destroy_each(s->exts, s_ext_destroy);
    u64map_destroy_each(s->strs, s_sstr_chain_free);
    u64map_destroy_each(s->kinds, s_kind_chain_free);
    u64map_destroy(s->treq);
    while (s->workers) {
        sched_worker_t *w = s->workers;
        s->workers = w->next;
        u64map_destroy(w->held);
        s_worker_free_res(w);
        free(w->data);
        free(w->name);
        free(w);
    }
    while (s->clients) {
        sched_client_t *c = s->clients;
        s->clients = c->next;
        free(c);
    }
    free(s->heap);
    free(s);
}

/* ---- computing lost results again -------------------------------------------------- */

/* Make t a dependent of the pending task d (d will wake it). 0 or -1. */
static int s_wait_on(sched_task_t *t, sched_task_t *d)
{
    if (s_dependents_reserve(d) < 0)
        return -1;
    d->dependents[d->ndependents].id = t->id;
    d->dependents[d->ndependents].seq = t->seq;
    d->ndependents++;
    t->npending++;
    return 0;
}

/* Fail t because its dependency d failed or was cancelled. */
static void s_fail_by_dep(sched_t *s, sched_task_t *t, sched_task_t *d)
{
    size_t dl = 0, n = 0;
    const char *text = d->state == TS_ERRED ? s_err_text(d, &n) : NULL;
    char *dm = (d->flags & TF_PROPAGATED) ? NULL : s_dep_message(d, (task_state_t)d->state, text, n, &dl);
    if (d->state == TS_ERRED && (d->flags & TF_PROPAGATED))
        s_kill(s, t, TS_ERRED, text, n, s_err_worker(d));
    else if (dm)
        s_kill(s, t, d->state == TS_ERRED ? TS_ERRED : TS_CANCELLED, dm, dl,
               d->state == TS_ERRED ? s_err_worker(d) : NULL);
    else
        s_kill(s, t, TS_ERRED, "a dependency failed (out of memory)", 35, NULL);
    free(dm);
}

/*
 * x's result is lost (kept, no holder left): compute it again, and with it
 * every lost result it needs, transitively.  The closure is collected
 * first (iteratively, through a vector), then every task in it goes back
 * to WAITING and waits on those of its inputs that are not in memory;
 * those with none become READY.
 */
static void s_recompute(sched_t *s, sched_task_t *x)
{
    static const char oom[] = "scheduler out of memory computing a lost result again";
    size_t n = 0, cap = 16;
    sched_task_t **v = malloc(cap * sizeof *v);
    if (!v)
        goto nomem;
    x->flags |= TF_INWORK;
    v[n++] = x;
    for (size_t i = 0; i < n; i++) {
        sched_task_t *y = v[i];
        for (uint32_t j = 0; j < y->ndeps; j++) {
            sched_task_t *d = y->deps[j];
            if ((d->flags & TF_INWORK) || !s_is_lost(s, d) || (d->xflags & XF_SCATTERED))
                continue;
            if (n == cap) {
                sched_task_t **nv = realloc(v, 2 * cap * sizeof *nv);
                if (!nv) {
                    for (size_t k = 0; k < n; k++)
                        v[k]->flags &= (uint8_t)~TF_INWORK;
                    free(v);
                    goto nomem;
                }
                v = nv;
                cap *= 2;
            }
            d->flags |= TF_INWORK;
            v[n++] = d;
        }
    }
    size_t pending = s->count[TS_WAITING] + s->count[TS_READY] + s->count[TS_PROCESSING];
    if (s_heap_reserve(s, pending + n) < 0) {
        for (size_t k = 0; k < n; k++)
            v[k]->flags &= (uint8_t)~TF_INWORK;
        free(v);
        goto nomem;
    }
    for (size_t i = 0; i < n; i++) {
        v[i]->flags &= (uint8_t)~TF_INWORK;
        v[i]->npending = 0;
        /* Pending again: its holds are for its inputs' bytes now. */
        s_keeper_set(s, v[i], 0);
        s_transition(s, v[i], TS_WAITING, NULL);
    }
    for (size_t i = 0; i < n; i++) {
        sched_task_t *y = v[i], *bad = NULL;
        int fail = 0;
        for (uint32_t j = 0; j < y->ndeps && !bad && !fail; j++) {
            sched_task_t *d = y->deps[j];
            if (d->xflags & XF_KEPT)
                y->xflags |= XF_REMOTE;
            if (d->state == TS_MEMORY && !s_is_lost(s, d))
                continue;
            if (d->state == TS_ERRED || d->state == TS_CANCELLED || d->state == TS_MEMORY)
                bad = d; /* MEMORY here: lost scattered data */
            else if (s_wait_on(y, d) < 0)
                fail = 1;
        }
        if (bad && bad->state != TS_MEMORY) {
            s_fail_by_dep(s, y, bad);
        } else if (bad) {
            static const char lost[] = "scattered data lost";
            s_kill(s, y, TS_ERRED, lost, sizeof lost - 1, NULL);
        } else if (fail) {
            s_kill(s, y, TS_ERRED, oom, sizeof oom - 1, NULL);
        }
        s->st.requeued++;
    }
    for (size_t i = 0; i < n; i++)
        if (v[i]->state == TS_WAITING && v[i]->npending == 0)
            s_transition(s, v[i], TS_READY, NULL);
    free(v);
    return;
nomem:
    log_err("%s (task %" PRIu64 ")", oom, x->id);
    s_ext_free(s, x, 0);
    s_kill(s, x, TS_ERRED, oom, sizeof oom - 1, NULL);
}

/*
 * Before a task with inputs kept on workers is placed: are they all still
 * somewhere?  Lost ones are computed again and t waits for them (back to
 * WAITING); a failed one fails t.  1: t can run now.
 */
static int s_check_inputs(sched_t *s, sched_task_t *t)
{
    for (uint32_t j = 0; j < t->ndeps; j++) {
        sched_task_t *d = t->deps[j];
        if (d->state == TS_MEMORY && !s_is_lost(s, d))
            continue;
        if (s_is_lost(s, d) && !(d->xflags & XF_SCATTERED))
            s_recompute(s, d);
        if (d->state == TS_ERRED || d->state == TS_CANCELLED || d->state == TS_MEMORY) {
            if (d->state == TS_MEMORY) {
                static const char lost[] = "scattered data lost";
                s_kill(s, t, TS_ERRED, lost, sizeof lost - 1, NULL);
            } else {
                s_fail_by_dep(s, t, d);
            }
            s_gc(s);
            return 0;
        }
        if (s_wait_on(t, d) < 0) {
            static const char oom[] = "scheduler out of memory";
            s_kill(s, t, TS_ERRED, oom, sizeof oom - 1, NULL);
            s_gc(s);
            return 0;
        }
    }
    if (t->npending) {
        s_transition(s, t, TS_WAITING, NULL);
        return 0;
    }
    return 1;
}

/* How long (us) a task given to w now would wait for a thread: its queue
 * (run first in, first out) at the average task duration. */
static double s_wait_us(const sched_t *s, const sched_worker_t *w)
{
    if (w->inflight < w->nthreads)
        return 0;
    return (double)(w->inflight - w->nthreads + 1) * s->ewma_us / (double)w->nthreads;
}

/*
 * Where a task with inputs kept on workers should run: the worker where it
 * would start soonest, counting the wait for a thread and the fetch of the
 * input bytes that worker lacks (at SCHED_STEAL_BPS, the rate stealing
 * assumes too).  Candidates are `dflt` (the worker plain placement would
 * take) and the holders of the inputs, including holders that are already
 * full: a task behind a short queue where its 8 MB input lies starts
 * sooner than one that first fetches it, and the fetch costs both workers'
 * CPU besides.  Ties go to the holder of more bytes, then to an idle
 * worker.  Until a task duration has been measured the wait cannot be
 * estimated: then the choice is among workers with room only, the one
 * holding the most bytes, as before.  Returns dflt when no holder is
 * better.
 */
static sched_worker_t *s_best_place(const sched_t *s, const sched_task_t *t,
                                    sched_worker_t *dflt)
{
    enum { NCAND = 16 };
    sched_worker_t *cw[NCAND];
    uint64_t cb[NCAND], total = 0;
    size_t nc = 0;
    int timed = s->ewma_us >= 0;
    for (uint32_t j = 0; j < t->ndeps; j++) {
        const task_ext_t *e = s_ext(s, t->deps[j]);
        if (!e)
            continue;
        total += e->nbytes;
        for (uint32_t i = 0; i < e->nwho; i++) {
            sched_worker_t *w = e->who[i];
            if (w->removing || w->paused || (!timed && w->list == WL_NONE))
                continue;
            size_t k = 0;
            while (k < nc && cw[k] != w)
                k++;
            if (k == nc) {
                if (nc == NCAND)
                    continue;
                cw[nc] = w;
                cb[nc++] = 0;
            }
            cb[k] += e->nbytes;
        }
    }
    sched_worker_t *best = NULL;
    uint64_t most = 0;
    if (!timed) {
        for (size_t k = 0; k < nc; k++) {
            /* Prefer an idle worker among equals. */
            if (!best || cb[k] > most || (cb[k] == most && cw[k]->list == WL_IDLE &&
                                          best->list != WL_IDLE)) {
                best = cw[k];
                most = cb[k];
            }
        }
        return best ? best : dflt;
    }
    double cost = 0;
    for (size_t k = 0; k <= nc; k++) {
        sched_worker_t *w = k < nc ? cw[k] : dflt;
        uint64_t held = 0;
        if (k < nc) {
            held = cb[k];
        } else {
            for (size_t i = 0; i < nc; i++)
                if (cw[i] == dflt)
                    held = cb[i];
        }
        double c = s_wait_us(s, w) + (double)(total - held) / SCHED_STEAL_BPS * 1e6;
        if (!best || c < cost ||
            (c == cost && (held > most || (held == most && w->list == WL_IDLE &&
                                           best->list != WL_IDLE)))) {
            best = w;
            cost = c;
            most = held;
        }
    }
    return best;
}

int sched_task_missing(sched_t *s, sched_worker_t *w, uint64_t id, const uint64_t *deps,
                       size_t n)
{
    sched_task_t *t = s_running_on(s, w, id);
    if (!t)
        return -1;
    for (size_t i = 0; i < n; i++) {
        sched_task_t *d = tmap_get(s->tasks, deps[i]);
        if (!d || d->state != TS_MEMORY || !(d->xflags & XF_KEPT))
            continue;
        uint32_t j = 0;
        while (j < t->ndeps && t->deps[j] != d)
            j++;
        if (j == t->ndeps)
            continue; /* not one of its inputs: ignore the claim */
        /* No holder could serve it: whatever the holders still say they
         * have, it is gone for this cluster.  Tell them to drop it. */
        task_ext_t *e = s_ext(s, d);
        while (e && e->nwho)
            s_hold_drop(s, d, e, e->nwho - 1, 1);
        if (d->xflags & XF_SCATTERED) {
            static const char lost[] = "scattered data lost (no holder could serve it)";
            s_ext_free(s, d, 0);
            s_kill(s, d, TS_ERRED, lost, sizeof lost - 1, w->name);
        }
    }
    t->xflags |= XF_REMOTE;
    s_transition(s, t, TS_READY, NULL);
    s->st.requeued++;
    s_gc(s);
    return 0;
}

int sched_refetch(sched_t *s, sched_client_t *c, uint64_t id)
{
    sched_task_t *t = tmap_get(s->tasks, id);
    if (!t || !c || t->client != c) {
        errno = ESRCH;
        return -1;
    }
    if (t->state == TS_MEMORY) {
        if (s_is_lost(s, t)) {
            if (t->xflags & XF_SCATTERED) {
                static const char lost[] = "scattered data lost";
                s_ext_free(s, t, 0);
                s_kill(s, t, TS_ERRED, lost, sizeof lost - 1, NULL);
            } else {
                s_recompute(s, t);
            }
        } else if (t->xflags & XF_KEPT) {
            if (s->ops.result_kept)
                s->ops.result_kept(s->ctx, c->user, t, NULL);
        } else {
            s_report(s, t, TASK_OK, s_data(t), t->data_len, NULL);
        }
    } else if (t->state == TS_ERRED) {
        size_t n;
        const char *text = s_err_text(t, &n);
        s_report(s, t, TASK_ERR, text, n, s_err_worker(t));
    }
    s_gc(s);
    return 0;
}

int sched_scatter(sched_t *s, sched_client_t *c, uint64_t id, uint64_t nbytes,
                  sched_worker_t *const *ws, size_t n)
{
    if (id == 0)
        return s_refuse(s, c, id, EINVAL, "invalid task id 0");
    if (tmap_get(s->tasks, id))
        return s_refuse(s, c, id, EEXIST, "duplicate task id");
    if (n == 0 || !ws)
        return s_refuse(s, c, id, EINVAL, "scattered data on no worker");
    sched_task_t *t = s_record_alloc(s, 0);
    if (!t)
        return s_refuse(s, c, id, ENOMEM, "out of memory");
    t->id = id;
    if (tmap_put(s->tasks, id, t) < 0) {
        s_record_free(s, t);
        return s_refuse(s, c, id, ENOMEM, "out of memory");
    }
    task_ext_t *e = s_ext_make(s, t);
    int ok = e != NULL;
    if (e) {
        e->nbytes = nbytes;
        for (size_t i = 0; i < n && ok; i++)
            ok = s_hold_add(s, t, e, ws[i]) == 0;
    }
    if (!ok) {
        s_ext_free(s, t, 0);
        tmap_del(s->tasks, id);
        s_record_free(s, t);
        return s_refuse(s, c, id, ENOMEM, "out of memory");
    }
    t->xflags |= XF_SCATTERED;
    t->seq = ++s->next_seq;
    t->heap_idx = HEAP_NONE;
    t->client = c;
    if (c) {
        t->cnext = c->tasks;
        if (c->tasks)
            c->tasks->cprev = t;
        c->tasks = t;
    } else {
        t->flags |= TF_RELEASED;
    }
    s->st.submitted++;
    s_transition(s, t, TS_MEMORY, NULL);
    s->st.completed--; /* not a computation */
    if (!c)
        s_gc_push(s, t);
    s_gc(s);
    return 0;
}

/* ---- clients ------------------------------------------------------------------------ */

sched_client_t *sched_client_add(sched_t *s, void *cuser)
{
    if (s->next_client >= SCHED_MAX_CLIENT_ID) {
        errno = ENOSPC;
        return NULL;
    }
    sched_client_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->id = ++s->next_client;
    c->user = cuser;
    c->next = s->clients;
    if (s->clients)
        s->clients->prev = c;
    s->clients = c;
    return c;
}

uint64_t sched_client_id(const sched_client_t *c)
{
    return c->id;
}

void sched_client_remove(sched_t *s, sched_client_t *c)
{
    if (!c)
        return;
    while (c->tasks)
        s_release(s, c->tasks);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
    s_gc(s);
}

/* ---- workers ------------------------------------------------------------------------ */

sched_worker_t *sched_worker_add(sched_t *s, const char *name, unsigned nthreads, void *wuser)
{
    if (nthreads == 0 || nthreads > 65536 || !name) {
        errno = EINVAL;
        return NULL;
    }
    sched_worker_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->name = strdup(name);
    if (!w->name) {
        free(w);
        errno = ENOMEM;
        return NULL;
    }
    w->held = u64map_create(16);
    if (!w->held) {
        free(w->name);
        free(w);
        errno = ENOMEM;
        return NULL;
    }
    w->id = ++s->next_worker;
    w->user = wuser;
    w->nthreads = nthreads;
    w->next = s->workers;
    if (s->workers)
        s->workers->prev = w;
    s->workers = w;
    s->nworkers++;
    s_relist(s, w);
    return w;
}

uint64_t sched_worker_id(const sched_worker_t *w) { return w->id; }
const char *sched_worker_name(const sched_worker_t *w) { return w->name; }
unsigned sched_worker_nthreads(const sched_worker_t *w) { return w->nthreads; }
unsigned sched_worker_running(const sched_worker_t *w) { return w->inflight; }
uint64_t sched_worker_completed(const sched_worker_t *w) { return w->completed; }
unsigned sched_worker_limit(const sched_t *s, const sched_worker_t *w) { return s_limit(s, w); }

/*
 * w is gone with the results it held.  A result nobody else holds is lost:
 * scattered data fails ("scattered data lost with worker W", and its
 * waiting dependents with it); a result its client still wants is computed
 * again now; one only pending tasks need is computed again when they are
 * placed (s_check_inputs), or when a worker reports it missing.  O(what w
 * held).
 */
static void s_lose_held(sched_t *s, sched_worker_t *w)
{
    size_t n = u64map_size(w->held), k = 0;
    if (!n)
        return;
    sched_task_t **v = malloc(n * sizeof *v);
    size_t pos = 0;
    uint64_t key;
    void *val;
    while (u64map_next(w->held, &pos, &key, &val)) {
        if (v)
            v[k++] = val;
    }
    if (!v) {
        /* Out of memory: take them one at a time (O(n) each, but correct). */
        while (u64map_next(w->held, &(size_t){0}, &key, &val)) {
            sched_task_t *t = val;
            task_ext_t *e = s_ext(s, t);
            for (uint32_t i = 0; e && i < e->nwho; i++)
                if (e->who[i] == w)
                    s_hold_drop(s, t, e, i, 0);
            u64map_del(w->held, key);
        }
        return;
    }
    for (size_t j = 0; j < k; j++) {
        sched_task_t *t = v[j];
        task_ext_t *e = s_ext(s, t);
        for (uint32_t i = 0; e && i < e->nwho; i++) {
            if (e->who[i] == w) {
                s_hold_drop(s, t, e, i, 0);
                break;
            }
        }
    }
    for (size_t j = 0; j < k; j++) {
        sched_task_t *t = v[j];
        if (!s_is_lost(s, t))
            continue;
        if (t->xflags & XF_SCATTERED) {
            char msg[320];
            int m = snprintf(msg, sizeof msg, "scattered data lost with worker %s", w->name);
            s_ext_free(s, t, 0);
            s_kill(s, t, TS_ERRED, msg, m < 0 ? 0 : (size_t)m, w->name);
        } else if (!(t->flags & TF_RELEASED)) {
            s_recompute(s, t);
        }
    }
    free(v);
}

void sched_worker_remove(sched_t *s, sched_worker_t *w, int crashed)
{
    if (!w)
        return;
    w->removing = 1;
    s_wl_unlink(s, w);
    if (w->prev)
        w->prev->next = w->next;
    else
        s->workers = w->next;
    if (w->next)
        w->next->prev = w->prev;
    s->nworkers--;
    while (w->tasks) {
        sched_task_t *t = w->tasks;
        if (crashed && t->suspicious < UINT8_MAX)
            t->suspicious++;
        if (crashed && t->suspicious >= SCHED_SUSPICIOUS_MAX) {
            char lbuf[32], msg[512];
            int n = snprintf(msg, sizeof msg,
                             "task %s was running on %d workers that died (last: %s)",
                             s_label(t, lbuf, sizeof lbuf), (int)t->suspicious, w->name);
            size_t len = n < 0 ? 0 : (size_t)n >= sizeof msg ? sizeof msg - 1 : (size_t)n;
            s_kill(s, t, TS_ERRED, msg, len, w->name);
        } else {
            s_transition(s, t, TS_READY, NULL);
            s->st.requeued++;
        }
    }
    s_lose_held(s, w);
    u64map_destroy(w->held);
    s_worker_free_res(w);
    free(w->data);
    free(w->name);
    free(w);
    s_gc(s);
}

int sched_worker_set_data(sched_worker_t *w, const char *addr)
{
    size_t n = addr ? strlen(addr) : 0;
    if (n > 255) {
        errno = EINVAL;
        return -1;
    }
    char *d = NULL;
    if (n) {
        d = strdup(addr);
        if (!d) {
            errno = ENOMEM;
            return -1;
        }
    }
    free(w->data);
    w->data = d;
    return 0;
}

const char *sched_worker_data(const sched_worker_t *w) { return w->data ? w->data : ""; }
uint64_t sched_worker_stored(const sched_worker_t *w) { return w->stored; }
size_t sched_worker_nheld(const sched_worker_t *w) { return u64map_size(w->held); }

void sched_worker_set_paused(sched_t *s, sched_worker_t *w, int paused)
{
    w->paused = paused ? 1 : 0;
    s_relist(s, w);
}

int sched_worker_paused(const sched_worker_t *w) { return w->paused; }

void sched_worker_pause(sched_t *s, sched_worker_t *w)
{
    if (!w)
        return;
    w->removing = 1;
    s_wl_unlink(s, w);
}

size_t sched_nworkers(const sched_t *s)
{
    return s->nworkers;
}

/* ---- tasks -------------------------------------------------------------------------- */

static int s_refuse(sched_t *s, sched_client_t *c, uint64_t id, int err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int s_refuse(sched_t *s, sched_client_t *c, uint64_t id, int err, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    size_t len = n < 0 ? 0 : (size_t)n >= sizeof why ? sizeof why - 1 : (size_t)n;
    s->st.refused++;
    if (c && s->ops.result)
        s->ops.result(s->ctx, c->user, id, TASK_ERR, why, len, NULL);
    errno = err;
    return -1;
}

static int s_dependents_reserve(sched_task_t *d)
{
    if (d->ndependents < d->capdependents)
        return 0;
    if (d->capdependents >= UINT32_MAX / 2)
        return -1;
    uint32_t cap = d->capdependents ? d->capdependents * 2 : 2;
    dref_t *v = realloc(d->dependents, cap * sizeof *v);
    if (!v)
        return -1;
    d->dependents = v;
    d->capdependents = cap;
    return 0;
}

/*
 * Check sub's resources and restrictions and record them: *kind gets the
 * task's kind (referenced, and mapped from the id in treq).  -1 when
 * refused (reported, as sched_submit).
 */
static __attribute__((noinline, cold)) int s_constraints(sched_t *s, sched_client_t *c,
                                                        const sched_submit_t *sub,
                                                        rkind_t **kind)
{
    uint64_t id = sub->id;
    if (sub->nres > SCHED_MAX_RESOURCES || (sub->nres && !sub->res))
        return s_refuse(s, c, id, EINVAL, "more than %d resources", SCHED_MAX_RESOURCES);
    for (size_t i = 0; i < sub->nres; i++) {
        const sched_resource_t *r = &sub->res[i];
        if (!r->name || r->name_len == 0 || r->name_len > SCHED_MAX_RESNAME ||
            memchr(r->name, '\0', r->name_len))
            return s_refuse(s, c, id, EINVAL, "resource names must be 1 to %d bytes",
                            SCHED_MAX_RESNAME);
        if (!(r->amount >= 0) || r->amount > 1e300)
            return s_refuse(s, c, id, EINVAL, "resource %.*s: amount must be a finite number >= 0",
                            (int)r->name_len, r->name);
        /* Named twice, it would be counted twice but checked once each. */
        for (size_t j = 0; j < i; j++)
            if (sub->res[j].name_len == r->name_len &&
                memcmp(sub->res[j].name, r->name, r->name_len) == 0)
                return s_refuse(s, c, id, EINVAL, "resource %.*s named twice",
                                (int)r->name_len, r->name);
    }
    if (sub->nonly > SCHED_MAX_RESTRICT || (sub->nonly && !sub->only))
        return s_refuse(s, c, id, EINVAL, "restricted to more than %d workers",
                        SCHED_MAX_RESTRICT);
    for (size_t i = 0; i < sub->nonly; i++)
        if (!sub->only[i].p || sub->only[i].len == 0 || sub->only[i].len > SCHED_MAX_NAME ||
            memchr(sub->only[i].p, '\0', sub->only[i].len))
            return s_refuse(s, c, id, EINVAL, "worker names must be 1 to %d bytes",
                            SCHED_MAX_NAME);

    rkind_t *k = s_kind_ref(s, sub);
    if (!k)
        return s_refuse(s, c, id, ENOMEM, "out of memory");
    if (u64map_put(s->treq, id, k) < 0) {
        s_kind_unref(s, k);
        return s_refuse(s, c, id, ENOMEM, "out of memory");
    }
    *kind = k;
    return 0;
}

/* Undo s_constraints (a submission refused later on).  kind may be NULL. */
static void s_constraints_undo(sched_t *s, uint64_t id, rkind_t *kind)
{
    if (!kind)
        return;
    u64map_del(s->treq, id);
    s_kind_unref(s, kind);
}

int sched_submit(sched_t *s, sched_client_t *c, const sched_submit_t *sub)
{
    uint64_t id = sub->id;
    if (id == 0)
        return s_refuse(s, c, id, EINVAL, "invalid task id 0");
    if (tmap_get(s->tasks, id))
        return s_refuse(s, c, id, EEXIST, "duplicate task id");
    if (!sub->func || sub->func_len == 0 || sub->func_len > SCHED_MAX_FUNC)
        return s_refuse(s, c, id, EINVAL, "invalid function name (1 to %d bytes)",
                        SCHED_MAX_FUNC);
    if (sub->name_len > SCHED_MAX_NAME || (sub->name_len && !sub->name))
        return s_refuse(s, c, id, EINVAL, "task name longer than %d bytes", SCHED_MAX_NAME);
    if (sub->ndeps > SCHED_MAX_DEPS || (sub->ndeps && !sub->deps))
        return s_refuse(s, c, id, EINVAL, "more than %d dependencies", SCHED_MAX_DEPS);
    if (sub->retries > SCHED_MAX_RETRIES)
        return s_refuse(s, c, id, EINVAL, "retries above %d", SCHED_MAX_RETRIES);
    if (sub->args_len > UINT32_MAX)
        return s_refuse(s, c, id, EINVAL, "args of 4 GiB or more");
    /* Constraints are rare: checked and recorded out of line, so the
     * plain path pays one test for them. */
    rkind_t *kind = NULL;
    if (__builtin_expect((sub->nres | sub->nonly) != 0, 0) &&
        s_constraints(s, c, sub, &kind) < 0)
        return -1;
    sched_task_t *t = s_record_alloc(s, sub->ndeps);
    if (!t) {
        s_constraints_undo(s, id, kind);
        return s_refuse(s, c, id, ENOMEM, "out of memory");
    }

    /* Resolve and dedupe the dependencies; note the first one that already
     * failed or was cancelled. */
    sched_task_t *bad = NULL;
    uint32_t nd = 0;
    for (size_t i = 0; i < sub->ndeps; i++) {
        sched_task_t *d = tmap_get(s->tasks, sub->deps[i]);
        if (!d) {
            for (uint32_t j = 0; j < nd; j++)
                t->deps[j]->flags &= (uint8_t)~TF_MARK;
            s_record_free(s, t);
            s_constraints_undo(s, id, kind);
            return s_refuse(s, c, id, ENOENT, "unknown dependency %" PRIu64, sub->deps[i]);
        }
        if (d->flags & TF_MARK)
            continue;
        d->flags |= TF_MARK;
        t->deps[nd++] = d;
        if (!bad && (d->state == TS_ERRED || d->state == TS_CANCELLED))
            bad = d;
    }
    for (uint32_t j = 0; j < nd; j++)
        t->deps[j]->flags &= (uint8_t)~TF_MARK;

    /* Allocate everything before changing anything, so a refusal leaves no
     * trace. */
    t->func = s_intern(s, sub->func, sub->func_len);
    if (!t->func)
        goto nomem;
    if (sub->name_len) {
        t->name = malloc(sub->name_len + 1);
        if (!t->name)
            goto nomem;
        memcpy(t->name, sub->name, sub->name_len);
        t->name[sub->name_len] = '\0';
    }
    if (!bad) {
        if (s_data_set(t, sub->args, sub->args_len) < 0)
            goto nomem;
        size_t pending = s->count[TS_WAITING] + s->count[TS_READY] + s->count[TS_PROCESSING];
        if (s_heap_reserve(s, pending + 1) < 0)
            goto nomem;
        for (uint32_t j = 0; j < nd; j++)
            if (t->deps[j]->state != TS_MEMORY && s_dependents_reserve(t->deps[j]) < 0)
                goto nomem;
    }
    if (tmap_put(s->tasks, id, t) < 0)
        goto nomem;
    if (kind)
        t->xflags |= XF_CONS;

    t->id = id;
    t->seq = ++s->next_seq;
    t->priority = sub->priority;
    t->retries = (uint16_t)sub->retries;
    t->heap_idx = HEAP_NONE;
    t->client = c;
    if (c) {
        t->cnext = c->tasks;
        if (c->tasks)
            c->tasks->cprev = t;
        c->tasks = t;
    } else {
        t->flags |= TF_RELEASED;
    }
    s->st.submitted++;

    if (bad) {
        /* Dead on arrival: it holds nothing and nothing waits on it yet. */
        if (bad->state == TS_ERRED) {
            size_t n;
            const char *text = s_err_text(bad, &n);
            if (bad->flags & TF_PROPAGATED) {
                /* Already "dependency <root> failed: ...": name the root. */
                s_end(s, t, TS_ERRED, text, n, s_err_worker(bad), 1);
            } else {
                size_t dl = 0;
                char *dm = s_dep_message(bad, TS_ERRED, text, n, &dl);
                static const char oom[] = "a dependency failed (out of memory)";
                s_end(s, t, TS_ERRED, dm ? dm : oom, dm ? dl : sizeof oom - 1,
                      s_err_worker(bad), 1);
                free(dm);
            }
        } else {
            size_t dl = 0;
            char *dm = s_dep_message(bad, TS_CANCELLED, NULL, 0, &dl);
            static const char oom[] = "a dependency was cancelled";
            s_end(s, t, TS_CANCELLED, dm ? dm : oom, dm ? dl : sizeof oom - 1, NULL, 1);
            free(dm);
        }
        s_finalize(s, t);
        s_gc(s);
        return 0;
    }

    t->ndeps = nd;
    for (uint32_t j = 0; j < nd; j++) {
        sched_task_t *d = t->deps[j];
        d->nholders++;
        if (d->xflags & XF_KEPT)
            t->xflags |= XF_REMOTE;
        if (d->state != TS_MEMORY) {
            t->npending++;
            d->dependents[d->ndependents].id = id;
            d->dependents[d->ndependents].seq = t->seq;
            d->ndependents++;
        }
    }
    t->flags |= TF_HOLDS;
    s_transition(s, t, t->npending ? TS_WAITING : TS_READY, NULL);
    return 0;

nomem:
    s_constraints_undo(s, id, kind);
    s_unintern(s, t->func);
    free(t->name);
    s_data_free(t);
    s_record_free(s, t);
    return s_refuse(s, c, id, ENOMEM, "out of memory");
}

/* The task t, if it is processing on w; counts a stale outcome if not. */
static sched_task_t *s_running_on(sched_t *s, sched_worker_t *w, uint64_t id)
{
    sched_task_t *t = tmap_get(s->tasks, id);
    if (!t || t->state != TS_PROCESSING || t->worker != w) {
        s->st.stale++;
        errno = ESRCH;
        return NULL;
    }
    return t;
}

static void s_learn_duration(sched_t *s, sched_task_t *t, uint64_t duration_us)
{
    double d = duration_us > 1000000000000ull ? 1e12 : (double)duration_us;
    s->ewma_us = s->ewma_us < 0 ? d : s->ewma_us + 0.05 * (d - s->ewma_us);
    sstr_t *f = t->func;
    f->ewma_us = f->ewma_us < 0 ? d : f->ewma_us + 0.05 * (d - f->ewma_us);
    f->chunk = s_chunk_for(f->ewma_us);
}

/* t reached memory: wake the dependents waiting for it (marked as having a
 * remote input when the result stays on workers). */
static void s_wake_dependents(sched_t *s, sched_task_t *t, int kept)
{
    for (uint32_t i = 0; i < t->ndependents; i++) {
        sched_task_t *dep = s_deref(s, &t->dependents[i]);
        if (!dep)
            continue;
        if (kept)
            dep->xflags |= XF_REMOTE;
        if (--dep->npending == 0)
            s_transition(s, dep, TS_READY, NULL);
    }
}

int sched_task_done_kept(sched_t *s, sched_worker_t *w, uint64_t id, uint64_t nbytes,
                         uint64_t duration_us)
{
    sched_task_t *t = s_running_on(s, w, id);
    if (!t)
        return -1;
    s_learn_duration(s, t, duration_us);
    w->completed++;
    task_ext_t *e = s_ext_make(s, t);
    if (e) {
        e->nbytes = nbytes;
        if (s_hold_add(s, t, e, w) < 0)
            e = NULL;
    }
    if (!e) {
        static const char oom[] = "scheduler out of memory recording the result's holder";
        if (s->ops.wfree)
            s->ops.wfree(s->ctx, w->user, id);
        s_ext_free(s, t, 0);
        s_kill(s, t, TS_ERRED, oom, sizeof oom - 1, w->name);
        s_gc(s);
        return 0;
    }
    /* The args stay in the record: they are needed if the result is lost. */
    s_transition(s, t, TS_MEMORY, NULL);
    if (t->client && !(t->flags & TF_RELEASED) && s->ops.result_kept)
        s->ops.result_kept(s->ctx, t->client->user, t, w->name);
    s_wake_dependents(s, t, 1);
    s_finalize(s, t);
    s_gc(s);
    return 0;
}

int sched_task_done(sched_t *s, sched_worker_t *w, uint64_t id, int status,
                    const void *payload, size_t len, uint64_t duration_us)
{
    sched_task_t *t = s_running_on(s, w, id);
    if (!t)
        return -1;
    /* Exponentially weighted: follows a change of workload within a few
     * hundred tasks without jumping at one outlier. */
    s_learn_duration(s, t, duration_us);
    w->completed++;

    if (status == TASK_OK) {
        if (t->xflags & XF_KEPT)
            s_ext_free(s, t, 1); /* computed again, and small this time */
        if (s_data_set(t, payload, len) < 0) {
            static const char oom[] = "scheduler out of memory storing the result";
            s_kill(s, t, TS_ERRED, oom, sizeof oom - 1, w->name);
            s_gc(s);
            return 0;
        }
        s_transition(s, t, TS_MEMORY, NULL);
        s_report(s, t, TASK_OK, s_data(t), len, w->name);
        s_wake_dependents(s, t, 0);
        s_finalize(s, t);
    } else if (t->retries > 0) {
        t->retries--;
        s->st.retried++;
        s_transition(s, t, TS_READY, NULL);
    } else {
        if (len > SCHED_MAX_ERROR)
            len = SCHED_MAX_ERROR;
        s_kill(s, t, TS_ERRED, payload ? payload : "", payload ? len : 0, w->name);
    }
    s_gc(s);
    return 0;
}

int sched_release(sched_t *s, sched_client_t *c, uint64_t id)
{
    sched_task_t *t = tmap_get(s->tasks, id);
    if (!t || !c || t->client != c) {
        errno = ESRCH;
        return -1;
    }
    s_release(s, t);
    s_gc(s);
    return 0;
}

int sched_cancel(sched_t *s, sched_client_t *c, uint64_t id)
{
    static const char why[] = "cancelled";
    sched_task_t *t = tmap_get(s->tasks, id);
    if (!t || !c || t->client != c) {
        errno = ESRCH;
        return -1;
    }
    if (s_final(t))
        return 0;
    s_kill(s, t, TS_CANCELLED, why, sizeof why - 1, NULL);
    s_gc(s);
    return 0;
}

/* ---- resources and restrictions ------------------------------------------------------ */

static void s_kind_free(rkind_t *k)
{
    if (!k)
        return;
    for (uint32_t i = 0; i < k->nres; i++)
        free(k->res[i]);
    for (uint32_t i = 0; i < k->nonly; i++)
        free(k->only[i]);
    free(k->res);
    free(k->amount);
    free(k->only);
    free(k);
}

static uint64_t s_kind_hash(const sched_submit_t *sub)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sub->nres; i++) {
        h = (h ^ util_fnv1a64(sub->res[i].name, sub->res[i].name_len)) * 1099511628211ull;
        uint64_t a;
        double d = sub->res[i].amount + 0.0; /* -0 and 0 alike */
        memcpy(&a, &d, sizeof a);
        h = (h ^ a) * 1099511628211ull;
    }
    h = (h ^ 0x5e9a7a7e) * 1099511628211ull;
    for (size_t i = 0; i < sub->nonly; i++)
        h = (h ^ util_fnv1a64(sub->only[i].p, sub->only[i].len)) * 1099511628211ull;
    return h ? h : 1;
}

static int s_kind_eq(const rkind_t *k, const sched_submit_t *sub)
{
    if (k->nres != sub->nres || k->nonly != sub->nonly)
        return 0;
    for (size_t i = 0; i < sub->nres; i++)
        if (k->amount[i] != sub->res[i].amount || strlen(k->res[i]) != sub->res[i].name_len ||
            memcmp(k->res[i], sub->res[i].name, sub->res[i].name_len) != 0)
            return 0;
    for (size_t i = 0; i < sub->nonly; i++)
        if (strlen(k->only[i]) != sub->only[i].len ||
            memcmp(k->only[i], sub->only[i].p, sub->only[i].len) != 0)
            return 0;
    return 1;
}

static char *s_strndup(const char *p, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, p, n);
        d[n] = '\0';
    }
    return d;
}

/* The kind of sub's constraints (one more reference), created if new.
 * NULL if out of memory. */
static rkind_t *s_kind_ref(sched_t *s, const sched_submit_t *sub)
{
    uint64_t h = s_kind_hash(sub);
    rkind_t *head = u64map_get(s->kinds, h);
    for (rkind_t *k = head; k; k = k->next) {
        if (s_kind_eq(k, sub)) {
            k->refs++;
            return k;
        }
    }
    rkind_t *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->hash = h;
    k->nres = (uint32_t)sub->nres;
    k->nonly = (uint32_t)sub->nonly;
    if ((k->nres && (!(k->res = calloc(k->nres, sizeof *k->res)) ||
                     !(k->amount = calloc(k->nres, sizeof *k->amount)))) ||
        (k->nonly && !(k->only = calloc(k->nonly, sizeof *k->only))))
        goto nomem;
    for (uint32_t i = 0; i < k->nres; i++) {
        k->amount[i] = sub->res[i].amount;
        if (!(k->res[i] = s_strndup(sub->res[i].name, sub->res[i].name_len)))
            goto nomem;
    }
    for (uint32_t i = 0; i < k->nonly; i++)
        if (!(k->only[i] = s_strndup(sub->only[i].p, sub->only[i].len)))
            goto nomem;
    k->next = head;
    if (u64map_put(s->kinds, h, k) < 0)
        goto nomem;
    k->refs = 1;
    return k;
nomem:
    s_kind_free(k);
    return NULL;
}

static void s_kind_unref(sched_t *s, rkind_t *k)
{
    if (!k || --k->refs > 0)
        return;
    rkind_t *head = u64map_get(s->kinds, k->hash);
    if (head == k) {
        if (k->next)
            u64map_put(s->kinds, k->hash, k->next); /* replaces: cannot fail */
        else
            u64map_del(s->kinds, k->hash);
    } else {
        for (rkind_t *q = head; q; q = q->next) {
            if (q->next == k) {
                q->next = k->next;
                break;
            }
        }
    }
    s_kind_free(k);
}

/* A constrained task became ready: into its kind's queue, in (priority,
 * seq) order (walking back from the tail: tasks usually come in order). */
static void s_cons_push(sched_t *s, sched_task_t *t)
{
    rkind_t *k = u64map_get(s->treq, t->id);
    if (!k) {
        log_err("BUG: constrained task %" PRIu64 " without a kind", t->id);
        abort();
    }
    sched_task_t *after = k->tail;
    while (after && s_before(t, after))
        after = after->wprev;
    t->wprev = after;
    t->wnext = after ? after->wnext : k->head;
    if (t->wnext)
        t->wnext->wprev = t;
    else
        k->tail = t;
    if (after)
        after->wnext = t;
    else
        k->head = t;
    t->heap_idx = HEAP_CONS;
    if (k->nready++ == 0) {
        k->aprev = NULL;
        k->anext = s->akinds;
        if (s->akinds)
            s->akinds->aprev = k;
        s->akinds = k;
    }
    s->ncons++;
}

static void s_cons_remove(sched_t *s, sched_task_t *t)
{
    rkind_t *k = u64map_get(s->treq, t->id);
    if (t->wprev)
        t->wprev->wnext = t->wnext;
    else
        k->head = t->wnext;
    if (t->wnext)
        t->wnext->wprev = t->wprev;
    else
        k->tail = t->wprev;
    t->wprev = t->wnext = NULL;
    t->heap_idx = HEAP_NONE;
    s->ncons--;
    if (--k->nready == 0) {
        if (k->aprev)
            k->aprev->anext = k->anext;
        else
            s->akinds = k->anext;
        if (k->anext)
            k->anext->aprev = k->aprev;
        k->aprev = k->anext = NULL;
    }
}

/* Could w run a task of kind k: now (`now`: the free amounts suffice) or
 * ever (its totals do)? */
static int s_fits(const rkind_t *k, const sched_worker_t *w, int now)
{
    if (k->nonly) {
        uint32_t i = 0;
        while (i < k->nonly && strcmp(k->only[i], w->name) != 0)
            i++;
        if (i == k->nonly)
            return 0;
    }
    for (uint32_t i = 0; i < k->nres; i++) {
        uint32_t j = 0;
        while (j < w->nres && strcmp(k->res[i], w->rname[j]) != 0)
            j++;
        if (j == w->nres)
            return 0; /* not declared at all, whatever the amount */
        double have = w->rtotal[j] - (now ? w->rused[j] : 0);
        /* A little slack for sums of fractions (0.1 + 0.2). */
        if (k->amount[i] > have + 1e-9 * (have > 1 ? have : 1))
            return 0;
    }
    return 1;
}

/* The worker to run a task of kind k now: allowed, with room and enough
 * free resources; idle ones first, then the least loaded. NULL if none. */
static sched_worker_t *s_pick(const sched_t *s, const rkind_t *k)
{
    sched_worker_t *best = NULL;
    for (sched_worker_t *w = s->workers; w; w = w->next) {
        if (w->list == WL_NONE || !s_fits(k, w, 1))
            continue;
        if (!best || (w->list == WL_IDLE && best->list != WL_IDLE) ||
            (w->list == best->list &&
             (double)w->inflight / w->nthreads < (double)best->inflight / best->nthreads))
            best = w;
    }
    return best;
}

static void s_warn_unrunnable(const sched_t *s, rkind_t *k)
{
    if (k->warned)
        return;
    for (const sched_worker_t *w = s->workers; w; w = w->next)
        if (!w->removing && s_fits(k, w, 0))
            return;
    k->warned = 1;
    char buf[512];
    size_t off = 0;
    for (uint32_t i = 0; i < k->nres && off < sizeof buf; i++) {
        int m = snprintf(buf + off, sizeof buf - off, "%s%s=%g", i ? "," : "resources ",
                         k->res[i], k->amount[i]);
        off += m < 0 ? 0 : (size_t)m;
    }
    for (uint32_t i = 0; i < k->nonly && off < sizeof buf; i++) {
        int m = snprintf(buf + off, sizeof buf - off, "%s%s",
                         i ? "," : (off ? " on workers " : "workers "), k->only[i]);
        off += m < 0 ? 0 : (size_t)m;
    }
    log_warn("%zu task(s) need %s, which no connected worker can offer: they wait for one",
             k->nready, buf);
}

/*
 * Place the ready tasks of every kind, each kind's in order, until its
 * first task fits no worker now.  Only s_check_inputs (tasks with inputs
 * kept on workers) can change other kinds' queues behind our back (it may
 * collect garbage), so the walk starts over after it ran.
 */
static void s_place_constrained(sched_t *s)
{
restart:
    for (rkind_t *k = s->akinds, *next; k; k = next) {
        next = k->anext;
        sched_task_t *t;
        while ((t = k->head)) {
            if (!s->idle.head && !s->prefetch.head)
                return; /* no room anywhere */
            if (t->xflags & XF_REMOTE) {
                if (!s_check_inputs(s, t))
                    goto restart;
                if (t != k->head || k->nready == 0)
                    goto restart;
            }
            sched_worker_t *w = s_pick(s, k);
            if (!w) {
                s_warn_unrunnable(s, k);
                break;
            }
            s_transition(s, t, TS_PROCESSING, w);
            if (s->ops.compute)
                s->ops.compute(s->ctx, w->user, t);
        }
    }
}

int sched_worker_set_resources(sched_t *s, sched_worker_t *w, const sched_resource_t *r,
                               size_t n)
{
    (void)s;
    if (w->inflight) {
        errno = EBUSY;
        return -1;
    }
    if (n > SCHED_MAX_RESOURCES || (n && !r)) {
        errno = EINVAL;
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (!r[i].name || r[i].name_len == 0 || r[i].name_len > SCHED_MAX_RESNAME ||
            memchr(r[i].name, '\0', r[i].name_len) || !(r[i].amount >= 0) ||
            r[i].amount > 1e300) {
            errno = EINVAL;
            return -1;
        }
        for (size_t j = 0; j < i; j++) {
            if (r[j].name_len == r[i].name_len &&
                memcmp(r[j].name, r[i].name, r[i].name_len) == 0) {
                errno = EINVAL;
                return -1;
            }
        }
    }
    char **names = n ? calloc(n, sizeof *names) : NULL;
    double *tot = n ? calloc(n, sizeof *tot) : NULL;
    double *used = n ? calloc(n, sizeof *used) : NULL;
    if (n && (!names || !tot || !used))
        goto nomem;
    for (size_t i = 0; i < n; i++) {
        tot[i] = r[i].amount;
        if (!(names[i] = s_strndup(r[i].name, r[i].name_len)))
            goto nomem;
    }
    for (uint32_t j = 0; j < w->nres; j++)
        free(w->rname[j]);
    free(w->rname);
    free(w->rtotal);
    free(w->rused);
    w->rname = names;
    w->rtotal = tot;
    w->rused = used;
    w->nres = (uint32_t)n;
    return 0;
nomem:
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
    free(tot);
    free(used);
    errno = ENOMEM;
    return -1;
}

double sched_worker_resource(const sched_worker_t *w, const char *name, double *used)
{
    for (uint32_t j = 0; j < w->nres; j++) {
        if (strcmp(w->rname[j], name) == 0) {
            if (used)
                *used = w->rused[j];
            return w->rtotal[j];
        }
    }
    if (used)
        *used = 0;
    return 0;
}

static void s_worker_free_res(sched_worker_t *w)
{
    for (uint32_t j = 0; j < w->nres; j++)
        free(w->rname[j]);
    free(w->rname);
    free(w->rtotal);
    free(w->rused);
}

/*
 * Each turn takes the worker at the head of the idle list (else of the
 * prefetch list) and gives it the first ready task, then the next ones for
 * as long as each one's function allows a run that long (its `chunk`), the
 * worker has room, and it was not paused by the compute callback (it is
 * then on no list).  Each assignment moves the worker to the tail of its
 * list, so turns go round robin.
 *
 * Runs longer than one task are for short tasks only: a COMPUTE message
 * (and the TASK_DONE that answers it) costs the scheduler, the worker and
 * the kernel more than a task of a few microseconds, so a thousand workers
 * each sent one such task at a time would spend the machine on messages.
 * A run carries about SCHED_CHUNK_US of work, which keeps workers busy
 * while sending each one far fewer, larger messages.  The estimate is the
 * function's own, so a function never measured, or a slow one, is spread
 * one task per worker however short the tasks before it were.
 */
void sched_place(sched_t *s)
{
    s_update_prefetch(s);
    if (s->ncons)
        s_place_constrained(s);
    sched_task_t *t;
    while ((t = s_ready_first(s))) {
        sched_worker_t *w = s->idle.head ? s->idle.head : s->prefetch.head;
        if (!w)
            break;
        if (t->xflags & XF_REMOTE) {
            /* Inputs on workers: check they still exist, go to the data. */
            if (!s_check_inputs(s, t))
                continue;
            w = s_best_place(s, t, w);
            s_transition(s, t, TS_PROCESSING, w);
            if (s->ops.compute)
                s->ops.compute(s->ctx, w->user, t);
            continue;
        }
        unsigned k = 0;
        do {
            s_transition(s, t, TS_PROCESSING, w);
            if (s->ops.compute)
                s->ops.compute(s->ctx, w->user, t);
        } while (w->list != WL_NONE && (t = s_ready_first(s)) && !(t->xflags & XF_REMOTE) &&
                 ++k < t->func->chunk);
    }
}

/* Is t worth moving: no constraints, and its inputs kept on workers cheap
 * to fetch elsewhere? */
static int s_stealable(const sched_t *s, const sched_task_t *t)
{
    if (t->xflags & (XF_CONS | XF_STEAL))
        return 0;
    if (!(t->xflags & XF_REMOTE))
        return 1;
    uint64_t bytes = 0;
    for (uint32_t j = 0; j < t->ndeps; j++) {
        const task_ext_t *e = s_ext(s, t->deps[j]);
        if (e)
            bytes += e->nbytes;
    }
    if (bytes <= SCHED_STEAL_BYTES)
        return 1;
    double us = t->func->ewma_us;
    return us > 0 && (double)bytes / SCHED_STEAL_BPS * 1e6 < us;
}

size_t sched_steal(sched_t *s, size_t max)
{
    if (!s->ops.steal || !max || s_ready_first(s) || s->ncons)
        return 0;
    size_t idle = 0;
    for (sched_worker_t *w = s->idle.head; w; w = w->lnext)
        idle += w->nthreads - w->inflight;
    /* Tasks already asked for will fill some of those threads. */
    idle = idle > s->nstealing ? idle - s->nstealing : 0;
    if (idle < max)
        max = idle;
    size_t asked = 0;
    /* A worker's list starts with its most recently assigned tasks: the
     * ones that would wait longest there before running. */
    for (sched_worker_t *w = s->workers; w && asked < max; w = w->next) {
        if (w->removing || w->inflight <= w->nthreads)
            continue;
        unsigned queued = w->inflight - w->nthreads, seen = 0;
        for (sched_task_t *t = w->tasks; t && seen < queued && asked < max; t = t->wnext) {
            seen++;
            if (!s_stealable(s, t))
                continue;
            t->xflags |= XF_STEAL;
            s->nstealing++;
            s->st.steals++;
            asked++;
            s->ops.steal(s->ctx, w->user, t->id);
        }
    }
    return asked;
}

int sched_replica_add(sched_t *s, sched_worker_t *w, uint64_t id)
{
    sched_task_t *t = tmap_get(s->tasks, id);
    task_ext_t *e = t && t->state == TS_MEMORY ? s_ext(s, t) : NULL;
    /* Wanted: not lost (a copy of a result being computed again would be
     * of an older run), and not only held by kept results for its record. */
    int wanted = e && e->nwho > 0 &&
                 !((t->flags & TF_RELEASED) && e->nkeepers >= t->nholders);
    if (wanted && !w->removing) {
        if (s_hold_add(s, t, e, w) == 0) {
            s->st.replicas++;
            return 1;
        }
        if (s->ops.wfree)
            s->ops.wfree(s->ctx, w->user, id);
        errno = ENOMEM;
        return -1;
    }
    if (s->ops.wfree && !w->removing)
        s->ops.wfree(s->ctx, w->user, id);
    return 0;
}

int sched_steal_reply(sched_t *s, sched_worker_t *w, uint64_t id, int ok)
{
    sched_task_t *t = tmap_get(s->tasks, id);
    if (!t || t->state != TS_PROCESSING || t->worker != w || !(t->xflags & XF_STEAL)) {
        errno = ESRCH;
        return -1;
    }
    t->xflags &= (uint8_t)~XF_STEAL;
    s->nstealing--;
    if (ok) {
        s->st.stolen++;
        s_transition(s, t, TS_READY, NULL);
    }
    return 0;
}

void sched_prefetch(const sched_t *s, uint64_t id)
{
    tmap_prefetch(s->tasks, id);
}

void sched_prefetch_task(const sched_t *s, uint64_t id)
{
    const char *t = tmap_get(s->tasks, id);
    if (t) {
        /* A record spans three lines (four when it straddles). */
        __builtin_prefetch(t);
        __builtin_prefetch(t + 64);
        __builtin_prefetch(t + 128);
    }
}

/* ---- accessors ---------------------------------------------------------------------- */

uint64_t sched_task_id(const sched_task_t *t)
{
    return t->id;
}

const char *sched_task_func(const sched_task_t *t, size_t *len)
{
    if (len)
        *len = t->func->len;
    return s_str(t->func);
}

const void *sched_task_func_packed(const sched_task_t *t, size_t *len)
{
    *len = t->func->hdrlen + t->func->len;
    return t->func->packed;
}

void sched_task_args(const sched_task_t *t, const void **p, size_t *n)
{
    *p = s_data(t);
    *n = t->data_len;
}

size_t sched_task_ndeps(const sched_task_t *t)
{
    return t->ndeps;
}

void sched_task_dep(const sched_task_t *t, size_t i, uint64_t *id, const void **p, size_t *n)
{
    const sched_task_t *d = t->deps[i];
    *id = d->id;
    *p = s_data(d);
    *n = d->data_len;
}

const sched_task_t *sched_task_dep_task(const sched_task_t *t, size_t i)
{
    return t->deps[i];
}

sched_worker_t *const *sched_task_holders(const sched_t *s, const sched_task_t *t, size_t *n,
                                          uint64_t *nbytes)
{
    const task_ext_t *e = t->state == TS_MEMORY ? s_ext(s, t) : NULL;
    *n = e ? e->nwho : 0;
    if (nbytes)
        *nbytes = e ? e->nbytes : 0;
    return e ? e->who : NULL;
}

sched_worker_t *const *sched_holders_of(const sched_t *s, uint64_t id, size_t *n)
{
    const sched_task_t *t = tmap_get(s->tasks, id);
    const task_ext_t *e = t ? s_ext(s, t) : NULL;
    *n = e ? e->nwho : 0;
    return e ? e->who : NULL;
}

uint64_t sched_count(const sched_t *s, task_state_t st)
{
    return (unsigned)st < TS_NSTATES ? s->count[st] : 0;
}

size_t sched_ntasks(const sched_t *s)
{
    return tmap_size(s->tasks);
}

task_state_t sched_state_of(const sched_t *s, uint64_t id)
{
    const sched_task_t *t = tmap_get(s->tasks, id);
    return t ? (task_state_t)t->state : TS_FORGOTTEN;
}

int sched_task_suspicious(const sched_t *s, uint64_t id)
{
    const sched_task_t *t = tmap_get(s->tasks, id);
    return t ? t->suspicious : -1;
}

size_t sched_interned(const sched_t *s)
{
    return s->nstrs;
}

double sched_avg_duration_us(const sched_t *s)
{
    return s->ewma_us;
}

void sched_get_stats(const sched_t *s, sched_stats_t *out)
{
    *out = s->st;
}
