/*
 * test_pool_inline.c - the pool's inline runs of tiny jobs (pool.c): when a
 * lone job runs on the submitting thread, and every rule that keeps a
 * function that is not reliably tiny off it.
 */
#include <check.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pool.h"
#include "util.h"

typedef struct tjob {
    pool_job_t pj;           /* first: a pool_job_t * is a tjob_t * */
    unsigned sleep_us;       /* how long the run takes */
    int block;               /* run until s_gate opens */
    pthread_t ran_on;
    int runs;
} tjob_t;

/* The tests use a generous bound for "tiny" so that they hold on a busy
 * machine and under valgrind; slow and long runs sleep past it. */
#define TINY_US 20000u
#define SLOW_US (4 * TINY_US)
#define BAN_US (POOL_INLINE_BAN_FACTOR * TINY_US + 10000)

static volatile int s_gate;
static int s_notifies;

/* Two task functions: the pool only uses them as keys. */
static int f_tiny(shoal_task_ctx_t *c, const msgpack_object *a, msgpack_packer *o)
{
    (void)c, (void)a, (void)o;
    return 0;
}

static int f_other(shoal_task_ctx_t *c, const msgpack_object *a, msgpack_packer *o)
{
    (void)c, (void)a, (void)o;
    return 0;
}

/* The run reports its duration, as the worker's does. */
static void s_run(pool_job_t *pj, void *arg)
{
    tjob_t *t = (tjob_t *)pj;
    (void)arg;
    double t0 = util_now();
    t->ran_on = pthread_self();
    __atomic_add_fetch(&t->runs, 1, __ATOMIC_RELAXED);
    if (t->block)
        while (!__atomic_load_n(&s_gate, __ATOMIC_ACQUIRE))
            usleep(500);
    if (t->sleep_us)
        usleep(t->sleep_us);
    pj->duration_us = (uint64_t)((util_now() - t0) * 1e6);
}

static void s_notify(void *arg)
{
    (void)arg;
    __atomic_add_fetch(&s_notifies, 1, __ATOMIC_RELAXED);
}

/* Wait (up to 10 s) for this job to come back; 1 if it did. */
static int s_wait_back(pool_t *p, tjob_t *t)
{
    double end = util_now() + 10;
    while (util_now() < end) {
        for (pool_job_t *j = pool_take_done(p); j; j = j->next)
            if (j == &t->pj)
                return 1;
        usleep(100);
    }
    return 0;
}

/* Submit one job of fn and wait for it; 1 if it ran inline. */
static int s_one(pool_t *p, shoal_task_fn fn, unsigned sleep_us)
{
    tjob_t t;
    memset(&t, 0, sizeof t);
    t.pj.fn = fn;
    t.sleep_us = sleep_us;
    uint64_t before = pool_inlined(p);
    ck_assert_int_eq(pool_submit(p, &t.pj), 1);
    int inl = pool_inlined(p) > before;
    if (inl) {
        /* Already done, on this thread, and on the done list. */
        ck_assert_int_eq(t.pj.state, POOL_JOB_DONE);
        ck_assert(pthread_equal(t.ran_on, pthread_self()));
        ck_assert_ptr_eq(pool_take_done(p), &t.pj);
    } else {
        ck_assert(s_wait_back(p, &t));
        ck_assert(!pthread_equal(t.ran_on, pthread_self()));
    }
    ck_assert_int_eq(t.runs, 1);
    return inl;
}

static void s_qualify(pool_t *p, shoal_task_fn fn);

/* Tiny runs until fn runs inline again (no lower bound: the streak may still
 * be intact). */
static void s_qualify_again(pool_t *p, shoal_task_fn fn)
{
    int n = 0;
    while (!s_one(p, fn, 0)) {
        n++;
        ck_assert_int_le(n, 4 * POOL_INLINE_STREAK);
    }
}

/* Run fn tiny until it runs inline: that takes POOL_INLINE_STREAK runs on
 * the executors first, more only if the machine preempted an executor in
 * the middle of a run (the run then counts as long and the streak starts
 * again), so allow a few such restarts. */
static void s_qualify(pool_t *p, shoal_task_fn fn)
{
    int n = 0;
    while (!s_one(p, fn, 0)) {
        n++;
        ck_assert_int_le(n, 4 * POOL_INLINE_STREAK);
    }
    ck_assert_int_ge(n, POOL_INLINE_STREAK);
}

