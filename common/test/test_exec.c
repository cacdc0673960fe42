/*
 * test_exec.c - running a task in-process: argument validation, dependency
 * substitution, result checks, reference scanning.
 */
#include <check.h>
#include <errno.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "exec.h"

/* --- helpers ----------------------------------------------------------------- */

typedef struct buf {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} buf_t;

static void buf_init(buf_t *b)
{
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
}

static void buf_free(buf_t *b)
{
    msgpack_sbuffer_destroy(&b->sb);
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

/* Task functions used below. */
static int fn_echo_args(shoal_task_ctx_t *ctx, const msgpack_object *args,
                        msgpack_packer *out)
{
    (void)ctx;
    return msgpack_pack_object(out, *args);
}

static int fn_inc(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    int64_t x = 0;
    if (shoal_arg_i64(ctx, args, 0, &x) < 0)
        return -1;
    return msgpack_pack_int64(out, x + 1);
}

static int fn_sum(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    int64_t s = 0;
    for (size_t i = 0; i < shoal_nargs(args); i++) {
        int64_t v = 0;
        if (shoal_arg_i64(ctx, args, i, &v) < 0)
            return -1;
        s += v;
    }
    return msgpack_pack_int64(out, s);
}

static int fn_err_msg(shoal_task_ctx_t *ctx, const msgpack_object *args,
                      msgpack_packer *out)
{
    (void)args;
    msgpack_pack_int(out, 1);   /* discarded */
    return shoal_task_error(ctx, "boom %d", 42);
}

static int fn_err_silent(shoal_task_ctx_t *ctx, const msgpack_object *args,
                         msgpack_packer *out)
{
    (void)ctx;
    (void)args;
    (void)out;
    return -1;
}

static int fn_nothing(shoal_task_ctx_t *ctx, const msgpack_object *args,
                      msgpack_packer *out)
{
    (void)ctx;
    (void)args;
    (void)out;
    return 0;
}

static int fn_two(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)ctx;
    (void)args;
    msgpack_pack_int(out, 1);
    msgpack_pack_int(out, 2);
    return 0;
}

static int fn_half(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)ctx;
    (void)args;
    msgpack_pack_array(out, 2);
    msgpack_pack_int(out, 1);
    return 0;
}

static int fn_ctx(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)args;
    if (ctx->abi != SHOAL_TASK_ABI || shoal_task_id(ctx) != 77 || !ctx->worker ||
        strcmp(ctx->worker, "w1") != 0 || !ctx->errbuf || ctx->errcap < 512 ||
        !shoal_task_cancelled(ctx))
        return shoal_task_error(ctx, "bad context");
    return msgpack_pack_true(out);
}

static int fn_big(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    static char blob[100000];
    (void)ctx;
    (void)args;
    memset(blob, 'x', sizeof blob);
    msgpack_pack_bin(out, sizeof blob);
    return msgpack_pack_bin_body(out, blob, sizeof blob);
}

static int run(shoal_task_fn fn, const void *args, size_t len, const exec_dep_t *deps,
               size_t ndeps, exec_result_t *r)
{
    return exec_task(fn, 1, "test", NULL, args, len, deps, ndeps, r);
}

/* --- tests ------------------------------------------------------------------- */

START_TEST(test_no_deps)
{
    buf_t a;
    exec_result_t r;
    buf_init(&a);
    msgpack_pack_array(&a.pk, 1);
    msgpack_pack_int(&a.pk, 41);
    ck_assert_int_eq(run(fn_inc, a.sb.data, a.sb.size, NULL, 0, &r), 0);
    ck_assert_uint_eq(r.len, 1);
    ck_assert_uint_eq(((unsigned char *)r.data)[0], 42);
    free(r.data);

    /* An empty argument list is fine too. */
    unsigned char empty = 0x90;
    ck_assert_int_eq(run(fn_sum, &empty, 1, NULL, 0, &r), 0);
    ck_assert_uint_eq(r.len, 1);
    ck_assert_uint_eq(((unsigned char *)r.data)[0], 0);
    free(r.data);
    buf_free(&a);
}
END_TEST

