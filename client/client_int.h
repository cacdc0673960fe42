/*
 * client_int.h - internals of libshoal shared by the client sources (not installed).
 *
 * Threads and locking.  A connected client has one background I/O thread
 * that runs a zmq_poll loop over the ZeroMQ sockets (the scheduler's DEALER,
 * its monitor, and one DEALER per worker data endpoint in use).  Everything
 * the API and the loop share lives in shoal_client_t and is protected by its
 * one mutex `mu`:
 *   - the future index (id -> live future, a weak index: a future is in it
 *     from submission until it is freed);
 *   - the outgoing work: the open SUBMIT batch (items are packed straight
 *     into it under the lock: a submission allocates its future and nothing
 *     else), the ids to RELEASE and CANCEL, a queue of other messages
 *     (STATUS, UPLOAD_LIB), the ids whose bytes a caller wants fetched from
 *     the workers, and scatter jobs;
 *   - the connection state and the requests waiting for a reply.
 * API calls that queue work wake the loop by writing to an eventfd (once per
 * drain, see `wake_pending`); the loop drains everything right before each
 * zmq_poll and sends it outside the lock.  Every completion is followed by a
 * broadcast on `cond`; waiters re-check their own condition.
 *
 * Who drives the socket (leader/follower).  The sockets and the data plane
 * belong to whoever holds the driver token (`driver`, under mu): the I/O
 * thread, an API thread, or nobody.  Only the holder runs the loop's turn
 * (s_io_step) and so touches a socket; the mutex hand-over orders memory as
 * ZeroMQ asks of a socket that changes threads.  A thread that must wait
 * (client_cond_wait) and finds the token free takes it and runs one turn
 * itself: the scheduler's answer wakes it directly instead of waking the I/O
 * thread that would wake it (two thread wake-ups per round trip, each tens
 * of microseconds when it crosses cores).  While the I/O thread holds the
 * token, the first waiter asks for it (`want_drive`) and the I/O thread
 * frees it after its turn.  While the token is free the I/O thread parks;
 * an API call that queues work then sends it itself on its way out
 * (client_kick).  The I/O thread takes the token back when callers leave it
 * alone for CLIENT_PARK seconds, or at once when asked (`io_retake`: other
 * threads wait, work was left queued, or the client stops), so heartbeats
 * and background results never depend on the application calling in.  A
 * caller's turn may busy-poll before it sleeps (client.c, "Busy-polling").
 *
 * Results that live on workers (docs/DATAPLANE.md): a RESULT may say "ok,
 * the bytes are on these holders".  The future is then FINISHED with
 * `remote` set; its bytes are fetched (data.c) only when a caller asks for
 * them (shoal_result, shoal_gather...), so results that are only inputs of
 * other tasks never pass through the client.
 *
 * Futures are reference counted (under `mu`): one reference for the caller
 * (dropped by shoal_release) and one per as_completed iterator holding it.
 * When the last one goes, the future leaves the index, its id is queued for
 * RELEASE, and it is freed.  The index itself holds no reference.
 */
#ifndef SHOAL_CLIENT_INT_H
#define SHOAL_CLIENT_INT_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>
#include <zmq.h>

#include "proto.h"
#include "shoal.h"
#include "tasklib.h"
#include "util.h"

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
/* Releases wait this long (seconds) after a flush first sees them, unless
 * this many are queued. */
#define CLIENT_RELEASE_DELAY 0.1
#define CLIENT_RELEASE_BATCH 4096
/* The I/O thread takes the free driver token back after callers have left
 * it alone this long (seconds). */
#define CLIENT_PARK 0.002
/* ...and looks again this often while a caller holds it. */
#define CLIENT_PARK_HELD 0.02
enum { DRIVER_FREE = 0, DRIVER_IO = 1, DRIVER_CALLER = 2 };
/* A caller that drives the socket while waiting busy-polls for its answer
 * (see "Busy-polling" in client.c) for at most this many microseconds by
 * default ($SHOAL_SPIN_US or shoal_connect_opts_t.spin_us change it;
 * CLIENT_SPIN_MAX_US is the largest accepted), and only while at most
 * CLIENT_SPIN_PENDING of its futures are unfinished. */
