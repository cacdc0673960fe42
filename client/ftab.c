/*
 * ftab.c - the client's future index (see client_int.h): a paged array
 * indexed by the counter part of task ids.  Not thread-safe: the client's
 * mutex protects it.
 */
#include "client_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static inline uint64_t s_n(uint64_t id)
{
    return id & CLIENT_N_MAX;
}

shoal_future_t *ftab_get(const ftab_t *t, uint64_t id)
{
    uint64_t n = s_n(id);
    size_t p = (size_t)(n >> FTAB_PAGE_BITS);
    if (p >= t->npages || !t->pages[p])
        return NULL;
    shoal_future_t *f = t->pages[p][n & (FTAB_PAGE - 1)];
    return f && f->id == id ? f : NULL;
}

int ftab_put(ftab_t *t, shoal_future_t *f)
{
    uint64_t n = s_n(f->id);
    size_t p = (size_t)(n >> FTAB_PAGE_BITS);
    if (p >= t->npages) {
        size_t np = t->npages ? t->npages : 16;
        while (np <= p)
            np *= 2;
        shoal_future_t ***pages = realloc(t->pages, np * sizeof *pages);
        if (!pages)
            goto nomem;
        t->pages = pages;
        uint32_t *live = realloc(t->live, np * sizeof *live);
        if (!live)
            goto nomem;
        t->live = live;
        memset(t->pages + t->npages, 0, (np - t->npages) * sizeof *t->pages);
        memset(t->live + t->npages, 0, (np - t->npages) * sizeof *t->live);
        t->npages = np;
    }
    if (!t->pages[p] && !(t->pages[p] = calloc(FTAB_PAGE, sizeof **t->pages)))
        goto nomem;
    shoal_future_t **slot = &t->pages[p][n & (FTAB_PAGE - 1)];
    if (*slot) {
        errno = EEXIST;
        return -1;
    }
    *slot = f;
    t->live[p]++;
    t->count++;
    t->pending += f->status == SHOAL_PENDING;
    return 0;
nomem:
    errno = ENOMEM;
    return -1;
}

void ftab_del(ftab_t *t, const shoal_future_t *f, uint64_t next_n)
{
    uint64_t n = s_n(f->id);
    size_t p = (size_t)(n >> FTAB_PAGE_BITS);
    if (p >= t->npages || !t->pages[p])
        return;
    shoal_future_t **slot = &t->pages[p][n & (FTAB_PAGE - 1)];
    if (*slot != f)
        return;
    *slot = NULL;
    t->count--;
    t->pending -= f->status == SHOAL_PENDING;
    if (--t->live[p] == 0 && p != (size_t)(s_n(next_n) >> FTAB_PAGE_BITS)) {
        free(t->pages[p]);
        t->pages[p] = NULL;
    }
}

int ftab_next(const ftab_t *t, size_t *pos, shoal_future_t **f)
{
    size_t i = *pos;
    while ((i >> FTAB_PAGE_BITS) < t->npages) {
        size_t p = i >> FTAB_PAGE_BITS;
        if (!t->pages[p] || t->live[p] == 0) {
            i = (p + 1) << FTAB_PAGE_BITS;
            continue;
        }
        shoal_future_t *x = t->pages[p][i & (FTAB_PAGE - 1)];
        i++;
        if (x) {
            *pos = i;
            *f = x;
            return 1;
        }
    }
    *pos = i;
    return 0;
}

void ftab_destroy(ftab_t *t)
{
    for (size_t p = 0; p < t->npages; p++)
        free(t->pages[p]);
    free(t->pages);
    free(t->live);
    memset(t, 0, sizeof *t);
}
