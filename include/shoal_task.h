/*
 * shoal_task.h - writing task libraries for shoal.
 *
 * A task library is an ordinary shared object that exports one symbol,
 * `shoal_tasks`, a table of name -> function ending in a {NULL, NULL} entry:
 *
 *     #include <shoal_task.h>
 *
 *     static int inc(shoal_task_ctx_t *ctx, const msgpack_object *args,
 *                    msgpack_packer *out)
 *     {
 *         int64_t x;
 *         if (shoal_arg_i64(ctx, args, 0, &x) < 0)
 *             return -1;              // the ctx already holds the error text
 *         msgpack_pack_int64(out, x + 1);
 *         return 0;
 *     }
 *
 *     SHOAL_TASKS({"inc", inc});
 *
 * Build it with `cc -shared -fPIC $(pkg-config --cflags --libs shoal) tasks.c`
 * and give it to workers with `shoal-worker --library libx.so`, or upload it
 * from a client with shoal_upload_library().
 *
 * Contract of a task function:
 *   - `args` is always a MessagePack array (possibly empty).  Arguments that
 *     were futures have been replaced by their results before the call.
 *     `args` and everything it points to is valid only during the call.
 *   - On success the function packs exactly ONE MessagePack object into `out`
 *     (its result) and returns 0.
 *   - On failure it calls shoal_task_error() (which returns -1) and returns -1.
 *     Whatever was packed into `out` is discarded.
 *   - Accessors set their outputs (to zero/NULL on failure) so callers need
 *     not initialise them.
 *   - It may run on any executor thread, concurrently with other tasks: it must
 *     be thread-safe.  A long-running function should poll
 *     shoal_task_cancelled() and return early (with an error) when it is set.
 *
 * Everything in this header is static inline on purpose: task libraries do not
 * link against libshoal, so the same .so loads into a worker, into an
 * `inline://` client, or into any program that embeds a task runner.
 */
#ifndef SHOAL_TASK_H
#define SHOAL_TASK_H

#include <msgpack.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of the task ABI below.  The host refuses a library whose
 * `shoal_tasks_abi` differs. */
#define SHOAL_TASK_ABI 1

/* MessagePack ext type that marks a reference to another task's result inside
 * task arguments: 8 bytes, the task id, big-endian. */
#define SHOAL_EXT_FUTURE 0x53

/* The context handed to every task call.  Filled by the host; a task only
 * reads it through the functions below. */
typedef struct shoal_task_ctx {
    uint32_t abi;                   /* SHOAL_TASK_ABI */
    uint64_t task_id;
    const char *worker;             /* name of the worker running the task */
    volatile const int *cancelled;  /* non-zero once the task was cancelled */
    char *errbuf;                   /* error text, NUL-terminated */
    size_t errcap;
    int failed;                     /* set by shoal_task_error() */
} shoal_task_ctx_t;

typedef int (*shoal_task_fn)(shoal_task_ctx_t *ctx, const msgpack_object *args,
                             msgpack_packer *out);

typedef struct shoal_task_def {
    const char *name;
    shoal_task_fn fn;
} shoal_task_def_t;

/* Declare the exported task table.  Use exactly once per library. */
#define SHOAL_TASKS(...)                                                       \
    __attribute__((visibility("default"))) const unsigned shoal_tasks_abi =   \
        SHOAL_TASK_ABI;                                                        \
    __attribute__((visibility("default"))) const shoal_task_def_t shoal_tasks[] = \
        {__VA_ARGS__, {NULL, NULL}}

/* Record an error for this task.  Always returns -1 so a task can write
 * `return shoal_task_error(ctx, "bad n: %d", n);`. */
static inline __attribute__((format(printf, 2, 3))) int
shoal_task_error(shoal_task_ctx_t *ctx, const char *fmt, ...)
{
    va_list ap;
    if (ctx->errbuf && ctx->errcap > 0) {
        va_start(ap, fmt);
        vsnprintf(ctx->errbuf, ctx->errcap, fmt, ap);
        va_end(ap);
    }
    ctx->failed = 1;
    return -1;
}