#define CLIENT_SPIN_US 500
#define CLIENT_SPIN_MAX_US 100000
#define CLIENT_SPIN_PENDING 4

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

/* Where a remote result's fetch stands (shoal_future.fetch; under c->mu). */
enum {
    FETCH_NONE = 0,     /* not asked for (or the bytes are here) */
    FETCH_QUEUED = 1,   /* asked of the I/O thread, which is getting it */
    FETCH_REFETCH = 2,  /* no holder had it: REFETCH sent, waiting for a RESULT */
};

struct shoal_future {
    shoal_client_t *c;
    uint64_t id;
    int refs;                /* under c->mu */
    int status;              /* shoal_status_t; atomic (read without the lock) */
    int cancel_sent;
    void *data;              /* result bytes (small[], malloc'd, or in zmsg) */
    size_t len;
    zmq_msg_t *zmsg;         /* a received data frame `data` points into, or NULL */
    /* A FINISHED result kept on workers (under c->mu): its bytes are fetched
     * from the holders' data endpoints when first asked for. */
    int remote;
    int fetch;               /* FETCH_* */
    int refetches;           /* REFETCHes sent for it */
    uint64_t nbytes;         /* its size, as the scheduler reported it */
    char **holders;          /* data endpoint addresses (malloc'd strings) */
    size_t nholders;
    char *error;             /* error/cancel text, or NULL */
    char *worker;            /* worker name, or NULL */
    char *name;              /* inline mode: the submit name, for errors */
    msgpack_zone *zone;      /* shoal_result_object's unpacked result */
    msgpack_object obj;
    ac_node_t *acs;          /* iterators waiting for this future */
    char small[CLIENT_SMALL_RESULT];
};

typedef struct local_cluster local_cluster_t;
typedef struct cdata cdata_t;
typedef struct scat_job scat_job_t;

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
    size_t pending;           /* of those, still SHOAL_PENDING */
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
    int wakefd;              /* eventfd: API threads wake the token holder */
    cdata_t *data;           /* the data plane: worker connections, fetches */
    pthread_t thread;
    int thread_started;
    double last_heard;       /* token holder only */
    int rehello;             /* token holder only: re-registration in progress */
    double next_hb;          /* token holder only: next heartbeat */
    zmq_pollitem_t *io_items; /* token holder only: the poll set */
    size_t io_cap;
    long spin_us;            /* most a waiting caller busy-polls; 0: never */
    double wait_avg;         /* token holder only: callers' recent waits (s) */
    uint64_t nspins;         /* token holder only: callers' turns that spun */

    /* shared, under mu */
    int state;
    int state_errno;
    char state_err[512];
    int dead;                /* connection lost or scheduler gone */
    char dead_msg[384];
    int stopping;
    int wake_pending;        /* a write to wakefd is outstanding */
    int driver;              /* DRIVER_*: who may touch the sockets */
    int want_drive;          /* a waiter asks the I/O thread for the token */
    int kick_pending;        /* work queued while the token was free */
    int io_retake;           /* the I/O thread should take the token now */
    int nwaiters;            /* threads asleep in client_cond_wait */
    uint64_t drive_seq;      /* counts callers' turns (the I/O thread's park) */
    pthread_cond_t io_cond;  /* the parked I/O thread sleeps here */
    subbatch_t *sub;         /* the open SUBMIT batch */
    subbatch_t *full_head, *full_tail; /* batches past CLIENT_BATCH_BYTES */
    u64vec_t rel, can;
    double rel_since;        /* when a flush first saw the queued releases */
    outmsg_t *outq_head, *outq_tail;
    u64vec_t fetchq;         /* ids of remote results a caller wants */
    scat_job_t *scat_head, *scat_tail;
    unsigned scatter_rr;     /* where the next scatter starts its round robin */
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
/* Send what this thread queued if the driver token is free (call without mu,
 * after queueing work with client_wake_locked). */
CLIENT_HIDDEN void client_kick(shoal_client_t *c);
CLIENT_HIDDEN int client_u64vec_push(u64vec_t *v, uint64_t x);

