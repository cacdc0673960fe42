/*
 * test_tmap.c - unit tests of the scheduler's task-id map (tmap.c), against
 * a plain model: runs of consecutive ids as clients make them, random ids,
 * ids chosen to land in one probe run, growth, deletion in every order,
 * iteration.
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tmap.h"

static uint64_t s_rs = 0x9e3779b97f4a7c15ULL;

static uint64_t s_rand(void)
{
    s_rs ^= s_rs << 13;
    s_rs ^= s_rs >> 7;
    s_rs ^= s_rs << 17;
    return s_rs;
}

/* The value stored for a key: derived from it, so a lookup can be checked. */
static void *s_val(uint64_t key)
{
    return (void *)(uintptr_t)(key * 2 + 1);
}

/* Every key of keys[0..n) with present[i] set is found with its value, the
 * others are not, and iteration yields exactly the present ones. */
static void s_check(tmap_t *m, const uint64_t *keys, const char *present, size_t n)
{
    size_t want = 0;
    for (size_t i = 0; i < n; i++) {
        if (present[i]) {
            want++;
            ck_assert_ptr_eq(tmap_get(m, keys[i]), s_val(keys[i]));
        } else {
            ck_assert_ptr_null(tmap_get(m, keys[i]));
        }
    }
    ck_assert_uint_eq(tmap_size(m), want);
    size_t pos = 0, seen = 0;
    uint64_t k;
    void *v;
    while (tmap_next(m, &pos, &k, &v)) {
        ck_assert_ptr_eq(v, s_val(k));
        seen++;
    }
    ck_assert_uint_eq(seen, want);
}

/* Insert all keys, delete a random half, re-insert some, delete all, with
 * the model checked along the way. */
static void s_exercise(const uint64_t *keys, size_t n)
{
    tmap_t *m = tmap_create(4);
    ck_assert_ptr_nonnull(m);
    char *present = calloc(n, 1);
    ck_assert_ptr_nonnull(present);
    for (size_t i = 0; i < n; i++) {
        tmap_prefetch(m, keys[i]);
        ck_assert_int_eq(tmap_put(m, keys[i], s_val(keys[i])), 0);
        present[i] = 1;
    }
    s_check(m, keys, present, n);
    /* Replacing keeps the size. */
    ck_assert_int_eq(tmap_put(m, keys[0], (void *)1), 0);
    ck_assert_ptr_eq(tmap_get(m, keys[0]), (void *)1);
    ck_assert_int_eq(tmap_put(m, keys[0], s_val(keys[0])), 0);
    ck_assert_uint_eq(tmap_size(m), n);
    for (size_t i = 0; i < n; i++) {
        if (s_rand() & 1) {
            ck_assert_ptr_eq(tmap_del(m, keys[i]), s_val(keys[i]));
            present[i] = 0;
            ck_assert_ptr_null(tmap_del(m, keys[i]));
        }
    }
    s_check(m, keys, present, n);
    for (size_t i = 0; i < n; i++) {
        if (!present[i] && (s_rand() & 1)) {
            ck_assert_int_eq(tmap_put(m, keys[i], s_val(keys[i])), 0);
            present[i] = 1;
        }
    }
    s_check(m, keys, present, n);
    /* Delete the rest, in reverse order (the other direction of the
     * backward shift). */
    for (size_t i = n; i-- > 0;) {
        if (present[i]) {
            ck_assert_ptr_eq(tmap_del(m, keys[i]), s_val(keys[i]));
            present[i] = 0;
        }
    }
    s_check(m, keys, present, n);
    ck_assert_uint_eq(tmap_size(m), 0);
    free(present);
    tmap_destroy(m);
}

START_TEST(test_consecutive_ids)
{
    /* Two clients' runs of ids, interleaved. */
    enum { N = 20000 };
    uint64_t *keys = malloc(2 * N * sizeof *keys);
    ck_assert_ptr_nonnull(keys);
    for (size_t i = 0; i < N; i++) {
        keys[2 * i] = (1ull << 40) | (i + 1);
        keys[2 * i + 1] = (2ull << 40) | (i + 1);
    }
    s_exercise(keys, 2 * N);
    free(keys);
}
END_TEST

START_TEST(test_random_ids)
{
    enum { N = 20000 };
    uint64_t *keys = malloc(N * sizeof *keys);
    ck_assert_ptr_nonnull(keys);
    for (size_t i = 0; i < N; i++) {
        do
            keys[i] = s_rand();
        while (keys[i] == 0);
    }
    s_exercise(keys, N);
    free(keys);
}
END_TEST

START_TEST(test_colliding_ids)
{
    /* Ids that differ only above the bits of any table this size, and ids
     * of the same group of four: still correct (only slower). */
    enum { N = 4000 };
    uint64_t *keys = malloc(N * sizeof *keys);
    ck_assert_ptr_nonnull(keys);
    for (size_t i = 0; i < N / 2; i++)
        keys[i] = ((uint64_t)(i + 1) << 32) | 5;
    for (size_t i = N / 2; i < N; i++)
        keys[i] = ((uint64_t)(i + 1) << 40) | (i & 3);
    s_exercise(keys, N);
    free(keys);
}
END_TEST

START_TEST(test_bad_arguments)
{
    tmap_t *m = tmap_create(0);
    ck_assert_ptr_nonnull(m);
    errno = 0;
    ck_assert_int_eq(tmap_put(m, 0, (void *)1), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(tmap_get(m, 0));
    ck_assert_ptr_null(tmap_del(m, 0));
    ck_assert_ptr_null(tmap_get(m, 42));
    ck_assert_ptr_null(tmap_del(m, 42));
    tmap_prefetch(m, 0);
    tmap_prefetch(NULL, 1);
    ck_assert_ptr_null(tmap_get(NULL, 1));
    ck_assert_uint_eq(tmap_size(NULL), 0);
    size_t pos = 0;
    ck_assert_int_eq(tmap_next(m, &pos, NULL, NULL), 0);
    tmap_destroy(m);
    tmap_destroy(NULL);
    errno = 0;
    ck_assert_ptr_null(tmap_create((size_t)-1));
    ck_assert_int_eq(errno, ENOMEM);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("scheduler_tmap");
    TCase *tc = tcase_create("tmap");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_consecutive_ids);
    tcase_add_test(tc, test_random_ids);
    tcase_add_test(tc, test_colliding_ids);
    tcase_add_test(tc, test_bad_arguments);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
