/*
 * array/tasks.c - task library for the blocked-array example (Dask's
 * `da.random.normal(10, 0.1, size=(20000, 20000), chunks=(1000, 1000))
 * .mean(axis=0)[::100]`, in C).
 *
 *   array.chunk(seed, bi, bj, rows, cols, mean, sd)
 *       -> bin: chunk (bi, bj) of the array, rows x cols normal(mean, sd)
 *          values, row-major
 *   array.colsum(chunk, cols) -> bin: the chunk's cols column sums
 *   array.vadd(a, b)          -> bin: a + b, element by element
 *   array.means(nrows, step, sum_0, sum_1, ...)
 *       -> [float64...]: the column sums sum_0, sum_1, ... (concatenated)
 *          divided by nrows, every step-th one from the first
 *
 * Every vector and chunk travels as a MessagePack bin of IEEE 754 doubles
 * in little-endian order, so that a result means the same on any worker.
 *
 * The values depend only on (seed, bi, bj, rows, cols, mean, sd): each chunk
 * seeds its own xoshiro256** from (seed, bi, bj) through splitmix64 and draws
 * normals with Marsaglia's polar method.  The computations are also
 * exported as plain functions (array_*, below) working on the same byte
 * layout; the client calls them through dlopen for its serial run, so the
 * serial and distributed answers come from the same code in the same order
 * and agree to the last bit.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <shoal_task.h>

/* A chunk is at most 10^8 values (800 MB): a larger one could not travel
 * in one message (1 GiB) and is surely a typo. */
#define ARRAY_MAX_CHUNK_VALUES 100000000ull
/* Values generated, added or converted per piece: a piece lives on the
 * stack, so a task needs no buffer as large as its chunk. */
#define PIECE 4096
/* Pieces of a chunk between cancellation checks (about a million values). */
#define CANCEL_EVERY 256

#define EXPORT __attribute__((visibility("default")))

/* ---- little-endian doubles ------------------------------------------------- */