START_TEST(test_inline_after_streak)
{
    pool_t *p = pool_create(1, s_run, s_notify, NULL);
    ck_assert_ptr_nonnull(p);
    pool_set_inline(p, TINY_US);
    s_qualify(p, f_tiny);
    int n0 = __atomic_load_n(&s_notifies, __ATOMIC_RELAXED);
    ck_assert_int_eq(s_one(p, f_tiny, 0), 1);
    /* The loop is told about the inline job as about any other. */
    ck_assert_int_eq(__atomic_load_n(&s_notifies, __ATOMIC_RELAXED), n0 + 1);
    ck_assert_uint_eq(pool_inlined(p), 2);
    /* Another function has its own record. */
    ck_assert_int_eq(s_one(p, f_other, 0), 0);
    /* No function, no inline run. */
    tjob_t t;
    memset(&t, 0, sizeof t);
    ck_assert_int_eq(pool_submit(p, &t.pj), 1);
    ck_assert(s_wait_back(p, &t));
    ck_assert(!pthread_equal(t.ran_on, pthread_self()));
    /* Turned off, then on again. */
    pool_set_inline(p, 0);
    ck_assert_int_eq(s_one(p, f_tiny, 0), 0);
    pool_set_inline(p, TINY_US);
    s_qualify_again(p, f_tiny);
    pool_destroy(p);
}
END_TEST

START_TEST(test_not_inline_when_busy_or_batch)
{
    pool_t *p = pool_create(2, s_run, s_notify, NULL);
    ck_assert_ptr_nonnull(p);
    pool_set_inline(p, TINY_US);
    s_qualify(p, f_tiny);
    /* Something else is running: the tiny job waits its turn like others. */
    tjob_t blocker;
    memset(&blocker, 0, sizeof blocker);
    blocker.pj.fn = f_other;
    blocker.block = 1;
    __atomic_store_n(&s_gate, 0, __ATOMIC_RELEASE);
    ck_assert_int_eq(pool_submit(p, &blocker.pj), 1);
    double end = util_now() + 10;
    while (pool_running(p) < 1 && util_now() < end)
        usleep(100);
    ck_assert_uint_eq(pool_running(p), 1);
    ck_assert_int_eq(s_one(p, f_tiny, 0), 0);
    __atomic_store_n(&s_gate, 1, __ATOMIC_RELEASE);
    ck_assert(s_wait_back(p, &blocker));
    /* A batch of two goes to the executors. */
    tjob_t two[2];
    memset(two, 0, sizeof two);
    two[0].pj.fn = two[1].pj.fn = f_tiny;
    two[0].pj.next = &two[1].pj;
    ck_assert_int_eq(pool_submit(p, &two[0].pj), 2);
    end = util_now() + 10;
    while ((pool_queued(p) || pool_running(p)) && util_now() < end)
        usleep(100);
    ck_assert_int_eq(two[0].runs, 1);
    ck_assert_int_eq(two[1].runs, 1);
    ck_assert(!pthread_equal(two[0].ran_on, pthread_self()));
    ck_assert(!pthread_equal(two[1].ran_on, pthread_self()));
    ck_assert_uint_eq(pool_inlined(p), 1);
    /* Idle again: inline (after a new streak if the machine preempted one
     * of the batch's runs). */
    while (pool_take_done(p))
        ;
    s_qualify_again(p, f_tiny);
    pool_destroy(p);
}
END_TEST

START_TEST(test_slow_run_requalifies)
{
    pool_t *p = pool_create(1, s_run, s_notify, NULL);
    ck_assert_ptr_nonnull(p);
    pool_set_inline(p, TINY_US);
    s_qualify(p, f_tiny);
    /* Inline, but longer than "tiny" (and below the ban): the function must
     * show a new streak before it runs inline again. */
    ck_assert_int_eq(s_one(p, f_tiny, SLOW_US), 1);
    s_qualify(p, f_tiny);
    pool_destroy(p);
}
END_TEST

START_TEST(test_long_run_bans)
{
    pool_t *p = pool_create(1, s_run, s_notify, NULL);
    ck_assert_ptr_nonnull(p);
    pool_set_inline(p, TINY_US);
    /* Seen once running long on an executor: never inline, however many
     * tiny runs follow. */
    ck_assert_int_eq(s_one(p, f_tiny, BAN_US), 0);
    for (int i = 0; i < 3 * POOL_INLINE_STREAK; i++)
        ck_assert_int_eq(s_one(p, f_tiny, 0), 0);
    /* The same when the long run happens inline. */
    s_qualify(p, f_other);
    ck_assert_int_eq(s_one(p, f_other, BAN_US), 1);
    for (int i = 0; i < 3 * POOL_INLINE_STREAK; i++)
        ck_assert_int_eq(s_one(p, f_other, 0), 0);
    ck_assert_uint_eq(pool_inlined(p), 2);
    pool_destroy(p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("pool_inline");
    TCase *tc = tcase_create("inline");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_inline_after_streak);
    tcase_add_test(tc, test_not_inline_when_busy_or_batch);
    tcase_add_test(tc, test_slow_run_requalifies);
    tcase_add_test(tc, test_long_run_bans);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