START_TEST(test_nested_deps)
{
    buf_t a, d1, d2, want;
    exec_result_t r;
    buf_init(&a);
    buf_init(&d1);
    buf_init(&d2);
    buf_init(&want);

    /* args: [ref(1), {"k": [ref(2), ref(1)], ref(2): 3}, 5] */
    msgpack_pack_array(&a.pk, 3);
    exec_pack_ref(&a.pk, 1);
    msgpack_pack_map(&a.pk, 2);
    pack_str(&a.pk, "k");
    msgpack_pack_array(&a.pk, 2);
    exec_pack_ref(&a.pk, 2);
    exec_pack_ref(&a.pk, 1);
    exec_pack_ref(&a.pk, 2);
    msgpack_pack_int(&a.pk, 3);
    msgpack_pack_int(&a.pk, 5);

    pack_str(&d1.pk, "one");           /* result of task 1 */
    msgpack_pack_array(&d2.pk, 2);     /* result of task 2: [7, ref(99)] */
    msgpack_pack_int(&d2.pk, 7);
    exec_pack_ref(&d2.pk, 99);         /* data, not a dependency: kept */

    msgpack_pack_array(&want.pk, 3);
    pack_str(&want.pk, "one");
    msgpack_pack_map(&want.pk, 2);
    pack_str(&want.pk, "k");
    msgpack_pack_array(&want.pk, 2);
    msgpack_pack_array(&want.pk, 2);
    msgpack_pack_int(&want.pk, 7);
    exec_pack_ref(&want.pk, 99);
    pack_str(&want.pk, "one");
    msgpack_pack_array(&want.pk, 2);
    msgpack_pack_int(&want.pk, 7);
    exec_pack_ref(&want.pk, 99);
    msgpack_pack_int(&want.pk, 3);
    msgpack_pack_int(&want.pk, 5);

    exec_dep_t deps[] = {{2, d2.sb.data, d2.sb.size}, {1, d1.sb.data, d1.sb.size}};
    ck_assert_int_eq(run(fn_echo_args, a.sb.data, a.sb.size, deps, 2, &r), 0);
    ck_assert_uint_eq(r.len, want.sb.size);
    ck_assert_mem_eq(r.data, want.sb.data, want.sb.size);
    free(r.data);

    /* Extra deps that are not referenced are harmless. */
    exec_dep_t more[] = {{5, d1.sb.data, d1.sb.size}, {2, d2.sb.data, d2.sb.size},
                         {1, d1.sb.data, d1.sb.size}};
    ck_assert_int_eq(run(fn_echo_args, a.sb.data, a.sb.size, more, 3, &r), 0);
    ck_assert_mem_eq(r.data, want.sb.data, want.sb.size);
    free(r.data);

    buf_free(&a);
    buf_free(&d1);
    buf_free(&d2);
    buf_free(&want);
}
END_TEST

START_TEST(test_many_deps)
{
    /* More deps than the linear-scan threshold: the sorted lookup. */
    enum { N = 50 };
    buf_t a, res[N];
    exec_dep_t deps[N];
    exec_result_t r;
    int64_t expect = 0;

    buf_init(&a);
    msgpack_pack_array(&a.pk, N);
    for (int i = 0; i < N; i++) {
        uint64_t id = ((uint64_t)3 << 40) | (uint64_t)((i * 37) % N + 1);
        exec_pack_ref(&a.pk, id);
    }
    for (int i = 0; i < N; i++) {
        /* deps listed in reverse id order, result of id k is k * 10 */
        uint64_t k = (uint64_t)(N - i);
        buf_init(&res[i]);
        msgpack_pack_int64(&res[i].pk, (int64_t)k * 10);
        deps[i] = (exec_dep_t){((uint64_t)3 << 40) | k, res[i].sb.data, res[i].sb.size};
        expect += (int64_t)k * 10;
    }
    ck_assert_int_eq(run(fn_sum, a.sb.data, a.sb.size, deps, N, &r), 0);
    msgpack_zone z;
    msgpack_object o;
    size_t off = 0;
    msgpack_zone_init(&z, 256);
    ck_assert_int_eq(msgpack_unpack(r.data, r.len, &off, &z, &o), MSGPACK_UNPACK_SUCCESS);
    ck_assert_int_eq(o.via.i64, expect);
    msgpack_zone_destroy(&z);
    free(r.data);

    /* Drop one dep: the error names it. */
    ck_assert_int_eq(run(fn_sum, a.sb.data, a.sb.size, deps + 1, N - 1, &r), -1);
    char msg[128];
    snprintf(msg, sizeof msg, "missing result of dependency %llu",
             (unsigned long long)(((uint64_t)3 << 40) | N));
    ck_assert_str_eq(r.err, msg);
    ck_assert_ptr_null(r.data);

    for (int i = 0; i < N; i++)
        buf_free(&res[i]);
    buf_free(&a);
}
END_TEST

