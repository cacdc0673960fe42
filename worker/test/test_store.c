/*
 * test_store.c - the worker's result store in isolation: reference counts
 * (also released from another thread), LRU spilling and reading back,
 * pinning, fetched copies kept after their last user, replacement,
 * removal of spill files and of the spill directory.
 */
#define _GNU_SOURCE
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "store.h"
#include "util.h"

static char s_dir[PATH_MAX];     /* a fresh temporary directory per test */
static char s_spill[PATH_MAX];   /* s_dir/spill */

static void s_setup(void)
{
    char tmpl[] = "/tmp/shoal-test-store-XXXXXX";

    ck_assert_ptr_nonnull(mkdtemp(tmpl));
    util_fmt(s_dir, sizeof(s_dir), "%s", tmpl);
    util_fmt(s_spill, sizeof(s_spill), "%s/spill", tmpl);
}

static void s_teardown(void)
{
    char cmd[PATH_MAX + 16];

    if (s_dir[0] && util_fmt(cmd, sizeof(cmd), "rm -rf '%s'", s_dir) == 0)
        ck_assert_int_eq(system(cmd), 0);
    s_dir[0] = '\0';
}

static size_t s_files(void)
{
    DIR *d = opendir(s_spill);
    struct dirent *e;
    size_t n = 0;

    if (!d)
        return 0;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* A malloc'd buffer of n bytes filled with `fill`. */
static store_buf_t *s_buf(size_t n, int fill)
{
    void *p = malloc(n);
    store_buf_t *b;

    ck_assert_ptr_nonnull(p);
    memset(p, fill, n);
    b = store_buf_from_malloc(p, n);
    ck_assert_ptr_nonnull(b);
    return b;
}

static int s_all(const store_buf_t *b, int fill)
{
    const unsigned char *p = b->data;
    size_t i;

    for (i = 0; i < b->len; i++)
        if (p[i] != (unsigned char)fill)
            return 0;
    return 1;
}

START_TEST(store_put_get_remove)
{
    store_t *s = store_create(s_spill, 0);
    store_buf_t *b;
    store_stats_t st;

    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(store_put(s, 1, s_buf(100, 'a')), 0);
    ck_assert_int_eq(store_put(s, 2, s_buf(200, 'b')), 0);
    ck_assert(store_has(s, 1) && store_has(s, 2) && !store_has(s, 3));
    ck_assert_uint_eq(store_nbytes(s, 2), 200);
    store_stats(s, &st);
    ck_assert_uint_eq(st.entries, 2);
    ck_assert_uint_eq(st.mem_bytes, 300);

    b = store_get(s, 1);
    ck_assert_ptr_nonnull(b);
    ck_assert(s_all(b, 'a'));
    ck_assert_int_eq(b->refs, 2);
    errno = 0;
    ck_assert_ptr_null(store_get(s, 3));
    ck_assert_int_eq(errno, ENOENT);

    /* Removed while a reader holds it: the bytes stay valid for the reader. */
    ck_assert_int_eq(store_remove(s, 1), 1);
    ck_assert_int_eq(store_remove(s, 1), 0);
    ck_assert(s_all(b, 'a'));
    ck_assert_int_eq(b->refs, 1);
    store_buf_unref(b);

    /* Replacing an entry. */
    ck_assert_int_eq(store_put(s, 2, s_buf(50, 'c')), 0);
    store_stats(s, &st);
    ck_assert_uint_eq(st.entries, 1);
    ck_assert_uint_eq(st.mem_bytes, 50);
    b = store_get(s, 2);
    ck_assert(s_all(b, 'c'));
    store_buf_unref(b);

    errno = 0;
    b = s_buf(1, 'x');
    ck_assert_int_eq(store_put(s, 0, b), -1);
    ck_assert_int_eq(errno, EINVAL);
    store_buf_unref(b);
    store_destroy(s);
    store_destroy(NULL);
}
END_TEST

START_TEST(store_spill_lru_and_read_back)
{
    /* Target 250 bytes: at most two 100-byte entries stay in memory. */
    store_t *s = store_create(s_spill, 250);
    store_buf_t *b, *pinned;
    store_stats_t st;
    struct stat sb;
    uint64_t id;

    for (id = 1; id <= 5; id++)
        ck_assert_int_eq(store_put(s, id, s_buf(100, (int)('0' + id))), 0);
    /* Nothing spills before store_maintain; the spill directory does not
     * exist until the first spill. */
    ck_assert_int_eq(stat(s_spill, &sb), -1);
    /* 1 is used now: it becomes the most recent, and stays pinned. */
    pinned = store_get(s, 1);
    ck_assert_int_eq(store_maintain(s), 3);
    store_stats(s, &st);
    ck_assert_uint_eq(st.spilled, 3);
    ck_assert_uint_eq(st.mem_bytes, 200);
    ck_assert_uint_eq(st.disk_bytes, 300);
    ck_assert_uint_eq(s_files(), 3);
    /* 2, 3, 4 (least recently used) went; 5 and 1 stayed. */
    ck_assert_uint_eq(store_nbytes(s, 3), 100);
    ck_assert_int_eq(store_maintain(s), 0);

    /* Reading 2 back: right bytes, its file gone, memory over the target
     * again until the next maintain (which spills 5, not the pinned 1). */
    b = store_get(s, 2);
    ck_assert_ptr_nonnull(b);
    ck_assert(s_all(b, '2'));
    store_buf_unref(b);
    ck_assert_uint_eq(s_files(), 2);
    ck_assert_int_eq(store_maintain(s), 1);
    store_stats(s, &st);
    ck_assert_uint_eq(st.nunspills, 1);
    ck_assert_uint_eq(st.nspills, 4);
    b = store_get(s, 5);
    ck_assert(s_all(b, '5'));
    store_buf_unref(b);

    /* 1 was never spilled: it was pinned all along. */
    ck_assert_int_eq(pinned->refs, 2);
    ck_assert(s_all(pinned, '1'));
    store_buf_unref(pinned);

    /* Removing spilled entries deletes their files; destroy removes the
     * rest and the directory. */
    ck_assert_int_eq(store_remove(s, 3), 1);
    ck_assert_uint_eq(s_files(), 1);
    store_destroy(s);
    ck_assert_int_eq(stat(s_spill, &sb), -1);
    ck_assert_int_eq(errno, ENOENT);
}
END_TEST

START_TEST(store_damaged_spill_file)
{
    store_t *s = store_create(s_spill, 10);
    char path[PATH_MAX];
    FILE *f;

    ck_assert_int_eq(store_put(s, 7, s_buf(100, 'z')), 0);
    ck_assert_int_eq(store_maintain(s), 1);
    util_fmt(path, sizeof(path), "%s/7", s_spill);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("short", f);
    fclose(f);
    errno = 0;
    ck_assert_ptr_null(store_get(s, 7));
    ck_assert_int_eq(errno, EIO);
    /* The entry is gone: the next user fetches it elsewhere. */
    ck_assert(!store_has(s, 7));
    store_destroy(s);
}
END_TEST

START_TEST(store_entries_outlive_their_users)
{
    store_t *s = store_create(s_spill, 0);
    store_buf_t *b1, *b2, *c;

    /* Entries (computed, PUT, fetched copies alike) stay after the last
     * reference taken from them is dropped: only store_remove (the
     * scheduler's FREE) drops them. */
    ck_assert_int_eq(store_put(s, 1, s_buf(10, 'f')), 0);
    b1 = store_get(s, 1);
    b2 = store_get(s, 1);
    store_buf_unref(b1);
    store_buf_unref(b2);
    ck_assert(store_has(s, 1));
    ck_assert_int_eq(store_remove(s, 1), 1);
    ck_assert(!store_has(s, 1));
    ck_assert_int_eq(store_remove(s, 1), 0);

    /* A reference to a removed entry keeps its bytes, and a new entry under
     * the same id is independent of it. */
    ck_assert_int_eq(store_put(s, 3, s_buf(10, 'o')), 0);
    b1 = store_get(s, 3);
    ck_assert_int_eq(store_remove(s, 3), 1);
    ck_assert_int_eq(store_put(s, 3, s_buf(10, 'n')), 0);
    ck_assert(s_all(b1, 'o'));
    store_buf_unref(b1);
    c = store_get(s, 3);
    ck_assert(s_all(c, 'n'));
    store_buf_unref(c);
    ck_assert(store_has(s, 3));
    store_destroy(s);
}
END_TEST

/* Buffers from received ZeroMQ frames, released on other threads. */
static void *s_unref_thread(void *arg)
{
    store_buf_unref(arg);
    return NULL;
}

START_TEST(store_zmsg_buffers_and_threads)
{
    store_t *s = store_create(s_spill, 0);
    zmq_msg_t msg;
    store_buf_t *b, *r;
    pthread_t t[8];
    int i;

    ck_assert_int_eq(zmq_msg_init_size(&msg, 1 << 20), 0);
    memset(zmq_msg_data(&msg), 'q', 1 << 20);
    b = store_buf_from_zmsg(&msg);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(zmq_msg_size(&msg), 0);    /* moved out */
    zmq_msg_close(&msg);
    ck_assert_uint_eq(b->len, 1 << 20);
    ck_assert(s_all(b, 'q'));
    ck_assert_int_eq(store_put(s, 9, b), 0);
    /* Eight references dropped concurrently, as ZeroMQ's I/O thread and
     * executors do; the store's own goes last. */
    for (i = 0; i < 8; i++) {
        r = store_get(s, 9);
        ck_assert_int_eq(pthread_create(&t[i], NULL, s_unref_thread, r), 0);
    }
    for (i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    r = store_get(s, 9);
    ck_assert_int_eq(r->refs, 2);
    store_buf_zmq_free(r->data, r);
    ck_assert_int_eq(store_remove(s, 9), 1);
    store_destroy(s);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("store");

    tcase_add_checked_fixture(tc, s_setup, s_teardown);
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, store_put_get_remove);
    tcase_add_test(tc, store_spill_lru_and_read_back);
    tcase_add_test(tc, store_damaged_spill_file);
    tcase_add_test(tc, store_entries_outlive_their_users);
    tcase_add_test(tc, store_zmsg_buffers_and_threads);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(s_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
