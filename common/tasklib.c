/*
 * tasklib.c - the registry of task functions: built-ins plus the tables of
 * dlopen'ed task libraries.
 *
 * The registry is a string-keyed open-addressing hash table (linear probing,
 * power-of-two capacity, at most half full, no deletion: a function is only
 * ever added or replaced).  Names are not copied: a built-in's name is a
 * literal and a library's name lives in the library, which stays mapped until
 * tasklib_destroy().  Executor threads look functions up concurrently, so the
 * table sits behind a rwlock: lookups share it, loads take it exclusively.
 */
#define _GNU_SOURCE
#include "tasklib.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cmdtask.h"
#include "log.h"
#include "util.h"

#define S_MAX_NAME 255
#define S_MAX_FUNCS 100000
#define S_MAX_LIB_BYTES (512u << 20)
/* Longest sanitised library name kept in the cached file name. */
#define S_MAX_FILE_NAME 64

typedef struct s_slot {
    const char *name;   /* NULL: empty slot */
    size_t len;
    uint64_t hash;
    shoal_task_fn fn;
} s_slot_t;

struct tasklib {
    pthread_rwlock_t lock;
    s_slot_t *slots;
    size_t cap;          /* power of two */
    size_t count;
    void **handles;      /* dlopen handles, closed at destroy */
    size_t nhandles, hcap;
    uint64_t *hashes;    /* content hashes of libraries loaded from bytes */
    size_t nhashes, hashcap;
};

/* --- Built-in functions ---------------------------------------------------- */

static int s_noop(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)ctx;
    (void)args;
    return msgpack_pack_nil(out);
}

static int s_echo(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    if (shoal_nargs(args) == 0)
        return msgpack_pack_nil(out);
    if (msgpack_pack_object(out, args->via.array.ptr[0]) < 0)
        return shoal_task_error(ctx, "out of memory");
    return 0;
}

static int s_sleep(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    double secs = 0;
    struct timespec now, end;

    if (shoal_arg_f64(ctx, args, 0, &secs) < 0)
        return -1;
    if (!isfinite(secs) || secs < 0 || secs > 1e9)
        return shoal_task_error(ctx, "shoal.sleep: bad duration %g", secs);
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += (time_t)secs;
    end.tv_nsec += (long)((secs - floor(secs)) * 1e9);
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000L;
    }
    /* Sleep in short slices so a cancelled task lets its thread go soon. */
    for (;;) {
        if (shoal_task_cancelled(ctx))
            return shoal_task_error(ctx, "cancelled");
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t left_ns = (int64_t)(end.tv_sec - now.tv_sec) * 1000000000LL +
                          (end.tv_nsec - now.tv_nsec);
        if (left_ns <= 0)
            break;
        if (left_ns > 50000000LL)
            left_ns = 50000000LL;
        struct timespec slice = {0, (long)left_ns};
        nanosleep(&slice, NULL);
    }
    return msgpack_pack_nil(out);
}

static int s_fail(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)out;
    if (shoal_nargs(args) > 0 && args->via.array.ptr[0].type == MSGPACK_OBJECT_STR) {
        const msgpack_object_str *s = &args->via.array.ptr[0].via.str;
        int n = s->size > 4096 ? 4096 : (int)s->size;
        return shoal_task_error(ctx, "%.*s", n, s->ptr);
    }
    return shoal_task_error(ctx, "shoal.fail called without a message");
}

static int s_sum(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    __int128 isum = 0;   /* cannot overflow: at most 2^32 terms of 2^64 */
    double fsum = 0;
    int any_float = 0;
    size_t n = shoal_nargs(args);

    for (size_t i = 0; i < n; i++) {
        const msgpack_object *o = &args->via.array.ptr[i];
        switch (o->type) {
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
            isum += o->via.u64;
            fsum += (double)o->via.u64;
            break;
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
            isum += o->via.i64;
            fsum += (double)o->via.i64;
            break;
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64:
            any_float = 1;
            fsum += o->via.f64;
            break;
        default:
            return shoal_task_error(ctx, "argument %zu: expected a number", i);
        }
    }
    if (any_float)
        return msgpack_pack_double(out, fsum);
    if (isum >= INT64_MIN && isum <= INT64_MAX)
        return msgpack_pack_int64(out, (int64_t)isum);
    if (isum > 0 && isum <= (__int128)UINT64_MAX)
        return msgpack_pack_uint64(out, (uint64_t)isum);
    return shoal_task_error(ctx, "shoal.sum: the sum does not fit in 64 bits");
}

