/*
 * test_tasks.c - end to end: tasks through a real scheduler and real workers
 * on loopback.  Many tasks at once, dependency graphs, error propagation,
 * bad input, retries, the built-in functions, large values, several client
 * threads, and the release of task records on the scheduler.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2e.h"

/* A cluster of two workers with two threads each (the tests' default). */
static cluster_t *s_cluster(void)
{
    return CLUSTER(.nworkers = 2, .nthreads = 2);
}

/* Pack [v] for each v in [0, n) into one buffer; args/lens point into it. */
static void s_pack_range(msgpack_sbuffer *sb, size_t n, int64_t first,
                         const void **args, size_t *lens)
{
    size_t *off = calloc(n + 1, sizeof *off);

    ck_assert(off != NULL);
    msgpack_sbuffer_init(sb);
    for (size_t i = 0; i < n; i++) {
        int64_t v = first + (int64_t)i;
        off[i] = sb->size;
        e2e_pack_ints(sb, &v, 1);
    }
    off[n] = sb->size;
    for (size_t i = 0; i < n; i++) {
        args[i] = sb->data + off[i];
        lens[i] = off[i + 1] - off[i];
    }
    free(off);
}

static int s_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

START_TEST(test_map_10k)
{
    enum { N = 10000 };
    cluster_t *cl = s_cluster();
    shoal_client_t *c = cl->client;
    const void **args = calloc(N, sizeof *args);
    size_t *lens = calloc(N, sizeof *lens);
    shoal_future_t **fs = calloc(N, sizeof *fs);
    uint64_t *ids = calloc(N, sizeof *ids);
    msgpack_sbuffer sb;
    shoal_error_t err;
    double t0;

    ck_assert(args && lens && fs && ids);
    s_pack_range(&sb, N, 0, args, lens);
    t0 = e2e_now();
    ck_assert_msg(shoal_map(c, "inc", args, lens, N, NULL, fs, &err) == 0,
                  "shoal_map: %s", err.msg);
    msgpack_sbuffer_destroy(&sb);
    ck_assert_msg(shoal_gather(fs, N, 45.0, &err) == 0, "gather: %s", err.msg);
    fprintf(stderr, "test_map_10k: %d tasks in %.3f s\n", N, e2e_now() - t0);
    for (int i = 0; i < N; i++) {
        int64_t v = I64(fs[i]);
        ck_assert_msg(v == i + 1, "inc(%d) returned %lld", i, (long long)v);
        ids[i] = shoal_future_id(fs[i]);
    }
    /* Every future has its own id. */
    qsort(ids, N, sizeof *ids, s_cmp_u64);
    for (int i = 1; i < N; i++)
        ck_assert_msg(ids[i] != ids[i - 1], "two futures share id %llu",
                      (unsigned long long)ids[i]);
    for (int i = 0; i < N; i++)
        shoal_release(fs[i]);
    ck_assert_uint_eq(e2e_wait_total(c, 0, 20.0), 0);

    /* An empty map is fine and returns nothing. */
    ck_assert_int_eq(shoal_map(c, "inc", NULL, NULL, 0, NULL, fs, &err), 0);
    free(args);
    free(lens);
    free(fs);
    free(ids);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_deps_diamond)
{
    cluster_t *cl = s_cluster();
    shoal_client_t *c = cl->client;
    shoal_future_t *a, *b, *x, *y, *z, *sq, *s3;

    a = SUB_I(c, "inc", NULL, 1);      /* 2 */
    b = SUB_I(c, "inc", NULL, 10);     /* 11 */
    x = SUB_F(c, "inc", NULL, a);      /* 3 */
    y = SUB_F(c, "inc", NULL, b);      /* 12 */
    z = SUB_F(c, "mul", NULL, x, y);   /* 36 */
    sq = SUB_F(c, "mul", NULL, x, x);  /* the same dependency twice: 9 */
    s3 = SUB_F(c, "shoal.sum", NULL, a, b, z);   /* built-in over futures: 49 */

    ck_assert_int_eq(I64(z), 36);
    ck_assert_int_eq(I64(x), 3);
    ck_assert_int_eq(I64(y), 12);
    ck_assert_int_eq(I64(a), 2);
    ck_assert_int_eq(I64(b), 11);
    ck_assert_int_eq(I64(sq), 9);
    ck_assert_int_eq(I64(s3), 49);
    /* A task depending on a future that finished long ago. */
    {
        shoal_future_t *late = SUB_F(c, "add", NULL, z, a);
        ck_assert_int_eq(I64(late), 38);
        shoal_release(late);
    }
    shoal_release(a);
    shoal_release(b);
    shoal_release(x);
    shoal_release(y);
    shoal_release(z);
    shoal_release(sq);
    shoal_release(s3);
    ck_assert_uint_eq(e2e_wait_total(c, 0, 10.0), 0);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_chain_1000)
{
    enum { N = 1000 };
    cluster_t *cl = s_cluster();
    shoal_client_t *c = cl->client;
    shoal_future_t **fs = calloc(N, sizeof *fs);
    shoal_future_t *prev, *last;
    shoal_error_t err;

    ck_assert(fs != NULL);
    /* Chain A: every link kept and checked. */
    fs[0] = SUB_I(c, "inc", NULL, 0);
    for (int i = 1; i < N; i++)
        fs[i] = SUB_F(c, "inc", NULL, fs[i - 1]);
    ck_assert_msg(shoal_gather(fs, N, 45.0, &err) == 0, "gather: %s", err.msg);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(I64(fs[i]), i + 1);

    /* Chain B: each link released as soon as the next one is submitted; the
     * scheduler must keep each result until its dependent has run. */
    prev = SUB_I(c, "inc", NULL, 0);
    for (int i = 1; i < N; i++) {
        shoal_future_t *next = SUB_F(c, "inc", NULL, prev);
        shoal_release(prev);
        prev = next;
    }
    last = prev;
    ck_assert_int_eq(I64_T(last, 45.0), N);
    shoal_release(last);
    for (int i = 0; i < N; i++)
        shoal_release(fs[i]);
    ck_assert_uint_eq(e2e_wait_total(c, 0, 10.0), 0);
    free(fs);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_error_propagation)
{
    cluster_t *cl = s_cluster();
    shoal_client_t *c = cl->client;
    shoal_submit_opts_t fo = {.name = "failer"}, go = {.name = "dependent"};
    shoal_future_t *f, *g, *h, *ok, *mixed, *f2, *g2;
    shoal_status_info_t st;
    const char *t, *w;
    char dec[32], hex[32];
    int found = 0;

    f = SUB_S(c, "fail", &fo, "boom-xyz");
    g = SUB_F(c, "inc", &go, f);
    h = SUB_F(c, "inc", NULL, g);
    ok = SUB_I(c, "inc", NULL, 1);
    mixed = SUB_F(c, "add", NULL, ok, f);

    t = ERRTEXT(f);
    CONTAINS(t, "boom-xyz");
    /* The failed task ran on one of our workers, and the future says which. */
    w = shoal_future_worker(f);
    ck_assert_msg(w != NULL, "shoal_future_worker is NULL for a task that failed on a worker");
    STATUS(c, &st);
    for (int i = 0; i < st.nworkers; i++)
        if (strcmp(st.workers[i].name, w) == 0)
            found = 1;
    ck_assert_msg(found, "worker \"%s\" of the failed task is not in the status", w);
    ck_assert_msg(strncmp(w, "e2e-w", 5) == 0, "unexpected worker name \"%s\"", w);
    shoal_status_free(&st);

    /* The dependent names the task that failed and carries the original text. */
    t = ERRTEXT(g);
    CONTAINS(t, "failer");
    CONTAINS(t, "boom-xyz");
    t = ERRTEXT(h);
    CONTAINS(t, "boom-xyz");
    t = ERRTEXT(mixed);
    CONTAINS(t, "failer");
    CONTAINS(t, "boom-xyz");
    /* The unrelated task is not affected. */
    ck_assert_int_eq(I64(ok), 2);

    /* An unnamed failed task is named by its id (decimal or hex). */
    f2 = SUB_S(c, "shoal.fail", NULL, "plain-err");
    g2 = SUB_F(c, "inc", NULL, f2);
    t = ERRTEXT(g2);
    CONTAINS(t, "plain-err");
    snprintf(dec, sizeof dec, "%llu", (unsigned long long)shoal_future_id(f2));
    snprintf(hex, sizeof hex, "%llx", (unsigned long long)shoal_future_id(f2));
    ck_assert_msg(e2e_contains(t, dec) || e2e_contains(t, hex),
                  "error \"%s\" does not name task %s", t, dec);
    CONTAINS(ERRTEXT(f2), "plain-err");

    shoal_release(f);
    shoal_release(g);
    shoal_release(h);
    shoal_release(ok);
    shoal_release(mixed);
    shoal_release(f2);
    shoal_release(g2);
    /* Erred records are released too. */
    ck_assert_uint_eq(e2e_wait_total(c, 0, 10.0), 0);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_unknown_function)
{
    cluster_t *cl = s_cluster();
    shoal_client_t *c = cl->client;
    shoal_future_t *f, *dep;
    const char *t;

    f = SUB_I(c, "no_such_function_xyz", NULL, 1);
    dep = SUB_F(c, "inc", NULL, f);
    t = ERRTEXT_T(f, 20.0);
    CONTAINS(t, "no_such_function_xyz");
    t = ERRTEXT_T(dep, 20.0);
    CONTAINS(t, "no_such_function_xyz");
    shoal_release(f);
    shoal_release(dep);
    /* The workers are fine afterwards. */
    f = SUB_I(c, "inc", NULL, 41);
    ck_assert_int_eq(I64(f), 42);
    shoal_release(f);
    cluster_stop(cl);
}
END_TEST

