/*
 * shoal_bench.c - the shoal side of the benchmark (issue 3).  One client
 * program, one workload per run, one JSON object per result on stdout:
 *
 *   shoal_bench ADDRESS WORKLOAD [options]
 *
 *   throughput  map shoal.noop over --n inputs and gather (tasks/s)
 *   latency     --n sequential submit + result of shoal.noop (median, p99 us)
 *   tree        --leaves L summed pairwise with shoal.sum, futures as
 *               arguments: L-1 tasks with dependencies (tasks/s)
 *   pending     one long shoal.sleep, then --n tasks waiting on it: scheduler
 *               RSS growth per pending task (needs --sched-pid)
 *   million     --n (default 1,000,000) no-op tasks: submission time, total
 *               time, peak scheduler RSS (VmHWM; needs --sched-pid)
 *   pi          --darts split over --tasks darts(seed, n) tasks from libpi.so,
 *               and the same tasks serially in this process (efficiency)
 *   primes      --tasks sum_primes(n + i) tasks from libprimes.so (wall time)
 *
 * The harness (bench/run.sh) starts the cluster, passes the scheduler's pid
 * for the memory workloads, and collects the lines.  Every option is bounded:
 * a benchmark that asks for 10^12 tasks is refused rather than run out of
 * memory.
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

#define MAX_TASKS 10000000ull     /* 10^7: ~1 GiB of client state at most */
#define MAX_DARTS 1000000000000ull
#define WAIT_TIMEOUT 600.0        /* no workload may hang the harness forever */

static const char s_usage[] =
    "usage: shoal_bench ADDRESS WORKLOAD [options]\n"
    "workloads: throughput latency tree pending million pi primes\n"
    "options:\n"
    "  --n N            tasks (throughput 100000, latency 1000, pending 100000,\n"
    "                   million 1000000; primes: the n of sum_primes, default 1e7)\n"
    "  --leaves L       tree leaves, a power of two (default 16384)\n"
    "  --reps R         repeat throughput/tree R times, report the median (1..100)\n"
    "  --warmup W       latency: round trips before measuring (default 100)\n"
    "  --workers K      wait for K workers before starting (default 2)\n"
    "  --sched-pid PID  scheduler process, for the memory workloads\n"
    "  --darts D        pi: darts in all (default 1e9)\n"
    "  --tasks T        pi: tasks (default 8); primes: tasks (default 64)\n"
    "  --library PATH   pi/primes: the task library (.so)\n"
    "  --label S        extra \"label\" field in the output (e.g. simulated workers)\n";

typedef struct opts {
    const char *address, *workload, *library, *label;
    uint64_t n, leaves, reps, warmup, workers, darts, tasks;
    long sched_pid;
    int n_set, tasks_set;
} opts_t;

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A whole number in [min, max]: "100000" or "1e5". */
static int s_parse_count(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;
    double d;

    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno == 0 && *end == '\0') {
        if (v < min || v > max)
            return -1;
        *out = v;
        return 0;
    }
    errno = 0;
    d = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !(d >= (double)min) || d > (double)max ||
        d != floor(d))
        return -1;
    *out = (uint64_t)d;
    return 0;
}

/* A field of /proc/PID/status in KiB ("VmRSS", "VmHWM"); -1 if unreadable. */
static long long s_proc_kib(long pid, const char *field)
{
    char path[64], line[256];
    size_t flen = strlen(field);
    long long kib = -1;
    FILE *f;

    if (pid <= 0)
        snprintf(path, sizeof path, "/proc/self/status");
    else
        snprintf(path, sizeof path, "/proc/%ld/status", pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
            char *p = line + flen + 1, *end;
            while (*p == ' ' || *p == '\t')
                p++;
            errno = 0;
            kib = strtoll(p, &end, 10);
            if (errno != 0 || end == p)
                kib = -1;
            break;
        }
    }
    fclose(f);
    return kib;
}