static const shoal_task_def_t s_builtins[] = {
    {"shoal.cmd", cmdtask_run},
    {"shoal.noop", s_noop},
    {"shoal.echo", s_echo},
    {"shoal.sleep", s_sleep},
    {"shoal.fail", s_fail},
    {"shoal.sum", s_sum},
    {NULL, NULL},
};

/* --- Hash table ------------------------------------------------------------ */

static s_slot_t *s_probe(s_slot_t *slots, size_t cap, const char *name, size_t len,
                         uint64_t hash)
{
    size_t mask = cap - 1;
    for (size_t i = (size_t)hash & mask;; i = (i + 1) & mask) {
        s_slot_t *s = &slots[i];
        if (!s->name || (s->hash == hash && s->len == len && memcmp(s->name, name, len) == 0))
            return s;
    }
}

/* Make room for `more` new names (table at most half full).  Write lock held. */
static int s_reserve(tasklib_t *t, size_t more)
{
    size_t want = t->count + more;
    size_t cap = t->cap ? t->cap : 64;
    while (cap / 2 < want)
        cap *= 2;
    if (cap == t->cap)
        return 0;
    s_slot_t *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t i = 0; i < t->cap; i++) {
        s_slot_t *o = &t->slots[i];
        if (o->name)
            *s_probe(slots, cap, o->name, o->len, o->hash) = *o;
    }
    free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return 0;
}

/* Insert or replace; room was reserved.  Returns 1 if it replaced a name. */
static int s_put(tasklib_t *t, const char *name, shoal_task_fn fn)
{
    size_t len = strlen(name);
    uint64_t hash = util_fnv1a64(name, len);
    s_slot_t *s = s_probe(t->slots, t->cap, name, len, hash);
    int replaced = s->name != NULL;
    if (!replaced)
        t->count++;
    *s = (s_slot_t){.name = name, .len = len, .hash = hash, .fn = fn};
    return replaced;
}

static int s_push(void *arr_p, size_t *n, size_t *cap, size_t elem, const void *v)
{
    void **arr = arr_p;
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        void *na = realloc(*arr, ncap * elem);
        if (!na)
            return -1;
        *arr = na;
        *cap = ncap;
    }
    memcpy((char *)*arr + *n * elem, v, elem);
    (*n)++;
    return 0;
}

/* --- Public ---------------------------------------------------------------- */

tasklib_t *tasklib_create(void)
{
    tasklib_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    int e = pthread_rwlock_init(&t->lock, NULL);
    if (e) {
        free(t);
        errno = e;
        return NULL;
    }
    if (s_reserve(t, sizeof s_builtins / sizeof s_builtins[0]) < 0) {
        tasklib_destroy(t);
        errno = ENOMEM;
        return NULL;
    }
    for (const shoal_task_def_t *d = s_builtins; d->name; d++)
        s_put(t, d->name, d->fn);
    return t;
}

void tasklib_destroy(tasklib_t *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nhandles; i++)
        dlclose(t->handles[i]);
    free(t->handles);
    free(t->hashes);
    free(t->slots);
    pthread_rwlock_destroy(&t->lock);
    free(t);
}

/* Check a library's table: every name non-empty and at most S_MAX_NAME
 * characters, every function set, a terminator within S_MAX_FUNCS entries.
 * Returns the number of entries, or -1 with a reason in err. */
static long s_check_table(const shoal_task_def_t *defs, const char *path, char *err,
                          size_t errcap)
{
    size_t n = 0;
    for (; defs[n].name || defs[n].fn; n++) {
        if (n >= S_MAX_FUNCS) {
            snprintf(err, errcap, "'%s': more than %d task functions (or a table "
                     "without its {NULL, NULL} end)", path, S_MAX_FUNCS);
            return -1;
        }
        if (!defs[n].name || !defs[n].fn) {
            snprintf(err, errcap, "'%s': task table entry %zu has no %s", path, n,
                     defs[n].name ? "function" : "name");
            return -1;
        }
        size_t len = strnlen(defs[n].name, S_MAX_NAME + 1);
        if (len == 0 || len > S_MAX_NAME) {
            snprintf(err, errcap, "'%s': task table entry %zu: name %s", path, n,
                     len ? "longer than 255 characters" : "is empty");
            return -1;
        }
    }
    return (long)n;
}