/* Submitting `args` either is refused by the client with a reason, or gives
 * a future that fails.  Never a crash or a hang. */
static void s_bad_submit(shoal_client_t *c, const char *func, const void *args,
                         size_t len, const char *what)
{
    shoal_error_t err;
    shoal_future_t *f;

    memset(&err, 0, sizeof err);
    f = shoal_submit(c, func, args, len, NULL, &err);
    if (!f) {
        ck_assert_msg(err.msg[0] != '\0', "%s: refused without a reason", what);
        return;
    }
    ck_assert_msg(ERRTEXT_T(f, 20.0)[0] != '\0', "%s", what);
    shoal_release(f);
}

START_TEST(test_bad_arguments)
{
    cluster_t *cl = s_cluster();
    shoal_client_t *c = cl->client;
    shoal_future_t *f;
    shoal_status_info_t st;
    static const unsigned char not_array[] = {0x05};           /* 5 */
    static const unsigned char truncated[] = {0x92, 0x01};     /* [1, <missing>] */
    static const unsigned char never_used[] = {0xc1};          /* reserved byte */
    static const unsigned char two_objs[] = {0x91, 0x01, 0x02}; /* [1] 2 */
    char *longname;

    /* inc("x"): the task function rejects the argument. */
    f = SUB_S(c, "inc", NULL, "x");
    CONTAINS(ERRTEXT(f), "argument");
    shoal_release(f);
    /* inc(): missing argument. */
    f = SUB_0(c, "inc", NULL);
    CONTAINS(ERRTEXT(f), "argument");
    shoal_release(f);
    /* add(1): one missing. */
    f = SUB_I(c, "add", NULL, 1);
    CONTAINS(ERRTEXT(f), "argument");
    shoal_release(f);

    /* Arguments that are not one MessagePack array. */
    s_bad_submit(c, "inc", not_array, sizeof not_array, "args not an array");
    s_bad_submit(c, "inc", truncated, sizeof truncated, "truncated args");
    s_bad_submit(c, "inc", never_used, sizeof never_used, "invalid msgpack byte");
    s_bad_submit(c, "inc", two_objs, sizeof two_objs, "trailing bytes after args");
    s_bad_submit(c, "inc", "", 0, "empty args");
    /* Odd function names. */
    s_bad_submit(c, "", "\x90", 1, "empty function name");
    longname = malloc(10001);
    ck_assert(longname != NULL);
    memset(longname, 'f', 10000);
    longname[10000] = '\0';
    s_bad_submit(c, longname, "\x90", 1, "10 kB function name");
    free(longname);

    /* Everybody survived: the same workers are there and still work. */
    f = SUB_I(c, "add", NULL, 20, 22);
    ck_assert_int_eq(I64(f), 42);
    shoal_release(f);
    STATUS(c, &st);
    ck_assert_int_eq(st.nworkers, 2);
    shoal_status_free(&st);
    cluster_stop(cl);
}
END_TEST

