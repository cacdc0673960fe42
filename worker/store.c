/*
 * store.c - the worker's result store (see store.h).
 *
 * Entries sit in a u64map by id; those in memory are also on an intrusive
 * LRU list (head: least recently used), which is what spilling walks.
 * Spilled entries keep their map slot and size, with buf == NULL; their bytes
 * are in SPILL_DIR/<id>.  The spill directory is made on the first spill, so
 * a worker that never spills leaves nothing behind.
 */
#define _GNU_SOURCE
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "u64map.h"
#include "util.h"

/* Entries skipped (pinned) before spilling gives up for this round: keeps a
 * call bounded when many entries are in use. */
#define SPILL_SCAN_MAX 4096

typedef struct entry {
    uint64_t id;
    uint64_t nbytes;
    store_buf_t *buf;            /* NULL: spilled */
    struct entry *prev, *next;   /* LRU list, while in memory */
} entry_t;

struct store {
    u64map_t *map;
    entry_t *lru_head, *lru_tail;
    char *dir;
    int dir_made;
    int failing;                 /* the last spill failed: log once, not per call */
    uint64_t target;
    store_stats_t st;
};

/* ---- buffers ------------------------------------------------------------ */

store_buf_t *store_buf_from_malloc(void *data, size_t len)
{
    store_buf_t *b = malloc(sizeof(*b));

    if (!b) {
        errno = ENOMEM;
        return NULL;
    }
    b->refs = 1;
    b->is_zmsg = 0;
    b->len = len;
    b->data = data;
    return b;
}

store_buf_t *store_buf_from_zmsg(zmq_msg_t *msg)
{
    store_buf_t *b = malloc(sizeof(*b));

    if (!b) {
        errno = ENOMEM;
        return NULL;
    }
    zmq_msg_init(&b->zmsg);
    if (zmq_msg_move(&b->zmsg, msg) < 0) {
        int e = errno;
        zmq_msg_close(&b->zmsg);
        free(b);
        errno = e;
        return NULL;
    }
    b->refs = 1;
    b->is_zmsg = 1;
    b->len = zmq_msg_size(&b->zmsg);
    b->data = zmq_msg_data(&b->zmsg);
    return b;
}

store_buf_t *store_buf_ref(store_buf_t *b)
{
    __atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED);
    return b;
}

