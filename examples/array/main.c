/*
 * array/main.c - Dask's classic blocked-array demo on a shoal cluster:
 *
 *     x = da.random.normal(10, 0.1, size=(20000, 20000), chunks=(1000, 1000))
 *     y = x.mean(axis=0)[::100]
 *
 * then the same computation serially in this process, and the speedup.
 *
 *   build/examples/array [ADDRESS] [--n N] [--chunk C] [--seed S] [--library PATH]
 *
 * The whole computation is one task graph, submitted in one call:
 *
 *   x-I-J     = array.chunk(seed, I, J, C, C, 10, 0.1)   the chunks (8 MB each
 *               at full size), made on the workers and kept there
 *   cs-I-J    = array.colsum(x-I-J, C)                    one chunk's column sums
 *   sum-J-A-B = array.vadd(left, right)                   a binary tree over
 *               rows A..B-1 of column block J
 *   means     = array.means(N, 100, sum-0-0-K, ..., sum-(K-1)-0-K)
 *
 * Only `means` is wanted: the graph submission releases everything else, so
 * the scheduler frees each chunk as soon as its column sums are taken.  The
 * chunks are far larger than what rides inline with a completion message
 * (64 KiB), so they stay on the worker that made them: a colsum runs there
 * or fetches its chunk from that worker, never through the scheduler or this
 * client.  The column sums (8 KB) are small and do ride inline.
 *
 * Priorities keep memory bounded: the deeper a task is in the graph, the
 * sooner it runs once ready, so each chunk is reduced right after it is
 * made instead of after every chunk is made (3.2 GB at full size).
 *
 * The values depend only on N, C and the seed.  The serial run calls the very
 * functions the tasks use (array_* in the task library, through dlopen) in
 * the same order, so both answers must agree to the last bit.
 *
 * With `inline://` this process runs the graph itself, as it is submitted,
 * and keeps every chunk until the end (3.2 GB at full size): use a smaller
 * --n there.
 */
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <shoal.h>

#include "../example.h"

#define MEAN 10.0
#define SD 0.1
#define STEP 100                 /* every STEP-th column mean */
#define MAX_N 1000000ull
#define MAX_CHUNK 10000ull       /* 800 MB per chunk */
#define MAX_BLOCKS 256ull        /* chunks per side: 65536 chunks, ~200k tasks */

/* Priorities: later stages first (see the top of the file). */
enum { PRIO_CHUNK = 0, PRIO_COLSUM = 1, PRIO_VADD = 2, PRIO_MEANS = 3 };

static const char s_usage[] =
    "usage: array [ADDRESS] [--n N] [--chunk C] [--seed S] [--library PATH]\n"
    "  ADDRESS         scheduler address (default: $SHOAL_SCHEDULER, then\n"
    "                  $SHOAL_SCHEDULER_FILE, else a local cluster)\n"
    "  --n N           the array is N x N (default 20000; at most 1e6)\n"
    "  --chunk C       in C x C chunks (default 1000; at most 10000); N must be\n"
    "                  a multiple of C, with at most 256 chunks per side\n"
    "  --seed S        base seed (default 42; 0 to 2^64-1)\n"
    "  --library PATH  the task library (default: libarray.so next to this program)\n";

typedef void (*chunk_fill_fn)(uint64_t, uint64_t, uint64_t, size_t, size_t, double, double,
                              void *);
typedef void (*colsum_fn)(const void *, size_t, size_t, void *);
typedef void (*vadd_fn)(const void *, const void *, size_t, void *);
typedef size_t (*pick_means_fn)(const void *const *, const size_t *, size_t, double, size_t,
                                double *);

typedef struct lib {
    chunk_fill_fn chunk_fill;
    colsum_fn colsum;
    vadd_fn vadd;
    pick_means_fn pick_means;
} lib_t;

typedef struct params {
    uint64_t n, chunk, blocks, seed;
} params_t;

/* Where the tree over rows [lo, hi) splits: the same for the graph and the
 * serial run, so both add in the same order. */