/* Tasks run (successfully or not) over all workers, from the status. */
static uint64_t s_runs(shoal_client_t *c)
{
    shoal_status_info_t st;
    uint64_t n = 0;

    STATUS(c, &st);
    for (int i = 0; i < st.nworkers; i++)
        n += st.workers[i].completed;
    shoal_status_free(&st);
    return n;
}

START_TEST(test_retries)
{
    cluster_t *cl = s_cluster();
    shoal_client_t *c = cl->client;
    shoal_submit_opts_t o = {.retries = 2, .name = "retried"};
    shoal_future_t *f, *g, *ok;
    uint64_t runs;
    double t0 = e2e_now();

    /* A task that always fails still fails after its retries, promptly, and
     * it did run three times (the workers' completed counts include failed
     * runs). */
    runs = s_runs(c);
    f = SUB_S(c, "shoal.fail", &o, "again-and-again");
    CONTAINS(ERRTEXT_T(f, 20.0), "again-and-again");
    ck_assert_uint_eq(s_runs(c) - runs, 3);
    /* Without retries: once. */
    runs = s_runs(c);
    g = SUB_S(c, "fail", NULL, "other-text");
    CONTAINS(ERRTEXT_T(g, 20.0), "other-text");
    ck_assert_uint_eq(s_runs(c) - runs, 1);
    shoal_release(g);
    g = SUB_S(c, "fail", &o, "other-text");
    CONTAINS(ERRTEXT_T(g, 20.0), "other-text");
    ck_assert_msg(e2e_now() - t0 < 20.0, "retries took %.1f s", e2e_now() - t0);
    /* Retries do not disturb a task that succeeds: it runs once. */
    runs = s_runs(c);
    ok = SUB_I(c, "inc", &o, 7);
    ck_assert_int_eq(I64(ok), 8);
    ck_assert_uint_eq(s_runs(c) - runs, 1);
    shoal_release(f);
    shoal_release(g);
    shoal_release(ok);
    ck_assert_uint_eq(e2e_wait_total(c, 0, 10.0), 0);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_priorities_accepted)
{
    enum { N = 200 };
    cluster_t *cl = s_cluster();
    shoal_client_t *c = cl->client;
    shoal_future_t *fs[N];
    shoal_error_t err;

    for (int i = 0; i < N; i++) {
        shoal_submit_opts_t o = {.priority = (i % 7) - 3};
        fs[i] = SUB_I(c, "mul", &o, i, 3);
    }
    ck_assert_msg(shoal_gather(fs, N, 30.0, &err) == 0, "gather: %s", err.msg);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(I64(fs[i]), 3 * i);
        shoal_release(fs[i]);
    }
    cluster_stop(cl);
}
END_TEST