void store_buf_unref(store_buf_t *b)
{
    if (!b)
        return;
    /* Release/acquire: whatever the other holders did with the buffer
     * happens before the free. */
    if (__atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    if (b->is_zmsg)
        zmq_msg_close(&b->zmsg);
    else
        free(b->data);
    free(b);
}

void store_buf_zmq_free(void *data, void *hint)
{
    (void)data;
    store_buf_unref(hint);
}

/* Only the loop thread adds references to a stored buffer, so a count of 1
 * seen here cannot grow behind our back: the entry is really unused.  A
 * stale count above 1 only makes us skip an entry. */
static int s_pinned(const store_buf_t *b)
{
    return __atomic_load_n(&b->refs, __ATOMIC_ACQUIRE) > 1;
}

/* ---- LRU ---------------------------------------------------------------- */

static void s_lru_unlink(store_t *s, entry_t *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        s->lru_head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        s->lru_tail = e->prev;
    e->prev = e->next = NULL;
}

static void s_lru_append(store_t *s, entry_t *e)
{
    e->next = NULL;
    e->prev = s->lru_tail;
    if (s->lru_tail)
        s->lru_tail->next = e;
    else
        s->lru_head = e;
    s->lru_tail = e;
}

/* ---- spill files -------------------------------------------------------- */

static int s_path(const store_t *s, uint64_t id, char *out, size_t cap)
{
    return util_fmt(out, cap, "%s/%llu", s->dir, (unsigned long long)id);
}

static void s_unlink_spill(store_t *s, uint64_t id)
{
    char path[PATH_MAX];

    if (s_path(s, id, path, sizeof(path)) == 0 && unlink(path) < 0 && errno != ENOENT)
        log_warn("cannot remove spill file %s: %s", path, strerror(errno));
}

/* A spill failure is logged once until a spill works again: a full disk
 * would otherwise log on every check. */
#define s_spill_err(s, ...)                                                    \
    do {                                                                       \
        if (!(s)->failing)                                                     \
            log_err(__VA_ARGS__);                                              \
        (s)->failing = 1;                                                      \
    } while (0)

/* Write e's bytes to its file and release the memory.  0 or -1. */
static int s_spill(store_t *s, entry_t *e)
{
    char path[PATH_MAX];
    int fd;

    if (!s->dir_made) {
        if (util_mkdir_p(s->dir) < 0) {
            s_spill_err(s, "cannot create the spill directory %s: %s", s->dir,
                        strerror(errno));
            return -1;
        }
        s->dir_made = 1;
    }
    if (s_path(s, e->id, path, sizeof(path)) < 0) {
        s_spill_err(s, "spill path for %llu is too long", (unsigned long long)e->id);
        return -1;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        s_spill_err(s, "cannot create spill file %s: %s", path, strerror(errno));
        return -1;
    }
    /* No fsync: the file only has to outlive this process's memory
     * pressure, not a crash of the machine. */
    if (util_write_all(fd, e->buf->data, e->buf->len) < 0) {
        s_spill_err(s, "cannot write spill file %s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    if (close(fd) < 0) {
        s_spill_err(s, "cannot write spill file %s: %s", path, strerror(errno));
        unlink(path);
        return -1;
    }
    s_lru_unlink(s, e);
    store_buf_unref(e->buf);
    e->buf = NULL;
    s->st.spilled++;
    s->st.nspills++;
    s->st.mem_bytes -= e->nbytes;
    s->st.disk_bytes += e->nbytes;
    s->failing = 0;
    return 0;
}

/* Read a spilled entry back.  0 or -1 with errno. */
static int s_unspill(store_t *s, entry_t *e)
{
    char path[PATH_MAX];
    struct stat sb;
    store_buf_t *b;
    void *data;
    size_t got = 0;
    int fd;

    if (s_path(s, e->id, path, sizeof(path)) < 0) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        int err = errno;
        log_err("cannot open spill file %s: %s", path, strerror(err));
        errno = EIO;
        return -1;
    }
    if (fstat(fd, &sb) < 0 || (uint64_t)sb.st_size != e->nbytes) {
        log_err("spill file %s has the wrong size", path);
        close(fd);
        errno = EIO;
        return -1;
    }
    if (!(data = malloc(e->nbytes ? e->nbytes : 1))) {
        close(fd);
        errno = ENOMEM;
        return -1;
    }
    while (got < e->nbytes) {
        ssize_t n = read(fd, (char *)data + got, e->nbytes - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            log_err("cannot read spill file %s: %s", path, n < 0 ? strerror(errno) : "short");
            free(data);
            close(fd);
            errno = EIO;
            return -1;
        }
        got += (size_t)n;
    }
    close(fd);
    if (!(b = store_buf_from_malloc(data, e->nbytes))) {
        free(data);
        errno = ENOMEM;
        return -1;
    }
    unlink(path);
    e->buf = b;
    s_lru_append(s, e);
    s->st.spilled--;
    s->st.nunspills++;
    s->st.mem_bytes += e->nbytes;
    s->st.disk_bytes -= e->nbytes;
    return 0;
}

/* ---- entries ------------------------------------------------------------ */

static void s_entry_free(store_t *s, entry_t *e)
{
    if (e->buf) {
        s_lru_unlink(s, e);
        s->st.mem_bytes -= e->nbytes;
        store_buf_unref(e->buf);
    } else {
        s_unlink_spill(s, e->id);
        s->st.spilled--;
        s->st.disk_bytes -= e->nbytes;
    }
    s->st.entries--;
    free(e);
}

store_t *store_create(const char *spill_dir, uint64_t target)
{
    store_t *s = calloc(1, sizeof(*s));

    if (!s)
        return NULL;
    if (!spill_dir || !*spill_dir) {
        free(s);
        errno = EINVAL;
        return NULL;
    }
    s->dir = strdup(spill_dir);
    s->map = u64map_create(256);
    if (!s->dir || !s->map) {
        free(s->dir);
        u64map_destroy(s->map);
        free(s);
        errno = ENOMEM;
        return NULL;
    }
    s->target = target;
    return s;
}

void store_destroy(store_t *s)
{
    size_t pos = 0;
    uint64_t id;
    void *v;

    if (!s)
        return;
    while (u64map_next(s->map, &pos, &id, &v)) {
        entry_t *e = v;
        if (e->buf)
            store_buf_unref(e->buf);
        else
            s_unlink_spill(s, e->id);
        free(e);
    }
    u64map_destroy(s->map);
    if (s->dir_made && rmdir(s->dir) < 0 && errno != ENOENT)
        log_warn("cannot remove the spill directory %s: %s", s->dir, strerror(errno));
    free(s->dir);
    free(s);
}

int store_put(store_t *s, uint64_t id, store_buf_t *buf)
{
    entry_t *e, *old;

    if (id == 0 || !buf) {
        errno = EINVAL;
        return -1;
    }
    if (!(e = calloc(1, sizeof(*e)))) {
        errno = ENOMEM;
        return -1;
    }
    e->id = id;
    e->nbytes = buf->len;
    e->buf = buf;
    old = u64map_get(s->map, id);
    if (u64map_put(s->map, id, e) < 0) {
        free(e);
        errno = ENOMEM;
        return -1;
    }
    if (old)
        s_entry_free(s, old);
    s_lru_append(s, e);
    s->st.entries++;
    s->st.mem_bytes += e->nbytes;
    return 0;
}

int store_has(const store_t *s, uint64_t id)
{
    return id != 0 && u64map_get(s->map, id) != NULL;
}

uint64_t store_nbytes(const store_t *s, uint64_t id)
{
    const entry_t *e = id ? u64map_get(s->map, id) : NULL;
    return e ? e->nbytes : 0;
}

store_buf_t *store_get(store_t *s, uint64_t id)
{
    entry_t *e = id ? u64map_get(s->map, id) : NULL;

    if (!e) {
        errno = ENOENT;
        return NULL;
    }
    if (!e->buf) {
        if (s_unspill(s, e) < 0) {
            int err = errno;
            if (err == EIO) {
                /* The file is gone or damaged: the entry is lost; saying
                 * so (ENOENT next time) lets the task fetch it elsewhere. */
                u64map_del(s->map, id);
                s_entry_free(s, e);
            }
            errno = err;
            return NULL;
        }
    } else {
        s_lru_unlink(s, e);
        s_lru_append(s, e);
    }
    return store_buf_ref(e->buf);
}

int store_remove(store_t *s, uint64_t id)
{
    entry_t *e = id ? u64map_del(s->map, id) : NULL;

    if (!e)
        return 0;
    s_entry_free(s, e);
    return 1;
}

int store_maintain(store_t *s)
{
    entry_t *e, *next;
    int n = 0, skipped = 0;

    if (s->target == 0 || s->st.mem_bytes <= s->target)
        return 0;
    for (e = s->lru_head; e && s->st.mem_bytes > s->target; e = next) {
        next = e->next;
        if (s_pinned(e->buf)) {
            if (++skipped >= SPILL_SCAN_MAX)
                break;
            continue;
        }
        if (s_spill(s, e) < 0)
            break;
        n++;
    }
    if (n)
        log_debug("spilled %d results to %s (%llu bytes left in memory)", n, s->dir,
                  (unsigned long long)s->st.mem_bytes);
    return n;
}

void store_stats(const store_t *s, store_stats_t *out)
{
    *out = s->st;
}

const char *store_spill_dir(const store_t *s)
{
    return s->dir;
}
