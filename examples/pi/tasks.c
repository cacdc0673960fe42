/*
 * pi/tasks.c - task library for the Monte Carlo pi example.
 *
 *   darts(seed, n) -> how many of n random darts thrown at the unit square
 *                     land inside the quarter circle (an unsigned integer)
 *
 * The generator is xoshiro256** seeded through splitmix64, so the count
 * depends only on (seed, n): the same split of the work gives the same
 * estimate on any cluster, and the client can check the parallel answer
 * against a serial run of the very same code (pi_darts, exported below).
 */
#include <stdint.h>

#include <shoal_task.h>

#define CANCEL_CHECK_EVERY (1u << 22)   /* darts between cancellation checks */

static uint64_t s_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t s_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t s_xoshiro(uint64_t s[4])
{
    uint64_t r = s_rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s_rotl(s[3], 45);
    return r;
}

/* Throw n darts; *hits gets the count.  -1 if *cancelled became set. */
static int s_throw(uint64_t seed, uint64_t n, const shoal_task_ctx_t *ctx, uint64_t *hits)
{
    uint64_t s[4], sm = seed, h = 0, done = 0;
    int i;

    for (i = 0; i < 4; i++)
        s[i] = s_splitmix64(&sm);
    while (done < n) {
        uint64_t chunk = n - done < CANCEL_CHECK_EVERY ? n - done : CANCEL_CHECK_EVERY;
        uint64_t k;
        if (ctx && shoal_task_cancelled(ctx))
            return -1;
        for (k = 0; k < chunk; k++) {
            /* One 64-bit draw is a point (x, y) in [0, 2^32)^2; it lies
             * inside the circle of radius 2^32 iff x^2 + y^2 < 2^64, that
             * is iff the 64-bit sum does not overflow. */
            uint64_t r = s_xoshiro(s), x = r >> 32, y = r & 0xffffffffu;
            uint64_t xx = x * x, yy = y * y;
            h += xx <= UINT64_MAX - yy;
        }
        done += chunk;
    }
    *hits = h;
    return 0;
}

/* The same computation as a plain function, for the client's serial run. */
__attribute__((visibility("default"))) uint64_t pi_darts(uint64_t seed, uint64_t n)
{
    uint64_t hits = 0;
    s_throw(seed, n, NULL, &hits);
    return hits;
}

static int darts(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    uint64_t seed = 0, n = 0, hits = 0;

    if (shoal_arg_u64(ctx, args, 0, &seed) < 0 || shoal_arg_u64(ctx, args, 1, &n) < 0)
        return -1;
    if (s_throw(seed, n, ctx, &hits) < 0)
        return shoal_task_error(ctx, "cancelled");
    msgpack_pack_uint64(out, hits);
    return 0;
}

SHOAL_TASKS({"darts", darts});
