/*
 * pi/main.c - estimate pi by Monte Carlo on a shoal cluster, then time the
 * same work serially in this process and report the speedup.
 *
 *   build/examples/pi [ADDRESS] [--darts N] [--tasks K] [--seed S] [--library PATH]
 *
 * The darts are split over K tasks; task i throws its share with the seed
 * S + i.  The result depends only on N, K and S, so every run prints the
 * same estimate, and the serial run (the same function, pi_darts, called
 * through dlopen on the same library) must agree with it exactly.
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

#define MAX_DARTS 10000000000000ull   /* 1e13: hours of work */
#define MAX_TASKS 1000000ull

static const char s_usage[] =
    "usage: pi [ADDRESS] [--darts N] [--tasks K] [--seed S] [--library PATH]\n"
    "  ADDRESS         scheduler address (default: $SHOAL_SCHEDULER, then\n"
    "                  $SHOAL_SCHEDULER_FILE, else a local cluster)\n"
    "  --darts N       darts to throw in all (default 1e8)\n"
    "  --tasks K       tasks to split them over (default 4 per worker thread)\n"
    "  --seed S        base seed; task i uses S + i (default 20240101)\n"
    "  --library PATH  the task library (default: libpi.so next to this program)\n";

typedef uint64_t (*pi_darts_fn)(uint64_t seed, uint64_t n);