static uint64_t s_mid(uint64_t lo, uint64_t hi)
{
    return lo + (hi - lo + 1) / 2;
}

/* ---- the graph ------------------------------------------------------------------ */

static void s_key(char *buf, size_t cap, const char *kind, uint64_t a, uint64_t b)
{
    snprintf(buf, cap, "%s-%" PRIu64 "-%" PRIu64, kind, a, b);
}

/* Add one task whose arguments are in sb (reset afterwards). */
static int s_add(shoal_graph_t *g, const char *key, const char *func, msgpack_sbuffer *sb,
                 int priority, shoal_error_t *err)
{
    shoal_submit_opts_t o = {.priority = priority};
    int rc = shoal_graph_add_task(g, key, func, sb->data, sb->size, &o, err);
    msgpack_sbuffer_clear(sb);
    return rc;
}

/* The tree over rows [lo, hi) of column block j; its key goes to `key`. */
static int s_add_tree(shoal_graph_t *g, msgpack_sbuffer *sb, msgpack_packer *pk, uint64_t j,
                      uint64_t lo, uint64_t hi, char *key, size_t cap, shoal_error_t *err)
{
    char left[64], right[64];
    uint64_t mid;

    if (hi - lo == 1) {
        s_key(key, cap, "cs", lo, j);
        return 0;
    }
    mid = s_mid(lo, hi);
    if (s_add_tree(g, sb, pk, j, lo, mid, left, sizeof left, err) < 0 ||
        s_add_tree(g, sb, pk, j, mid, hi, right, sizeof right, err) < 0)
        return -1;
    snprintf(key, cap, "sum-%" PRIu64 "-%" PRIu64 "-%" PRIu64, j, lo, hi);
    msgpack_pack_array(pk, 2);
    if (shoal_graph_pack_key(pk, left) < 0 || shoal_graph_pack_key(pk, right) < 0) {
        snprintf(err->msg, sizeof err->msg, "cannot pack the arguments of %s", key);
        return -1;
    }
    return s_add(g, key, "array.vadd", sb, PRIO_VADD, err);
}

static shoal_graph_t *s_build(const params_t *p, shoal_error_t *err)
{
    shoal_graph_t *g = shoal_graph_create();
    msgpack_sbuffer sb;
    msgpack_packer pk;
    char key[64], ref[64];
    uint64_t i, j;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (!g) {
        snprintf(err->msg, sizeof err->msg, "out of memory");
        goto fail;
    }
    for (i = 0; i < p->blocks; i++) {
        for (j = 0; j < p->blocks; j++) {
            s_key(key, sizeof key, "x", i, j);
            msgpack_pack_array(&pk, 7);
            msgpack_pack_uint64(&pk, p->seed);
            msgpack_pack_uint64(&pk, i);
            msgpack_pack_uint64(&pk, j);
            msgpack_pack_uint64(&pk, p->chunk);
            msgpack_pack_uint64(&pk, p->chunk);
            msgpack_pack_double(&pk, MEAN);
            msgpack_pack_double(&pk, SD);
            if (s_add(g, key, "array.chunk", &sb, PRIO_CHUNK, err) < 0)
                goto fail;

            msgpack_pack_array(&pk, 2);
            if (shoal_graph_pack_key(&pk, key) < 0)
                goto fail_pack;
            msgpack_pack_uint64(&pk, p->chunk);
            s_key(key, sizeof key, "cs", i, j);
            if (s_add(g, key, "array.colsum", &sb, PRIO_COLSUM, err) < 0)
                goto fail;
        }
    }
    msgpack_pack_array(&pk, 2 + p->blocks);
    msgpack_pack_uint64(&pk, p->n);
    msgpack_pack_uint64(&pk, STEP);
    for (j = 0; j < p->blocks; j++) {
        /* The tree's tasks go into the graph while the means' arguments are
         * half packed: keep them in a buffer of their own. */
        msgpack_sbuffer tsb;
        msgpack_packer tpk;
        int rc;
        msgpack_sbuffer_init(&tsb);
        msgpack_packer_init(&tpk, &tsb, msgpack_sbuffer_write);
        rc = s_add_tree(g, &tsb, &tpk, j, 0, p->blocks, ref, sizeof ref, err);
        msgpack_sbuffer_destroy(&tsb);
        if (rc < 0)
            goto fail;
        if (shoal_graph_pack_key(&pk, ref) < 0)
            goto fail_pack;
    }
    if (s_add(g, "means", "array.means", &sb, PRIO_MEANS, err) < 0)
        goto fail;
    msgpack_sbuffer_destroy(&sb);
    return g;
fail_pack:
    snprintf(err->msg, sizeof err->msg, "cannot pack task arguments");
fail:
    msgpack_sbuffer_destroy(&sb);
    shoal_graph_destroy(g);
    return NULL;
}