/* --- futures (future.c); call with c->mu held --- */
/* Complete a pending future as FINISHED with its bytes on `holders` (nh
 * addresses, copied) instead of here.  0, or -1 (ENOMEM: the future is
 * failed instead).  Does not broadcast. */
CLIENT_HIDDEN int client_future_complete_remote(shoal_future_t *f, const char *worker,
                                                size_t wlen, uint64_t nbytes,
                                                const msgpack_object *holders, size_t nh);
/* Replace a remote result's holders (from a RESULT that answers REFETCH).
 * 0 or -1 (ENOMEM). */
CLIENT_HIDDEN int client_future_set_holders(shoal_future_t *f, uint64_t nbytes,
                                            const msgpack_object *holders, size_t nh);
/* A remote result's bytes arrived: take them (a received frame is moved
 * into the future when it is large, copied otherwise).  Does not broadcast. */
CLIENT_HIDDEN void client_future_take_bytes(shoal_future_t *f, zmq_msg_t *frame);
/* Same, from a plain buffer (copied). */
CLIENT_HIDDEN void client_future_take_copy(shoal_future_t *f, const void *data, size_t len);
/* A FINISHED remote result cannot be had any more: the future becomes
 * SHOAL_ERROR with `msg`.  Does not broadcast. */
CLIENT_HIDDEN void client_future_lost(shoal_future_t *f, const char *msg);
/* Ask the I/O thread for f's bytes (no-op unless remote and not asked). */
CLIENT_HIDDEN void client_fetch_locked(shoal_client_t *c, shoal_future_t *f);
/* Wait until f (FINISHED) has its bytes here or fails.  timeout as in
 * shoal_result (at least CLIENT_FETCH_WAIT_MIN).  0, or -1 with err. */
CLIENT_HIDDEN int client_fetch_wait_locked(shoal_client_t *c, shoal_future_t *f,
                                           double timeout, shoal_error_t *err);
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

/* --- the data plane (data.c); I/O thread only unless said otherwise --- */
/* The least a wait for a finished result's bytes is given, whatever the
 * caller's timeout (a transfer is not "waiting for the task"). */
#define CLIENT_FETCH_WAIT_MIN 60.0
/* REFETCHes of one result before it is declared lost. */
#define CLIENT_MAX_REFETCH 3
CLIENT_HIDDEN cdata_t *cdata_create(shoal_client_t *c);
CLIENT_HIDDEN void cdata_destroy(cdata_t *d);
/* Poll items: how many the data plane wants, then fill them (in this
 * order, with nothing else touching the data plane in between) and hand
 * back the polled result first thing after zmq_poll. */
CLIENT_HIDDEN size_t cdata_npoll(const cdata_t *d);
CLIENT_HIDDEN void cdata_fill_poll(cdata_t *d, zmq_pollitem_t *items);
CLIENT_HIDDEN void cdata_after_poll(cdata_t *d, const zmq_pollitem_t *items);
/* Start fetching the bytes of these futures' results. */
CLIENT_HIDDEN void cdata_fetch(cdata_t *d, const uint64_t *ids, size_t n);
/* Start scatter jobs: a list of them, chained as c->scat_head (taken;
 * each is completed and handed back to its caller through its done flag). */
CLIENT_HIDDEN void cdata_scatter(cdata_t *d, scat_job_t *jobs);
/* Send what the flow limits allow (and any REFETCH); the time until the
 * earliest data deadline in ms, or -1 for none. */
CLIENT_HIDDEN long cdata_pump(cdata_t *d);
/* Check deadlines: a peer that has not answered in time has failed. */
CLIENT_HIDDEN void cdata_timers(cdata_t *d);
/* The I/O thread is ending: fail every scatter job still running. */
CLIENT_HIDDEN void cdata_shutdown(cdata_t *d, const char *why);
/* Free a scatter job and those chained after it (API thread, once done).
 * Accepts NULL. */
CLIENT_HIDDEN void client_scat_job_free(scat_job_t *job);

/* --- status (client.c) --- */
CLIENT_HIDDEN int client_status(shoal_client_t *c, shoal_status_info_t *out,
                                double timeout, shoal_error_t *err);

#endif
