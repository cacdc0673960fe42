/*
 * client_int.h - internals of libshoal shared by the client sources (not installed).
 *
 * Threads and locking.  A connected client has one background I/O thread that
 * owns the ZeroMQ socket and runs a libev loop; API calls never touch the
 * socket.  Everything the API and the I/O thread share lives in
 * shoal_client_t and is protected by its one mutex `mu`:
 *   - the future index (id -> live future, a weak index: a future is in it
 *     from submission until it is freed);
 *   - the outgoing work: the open SUBMIT batch (items are packed straight
 *     into it under the lock: a submission allocates its future and nothing
 *     else), the ids to RELEASE and CANCEL, and a queue of other messages
 *     (STATUS, UPLOAD_LIB);
 *   - the connection state and the requests waiting for a reply.
 * API calls that queue work wake the loop with ev_async_send (once per
 * drain, see `wake_pending`); the loop drains everything when it is about to
 * sleep (ev_prepare) and sends it outside the lock.  Every completion is
 * followed by a broadcast on `cond`; waiters re-check their own condition.
 *
 * Futures are reference counted (under `mu`): one reference for the caller
 * (dropped by shoal_release) and one per as_completed iterator holding it.
 * When the last one goes, the future leaves the index, its id is queued for
 * RELEASE, and it is freed.  The index itself holds no reference.
 */
#ifndef SHOAL_CLIENT_INT_H
#define SHOAL_CLIENT_INT_H

#include <ev.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto.h"
#include "shoal.h"
#include "tasklib.h"
#include "util.h"
#include "zwatch.h"

#define CLIENT_HIDDEN __attribute__((visibility("hidden")))

/* Task ids: (client_id << 40) | n. */
#define CLIENT_ID_SHIFT 40
#define CLIENT_N_MAX ((1ULL << CLIENT_ID_SHIFT) - 1)
/* The client id of inline:// clients (there is no scheduler to hand one out). */
#define CLIENT_INLINE_ID 1
/* Results up to this size are stored inside the future (no allocation). */
#define CLIENT_SMALL_RESULT 24
/* Bounds on what the API accepts. */
#define CLIENT_MAX_ARGS (256u << 20)
#define CLIENT_MAX_FUNC 256
#define CLIENT_MAX_LIB (512u << 20)

enum { CSTATE_CONNECTING = 0, CSTATE_READY = 1, CSTATE_FAILED = 2 };

typedef struct u64vec {
    uint64_t *v;
    size_t n, cap;
} u64vec_t;

/* SUBMIT batches are closed at about this size, so that no message grows
 * past what a scheduler with a small --max-message-size accepts and the
 * scheduler can start on the first tasks of a huge map while the rest is
 * still being packed.  RELEASE and CANCEL are split likewise. */
#define CLIENT_BATCH_BYTES (1u << 20)
#define CLIENT_IDS_PER_MSG 65536

typedef struct subbatch {
    proto_batch_t b;
    struct subbatch *next;
} subbatch_t;

/* A queued message other than SUBMIT/RELEASE/CANCEL; owned by the queue, then
 * by the I/O thread, which frees it once sent. */
typedef struct outmsg {
    struct outmsg *next;
    int type;
    msgpack_sbuffer body;
    void *data;  /* optional data frame (malloc'd), or NULL */
    size_t len;
} outmsg_t;

/* A request waiting for its reply.  Lives on the caller's stack, linked into
 * c->reqs while it waits; the I/O thread fills it under the lock. */
typedef struct creq {
    struct creq *next;
    uint64_t req;
    int reply_type;             /* MSG_STATUS_REPLY or MSG_LIB_ACK */
    int done;
    int failed;
    char err[512];
    shoal_status_info_t *status; /* STATUS_REPLY is decoded into this */
} creq_t;

/* One future registered with one as_completed iterator. */
typedef struct ac_node {
    shoal_future_t *f;
    struct shoal_as_completed *ac;
    struct ac_node *fnext;   /* in f->acs while f is pending */
    struct ac_node *qnext;   /* in ac's ready queue once f completed */
    struct ac_node *anext;   /* in ac's list of all its nodes */
    int queued;
} ac_node_t;

struct shoal_as_completed {
    shoal_client_t *c;       /* set by the first future added */
    ac_node_t *all;
    ac_node_t *qhead, *qtail;
    size_t npending;         /* added, not yet completed */
};

struct shoal_future {
    shoal_client_t *c;
    uint64_t id;
    int refs;                /* under c->mu */
    int status;              /* shoal_status_t; atomic (read without the lock) */
    int cancel_sent;
    void *data;              /* result bytes (small[] or malloc'd) */
    size_t len;
    char *error;             /* error/cancel text, or NULL */
    char *worker;            /* worker name, or NULL */
    char *name;              /* inline mode: the submit name, for errors */
    msgpack_zone *zone;      /* shoal_result_object's unpacked result */
    msgpack_object obj;
    ac_node_t *acs;          /* iterators waiting for this future */
    char small[CLIENT_SMALL_RESULT];
};

typedef struct local_cluster local_cluster_t;

