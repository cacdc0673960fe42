/* test_u64map.c - the hash map against a simple reference, plus edge cases. */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "u64map.h"

static uint64_t s_rng = 0x9e3779b97f4a7c15ULL;
static uint64_t s_rand(void)
{
    /* xorshift64*: deterministic, so failures reproduce. */
    s_rng ^= s_rng >> 12;
    s_rng ^= s_rng << 25;
    s_rng ^= s_rng >> 27;
    return s_rng * 2685821657736338717ULL;
}

START_TEST(test_basic)
{
    u64map_t *m = u64map_create(0);
    ck_assert_ptr_nonnull(m);
    ck_assert_uint_eq(u64map_size(m), 0);
    ck_assert_ptr_null(u64map_get(m, 1));
    ck_assert_int_eq(u64map_put(m, 1, (void *)0x11), 0);
    ck_assert_int_eq(u64map_put(m, 2, (void *)0x22), 0);
    ck_assert_ptr_eq(u64map_get(m, 1), (void *)0x11);
    ck_assert_ptr_eq(u64map_get(m, 2), (void *)0x22);
    ck_assert_uint_eq(u64map_size(m), 2);
    /* Replace keeps the size. */
    ck_assert_int_eq(u64map_put(m, 1, (void *)0x33), 0);
    ck_assert_ptr_eq(u64map_get(m, 1), (void *)0x33);
    ck_assert_uint_eq(u64map_size(m), 2);
    ck_assert_ptr_eq(u64map_del(m, 1), (void *)0x33);
    ck_assert_ptr_null(u64map_del(m, 1));
    ck_assert_ptr_null(u64map_get(m, 1));
    ck_assert_uint_eq(u64map_size(m), 1);
    /* Key 0 is reserved. */
    errno = 0;
    ck_assert_int_eq(u64map_put(m, 0, (void *)1), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(u64map_get(m, 0));
    ck_assert_ptr_null(u64map_del(m, 0));
    /* Max key works. */
    ck_assert_int_eq(u64map_put(m, UINT64_MAX, (void *)7), 0);
    ck_assert_ptr_eq(u64map_get(m, UINT64_MAX), (void *)7);
    u64map_destroy(m);
    u64map_destroy(NULL);
    errno = 0;
    ck_assert_ptr_null(u64map_create(SIZE_MAX / 2));
    ck_assert_int_eq(errno, ENOMEM);
    ck_assert_uint_eq(u64map_size(NULL), 0);
}
END_TEST

/* Task-id-like keys, (client << 40) | n, with growth from a tiny table. */
START_TEST(test_sequential_grow)
{
    u64map_t *m = u64map_create(1);
    const uint64_t n = 200000;
    for (uint64_t i = 1; i <= n; i++)
        ck_assert_int_eq(u64map_put(m, (3ULL << 40) | i, (void *)(uintptr_t)i), 0);
    ck_assert_uint_eq(u64map_size(m), n);
    for (uint64_t i = 1; i <= n; i++)
        ck_assert_ptr_eq(u64map_get(m, (3ULL << 40) | i), (void *)(uintptr_t)i);
    ck_assert_ptr_null(u64map_get(m, (3ULL << 40) | (n + 1)));
    for (uint64_t i = 1; i <= n; i += 2)
        ck_assert_ptr_eq(u64map_del(m, (3ULL << 40) | i), (void *)(uintptr_t)i);
    ck_assert_uint_eq(u64map_size(m), n / 2);
    for (uint64_t i = 1; i <= n; i++) {
        void *v = u64map_get(m, (3ULL << 40) | i);
        if (i % 2)
            ck_assert_ptr_null(v);
        else
            ck_assert_ptr_eq(v, (void *)(uintptr_t)i);
    }
    u64map_destroy(m);
}
END_TEST

/* 100k random insert/replace/delete/lookup operations over a small key space
 * (so that deletes hit and probe runs collide), checked against a direct
 * array after every step and by a full iteration at checkpoints. */
START_TEST(test_random_vs_reference)
{
    enum { KEYS = 4096, OPS = 100000 };
    uintptr_t *ref = calloc(KEYS + 1, sizeof *ref); /* 0 = absent */
    uint64_t *keys = calloc(KEYS + 1, sizeof *keys);
    ck_assert_ptr_nonnull(ref);
    /* Keys: random 64-bit values, plus some that collide in low bits. */
    for (size_t i = 1; i <= KEYS; i++) {
        uint64_t k;
        do
            k = (i % 4 == 0) ? (s_rand() << 20) : s_rand();
        while (k == 0);
        keys[i] = k;
    }
    u64map_t *m = u64map_create(8);
    size_t size = 0;
    for (int op = 0; op < OPS; op++) {
        size_t i = 1 + s_rand() % KEYS;
        uint64_t r = s_rand() % 10;
        if (r < 5) {
            uintptr_t v = (uintptr_t)(s_rand() | 1);
            ck_assert_int_eq(u64map_put(m, keys[i], (void *)v), 0);
            if (!ref[i])
                size++;
            ref[i] = v;
        } else if (r < 9) {
            void *got = u64map_del(m, keys[i]);
            ck_assert_ptr_eq(got, (void *)ref[i]);
            if (ref[i])
                size--;
            ref[i] = 0;
        } else {
            ck_assert_ptr_eq(u64map_get(m, keys[i]), (void *)ref[i]);
        }
        ck_assert_uint_eq(u64map_size(m), size);
        if (op % 10000 == 0 || op == OPS - 1) {
            for (size_t j = 1; j <= KEYS; j++)
                ck_assert_ptr_eq(u64map_get(m, keys[j]), (void *)ref[j]);
            size_t pos = 0, seen = 0;
            uint64_t k;
            void *v;
            while (u64map_next(m, &pos, &k, &v)) {
                seen++;
                size_t j;
                for (j = 1; j <= KEYS && keys[j] != k; j++)
                    ;
                ck_assert_uint_le(j, KEYS);
                ck_assert_ptr_eq(v, (void *)ref[j]);
            }
            ck_assert_uint_eq(seen, size);
        }
    }
    /* Delete everything; the map must end empty. */
    for (size_t j = 1; j <= KEYS; j++)
        ck_assert_ptr_eq(u64map_del(m, keys[j]), (void *)ref[j]);
    ck_assert_uint_eq(u64map_size(m), 0);
    size_t pos = 0;
    ck_assert_int_eq(u64map_next(m, &pos, NULL, NULL), 0);
    u64map_destroy(m);
    free(ref);
    free(keys);
}
END_TEST

/* Heavy churn at a steady size: with tombstones this would degrade or fill
 * the table; with backward-shift deletion it stays correct and fast. */
START_TEST(test_churn)
{
    u64map_t *m = u64map_create(1000);
    uint64_t next = 1, oldest = 1;
    for (; next <= 1000; next++)
        ck_assert_int_eq(u64map_put(m, next, (void *)(uintptr_t)next), 0);
    for (int i = 0; i < 500000; i++) {
        ck_assert_ptr_eq(u64map_del(m, oldest), (void *)(uintptr_t)oldest);
        oldest++;
        ck_assert_int_eq(u64map_put(m, next, (void *)(uintptr_t)next), 0);
        next++;
    }
    ck_assert_uint_eq(u64map_size(m), 1000);
    for (uint64_t k = oldest; k < next; k++)
        ck_assert_ptr_eq(u64map_get(m, k), (void *)(uintptr_t)k);
    ck_assert_ptr_null(u64map_get(m, oldest - 1));
    u64map_destroy(m);
}
END_TEST

START_TEST(test_iterate_collect_delete)
{
    u64map_t *m = u64map_create(4);
    for (uint64_t k = 1; k <= 100; k++)
        u64map_put(m, k * 7919, (void *)(uintptr_t)k);
    uint64_t keys[100];
    size_t n = 0, pos = 0;
    uint64_t k;
    void *v;
    while (u64map_next(m, &pos, &k, &v)) {
        ck_assert_uint_lt(n, 100);
        ck_assert_uint_eq(k, (uintptr_t)v * 7919);
        keys[n++] = k;
    }
    ck_assert_uint_eq(n, 100);
    for (size_t i = 0; i < n; i++)
        ck_assert_ptr_nonnull(u64map_del(m, keys[i]));
    ck_assert_uint_eq(u64map_size(m), 0);
    u64map_destroy(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("u64map");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_basic);
    tcase_add_test(tc, test_sequential_grow);
    tcase_add_test(tc, test_random_vs_reference);
    tcase_add_test(tc, test_churn);
    tcase_add_test(tc, test_iterate_collect_delete);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
