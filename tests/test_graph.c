/*
 * test_graph.c - end to end: task graphs on a real scheduler and real
 * workers, through the client library (shoal_graph_*) and through
 * `shoal graph FILE.json`: the example, a 10,000-task tree sum in
 * one call, culling (unwanted branches do not run), inlined literals, a
 * failing task named in its dependents' errors, and every error that must be
 * reported before anything runs (cycles, unknown keys and functions,
 * duplicate keys, malformed JSON) with exit status 2 and no task submitted.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2e.h"

#define ARGV(...) ((const char *const[]){__VA_ARGS__, NULL})

static const char s_example[] =
    "{\"a\": 1, \"b\": 2, \"x\": [\"inc\", \"a\"], \"y\": [\"inc\", \"b\"], "
    "\"z\": [\"mul\", \"x\", \"y\"]}\n";

/* ---- helpers ------------------------------------------------------------------- */

static void s_add_int(shoal_graph_t *g, const char *key, int64_t v)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    shoal_error_t err;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_int64(&pk, v);
    ck_assert_msg(shoal_graph_add_value(g, key, sb.data, sb.size, &err) == 0, "%s: %s", key,
                  err.msg);
    msgpack_sbuffer_destroy(&sb);
}

/* key = func(refs...) where each argument is a key reference. */
static void s_add_task(shoal_graph_t *g, const char *key, const char *func,
                       const char *const *refs, size_t n)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    shoal_error_t err;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(shoal_graph_pack_key(&pk, refs[i]), 0);
    ck_assert_msg(shoal_graph_add_task(g, key, func, sb.data, sb.size, NULL, &err) == 0,
                  "%s: %s", key, err.msg);
    msgpack_sbuffer_destroy(&sb);
}

#define TASK(g, key, func, ...)                                                        \
    s_add_task((g), (key), (func), (const char *const[]){__VA_ARGS__},                \
               sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))

static shoal_graph_t *s_example_graph(void)
{
    shoal_graph_t *g = shoal_graph_create();
    ck_assert_ptr_nonnull(g);
    s_add_int(g, "a", 1);
    s_add_int(g, "b", 2);
    TASK(g, "x", "inc", "a");
    TASK(g, "y", "inc", "b");
    TASK(g, "z", "mul", "x", "y");
    return g;
}

/* Tasks the workers have finished (or failed), summed over workers. */
static uint64_t s_completed(shoal_client_t *c)
{
    shoal_status_info_t st;
    uint64_t n = 0;
    STATUS(c, &st);
    for (int i = 0; i < st.nworkers; i++)
        n += st.workers[i].completed;
    shoal_status_free(&st);
    return n;
}

/* Nothing reached the scheduler: no task record, nothing ever ran. */
static void s_nothing_submitted(shoal_client_t *c)
{
    shoal_status_info_t st;
    STATUS(c, &st);
    ck_assert_msg(st.total == 0, "the scheduler holds %llu task(s)",
                  (unsigned long long)st.total);
    shoal_status_free(&st);
    ck_assert_uint_eq(s_completed(c), 0);
}

static shoal_future_t *s_submit1(shoal_client_t *c, shoal_graph_t *g, const char *key)
{
    shoal_future_t *f = NULL;
    shoal_error_t err;
    ck_assert_msg(shoal_graph_submit(c, g, &key, 1, &f, &err) == 0, "submit %s: %s", key,
                  err.msg);
    return f;
}

