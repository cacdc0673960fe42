/*
 * test_wait.c - end to end: waiting on futures (all / first completed /
 * first exception), timeouts, as_completed ordering, and cancellation of
 * pending and running tasks and of their dependents.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2e.h"

/* Poll the status until the scheduler counts `n` tasks processing. */
static int s_wait_processing(shoal_client_t *c, uint64_t n, double timeout)
{
    double end = e2e_now() + timeout;

    for (;;) {
        shoal_status_info_t st;
        shoal_error_t err;
        if (shoal_status(c, &st, 5.0, &err) == 0) {
            uint64_t p = st.processing;
            shoal_status_free(&st);
            if (p == n)
                return 0;
        }
        if (e2e_now() >= end)
            return -1;
        e2e_sleep(0.02);
    }
}

START_TEST(test_wait_all)
{
    enum { N = 12 };
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 4);
    shoal_client_t *c = cl->client;
    shoal_future_t *fs[N];
    char done[N];
    double t0 = e2e_now(), dt;
    int n;

    for (int i = 0; i < 10; i++)
        fs[i] = SUB_I(c, "inc", NULL, i);
    fs[10] = SUB_SLOW(c, 1, 0.4, NULL);
    fs[11] = SUB_S(c, "fail", NULL, "one-failed");
    memset(done, 7, sizeof done);
    n = shoal_wait(fs, N, SHOAL_ALL_COMPLETED, 30.0, done);
    dt = e2e_now() - t0;
    ck_assert_int_eq(n, N);
    ck_assert_msg(dt >= 0.39, "ALL_COMPLETED returned after %.3f s, before the 0.4 s task", dt);
    for (int i = 0; i < N; i++)
        ck_assert_msg(done[i] == 1, "done[%d] = %d", i, done[i]);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(I64(fs[i]), i + 1);
    ck_assert_int_eq(I64(fs[10]), 2);
    ck_assert_int_eq(shoal_future_status(fs[11]), SHOAL_ERROR);
    /* A failure makes gather fail and name the failed task's error. */
    {
        shoal_error_t err;
        ck_assert_int_eq(shoal_gather(fs, N, 5.0, &err), -1);
        CONTAINS(err.msg, "one-failed");
    }
    /* Waiting on nothing is immediate. */
    ck_assert_int_eq(shoal_wait(fs, 0, SHOAL_ALL_COMPLETED, 1.0, NULL), 0);
    for (int i = 0; i < N; i++)
        shoal_release(fs[i]);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_wait_first_completed)
{
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 4);
    shoal_client_t *c = cl->client;
    shoal_future_t *fs[4];
    char done[4];
    double t0, dt;
    int n;

    for (int i = 0; i < 3; i++)
        fs[i] = SUB_SLOW(c, i, 6.0, NULL);
    t0 = e2e_now();
    fs[3] = SUB_I(c, "inc", NULL, 100);
    n = shoal_wait(fs, 4, SHOAL_FIRST_COMPLETED, 30.0, done);
    dt = e2e_now() - t0;
    ck_assert_msg(n >= 1, "FIRST_COMPLETED returned %d (errno %d)", n, errno);
    ck_assert_msg(dt < 3.0, "FIRST_COMPLETED took %.2f s: it waited for the slow tasks", dt);
    ck_assert_int_eq(done[3], 1);
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(done[i] == 0, "slow task %d reported done", i);
        ck_assert_int_eq(shoal_future_status(fs[i]), SHOAL_PENDING);
    }
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(I64(fs[3]), 101);
    /* Already-done futures satisfy FIRST_COMPLETED without waiting. */
    t0 = e2e_now();
    n = shoal_wait(fs, 4, SHOAL_FIRST_COMPLETED, 0, done);
    ck_assert_int_eq(n, 1);
    ck_assert_msg(e2e_now() - t0 < 0.5, "an immediate wait took %.2f s", e2e_now() - t0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(shoal_cancel(fs[i]), 0);
    for (int i = 0; i < 3; i++)
        CANCELLED(fs[i], 5.0);
    for (int i = 0; i < 4; i++)
        shoal_release(fs[i]);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_wait_first_exception)
{
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 4);
    shoal_client_t *c = cl->client;
    shoal_future_t *fs[4], *ok[3];
    char done[4];
    double t0, dt;
    int n;

    for (int i = 0; i < 3; i++)
        fs[i] = SUB_SLOW(c, i, 6.0, NULL);
    t0 = e2e_now();
    fs[3] = SUB_S(c, "fail", NULL, "first-exception");
    n = shoal_wait(fs, 4, SHOAL_FIRST_EXCEPTION, 30.0, done);
    dt = e2e_now() - t0;
    ck_assert_msg(n == 1, "FIRST_EXCEPTION returned %d (errno %d)", n, errno);
    ck_assert_msg(dt < 3.0, "FIRST_EXCEPTION took %.2f s", dt);
    ck_assert_int_eq(done[3], 1);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(done[i], 0);
    ck_assert_int_eq(shoal_future_status(fs[3]), SHOAL_ERROR);
    CONTAINS(shoal_future_error(fs[3]), "first-exception");
    for (int i = 0; i < 3; i++)
        shoal_cancel(fs[i]);

    /* Without a failure it waits for everything, also past fast successes. */
    t0 = e2e_now();
    ok[0] = SUB_I(c, "inc", NULL, 1);
    ok[1] = SUB_I(c, "inc", NULL, 2);
    ok[2] = SUB_SLOW(c, 3, 0.5, NULL);
    n = shoal_wait(ok, 3, SHOAL_FIRST_EXCEPTION, 30.0, done);
    dt = e2e_now() - t0;
    ck_assert_int_eq(n, 3);
    ck_assert_msg(dt >= 0.49, "FIRST_EXCEPTION without failures returned after %.3f s", dt);
    ck_assert_int_eq(I64(ok[2]), 4);
    for (int i = 0; i < 3; i++)
        CANCELLED(fs[i], 5.0);
    for (int i = 0; i < 4; i++)
        shoal_release(fs[i]);
    for (int i = 0; i < 3; i++)
        shoal_release(ok[i]);
    cluster_stop(cl);
}
END_TEST

