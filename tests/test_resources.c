/*
 * test_resources.c - end-to-end tests of resources and restrictions (issue
 * 4) on real clusters: tasks that require a resource run only on a worker
 * that declared it and never more at a time than it has, however many
 * threads it has; tasks restricted to named workers run only there; a task
 * no connected worker can run waits (counted as ready) until one joins.
 * And work stealing: a task queued on a busy worker moves to one that
 * joins idle.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2e.h"

/* window(secs) -> [start_ns, end_ns, pid] (tests/tasklibs/basic.c). */
typedef struct win {
    int64_t start, end, pid;
} win_t;

static shoal_future_t *s_window(shoal_client_t *c, double secs, const shoal_submit_opts_t *o)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_double(&pk, secs);
    shoal_future_t *f = e2e_sub_raw(__FILE__, __LINE__, c, "window", o, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return f;
}

static win_t s_win(shoal_future_t *f)
{
    msgpack_object o;
    shoal_error_t err;
    ck_assert_msg(shoal_result_object(f, E2E_WAIT, &o, &err) == 0, "result: %s", err.msg);
    ck_assert_int_eq(o.type, MSGPACK_OBJECT_ARRAY);
    ck_assert_uint_eq(o.via.array.size, 3);
    win_t w;
    int64_t *v[3] = {&w.start, &w.end, &w.pid};
    for (int i = 0; i < 3; i++) {
        const msgpack_object *x = &o.via.array.ptr[i];
        ck_assert(x->type == MSGPACK_OBJECT_POSITIVE_INTEGER);
        *v[i] = (int64_t)x->via.u64;
    }
    ck_assert(w.end >= w.start);
    return w;
}

static int s_by_start(const void *a, const void *b)
{
    const win_t *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* Start one more worker with `args` and wait until the scheduler has n. */
static int s_add_worker(cluster_t *cl, int nthreads, const char *args, int n)
{
    int i = cluster_add_worker(cl, nthreads, args, 1);
    ck_assert_int_ge(i, 0);
    ck_assert_int_eq(cluster_wait_nworkers(cl->client, n, 20.0), 0);
    return i;
}

START_TEST(test_gpu_never_oversubscribed)
{
    enum { N = 8 };
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 4);
    shoal_client_t *c = cl->client;
    int gi = s_add_worker(cl, 4, "--resources GPU=1", 2);
    const char *gname = cl->worker_name[gi];

    shoal_submit_opts_t o = {.resources = "GPU=1"};
    shoal_future_t *f[N], *u[N];
    for (int i = 0; i < N; i++)
        f[i] = s_window(c, 0.1, &o);
    /* Unconstrained tasks meanwhile run anywhere, also next to the GPU
     * task on the GPU worker's free threads. */
    for (int i = 0; i < N; i++)
        u[i] = SUB_SLOW(c, i, 0.05, NULL);
    win_t w[N];
    for (int i = 0; i < N; i++) {
        w[i] = s_win(f[i]);
        ck_assert_ptr_nonnull(shoal_future_worker(f[i]));
        ck_assert_str_eq(shoal_future_worker(f[i]), gname);
    }
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(I64(u[i]), i + 1);
    qsort(w, N, sizeof w[0], s_by_start);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(w[i].pid, w[0].pid);
        if (i > 0)
            ck_assert_msg(w[i].start >= w[i - 1].end,
                          "GPU tasks overlapped: [%lld, %lld] and [%lld, %lld]",
                          (long long)w[i - 1].start, (long long)w[i - 1].end,
                          (long long)w[i].start, (long long)w[i].end);
    }
    for (int i = 0; i < N; i++) {
        shoal_release(f[i]);
        shoal_release(u[i]);
    }
    ck_assert_uint_eq(e2e_wait_total(c, 0, 10.0), 0);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_two_gpus_two_at_a_time)
{
    enum { N = 6 };
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 4, .worker_args = "--resources GPU=2");
    shoal_client_t *c = cl->client;
    shoal_submit_opts_t o = {.resources = "GPU=1"};
    shoal_future_t *f[N];
    for (int i = 0; i < N; i++)
        f[i] = s_window(c, 0.15, &o);
    win_t w[N];
    for (int i = 0; i < N; i++)
        w[i] = s_win(f[i]);
    /* At no instant more than two windows are open. */
    int most = 0;
    for (int i = 0; i < N; i++) {
        int open = 0;
        for (int j = 0; j < N; j++)
            open += w[j].start <= w[i].start && w[i].start < w[j].end;
        most = open > most ? open : most;
    }
    ck_assert_int_le(most, 2);
    for (int i = 0; i < N; i++)
        shoal_release(f[i]);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_restricted_to_worker)
{
    enum { N = 12 };
    cluster_t *cl = CLUSTER(.nworkers = 3, .nthreads = 2);
    shoal_client_t *c = cl->client;
    const char *only[] = {cl->worker_name[1], NULL};
    shoal_submit_opts_t o = {.workers = only};
    shoal_future_t *f[N];
    for (int i = 0; i < N; i++)
        f[i] = SUB_SLOW(c, i, 0.01, &o);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(I64(f[i]), i + 1);
        ck_assert_ptr_nonnull(shoal_future_worker(f[i]));
        ck_assert_str_eq(shoal_future_worker(f[i]), cl->worker_name[1]);
        shoal_release(f[i]);
    }
    /* Restriction and resource together, through a dependency. */
    shoal_future_t *a = SUB_I(c, "inc", &o, 41);
    shoal_future_t *b = SUB_F(c, "inc", &o, a);
    ck_assert_int_eq(I64(b), 43);
    ck_assert_str_eq(shoal_future_worker(a), cl->worker_name[1]);
    ck_assert_str_eq(shoal_future_worker(b), cl->worker_name[1]);
    shoal_release(a);
    shoal_release(b);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_unsatisfiable_waits)
{
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 2, .worker_args = "--resources GPU=1");
    shoal_client_t *c = cl->client;
    shoal_submit_opts_t big = {.resources = "GPU=2"};
    const char *nowhere[] = {"no-such-worker", NULL};
    shoal_submit_opts_t rest = {.workers = nowhere};
    shoal_future_t *f = SUB_I(c, "inc", &big, 1);
    shoal_future_t *g = SUB_I(c, "inc", &rest, 2);
    shoal_future_t *h = SUB_I(c, "inc", NULL, 3); /* others still run */
    ck_assert_int_eq(I64(h), 4);
    e2e_sleep(0.3);
    ck_assert_int_eq(shoal_future_status(f), SHOAL_PENDING);
    ck_assert_int_eq(shoal_future_status(g), SHOAL_PENDING);
    shoal_status_info_t st;
    STATUS(c, &st);
    ck_assert_uint_eq(st.ready, 2);
    shoal_status_free(&st);
    /* A worker that has enough joins: the waiting task runs there. */
    int wi = s_add_worker(cl, 1, "--resources GPU=4", 2);
    ck_assert_int_eq(I64(f), 2);
    ck_assert_str_eq(shoal_future_worker(f), cl->worker_name[wi]);
    ck_assert_int_eq(shoal_future_status(g), SHOAL_PENDING);
    ck_assert_int_eq(shoal_cancel(g), 0);
    CANCELLED(g, E2E_WAIT);
    shoal_release(f);
    shoal_release(g);
    shoal_release(h);
    ck_assert_uint_eq(e2e_wait_total(c, 0, 10.0), 0);
    cluster_stop(cl);
}
END_TEST

