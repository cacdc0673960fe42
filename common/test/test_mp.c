/* test_mp.c - validated MessagePack getters and packing helpers. */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mp.h"

/* Pack with a callback, unpack into a zone: the round trip every message
 * takes. */
typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_zone zone;
    msgpack_object obj;
} rt_t;

static void rt_init(rt_t *r)
{
    msgpack_sbuffer_init(&r->sb);
    msgpack_packer_init(&r->pk, &r->sb, msgpack_sbuffer_write);
    msgpack_zone_init(&r->zone, 1024);
}

static const msgpack_object *rt_unpack(rt_t *r)
{
    size_t off = 0;
    ck_assert_int_eq(msgpack_unpack(r->sb.data, r->sb.size, &off, &r->zone, &r->obj),
                     MSGPACK_UNPACK_SUCCESS);
    ck_assert_uint_eq(off, r->sb.size);
    return &r->obj;
}

static void rt_free(rt_t *r)
{
    msgpack_sbuffer_destroy(&r->sb);
    msgpack_zone_destroy(&r->zone);
}

START_TEST(test_integers)
{
    rt_t r;
    rt_init(&r);
    msgpack_pack_array(&r.pk, 5);
    msgpack_pack_uint64(&r.pk, UINT64_MAX);
    msgpack_pack_int64(&r.pk, INT64_MIN);
    msgpack_pack_int(&r.pk, 42);
    msgpack_pack_int(&r.pk, -1);
    msgpack_pack_double(&r.pk, 2.5);
    const msgpack_object *items;
    size_t n;
    ck_assert_int_eq(mp_array(rt_unpack(&r), &items, &n), 0);
    ck_assert_uint_eq(n, 5);

    uint64_t u;
    int64_t i;
    double d;
    ck_assert_int_eq(mp_u64(&items[0], &u), 0);
    ck_assert_uint_eq(u, UINT64_MAX);
    ck_assert_int_eq(mp_i64(&items[0], &i), -1); /* does not fit */
    ck_assert_int_eq(mp_i64(&items[1], &i), 0);
    ck_assert_int_eq(i, INT64_MIN);
    ck_assert_int_eq(mp_u64(&items[1], &u), -1); /* negative */
    ck_assert_int_eq(mp_u64(&items[2], &u), 0);
    ck_assert_uint_eq(u, 42);
    ck_assert_int_eq(mp_i64(&items[2], &i), 0);
    ck_assert_int_eq(i, 42);
    ck_assert_int_eq(mp_i64(&items[3], &i), 0);
    ck_assert_int_eq(i, -1);
    ck_assert_int_eq(mp_u64(&items[3], &u), -1);
    ck_assert_int_eq(mp_f64(&items[4], &d), 0);
    ck_assert(d == 2.5);
    ck_assert_int_eq(mp_f64(&items[2], &d), 0);
    ck_assert(d == 42.0);
    ck_assert_int_eq(mp_f64(&items[3], &d), 0);
    ck_assert(d == -1.0);
    ck_assert_int_eq(mp_u64(&items[4], &u), -1); /* float is not an int */
    ck_assert_int_eq(mp_u64(NULL, &u), -1);
    rt_free(&r);
}
END_TEST

START_TEST(test_type_mismatch)
{
    rt_t r;
    rt_init(&r);
    msgpack_pack_array(&r.pk, 4);
    msgpack_pack_nil(&r.pk);
    msgpack_pack_true(&r.pk);
    mp_pack_cstr(&r.pk, "abc");
    msgpack_pack_map(&r.pk, 0);
    const msgpack_object *it;
    size_t n;
    ck_assert_int_eq(mp_array(rt_unpack(&r), &it, &n), 0);
    ck_assert_uint_eq(n, 4);
    uint64_t u;
    int64_t i;
    double d;
    int b;
    const char *s;
    size_t sl;
    const void *p;
    char buf[8];
    ck_assert(mp_is_nil(&it[0]));
    ck_assert(!mp_is_nil(&it[1]));
    ck_assert(!mp_is_nil(NULL));
    for (int k = 0; k < 4; k++) {
        ck_assert_int_eq(mp_u64(&it[k], &u), -1);
        ck_assert_int_eq(mp_i64(&it[k], &i), -1);
        ck_assert_int_eq(mp_f64(&it[k], &d), -1);
        if (k != 1)
            ck_assert_int_eq(mp_bool(&it[k], &b), -1);
        if (k != 2) {
            ck_assert_int_eq(mp_str(&it[k], &s, &sl), -1);
            ck_assert_int_eq(mp_bin(&it[k], &p, &sl), -1);
            ck_assert_int_eq(mp_strcpy(&it[k], buf, sizeof buf), -1);
            ck_assert_ptr_null(mp_strdup(&it[k]));
            ck_assert(!mp_str_eq(&it[k], "abc"));
        }
        const msgpack_object *a;
        ck_assert_int_eq(mp_array(&it[k], &a, &n), -1);
        ck_assert_ptr_null(mp_map_get(&it[k], "x"));
    }
    ck_assert_int_eq(mp_bool(&it[1], &b), 0);
    ck_assert_int_eq(b, 1);
    rt_free(&r);
}
END_TEST

