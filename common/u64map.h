/*
 * u64map.h - open-addressing hash map from uint64_t keys to pointers.
 * O(1) expected insert/lookup/delete (backward-shift deletion, no tombstones).
 * Key 0 is reserved (never a valid key).  Not thread-safe.
 */
#ifndef SHOAL_U64MAP_H
#define SHOAL_U64MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct u64map u64map_t;

u64map_t *u64map_create(size_t initial_capacity);
void u64map_destroy(u64map_t *m);               /* accepts NULL; values not freed */
/* Call free_value on every value, then destroy the map.  Accepts NULL. */
void u64map_destroy_each(u64map_t *m, void (*free_value)(void *value));
/* Insert or replace.  0 on success, -1 (ENOMEM) on failure, EINVAL for key 0. */
int u64map_put(u64map_t *m, uint64_t key, void *value);
void *u64map_get(const u64map_t *m, uint64_t key);   /* NULL if absent */
void *u64map_del(u64map_t *m, uint64_t key);         /* removed value or NULL */
size_t u64map_size(const u64map_t *m);

/* Iteration: `*pos` starts at 0; returns 1 and fills key/value for each entry,
 * 0 when done.  The map must not be modified during an iteration (collect the
 * keys first when entries are to be deleted). */
int u64map_next(const u64map_t *m, size_t *pos, uint64_t *key, void **value);

#endif