START_TEST(test_missing_and_bad_dep)
{
    buf_t a;
    exec_result_t r;
    buf_init(&a);
    msgpack_pack_array(&a.pk, 2);
    msgpack_pack_int(&a.pk, 1);
    msgpack_pack_map(&a.pk, 1);
    pack_str(&a.pk, "x");
    exec_pack_ref(&a.pk, 7);

    ck_assert_int_eq(run(fn_echo_args, a.sb.data, a.sb.size, NULL, 0, &r), -1);
    ck_assert_str_eq(r.err, "missing result of dependency 7");

    exec_dep_t other = {8, "\x01", 1};
    ck_assert_int_eq(run(fn_echo_args, a.sb.data, a.sb.size, &other, 1, &r), -1);
    ck_assert_str_eq(r.err, "missing result of dependency 7");

    /* A dependency result that is not one msgpack object. */
    exec_dep_t bad[] = {{7, "\x92\x01", 2}};
    ck_assert_int_eq(run(fn_echo_args, a.sb.data, a.sb.size, bad, 1, &r), -1);
    ck_assert_ptr_nonnull(strstr(r.err, "dependency 7"));
    exec_dep_t trailing[] = {{7, "\x01\x02", 2}};
    ck_assert_int_eq(run(fn_echo_args, a.sb.data, a.sb.size, trailing, 1, &r), -1);
    exec_dep_t empty[] = {{7, NULL, 0}};
    ck_assert_int_eq(run(fn_echo_args, a.sb.data, a.sb.size, empty, 1, &r), -1);
    buf_free(&a);
}
END_TEST