START_TEST(test_steal_to_idle_worker)
{
    cluster_t *cl = CLUSTER(.nworkers = 1, .nthreads = 1);
    shoal_client_t *c = cl->client;
    /* One thread: the first task runs, the second is queued behind it on
     * the same worker (prefetch). */
    shoal_future_t *a = SUB_SLOW(c, 1, 2.0, NULL);
    shoal_future_t *b = SUB_SLOW(c, 2, 2.0, NULL);
    shoal_status_info_t st;
    for (int i = 0; i < 100; i++) {
        STATUS(c, &st);
        uint64_t proc = st.processing;
        shoal_status_free(&st);
        if (proc == 2)
            break;
        e2e_sleep(0.02);
    }
    /* An idle worker joins: the periodic rebalancing takes the queued
     * task back from the busy one and gives it to the idle one. */
    int wi = s_add_worker(cl, 1, NULL, 2);
    ck_assert_int_eq(I64(a), 2);
    ck_assert_int_eq(I64(b), 3);
    ck_assert_str_eq(shoal_future_worker(a), cl->worker_name[0]);
    ck_assert_str_eq(shoal_future_worker(b), cl->worker_name[wi]);
    shoal_release(a);
    shoal_release(b);
    cluster_stop(cl);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("e2e_resources");
    TCase *tc = e2e_tcase("resources");
    e2e_add(tc, test_gpu_never_oversubscribed);
    e2e_add(tc, test_two_gpus_two_at_a_time);
    e2e_add(tc, test_restricted_to_worker);
    e2e_add(tc, test_unsatisfiable_waits);
    e2e_add(tc, test_steal_to_idle_worker);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return e2e_run(s_suite());
}