int tasklib_load(tasklib_t *t, const char *path, char *err, size_t errcap)
{
    char dummy[1];
    if (!err || errcap == 0) {
        err = dummy;
        errcap = sizeof dummy;
    }
    err[0] = '\0';
    if (!t || !path || !*path) {
        snprintf(err, errcap, "no library path given");
        errno = EINVAL;
        return -1;
    }

    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        snprintf(err, errcap, "cannot load '%s': %s", path, why ? why : "dlopen failed");
        errno = ENOEXEC;
        return -1;
    }

    int saved = EINVAL;
    pthread_rwlock_wrlock(&t->lock);
    for (size_t i = 0; i < t->nhandles; i++) {
        if (t->handles[i] == h) {
            /* Already loaded (dlopen gave the same handle): drop the extra
             * reference this call took. */
            pthread_rwlock_unlock(&t->lock);
            dlclose(h);
            return 0;
        }
    }

    const shoal_task_def_t *defs = dlsym(h, "shoal_tasks");
    const unsigned *abi = dlsym(h, "shoal_tasks_abi");
    if (!defs) {
        snprintf(err, errcap, "'%s' is not a shoal task library (no shoal_tasks table)",
                 path);
        goto refuse;
    }
    if (!abi) {
        snprintf(err, errcap, "'%s' has no shoal_tasks_abi (build it with the "
                 "SHOAL_TASKS macro of shoal_task.h)", path);
        goto refuse;
    }
    if (*abi != SHOAL_TASK_ABI) {
        snprintf(err, errcap, "'%s' was built for task ABI %u, this program uses %d",
                 path, *abi, SHOAL_TASK_ABI);
        goto refuse;
    }
    long n = s_check_table(defs, path, err, errcap);
    if (n < 0)
        goto refuse;
    if (t->count + (size_t)n > S_MAX_FUNCS) {
        snprintf(err, errcap, "'%s': too many task functions in all (limit %d)", path,
                 S_MAX_FUNCS);
        saved = E2BIG;
        goto refuse;
    }
    if (s_reserve(t, (size_t)n) < 0 ||
        s_push(&t->handles, &t->nhandles, &t->hcap, sizeof h, &h) < 0) {
        snprintf(err, errcap, "'%s': out of memory", path);
        saved = ENOMEM;
        goto refuse;
    }
    long replaced = 0;
    const char *first = NULL;
    for (long i = 0; i < n; i++) {
        if (s_put(t, defs[i].name, defs[i].fn) && replaced++ == 0)
            first = defs[i].name;
    }
    pthread_rwlock_unlock(&t->lock);
    /* One line per library, not per function: a reloaded library would
     * otherwise flood the log. */
    if (replaced == 1)
        log_warn("task '%s' from %s replaces one of the same name", first, path);
    else if (replaced > 1)
        log_warn("%ld tasks from %s (e.g. '%s') replace ones of the same name", replaced,
                 path, first);
    log_debug("loaded %ld task functions from %s", n, path);
    return 0;

refuse:
    pthread_rwlock_unlock(&t->lock);
    dlclose(h);
    errno = saved;
    return -1;
}

/* Reduce a library name to [A-Za-z0-9._-] for use in a file name, without a
 * trailing ".so" (one is appended). */