/* ---- the serial run -------------------------------------------------------------- */

/* Reduce vecs[lo..hi) into vecs[lo] in the graph's order. */
static unsigned char *s_tree(const lib_t *L, unsigned char **vecs, uint64_t lo, uint64_t hi,
                             size_t len)
{
    uint64_t mid;
    unsigned char *a, *b;

    if (hi - lo == 1)
        return vecs[lo];
    mid = s_mid(lo, hi);
    a = s_tree(L, vecs, lo, mid, len);
    b = s_tree(L, vecs, mid, hi, len);
    L->vadd(a, b, len, a);
    return a;
}

/* The whole computation here; out gets the picked means.  -1 if out of
 * memory. */
static int s_serial(const lib_t *L, const params_t *p, double *out, size_t *nout)
{
    size_t c = (size_t)p->chunk, b = (size_t)p->blocks, i, j;
    unsigned char *chunk = malloc(c * c * 8);
    unsigned char *vecs = malloc(b * c * 8);       /* one block column's colsums */
    unsigned char *sums = malloc(b * c * 8);       /* every block column's total */
    unsigned char **rows = malloc(b * sizeof *rows);
    const void **sp = malloc(b * sizeof *sp);
    size_t *ncols = malloc(b * sizeof *ncols);
    int rc = -1;

    if (!chunk || !vecs || !sums || !rows || !sp || !ncols)
        goto out;
    for (j = 0; j < b; j++) {
        for (i = 0; i < b; i++) {
            rows[i] = vecs + i * c * 8;
            L->chunk_fill(p->seed, i, j, c, c, MEAN, SD, chunk);
            L->colsum(chunk, c, c, rows[i]);
        }
        memcpy(sums + j * c * 8, s_tree(L, rows, 0, b, c), c * 8);
        sp[j] = sums + j * c * 8;
        ncols[j] = c;
    }
    *nout = L->pick_means(sp, ncols, b, (double)p->n, STEP, out);
    rc = 0;
out:
    free(chunk);
    free(vecs);
    free(sums);
    free(rows);
    free(sp);
    free(ncols);
    return rc;
}

static void s_stats(const double *v, size_t n, double *mean, double *min, double *max)
{
    double s = 0;
    size_t k;

    *min = *max = v[0];
    for (k = 0; k < n; k++) {
        s += v[k];
        if (v[k] < *min)
            *min = v[k];
        if (v[k] > *max)
            *max = v[k];
    }
    *mean = s / (double)n;
}

