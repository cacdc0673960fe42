/*
 * primes/tasks.c - task library for the primes example.
 *
 *   sum_primes(n) -> the sum of all primes below n (an unsigned integer)
 *
 * A segmented sieve of Eratosthenes over the odd numbers: memory stays at a
 * few tens of KiB whatever n is, and the task checks for cancellation once
 * per segment.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <shoal_task.h>

/* The sum of the primes below 10^10 is about 2.2e18, which still fits in a
 * uint64 (and takes tens of seconds); larger n is refused rather than risk
 * overflow and hours of work from a typo. */
#define PRIMES_MAX_N 10000000000ull
#define SEGMENT (32u * 1024u)   /* odd numbers per segment (one byte each) */

static uint64_t s_isqrt(uint64_t n)
{
    uint64_t r = 0, bit = 1ull << 62;
    while (bit > n)
        bit >>= 2;
    while (bit) {
        if (n >= r + bit) {
            n -= r + bit;
            r = (r >> 1) + bit;
        } else {
            r >>= 1;
        }
        bit >>= 2;
    }
    return r;
}

/* The odd primes up to `limit` (a simple sieve: limit is at most 10^5). */
static uint32_t *s_base_primes(uint32_t limit, size_t *count)
{
    unsigned char *composite = calloc((size_t)limit + 1, 1);
    uint32_t *primes;
    size_t n = 0;
    uint32_t i, k;

    if (!composite)
        return NULL;
    primes = malloc(((size_t)limit / 2 + 1) * sizeof *primes);
    if (!primes) {
        free(composite);
        return NULL;
    }
    for (i = 3; i <= limit; i += 2) {
        if (composite[i])
            continue;
        primes[n++] = i;
        if ((uint64_t)i * i > limit)
            continue;
        for (k = i * i; k <= limit; k += 2 * i)
            composite[k] = 1;
    }
    free(composite);
    *count = n;
    return primes;
}

static int sum_primes(shoal_task_ctx_t *ctx, const msgpack_object *args,
                      msgpack_packer *out)
{
    uint64_t n = 0, sum = 0, kmax, k0;
    uint32_t *primes;
    size_t nprimes, i;
    unsigned char seg[SEGMENT];

    if (shoal_arg_u64(ctx, args, 0, &n) < 0)
        return -1;
    if (n > PRIMES_MAX_N)
        return shoal_task_error(ctx, "n = %llu is too large (at most %llu)",
                                (unsigned long long)n, PRIMES_MAX_N);
    if (n <= 2) {
        msgpack_pack_uint64(out, 0);
        return 0;
    }
    sum = 2;
    /* Odd m = 2k + 1 below n: k runs from 1 (m = 3) to kmax. */
    kmax = (n - 2) / 2;
    primes = s_base_primes((uint32_t)s_isqrt(n - 1), &nprimes);
    if (!primes)
        return shoal_task_error(ctx, "out of memory");
    for (k0 = 1; k0 <= kmax; k0 += SEGMENT) {
        uint64_t len = kmax - k0 + 1 < SEGMENT ? kmax - k0 + 1 : SEGMENT;
        uint64_t lo = 2 * k0 + 1;   /* the first odd number of the segment */
        uint64_t j;

        if (shoal_task_cancelled(ctx)) {
            free(primes);
            return shoal_task_error(ctx, "cancelled");
        }
        memset(seg, 1, len);
        for (i = 0; i < nprimes; i++) {
            uint64_t p = primes[i], m;
            if (p * p > 2 * (k0 + len - 1) + 1)
                break;
            /* The first odd multiple of p in the segment, not below p^2. */
            m = p * p >= lo ? p * p : (lo + p - 1) / p * p;
            if (m % 2 == 0)
                m += p;
            for (j = (m - 1) / 2 - k0; j < len; j += p)
                seg[j] = 0;
        }
        for (j = 0; j < len; j++)
            if (seg[j])
                sum += 2 * (k0 + j) + 1;
    }
    free(primes);
    msgpack_pack_uint64(out, sum);
    return 0;
}

SHOAL_TASKS({"sum_primes", sum_primes});