/* Assert that `elapsed` fits a wait of `timeout` seconds that timed out. */
#define TIMED_OUT(rc, e, t0, timeout, what)                                            \
    do {                                                                                \
        double dt_ = e2e_now() - (t0);                                                  \
        ck_assert_msg((rc) == -1 && (e) == ETIMEDOUT, "%s: rc %d errno %d, expected "   \
                      "ETIMEDOUT", what, (int)(rc), (e));                               \
        ck_assert_msg(dt_ >= (timeout) - 0.02 && dt_ < (timeout) + 1.5,                 \
                      "%s: timed out after %.3f s for a %.3f s timeout", what, dt_,     \
                      (double)(timeout));                                               \
    } while (0)

START_TEST(test_timeouts)
{
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 2);
    shoal_client_t *c = cl->client;
    shoal_future_t *s, *quick, *pair[2];
    shoal_as_completed_t *ac;
    shoal_error_t err;
    const void *data;
    size_t len;
    int64_t v;
    char done[2] = {5, 5};
    double t0;
    int rc, e;

    s = SUB_SLOW(c, 0, 8.0, NULL);
    quick = SUB_I(c, "inc", NULL, 1);
    ck_assert_int_eq(I64(quick), 2);

    t0 = e2e_now();
    rc = shoal_wait(&s, 1, SHOAL_ALL_COMPLETED, 0.3, done);
    e = errno;
    TIMED_OUT(rc, e, t0, 0.3, "wait ALL");
    ck_assert_int_eq(done[0], 0);

    t0 = e2e_now();
    rc = shoal_wait(&s, 1, SHOAL_FIRST_COMPLETED, 0.3, NULL);
    e = errno;
    TIMED_OUT(rc, e, t0, 0.3, "wait FIRST_COMPLETED");

    t0 = e2e_now();
    rc = shoal_wait(&s, 1, SHOAL_FIRST_EXCEPTION, 0.3, NULL);
    e = errno;
    TIMED_OUT(rc, e, t0, 0.3, "wait FIRST_EXCEPTION");

    /* done[] is filled on a timeout too: the finished one is marked. */
    pair[0] = s;
    pair[1] = quick;
    memset(done, 5, sizeof done);
    t0 = e2e_now();
    rc = shoal_wait(pair, 2, SHOAL_ALL_COMPLETED, 0.2, done);
    e = errno;
    TIMED_OUT(rc, e, t0, 0.2, "wait ALL on a pair");
    ck_assert_int_eq(done[0], 0);
    ck_assert_int_eq(done[1], 1);

    t0 = e2e_now();
    rc = shoal_result(s, 0.25, &data, &len, &err);
    e = errno;
    TIMED_OUT(rc, e, t0, 0.25, "shoal_result");
    ck_assert_int_eq(shoal_future_status(s), SHOAL_PENDING);

    t0 = e2e_now();
    rc = shoal_result(s, 0, &data, &len, &err);
    e = errno;
    TIMED_OUT(rc, e, t0, 0.0, "shoal_result with timeout 0");

    t0 = e2e_now();
    rc = shoal_result_i64(s, 0.1, &v, &err);
    e = errno;
    TIMED_OUT(rc, e, t0, 0.1, "shoal_result_i64");

    t0 = e2e_now();
    rc = shoal_gather(&s, 1, 0.2, &err);
    e = errno;
    TIMED_OUT(rc, e, t0, 0.2, "shoal_gather");

    ac = shoal_as_completed(&s, 1);
    ck_assert(ac != NULL);
    t0 = e2e_now();
    ck_assert(shoal_as_completed_next(ac, 0.2) == NULL);
    e = errno;
    TIMED_OUT(-1, e, t0, 0.2, "as_completed_next");
    shoal_as_completed_destroy(ac);

    t0 = e2e_now();
    rc = shoal_wait_for_workers(c, 5, 0.3, &err);
    e = errno;
    TIMED_OUT(rc, e, t0, 0.3, "wait_for_workers(5) with one worker");

    shoal_cancel(s);
    CANCELLED(s, 5.0);
    shoal_release(s);
    shoal_release(quick);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_as_completed)
{
    enum { NSLOW = 5, N = NSLOW + 2 };
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 8);
    shoal_client_t *c = cl->client;
    shoal_future_t *fs[N], *got[N + 1];
    shoal_as_completed_t *ac;
    int seen[N] = {0};
    int k = 0;

    /* slow i finishes at 1.5 - 0.3 i s: the reverse of submission order. */
    for (int i = 0; i < NSLOW; i++)
        fs[i] = SUB_SLOW(c, i, 1.5 - 0.3 * i, NULL);
    fs[NSLOW] = SUB_I(c, "inc", NULL, 100);
    fs[NSLOW + 1] = SUB_S(c, "fail", NULL, "ac-fail");

    ac = shoal_as_completed(fs, N - 1);
    ck_assert(ac != NULL);
    ck_assert_int_eq(shoal_as_completed_add(ac, fs[N - 1]), 0);
    for (;;) {
        shoal_future_t *f = shoal_as_completed_next(ac, 10.0);
        int idx = -1;
        if (!f) {
            ck_assert_msg(errno == 0, "as_completed_next: errno %d after %d futures", errno,
                          k);
            break;
        }
        ck_assert_msg(k < N, "as_completed returned more than %d futures", N);
        for (int i = 0; i < N; i++)
            if (fs[i] == f)
                idx = i;
        ck_assert_msg(idx >= 0, "as_completed returned a future it was not given");
        ck_assert_msg(!seen[idx], "future %d returned twice", idx);
        ck_assert_msg(shoal_future_status(f) != SHOAL_PENDING,
                      "as_completed returned a pending future");
        seen[idx] = 1;
        got[k++] = f;
    }
    ck_assert_int_eq(k, N);
    /* The two fast ones first (either order), then the slow ones fastest first. */
    ck_assert_msg((got[0] == fs[NSLOW] && got[1] == fs[NSLOW + 1]) ||
                      (got[1] == fs[NSLOW] && got[0] == fs[NSLOW + 1]),
                  "the fast tasks did not come first");
    for (int i = 0; i < NSLOW; i++)
        ck_assert_msg(got[2 + i] == fs[NSLOW - 1 - i],
                      "position %d: expected slow task %d", 2 + i, NSLOW - 1 - i);
    /* Exhausted: stays exhausted. */
    ck_assert(shoal_as_completed_next(ac, 0.1) == NULL);
    ck_assert_int_eq(errno, 0);
    shoal_as_completed_destroy(ac);

    /* Over futures that are all done already: each comes back at once. */
    ac = shoal_as_completed(fs, N);
    ck_assert(ac != NULL);
    for (int i = 0; i < N; i++)
        ck_assert_msg(shoal_as_completed_next(ac, 0.5) != NULL, "done future %d not returned",
                      i);
    ck_assert(shoal_as_completed_next(ac, 0.1) == NULL);
    ck_assert_int_eq(errno, 0);
    shoal_as_completed_destroy(ac);

    /* The iterator holds its own references: releasing ours first is fine. */
    ac = shoal_as_completed(fs, N);
    for (int i = 0; i < N; i++)
        shoal_release(fs[i]);
    for (int i = 0; i < N; i++)
        ck_assert(shoal_as_completed_next(ac, 1.0) != NULL);
    shoal_as_completed_destroy(ac);
    shoal_as_completed_destroy(NULL);
    ck_assert_uint_eq(e2e_wait_total(c, 0, 10.0), 0);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_cancel_pending)
{
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 1);
    shoal_client_t *c = cl->client;
    shoal_future_t *blocker, *queued, *dep, *after;
    double t0;

    blocker = SUB_SLOW(c, 0, 2.5, NULL);
    ck_assert_msg(s_wait_processing(c, 1, 5.0) == 0, "the blocker never started");
    queued = SUB_I(c, "inc", NULL, 5);
    dep = SUB_F(c, "inc", NULL, queued);
    e2e_sleep(0.1);
    ck_assert_int_eq(shoal_future_status(queued), SHOAL_PENDING);
    t0 = e2e_now();
    ck_assert_int_eq(shoal_cancel(queued), 0);
    /* Cancelled at once, not after the blocker has run. */
    CANCELLED(queued, 1.5);
    CANCELLED(dep, 1.5);
    ck_assert_msg(e2e_now() - t0 < 1.5, "cancel took %.2f s", e2e_now() - t0);
    ck_assert_int_eq(shoal_future_status(blocker), SHOAL_PENDING);
    ck_assert_int_eq(I64(blocker), 1);
    after = SUB_I(c, "inc", NULL, 9);
    ck_assert_int_eq(I64(after), 10);
    shoal_release(blocker);
    shoal_release(queued);
    shoal_release(dep);
    shoal_release(after);
    ck_assert_uint_eq(e2e_wait_total(c, 0, 10.0), 0);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_cancel_running)
{
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 1);
    shoal_client_t *c = cl->client;
    shoal_future_t *s, *next;
    shoal_status_info_t st;
    double t0;

    s = SUB_SLOW(c, 0, 30.0, NULL);
    ck_assert_msg(s_wait_processing(c, 1, 5.0) == 0, "the slow task never started");
    STATUS(c, &st);
    ck_assert_int_eq(st.nworkers, 1);
    ck_assert_int_eq(st.workers[0].running, 1);
    shoal_status_free(&st);

    t0 = e2e_now();
    ck_assert_int_eq(shoal_cancel(s), 0);
    CANCELLED(s, 2.0);
    ck_assert_msg(e2e_now() - t0 < 2.0, "cancel took %.2f s", e2e_now() - t0);
    /* The only executor thread is free again: a new task runs promptly
     * (it would wait 30 s if the cancelled task still held the thread). */
    t0 = e2e_now();
    next = SUB_I(c, "inc", NULL, 41);
    ck_assert_int_eq(I64_T(next, 8.0), 42);
    ck_assert_msg(e2e_now() - t0 < 8.0, "the next task took %.2f s", e2e_now() - t0);
    ck_assert_msg(s_wait_processing(c, 0, 5.0) == 0, "tasks still processing");
    /* Cancelling twice, or after the fact, is harmless. */
    ck_assert_int_eq(shoal_cancel(s), 0);
    ck_assert_int_eq(shoal_cancel(next), 0);
    ck_assert_int_eq(shoal_future_status(next), SHOAL_FINISHED);
    ck_assert_int_eq(I64(next), 42);
    shoal_release(s);
    shoal_release(next);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_cancel_dependents)
{
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 2);
    shoal_client_t *c = cl->client;
    shoal_future_t *a, *b, *sq, *indep, *late;
    shoal_status_t ls;

    a = SUB_SLOW(c, 0, 30.0, NULL);
    b = SUB_F(c, "inc", NULL, a);
    sq = SUB_F(c, "mul", NULL, b, b);
    indep = SUB_I(c, "inc", NULL, 7);
    ck_assert_int_eq(I64(indep), 8);
    ck_assert_int_eq(shoal_cancel(a), 0);
    CANCELLED(a, 3.0);
    CANCELLED(b, 3.0);
    CANCELLED(sq, 3.0);
    /* The unrelated task keeps its result. */
    ck_assert_int_eq(shoal_cancel(indep), 0);
    ck_assert_int_eq(shoal_future_status(indep), SHOAL_FINISHED);
    ck_assert_int_eq(I64(indep), 8);
    /* A task submitted on top of a cancelled one ends too (cancelled or
     * failed), it does not wait forever. */
    late = SUB_F(c, "inc", NULL, a);
    ck_assert_msg(e2e_wait_done(late, 5.0) == 0, "a task depending on a cancelled one hangs");
    ls = shoal_future_status(late);
    ck_assert_msg(ls == SHOAL_CANCELLED || ls == SHOAL_ERROR, "status %d", (int)ls);
    shoal_release(a);
    shoal_release(b);
    shoal_release(sq);
    shoal_release(indep);
    shoal_release(late);
    ck_assert_uint_eq(e2e_wait_total(c, 0, 10.0), 0);
    cluster_stop(cl);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("e2e_wait");
    TCase *tc = e2e_tcase("wait");

    e2e_add(tc, test_wait_all);
    e2e_add(tc, test_wait_first_completed);
    e2e_add(tc, test_wait_first_exception);
    e2e_add(tc, test_timeouts);
    e2e_add(tc, test_as_completed);
    e2e_add(tc, test_cancel_pending);
    e2e_add(tc, test_cancel_running);
    e2e_add(tc, test_cancel_dependents);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return e2e_run(s_suite());
}
