/*
 * basic.c - a task library for the tests (built as build/test/libbasic.so).
 *
 *   inc(x)              x + 1
 *   add(a, b)           a + b             (integers)
 *   mul(a, b)           a * b             (integers)
 *   neg(x)              -x
 *   fail(msg)           fails with msg as the error text
 *   slow_inc(x, secs)   sleeps secs (cancellable, 10 ms slices), then x + 1
 *   echo(x)             x, whatever it is
 *   identity(x)         x (same as echo; a second name for graph tests)
 *   sum_list([ints])    sum of an array of integers
 *   bytes(n)            bin of n bytes, byte i = i & 0xff
 *   checksum(bin)       64-bit FNV-1a of the bytes (bin or str), unsigned
 *   length(bin)         number of bytes (bin or str), without reading them
 *   crash()             abort(): kills the worker running it
 *   window(secs)        sleeps secs (cancellable), then [start_ns, end_ns, pid]:
 *                       CLOCK_MONOTONIC times, comparable across processes of
 *                       one machine (tests of resources check for overlaps)
 *
 * Integer arithmetic that overflows int64 is an error, not undefined
 * behaviour.
 */
#include <shoal_task.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int inc(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    int64_t x = 0, r;
    if (shoal_arg_i64(ctx, args, 0, &x) < 0)
        return -1;
    if (__builtin_add_overflow(x, 1, &r))
        return shoal_task_error(ctx, "inc: overflow");
    return msgpack_pack_int64(out, r);
}

static int add(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    int64_t a = 0, b = 0, r;
    if (shoal_arg_i64(ctx, args, 0, &a) < 0 || shoal_arg_i64(ctx, args, 1, &b) < 0)
        return -1;
    if (__builtin_add_overflow(a, b, &r))
        return shoal_task_error(ctx, "add: overflow");
    return msgpack_pack_int64(out, r);
}

static int mul(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    int64_t a = 0, b = 0, r;
    if (shoal_arg_i64(ctx, args, 0, &a) < 0 || shoal_arg_i64(ctx, args, 1, &b) < 0)
        return -1;
    if (__builtin_mul_overflow(a, b, &r))
        return shoal_task_error(ctx, "mul: overflow");
    return msgpack_pack_int64(out, r);
}

static int neg(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    int64_t x = 0;
    if (shoal_arg_i64(ctx, args, 0, &x) < 0)
        return -1;
    if (x == INT64_MIN)
        return shoal_task_error(ctx, "neg: overflow");
    return msgpack_pack_int64(out, -x);
}

static int fail(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    const char *msg = "";
    size_t len = 0;
    (void)out;
    if (shoal_arg_str(ctx, args, 0, &msg, &len) < 0)
        return -1;
    return shoal_task_error(ctx, "%.*s", len > 4096 ? 4096 : (int)len, msg);
}

static int slow_inc(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    int64_t x = 0;
    double secs = 0;
    struct timespec t0, t;
    if (shoal_arg_i64(ctx, args, 0, &x) < 0 || shoal_arg_f64(ctx, args, 1, &secs) < 0)
        return -1;
    if (!(secs >= 0 && secs <= 3600))
        return shoal_task_error(ctx, "slow_inc: seconds must be in [0, 3600]");
    if (x == INT64_MAX)
        return shoal_task_error(ctx, "slow_inc: overflow");
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (shoal_task_cancelled(ctx))
            return shoal_task_error(ctx, "cancelled");
        clock_gettime(CLOCK_MONOTONIC, &t);
        double done = (double)(t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) * 1e-9;
        if (done >= secs)
            break;
        double left = secs - done;
        struct timespec slice = {0, left < 0.01 ? (long)(left * 1e9) : 10000000L};
        nanosleep(&slice, NULL);
    }
    return msgpack_pack_int64(out, x + 1);
}

