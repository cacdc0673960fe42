/*
 * graph/tasks.c - task library for the task-graph example.
 *
 *   inc(x)    -> x + 1
 *   mul(x, y) -> x * y
 *
 * Integers in, integers out; overflow is an error, not a silent wrap.
 */
#include <stdint.h>

#include <shoal_task.h>

static int inc(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    int64_t x = 0;

    if (shoal_arg_i64(ctx, args, 0, &x) < 0)
        return -1;
    if (x == INT64_MAX)
        return shoal_task_error(ctx, "inc: %lld + 1 overflows", (long long)x);
    msgpack_pack_int64(out, x + 1);
    return 0;
}

static int mul(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    int64_t x = 0, y = 0, z;

    if (shoal_arg_i64(ctx, args, 0, &x) < 0 || shoal_arg_i64(ctx, args, 1, &y) < 0)
        return -1;
    if (__builtin_mul_overflow(x, y, &z))
        return shoal_task_error(ctx, "mul: %lld * %lld overflows", (long long)x,
                                (long long)y);
    msgpack_pack_int64(out, z);
    return 0;
}

SHOAL_TASKS({"inc", inc}, {"mul", mul});