/* Write `text` to the cluster's directory as `name`; its path goes to path. */
static void s_write(const cluster_t *cl, const char *name, const char *text, size_t len,
                    char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s", cl->dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot create %s", path);
    ck_assert_uint_eq(fwrite(text, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

/* Run bin/shoal with argv (argv[0] is replaced by the binary's path). */
static void s_cli(const char *const *argv_in, proc_result_t *r, double timeout)
{
    const char *argv[64];
    size_t n = 0;
    const char *bin = cluster_bin("shoal");
    static const char *const env[] = {"SHOAL_SCHEDULER", "SHOAL_SCHEDULER_FILE", NULL};

    ck_assert(bin != NULL);
    argv[n++] = bin;
    for (size_t i = 1; argv_in[i] && n < 63; i++)
        argv[n++] = argv_in[i];
    argv[n] = NULL;
    ck_assert_msg(proc_run(argv, env, NULL, 0, timeout, r) == 0, "cannot run %s", bin);
    ck_assert_msg(!r->timed_out, "shoal graph did not finish within %.0f s (stderr: %s)",
                  timeout, r->err);
}

#define EXIT_IS(r, code)                                                                  \
    ck_assert_msg((r).exited && (r).exit_code == (code),                                 \
                  "exit %d (expected %d)\nstdout: %s\nstderr: %s", (r).exit_code, (code), \
                  (r).out, (r).err)

/* ---- the client library --------------------------------------------------------------- */

START_TEST(test_api_example)
{
    cluster_t *cl = CLUSTER(.nworkers = 2, .nthreads = 2);
    shoal_client_t *c = cl->client;
    shoal_graph_t *g = s_example_graph();
    shoal_error_t err;
    shoal_future_t *f[2];

    ck_assert_msg(shoal_graph_check_libraries(g, (const char *[]){cluster_libbasic()}, 1,
                                              &err) == 0,
                  "%s", err.msg);
    ck_assert_msg(shoal_graph_submit(c, g, (const char *[]){"z", "x"}, 2, f, &err) == 0, "%s",
                  err.msg);
    ck_assert_int_eq(I64(f[0]), 6);
    ck_assert_int_eq(I64(f[1]), 2);
    /* x, y and z ran; a and b were inlined, not tasks. */
    ck_assert_uint_eq(s_completed(c), 3);
    shoal_release(f[0]);
    shoal_release(f[1]);
    /* The intermediate y was released at submission: all records go. */
    ck_assert_uint_eq(e2e_wait_total(c, 0, 10), 0);

    /* The same graph again (a graph is reusable). */
    f[0] = s_submit1(c, g, "z");
    ck_assert_int_eq(I64(f[0]), 6);
    shoal_release(f[0]);
    shoal_graph_destroy(g);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_api_tree_10k)
{
    enum { LEAVES = 5000 };   /* 5,000 inc + 4,999 add = 9,999 tasks, + the root's echo */
    cluster_t *cl = CLUSTER(.nworkers = 2, .nthreads = 2);
    shoal_client_t *c = cl->client;
    shoal_graph_t *g = shoal_graph_create();
    char key[32], l[32], r[32];
    size_t ntasks = 0;

    /* Level 0: l0.i = inc(i); level k: lk.i = add(l(k-1).2i, l(k-1).2i+1),
     * an odd one out carried up with shoal.echo. */
    for (int i = 0; i < LEAVES; i++) {
        char v[32];
        snprintf(v, sizeof v, "v%d", i);
        s_add_int(g, v, i);
        snprintf(key, sizeof key, "l0.%d", i);
        TASK(g, key, "inc", v);
        ntasks++;
    }
    int level = 0, width = LEAVES;
    while (width > 1) {
        for (int i = 0; i < (width + 1) / 2; i++) {
            snprintf(key, sizeof key, "l%d.%d", level + 1, i);
            snprintf(l, sizeof l, "l%d.%d", level, 2 * i);
            snprintf(r, sizeof r, "l%d.%d", level, 2 * i + 1);
            if (2 * i + 1 < width)
                TASK(g, key, "add", l, r);
            else
                TASK(g, key, "shoal.echo", l);
            ntasks++;
        }
        level++;
        width = (width + 1) / 2;
    }
    snprintf(key, sizeof key, "l%d.0", level);
    ck_assert_uint_ge(ntasks, 10000);

    double t0 = e2e_now();
    shoal_future_t *f = s_submit1(c, g, key);
    int64_t sum = I64(f);
    double dt = e2e_now() - t0;
    ck_assert_int_eq(sum, (int64_t)LEAVES * (LEAVES + 1) / 2);
    ck_assert_uint_eq(s_completed(c), ntasks);
    fprintf(stderr, "tree sum of %zu tasks in one graph submission: %.3f s\n", ntasks, dt);
    shoal_release(f);
    ck_assert_uint_eq(e2e_wait_total(c, 0, 20), 0);
    shoal_graph_destroy(g);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_api_cull_and_failure)
{
    cluster_t *cl = CLUSTER(.nworkers = 2, .nthreads = 2);
    shoal_client_t *c = cl->client;
    shoal_graph_t *g = s_example_graph();
    shoal_error_t err;
    msgpack_sbuffer sb;
    msgpack_packer pk;

    /* bad = fail("boom"), w = add(bad, z), q = inc(w): not needed by z. */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_str_with_body(&pk, "boom", 4);
    ck_assert_int_eq(shoal_graph_add_task(g, "bad", "fail", sb.data, sb.size, NULL, &err), 0);
    msgpack_sbuffer_destroy(&sb);
    TASK(g, "w", "add", "bad", "z");
    TASK(g, "q", "inc", "w");

    shoal_future_t *f = s_submit1(c, g, "z");
    ck_assert_int_eq(I64(f), 6);
    shoal_release(f);
    ck_assert_uint_eq(s_completed(c), 3);   /* bad, w and q never ran */

    /* Asked for, the failure names the key that failed, by name. */
    f = s_submit1(c, g, "q");
    const char *e = ERRTEXT(f);
    CONTAINS(e, "dependency bad failed: boom");
    ck_assert_int_eq(shoal_result(f, 0, NULL, NULL, &err), -1);
    CONTAINS(err.msg, "task q failed");
    shoal_release(f);
    shoal_graph_destroy(g);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_api_literals)
{
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 2);
    shoal_client_t *c = cl->client;
    shoal_graph_t *g = shoal_graph_create();
    shoal_error_t err;
    shoal_future_t *f[3];
    msgpack_sbuffer sb;
    msgpack_packer pk;

    /* l = [1, 2, 3] (inlined into s = sum_list(l)); big: 10 KB, used by two
     * tasks (sent once, as one shoal.echo task); a wanted literal. */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 3);
    for (int i = 1; i <= 3; i++)
        msgpack_pack_int(&pk, i);
    ck_assert_int_eq(shoal_graph_add_value(g, "l", sb.data, sb.size, &err), 0);
    sb.size = 0;
    char *big = malloc(10000);
    memset(big, 'x', 10000);
    msgpack_pack_bin_with_body(&pk, big, 10000);
    ck_assert_int_eq(shoal_graph_add_value(g, "big", sb.data, sb.size, &err), 0);
    free(big);
    msgpack_sbuffer_destroy(&sb);
    TASK(g, "s", "sum_list", "l");
    TASK(g, "e1", "identity", "big");
    TASK(g, "e2", "echo", "e1");
    s_add_int(g, "answer", 42);

    ck_assert_msg(shoal_graph_submit(c, g, (const char *[]){"s", "e2", "answer"}, 3, f, &err) ==
                      0,
                  "%s", err.msg);
    ck_assert_int_eq(I64(f[0]), 6);
    ck_assert_int_eq(I64(f[2]), 42);
    const void *data;
    size_t len;
    ck_assert_int_eq(shoal_result(f[1], E2E_WAIT, &data, &len, &err), 0);
    ck_assert_uint_eq(len, 3 + 10000);
    /* s; big's echo, e1, e2; answer's echo: l was inlined. */
    ck_assert_uint_eq(s_completed(c), 5);
    for (int i = 0; i < 3; i++)
        shoal_release(f[i]);
    shoal_graph_destroy(g);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_api_errors)
{
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 1);
    shoal_client_t *c = cl->client;
    shoal_graph_t *g = s_example_graph();
    shoal_error_t err;
    shoal_future_t *f = NULL;

    /* Duplicate and empty keys are refused when added. */
    errno = 0;
    ck_assert_int_eq(shoal_graph_add_value(g, "x", "\x01", 1, &err), -1);
    ck_assert_int_eq(errno, EEXIST);
    CONTAINS(err.msg, "duplicate key 'x'");
    ck_assert_int_eq(shoal_graph_add_value(g, "", "\x01", 1, &err), -1);
    CONTAINS(err.msg, "empty key");

    /* Missing functions, checked against the libraries the caller has. */
    ck_assert_int_eq(shoal_graph_check_libraries(g, NULL, 0, &err), -1);
    ck_assert_int_eq(errno, ENOENT);
    CONTAINS(err.msg, "task 'x' calls unknown function 'inc'");

    /* An unknown key. */
    TASK(g, "w", "add", "z", "nope");
    ck_assert_int_eq(shoal_graph_submit(c, g, (const char *[]){"z"}, 1, &f, &err), -1);
    ck_assert_str_eq(err.msg, "task 'w' refers to unknown key 'nope'");
    ck_assert_ptr_null(f);
    shoal_graph_destroy(g);

    /* A cycle, even one the wanted key does not need. */
    g = s_example_graph();
    TASK(g, "p", "inc", "q");
    TASK(g, "q", "add", "x", "p");
    ck_assert_int_eq(shoal_graph_submit(c, g, (const char *[]){"z"}, 1, &f, &err), -1);
    ck_assert_str_eq(err.msg, "cycle: p -> q -> p");
    ck_assert_int_eq(shoal_graph_submit(c, g, (const char *[]){"nokey"}, 1, &f, &err), -1);
    shoal_graph_destroy(g);

    s_nothing_submitted(c);
    cluster_stop(cl);
}
END_TEST