int main(int argc, char **argv)
{
    const char *address = NULL, *library = NULL;
    char libpath[PATH_MAX];
    uint64_t darts = 100000000ull, ntasks = 0, seed = 20240101ull;
    uint64_t hits = 0, serial_hits = 0, i;
    shoal_client_t *c = NULL;
    shoal_future_t **fs = NULL;
    const void **args = NULL;
    size_t *lens = NULL, *offs = NULL;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    shoal_status_info_t st;
    shoal_error_t err = {{0}};
    void *dl = NULL;
    pi_darts_fn fn;
    double t0, t_par, t_ser, estimate, speedup;
    int a, rc = 1, nthreads, nworkers;

    msgpack_sbuffer_init(&sb);
    memset(&st, 0, sizeof st);
    for (a = 1; a < argc; a++) {
        const char *o = argv[a], *v = a + 1 < argc ? argv[a + 1] : NULL;
        if (strcmp(o, "--help") == 0 || strcmp(o, "-h") == 0) {
            fputs(s_usage, stdout);
            return 0;
        } else if (strcmp(o, "--library") == 0 && v) {
            library = v;
            a++;
        } else if (strcmp(o, "--darts") == 0) {
            if (s_parse_count(v, 1, MAX_DARTS, &darts) < 0) {
                fprintf(stderr, "pi: --darts: expected a number from 1 to 1e13\n");
                return 2;
            }
            a++;
        } else if (strcmp(o, "--tasks") == 0) {
            if (s_parse_count(v, 1, MAX_TASKS, &ntasks) < 0) {
                fprintf(stderr, "pi: --tasks: expected a number from 1 to 1e6\n");
                return 2;
            }
            a++;
        } else if (strcmp(o, "--seed") == 0) {
            if (s_parse_count(v, 0, UINT32_MAX, &seed) < 0) {
                fprintf(stderr, "pi: --seed: expected a number from 0 to 2^32-1\n");
                return 2;
            }
            a++;
        } else if (o[0] != '-' && !address) {
            address = o;
        } else {
            fprintf(stderr, "pi: unexpected argument '%s'\n%s", o, s_usage);
            return 2;
        }
    }
    if (!library) {
        if (s_library_next_to_exe("libpi.so", libpath, sizeof libpath) < 0) {
            fprintf(stderr, "pi: cannot locate libpi.so; use --library PATH\n");
            return 1;
        }
        library = libpath;
    }
    /* Load it here first: the serial run needs it, and a broken path is
     * better reported before a cluster is started. */
    dl = dlopen(library, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        fprintf(stderr, "pi: cannot load %s: %s (run `make` first?)\n", library, dlerror());
        return 1;
    }
    fn = (pi_darts_fn)(uintptr_t)dlsym(dl, "pi_darts");
    if (!fn) {
        fprintf(stderr, "pi: %s has no pi_darts function\n", library);
        goto out;
    }

    c = shoal_connect(address, &err);
    if (!c) {
        fprintf(stderr, "pi: cannot connect: %s\n", err.msg);
        goto out;
    }
    if (shoal_upload_library(c, library, &err) < 0) {
        fprintf(stderr, "pi: cannot upload %s: %s\n", library, err.msg);
        goto out;
    }
    /* The speedup is only meaningful against the threads that did the work. */
    if (shoal_wait_for_workers(c, 1, 60, &err) < 0 ||
        shoal_status(c, &st, 30, &err) < 0) {
        fprintf(stderr, "pi: no workers: %s\n", err.msg);
        goto out;
    }
    nthreads = st.nthreads > 0 ? st.nthreads : 1;
    nworkers = st.nworkers;
    if (ntasks == 0)
        ntasks = st.nthreads > 0 ? 4 * (uint64_t)st.nthreads : 64;
    if (ntasks > darts)
        ntasks = darts;

    /* Pack every task's [seed, n] into one buffer, then point into it. */
    fs = calloc(ntasks, sizeof *fs);
    args = calloc(ntasks, sizeof *args);
    lens = calloc(ntasks, sizeof *lens);
    offs = calloc(ntasks, sizeof *offs);
    if (!fs || !args || !lens || !offs) {
        fprintf(stderr, "pi: out of memory\n");
        goto out;
    }
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    for (i = 0; i < ntasks; i++) {
        uint64_t n = darts / ntasks + (i < darts % ntasks);
        offs[i] = sb.size;
        msgpack_pack_array(&pk, 2);
        msgpack_pack_uint64(&pk, seed + i);
        msgpack_pack_uint64(&pk, n);
        lens[i] = sb.size - offs[i];
    }
    for (i = 0; i < ntasks; i++)
        args[i] = sb.data + offs[i];

    t0 = s_now();
    if (shoal_map(c, "darts", args, lens, ntasks, NULL, fs, &err) < 0) {
        fprintf(stderr, "pi: submit: %s\n", err.msg);
        goto out;
    }
    if (shoal_gather(fs, ntasks, -1, &err) < 0) {
        fprintf(stderr, "pi: %s\n", err.msg);
        goto out;
    }
    for (i = 0; i < ntasks; i++) {
        int64_t h;
        if (shoal_result_i64(fs[i], 0, &h, &err) < 0) {
            fprintf(stderr, "pi: task %" PRIu64 ": %s\n", i, err.msg);
            goto out;
        }
        hits += (uint64_t)h;
    }
    t_par = s_now() - t0;
    estimate = 4.0 * (double)hits / (double)darts;
    printf("pi is about %.10f (error %.2e)\n", estimate, fabs(estimate - M_PI));
    printf("%" PRIu64 " darts in %" PRIu64 " tasks on %d worker%s (%d thread%s): "
           "%.3f s\n", darts, ntasks, nworkers, nworkers == 1 ? "" : "s", nthreads,
           nthreads == 1 ? "" : "s", t_par);

    /* The same tasks one after another, here. */
    t0 = s_now();
    for (i = 0; i < ntasks; i++)
        serial_hits += fn(seed + i, darts / ntasks + (i < darts % ntasks));
    t_ser = s_now() - t0;
    speedup = t_par > 0 ? t_ser / t_par : 0;
    printf("serially in this process: %.3f s (%s)\n", t_ser,
           serial_hits == hits ? "same hits" : "DIFFERENT hits");
    printf("speedup %.2fx, parallel efficiency %.0f%% of %d thread%s\n", speedup,
           100.0 * speedup / nthreads, nthreads, nthreads == 1 ? "" : "s");
    if (serial_hits != hits) {
        fprintf(stderr, "pi: the cluster counted %" PRIu64 " hits, the serial run %" PRIu64
                "\n", hits, serial_hits);
        goto out;
    }
    rc = 0;
out:
    if (fs)
        for (i = 0; i < ntasks; i++)
            shoal_release(fs[i]);
    shoal_status_free(&st);
    shoal_disconnect(c);
    free(fs);
    free(args);
    free(lens);
    free(offs);
    msgpack_sbuffer_destroy(&sb);
    if (dl)
        dlclose(dl);
    return rc;
}