/* The means task's result: an array of exactly `want` floats. */
static int s_decode(const msgpack_object *o, size_t want, double *out)
{
    size_t k;

    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != want)
        return -1;
    for (k = 0; k < want; k++) {
        const msgpack_object *e = &o->via.array.ptr[k];
        if (e->type != MSGPACK_OBJECT_FLOAT64 && e->type != MSGPACK_OBJECT_FLOAT32)
            return -1;
        out[k] = e->via.f64;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *address = NULL, *library = NULL;
    char libpath[PATH_MAX];
    params_t p = {.n = 20000, .chunk = 1000, .seed = 42};
    shoal_client_t *c = NULL;
    shoal_graph_t *g = NULL;
    shoal_future_t *f = NULL;
    shoal_status_info_t st;
    shoal_error_t err = {{0}};
    msgpack_object res;
    const char *want = "means";
    void *dl = NULL;
    lib_t L;
    double *par = NULL, *ser = NULL;
    double t0, t_graph, t_par, t_ser, mean, min, max, smean, smin, smax, maxdiff = 0;
    size_t npick, nser = 0, k, ntasks;
    int a, rc = 1, nthreads, nworkers;

    memset(&st, 0, sizeof st);
    for (a = 1; a < argc; a++) {
        const char *o = argv[a], *v = a + 1 < argc ? argv[a + 1] : NULL;
        if (strcmp(o, "--help") == 0 || strcmp(o, "-h") == 0) {
            fputs(s_usage, stdout);
            return 0;
        } else if (strcmp(o, "--library") == 0 && v) {
            library = v;
            a++;
        } else if (strcmp(o, "--n") == 0) {
            if (s_parse_count(v, 1, MAX_N, &p.n) < 0) {
                fprintf(stderr, "array: --n: expected a number from 1 to 1e6\n");
                return 2;
            }
            a++;
        } else if (strcmp(o, "--chunk") == 0) {
            if (s_parse_count(v, 1, MAX_CHUNK, &p.chunk) < 0) {
                fprintf(stderr, "array: --chunk: expected a number from 1 to 10000\n");
                return 2;
            }
            a++;
        } else if (strcmp(o, "--seed") == 0) {
            if (s_parse_count(v, 0, UINT64_MAX, &p.seed) < 0) {
                fprintf(stderr, "array: --seed: expected a number from 0 to 2^64-1\n");
                return 2;
            }
            a++;
        } else if (o[0] != '-' && !address) {
            address = o;
        } else {
            fprintf(stderr, "array: unexpected argument '%s'\n%s", o, s_usage);
            return 2;
        }
    }
    if (p.n % p.chunk != 0) {
        fprintf(stderr, "array: --n %" PRIu64 " is not a multiple of --chunk %" PRIu64 "\n",
                p.n, p.chunk);
        return 2;
    }
    p.blocks = p.n / p.chunk;
    if (p.blocks > MAX_BLOCKS) {
        fprintf(stderr, "array: %" PRIu64 " chunks per side (--n / --chunk) is more than %llu;"
                " use larger chunks\n", p.blocks, MAX_BLOCKS);
        return 2;
    }
    npick = (size_t)((p.n + STEP - 1) / STEP);
    /* chunks, their colsums, blocks - 1 vadds per block column, means */
    ntasks = (size_t)(2 * p.blocks * p.blocks + p.blocks * (p.blocks - 1) + 1);

    if (!library) {
        if (s_library_next_to_exe("libarray.so", libpath, sizeof libpath) < 0) {
            fprintf(stderr, "array: cannot locate libarray.so; use --library PATH\n");
            return 1;
        }
        library = libpath;
    }
    /* Load it here first: the serial run needs it, and a broken path is
     * better reported before a cluster is started. */
    dl = dlopen(library, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        fprintf(stderr, "array: cannot load %s: %s (run `make` first?)\n", library, dlerror());
        return 1;
    }
    L.chunk_fill = (chunk_fill_fn)(uintptr_t)dlsym(dl, "array_chunk_fill");
    L.colsum = (colsum_fn)(uintptr_t)dlsym(dl, "array_colsum");
    L.vadd = (vadd_fn)(uintptr_t)dlsym(dl, "array_vadd");
    L.pick_means = (pick_means_fn)(uintptr_t)dlsym(dl, "array_pick_means");
    if (!L.chunk_fill || !L.colsum || !L.vadd || !L.pick_means) {
        fprintf(stderr, "array: %s lacks the array_* functions; is it libarray.so?\n",
                library);
        goto out;
    }
    par = malloc(npick * sizeof *par);
    ser = malloc(npick * sizeof *ser);
    if (!par || !ser) {
        fprintf(stderr, "array: out of memory\n");
        goto out;
    }

    c = shoal_connect(address, &err);
    if (!c) {
        fprintf(stderr, "array: cannot connect: %s\n", err.msg);
        goto out;
    }
    if (shoal_upload_library(c, library, &err) < 0) {
        fprintf(stderr, "array: cannot upload %s: %s\n", library, err.msg);
        goto out;
    }
    if (shoal_wait_for_workers(c, 1, 60, &err) < 0 || shoal_status(c, &st, 30, &err) < 0) {
        fprintf(stderr, "array: no workers: %s\n", err.msg);
        goto out;
    }
    nthreads = st.nthreads > 0 ? st.nthreads : 1;
    nworkers = st.nworkers;

    printf("x = normal(%g, %g), %" PRIu64 " x %" PRIu64 " in %" PRIu64 " x %" PRIu64
           " chunks (%" PRIu64 " chunks, %.1f GB), seed %" PRIu64 "\n",
           MEAN, SD, p.n, p.n, p.chunk, p.chunk, p.blocks * p.blocks,
           (double)p.n * (double)p.n * 8 / 1e9, p.seed);
    printf("y = x.mean(axis=0)[::%d]: %zu values\n", STEP, npick);
    fflush(stdout);

    t0 = s_now();
    g = s_build(&p, &err);
    if (!g) {
        fprintf(stderr, "array: building the graph: %s\n", err.msg);
        goto out;
    }
    if (shoal_graph_submit(c, g, &want, 1, &f, &err) < 0) {
        fprintf(stderr, "array: submit: %s\n", err.msg);
        goto out;
    }
    t_graph = s_now() - t0;
    if (shoal_result_object(f, -1, &res, &err) < 0) {
        fprintf(stderr, "array: %s\n", err.msg);
        goto out;
    }
    t_par = s_now() - t0;
    if (s_decode(&res, npick, par) < 0) {
        fprintf(stderr, "array: the means task returned something other than %zu floats\n",
                npick);
        goto out;
    }
    s_stats(par, npick, &mean, &min, &max);
    printf("mean %.7f, min %.7f, max %.7f\n", mean, min, max);
    printf("%zu tasks on %d worker%s (%d thread%s): %.3f s (graph built and sent in %.3f s)\n",
           ntasks, nworkers, nworkers == 1 ? "" : "s", nthreads, nthreads == 1 ? "" : "s",
           t_par, t_graph);
    fflush(stdout);

    /* The same computation, here, one chunk at a time. */
    t0 = s_now();
    if (s_serial(&L, &p, ser, &nser) < 0) {
        fprintf(stderr, "array: out of memory for the serial run\n");
        goto out;
    }
    t_ser = s_now() - t0;
    if (nser != npick) {
        fprintf(stderr, "array: the serial run picked %zu values, not %zu\n", nser, npick);
        goto out;
    }
    for (k = 0; k < npick; k++)
        if (fabs(ser[k] - par[k]) > maxdiff)
            maxdiff = fabs(ser[k] - par[k]);
    s_stats(ser, npick, &smean, &smin, &smax);
    if (memcmp(ser, par, npick * sizeof *par) == 0)
        printf("serially in this process: %.3f s (same values, bit for bit)\n", t_ser);
    else
        printf("serially in this process: %.3f s (values differ by up to %.3g: "
               "mean %.7f, min %.7f, max %.7f)\n", t_ser, maxdiff, smean, smin, smax);
    printf("speedup %.2fx, parallel efficiency %.0f%% of %d thread%s\n",
           t_par > 0 ? t_ser / t_par : 0, t_par > 0 ? 100.0 * t_ser / t_par / nthreads : 0,
           nthreads, nthreads == 1 ? "" : "s");
    /* Same functions, same order: any difference beyond rounding is a bug. */
    if (maxdiff > 1e-12 * fabs(mean)) {
        fprintf(stderr, "array: the cluster's and the serial values disagree\n");
        goto out;
    }
    rc = 0;
out:
    shoal_release(f);
    shoal_graph_destroy(g);
    shoal_status_free(&st);
    shoal_disconnect(c);
    free(par);
    free(ser);
    if (dl)
        dlclose(dl);
    return rc;
}