/* ---- shoal graph FILE.json ------------------------------------------------------------- */

START_TEST(test_cli_example)
{
    cluster_t *cl = CLUSTER(.nworkers = 2, .nthreads = 2, .no_library = 1);
    proc_result_t r;
    char path[700];

    s_write(cl, "g.json", s_example, strlen(s_example), path, sizeof path);
    /* The workers have no library: --library uploads it. */
    s_cli(ARGV("shoal", "graph", "--scheduler", cl->address, "--library", cluster_libbasic(),
               "--get", "z", path),
          &r, 30);
    EXIT_IS(r, 0);
    ck_assert_str_eq(r.out, "6\n");
    proc_result_free(&r);

    /* Several keys: KEY = VALUE lines, in the order asked for. */
    s_cli(ARGV("shoal", "graph", "--scheduler-file", cl->sfile, "--library", cluster_libbasic(),
               "--get", "x", "--get", "z", path),
          &r, 30);
    EXIT_IS(r, 0);
    ck_assert_str_eq(r.out, "x = 2\nz = 6\n");
    proc_result_free(&r);

    s_cli(ARGV("shoal", "graph", "--scheduler", cl->address, "--library", cluster_libbasic(),
               "--json", "--get", "z", "--get", "a", path),
          &r, 30);
    EXIT_IS(r, 0);
    ck_assert_str_eq(r.out, "{\"z\": 6, \"a\": 1}\n");
    proc_result_free(&r);

    /* No --get: the keys nothing refers to (here z alone). */
    s_cli(ARGV("shoal", "graph", "--scheduler", cl->address, "--library", cluster_libbasic(),
               path),
          &r, 30);
    EXIT_IS(r, 0);
    ck_assert_str_eq(r.out, "6\n");
    proc_result_free(&r);

    /* The library is on the cluster now; without the local check it runs. */
    s_cli(ARGV("shoal", "graph", "--scheduler", cl->address, "--no-function-check", "--get",
               "y", path),
          &r, 30);
    EXIT_IS(r, 0);
    ck_assert_str_eq(r.out, "3\n");
    proc_result_free(&r);

    /* Values of every JSON kind go through and come back as JSON. */
    static const char mixed[] =
        "{\"s\": \"h\\u00e9llo \\\"q\\\"\", \"n\": null, \"t\": true, \"f\": -2.5,\n"
        " \"o\": {\"k\": [1, \"s\"]},\n"
        " \"e\": [\"echo\", [\"s\", \"n\", \"t\", \"f\", \"o\", \"not a key\"]],\n"
        " \"sum\": [\"sum_list\", [\"nine\", 1]], \"nine\": 9}";
    s_write(cl, "mixed.json", mixed, strlen(mixed), path, sizeof path);
    s_cli(ARGV("shoal", "graph", "--scheduler", cl->address, "--library", cluster_libbasic(),
               path),
          &r, 30);
    EXIT_IS(r, 0);
    ck_assert_str_eq(r.out, "e = [\"h\xc3\xa9llo \\\"q\\\"\", null, true, -2.5, {\"k\": [1, "
                            "\"s\"]}, \"not a key\"]\nsum = 10\n");
    proc_result_free(&r);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_cli_task_failure)
{
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 2);
    proc_result_t r;
    char path[700];
    static const char text[] =
        "{\"a\": 1, \"x\": [\"fail\", \"boom\"], \"z\": [\"add\", \"x\", \"a\"], "
        "\"ok\": [\"inc\", \"a\"]}";

    s_write(cl, "fail.json", text, strlen(text), path, sizeof path);
    s_cli(ARGV("shoal", "graph", "--scheduler", cl->address, "--library", cluster_libbasic(),
               "--get", "z", path),
          &r, 30);
    EXIT_IS(r, 1);
    ck_assert_str_eq(r.out, "");
    CONTAINS(r.err, "task z failed");
    CONTAINS(r.err, "dependency x failed: boom");
    proc_result_free(&r);

    /* The keys that succeeded are still printed. */
    s_cli(ARGV("shoal", "graph", "--scheduler", cl->address, "--library", cluster_libbasic(),
               path),
          &r, 30);
    EXIT_IS(r, 1);
    ck_assert_str_eq(r.out, "ok = 2\n");
    CONTAINS(r.err, "dependency x failed: boom");
    proc_result_free(&r);
    cluster_stop(cl);
}
END_TEST