START_TEST(test_strings)
{
    rt_t r;
    rt_init(&r);
    static const uint8_t blob[] = {0, 1, 2, 255};
    msgpack_pack_array(&r.pk, 5);
    mp_pack_cstr(&r.pk, "hello");
    mp_pack_cstr(&r.pk, NULL);
    mp_pack_strn(&r.pk, "a\0b", 3);
    mp_pack_bin(&r.pk, blob, sizeof blob);
    mp_pack_cstr(&r.pk, "");
    const msgpack_object *it;
    size_t n;
    ck_assert_int_eq(mp_array(rt_unpack(&r), &it, &n), 0);
    ck_assert_uint_eq(n, 5);

    const char *s;
    size_t sl;
    ck_assert_int_eq(mp_str(&it[0], &s, &sl), 0);
    ck_assert_uint_eq(sl, 5);
    ck_assert_mem_eq(s, "hello", 5);
    ck_assert(mp_str_eq(&it[0], "hello"));
    ck_assert(!mp_str_eq(&it[0], "hell"));
    ck_assert(!mp_str_eq(&it[0], "hello!"));
    ck_assert(mp_is_nil(&it[1]));
    ck_assert_ptr_null(mp_strdup(&it[1]));

    char buf[6];
    ck_assert_int_eq(mp_strcpy(&it[0], buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "hello");
    ck_assert_int_eq(mp_strcpy(&it[0], buf, 5), -1); /* no room for NUL */
    char *dup = mp_strdup(&it[0]);
    ck_assert_str_eq(dup, "hello");
    free(dup);

    ck_assert_int_eq(mp_str(&it[2], &s, &sl), 0);
    ck_assert_uint_eq(sl, 3);
    ck_assert_mem_eq(s, "a\0b", 3);

    const void *p;
    ck_assert_int_eq(mp_bin(&it[3], &p, &sl), 0);
    ck_assert_uint_eq(sl, 4);
    ck_assert_mem_eq(p, blob, 4);
    ck_assert_int_eq(mp_str(&it[3], &s, &sl), -1); /* bin is not a str */
    ck_assert_int_eq(mp_bin(&it[0], &p, &sl), 0);  /* str is accepted as bin */
    ck_assert_uint_eq(sl, 5);

    ck_assert_int_eq(mp_strcpy(&it[4], buf, 1), 0);
    ck_assert_str_eq(buf, "");
    ck_assert(mp_str_eq(&it[4], ""));
    dup = mp_strdup(&it[4]);
    ck_assert_str_eq(dup, "");
    free(dup);
    rt_free(&r);
}
END_TEST

START_TEST(test_map_get)
{
    rt_t r;
    rt_init(&r);
    msgpack_pack_map(&r.pk, 4);
    mp_pack_cstr(&r.pk, "role");
    mp_pack_cstr(&r.pk, "worker");
    msgpack_pack_int(&r.pk, 7); /* non-string key: skipped */
    msgpack_pack_int(&r.pk, 8);
    mp_pack_cstr(&r.pk, "pid");
    msgpack_pack_int(&r.pk, 1234);
    mp_pack_cstr(&r.pk, "rolex");
    msgpack_pack_int(&r.pk, 1);
    const msgpack_object *o = rt_unpack(&r);
    ck_assert(mp_str_eq(mp_map_get(o, "role"), "worker"));
    uint64_t pid;
    ck_assert_int_eq(mp_u64(mp_map_get(o, "pid"), &pid), 0);
    ck_assert_uint_eq(pid, 1234);
    ck_assert_ptr_null(mp_map_get(o, "rol"));
    ck_assert_ptr_null(mp_map_get(o, "missing"));
    ck_assert_ptr_null(mp_map_get(o, ""));
    ck_assert_ptr_null(mp_map_get(NULL, "role"));
    /* NULL objects from a missed lookup flow safely into getters. */
    ck_assert_int_eq(mp_u64(mp_map_get(o, "nope"), &pid), -1);
    rt_free(&r);
}
END_TEST

START_TEST(test_pack_raw)
{
    /* Pack an inner object, then splice its bytes into an outer array. */
    msgpack_sbuffer inner;
    msgpack_packer ipk;
    msgpack_sbuffer_init(&inner);
    msgpack_packer_init(&ipk, &inner, msgpack_sbuffer_write);
    msgpack_pack_array(&ipk, 2);
    msgpack_pack_int(&ipk, 1);
    mp_pack_cstr(&ipk, "two");

    rt_t r;
    rt_init(&r);
    msgpack_pack_array(&r.pk, 2);
    ck_assert_int_eq(mp_pack_raw(&r.pk, inner.data, inner.size), 0);
    msgpack_pack_int(&r.pk, 3);
    errno = 0;
    ck_assert_int_eq(mp_pack_raw(&r.pk, "", 0), -1);
    ck_assert_int_eq(errno, EINVAL);
    const msgpack_object *it, *sub;
    size_t n, sn;
    ck_assert_int_eq(mp_array(rt_unpack(&r), &it, &n), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(mp_array(&it[0], &sub, &sn), 0);
    ck_assert_uint_eq(sn, 2);
    ck_assert(mp_str_eq(&sub[1], "two"));
    int64_t v;
    ck_assert_int_eq(mp_i64(&it[1], &v), 0);
    ck_assert_int_eq(v, 3);
    msgpack_sbuffer_destroy(&inner);
    rt_free(&r);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("mp");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_integers);
    tcase_add_test(tc, test_type_mismatch);
    tcase_add_test(tc, test_strings);
    tcase_add_test(tc, test_map_get);
    tcase_add_test(tc, test_pack_raw);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
