/*
 * test_graph.c - unit tests of task graphs (client/graph.c) that need no real
 * cluster:
 *   - building a graph and the errors of shoal_graph_add_*;
 *   - validation: unknown keys, cycles, unknown functions, sinks;
 *   - inline:// submission: results, culling, inlined and large literals,
 *     references to existing futures, JSON graphs;
 *   - the remote path against a fake scheduler, which records what arrives:
 *     a graph of 20,000 tasks and more than 2 MiB is ONE SUBMIT message, its
 *     items in dependency order, named by their keys, culled, with literals
 *     inlined, followed by a RELEASE of every task that was not wanted.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shoal.h"

#include "mp.h"
#include "proto.h"
#include "util.h"

/* ---- helpers ------------------------------------------------------------------- */

typedef struct pbuf {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} pbuf_t;

static void pb_init(pbuf_t *b)
{
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
}

static void pb_free(pbuf_t *b)
{
    msgpack_sbuffer_destroy(&b->sb);
}

static void add_int(shoal_graph_t *g, const char *key, int64_t v)
{
    pbuf_t b;
    shoal_error_t err;
    pb_init(&b);
    msgpack_pack_int64(&b.pk, v);
    ck_assert_msg(shoal_graph_add_value(g, key, b.sb.data, b.sb.size, &err) == 0,
                  "add_value %s: %s", key, err.msg);
    pb_free(&b);
}

/* key = func(k0, k1, ...) with key references as arguments. */
static void add_keys(shoal_graph_t *g, const char *key, const char *func,
                     const char *const *args, size_t n)
{
    pbuf_t b;
    shoal_error_t err;
    pb_init(&b);
    msgpack_pack_array(&b.pk, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(shoal_graph_pack_key(&b.pk, args[i]), 0);
    ck_assert_msg(shoal_graph_add_task(g, key, func, b.sb.data, b.sb.size, NULL, &err) == 0,
                  "add_task %s: %s", key, err.msg);
    pb_free(&b);
}

#define TASK(g, key, func, ...)                                                        \
    add_keys((g), (key), (func), (const char *const[]){__VA_ARGS__},                  \
             sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))

/* The example: a = 1, b = 2, x = inc(a), y = inc(b), z = mul(x, y). */
static shoal_graph_t *example(void)
{
    shoal_graph_t *g = shoal_graph_create();
    ck_assert_ptr_nonnull(g);
    add_int(g, "a", 1);
    add_int(g, "b", 2);
    TASK(g, "x", "inc", "a");
    TASK(g, "y", "inc", "b");
    TASK(g, "z", "mul", "x", "y");
    return g;
}

static const char *libbasic(void)
{
    static char path[PATH_MAX + 32];
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    ck_assert(n > 0);
    exe[n] = '\0';
    *strrchr(exe, '/') = '\0'; /* build/test/client */
    snprintf(path, sizeof path, "%s/../libbasic.so", exe);
    ck_assert_msg(access(path, R_OK) == 0, "%s is missing: run make first", path);
    return path;
}

static shoal_client_t *connect_inline(void)
{
    shoal_error_t err;
    shoal_client_t *c = shoal_connect("inline://", &err);
    ck_assert_msg(c != NULL, "inline connect: %s", err.msg);
    ck_assert_msg(shoal_upload_library(c, libbasic(), &err) == 0, "load libbasic: %s",
                  err.msg);
    return c;
}

static int64_t result_i64(shoal_future_t *f)
{
    int64_t v = 0;
    shoal_error_t err;
    ck_assert_msg(shoal_result_i64(f, 10, &v, &err) == 0, "result: %s", err.msg);
    return v;
}

/* ---- building -------------------------------------------------------------------- */