/* Non-zero once the scheduler cancelled this task. */
static inline int shoal_task_cancelled(const shoal_task_ctx_t *ctx)
{
    return ctx->cancelled ? *ctx->cancelled : 0;
}

static inline uint64_t shoal_task_id(const shoal_task_ctx_t *ctx)
{
    return ctx->task_id;
}

/* Number of arguments (args is always an array). */
static inline size_t shoal_nargs(const msgpack_object *args)
{
    return args->type == MSGPACK_OBJECT_ARRAY ? args->via.array.size : 0;
}

/* Argument i, or NULL (with an error recorded in ctx) if there is none. */
static inline const msgpack_object *
shoal_arg(shoal_task_ctx_t *ctx, const msgpack_object *args, size_t i)
{
    if (args->type != MSGPACK_OBJECT_ARRAY || i >= args->via.array.size) {
        shoal_task_error(ctx, "missing argument %zu (got %zu)", i,
                         shoal_nargs(args));
        return NULL;
    }
    return &args->via.array.ptr[i];
}

/* Typed accessors: 0 on success, -1 with an error recorded in ctx when the
 * argument is missing or of the wrong type. */
static inline int shoal_arg_i64(shoal_task_ctx_t *ctx, const msgpack_object *args,
                                size_t i, int64_t *out)
{
    const msgpack_object *o = shoal_arg(ctx, args, i);
    *out = 0;
    if (!o)
        return -1;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) {
        *out = (int64_t)o->via.u64;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = o->via.i64;
        return 0;
    }
    return shoal_task_error(ctx, "argument %zu: expected an integer", i);
}

static inline int shoal_arg_u64(shoal_task_ctx_t *ctx, const msgpack_object *args,
                                size_t i, uint64_t *out)
{
    const msgpack_object *o = shoal_arg(ctx, args, i);
    *out = 0;
    if (!o)
        return -1;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        *out = o->via.u64;
        return 0;
    }
    return shoal_task_error(ctx, "argument %zu: expected a non-negative integer", i);
}

static inline int shoal_arg_f64(shoal_task_ctx_t *ctx, const msgpack_object *args,
                                size_t i, double *out)
{
    const msgpack_object *o = shoal_arg(ctx, args, i);
    *out = 0;
    if (!o)
        return -1;
    switch (o->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        *out = o->via.f64;
        return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *out = (double)o->via.u64;
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *out = (double)o->via.i64;
        return 0;
    default:
        return shoal_task_error(ctx, "argument %zu: expected a number", i);
    }
}

/* String argument: *ptr is NOT NUL-terminated; it points into args. */
static inline int shoal_arg_str(shoal_task_ctx_t *ctx, const msgpack_object *args,
                                size_t i, const char **ptr, size_t *len)
{
    const msgpack_object *o = shoal_arg(ctx, args, i);
    *ptr = NULL;
    *len = 0;
    if (!o)
        return -1;
    if (o->type != MSGPACK_OBJECT_STR)
        return shoal_task_error(ctx, "argument %zu: expected a string", i);
    *ptr = o->via.str.ptr;
    *len = o->via.str.size;
    return 0;
}

/* Binary argument (bin or str accepted): *ptr points into args. */
static inline int shoal_arg_bin(shoal_task_ctx_t *ctx, const msgpack_object *args,
                                size_t i, const void **ptr, size_t *len)
{
    const msgpack_object *o = shoal_arg(ctx, args, i);
    *ptr = NULL;
    *len = 0;
    if (!o)
        return -1;
    if (o->type == MSGPACK_OBJECT_BIN) {
        *ptr = o->via.bin.ptr;
        *len = o->via.bin.size;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_STR) {
        *ptr = o->via.str.ptr;
        *len = o->via.str.size;
        return 0;
    }
    return shoal_task_error(ctx, "argument %zu: expected binary data", i);
}

/* Pack a NUL-terminated string. */
static inline int shoal_pack_cstr(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    if (msgpack_pack_str(pk, n) < 0)
        return -1;
    return msgpack_pack_str_body(pk, s, n);
}

#ifdef __cplusplus
}
#endif
#endif /* SHOAL_TASK_H */
