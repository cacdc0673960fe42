/*
 * u64map.c - open addressing with linear probing over a power-of-two table.
 *
 * Keys are scrambled with the splitmix64 finalizer so that sequential task
 * ids ((client << 40) | n) spread evenly.  Deletion shifts later entries of
 * the same probe run backwards instead of leaving tombstones, so lookups
 * never degrade after many insert/delete cycles.  Key 0 marks an empty slot.
 */
#include "u64map.h"

#include <errno.h>
#include <stdlib.h>

struct u64slot {
    uint64_t key;
    void *value;
};

struct u64map {
    struct u64slot *slots;
    size_t cap;   /* power of two */
    size_t mask;  /* cap - 1 */
    size_t size;
    size_t grow_at; /* size that triggers doubling (70% load) */
};

#define U64MAP_MIN_CAP 16

static inline uint64_t s_mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static int s_alloc(u64map_t *m, size_t cap)
{
    struct u64slot *s = calloc(cap, sizeof *s);
    if (!s)
        return -1;
    m->slots = s;
    m->cap = cap;
    m->mask = cap - 1;
    m->grow_at = cap / 10 * 7 + (cap % 10) * 7 / 10;
    return 0;
}

u64map_t *u64map_create(size_t initial_capacity)
{
    if (initial_capacity > ((size_t)-1) / 4 / sizeof(struct u64slot)) {
        errno = ENOMEM;
        return NULL;
    }
    /* Room for initial_capacity entries without growing. */
    size_t want = initial_capacity + initial_capacity / 2 + 1;
    size_t cap = U64MAP_MIN_CAP;
    while (cap < want) {
        if (cap > ((size_t)-1) / 4) {
            errno = ENOMEM;
            return NULL;
        }
        cap <<= 1;
    }
    u64map_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    if (s_alloc(m, cap) < 0) {
        free(m);
        errno = ENOMEM;
        return NULL;
    }
    return m;
}

void u64map_destroy(u64map_t *m)
{
    if (!m)
        return;
    free(m->slots);
    free(m);
}

/* Slot index of key, or of the empty slot where it would go. */
static inline size_t s_find(const u64map_t *m, uint64_t key)
{
    size_t i = (size_t)s_mix(key) & m->mask;
    for (;;) {
        uint64_t k = m->slots[i].key;
        if (k == key || k == 0)
            return i;
        i = (i + 1) & m->mask;
    }
}

static int s_grow(u64map_t *m)
{
    struct u64slot *old = m->slots;
    size_t oldcap = m->cap;
    if (oldcap > ((size_t)-1) / 2 / sizeof *old) {
        errno = ENOMEM;
        return -1;
    }
    if (s_alloc(m, oldcap * 2) < 0) {
        m->slots = old;
        errno = ENOMEM;
        return -1;
    }
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i].key) {
            size_t j = s_find(m, old[i].key);
            m->slots[j] = old[i];
        }
    }
    free(old);
    return 0;
}

int u64map_put(u64map_t *m, uint64_t key, void *value)
{
    if (!m || key == 0) {
        errno = EINVAL;
        return -1;
    }
    size_t i = s_find(m, key);
    if (m->slots[i].key == key) {
        m->slots[i].value = value;
        return 0;
    }
    if (m->size + 1 > m->grow_at) {
        if (s_grow(m) < 0)
            return -1;
        i = s_find(m, key);
    }
    m->slots[i].key = key;
    m->slots[i].value = value;
    m->size++;
    return 0;
}

void *u64map_get(const u64map_t *m, uint64_t key)
{
    if (!m || key == 0)
        return NULL;
    size_t i = s_find(m, key);
    return m->slots[i].key == key ? m->slots[i].value : NULL;
}

void *u64map_del(u64map_t *m, uint64_t key)
{
    if (!m || key == 0)
        return NULL;
    size_t i = s_find(m, key);
    if (m->slots[i].key != key)
        return NULL;
    void *value = m->slots[i].value;

    /* Backward-shift: walk the rest of the probe run and move back every
     * entry whose home slot is not cyclically within (i, j]. */
    size_t j = i;
    for (;;) {
        j = (j + 1) & m->mask;
        uint64_t k = m->slots[j].key;
        if (k == 0)
            break;
        size_t home = (size_t)s_mix(k) & m->mask;
        /* Distance from home to j versus from i to j (mod cap): the entry at
         * j may fill the hole at i only if its home is at or before i. */
        if (((j - home) & m->mask) >= ((j - i) & m->mask)) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].key = 0;
    m->slots[i].value = NULL;
    m->size--;
    return value;
}

size_t u64map_size(const u64map_t *m)
{
    return m ? m->size : 0;
}

int u64map_next(const u64map_t *m, size_t *pos, uint64_t *key, void **value)
{
    if (!m || !pos)
        return 0;
    for (size_t i = *pos; i < m->cap; i++) {
        if (m->slots[i].key) {
            if (key)
                *key = m->slots[i].key;
            if (value)
                *value = m->slots[i].value;
            *pos = i + 1;
            return 1;
        }
    }
    *pos = m->cap;
    return 0;
}

void u64map_destroy_each(u64map_t *m, void (*free_value)(void *value))
{
    size_t pos = 0;
    uint64_t key;
    void *val;
    if (!m)
        return;
    while (u64map_next(m, &pos, &key, &val))
        free_value(val);
    u64map_destroy(m);
}