START_TEST(test_build_errors)
{
    shoal_graph_t *g = shoal_graph_create();
    shoal_error_t err;
    char longkey[SHOAL_GRAPH_MAX_KEY + 2];
    pbuf_t b;

    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    add_int(g, "a", 1);

    errno = 0;
    ck_assert_int_eq(shoal_graph_add_value(g, "", "\x01", 1, &err), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_msg(strstr(err.msg, "empty key") != NULL, "%s", err.msg);
    ck_assert_int_eq(shoal_graph_add_value(g, NULL, "\x01", 1, &err), -1);
    ck_assert_int_eq(shoal_graph_add_value(g, longkey, "\x01", 1, &err), -1);
    ck_assert_msg(strstr(err.msg, "longer than 255 bytes") != NULL, "%s", err.msg);
    longkey[SHOAL_GRAPH_MAX_KEY] = '\0'; /* exactly 255 bytes is fine */
    ck_assert_int_eq(shoal_graph_add_value(g, longkey, "\x01", 1, &err), 0);

    errno = 0;
    ck_assert_int_eq(shoal_graph_add_value(g, "a", "\x02", 1, &err), -1);
    ck_assert_int_eq(errno, EEXIST);
    ck_assert_str_eq(err.msg, "duplicate key 'a': it is already in the graph");
    ck_assert_int_eq(shoal_graph_add_task(g, "a", "inc", "\x90", 1, NULL, &err), -1);
    ck_assert_int_eq(errno, EEXIST);

    /* Values: exactly one well-formed object, no key references. */
    ck_assert_int_eq(shoal_graph_add_value(g, "v", "\x92\x01", 2, &err), -1);
    ck_assert_msg(strstr(err.msg, "truncated") != NULL, "%s", err.msg);
    ck_assert_int_eq(shoal_graph_add_value(g, "v", "\x01\x02", 2, &err), -1);
    ck_assert_msg(strstr(err.msg, "left over") != NULL, "%s", err.msg);
    ck_assert_int_eq(shoal_graph_add_value(g, "v", "\xc1", 1, &err), -1);
    ck_assert_int_eq(shoal_graph_add_value(g, "v", "", 0, &err), -1);
    ck_assert_int_eq(shoal_graph_add_value(g, "v", "\xdd\xff\xff\xff\xff", 5, &err), -1);
    pb_init(&b);
    msgpack_pack_array(&b.pk, 1);
    shoal_graph_pack_key(&b.pk, "a");
    ck_assert_int_eq(shoal_graph_add_value(g, "v", b.sb.data, b.sb.size, &err), -1);
    ck_assert_str_eq(err.msg, "value of key 'v' refers to key 'a': only task arguments can "
                              "refer to keys");

    /* Tasks: an array of arguments, at most 32 levels deep. */
    ck_assert_int_eq(shoal_graph_add_task(g, "t", "inc", "\x01", 1, NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, "not a MessagePack array") != NULL, "%s", err.msg);
    ck_assert_int_eq(shoal_graph_add_task(g, "t", "", b.sb.data, b.sb.size, NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, "function name") != NULL, "%s", err.msg);
    ck_assert_int_eq(shoal_graph_add_task(g, "t", longkey, b.sb.data, b.sb.size, NULL, &err),
                     0);
    shoal_submit_opts_t o = {.retries = -1};
    ck_assert_int_eq(shoal_graph_add_task(g, "t2", "inc", b.sb.data, b.sb.size, &o, &err), -1);
    ck_assert_msg(strstr(err.msg, "retries") != NULL, "%s", err.msg);
    ck_assert_int_eq(shoal_graph_add_task(g, "t2", "inc", NULL, 0, NULL, &err), -1);
    pb_free(&b);

    char deep[40];
    memset(deep, 0x91, 32);
    deep[32] = 0x01;
    ck_assert_int_eq(shoal_graph_add_task(g, "d32", "inc", deep, 33, NULL, &err), 0);
    memset(deep, 0x91, 33);
    deep[33] = 0x01;
    ck_assert_int_eq(shoal_graph_add_task(g, "d33", "inc", deep, 34, NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, "nested deeper than 32") != NULL, "%s", err.msg);

    /* A future reference must be 8 bytes; a key reference a valid key. */
    ck_assert_int_eq(shoal_graph_add_task(g, "f", "inc", "\x91\xd6\x53\x00\x00\x00\x01", 7,
                                          NULL, &err),
                     -1);
    ck_assert_msg(strstr(err.msg, "not 8 bytes") != NULL, "%s", err.msg);
    ck_assert_int_eq(shoal_graph_add_task(g, "f", "inc", "\x91\xd5\x54" "a\0", 5, NULL, &err),
                     -1);
    ck_assert_msg(strstr(err.msg, "key reference") != NULL, "%s", err.msg);

    /* pack_key refuses what could not be a key. */
    pb_init(&b);
    errno = 0;
    ck_assert_int_eq(shoal_graph_pack_key(&b.pk, ""), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(shoal_graph_pack_key(&b.pk, NULL), -1);
    ck_assert_int_eq(shoal_graph_pack_key(&b.pk, longkey), 0);
    longkey[SHOAL_GRAPH_MAX_KEY] = 'k';
    ck_assert_int_eq(shoal_graph_pack_key(&b.pk, longkey), -1);
    pb_free(&b);

    /* The failed calls left nothing behind. */
    ck_assert_uint_eq(shoal_graph_size(g), 4);
    ck_assert_str_eq(shoal_graph_key(g, 0), "a");
    ck_assert_str_eq(shoal_graph_key(g, 3), "d32");
    ck_assert_ptr_null(shoal_graph_key(g, 4));
    ck_assert(shoal_graph_has(g, "d32"));
    ck_assert(!shoal_graph_has(g, "d33"));
    shoal_graph_destroy(g);
    shoal_graph_destroy(NULL);
}
END_TEST

/* ---- validation ----------------------------------------------------------------- */

START_TEST(test_check)
{
    shoal_error_t err;
    shoal_graph_t *g = example();
    const char *sinks[8];

    ck_assert_int_eq(shoal_graph_check(g, NULL, 0, &err), 0);
    ck_assert_uint_eq(shoal_graph_sinks(g, sinks, 8), 1);
    ck_assert_str_eq(sinks[0], "z");

    /* Functions: only built-ins and the names given count. */
    errno = 0;
    ck_assert_int_eq(shoal_graph_check(g, (const char *[]){"mul"}, 1, &err), -1);
    ck_assert_int_eq(errno, ENOENT);
    ck_assert_str_eq(err.msg, "task 'x' calls unknown function 'inc': it is not a built-in "
                              "function nor in the functions given (and 1 more task)");
    ck_assert_int_eq(shoal_graph_check(g, (const char *[]){"mul", "inc"}, 2, &err), 0);
    ck_assert_int_eq(shoal_graph_check_libraries(g, NULL, 0, &err), -1);
    ck_assert_msg(strstr(err.msg, "nor in any task library") != NULL, "%s", err.msg);
    const char *lib = libbasic();
    ck_assert_msg(shoal_graph_check_libraries(g, &lib, 1, &err) == 0, "%s", err.msg);
    const char *nolib = "/nonexistent/libnope.so";
    ck_assert_int_eq(shoal_graph_check_libraries(g, &nolib, 1, &err), -1);
    ck_assert_msg(strstr(err.msg, "libnope.so") != NULL, "%s", err.msg);

    /* Built-in functions are always known. */
    TASK(g, "e", "shoal.echo", "z");
    ck_assert_int_eq(shoal_graph_check(g, (const char *[]){"mul", "inc"}, 2, &err), 0);
    ck_assert_uint_eq(shoal_graph_sinks(g, sinks, 8), 1);
    ck_assert_str_eq(sinks[0], "e");

    /* An unknown key, wherever it is. */
    TASK(g, "w", "inc", "q");
    errno = 0;
    ck_assert_int_eq(shoal_graph_check(g, NULL, 0, &err), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_str_eq(err.msg, "task 'w' refers to unknown key 'q'");
    add_int(g, "q", 5);
    ck_assert_int_eq(shoal_graph_check(g, NULL, 0, &err), 0);
    ck_assert_uint_eq(shoal_graph_sinks(g, sinks, 1), 2); /* more than fit */
    ck_assert_str_eq(sinks[0], "e");
    shoal_graph_destroy(g);

    /* Cycles are named. */
    g = shoal_graph_create();
    TASK(g, "x", "inc", "y");
    TASK(g, "y", "inc", "x");
    ck_assert_int_eq(shoal_graph_check(g, NULL, 0, &err), -1);
    ck_assert_str_eq(err.msg, "cycle: x -> y -> x");
    shoal_graph_destroy(g);

    g = shoal_graph_create();
    add_int(g, "a", 1);
    TASK(g, "r", "add", "a", "s");
    TASK(g, "s", "inc", "s");
    ck_assert_int_eq(shoal_graph_check(g, NULL, 0, &err), -1);
    ck_assert_str_eq(err.msg, "cycle: s -> s");
    shoal_graph_destroy(g);

    /* A long cycle keeps its ends and fits the message. */
    g = shoal_graph_create();
    for (int i = 0; i < 200; i++) {
        char k[64], d[64];
        snprintf(k, sizeof k, "a-rather-long-key-name-%03d", i);
        snprintf(d, sizeof d, "a-rather-long-key-name-%03d", (i + 1) % 200);
        TASK(g, k, "inc", d);
    }
    ck_assert_int_eq(shoal_graph_check(g, NULL, 0, &err), -1);
    ck_assert_msg(strncmp(err.msg, "cycle: a-rather-long-key-name-000 -> ", 37) == 0, "%s",
                  err.msg);
    ck_assert_msg(strstr(err.msg, " -> ... -> a-rather-long-key-name-199 -> "
                                  "a-rather-long-key-name-000") != NULL,
                  "%s", err.msg);
    shoal_graph_destroy(g);

    /* A chain of a million keys: no recursion, so no stack overflow. */
    g = shoal_graph_create();
    add_int(g, "k0", 0);
    for (int i = 1; i < 1000000; i++) {
        char k[32], d[32];
        snprintf(k, sizeof k, "k%d", i);
        snprintf(d, sizeof d, "k%d", i - 1);
        TASK(g, k, "inc", d);
    }
    ck_assert_int_eq(shoal_graph_check(g, NULL, 0, &err), 0);
    ck_assert_uint_eq(shoal_graph_sinks(g, sinks, 8), 1);
    ck_assert_str_eq(sinks[0], "k999999");
    shoal_graph_destroy(g);
}
END_TEST

/* ---- inline submission ------------------------------------------------------------- */

START_TEST(test_inline_example)
{
    shoal_client_t *c = connect_inline();
    shoal_graph_t *g = example();
    shoal_error_t err;
    shoal_future_t *f[4];

    ck_assert_msg(shoal_graph_submit(c, g, (const char *[]){"z"}, 1, f, &err) == 0, "%s",
                  err.msg);
    ck_assert_int_eq(result_i64(f[0]), 6);
    shoal_release(f[0]);

    /* Several keys, one twice (two references to one future), a literal. */
    ck_assert_msg(shoal_graph_submit(c, g, (const char *[]){"x", "z", "x", "a"}, 4, f,
                                     &err) == 0,
                  "%s", err.msg);
    ck_assert_ptr_eq(f[0], f[2]);
    ck_assert_int_eq(result_i64(f[0]), 2);
    ck_assert_int_eq(result_i64(f[1]), 6);
    ck_assert_int_eq(result_i64(f[3]), 1);
    shoal_release(f[0]);
    ck_assert_int_eq(result_i64(f[2]), 2); /* still referenced */
    for (int i = 1; i < 4; i++)
        shoal_release(f[i]);

    /* Errors leave out[] NULL. */
    f[0] = (shoal_future_t *)1;
    errno = 0;
    ck_assert_int_eq(shoal_graph_submit(c, g, (const char *[]){"q"}, 1, f, &err), -1);
    ck_assert_int_eq(errno, ENOENT);
    ck_assert_str_eq(err.msg, "no key 'q' in the graph");
    ck_assert_ptr_null(f[0]);
    ck_assert_int_eq(shoal_graph_submit(c, g, (const char *[]){"z"}, 0, f, &err), -1);
    ck_assert_int_eq(errno, EINVAL);
    shoal_graph_destroy(g);
    shoal_disconnect(c);
}
END_TEST

START_TEST(test_inline_cull_and_literals)
{
    shoal_client_t *c = connect_inline();
    shoal_graph_t *g = example();
    shoal_error_t err;
    shoal_future_t *f[3];
    pbuf_t b;
    char marker[256];

    /* An unwanted branch: a command that would leave a file, and a failing
     * task.  Neither runs, so z neither fails nor leaves the file. */
    snprintf(marker, sizeof marker, "/tmp/shoal-graph-cull-%d", (int)getpid());
    unlink(marker);
    pb_init(&b);
    msgpack_pack_array(&b.pk, 1);
    shoal_pack_cmd(&b.pk, &(shoal_cmd_t){.argv = (const char *const[]){"touch", marker, NULL}});
    ck_assert_int_eq(shoal_graph_add_task(g, "side", SHOAL_CMD_FUNC, b.sb.data, b.sb.size,
                                          NULL, &err),
                     0);
    pb_free(&b);
    pb_init(&b);
    msgpack_pack_array(&b.pk, 1);
    msgpack_pack_str_with_body(&b.pk, "boom", 4);
    ck_assert_int_eq(shoal_graph_add_task(g, "bad", "fail", b.sb.data, b.sb.size, NULL, &err),
                     0);
    pb_free(&b);
    TASK(g, "badder", "add", "bad", "z");

    /* A large literal (past the inline bound), used twice, nested. */
    char *big = malloc(SHOAL_GRAPH_INLINE_MAX + 100);
    memset(big, 'B', SHOAL_GRAPH_INLINE_MAX + 100);
    pb_init(&b);
    msgpack_pack_str_with_body(&b.pk, big, SHOAL_GRAPH_INLINE_MAX + 100);
    ck_assert_int_eq(shoal_graph_add_value(g, "big", b.sb.data, b.sb.size, &err), 0);
    pb_free(&b);
    pb_init(&b);
    msgpack_pack_array(&b.pk, 1);
    msgpack_pack_array(&b.pk, 2);
    shoal_graph_pack_key(&b.pk, "big");
    shoal_graph_pack_key(&b.pk, "big");
    ck_assert_int_eq(shoal_graph_add_task(g, "pair", "echo", b.sb.data, b.sb.size, NULL, &err),
                     0);
    pb_free(&b);
    /* A small literal list inlined inside a nested argument. */
    pb_init(&b);
    msgpack_pack_array(&b.pk, 3);
    msgpack_pack_int(&b.pk, 10);
    msgpack_pack_int(&b.pk, 20);
    msgpack_pack_int(&b.pk, 30);
    ck_assert_int_eq(shoal_graph_add_value(g, "l", b.sb.data, b.sb.size, &err), 0);
    pb_free(&b);
    pb_init(&b);
    msgpack_pack_array(&b.pk, 1);
    shoal_graph_pack_key(&b.pk, "l");
    ck_assert_int_eq(shoal_graph_add_task(g, "s", "sum_list", b.sb.data, b.sb.size, NULL,
                                          &err),
                     0);
    pb_free(&b);

    ck_assert_msg(shoal_graph_submit(c, g, (const char *[]){"z", "pair", "s"}, 3, f, &err) ==
                      0,
                  "%s", err.msg);
    ck_assert_int_eq(result_i64(f[0]), 6);
    ck_assert_int_eq(result_i64(f[2]), 60);
    msgpack_object o;
    ck_assert_int_eq(shoal_result_object(f[1], 10, &o, &err), 0);
    ck_assert_int_eq(o.type, MSGPACK_OBJECT_ARRAY);
    ck_assert_uint_eq(o.via.array.size, 2);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(o.via.array.ptr[i].type, MSGPACK_OBJECT_STR);
        ck_assert_uint_eq(o.via.array.ptr[i].via.str.size, SHOAL_GRAPH_INLINE_MAX + 100);
        ck_assert(memcmp(o.via.array.ptr[i].via.str.ptr, big, SHOAL_GRAPH_INLINE_MAX + 100) ==
                  0);
    }
    for (int i = 0; i < 3; i++)
        shoal_release(f[i]);
    ck_assert_msg(access(marker, F_OK) != 0, "the unwanted task ran (%s exists)", marker);

    /* Asked for, the failing branch fails and names the key that failed. */
    ck_assert_int_eq(shoal_graph_submit(c, g, (const char *[]){"badder"}, 1, f, &err), 0);
    ck_assert_int_eq(shoal_result(f[0], 10, NULL, NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, "task badder failed") != NULL, "%s", err.msg);
    ck_assert_msg(strstr(err.msg, "dependency bad failed: boom") != NULL, "%s", err.msg);
    shoal_release(f[0]);
    free(big);
    shoal_graph_destroy(g);
    shoal_disconnect(c);
}
END_TEST

START_TEST(test_inline_futures_and_json)
{
    shoal_client_t *c = connect_inline();
    shoal_error_t err;
    shoal_future_t *f[2], *pre;
    pbuf_t b;

    /* A graph task may take an existing future as an argument. */
    pb_init(&b);
    msgpack_pack_array(&b.pk, 1);
    msgpack_pack_int(&b.pk, 40);
    pre = shoal_submit(c, "inc", b.sb.data, b.sb.size, NULL, &err);
    ck_assert_ptr_nonnull(pre);
    pb_free(&b);
    shoal_graph_t *g = shoal_graph_create();
    pb_init(&b);
    msgpack_pack_array(&b.pk, 2);
    shoal_pack_future(&b.pk, pre);
    shoal_graph_pack_key(&b.pk, "one");
    ck_assert_int_eq(shoal_graph_add_task(g, "t", "add", b.sb.data, b.sb.size, NULL, &err), 0);
    pb_free(&b);
    add_int(g, "one", 1);
    ck_assert_int_eq(shoal_graph_submit(c, g, (const char *[]){"t"}, 1, f, &err), 0);
    ck_assert_int_eq(result_i64(f[0]), 42);
    shoal_release(f[0]);
    shoal_release(pre);
    shoal_graph_destroy(g);

    /* The JSON form, with references inside nested arguments. */
    const char *text = "{\"a\": 1, \"b\": 2, \"x\": [\"inc\", \"a\"], \"y\": [\"inc\", \"b\"],\n"
                       " \"z\": [\"mul\", \"x\", \"y\"],\n"
                       " \"s\": [\"sum_list\", [\"a\", \"x\", \"z\", 100]],\n"
                       " \"lit\": [\"shoal.echo\", [\"a\", \"not-a-key\", {\"k\": \"y\"}]]}";
    g = shoal_graph_parse_json(text, strlen(text), &err);
    ck_assert_msg(g != NULL, "%s", err.msg);
    ck_assert_uint_eq(shoal_graph_size(g), 7);
    ck_assert_int_eq(shoal_graph_submit(c, g, (const char *[]){"s", "lit"}, 2, f, &err), 0);
    ck_assert_int_eq(result_i64(f[0]), 1 + 2 + 6 + 100);
    msgpack_object o;
    ck_assert_int_eq(shoal_result_object(f[1], 10, &o, &err), 0);
    ck_assert_int_eq(o.type, MSGPACK_OBJECT_ARRAY);
    ck_assert_uint_eq(o.via.array.size, 3);
    ck_assert_int_eq(o.via.array.ptr[0].via.i64, 1);
    ck_assert(o.via.array.ptr[1].type == MSGPACK_OBJECT_STR &&
              o.via.array.ptr[1].via.str.size == 9);
    ck_assert(o.via.array.ptr[2].type == MSGPACK_OBJECT_MAP &&
              o.via.array.ptr[2].via.map.ptr[0].val.via.i64 == 3);
    shoal_release(f[0]);
    shoal_release(f[1]);
    shoal_graph_destroy(g);

    /* JSON errors carry positions. */
    static const struct {
        const char *text, *msg;
    } bad[] = {
        {"{\"a\": 1, \"a\": 2}", "1:10: duplicate key 'a' (first at 1:2)"},
        {"[1]", "1:1: a graph must be a JSON object mapping keys to tasks or values, not an "
                "array"},
        {"{\"x\": [\"\", 1]}", "1:8: task 'x': the function name must be 1 to 255 bytes, "
                               "with no NUL"},
        {"{\"a\\u0000b\": 1}", "1:2: key 'a"},
        {"{\"a\": [1,]}", "1:10: trailing comma before ']'"},
        {"", "1:1: empty input: expected a JSON value"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_ptr_null(shoal_graph_parse_json(bad[i].text, strlen(bad[i].text), &err));
        ck_assert_msg(strncmp(err.msg, bad[i].msg, strlen(bad[i].msg)) == 0,
                      "'%s': '%s', expected '%s'", bad[i].text, err.msg, bad[i].msg);
    }
    /* Cycles and deep arguments are found when checked / added. */
    const char *cyc = "{\"p\": [\"inc\", \"q\"], \"q\": [\"inc\", \"p\"]}";
    g = shoal_graph_parse_json(cyc, strlen(cyc), &err);
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(shoal_graph_submit(c, g, (const char *[]){"p"}, 1, f, &err), -1);
    ck_assert_str_eq(err.msg, "cycle: p -> q -> p");
    shoal_graph_destroy(g);

    /* From a file: the path prefixes the position. */
    char path[] = "/tmp/shoal-graph-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "{\n\"a\": tru}", 11), 11);
    close(fd);
    ck_assert_ptr_null(shoal_graph_load_json(path, &err));
    char expect[128];
    snprintf(expect, sizeof expect, "%s:2:6: invalid literal", path);
    ck_assert_msg(strncmp(err.msg, expect, strlen(expect)) == 0, "%s", err.msg);
    unlink(path);
    ck_assert_ptr_null(shoal_graph_load_json(path, &err));
    ck_assert_msg(strstr(err.msg, "cannot open") != NULL, "%s", err.msg);
    ck_assert_ptr_null(shoal_graph_load_json("/", &err));
    ck_assert_msg(strstr(err.msg, "cannot read") != NULL, "%s", err.msg);
    shoal_disconnect(c);
}
END_TEST

/* ---- a fake scheduler that records what arrives ------------------------------------ */

typedef struct item {
    uint64_t id;
    char func[32];
    char name[64];
    uint8_t args[64];   /* the first bytes */
    size_t alen;
    uint32_t ndeps;
    uint64_t deps[4];
    int msg;            /* which SUBMIT message brought it */
} item_t;

typedef struct fake {
    void *ctx, *sock;
    char endpoint[128];
    pthread_t th;
    int stop;
    pthread_mutex_t mu;
    /* under mu */
    int nsubmit_msgs;
    item_t *items;
    size_t nitems, cap;
    size_t order_violations;   /* a dependency not seen before its dependent */
    uint64_t *released;
    size_t nreleased, relcap;
    /* thread only */
    uint8_t ident[256];
    size_t ident_len;
    uint8_t *seen;             /* bitmap by the counter part of ids */
} fake_t;

#define FAKE_SEEN_BITS (1u << 22)

static int fake_seen(fake_t *fk, uint64_t id)
{
    uint64_t n = id & ((1ull << 40) - 1);
    return n < FAKE_SEEN_BITS && (fk->seen[n >> 3] >> (n & 7)) & 1;
}

static void fake_on_submit(fake_t *fk, proto_msg_t *m)
{
    const msgpack_object *its;
    size_t n;
    if (mp_array(&m->body, &its, &n) < 0)
        return;
    proto_batch_t res;
    proto_batch_init(&res, MSG_RESULT);
    pthread_mutex_lock(&fk->mu);
    int msg = ++fk->nsubmit_msgs;
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *it, *deps;
        size_t k, nd;
        item_t x;
        const char *s;
        size_t sl;
        const void *a;
        memset(&x, 0, sizeof x);
        if (mp_array(&its[i], &it, &k) < 0 || k != 7 || mp_u64(&it[0], &x.id) < 0 ||
            mp_str(&it[1], &s, &sl) < 0 || mp_bin(&it[2], &a, &x.alen) < 0 ||
            mp_array(&it[3], &deps, &nd) < 0)
            continue;
        snprintf(x.func, sizeof x.func, "%.*s", (int)sl, s);
        memcpy(x.args, a, x.alen < sizeof x.args ? x.alen : sizeof x.args);
        if (mp_str(&it[6], &s, &sl) == 0)
            snprintf(x.name, sizeof x.name, "%.*s", (int)sl, s);
        x.ndeps = (uint32_t)nd;
        x.msg = msg;
        for (size_t d = 0; d < nd; d++) {
            uint64_t dep = 0;
            mp_u64(&deps[d], &dep);
            if (d < 4)
                x.deps[d] = dep;
            if (!fake_seen(fk, dep))
                fk->order_violations++;
        }
        uint64_t c = x.id & ((1ull << 40) - 1);
        if (c < FAKE_SEEN_BITS)
            fk->seen[c >> 3] |= (uint8_t)(1u << (c & 7));
        if (fk->nitems == fk->cap) {
            fk->cap = fk->cap ? fk->cap * 2 : 1024;
            fk->items = realloc(fk->items, fk->cap * sizeof *fk->items);
            ck_assert_ptr_nonnull(fk->items);
        }
        fk->items[fk->nitems++] = x;
        /* The result of every task is its name, so a future shows which
         * task it was. */
        msgpack_packer *pk = proto_batch_add(&res);
        msgpack_pack_array(pk, 4);
        msgpack_pack_uint64(pk, x.id);
        msgpack_pack_int(pk, 0);
        char packed[80];
        size_t nl = strlen(x.name);
        packed[0] = (char)(0xa0 | nl);
        memcpy(packed + 1, x.name, nl);
        mp_pack_bin(pk, packed, nl + 1);
        mp_pack_cstr(pk, "fakew");
    }
    pthread_mutex_unlock(&fk->mu);
    proto_batch_send(&res, fk->sock, fk->ident, fk->ident_len);
    proto_batch_destroy(&res);
}

static void fake_handle(fake_t *fk, proto_msg_t *m)
{
    memcpy(fk->ident, m->ident, m->ident_len);
    fk->ident_len = m->ident_len;
    switch (m->hdr.type) {
    case MSG_HELLO: {
        pbuf_t b;
        pb_init(&b);
        msgpack_pack_map(&b.pk, 3);
        mp_pack_cstr(&b.pk, "id");
        msgpack_pack_uint64(&b.pk, 9);
        mp_pack_cstr(&b.pk, "name");
        mp_pack_cstr(&b.pk, "fake");
        mp_pack_cstr(&b.pk, "nworkers");
        msgpack_pack_int(&b.pk, 1);
        proto_send(fk->sock, fk->ident, fk->ident_len, MSG_WELCOME, b.sb.data, b.sb.size,
                   NULL, 0);
        pb_free(&b);
        break;
    }
    case MSG_HEARTBEAT:
        proto_send(fk->sock, fk->ident, fk->ident_len, MSG_HEARTBEAT, NULL, 0, NULL, 0);
        break;
    case MSG_SUBMIT:
        fake_on_submit(fk, m);
        break;
    case MSG_RELEASE: {
        const msgpack_object *ids;
        size_t n;
        if (mp_array(&m->body, &ids, &n) < 0)
            break;
        pthread_mutex_lock(&fk->mu);
        for (size_t i = 0; i < n; i++) {
            if (fk->nreleased == fk->relcap) {
                fk->relcap = fk->relcap ? fk->relcap * 2 : 1024;
                fk->released = realloc(fk->released, fk->relcap * sizeof *fk->released);
                ck_assert_ptr_nonnull(fk->released);
            }
            mp_u64(&ids[i], &fk->released[fk->nreleased++]);
        }
        pthread_mutex_unlock(&fk->mu);
        break;
    }
    default:
        break;
    }
}

static void *fake_main(void *arg)
{
    fake_t *fk = arg;
    while (!__atomic_load_n(&fk->stop, __ATOMIC_ACQUIRE)) {
        zmq_pollitem_t pi = {.socket = fk->sock, .events = ZMQ_POLLIN};
        zmq_poll(&pi, 1, 10);
        for (;;) {
            proto_msg_t m;
            if (proto_recv(fk->sock, 1, &m, ZMQ_DONTWAIT) < 0) {
                if (errno == EBADMSG || errno == EPROTONOSUPPORT) {
                    proto_msg_close(&m);
                    continue;
                }
                break;
            }
            fake_handle(fk, &m);
            proto_msg_close(&m);
        }
    }
    return NULL;
}

static fake_t *fake_start(void)
{
    fake_t *fk = calloc(1, sizeof *fk);
    ck_assert_ptr_nonnull(fk);
    fk->seen = calloc(FAKE_SEEN_BITS / 8, 1);
    ck_assert_ptr_nonnull(fk->seen);
    pthread_mutex_init(&fk->mu, NULL);
    fk->ctx = zmq_ctx_new();
    fk->sock = zmq_socket(fk->ctx, ZMQ_ROUTER);
    ck_assert_int_eq(proto_sock_setup(fk->sock, 0), 0);
    int linger = 0;
    zmq_setsockopt(fk->sock, ZMQ_LINGER, &linger, sizeof linger);
    ck_assert_int_eq(zmq_bind(fk->sock, "tcp://127.0.0.1:*"), 0);
    size_t len = sizeof fk->endpoint;
    ck_assert_int_eq(zmq_getsockopt(fk->sock, ZMQ_LAST_ENDPOINT, fk->endpoint, &len), 0);
    ck_assert_int_eq(pthread_create(&fk->th, NULL, fake_main, fk), 0);
    return fk;
}

static void fake_stop(fake_t *fk)
{
    __atomic_store_n(&fk->stop, 1, __ATOMIC_RELEASE);
    pthread_join(fk->th, NULL);
    zmq_close(fk->sock);
    zmq_ctx_term(fk->ctx);
    pthread_mutex_destroy(&fk->mu);
    free(fk->items);
    free(fk->released);
    free(fk->seen);
    free(fk);
}

static size_t fake_count(fake_t *fk, size_t *field)
{
    pthread_mutex_lock(&fk->mu);
    size_t v = *field;
    pthread_mutex_unlock(&fk->mu);
    return v;
}

static size_t fake_wait(fake_t *fk, size_t *field, size_t want, double timeout)
{
    double end = util_now() + timeout;
    while (fake_count(fk, field) < want && util_now() < end)
        usleep(5000);
    return fake_count(fk, field);
}

static const item_t *fake_item(fake_t *fk, const char *name)
{
    for (size_t i = 0; i < fk->nitems; i++)
        if (strcmp(fk->items[i].name, name) == 0)
            return &fk->items[i];
    return NULL;
}

static shoal_client_t *connect_fake(fake_t *fk)
{
    shoal_error_t err;
    shoal_connect_opts_t o = {.address = fk->endpoint, .timeout = 5, .name = "graph-test"};
    shoal_client_t *c = shoal_connect_opts(&o, &err);
    ck_assert_msg(c != NULL, "connect to fake: %s", err.msg);
    return c;
}

/* The string result of a future (the fake answers with the task's name). */
static void name_is(shoal_future_t *f, const char *name)
{
    msgpack_object o;
    shoal_error_t err;
    ck_assert_msg(shoal_result_object(f, 10, &o, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(o.type, MSGPACK_OBJECT_STR);
    ck_assert_msg(o.via.str.size == strlen(name) && memcmp(o.via.str.ptr, name, o.via.str.size) == 0,
                  "result '%.*s', expected '%s'", (int)o.via.str.size, o.via.str.ptr, name);
}

#define CHAIN 20000
#define PAD 120

START_TEST(test_remote_one_message)
{
    fake_t *fk = fake_start();
    shoal_client_t *c = connect_fake(fk);
    shoal_error_t err;
    shoal_future_t *f[3], *pre;
    pbuf_t b;
    char pad[PAD], key[32], prev[32];

    /* A task submitted before the graph, which the graph uses. */
    pb_init(&b);
    msgpack_pack_array(&b.pk, 0);
    pre = shoal_submit(c, "pre", b.sb.data, b.sb.size, &(shoal_submit_opts_t){.name = "pre"},
                       &err);
    ck_assert_ptr_nonnull(pre);
    pb_free(&b);

    /* t0 = f(one, pad), t_i = f(t_{i-1}, pad): 20,000 tasks of about 140
     * bytes, over 2 MiB in all, past the 1 MiB at which SUBMIT batches are
     * otherwise split.  t1 and t2 also take `big` (a literal past the
     * inline bound: one shoal.echo task), t3 takes the future `pre`;
     * `one` is inlined; `u` and `v` are wanted by nobody. */
    memset(pad, 'p', sizeof pad);
    shoal_graph_t *g = shoal_graph_create();
    add_int(g, "one", 1);
    char *big = malloc(SHOAL_GRAPH_INLINE_MAX + 1);
    memset(big, 'B', SHOAL_GRAPH_INLINE_MAX + 1);
    pb_init(&b);
    msgpack_pack_bin_with_body(&b.pk, big, SHOAL_GRAPH_INLINE_MAX + 1);
    ck_assert_int_eq(shoal_graph_add_value(g, "big", b.sb.data, b.sb.size, &err), 0);
    pb_free(&b);
    free(big);
    for (int i = 0; i < CHAIN; i++) {
        snprintf(key, sizeof key, "t%d", i);
        pb_init(&b);
        msgpack_pack_array(&b.pk, i == 1 || i == 2 || i == 3 ? 3 : 2);
        shoal_graph_pack_key(&b.pk, i ? prev : "one");
        msgpack_pack_str_with_body(&b.pk, pad, sizeof pad);
        if (i == 1 || i == 2)
            shoal_graph_pack_key(&b.pk, "big");
        if (i == 3)
            shoal_pack_future(&b.pk, pre);
        ck_assert_int_eq(shoal_graph_add_task(g, key, "f", b.sb.data, b.sb.size, NULL, &err),
                         0);
        pb_free(&b);
        memcpy(prev, key, sizeof key);
    }
    TASK(g, "u", "fail", "t5");
    TASK(g, "v", "f", "u", "t19999");

    const char *want[] = {"t19999", "t10", "t19999"};
    size_t before = fake_count(fk, &fk->nitems);
    ck_assert_msg(shoal_graph_submit(c, g, want, 3, f, &err) == 0, "%s", err.msg);
    ck_assert_ptr_eq(f[0], f[2]);
    name_is(f[0], "t19999");
    name_is(f[1], "t10");

    size_t m = CHAIN + 1; /* the chain and big's echo task */
    ck_assert_uint_ge(fake_wait(fk, &fk->nitems, before + m, 10), before + m);
    ck_assert_uint_ge(fake_wait(fk, &fk->nreleased, m - 2, 10), m - 2);
    usleep(100 * 1000); /* anything more would have arrived by now */
    pthread_mutex_lock(&fk->mu);
    ck_assert_uint_eq(fk->nitems, before + m);
    ck_assert_uint_eq(fk->order_violations, 0);
    /* One message for the whole graph, and only the graph. */
    const item_t *root = fake_item(fk, "t19999");
    ck_assert_ptr_nonnull(root);
    size_t in_msg = 0;
    for (size_t i = 0; i < fk->nitems; i++)
        in_msg += fk->items[i].msg == root->msg;
    ck_assert_uint_eq(in_msg, m);
    const item_t *p = fake_item(fk, "pre");
    ck_assert_ptr_nonnull(p);
    ck_assert_int_lt(p->msg, root->msg);
    /* Culled, inlined. */
    ck_assert_ptr_null(fake_item(fk, "u"));
    ck_assert_ptr_null(fake_item(fk, "v"));
    ck_assert_ptr_null(fake_item(fk, "one"));
    const item_t *t0 = fake_item(fk, "t0"), *t1 = fake_item(fk, "t1"),
                 *t3 = fake_item(fk, "t3"), *bg = fake_item(fk, "big");
    ck_assert(t0 && t1 && t3 && bg);
    ck_assert_str_eq(t0->func, "f");
    ck_assert_uint_eq(t0->ndeps, 0);
    ck_assert(t0->args[0] == 0x92 && t0->args[1] == 0x01); /* [1, pad] */
    ck_assert_str_eq(bg->func, "shoal.echo");
    ck_assert_uint_eq(bg->alen, 1 + 3 + SHOAL_GRAPH_INLINE_MAX + 1); /* [bin16] */
    ck_assert_uint_eq(t1->ndeps, 2);
    ck_assert_uint_eq(t1->deps[0], t0->id);
    ck_assert_uint_eq(t1->deps[1], bg->id);
    ck_assert(t1->args[1] == 0xd7 && t1->args[2] == SHOAL_EXT_FUTURE);
    ck_assert_uint_eq(t3->ndeps, 2);
    ck_assert_uint_eq(t3->deps[1], shoal_future_id(pre));
    ck_assert_uint_eq(root->ndeps, 1);
    ck_assert_uint_eq(root->id, shoal_future_id(f[0]));
    /* Every graph task but the two wanted is released, once. */
    ck_assert_uint_eq(fk->nreleased, m - 2);
    for (size_t i = 0; i < fk->nreleased; i++) {
        ck_assert_uint_ne(fk->released[i], shoal_future_id(f[0]));
        ck_assert_uint_ne(fk->released[i], shoal_future_id(f[1]));
        ck_assert_uint_ne(fk->released[i], shoal_future_id(pre));
    }
    pthread_mutex_unlock(&fk->mu);
    shoal_release(f[0]);
    shoal_release(f[1]);
    ck_assert_uint_ge(fake_wait(fk, &fk->nreleased, m - 1, 10), m - 1); /* still one ref */
    shoal_release(f[2]);
    ck_assert_uint_ge(fake_wait(fk, &fk->nreleased, m, 10), m);

    /* All or nothing: a graph that refers to a released future sends nothing. */
    shoal_release(pre);
    before = fake_count(fk, &fk->nitems);
    f[0] = NULL;
    errno = 0;
    ck_assert_int_eq(shoal_graph_submit(c, g, (const char *[]){"t3"}, 1, f, &err), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_msg(strstr(err.msg, "unknown or released future") != NULL, "%s", err.msg);
    ck_assert_ptr_null(f[0]);
    /* A graph that does not need it still goes through, whole. */
    ck_assert_int_eq(shoal_graph_submit(c, g, (const char *[]){"t2"}, 1, f, &err), 0);
    name_is(f[0], "t2");
    usleep(100 * 1000);
    ck_assert_uint_eq(fake_count(fk, &fk->nitems), before + 4); /* t0, big, t1, t2 */
    shoal_release(f[0]);

    shoal_graph_destroy(g);
    shoal_disconnect(c);
    fake_stop(fk);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("graph");
    TCase *tc = tcase_create("graph");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_build_errors);
    tcase_add_test(tc, test_check);
    tcase_add_test(tc, test_inline_example);
    tcase_add_test(tc, test_inline_cull_and_literals);
    tcase_add_test(tc, test_inline_futures_and_json);
    tcase_add_test(tc, test_remote_one_message);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(s_suite());
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