START_TEST(test_malformed_args)
{
    exec_result_t r;
    static const struct {
        const char *bytes;
        size_t len;
        const char *why;
    } cases[] = {
        {"", 0, "empty"},
        {"\x01", 1, "not a msgpack array"},
        {"\x80", 1, "not a msgpack array"},              /* a map */
        {"\xc1\x00", 2, "not a msgpack array"},
        {"\x91", 1, "truncated"},                        /* array, no item */
        {"\x91\x01\x02", 3, "trailing"},
        {"\x90\x90", 2, "trailing"},
        {"\x92\xc1\x01", 3, "invalid"},
        {"\xdd\xff\xff\xff\xff\x01", 6, "truncated"},    /* 4G items, 1 byte */
        {"\x91\xdf\xff\xff\xff\xff", 6, "truncated"},    /* 4G pairs */
        {"\x91\xdb\xff\xff\xff\xff" "ab", 8, "truncated"}, /* str32 too long */
        {"\x91\xd7\x53\x00\x00", 5, "truncated"},        /* cut ref */
        {"\x91\xd6\x53\x00\x00\x00\x01", 7, "future reference"}, /* 4-byte ref */
        {"\x91\xc7\x03\x53\x00\x00\x01", 7, "future reference"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        r.err[0] = '\0';
        ck_assert_msg(run(fn_echo_args, cases[i].bytes, cases[i].len, NULL, 0, &r) == -1,
                      "case %zu accepted", i);
        ck_assert_msg(strstr(r.err, cases[i].why) != NULL, "case %zu: '%s'", i, r.err);
        ck_assert_ptr_null(r.data);
    }
    /* NULL pointer with a length. */
    ck_assert_int_eq(run(fn_echo_args, NULL, 5, NULL, 0, &r), -1);
    /* No function. */
    ck_assert_int_eq(run(NULL, "\x90", 1, NULL, 0, &r), -1);
}
END_TEST

START_TEST(test_nesting_limit)
{
    unsigned char deep[100];
    exec_result_t r;
    /* 32 nested non-empty arrays are what msgpack-c takes... */
    for (int i = 0; i < 32; i++)
        deep[i] = 0x91;
    deep[32] = 0x01;
    ck_assert_int_eq(run(fn_echo_args, deep, 33, NULL, 0, &r), 0);
    free(r.data);
    /* ...and with 33 (even if the innermost is empty) it fails cleanly. */
    for (int i = 0; i < 33; i++)
        deep[i] = 0x91;
    deep[33] = 0x90;
    ck_assert_int_eq(run(fn_echo_args, deep, 34, NULL, 0, &r), -1);
    ck_assert_ptr_nonnull(strstr(r.err, "deep"));
    for (int i = 0; i < 99; i++)
        deep[i] = 0x91;
    deep[99] = 0x01;
    ck_assert_int_eq(run(fn_echo_args, deep, 100, NULL, 0, &r), -1);
}
END_TEST

START_TEST(test_fn_errors)
{
    exec_result_t r;
    const char *args = "\x90";
    ck_assert_int_eq(run(fn_err_msg, args, 1, NULL, 0, &r), -1);
    ck_assert_str_eq(r.err, "boom 42");
    ck_assert_ptr_null(r.data);
    ck_assert_int_eq(run(fn_err_silent, args, 1, NULL, 0, &r), -1);
    ck_assert_str_eq(r.err, "task failed");
    ck_assert_int_eq(run(fn_nothing, args, 1, NULL, 0, &r), -1);
    ck_assert_str_eq(r.err, "task packed no result");
    ck_assert_int_eq(run(fn_two, args, 1, NULL, 0, &r), -1);
    ck_assert_str_eq(r.err, "task packed more than one object");
    ck_assert_int_eq(run(fn_half, args, 1, NULL, 0, &r), -1);
    ck_assert_str_eq(r.err, "task packed an incomplete result");
    /* The argument accessors' own errors come through. */
    ck_assert_int_eq(run(fn_inc, args, 1, NULL, 0, &r), -1);
    ck_assert_str_eq(r.err, "missing argument 0 (got 0)");
    ck_assert_int_eq(run(fn_inc, "\x91\xa1x", 3, NULL, 0, &r), -1);
    ck_assert_str_eq(r.err, "argument 0: expected an integer");
}
END_TEST

START_TEST(test_ctx_and_big_result)
{
    exec_result_t r;
    volatile int cancelled = 1;
    ck_assert_int_eq(exec_task(fn_ctx, 77, "w1", &cancelled, "\x90", 1, NULL, 0, &r), 0);
    ck_assert_uint_eq(r.len, 1);
    ck_assert_uint_eq(((unsigned char *)r.data)[0], 0xc3);
    free(r.data);
    ck_assert_int_eq(run(fn_big, "\x90", 1, NULL, 0, &r), 0);
    ck_assert_uint_eq(r.len, 100000 + 5);
    ck_assert_uint_eq(((unsigned char *)r.data)[0], 0xc6);
    ck_assert_uint_eq(((unsigned char *)r.data)[100004], 'x');
    free(r.data);
}
END_TEST

START_TEST(test_scan_deps)
{
    buf_t a;
    uint64_t *ids = (uint64_t *)1;
    size_t n = 99;

    /* No references. */
    ck_assert_int_eq(exec_scan_deps("\x92\x01\xa1x", 4, &ids, &n), 0);
    ck_assert_ptr_null(ids);
    ck_assert_uint_eq(n, 0);

    /* Nested, with duplicates: distinct ids in order of first appearance. */
    buf_init(&a);
    msgpack_pack_array(&a.pk, 4);
    exec_pack_ref(&a.pk, 5);
    msgpack_pack_map(&a.pk, 1);
    exec_pack_ref(&a.pk, 0xffffffffffffffffULL);   /* as a key */
    msgpack_pack_array(&a.pk, 2);
    exec_pack_ref(&a.pk, 5);
    exec_pack_ref(&a.pk, 3);
    msgpack_pack_ext(&a.pk, 8, 0x54);              /* another ext type: ignored */
    msgpack_pack_ext_body(&a.pk, "abcdefgh", 8);
    exec_pack_ref(&a.pk, 3);
    ck_assert_int_eq(exec_scan_deps(a.sb.data, a.sb.size, &ids, &n), 0);
    ck_assert_uint_eq(n, 3);
    ck_assert_uint_eq(ids[0], 5);
    ck_assert_uint_eq(ids[1], 0xffffffffffffffffULL);
    ck_assert_uint_eq(ids[2], 3);
    free(ids);
    buf_free(&a);

    /* Many references with duplicates (the sorting path). */
    buf_init(&a);
    msgpack_pack_array(&a.pk, 300);
    for (int i = 0; i < 300; i++)
        exec_pack_ref(&a.pk, (uint64_t)(i % 100) + 1000);
    ck_assert_int_eq(exec_scan_deps(a.sb.data, a.sb.size, &ids, &n), 0);
    ck_assert_uint_eq(n, 100);
    for (size_t i = 0; i < n; i++)
        ck_assert_uint_eq(ids[i], 1000 + i);
    free(ids);
    buf_free(&a);

    /* A reference in the ext8 encoding counts as well. */
    const char ext8[] = "\x91\xc7\x08\x53\x00\x00\x00\x00\x00\x00\x01\x02";
    ck_assert_int_eq(exec_scan_deps(ext8, sizeof ext8 - 1, &ids, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(ids[0], 0x102);
    free(ids);

    /* Malformed input. */
    errno = 0;
    ck_assert_int_eq(exec_scan_deps("\x01", 1, &ids, &n), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(exec_scan_deps("\x91", 1, &ids, &n), -1);
    ck_assert_int_eq(exec_scan_deps("\x90\x00", 2, &ids, &n), -1);
    ck_assert_int_eq(exec_scan_deps("\x91\xd6\x53\x00\x00\x00\x01", 7, &ids, &n), -1);
    ck_assert_int_eq(exec_scan_deps(NULL, 0, &ids, &n), -1);
    ck_assert_ptr_null(ids);
}
END_TEST

START_TEST(test_pack_ref)
{
    buf_t a;
    buf_init(&a);
    ck_assert_int_eq(exec_pack_ref(&a.pk, 0x0102030405060708ULL), 0);
    ck_assert_uint_eq(a.sb.size, 10);
    ck_assert_mem_eq(a.sb.data, "\xd7\x53\x01\x02\x03\x04\x05\x06\x07\x08", 10);
    buf_free(&a);
}
END_TEST

/* Random corruption of valid argument buffers never crashes, never leaks,
 * and whatever is accepted gives back exactly one object. */
START_TEST(test_fuzz)
{
    buf_t a, d;
    unsigned seed = 12345;
    buf_init(&a);
    buf_init(&d);
    msgpack_pack_array(&a.pk, 4);
    msgpack_pack_int(&a.pk, 300);
    msgpack_pack_map(&a.pk, 2);
    pack_str(&a.pk, "key");
    exec_pack_ref(&a.pk, 9);
    msgpack_pack_double(&a.pk, 1.5);
    msgpack_pack_array(&a.pk, 3);
    msgpack_pack_bin(&a.pk, 4);
    msgpack_pack_bin_body(&a.pk, "abcd", 4);
    msgpack_pack_nil(&a.pk);
    msgpack_pack_int64(&a.pk, -5000000000LL);
    exec_pack_ref(&a.pk, 9);
    msgpack_pack_array(&d.pk, 2);
    msgpack_pack_true(&d.pk);
    pack_str(&d.pk, "dep");
    exec_dep_t dep = {9, d.sb.data, d.sb.size};

    size_t len = a.sb.size;
    unsigned char *m = malloc(len + 8);
    int iterations = getenv("CK_FORK") && strcmp(getenv("CK_FORK"), "no") == 0 ? 3000 : 30000;
    int accepted = 0;
    for (int it = 0; it < iterations; it++) {
        memcpy(m, a.sb.data, len);
        size_t mlen = len;
        int flips = 1 + (int)(rand_r(&seed) % 4);
        for (int f = 0; f < flips; f++)
            m[rand_r(&seed) % len] = (unsigned char)rand_r(&seed);
        if (rand_r(&seed) % 4 == 0)
            mlen = rand_r(&seed) % (len + 1);
        exec_result_t r;
        uint64_t *ids = NULL;
        size_t n = 0;
        if (exec_scan_deps(m, mlen, &ids, &n) == 0)
            free(ids);
        if (run(fn_echo_args, m, mlen, &dep, 1, &r) == 0) {
            msgpack_zone z;
            msgpack_object o;
            size_t off = 0;
            msgpack_zone_init(&z, 256);
            ck_assert_int_eq(msgpack_unpack(r.data, r.len, &off, &z, &o),
                             MSGPACK_UNPACK_SUCCESS);
            msgpack_zone_destroy(&z);
            free(r.data);
            accepted++;
        } else {
            ck_assert_ptr_null(r.data);
            ck_assert(r.err[0] != '\0');
        }
    }
    ck_assert_int_gt(accepted, 0);
    free(m);
    buf_free(&a);
    buf_free(&d);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("exec");
    TCase *tc = tcase_create("exec");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_no_deps);
    tcase_add_test(tc, test_nested_deps);
    tcase_add_test(tc, test_many_deps);
    tcase_add_test(tc, test_missing_and_bad_dep);
    tcase_add_test(tc, test_malformed_args);
    tcase_add_test(tc, test_nesting_limit);
    tcase_add_test(tc, test_fn_errors);
    tcase_add_test(tc, test_ctx_and_big_result);
    tcase_add_test(tc, test_scan_deps);
    tcase_add_test(tc, test_pack_ref);
    tcase_add_test(tc, test_fuzz);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