/* Each bad graph: exit 2, `frag` on stderr, nothing on the cluster. */
static void s_bad_graph(cluster_t *cl, const char *name, const char *text, size_t len,
                        const char *frag, const char *const *extra)
{
    proc_result_t r;
    char path[700];
    const char *argv[16];
    size_t n = 0;

    s_write(cl, name, text, len == SIZE_MAX ? strlen(text) : len, path, sizeof path);
    argv[n++] = "shoal";
    argv[n++] = "graph";
    argv[n++] = "--scheduler";
    argv[n++] = cl->address;
    for (size_t i = 0; extra && extra[i]; i++)
        argv[n++] = extra[i];
    argv[n++] = path;
    argv[n] = NULL;
    s_cli(argv, &r, 30);
    ck_assert_msg(r.exited && r.exit_code == 2, "%s: exit %d, stderr: %s", name, r.exit_code,
                  r.err);
    ck_assert_msg(e2e_contains(r.err, frag), "%s: stderr \"%s\" lacks \"%s\"", name, r.err,
                  frag);
    ck_assert_str_eq(r.out, "");
    proc_result_free(&r);
}

#define LIB(...) ((const char *const[]){"--library", cluster_libbasic(), __VA_ARGS__ NULL})

START_TEST(test_cli_errors_before_running)
{
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 1);
    char deep[300];
    size_t k = 0;

    s_bad_graph(cl, "cycle.json",
                "{\"a\": 1, \"x\": [\"inc\", \"z\"], \"y\": [\"inc\", \"x\"], "
                "\"z\": [\"add\", \"y\", \"a\"]}",
                SIZE_MAX, "cycle: x -> z -> y -> x", LIB());
    s_bad_graph(cl, "self.json", "{\"x\": [\"inc\", \"x\"]}", SIZE_MAX, "cycle: x -> x", LIB());
    /* inc is not built in, and no library says otherwise. */
    s_bad_graph(cl, "nofunc.json", s_example, SIZE_MAX,
                "task 'x' calls unknown function 'inc'", NULL);
    s_bad_graph(cl, "typo.json", "{\"a\": 1, \"x\": [\"incc\", \"a\"]}", SIZE_MAX,
                "task 'x' calls unknown function 'incc'", LIB());
    s_bad_graph(cl, "dup.json", "{\"a\": 1,\n \"a\": 2}", SIZE_MAX,
                "dup.json:2:2: duplicate key 'a' (first at 1:2)", LIB());
    s_bad_graph(cl, "trunc.json", "{\"a\": 1, \"x\": [\"inc\", \"a\"", SIZE_MAX,
                "trunc.json:1:26: unexpected end of input", LIB());
    s_bad_graph(cl, "escape.json", "{\"a\": \"\\q\"}", SIZE_MAX,
                "escape.json:1:8: invalid escape '\\q'", LIB());
    s_bad_graph(cl, "huge.json", "{\"a\": 99999999999999999999}", SIZE_MAX,
                "huge.json:1:7: integer 99999999999999999999 is out of range", LIB());
    s_bad_graph(cl, "inf.json", "{\"a\": 1e400}", SIZE_MAX, "out of range", LIB());
    deep[k++] = '{';
    deep[k++] = '"';
    deep[k++] = 'a';
    deep[k++] = '"';
    deep[k++] = ':';
    for (int i = 0; i < 70; i++)
        deep[k++] = '[';
    for (int i = 0; i < 70; i++)
        deep[k++] = ']';
    deep[k++] = '}';
    s_bad_graph(cl, "deep.json", deep, k, "nested deeper than 64 levels", LIB());
    s_bad_graph(cl, "utf8.json", "{\"a\": \"\xc3\x28\"}", SIZE_MAX, "invalid UTF-8", LIB());
    s_bad_graph(cl, "array.json", "[\"inc\", 1]", SIZE_MAX, "must be a JSON object", LIB());
    s_bad_graph(cl, "empty.json", "{}", SIZE_MAX, "the graph is empty", LIB());
    s_bad_graph(cl, "nothing.json", "", SIZE_MAX, "empty input", LIB());
    s_bad_graph(cl, "emptykey.json", "{\"\": 1}", SIZE_MAX, "a key must be 1 to 255 bytes",
                LIB());
    s_bad_graph(cl, "nofn.json", "{\"x\": [\"\", 1]}", SIZE_MAX, "function name", LIB());
    s_bad_graph(cl, "get.json", s_example, SIZE_MAX, "--get q: no such key",
                LIB("--get", "q", ));
    s_bad_graph(cl, "badlib.json", s_example, SIZE_MAX, "task library",
                (const char *const[]){"--library", "/nonexistent/lib.so", NULL});

    /* A missing file and bad options are usage errors too. */
    {
        proc_result_t r;
        s_cli(ARGV("shoal", "graph", "--scheduler", cl->address, "/nonexistent/g.json"), &r,
              30);
        EXIT_IS(r, 2);
        CONTAINS(r.err, "cannot open");
        proc_result_free(&r);
        s_cli(ARGV("shoal", "graph", "--scheduler", cl->address), &r, 30);
        EXIT_IS(r, 2);
        proc_result_free(&r);
        s_cli(ARGV("shoal", "graph", "--bogus", "x.json"), &r, 30);
        EXIT_IS(r, 2);
        proc_result_free(&r);
        s_cli(ARGV("shoal", "graph", "--help"), &r, 30);
        EXIT_IS(r, 0);
        CONTAINS(r.out, "usage: shoal graph");
        proc_result_free(&r);
    }
    s_nothing_submitted(cl->client);
    cluster_stop(cl);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("e2e_graph");
    TCase *api = e2e_tcase("graph_api");
    TCase *cli = e2e_tcase("graph_cli");

    e2e_add(api, test_api_example);
    e2e_add(api, test_api_tree_10k);
    e2e_add(api, test_api_cull_and_failure);
    e2e_add(api, test_api_literals);
    e2e_add(api, test_api_errors);
    e2e_add(cli, test_cli_example);
    e2e_add(cli, test_cli_task_failure);
    e2e_add(cli, test_cli_errors_before_running);
    suite_add_tcase(s, api);
    suite_add_tcase(s, cli);
    return s;
}

int main(void)
{
    return e2e_run(s_suite());
}