static int echo(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    const msgpack_object *o = shoal_arg(ctx, args, 0);
    if (!o)
        return -1;
    if (msgpack_pack_object(out, *o) < 0)
        return shoal_task_error(ctx, "echo: out of memory");
    return 0;
}

static int sum_list(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    const msgpack_object *l = shoal_arg(ctx, args, 0);
    int64_t sum = 0;
    if (!l)
        return -1;
    if (l->type != MSGPACK_OBJECT_ARRAY)
        return shoal_task_error(ctx, "sum_list: argument 0: expected an array");
    for (uint32_t i = 0; i < l->via.array.size; i++) {
        int64_t v = 0;
        if (shoal_arg_i64(ctx, l, i, &v) < 0)
            return shoal_task_error(ctx, "sum_list: element %u is not an integer", i);
        if (__builtin_add_overflow(sum, v, &sum))
            return shoal_task_error(ctx, "sum_list: overflow");
    }
    return msgpack_pack_int64(out, sum);
}

static int bytes(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    uint64_t n = 0;
    unsigned char chunk[65536];
    if (shoal_arg_u64(ctx, args, 0, &n) < 0)
        return -1;
    if (n > (1u << 30))
        return shoal_task_error(ctx, "bytes: at most 1 GiB");
    for (size_t i = 0; i < sizeof chunk; i++)
        chunk[i] = (unsigned char)(i & 0xff);
    if (msgpack_pack_bin(out, (size_t)n) < 0)
        return shoal_task_error(ctx, "bytes: out of memory");
    /* The chunk is a multiple of 256 long, so the pattern continues. */
    for (uint64_t done = 0; done < n;) {
        size_t k = n - done > sizeof chunk ? sizeof chunk : (size_t)(n - done);
        if (msgpack_pack_bin_body(out, chunk, k) < 0)
            return shoal_task_error(ctx, "bytes: out of memory");
        done += k;
    }
    return 0;
}

static int checksum(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    const unsigned char *p;
    const void *v;
    size_t n;
    uint64_t h = 0xcbf29ce484222325ULL;
    if (shoal_arg_bin(ctx, args, 0, &v, &n) < 0)
        return -1;
    p = v;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return msgpack_pack_uint64(out, h);
}

static int length(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    const void *v;
    size_t n;
    if (shoal_arg_bin(ctx, args, 0, &v, &n) < 0)
        return -1;
    return msgpack_pack_uint64(out, n);
}

static int crash(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)ctx;
    (void)args;
    (void)out;
    abort();
}

static int window(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    double secs = 0;
    struct timespec t0, t;
    if (shoal_arg_f64(ctx, args, 0, &secs) < 0)
        return -1;
    if (!(secs >= 0 && secs <= 3600))
        return shoal_task_error(ctx, "window: seconds must be in [0, 3600]");
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (shoal_task_cancelled(ctx))
            return shoal_task_error(ctx, "cancelled");
        clock_gettime(CLOCK_MONOTONIC, &t);
        double done = (double)(t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) * 1e-9;
        if (done >= secs)
            break;
        double left = secs - done;
        struct timespec slice = {0, left < 0.01 ? (long)(left * 1e9) : 10000000L};
        nanosleep(&slice, NULL);
    }
    msgpack_pack_array(out, 3);
    msgpack_pack_int64(out, (int64_t)t0.tv_sec * 1000000000 + t0.tv_nsec);
    msgpack_pack_int64(out, (int64_t)t.tv_sec * 1000000000 + t.tv_nsec);
    return msgpack_pack_int64(out, (int64_t)getpid());
}

SHOAL_TASKS({"inc", inc}, {"add", add}, {"mul", mul}, {"neg", neg}, {"fail", fail},
            {"slow_inc", slow_inc}, {"echo", echo}, {"identity", echo},
            {"sum_list", sum_list}, {"bytes", bytes}, {"checksum", checksum},
            {"length", length}, {"crash", crash}, {"window", window});
