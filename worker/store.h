/*
 * store.h - the worker's result store (docs/DATAPLANE.md, "Worker store").
 *
 * A map from task id to a stored result: one packed MessagePack object in a
 * reference-counted buffer.  Results larger than PROTO_INLINE_MAX that this
 * worker computed, results fetched from peers for the tasks queued here, and
 * data clients PUT on the data endpoint live here until the scheduler says
 * FREE.
 *
 * Threads: the store itself (map, LRU list, spilling, byte counts) belongs to
 * the worker's loop thread and is not thread-safe.  Buffers are shared: an
 * executor running a task holds a reference on each stored input, and a
 * ZeroMQ frame being sent holds one until ZeroMQ's I/O thread is done with
 * it.  So the reference count is atomic and the final release (free() or
 * zmq_msg_close()) may happen on any thread.
 *
 * Memory: above the spill target (bytes of results in memory) the least
 * recently used entries are written to the spill directory and their memory
 * released; they are read back when next used.  An entry whose buffer has a
 * reference besides the store's own (a running task, a frame in flight) is
 * pinned: spilling it would free nothing.
 */
#ifndef SHOAL_WORKER_STORE_H
#define SHOAL_WORKER_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

/* A shared result buffer.  `data`/`len` never change once made. */
typedef struct store_buf {
    int refs;                /* atomic */
    int is_zmsg;             /* the bytes live in `zmsg` (received frame) */
    size_t len;
    void *data;
    zmq_msg_t zmsg;
} store_buf_t;

/* Wrap a malloc'd buffer (ownership passes to the store_buf on success; on
 * failure, NULL with ENOMEM, the caller still owns `data`).  One reference. */
store_buf_t *store_buf_from_malloc(void *data, size_t len);
/* Take a received ZeroMQ frame without copying its bytes: the frame is moved
 * into the buffer (`msg` is left empty, still to be closed by its owner).
 * One reference.  NULL with errno on failure (msg untouched). */
store_buf_t *store_buf_from_zmsg(zmq_msg_t *msg);
/* Another reference (any thread that holds one).  Returns b. */
store_buf_t *store_buf_ref(store_buf_t *b);
/* Drop a reference; the last one frees.  Any thread.  Accepts NULL. */
void store_buf_unref(store_buf_t *b);
/* A zmq_msg_init_data free function: drops the reference given as `hint`.
 * Runs on a ZeroMQ I/O thread. */
void store_buf_zmq_free(void *data, void *hint);


typedef struct store store_t;

typedef struct store_stats {
    size_t entries;
    size_t spilled;          /* entries on disk */
    uint64_t mem_bytes;      /* bytes of entries in memory */
    uint64_t disk_bytes;     /* bytes of entries on disk */
    uint64_t nspills;        /* entries written out, ever */
    uint64_t nunspills;      /* entries read back, ever */
} store_stats_t;

/* A store that spills to `spill_dir` (created, mode 0700, on the first
 * spill; removed by store_destroy) once more than `target` bytes are in
 * memory.  target 0: never spill.  NULL with errno on failure. */
store_t *store_create(const char *spill_dir, uint64_t target);

/* Free every entry, delete the spill files and the spill directory.
 * Buffers still referenced elsewhere live on until released.  Accepts NULL. */
void store_destroy(store_t *s);

/* Store `buf` under `id` (id != 0), taking over the caller's reference, as
 * the most recently used entry.  An entry already under `id` is replaced.
 * 0, or -1 with errno (ENOMEM, EINVAL): the caller keeps its reference. */
int store_put(store_t *s, uint64_t id, store_buf_t *buf);

/* Non-zero if `id` is stored (in memory or spilled). */
int store_has(const store_t *s, uint64_t id);

/* Size of a stored entry, or 0 if absent. */
uint64_t store_nbytes(const store_t *s, uint64_t id);

/* A new reference to the buffer of `id`, which becomes the most recently
 * used entry; a spilled entry is read back first.  NULL with errno: ENOENT
 * (not stored), EIO/ENOMEM (could not read it back; the entry is dropped
 * when its file is damaged). */
store_buf_t *store_get(store_t *s, uint64_t id);


/* Drop `id` (memory and spill file).  1 if it was there, else 0. */
int store_remove(store_t *s, uint64_t id);

/* Spill least recently used unpinned entries until at most the target is in
 * memory.  Returns the number of entries spilled (0 if none needed or none
 * could be); a failed write (disk full) is logged and stops spilling until
 * the next call. */
int store_maintain(store_t *s);

void store_stats(const store_t *s, store_stats_t *out);
const char *store_spill_dir(const store_t *s);

#endif