static void s_sanitise(const char *name, char *out, size_t cap)
{
    size_t n = 0;
    if (name) {
        /* Keep only the last path component of what a client called it. */
        const char *slash = strrchr(name, '/');
        if (slash)
            name = slash + 1;
        for (; *name && n + 1 < cap; name++) {
            char c = *name;
            int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                     (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
            out[n++] = ok ? c : '_';
        }
    }
    out[n] = '\0';
    if (n >= 3 && strcmp(out + n - 3, ".so") == 0)
        out[n -= 3] = '\0';
    if (n == 0)
        snprintf(out, cap, "lib");
}

static int s_have_hash(tasklib_t *t, uint64_t hash)
{
    int found = 0;
    pthread_rwlock_rdlock(&t->lock);
    for (size_t i = 0; i < t->nhashes && !found; i++)
        found = t->hashes[i] == hash;
    pthread_rwlock_unlock(&t->lock);
    return found;
}

int tasklib_load_bytes(tasklib_t *t, const char *name, const void *data, size_t len,
                       uint64_t *hash_out, char *err, size_t errcap)
{
    char dummy[1];
    char dir[4096], path[4096 + 128], tmp[4096 + 32], clean[S_MAX_FILE_NAME + 1];
    int fd = -1, saved = EINVAL;

    if (!err || errcap == 0) {
        err = dummy;
        errcap = sizeof dummy;
    }
    err[0] = '\0';
    tmp[0] = '\0';
    if (!t || (!data && len)) {
        snprintf(err, errcap, "bad arguments");
        errno = EINVAL;
        return -1;
    }
    if (len == 0) {
        snprintf(err, errcap, "library '%s' is empty", name ? name : "");
        errno = EINVAL;
        return -1;
    }
    if (len > S_MAX_LIB_BYTES) {
        snprintf(err, errcap, "library '%s' is too large (%zu bytes; the limit is "
                 "512 MiB)", name ? name : "", len);
        errno = EFBIG;
        return -1;
    }
    uint64_t hash = util_fnv1a64(data, len);
    if (hash_out)
        *hash_out = hash;
    if (s_have_hash(t, hash))
        return 0;

    const char *rt = util_runtime_dir();
    if (!rt || util_fmt(dir, sizeof dir, "%s/libs", rt) < 0) {
        snprintf(err, errcap, "no usable runtime directory for libraries");
        errno = ENAMETOOLONG;
        return -1;
    }
    if (util_mkdir_p(dir) < 0) {
        saved = errno;
        snprintf(err, errcap, "cannot create '%s': %s", dir, strerror(saved));
        goto error;
    }
    s_sanitise(name, clean, sizeof clean);
    if (util_fmt(path, sizeof path, "%s/%016llx-%s.so", dir, (unsigned long long)hash,
                 clean) < 0 ||
        util_fmt(tmp, sizeof tmp, "%s/.upload-XXXXXX", dir) < 0) {
        snprintf(err, errcap, "runtime directory path too long");
        tmp[0] = '\0';
        saved = ENAMETOOLONG;
        goto error;
    }
    /* A temporary file renamed into place: another process of this user
     * loading the same library never sees a half-written file. */
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        saved = errno;
        snprintf(err, errcap, "cannot create a file in '%s': %s", dir, strerror(saved));
        tmp[0] = '\0';
        goto error;
    }
    if (fchmod(fd, 0700) < 0 || util_write_all(fd, data, len) < 0) {
        saved = errno;
        snprintf(err, errcap, "cannot write '%s': %s", tmp, strerror(saved));
        goto error;
    }
    int rc = close(fd);
    fd = -1;
    if (rc < 0) {
        saved = errno;
        snprintf(err, errcap, "cannot write '%s': %s", tmp, strerror(saved));
        goto error;
    }
    if (rename(tmp, path) < 0) {
        saved = errno;
        snprintf(err, errcap, "cannot rename '%s' to '%s': %s", tmp, path,
                 strerror(saved));
        goto error;
    }
    tmp[0] = '\0';
    if (tasklib_load(t, path, err, errcap) < 0) {
        saved = errno;
        unlink(path);
        errno = saved;
        return -1;
    }
    pthread_rwlock_wrlock(&t->lock);
    int dup = 0;
    for (size_t i = 0; i < t->nhashes && !dup; i++)
        dup = t->hashes[i] == hash;
    /* If remembering the hash fails, a later upload of the same bytes just
     * loads the same path again, which tasklib_load treats as a no-op. */
    if (!dup)
        (void)s_push(&t->hashes, &t->nhashes, &t->hashcap, sizeof hash, &hash);
    pthread_rwlock_unlock(&t->lock);
    return 0;

error:
    if (fd >= 0)
        close(fd);
    if (tmp[0])
        unlink(tmp);
    errno = saved;
    return -1;
}

shoal_task_fn tasklib_find(tasklib_t *t, const char *name, size_t len)
{
    if (!t || !name || len == 0 || len > S_MAX_NAME)
        return NULL;
    uint64_t hash = util_fnv1a64(name, len);
    pthread_rwlock_rdlock(&t->lock);
    shoal_task_fn fn = s_probe(t->slots, t->cap, name, len, hash)->fn;
    pthread_rwlock_unlock(&t->lock);
    return fn;
}

size_t tasklib_count(tasklib_t *t)
{
    if (!t)
        return 0;
    pthread_rwlock_rdlock(&t->lock);
    size_t n = t->count;
    pthread_rwlock_unlock(&t->lock);
    return n;
}
