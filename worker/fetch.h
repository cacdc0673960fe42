/*
 * fetch.h - getting task inputs from the workers that hold them.
 *
 * The worker asks for a result by id with the data addresses of its holders
 * ("wants" it); the fetcher sends GET requests to the data endpoints of
 * those holders (docs/DATAPLANE.md) and calls back once per id, with the
 * bytes or with the news that no holder could give them.
 *
 *   - One DEALER socket per peer address, created on first use and cached
 *     (at most FETCH_MAX_PEERS; idle ones are closed first), watched in the
 *     worker's loop with zwatch.  A socket monitor on each reports a refused
 *     connection (CONNECT_RETRIED) or a lost one (DISCONNECTED) at once: the
 *     requests on it fail over to the next holder immediately, and the
 *     address counts as dead for FETCH_DEAD_SECS (ZeroMQ itself would
 *     reconnect silently forever).
 *   - Several ids wanted from the same holder go in one GET (at most
 *     PROTO_MAX_DATA_FRAMES ids and about FETCH_BATCH_BYTES expected bytes).
 *   - At most `limit` requests are in flight at a time; each has a deadline
 *     of `timeout` seconds plus one second per 16 MiB expected.
 *   - A found item's frame becomes the stored buffer as it is (no copy).
 *   - An id asked for by several tasks is fetched once.
 *
 * Single-threaded: everything runs on the worker's loop thread.
 */
#ifndef SHOAL_WORKER_FETCH_H
#define SHOAL_WORKER_FETCH_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define FETCH_MAX_PEERS 64
#define FETCH_MAX_HOLDERS 16
#define FETCH_ADDR_MAX 256
#define FETCH_DEAD_SECS 10.0
#define FETCH_BATCH_BYTES (64u << 20)

typedef struct fetch fetch_t;

/* Who waits for an id: a task (opaque) and which of its inputs it is. */
typedef struct fetch_waiter {
    void *task;
    uint32_t index;
} fetch_waiter_t;

/*
 * Outcome of a want.  buf != NULL: the bytes, with one reference that now
 * belongs to the callee.  buf == NULL: every holder failed (or said it does
 * not have it).  `waiters` lists the tasks still waiting (at least one; an
 * id nobody waits for any more is dropped without a call).  The id is no
 * longer wanted when this is called, so fetch_unwant for it is a no-op and
 * fetch_want starts afresh; the callee may want or unwant any id.
 */
typedef void (*fetch_done_fn)(void *arg, uint64_t id, store_buf_t *buf,
                              const fetch_waiter_t *waiters, size_t nwaiters);

/* limit: requests in flight (1..1024); timeout: seconds per request.
 * NULL with errno on failure. */
fetch_t *fetch_create(struct ev_loop *loop, void *zctx, int64_t max_frame, int limit,
                      double timeout, fetch_done_fn done, void *arg);

/* Close every socket (queued requests are dropped without callbacks).
 * Accepts NULL. */
void fetch_destroy(fetch_t *f);

/* Ask for `id` (expected size nbytes) from `holders` (data addresses
 * "tcp://HOST:PORT", tried in order; at most FETCH_MAX_HOLDERS are used,
 * each shorter than FETCH_ADDR_MAX) on behalf of `task`.  If the id is
 * already wanted the task joins its waiters (the first holder list stays).
 * Nothing is sent before fetch_pump.  0, or -1 with errno (ENOMEM, EINVAL:
 * no usable holder) and no callback will come for this task. */
int fetch_want(fetch_t *f, uint64_t id, uint64_t nbytes, const char *const *holders,
               size_t nholders, void *task, uint32_t index);

/* `task` no longer waits for `id` (cancelled, stolen).  An id nobody waits
 * for is not requested any more (a request already sent completes and its
 * bytes are dropped). */
void fetch_unwant(fetch_t *f, uint64_t id, void *task);

/* Send what can be sent: call before the loop sleeps.  May call back (for
 * ids whose holders are all known dead). */
void fetch_pump(fetch_t *f);

/* Periodic work (about once a second): expire requests past their deadline
 * (they fail over), forget dead marks.  May call back. */
void fetch_tick(fetch_t *f, double now);

typedef struct fetch_stats {
    size_t wanted;           /* ids wanted, in flight or queued */
    size_t inflight;         /* requests in flight */
    size_t peers;            /* cached peer sockets */
    uint64_t nrequests;      /* GETs sent, ever */
    uint64_t nreceived;      /* items received, ever */
    uint64_t bytes;          /* bytes received, ever */
    uint64_t nfailovers;     /* times an id moved on to its next holder */
} fetch_stats_t;

void fetch_stats(const fetch_t *f, fetch_stats_t *out);

#endif
