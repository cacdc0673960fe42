/*
 * tmap.h - the scheduler's map from task id to task record.
 *
 * An open-addressing hash map like common/u64map, with two differences that
 * matter at hundreds of thousands of tasks per second:
 *
 *   - Locality.  Clients number their tasks (client_id << 40) | n with n
 *     counting up, and the scheduler mostly meets them in that order (a
 *     batch of submissions, of results, of releases).  u64map scatters
 *     consecutive keys over the whole table, so every lookup is a cache
 *     miss.  Here the four ids n = 4k .. 4k+3 share one 64-byte line of the
 *     table (their low two bits pick the slot in the line), and only the
 *     group k is hashed, with a per-process random seed so that no client
 *     can aim its ids at one probe run.
 *   - Prefetch.  tmap_prefetch() starts loading a key's line so that a batch
 *     handler can overlap the misses of the next items with its work on the
 *     current one.
 *
 * Key 0 is reserved (never a valid key).  Values are opaque pointers, not
 * freed.  Not thread-safe.
 */
#ifndef SHOAL_SCHED_TMAP_H
#define SHOAL_SCHED_TMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct tmap tmap_t;

/* An empty map with room for `initial` keys.  NULL + errno (ENOMEM). */
tmap_t *tmap_create(size_t initial);
/* Accepts NULL.  Values are not freed. */
void tmap_destroy(tmap_t *m);
/* Insert or replace.  0, or -1 with errno: EINVAL (key 0), ENOMEM. */
int tmap_put(tmap_t *m, uint64_t key, void *value);
/* The value for key, or NULL. */
void *tmap_get(const tmap_t *m, uint64_t key);
/* Remove key; its value, or NULL if it was not there. */
void *tmap_del(tmap_t *m, uint64_t key);
size_t tmap_size(const tmap_t *m);
/* Start loading the table line where key lives (a hint; no effect on
 * the contents). */
void tmap_prefetch(const tmap_t *m, uint64_t key);
/* Iteration: *pos starts at 0; 1 with key and value filled per entry, 0 at
 * the end.  The map must not change during an iteration. */
int tmap_next(const tmap_t *m, size_t *pos, uint64_t *key, void **value);

#endif