static int s_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Percentile q (0..1) of a sorted array, nearest rank. */
static double s_pct(const double *v, size_t n, double q)
{
    size_t k = (size_t)ceil(q * (double)n);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return v[k - 1];
}

static void s_release_all(shoal_future_t **fs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        shoal_release(fs[i]);
        fs[i] = NULL;
    }
}

/* Opening of every output line. */
static void s_head(const opts_t *o, const char *workload)
{
    printf("{\"system\": \"shoal\", \"workload\": \"%s\"", workload);
    if (o->label) {
        /* The label comes from the command line: keep only safe characters
         * so the line stays valid JSON. */
        printf(", \"label\": \"");
        for (const char *p = o->label; *p && p - o->label < 64; p++)
            putchar((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
                            (*p >= 'A' && *p <= 'Z') || *p == '-' || *p == '_' || *p == '.'
                        ? *p
                        : '_');
        printf("\"");
    }
}

/* The empty argument array: every no-op task has the same one-byte args. */
static const char s_noargs[1] = {(char)0x90};

/* Map shoal.noop over n inputs and gather; seconds, or -1. */
static double s_noop_map(shoal_client_t *c, uint64_t n, double *submit_s, shoal_error_t *err)
{
    shoal_future_t **fs = calloc(n, sizeof *fs);
    const void **args = malloc(n * sizeof *args);
    size_t *lens = malloc(n * sizeof *lens);
    double t0, t1, dt = -1;

    if (!fs || !args || !lens) {
        snprintf(err->msg, sizeof err->msg, "out of memory for %" PRIu64 " tasks", n);
        goto out;
    }
    for (uint64_t i = 0; i < n; i++) {
        args[i] = s_noargs;
        lens[i] = sizeof s_noargs;
    }
    t0 = s_now();
    if (shoal_map(c, "shoal.noop", args, lens, n, NULL, fs, err) < 0)
        goto out;
    t1 = s_now();
    if (shoal_gather(fs, n, WAIT_TIMEOUT, err) < 0) {
        s_release_all(fs, n);
        goto out;
    }
    dt = s_now() - t0;
    if (submit_s)
        *submit_s = t1 - t0;
    s_release_all(fs, n);
out:
    free(fs);
    free(args);
    free(lens);
    return dt;
}

static int s_throughput(shoal_client_t *c, const opts_t *o, shoal_error_t *err)
{
    double *secs = calloc(o->reps, sizeof *secs);
    if (!secs)
        return -1;
    /* A short warm-up so that connection set-up and first allocations in
     * the scheduler and workers are not measured. */
    if (s_noop_map(c, o->n < 1000 ? o->n : 1000, NULL, err) < 0)
        goto error;
    for (uint64_t r = 0; r < o->reps; r++)
        if ((secs[r] = s_noop_map(c, o->n, NULL, err)) < 0)
            goto error;
    qsort(secs, o->reps, sizeof *secs, s_cmp_double);
    double med = secs[o->reps / 2];
    s_head(o, "throughput");
    printf(", \"n\": %" PRIu64 ", \"reps\": %" PRIu64 ", \"seconds\": %.6f, "
           "\"best_seconds\": %.6f, \"tasks_per_s\": %.1f}\n",
           o->n, o->reps, med, secs[0], (double)o->n / med);
    free(secs);
    return 0;
error:
    free(secs);
    return -1;
}

static int s_latency(shoal_client_t *c, const opts_t *o, shoal_error_t *err)
{
    double *us = calloc(o->n, sizeof *us), sum = 0;
    if (!us)
        return -1;
    for (uint64_t i = 0; i < o->warmup + o->n; i++) {
        double t0 = s_now();
        const void *data;
        size_t len;
        shoal_future_t *f = shoal_submit(c, "shoal.noop", s_noargs, sizeof s_noargs, NULL, err);
        if (!f)
            goto error;
        if (shoal_result(f, WAIT_TIMEOUT, &data, &len, err) < 0) {
            shoal_release(f);
            goto error;
        }
        shoal_release(f);
        if (i >= o->warmup)
            us[i - o->warmup] = (s_now() - t0) * 1e6;
    }
    for (uint64_t i = 0; i < o->n; i++)
        sum += us[i];
    qsort(us, o->n, sizeof *us, s_cmp_double);
    double med = s_pct(us, o->n, 0.5), p99 = s_pct(us, o->n, 0.99), lo = us[0],
           hi = us[o->n - 1];
    /* Where the time goes: a STATUS round trip is client -> scheduler ->
     * client only, so the rest of a task's round trip is the scheduler ->
     * worker -> scheduler leg and the worker's own hand-offs. */
    uint64_t ns = o->n < 1000 ? o->n : 1000;
    for (uint64_t i = 0; i < ns; i++) {
        shoal_status_info_t st;
        double t0 = s_now();
        if (shoal_status(c, &st, WAIT_TIMEOUT, err) < 0)
            goto error;
        us[i] = (s_now() - t0) * 1e6;
        shoal_status_free(&st);
    }
    qsort(us, ns, sizeof *us, s_cmp_double);
    s_head(o, "latency");
    printf(", \"n\": %" PRIu64 ", \"median_us\": %.1f, \"p99_us\": %.1f, \"mean_us\": %.1f, "
           "\"min_us\": %.1f, \"max_us\": %.1f, \"status_rt_median_us\": %.1f}\n",
           o->n, med, p99, sum / (double)o->n, lo, hi, s_pct(us, ns, 0.5));
    free(us);
    return 0;
error:
    free(us);
    return -1;
}

/*
 * One pairwise reduction of `leaves` integers 0..leaves-1: the first level
 * sums literal pairs, every later level sums two futures of the level below.
 * Everything is submitted before anything is waited for, as a user of
 * futures would.  Returns seconds from the first submission to the root's
 * result, or -1.
 */
static double s_tree_once(shoal_client_t *c, uint64_t leaves, shoal_error_t *err)
{
    uint64_t ntasks = leaves - 1, done = 0, width = leaves / 2;
    shoal_future_t **fs = calloc(ntasks, sizeof *fs);
    const void **args = malloc(width * sizeof *args);
    size_t *lens = malloc(width * sizeof *lens), *offs = malloc(width * sizeof *offs);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    double t0, dt = -1;
    int64_t total = 0;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (!fs || !args || !lens || !offs) {
        snprintf(err->msg, sizeof err->msg, "out of memory");
        goto out;
    }
    t0 = s_now();
    /* Level by level: `prev` is the first future of the level below. */
    for (uint64_t level = 0, prev = 0; width >= 1; level++, width /= 2) {
        sb.size = 0;
        for (uint64_t i = 0; i < width; i++) {
            offs[i] = sb.size;
            msgpack_pack_array(&pk, 2);
            if (level == 0) {
                msgpack_pack_uint64(&pk, 2 * i);
                msgpack_pack_uint64(&pk, 2 * i + 1);
            } else {
                shoal_pack_future(&pk, fs[prev + 2 * i]);
                shoal_pack_future(&pk, fs[prev + 2 * i + 1]);
            }
            lens[i] = sb.size - offs[i];
        }
        for (uint64_t i = 0; i < width; i++)
            args[i] = sb.data + offs[i];
        if (shoal_map(c, "shoal.sum", args, lens, width, NULL, fs + done, err) < 0)
            goto out;
        if (level > 0)
            prev += width * 2;
        done += width;
    }
    if (shoal_result_i64(fs[ntasks - 1], WAIT_TIMEOUT, &total, err) < 0)
        goto out;
    dt = s_now() - t0;
    if ((uint64_t)total != leaves * (leaves - 1) / 2) {
        snprintf(err->msg, sizeof err->msg, "tree sum is %" PRId64 ", expected %" PRIu64,
                 total, leaves * (leaves - 1) / 2);
        dt = -1;
    }
out:
    if (fs)
        s_release_all(fs, done);
    free(fs);
    free(args);
    free(lens);
    free(offs);
    msgpack_sbuffer_destroy(&sb);
    return dt;
}

static int s_tree(shoal_client_t *c, const opts_t *o, shoal_error_t *err)
{
    double *secs = calloc(o->reps, sizeof *secs);
    if (!secs)
        return -1;
    if (s_tree_once(c, 256, err) < 0)   /* warm-up */
        goto error;
    for (uint64_t r = 0; r < o->reps; r++)
        if ((secs[r] = s_tree_once(c, o->leaves, err)) < 0)
            goto error;
    qsort(secs, o->reps, sizeof *secs, s_cmp_double);
    double med = secs[o->reps / 2];
    s_head(o, "tree");
    printf(", \"leaves\": %" PRIu64 ", \"n\": %" PRIu64 ", \"reps\": %" PRIu64
           ", \"seconds\": %.6f, \"tasks_per_s\": %.1f}\n",
           o->leaves, o->leaves - 1, o->reps, med, (double)(o->leaves - 1) / med);
    free(secs);
    return 0;
error:
    free(secs);
    return -1;
}

/* Poll the scheduler's counters until `waiting` reaches n. */
static int s_wait_waiting(shoal_client_t *c, uint64_t n, shoal_error_t *err)
{
    double end = s_now() + WAIT_TIMEOUT;
    for (;;) {
        shoal_status_info_t st;
        if (shoal_status(c, &st, 60, err) < 0)
            return -1;
        uint64_t w = st.waiting;
        shoal_status_free(&st);
        if (w >= n)
            return 0;
        if (s_now() > end) {
            snprintf(err->msg, sizeof err->msg, "only %" PRIu64 " of %" PRIu64
                     " tasks reached the scheduler", w, n);
            return -1;
        }
        usleep(20000);
    }
}

static int s_pending(shoal_client_t *c, const opts_t *o, shoal_error_t *err)
{
    shoal_future_t *longf = NULL, **fs = calloc(o->n, sizeof *fs);
    const void **args = malloc(o->n * sizeof *args);
    size_t *lens = malloc(o->n * sizeof *lens);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    int rc = -1, mapped = 0;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (!fs || !args || !lens)
        goto out;
    if (o->sched_pid <= 0) {
        snprintf(err->msg, sizeof err->msg, "pending needs --sched-pid");
        goto out;
    }
    /* Warm up the scheduler's steady-state structures before the baseline. */
    if (s_noop_map(c, 1000, NULL, err) < 0)
        goto out;
    msgpack_pack_array(&pk, 1);
    msgpack_pack_double(&pk, 3600.0);
    longf = shoal_submit(c, "shoal.sleep", sb.data, sb.size, NULL, err);
    if (!longf)
        goto out;
    /* A status round trip: once it returns, the long task is in place. */
    if (s_wait_waiting(c, 0, err) < 0)
        goto out;
    long long rss0 = s_proc_kib(o->sched_pid, "VmRSS");

    sb.size = 0;
    msgpack_pack_array(&pk, 1);
    shoal_pack_future(&pk, longf);
    for (uint64_t i = 0; i < o->n; i++) {
        args[i] = sb.data;
        lens[i] = sb.size;
    }
    if (shoal_map(c, "shoal.noop", args, lens, o->n, NULL, fs, err) < 0)
        goto out;
    mapped = 1;
    if (s_wait_waiting(c, o->n, err) < 0)
        goto out;
    long long rss1 = s_proc_kib(o->sched_pid, "VmRSS");
    if (rss0 < 0 || rss1 < 0) {
        snprintf(err->msg, sizeof err->msg, "cannot read /proc/%ld/status", o->sched_pid);
        goto out;
    }
    s_head(o, "pending");
    printf(", \"n\": %" PRIu64 ", \"rss_before_kib\": %lld, \"rss_after_kib\": %lld, "
           "\"bytes_per_task\": %.1f}\n",
           o->n, rss0, rss1, (double)(rss1 - rss0) * 1024.0 / (double)o->n);
    fflush(stdout);
    /* Cancelling the long task cancels everything waiting on it. */
    shoal_cancel(longf);
    if (shoal_wait(fs, o->n, SHOAL_ALL_COMPLETED, 60, NULL) < 0) {
        snprintf(err->msg, sizeof err->msg, "dependents did not finish after the cancel");
        goto out;
    }
    rc = 0;
out:
    if (fs && mapped)
        s_release_all(fs, o->n);
    shoal_release(longf);
    free(fs);
    free(args);
    free(lens);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static int s_million(shoal_client_t *c, const opts_t *o, shoal_error_t *err)
{
    double sub = 0, total;
    long long rss0 = s_proc_kib(o->sched_pid, "VmRSS");

    if (o->sched_pid <= 0) {
        snprintf(err->msg, sizeof err->msg, "million needs --sched-pid");
        return -1;
    }
    total = s_noop_map(c, o->n, &sub, err);
    if (total < 0)
        return -1;
    long long hwm = s_proc_kib(o->sched_pid, "VmHWM");
    /* Every future was released: the scheduler should now hold no task.  A
     * STATUS round trip goes after the RELEASE on the same connection. */
    shoal_status_info_t st;
    long long left = -1;
    if (shoal_status(c, &st, 60, err) == 0) {
        left = (long long)st.total;
        shoal_status_free(&st);
    }
    long long rss1 = s_proc_kib(o->sched_pid, "VmRSS");
    s_head(o, "million");
    printf(", \"n\": %" PRIu64 ", \"submit_seconds\": %.6f, \"seconds\": %.6f, "
           "\"tasks_per_s\": %.1f, \"sched_rss_start_kib\": %lld, \"sched_peak_kib\": %lld, "
           "\"sched_rss_end_kib\": %lld, \"sched_tasks_after_release\": %lld, "
           "\"client_peak_kib\": %lld}\n",
           o->n, sub, total, (double)o->n / total, rss0, hwm, rss1, left,
           s_proc_kib(0, "VmHWM"));
    return 0;
}

/* Upload a task library and map `func` over [a_i, b_i] / [a_i] arguments. */
static double s_map_lib(shoal_client_t *c, const char *func, uint64_t ntasks,
                        const uint64_t *a, const uint64_t *b, uint64_t *sum,
                        shoal_error_t *err)
{
    shoal_future_t **fs = calloc(ntasks, sizeof *fs);
    const void **args = malloc(ntasks * sizeof *args);
    size_t *lens = malloc(ntasks * sizeof *lens), *offs = malloc(ntasks * sizeof *offs);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    double t0, dt = -1;
    int mapped = 0;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (!fs || !args || !lens || !offs)
        goto out;
    for (uint64_t i = 0; i < ntasks; i++) {
        offs[i] = sb.size;
        msgpack_pack_array(&pk, b ? 2 : 1);
        msgpack_pack_uint64(&pk, a[i]);
        if (b)
            msgpack_pack_uint64(&pk, b[i]);
        lens[i] = sb.size - offs[i];
    }
    for (uint64_t i = 0; i < ntasks; i++)
        args[i] = sb.data + offs[i];
    t0 = s_now();
    if (shoal_map(c, func, args, lens, ntasks, NULL, fs, err) < 0)
        goto out;
    mapped = 1;
    if (shoal_gather(fs, ntasks, WAIT_TIMEOUT, err) < 0)
        goto out;
    *sum = 0;
    for (uint64_t i = 0; i < ntasks; i++) {
        int64_t v;
        if (shoal_result_i64(fs[i], 0, &v, err) < 0)
            goto out;
        *sum += (uint64_t)v;
    }
    dt = s_now() - t0;
out:
    if (fs && mapped)
        s_release_all(fs, ntasks);
    free(fs);
    free(args);
    free(lens);
    free(offs);
    msgpack_sbuffer_destroy(&sb);
    return dt;
}

typedef uint64_t (*pi_darts_fn)(uint64_t seed, uint64_t n);

#define MAX_PIDS 64

/* User + system CPU seconds of a process (fields 14 and 15 of
 * /proc/PID/stat, after the parenthesised command name); 0 if unreadable. */
static double s_proc_cpu(long pid)
{
    char path[64], buf[1024];
    FILE *f;
    size_t n;

    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    if (!(f = fopen(path, "r")))
        return 0;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    /* After ") ": state(3) ppid(4) ... utime(14) stime(15). */
    unsigned long long v[2] = {0, 0};
    int field = 2;
    for (p++; *p && field < 15; p++) {
        if (*p != ' ')
            continue;
        field++;
        if (field == 14 || field == 15) {
            char *end;
            errno = 0;
            unsigned long long x = strtoull(p + 1, &end, 10);
            if (errno != 0 || end == p + 1)
                return 0;
            v[field - 14] = x;
        }
    }
    long hz = sysconf(_SC_CLK_TCK);
    return hz > 0 ? (double)(v[0] + v[1]) / (double)hz : 0;
}

static double s_pids_cpu(const long *pids, int n)
{
    double t = 0;
    for (int i = 0; i < n; i++)
        if (pids[i] > 0)
            t += s_proc_cpu(pids[i]);
    return t;
}

static int s_pi(shoal_client_t *c, const opts_t *o, shoal_error_t *err)
{
    uint64_t *seeds = NULL, *counts = NULL, hits = 0, serial = 0;
    void *dl = NULL;
    pi_darts_fn fn;
    int rc = -1;
    shoal_status_info_t st;
    long wpids[MAX_PIDS] = {0};

    if (!o->library) {
        snprintf(err->msg, sizeof err->msg, "pi needs --library PATH/libpi.so");
        return -1;
    }
    dl = dlopen(o->library, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        snprintf(err->msg, sizeof err->msg, "cannot load %s: %s", o->library, dlerror());
        return -1;
    }
    fn = (pi_darts_fn)(uintptr_t)dlsym(dl, "pi_darts");
    if (!fn) {
        snprintf(err->msg, sizeof err->msg, "%s has no pi_darts", o->library);
        goto out;
    }
    if (shoal_upload_library(c, o->library, err) < 0)
        goto out;
    if (shoal_status(c, &st, 30, err) < 0)
        goto out;
    int nthreads = st.nthreads > 0 ? st.nthreads : 1;
    /* The workers run on this machine (the harness starts them on
     * loopback): their CPU time during the parallel run says whether they
     * had the cores to themselves. */
    int nw = st.nworkers < MAX_PIDS ? st.nworkers : MAX_PIDS;
    for (int i = 0; i < nw; i++)
        wpids[i] = st.workers[i].pid;
    shoal_status_free(&st);
    uint64_t ntasks = o->tasks < o->darts ? o->tasks : o->darts;
    seeds = calloc(ntasks, sizeof *seeds);
    counts = calloc(ntasks, sizeof *counts);
    if (!seeds || !counts)
        goto out;
    for (uint64_t i = 0; i < ntasks; i++) {
        seeds[i] = 20240101ull + i;
        counts[i] = o->darts / ntasks + (i < o->darts % ntasks);
    }
    /* The serial time is the better of one run before and one after the
     * parallel one: on a shared machine a single run may be slowed by others,
     * and an inflated serial time would inflate the efficiency. */
    double t0 = s_now();
    for (uint64_t i = 0; i < ntasks; i++)
        serial += fn(seeds[i], counts[i]);
    double ser = s_now() - t0;
    double cpu0 = s_pids_cpu(wpids, nw);
    double par = s_map_lib(c, "darts", ntasks, seeds, counts, &hits, err);
    if (par < 0)
        goto out;
    double cpu = s_pids_cpu(wpids, nw) - cpu0;
    t0 = s_now();
    for (uint64_t i = 0; i < ntasks; i++)
        fn(seeds[i], counts[i]);
    double ser2 = s_now() - t0;
    if (ser2 < ser)
        ser = ser2;
    if (serial != hits) {
        snprintf(err->msg, sizeof err->msg, "cluster hits %" PRIu64 " != serial %" PRIu64,
                 hits, serial);
        goto out;
    }
    s_head(o, "pi");
    printf(", \"darts\": %" PRIu64 ", \"tasks\": %" PRIu64 ", \"threads\": %d, "
           "\"pi\": %.10f, \"parallel_seconds\": %.6f, \"serial_seconds\": %.6f, "
           "\"speedup\": %.4f, \"efficiency\": %.4f, \"workers_cpu_seconds\": %.3f, "
           "\"workers_cpu_share\": %.4f}\n",
           o->darts, ntasks, nthreads, 4.0 * (double)hits / (double)o->darts, par, ser,
           ser / par, ser / par / nthreads, cpu, cpu / (par * nthreads));
    rc = 0;
out:
    free(seeds);
    free(counts);
    if (dl)
        dlclose(dl);
    return rc;
}

static int s_primes(shoal_client_t *c, const opts_t *o, shoal_error_t *err)
{
    uint64_t *ns = malloc(o->tasks * sizeof *ns), sum = 0;
    int rc = -1;

    if (!ns)
        return -1;
    if (!o->library) {
        snprintf(err->msg, sizeof err->msg, "primes needs --library PATH/libprimes.so");
        goto out;
    }
    if (shoal_upload_library(c, o->library, err) < 0)
        goto out;
    for (uint64_t i = 0; i < o->tasks; i++)
        ns[i] = o->n + i;
    double dt = s_map_lib(c, "sum_primes", o->tasks, ns, NULL, &sum, err);
    if (dt < 0)
        goto out;
    s_head(o, "primes");
    printf(", \"tasks\": %" PRIu64 ", \"n\": %" PRIu64 ", \"checksum\": %" PRIu64
           ", \"seconds\": %.6f, \"tasks_per_s\": %.1f}\n",
           o->tasks, o->n, sum, dt, (double)o->tasks / dt);
    rc = 0;
out:
    free(ns);
    return rc;
}

static int s_parse(int argc, char **argv, opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->reps = 1;
    o->warmup = 100;
    o->workers = 2;
    o->leaves = 16384;
    o->darts = 1000000000ull;
    for (int a = 1; a < argc; a++) {
        const char *k = argv[a], *v = a + 1 < argc ? argv[a + 1] : NULL;
        uint64_t *dst = NULL, min = 1, max = MAX_TASKS;
        if (strcmp(k, "--help") == 0 || strcmp(k, "-h") == 0) {
            fputs(s_usage, stdout);
            exit(0);
        } else if (strcmp(k, "--n") == 0) {
            dst = &o->n;
            max = 100000000000ull;   /* primes' n goes up to 10^11 */
            o->n_set = 1;
        } else if (strcmp(k, "--leaves") == 0) {
            dst = &o->leaves;
            min = 2;
            max = 1ull << 22;
        } else if (strcmp(k, "--reps") == 0) {
            dst = &o->reps;
            max = 100;
        } else if (strcmp(k, "--warmup") == 0) {
            dst = &o->warmup;
            min = 0;
            max = 100000;
        } else if (strcmp(k, "--workers") == 0) {
            dst = &o->workers;
            min = 0;
            max = 100000;
        } else if (strcmp(k, "--darts") == 0) {
            dst = &o->darts;
            max = MAX_DARTS;
        } else if (strcmp(k, "--tasks") == 0) {
            dst = &o->tasks;
            max = 1000000;
            o->tasks_set = 1;
        } else if (strcmp(k, "--sched-pid") == 0) {
            uint64_t pid;
            if (s_parse_count(v, 1, INT32_MAX, &pid) < 0) {
                fprintf(stderr, "shoal_bench: --sched-pid: expected a process id\n");
                return -1;
            }
            o->sched_pid = (long)pid;
            a++;
            continue;
        } else if (strcmp(k, "--library") == 0 && v) {
            o->library = v;
            a++;
            continue;
        } else if (strcmp(k, "--label") == 0 && v) {
            o->label = v;
            a++;
            continue;
        } else if (k[0] != '-' && !o->address) {
            o->address = k;
            continue;
        } else if (k[0] != '-' && !o->workload) {
            o->workload = k;
            continue;
        } else {
            fprintf(stderr, "shoal_bench: unexpected argument '%s'\n%s", k, s_usage);
            return -1;
        }
        if (s_parse_count(v, min, max, dst) < 0) {
            fprintf(stderr, "shoal_bench: %s: expected a number from %" PRIu64 " to %" PRIu64
                    "\n", k, min, max);
            return -1;
        }
        a++;
    }
    if (!o->address || !o->workload) {
        fprintf(stderr, "%s", s_usage);
        return -1;
    }
    if ((o->leaves & (o->leaves - 1)) != 0) {
        fprintf(stderr, "shoal_bench: --leaves must be a power of two\n");
        return -1;
    }
    if (!o->n_set) {
        if (strcmp(o->workload, "latency") == 0)
            o->n = 1000;
        else if (strcmp(o->workload, "million") == 0)
            o->n = 1000000;
        else if (strcmp(o->workload, "primes") == 0)
            o->n = 10000000;
        else
            o->n = 100000;
    }
    if (strcmp(o->workload, "primes") != 0 && o->n > MAX_TASKS) {
        fprintf(stderr, "shoal_bench: --n: at most %llu tasks\n", MAX_TASKS);
        return -1;
    }
    if (!o->tasks_set)
        o->tasks = strcmp(o->workload, "primes") == 0 ? 64 : 8;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(shoal_client_t *, const opts_t *, shoal_error_t *);
    } workloads[] = {
        {"throughput", s_throughput}, {"latency", s_latency}, {"tree", s_tree},
        {"pending", s_pending},       {"million", s_million}, {"pi", s_pi},
        {"primes", s_primes},
    };
    shoal_connect_opts_t co;
    shoal_error_t err = {{0}};
    shoal_client_t *c;
    opts_t o;
    size_t w;
    int rc;

    if (s_parse(argc, argv, &o) < 0)
        return 2;
    for (w = 0; w < sizeof workloads / sizeof workloads[0]; w++)
        if (strcmp(o.workload, workloads[w].name) == 0)
            break;
    if (w == sizeof workloads / sizeof workloads[0]) {
        fprintf(stderr, "shoal_bench: unknown workload '%s'\n%s", o.workload, s_usage);
        return 2;
    }
    memset(&co, 0, sizeof co);
    co.address = o.address;
    co.name = "shoal_bench";
    c = shoal_connect_opts(&co, &err);
    if (!c) {
        fprintf(stderr, "shoal_bench: cannot connect to %s: %s\n", o.address, err.msg);
        return 1;
    }
    if (shoal_wait_for_workers(c, (int)o.workers, 120, &err) < 0) {
        fprintf(stderr, "shoal_bench: waiting for %" PRIu64 " workers: %s\n", o.workers,
                err.msg);
        shoal_disconnect(c);
        return 1;
    }
    rc = workloads[w].fn(c, &o, &err);
    fflush(stdout);
    if (rc < 0)
        fprintf(stderr, "shoal_bench: %s: %s\n", o.workload,
                err.msg[0] ? err.msg : strerror(errno));
    shoal_disconnect(c);
    return rc < 0 ? 1 : 0;
}