static inline double s_load(const unsigned char *p)
{
    uint64_t u;
    double d;
    memcpy(&u, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    u = __builtin_bswap64(u);
#endif
    memcpy(&d, &u, 8);
    return d;
}

static inline void s_store(unsigned char *p, double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    u = __builtin_bswap64(u);
#endif
    memcpy(p, &u, 8);
}

/* ---- the generator ------------------------------------------------------------ */

typedef struct gen {
    uint64_t s[4];       /* xoshiro256** state */
    double mean, sd;
    double spare;        /* the polar method makes normals in pairs */
    int has_spare;
} gen_t;

static inline uint64_t s_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t s_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t s_next(uint64_t s[4])
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

/* Seed from (seed, bi, bj): each is folded in through splitmix64's mixer, so
 * neighbouring chunks get unrelated streams. */
static void s_gen_init(gen_t *g, uint64_t seed, uint64_t bi, uint64_t bj, double mean,
                       double sd)
{
    const uint64_t golden = 0x9e3779b97f4a7c15ull;
    uint64_t x = s_mix(s_mix(s_mix(seed + golden) + bi + golden) + bj + golden);
    int k;

    for (k = 0; k < 4; k++)
        g->s[k] = s_mix(x += golden);
    g->mean = mean;
    g->sd = sd;
    g->spare = 0;
    g->has_spare = 0;
}

/* A uniform double in (-1, 1) with 53 random bits. */
static inline double s_unit(uint64_t s[4])
{
    return (double)(int64_t)(s_next(s) >> 10) * 0x1p-53 - 1.0;
}

/* The next n values of the stream, stored little-endian at out. */
static void s_gen_fill(gen_t *g, unsigned char *out, size_t n)
{
    size_t k = 0;

    if (n > 0 && g->has_spare) {
        s_store(out, g->mean + g->sd * g->spare);
        g->has_spare = 0;
        k = 1;
    }
    while (k < n) {
        double u, v, q, f;
        do {
            u = s_unit(g->s);
            v = s_unit(g->s);
            q = u * u + v * v;
        } while (q >= 1.0 || q == 0.0);
        f = sqrt(-2.0 * log(q) / q);
        s_store(out + 8 * k++, g->mean + g->sd * (u * f));
        if (k < n) {
            s_store(out + 8 * k++, g->mean + g->sd * (v * f));
        } else {
            g->spare = v * f;
            g->has_spare = 1;
        }
    }
}

/* ---- the computations, as plain functions for the client's serial run ---- */

/* Chunk (bi, bj): rows * cols values, row-major, little-endian, at out. */
EXPORT void array_chunk_fill(uint64_t seed, uint64_t bi, uint64_t bj, size_t rows,
                             size_t cols, double mean, double sd, void *out)
{
    gen_t g;
    s_gen_init(&g, seed, bi, bj, mean, sd);
    s_gen_fill(&g, out, rows * cols);
}

/* out[c] = chunk[0][c] + chunk[1][c] + ... (left to right), for each column. */
EXPORT void array_colsum(const void *chunk, size_t rows, size_t cols, void *out)
{
    const unsigned char *p = chunk;
    unsigned char *o = out;
    size_t r, c;

    memcpy(o, p, cols * 8);
    for (r = 1; r < rows; r++) {
        const unsigned char *row = p + r * cols * 8;
        for (c = 0; c < cols; c++)
            s_store(o + 8 * c, s_load(o + 8 * c) + s_load(row + 8 * c));
    }
}

/* out[k] = a[k] + b[k] for n values (out may be a or b). */
EXPORT void array_vadd(const void *a, const void *b, size_t n, void *out)
{
    const unsigned char *pa = a, *pb = b;
    unsigned char *o = out;
    size_t k;

    for (k = 0; k < n; k++)
        s_store(o + 8 * k, s_load(pa + 8 * k) + s_load(pb + 8 * k));
}

/*
 * The column sums sums[0] (ncols[0] values), sums[1], ... taken as one
 * vector: out gets every step-th of them from the first, divided by nrows.
 * Returns how many (ceil(total / step)); out must have room for them.
 */
EXPORT size_t array_pick_means(const void *const *sums, const size_t *ncols, size_t nsums,
                               double nrows, size_t step, double *out)
{
    size_t s, base = 0, n = 0;

    for (s = 0; s < nsums; s++) {
        const unsigned char *p = sums[s];
        /* The first multiple of step at or after base, as an index here. */
        size_t k = (step - base % step) % step;
        for (; k < ncols[s]; k += step)
            out[n++] = s_load(p + 8 * k) / nrows;
        base += ncols[s];
    }
    return n;
}

/* ---- the tasks -------------------------------------------------------------------- */

static int s_arg_vector(shoal_task_ctx_t *ctx, const msgpack_object *args, size_t i,
                        const void **p, size_t *n)
{
    size_t len;
    if (shoal_arg_bin(ctx, args, i, p, &len) < 0)
        return -1;
    if (len == 0 || len % 8 != 0)
        return shoal_task_error(ctx, "argument %zu: %zu bytes is not a vector of doubles",
                                i, len);
    *n = len / 8;
    return 0;
}

static int s_arg_count(shoal_task_ctx_t *ctx, const msgpack_object *args, size_t i,
                       const char *what, uint64_t *out)
{
    if (shoal_arg_u64(ctx, args, i, out) < 0)
        return -1;
    if (*out == 0 || *out > ARRAY_MAX_CHUNK_VALUES)
        return shoal_task_error(ctx, "%s = %llu: expected 1 to %llu", what,
                                (unsigned long long)*out, ARRAY_MAX_CHUNK_VALUES);
    return 0;
}

/* array.chunk(seed, bi, bj, rows, cols, mean, sd): generated and packed a
 * piece at a time, straight into the result. */
static int chunk(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    uint64_t seed, bi, bj, rows, cols, n, done = 0, pieces = 0;
    double mean, sd;
    unsigned char piece[PIECE * 8];
    gen_t g;

    if (shoal_arg_u64(ctx, args, 0, &seed) < 0 || shoal_arg_u64(ctx, args, 1, &bi) < 0 ||
        shoal_arg_u64(ctx, args, 2, &bj) < 0 ||
        s_arg_count(ctx, args, 3, "rows", &rows) < 0 ||
        s_arg_count(ctx, args, 4, "cols", &cols) < 0 ||
        shoal_arg_f64(ctx, args, 5, &mean) < 0 || shoal_arg_f64(ctx, args, 6, &sd) < 0)
        return -1;
    if (rows * cols > ARRAY_MAX_CHUNK_VALUES)
        return shoal_task_error(ctx, "a %llu x %llu chunk is more than %llu values",
                                (unsigned long long)rows, (unsigned long long)cols,
                                ARRAY_MAX_CHUNK_VALUES);
    if (!isfinite(mean) || !isfinite(sd) || sd < 0)
        return shoal_task_error(ctx, "normal(%g, %g): need a finite mean and sd >= 0",
                                mean, sd);
    n = rows * cols;
    s_gen_init(&g, seed, bi, bj, mean, sd);
    if (msgpack_pack_bin(out, (size_t)n * 8) < 0)
        return shoal_task_error(ctx, "out of memory");
    while (done < n) {
        size_t k = n - done < PIECE ? (size_t)(n - done) : PIECE;
        if (++pieces % CANCEL_EVERY == 0 && shoal_task_cancelled(ctx))
            return shoal_task_error(ctx, "cancelled");
        s_gen_fill(&g, piece, k);
        if (msgpack_pack_bin_body(out, piece, k * 8) < 0)
            return shoal_task_error(ctx, "out of memory");
        done += k;
    }
    return 0;
}

/* array.colsum(chunk, cols) */
static int colsum(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    const void *p;
    size_t n;
    uint64_t cols;
    unsigned char *sum;
    int rc;

    if (s_arg_vector(ctx, args, 0, &p, &n) < 0 ||
        s_arg_count(ctx, args, 1, "cols", &cols) < 0)
        return -1;
    if (n % cols != 0)
        return shoal_task_error(ctx, "a chunk of %zu values has no %llu columns", n,
                                (unsigned long long)cols);
    sum = malloc((size_t)cols * 8);
    if (!sum)
        return shoal_task_error(ctx, "out of memory");
    array_colsum(p, n / cols, (size_t)cols, sum);
    rc = msgpack_pack_bin(out, (size_t)cols * 8) < 0 ||
                 msgpack_pack_bin_body(out, sum, (size_t)cols * 8) < 0
             ? shoal_task_error(ctx, "out of memory")
             : 0;
    free(sum);
    return rc;
}

/* array.vadd(a, b) */
static int vadd(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    const void *va, *vb;
    const unsigned char *a, *b;
    size_t na, nb, done;
    unsigned char piece[PIECE * 8];

    if (s_arg_vector(ctx, args, 0, &va, &na) < 0 || s_arg_vector(ctx, args, 1, &vb, &nb) < 0)
        return -1;
    a = va;
    b = vb;
    if (na != nb)
        return shoal_task_error(ctx, "vadd: vectors of %zu and %zu values", na, nb);
    if (msgpack_pack_bin(out, na * 8) < 0)
        return shoal_task_error(ctx, "out of memory");
    for (done = 0; done < na;) {
        size_t k = na - done < PIECE ? na - done : PIECE;
        array_vadd(a + 8 * done, b + 8 * done, k, piece);
        if (msgpack_pack_bin_body(out, piece, k * 8) < 0)
            return shoal_task_error(ctx, "out of memory");
        done += k;
    }
    return 0;
}

/* array.means(nrows, step, sum_0, sum_1, ...) */
static int means(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    uint64_t nrows, step;
    size_t nsums = shoal_nargs(args) >= 2 ? shoal_nargs(args) - 2 : 0, s, total = 0, n;
    const void **sums = NULL;
    size_t *ncols = NULL;
    double *picked = NULL;
    int rc = -1;

    if (s_arg_count(ctx, args, 0, "nrows", &nrows) < 0 ||
        s_arg_count(ctx, args, 1, "step", &step) < 0)
        return -1;
    if (nsums == 0)
        return shoal_task_error(ctx, "means: no column sums given");
    sums = malloc(nsums * sizeof *sums);
    ncols = malloc(nsums * sizeof *ncols);
    if (!sums || !ncols) {
        shoal_task_error(ctx, "out of memory");
        goto out;
    }
    for (s = 0; s < nsums; s++) {
        if (s_arg_vector(ctx, args, s + 2, &sums[s], &ncols[s]) < 0)
            goto out;
        total += ncols[s];
    }
    picked = malloc(((total + step - 1) / step) * sizeof *picked);
    if (!picked) {
        shoal_task_error(ctx, "out of memory");
        goto out;
    }
    n = array_pick_means(sums, ncols, nsums, (double)nrows, (size_t)step, picked);
    if (msgpack_pack_array(out, n) < 0) {
        shoal_task_error(ctx, "out of memory");
        goto out;
    }
    for (s = 0; s < n; s++)
        if (msgpack_pack_double(out, picked[s]) < 0) {
            shoal_task_error(ctx, "out of memory");
            goto out;
        }
    rc = 0;
out:
    free(sums);
    free(ncols);
    free(picked);
    return rc;
}

SHOAL_TASKS({"array.chunk", chunk}, {"array.colsum", colsum}, {"array.vadd", vadd},
            {"array.means", means});
