/*
 * tmap.c - task id -> record (see tmap.h for why it is not a u64map).
 *
 * Linear probing over a power-of-two table of 16-byte slots, allocated on a
 * 64-byte boundary so that slots 4g .. 4g+3 are one cache line.  A key's
 * home slot keeps its two low bits and hashes the rest, its group g =
 * key >> 2, multiplicatively (the top bits of (g ^ seed) * 2^64/phi, which
 * spread consecutive groups evenly over the table):
 *
 *     home(key) = ((g ^ seed) * PHI64 >> gshift) << 2 | (key & 3)
 *
 * so four consecutive ids fill one line and a run of ids touches a new line
 * every four keys, where u64map touches one per key.  Deletion shifts later
 * entries of the probe run back (no tombstones), as in u64map.  The load is
 * kept at or below 70% by doubling.
 */
#define _GNU_SOURCE
#include "tmap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

typedef struct tslot {
    uint64_t key;
    void *value;
} tslot_t;

struct tmap {
    tslot_t *slots;
    size_t mask;     /* capacity - 1; capacity is a power of two, >= 16 */
    unsigned gshift; /* 64 - log2(capacity / 4): the group hash's width */
    size_t size;
    size_t grow_at;  /* size that makes the table double (70% load) */
    uint64_t seed;
};

#define PHI64 0x9e3779b97f4a7c15ULL

#define TMAP_MIN_CAP 16
#define TMAP_LINE 64

/* The splitmix64 finalizer: a bijection that spreads every input bit. */
static inline uint64_t s_mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static inline size_t s_home(const tmap_t *m, uint64_t key)
{
    return (size_t)(((((key >> 2) ^ m->seed) * PHI64) >> m->gshift) << 2 | (key & 3));
}

static int s_alloc(tmap_t *m, size_t cap)
{
    if (cap > ((size_t)-1) / 2 / sizeof(tslot_t)) {
        errno = ENOMEM;
        return -1;
    }
    void *p = NULL;
    if (posix_memalign(&p, TMAP_LINE, cap * sizeof(tslot_t)) != 0) {
        errno = ENOMEM;
        return -1;
    }
    memset(p, 0, cap * sizeof(tslot_t));
    m->slots = p;
    m->mask = cap - 1;
    m->gshift = 64 + 2 - (unsigned)__builtin_ctzll(cap);
    m->grow_at = cap / 10 * 7 + (cap % 10) * 7 / 10;
    return 0;
}

static uint64_t s_seed(const void *salt)
{
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) == (ssize_t)sizeof seed)
        return seed;
    /* No entropy yet (early boot): something that differs per process is
     * still far better than a constant. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return s_mix((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^
                 ((uint64_t)getpid() << 16) ^ (uint64_t)(uintptr_t)salt);
}

tmap_t *tmap_create(size_t initial)
{
    size_t cap = TMAP_MIN_CAP;
    if (initial > ((size_t)-1) / 4 / sizeof(tslot_t)) {
        errno = ENOMEM;
        return NULL;
    }
    /* Room for `initial` keys below the 70% load. */
    size_t want = initial + initial / 2 + 1;
    while (cap < want)
        cap <<= 1;
    tmap_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    if (s_alloc(m, cap) < 0) {
        free(m);
        errno = ENOMEM;
        return NULL;
    }
    m->seed = s_seed(m);
    return m;
}

void tmap_destroy(tmap_t *m)
{
    if (!m)
        return;
    free(m->slots);
    free(m);
}

/* Slot of key, or the empty slot where it would go. */
static inline size_t s_find(const tmap_t *m, uint64_t key)
{
    size_t i = s_home(m, key);
    for (;;) {
        uint64_t k = m->slots[i].key;
        if (k == key || k == 0)
            return i;
        i = (i + 1) & m->mask;
    }
}

static int s_grow(tmap_t *m)
{
    tslot_t *old = m->slots;
    size_t oldcap = m->mask + 1;
    if (s_alloc(m, oldcap * 2) < 0)
        return -1; /* s_alloc changes nothing when it fails */
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].key)
            m->slots[s_find(m, old[i].key)] = old[i];
    free(old);
    return 0;
}

int tmap_put(tmap_t *m, uint64_t key, void *value)
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

void *tmap_get(const tmap_t *m, uint64_t key)
{
    if (!m || key == 0)
        return NULL;
    size_t i = s_find(m, key);
    return m->slots[i].key == key ? m->slots[i].value : NULL;
}

void *tmap_del(tmap_t *m, uint64_t key)
{
    if (!m || key == 0)
        return NULL;
    size_t i = s_find(m, key);
    if (m->slots[i].key != key)
        return NULL;
    void *value = m->slots[i].value;
    /* Backward shift: an entry later in the run moves into the hole when
     * its home is not cyclically within (hole, its slot]. */
    size_t j = i;
    for (;;) {
        j = (j + 1) & m->mask;
        uint64_t k = m->slots[j].key;
        if (k == 0)
            break;
        size_t home = s_home(m, k);
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

size_t tmap_size(const tmap_t *m)
{
    return m ? m->size : 0;
}

void tmap_prefetch(const tmap_t *m, uint64_t key)
{
    if (m)
        __builtin_prefetch(&m->slots[s_home(m, key)]);
}

int tmap_next(const tmap_t *m, size_t *pos, uint64_t *key, void **value)
{
    if (!m || !pos)
        return 0;
    for (size_t i = *pos; i <= m->mask; i++) {
        if (m->slots[i].key) {
            if (key)
                *key = m->slots[i].key;
            if (value)
                *value = m->slots[i].value;
            *pos = i + 1;
            return 1;
        }
    }
    *pos = m->mask + 1;
    return 0;
}