START_TEST(test_builtins_and_values)
{
    cluster_t *cl = s_cluster();
    shoal_client_t *c = cl->client;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_object obj;
    shoal_error_t err;
    shoal_future_t *f;
    double d;
    enum { BIG = 3 << 20 };
    char *big = malloc(BIG);

    ck_assert(big != NULL);
    for (size_t i = 0; i < BIG; i++)
        big[i] = (char)(i * 131 + 7);

    /* shoal.noop -> nil */
    f = SUB_0(c, "shoal.noop", NULL);
    ck_assert_msg(shoal_result_object(f, E2E_WAIT, &obj, &err) == 0, "noop: %s", err.msg);
    ck_assert_int_eq(obj.type, MSGPACK_OBJECT_NIL);
    shoal_release(f);
    /* shoal.sum of ints is an int, with a float a float. */
    f = SUB_I(c, "shoal.sum", NULL, 1, 2, 3, 4);
    ck_assert_int_eq(I64(f), 10);
    shoal_release(f);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_double(&pk, 2.5);
    f = e2e_sub_raw(__FILE__, __LINE__, c, "shoal.sum", NULL, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    ck_assert_msg(shoal_result_f64(f, E2E_WAIT, &d, &err) == 0, "sum: %s", err.msg);
    ck_assert_msg(d > 3.49 && d < 3.51, "1 + 2.5 = %g", d);
    shoal_release(f);
    /* shoal.sleep returns after the sleep. */
    {
        double t0 = e2e_now();
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, 1);
        msgpack_pack_double(&pk, 0.3);
        f = e2e_sub_raw(__FILE__, __LINE__, c, "shoal.sleep", NULL, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        ck_assert_msg(shoal_result_object(f, E2E_WAIT, &obj, &err) == 0, "sleep: %s",
                      err.msg);
        ck_assert_msg(e2e_now() - t0 >= 0.29, "shoal.sleep(0.3) took %.3f s",
                      e2e_now() - t0);
        shoal_release(f);
    }

    /* echo / identity / shoal.echo return a structured value unchanged. */
    {
        static const char *funcs[] = {"echo", "identity", "shoal.echo"};
        msgpack_sbuffer vb;
        msgpack_unpacked up;

        msgpack_sbuffer_init(&vb);
        msgpack_packer_init(&pk, &vb, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, 1);
        msgpack_pack_map(&pk, 3);
        shoal_pack_cstr(&pk, "list");
        msgpack_pack_array(&pk, 4);
        msgpack_pack_int(&pk, -5);
        shoal_pack_cstr(&pk, "x");
        msgpack_pack_nil(&pk);
        msgpack_pack_double(&pk, 2.5);
        shoal_pack_cstr(&pk, "bin");
        msgpack_pack_bin(&pk, 4);
        msgpack_pack_bin_body(&pk, "\0\1\2\3", 4);
        shoal_pack_cstr(&pk, "t");
        msgpack_pack_true(&pk);
        msgpack_unpacked_init(&up);
        ck_assert(msgpack_unpack_next(&up, vb.data, vb.size, NULL) == MSGPACK_UNPACK_SUCCESS);
        for (size_t i = 0; i < 3; i++) {
            f = e2e_sub_raw(__FILE__, __LINE__, c, funcs[i], NULL, vb.data, vb.size);
            ck_assert_msg(shoal_result_object(f, E2E_WAIT, &obj, &err) == 0, "%s: %s",
                          funcs[i], err.msg);
            ck_assert_msg(msgpack_object_equal(obj, up.data.via.array.ptr[0]),
                          "%s returned a different value", funcs[i]);
            shoal_release(f);
        }
        msgpack_unpacked_destroy(&up);
        msgpack_sbuffer_destroy(&vb);
    }

    /* sum_list over an array argument. */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 1000);
    for (int i = 1; i <= 1000; i++)
        msgpack_pack_int(&pk, i);
    f = e2e_sub_raw(__FILE__, __LINE__, c, "sum_list", NULL, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    ck_assert_int_eq(I64(f), 500500);
    shoal_release(f);

    /* A large argument and a large result travel intact. */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_bin(&pk, BIG);
    msgpack_pack_bin_body(&pk, big, BIG);
    f = e2e_sub_raw(__FILE__, __LINE__, c, "echo", NULL, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    ck_assert_msg(shoal_result_object(f, E2E_WAIT, &obj, &err) == 0, "echo big: %s",
                  err.msg);
    ck_assert_int_eq(obj.type, MSGPACK_OBJECT_BIN);
    ck_assert_uint_eq(obj.via.bin.size, BIG);
    ck_assert_msg(memcmp(obj.via.bin.ptr, big, BIG) == 0, "3 MiB echo came back different");
    shoal_release(f);
    f = SUB_I(c, "bytes", NULL, 5 << 20);
    ck_assert_msg(shoal_result_object(f, E2E_WAIT, &obj, &err) == 0, "bytes: %s", err.msg);
    ck_assert_int_eq(obj.type, MSGPACK_OBJECT_BIN);
    ck_assert_uint_eq(obj.via.bin.size, 5 << 20);
    shoal_release(f);

    free(big);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_release_100k)
{
    enum { N = 100000, CHUNK = 10000 };
    cluster_t *cl = s_cluster();
    shoal_client_t *c = cl->client;
    shoal_future_t **fs = calloc(N, sizeof *fs);
    const void **args = calloc(CHUNK, sizeof *args);
    size_t *lens = calloc(CHUNK, sizeof *lens);
    shoal_status_info_t st;
    shoal_error_t err;
    uint64_t total;
    double t0 = e2e_now();

    ck_assert(fs && args && lens);
    for (int k = 0; k < N / CHUNK; k++) {
        msgpack_sbuffer sb;
        s_pack_range(&sb, CHUNK, (int64_t)k * CHUNK, args, lens);
        ck_assert_msg(shoal_map(c, "inc", args, lens, CHUNK, NULL, fs + k * CHUNK, &err) == 0,
                      "shoal_map: %s", err.msg);
        msgpack_sbuffer_destroy(&sb);
    }
    ck_assert_msg(shoal_gather(fs, N, 50.0, &err) == 0, "gather: %s", err.msg);
    fprintf(stderr, "test_release_100k: %d tasks in %.3f s\n", N, e2e_now() - t0);
    for (int i = 0; i < N; i += 997)
        ck_assert_int_eq(I64(fs[i]), i + 1);
    ck_assert_int_eq(I64(fs[N - 1]), N);

    /* The scheduler holds every record while we hold the futures... */
    STATUS(c, &st);
    ck_assert_msg(st.total == N, "total %llu with %d futures held",
                  (unsigned long long)st.total, N);
    ck_assert_msg(st.memory == N, "memory %llu, expected %d", (unsigned long long)st.memory, N);
    ck_assert_uint_eq(st.waiting + st.ready + st.processing + st.erred, 0);
    shoal_status_free(&st);
    /* ...and frees them all once released. */
    for (int i = 0; i < N; i++)
        shoal_release(fs[i]);
    total = e2e_wait_total(c, 0, 20.0);
    ck_assert_msg(total == 0, "task total still %llu after releasing everything",
                  (unsigned long long)total);
    free(fs);
    free(args);
    free(lens);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_disconnect_releases)
{
    enum { N = 2000 };
    cluster_t *cl = s_cluster();
    shoal_client_t *c2;
    shoal_future_t *fs[N];
    shoal_error_t err;
    uint64_t total;

    c2 = shoal_connect(cl->address, &err);
    ck_assert_msg(c2 != NULL, "second client: %s", err.msg);
    ck_assert_str_eq(shoal_client_address(c2), cl->address);
    for (int i = 0; i < N; i++)
        fs[i] = SUB_I(c2, "inc", NULL, i);
    ck_assert_msg(shoal_gather(fs, N, 30.0, &err) == 0, "gather: %s", err.msg);
    ck_assert_int_eq(I64(fs[N - 1]), N);
    ck_assert_uint_eq(e2e_wait_total(cl->client, N, 5.0), N);
    /* Disconnecting without releasing: the scheduler forgets them anyway. */
    shoal_disconnect(c2);
    total = e2e_wait_total(cl->client, 0, 10.0);
    ck_assert_msg(total == 0, "total %llu after the client left", (unsigned long long)total);
    cluster_stop(cl);
}
END_TEST

/* Several threads share one client: submits, waits and releases at once. */
typedef struct s_thr {
    shoal_client_t *c;
    int base;
    int bad;
    char why[640];
} s_thr_t;

static void *s_thread(void *arg)
{
    enum { PER = 500 };
    s_thr_t *t = arg;
    shoal_future_t *fs[PER];
    shoal_error_t err;
    int made = 0;

    for (int i = 0; i < PER; i++) {
        msgpack_sbuffer sb;
        int64_t v[2] = {t->base + i, 1000};
        msgpack_sbuffer_init(&sb);
        e2e_pack_ints(&sb, v, 2);
        fs[i] = shoal_submit(t->c, "add", sb.data, sb.size, NULL, &err);
        msgpack_sbuffer_destroy(&sb);
        if (!fs[i]) {
            t->bad++;
            snprintf(t->why, sizeof t->why, "submit: %s", err.msg);
            break;
        }
        made++;
    }
    for (int i = 0; i < made; i++) {
        int64_t r;
        if (shoal_result_i64(fs[i], 30.0, &r, &err) < 0 || r != t->base + i + 1000) {
            t->bad++;
            snprintf(t->why, sizeof t->why, "task %d: %s (r=%lld)", i, err.msg,
                     (long long)r);
        }
        shoal_release(fs[i]);
    }
    return NULL;
}

START_TEST(test_threads_share_client)
{
    enum { T = 4 };
    cluster_t *cl = s_cluster();
    pthread_t th[T];
    s_thr_t st[T];

    for (int i = 0; i < T; i++) {
        st[i] = (s_thr_t){.c = cl->client, .base = i * 100000};
        ck_assert_int_eq(pthread_create(&th[i], NULL, s_thread, &st[i]), 0);
    }
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < T; i++)
        ck_assert_msg(st[i].bad == 0, "thread %d: %d failures, last: %s", i, st[i].bad,
                      st[i].why);
    ck_assert_uint_eq(e2e_wait_total(cl->client, 0, 10.0), 0);
    cluster_stop(cl);
}
END_TEST

/* One sequential submit -> result -> release loop per thread. */
typedef struct s_rt {
    shoal_client_t *c;
    int base, bad;
    char why[640];
} s_rt_t;

static void *s_rt_thread(void *arg)
{
    s_rt_t *t = arg;
    shoal_error_t err;
    for (int i = 0; i < 200 && !t->bad; i++) {
        shoal_future_t *f = SUB_I(t->c, "inc", NULL, t->base + i);
        int64_t r = 0;
        if (shoal_result_i64(f, 60.0, &r, &err) < 0 || r != t->base + i + 1) {
            t->bad++;
            snprintf(t->why, sizeof t->why, "round trip %d: %s (r=%lld)", i, err.msg,
                     (long long)r);
        }
        shoal_release(f);
    }
    return NULL;
}

typedef struct s_canceller {
    pthread_t th[4];
    shoal_future_t *slow;
} s_canceller_t;

/* Join the round-trip threads, then cancel the slow task. */
static void *s_cancel_after(void *arg)
{
    s_canceller_t *k = arg;
    for (int i = 0; i < 4; i++)
        pthread_join(k->th[i], NULL);
    shoal_cancel(k->slow);
    return NULL;
}

/* The socket belongs to whichever thread waits (client_int.h, "Who drives
 * the socket"): threads that take turns at it, and one that holds it while
 * it waits on a task that will not finish by itself, must not starve each
 * other.  The main thread waits on a 120-second task; meanwhile four
 * threads run 200 sequential round trips each, and only once they are all
 * done is the task cancelled, which is what ends the main thread's wait.
 * If the waiting thread starved the others, its wait would time out. */
START_TEST(test_threads_round_trips_while_one_waits)
{
    cluster_t *cl = s_cluster();
    shoal_client_t *c = cl->client;
    shoal_future_t *slow = SUB_SLOW(c, 0, 120.0, NULL);
    s_canceller_t k = {.slow = slow};
    pthread_t canceller;
    s_rt_t st[4];
    shoal_error_t err;
    const void *data;
    size_t len;

    for (int i = 0; i < 4; i++) {
        st[i] = (s_rt_t){.c = c, .base = i * 100000};
        ck_assert_int_eq(pthread_create(&k.th[i], NULL, s_rt_thread, &st[i]), 0);
    }
    ck_assert_int_eq(pthread_create(&canceller, NULL, s_cancel_after, &k), 0);
    errno = 0;
    ck_assert_int_eq(shoal_result(slow, 60.0, &data, &len, &err), -1);
    ck_assert_int_ne(errno, ETIMEDOUT);
    ck_assert_int_eq(shoal_future_status(slow), SHOAL_CANCELLED);
    pthread_join(canceller, NULL);
    for (int i = 0; i < 4; i++)
        ck_assert_msg(st[i].bad == 0, "thread %d: %s", i, st[i].why);
    shoal_release(slow);
    ck_assert_uint_eq(e2e_wait_total(c, 0, 10.0), 0);
    cluster_stop(cl);
}
END_TEST

/* Higher priority runs first.  One worker with one thread is kept busy by a
 * slow task while low- then high-priority tasks queue up; once it is free,
 * the high ones must come before nearly all the low ones.  The slack allows
 * for the few tasks the scheduler may already have sent to the worker ahead
 * of time (prefetch), which a later priority cannot overtake. */
START_TEST(test_priorities_order)
{
    enum { NLOW = 20, NHIGH = 10, SLACK = 5 };
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 1);
    shoal_client_t *c = cl->client;
    shoal_future_t *blocker, *low[NLOW], *high[NHIGH];
    shoal_as_completed_t *ac;
    shoal_submit_opts_t lo = {.priority = -5}, hi = {.priority = 10};
    shoal_status_info_t st;
    int nhigh_seen = 0, nlow_before_last_high = 0, nlow_seen = 0;
    double end = e2e_now() + 10.0;

    blocker = SUB_SLOW(c, 0, 1.0, NULL);
    for (;;) {
        STATUS(c, &st);
        int running = st.processing > 0;
        shoal_status_free(&st);
        if (running)
            break;
        ck_assert_msg(e2e_now() < end, "the blocker never started");
        e2e_sleep(0.02);
    }
    for (int i = 0; i < NLOW; i++)
        low[i] = SUB_I(c, "inc", &lo, i);
    for (int i = 0; i < NHIGH; i++)
        high[i] = SUB_I(c, "inc", &hi, 1000 + i);
    ac = shoal_as_completed(low, NLOW);
    ck_assert(ac != NULL);
    for (int i = 0; i < NHIGH; i++)
        ck_assert_int_eq(shoal_as_completed_add(ac, high[i]), 0);
    while (nhigh_seen < NHIGH) {
        shoal_future_t *f = shoal_as_completed_next(ac, 20.0);
        int is_high = 0;
        ck_assert_msg(f != NULL, "as_completed ended early (errno %d)", errno);
        for (int i = 0; i < NHIGH; i++)
            if (f == high[i])
                is_high = 1;
        if (is_high)
            nhigh_seen++;
        else
            nlow_seen++;
    }
    nlow_before_last_high = nlow_seen;
    ck_assert_msg(nlow_before_last_high <= SLACK,
                  "%d low-priority tasks ran before the last high-priority one",
                  nlow_before_last_high);
    shoal_as_completed_destroy(ac);
    ck_assert_int_eq(I64(blocker), 1);
    for (int i = 0; i < NLOW; i++) {
        ck_assert_int_eq(I64(low[i]), i + 1);
        shoal_release(low[i]);
    }
    for (int i = 0; i < NHIGH; i++) {
        ck_assert_int_eq(I64(high[i]), 1001 + i);
        shoal_release(high[i]);
    }
    shoal_release(blocker);
    cluster_stop(cl);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("e2e_tasks");
    TCase *tc = e2e_tcase("tasks");

    e2e_add(tc, test_map_10k);
    e2e_add(tc, test_deps_diamond);
    e2e_add(tc, test_chain_1000);
    e2e_add(tc, test_error_propagation);
    e2e_add(tc, test_unknown_function);
    e2e_add(tc, test_bad_arguments);
    e2e_add(tc, test_retries);
    e2e_add(tc, test_priorities_accepted);
    e2e_add(tc, test_priorities_order);
    e2e_add(tc, test_builtins_and_values);
    e2e_add(tc, test_release_100k);
    e2e_add(tc, test_disconnect_releases);
    e2e_add(tc, test_threads_share_client);
    e2e_add(tc, test_threads_round_trips_while_one_waits);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return e2e_run(s_suite());
}