/*
 * The future index: id -> live future.  Ids are (client_id << 40) | n with n
 * counting up from 1, so the index is a paged array indexed by n rather than
 * a hash map: results arrive roughly in submission order and find their
 * futures on the same few pages (a hash of a million scattered ids costs a
 * cache miss per lookup).  A page is freed once all its futures are gone
 * and the counter has moved past it.  The client_id bits are checked by
 * comparing the stored future's id.
 */
#define FTAB_PAGE_BITS 12
#define FTAB_PAGE (1u << FTAB_PAGE_BITS)
typedef struct ftab {
    shoal_future_t ***pages;  /* npages pointers to FTAB_PAGE slots, or NULL */
    uint32_t *live;           /* futures on each page */
    size_t npages;
    size_t count;
} ftab_t;

CLIENT_HIDDEN shoal_future_t *ftab_get(const ftab_t *t, uint64_t id);
/* 0, or -1 (ENOMEM). */
CLIENT_HIDDEN int ftab_put(ftab_t *t, shoal_future_t *f);
/* Remove f; next_n is the client's counter (its page is kept). */
CLIENT_HIDDEN void ftab_del(ftab_t *t, const shoal_future_t *f, uint64_t next_n);
/* Iterate: *pos starts at 0; 1 with *f set, 0 at the end.  The table must
 * not change during an iteration. */
CLIENT_HIDDEN int ftab_next(const ftab_t *t, size_t *pos, shoal_future_t **f);
CLIENT_HIDDEN void ftab_destroy(ftab_t *t);

struct shoal_client {
    pthread_mutex_t mu;
    pthread_cond_t cond;     /* broadcast on every completion / reply / state change */
    int inline_mode;
    char address[SHOAL_ADDR_MAX];
    char name[128];

    ftab_t futures;          /* weak index: id -> live future */
    uint64_t client_id;
    uint64_t next_n;

    tasklib_t *tl;           /* inline mode: the functions we run */

    /* remote mode: owned by the I/O thread once it runs */
    void *zctx;
    void *sock;
    void *mon;               /* PAIR socket receiving sock's monitor events */
    struct ev_loop *loop;
    zwatch_t *zw;
    zwatch_t *monw;
    ev_async wake;
    ev_prepare flush;
    ev_timer hb;
    pthread_t thread;
    int thread_started;
    double last_heard;       /* I/O thread only */
    int rehello;             /* I/O thread only: re-registration in progress */

    /* shared, under mu */
    int state;
    int state_errno;
    char state_err[512];
    int dead;                /* connection lost or scheduler gone */
    char dead_msg[384];
    int stopping;
    int wake_pending;        /* an ev_async_send is outstanding */
    subbatch_t *sub;         /* the open SUBMIT batch */
    subbatch_t *full_head, *full_tail; /* batches past CLIENT_BATCH_BYTES */
    u64vec_t rel, can;
    outmsg_t *outq_head, *outq_tail;
    creq_t *reqs;
    uint64_t next_req;

    local_cluster_t *local;
};

/* --- error helpers (client.c) --- */
CLIENT_HIDDEN int client_fail(shoal_error_t *err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
CLIENT_HIDDEN void client_abstime(double timeout, struct timespec *ts);
/* Wait on c->cond until `deadline` (NULL: forever).  Returns 0 or ETIMEDOUT. */
CLIENT_HIDDEN int client_cond_wait(shoal_client_t *c, const struct timespec *deadline);

/* --- outgoing work (client.c); call with c->mu held --- */
CLIENT_HIDDEN subbatch_t *client_subbatch_new(void);
CLIENT_HIDDEN void client_subbatch_free(subbatch_t *s);
CLIENT_HIDDEN void client_wake_locked(shoal_client_t *c);
CLIENT_HIDDEN int client_u64vec_push(u64vec_t *v, uint64_t x);

/* --- futures (future.c); call with c->mu held --- */
CLIENT_HIDDEN shoal_future_t *client_future_new(shoal_client_t *c, uint64_t id);
/* Complete a pending future: copies data, error and worker.  status is
 * SHOAL_FINISHED, SHOAL_ERROR or SHOAL_CANCELLED.  Does not broadcast. */
CLIENT_HIDDEN void client_future_complete(shoal_future_t *f, int status,
                                          const void *data, size_t len,
                                          const char *errtext, size_t errlen,
                                          const char *worker, size_t wlen);
/* Fail every pending future of c with `msg` (connection lost...). */
CLIENT_HIDDEN void client_fail_pending(shoal_client_t *c, const char *msg);
/* Free a future whose last reference is gone (removes it from the index). */
CLIENT_HIDDEN void client_future_free(shoal_future_t *f);

/* --- local cluster (local.c) --- */
CLIENT_HIDDEN local_cluster_t *local_start(int nworkers, int nthreads, double timeout,
                                           shoal_error_t *err);
CLIENT_HIDDEN const char *local_address(const local_cluster_t *lc);
CLIENT_HIDDEN int local_nworkers(const local_cluster_t *lc);
/* Fail with a message if a child process has exited.  0 if all alive. */
CLIENT_HIDDEN int local_check(local_cluster_t *lc, shoal_error_t *err);
CLIENT_HIDDEN void local_stop(local_cluster_t *lc);

/* --- status (client.c) --- */
CLIENT_HIDDEN int client_status(shoal_client_t *c, shoal_status_info_t *out,
                                double timeout, shoal_error_t *err);

#endif
