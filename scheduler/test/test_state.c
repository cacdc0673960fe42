/*
 * test_state.c - unit tests of the scheduler's state machine (state.c):
 * ordering, dependencies, failure and cancellation propagation, retries,
 * worker loss, release and memory, placement.  The callbacks record what
 * the scheduler would have sent.
 */
#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "state.h"

/* ---- a recorder for the callbacks ------------------------------------------------ */

enum { EV_COMPUTE = 'C', EV_RESULT = 'R', EV_WCANCEL = 'X', EV_KEPT = 'K', EV_FREE = 'F',
       EV_STEAL = 'S' };

typedef struct rec {
    int kind;
    void *user;
    uint64_t id;
    int status;
    char text[256];
    char worker[64];
    size_t ndeps;
    uint64_t dep_ids[4];
    char dep_res[4][32];
    size_t dep_len[4];
    size_t dep_nholders[4];   /* holders of a kept dependency (0: inline) */
    char dep_holder[4][32];   /* the first one's data address */
    uint64_t nbytes;          /* EV_KEPT */
    size_t nholders;          /* EV_KEPT */
    size_t args_len;
    unsigned char args[16];   /* the first bytes of the args */
} rec_t;

typedef struct recorder {
    rec_t *v;
    size_t n, cap;
} recorder_t;

static rec_t *s_add(recorder_t *r)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 64;
        r->v = realloc(r->v, r->cap * sizeof *r->v);
        ck_assert_ptr_nonnull(r->v);
    }
    rec_t *e = &r->v[r->n++];
    memset(e, 0, sizeof *e);
    return e;
}

static sched_t *S;

static void cb_compute(void *ctx, void *wuser, const sched_task_t *t)
{
    rec_t *e = s_add(ctx);
    e->kind = EV_COMPUTE;
    e->user = wuser;
    e->id = sched_task_id(t);
    size_t fl;
    const char *f = sched_task_func(t, &fl);
    ck_assert_uint_eq(strlen(f), fl);
    snprintf(e->text, sizeof e->text, "%s", f);
    /* The pre-packed name: a MessagePack str header, then the same bytes. */
    size_t pl;
    const unsigned char *pk = sched_task_func_packed(t, &pl);
    size_t hl = fl < 32 ? 1 : 2;
    ck_assert_uint_eq(pl, hl + fl);
    if (hl == 1) {
        ck_assert_uint_eq(pk[0], 0xa0 | fl);
    } else {
        ck_assert_uint_eq(pk[0], 0xd9);
        ck_assert_uint_eq(pk[1], fl);
    }
    ck_assert(memcmp(pk + hl, f, fl) == 0);
    const void *a;
    sched_task_args(t, &a, &e->args_len);
    memcpy(e->args, a, e->args_len < sizeof e->args ? e->args_len : sizeof e->args);
    e->ndeps = sched_task_ndeps(t);
    for (size_t i = 0; i < e->ndeps && i < 4; i++) {
        const void *p;
        size_t n;
        sched_task_dep(t, i, &e->dep_ids[i], &p, &n);
        e->dep_len[i] = n;
        snprintf(e->dep_res[i], sizeof e->dep_res[i], "%.*s", (int)n, (const char *)p);
        size_t nh;
        sched_worker_t *const *hs =
            sched_task_holders(S, sched_task_dep_task(t, i), &nh, NULL);
        e->dep_nholders[i] = nh;
        if (nh)
            snprintf(e->dep_holder[i], sizeof e->dep_holder[i], "%s", sched_worker_data(hs[0]));
    }
}

static void cb_result_kept(void *ctx, void *cuser, const sched_task_t *t, const char *worker)
{
    rec_t *e = s_add(ctx);
    e->kind = EV_KEPT;
    e->user = cuser;
    e->id = sched_task_id(t);
    sched_task_holders(S, t, &e->nholders, &e->nbytes);
    snprintf(e->worker, sizeof e->worker, "%s", worker ? worker : "");
}

static void cb_wfree(void *ctx, void *wuser, uint64_t id)
{
    rec_t *e = s_add(ctx);
    e->kind = EV_FREE;
    e->user = wuser;
    e->id = id;
}

static void cb_result(void *ctx, void *cuser, uint64_t id, int status, const void *payload,
                      size_t len, const char *worker)
{
    rec_t *e = s_add(ctx);
    e->kind = EV_RESULT;
    e->user = cuser;
    e->id = id;
    e->status = status;
    snprintf(e->text, sizeof e->text, "%.*s", (int)len, (const char *)payload);
    snprintf(e->worker, sizeof e->worker, "%s", worker ? worker : "");
}

static void cb_wcancel(void *ctx, void *wuser, uint64_t id)
{
    rec_t *e = s_add(ctx);
    e->kind = EV_WCANCEL;
    e->user = wuser;
    e->id = id;
}

static void cb_steal(void *ctx, void *wuser, uint64_t id)
{
    rec_t *e = s_add(ctx);
    e->kind = EV_STEAL;
    e->user = wuser;
    e->id = id;
}

static const sched_ops_t ops = {cb_compute, cb_result, cb_wcancel, cb_result_kept, cb_wfree,
                                cb_steal};

/* Each test gets a fresh state, a recorder, one client. */
static recorder_t R;
static sched_client_t *C;
static int CU; /* client user tag */

static void setup(void)
{
    memset(&R, 0, sizeof R);
    S = sched_create(&ops, &R);
    ck_assert_ptr_nonnull(S);
    C = sched_client_add(S, &CU);
    ck_assert_ptr_nonnull(C);
}

static void teardown(void)
{
    sched_destroy(S);
    free(R.v);
    S = NULL;
}

#define TID(n) ((sched_client_id(C) << 40) | (uint64_t)(n))

static int submit_full(uint64_t id, const char *func, const uint64_t *deps, size_t ndeps,
                       int prio, unsigned retries, const char *name)
{
    static const char args[] = "\x90"; /* an empty msgpack array */
    sched_submit_t sub = {
        .id = id, .func = func, .func_len = strlen(func), .args = args, .args_len = 1,
        .deps = deps, .ndeps = ndeps, .priority = prio, .retries = retries,
        .name = name, .name_len = name ? strlen(name) : 0,
    };
    return sched_submit(S, C, &sub);
}

static int submit(uint64_t id, int prio)
{
    return submit_full(id, "f", NULL, 0, prio, 0, NULL);
}

static size_t count_kind(int kind)
{
    size_t n = 0;
    for (size_t i = 0; i < R.n; i++)
        n += R.v[i].kind == kind;
    return n;
}

/* The last event of `kind` for task id, or NULL. */
static rec_t *find(int kind, uint64_t id)
{
    for (size_t i = R.n; i-- > 0;)
        if (R.v[i].kind == kind && R.v[i].id == id)
            return &R.v[i];
    return NULL;
}

static void clear(void)
{
    R.n = 0;
}

static void done_ok(sched_worker_t *w, uint64_t id, const char *res)
{
    ck_assert_int_eq(sched_task_done(S, w, id, TASK_OK, res, strlen(res), 20000), 0);
}

static void done_err(sched_worker_t *w, uint64_t id, const char *err)
{
    ck_assert_int_eq(sched_task_done(S, w, id, TASK_ERR, err, strlen(err), 20000), 0);
}

/* ---- ordering ---------------------------------------------------------------------- */

START_TEST(test_priority_order)
{
    int wu;
    for (int i = 1; i <= 6; i++)
        ck_assert_int_eq(submit(TID(i), i == 3 ? 10 : i == 5 ? 5 : 0), 0);
    ck_assert_uint_eq(sched_count(S, TS_READY), 6);
    sched_place(S); /* no worker yet: nothing happens */
    ck_assert_uint_eq(count_kind(EV_COMPUTE), 0);

    sched_worker_t *w = sched_worker_add(S, "w1", 1, &wu);
    ck_assert_ptr_nonnull(w);
    /* One thread, no duration known: limit is 2. */
    ck_assert_uint_eq(sched_worker_limit(S, w), 2);
    uint64_t order[6];
    size_t got = 0, fin = 0;
    while (got < 6) {
        size_t before = R.n;
        sched_place(S);
        ck_assert_uint_le(sched_worker_running(w), 2);
        for (size_t i = before; i < R.n; i++) {
            ck_assert_int_eq(R.v[i].kind, EV_COMPUTE);
            ck_assert_ptr_eq(R.v[i].user, &wu);
            order[got++] = R.v[i].id;
        }
        ck_assert_uint_gt(got, fin);
        done_ok(w, order[fin++], "r"); /* finish the oldest assignment */
    }
    /* priority 10, then 5, then the rest in submission order */
    ck_assert_uint_eq(order[0], TID(3));
    ck_assert_uint_eq(order[1], TID(5));
    ck_assert_uint_eq(order[2], TID(1));
    ck_assert_uint_eq(order[3], TID(2));
    ck_assert_uint_eq(order[4], TID(4));
    ck_assert_uint_eq(order[5], TID(6));
}
END_TEST

START_TEST(test_spread_over_workers)
{
    int u1, u2, u3;
    sched_worker_t *w1 = sched_worker_add(S, "w1", 2, &u1);
    sched_worker_t *w2 = sched_worker_add(S, "w2", 2, &u2);
    sched_worker_t *w3 = sched_worker_add(S, "w3", 2, &u3);
    for (int i = 1; i <= 6; i++)
        submit(TID(i), 0);
    sched_place(S);
    /* Idle threads are filled before any prefetching: 2 each. */
    ck_assert_uint_eq(sched_worker_running(w1), 2);
    ck_assert_uint_eq(sched_worker_running(w2), 2);
    ck_assert_uint_eq(sched_worker_running(w3), 2);
    /* Round robin: consecutive tasks go to different workers. */
    ck_assert_ptr_ne(R.v[0].user, R.v[1].user);
    ck_assert_ptr_ne(R.v[1].user, R.v[2].user);
    ck_assert_ptr_ne(R.v[0].user, R.v[2].user);

    /* Six more: the prefetch slot of each thread (limit 4 per worker). */
    for (int i = 7; i <= 20; i++)
        submit(TID(i), 0);
    sched_place(S);
    ck_assert_uint_eq(sched_worker_running(w1), 4);
    ck_assert_uint_eq(sched_worker_running(w2), 4);
    ck_assert_uint_eq(sched_worker_running(w3), 4);
    ck_assert_uint_eq(sched_count(S, TS_READY), 8);
    ck_assert_uint_eq(sched_count(S, TS_PROCESSING), 12);
}
END_TEST

START_TEST(test_prefetch_follows_durations)
{
    int u;
    sched_worker_t *w = sched_worker_add(S, "w", 4, &u);
    ck_assert_uint_eq(sched_worker_limit(S, w), 8);
    for (int i = 1; i <= 3000; i++)
        submit(TID(i), 0);
    sched_place(S);
    ck_assert_uint_eq(sched_worker_running(w), 8);
    /* Very short tasks: 1000 extra per thread. */
    sched_task_done(S, w, TID(1), TASK_OK, "x", 1, 1);
    sched_place(S);
    ck_assert_uint_eq(sched_worker_limit(S, w), 4 * 1001);
    ck_assert_uint_eq(sched_worker_running(w), 2999);
    /* Long tasks pull the average up: prefetch shrinks to 1 per thread. */
    uint64_t next = 2;
    for (int k = 0; k < 400; k++)
        sched_task_done(S, w, TID(next++), TASK_OK, "x", 1, 5000000);
    sched_place(S);
    ck_assert_uint_eq(sched_worker_limit(S, w), 8);
    ck_assert(sched_avg_duration_us(S) > 100000);
    /* Over the limit already: no new assignment until it drains. */
    ck_assert_uint_eq(sched_count(S, TS_READY), 0);
    ck_assert_uint_eq(sched_worker_running(w), 2999 - 400);
}
END_TEST

/* ---- dependencies --------------------------------------------------------------------- */

START_TEST(test_deps_release_dependents)
{
    int u;
    sched_worker_t *w = sched_worker_add(S, "w", 4, &u);
    uint64_t a = TID(1), b = TID(2), c = TID(3);
    uint64_t dab[] = {a, b, a}; /* a twice: deduplicated */
    ck_assert_int_eq(submit(a, 0), 0);
    ck_assert_int_eq(submit(b, 0), 0);
    ck_assert_int_eq(submit_full(c, "g", dab, 3, 0, 0, NULL), 0);
    ck_assert_int_eq(sched_state_of(S, c), TS_WAITING);
    sched_place(S);
    ck_assert_ptr_null(find(EV_COMPUTE, c));
    done_ok(w, a, "A");
    sched_place(S);
    ck_assert_int_eq(sched_state_of(S, c), TS_WAITING);
    ck_assert_ptr_null(find(EV_COMPUTE, c));
    done_ok(w, b, "B");
    ck_assert_int_eq(sched_state_of(S, c), TS_READY);
    sched_place(S);
    rec_t *e = find(EV_COMPUTE, c);
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(e->text, "g");
    ck_assert_uint_eq(e->ndeps, 2);
    ck_assert_uint_eq(e->dep_ids[0], a);
    ck_assert_str_eq(e->dep_res[0], "A");
    ck_assert_uint_eq(e->dep_ids[1], b);
    ck_assert_str_eq(e->dep_res[1], "B");
    /* Results reported to the client */
    e = find(EV_RESULT, a);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->status, TASK_OK);
    ck_assert_str_eq(e->text, "A");
    ck_assert_ptr_eq(e->user, &CU);

    /* A dependency already in memory counts as done. */
    uint64_t dd[] = {a};
    ck_assert_int_eq(submit_full(TID(4), "h", dd, 1, 0, 0, NULL), 0);
    ck_assert_int_eq(sched_state_of(S, TID(4)), TS_READY);
}
END_TEST

START_TEST(test_duplicate_and_unknown)
{
    ck_assert_int_eq(submit(TID(1), 0), 0);
    clear();
    ck_assert_int_eq(submit(TID(1), 7), -1);
    rec_t *e = find(EV_RESULT, TID(1));
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->status, TASK_ERR);
    ck_assert_str_eq(e->text, "duplicate task id");
    /* the original is untouched */
    ck_assert_int_eq(sched_state_of(S, TID(1)), TS_READY);
    ck_assert_uint_eq(sched_ntasks(S), 1);

    uint64_t deps[] = {TID(1), 12345};
    clear();
    ck_assert_int_eq(submit_full(TID(2), "f", deps, 2, 0, 0, NULL), -1);
    e = find(EV_RESULT, TID(2));
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->status, TASK_ERR);
    ck_assert_str_eq(e->text, "unknown dependency 12345");
    ck_assert_int_eq(sched_state_of(S, TID(2)), TS_FORGOTTEN);
    ck_assert_uint_eq(sched_ntasks(S), 1);

    /* A task cannot depend on itself (its id is not known yet). */
    uint64_t self[] = {TID(3)};
    ck_assert_int_eq(submit_full(TID(3), "f", self, 1, 0, 0, NULL), -1);
    /* id 0 is invalid; bad function names are refused */
    ck_assert_int_eq(submit(0, 0), -1);
    ck_assert_int_eq(submit_full(TID(4), "", NULL, 0, 0, 0, NULL), -1);
    sched_stats_t st;
    sched_get_stats(S, &st);
    ck_assert_uint_eq(st.refused, 5);
    ck_assert_uint_eq(st.submitted, 1);
}
END_TEST

/* ---- failure --------------------------------------------------------------------------- */

START_TEST(test_error_propagation)
{
    int u;
    sched_worker_t *w = sched_worker_add(S, "w-err", 1, &u);
    uint64_t a = TID(1), b = TID(2), c = TID(3), x = TID(4);
    uint64_t da[] = {a}, db[] = {b}, dbx[] = {x, b};
    submit_full(a, "f", NULL, 0, 0, 0, "alpha");
    submit_full(b, "f", da, 1, 0, 0, NULL);
    submit_full(x, "f", NULL, 0, -1, 0, NULL);
    submit_full(c, "f", dbx, 2, 0, 0, NULL);
    sched_place(S);
    done_err(w, a, "boom");

    rec_t *e = find(EV_RESULT, a);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->status, TASK_ERR);
    ck_assert_str_eq(e->text, "boom");
    ck_assert_str_eq(e->worker, "w-err");
    e = find(EV_RESULT, b);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->status, TASK_ERR);
    ck_assert_str_eq(e->text, "dependency alpha failed: boom");
    /* transitively, naming the task that actually failed */
    e = find(EV_RESULT, c);
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(e->text, "dependency alpha failed: boom");
    ck_assert_int_eq(sched_state_of(S, c), TS_ERRED);
    ck_assert_uint_eq(sched_count(S, TS_ERRED), 3);
    /* x is independent and still pending */
    ck_assert_int_ne(sched_state_of(S, x), TS_ERRED);

    /* Submitting on top of a failed task fails at once, same text. */
    ck_assert_int_eq(submit_full(TID(5), "f", da, 1, 0, 0, NULL), 0);
    e = find(EV_RESULT, TID(5));
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(e->text, "dependency alpha failed: boom");
    ck_assert_str_eq(e->worker, "w-err");
    ck_assert_int_eq(submit_full(TID(6), "f", db, 1, 0, 0, NULL), 0);
    ck_assert_str_eq(find(EV_RESULT, TID(6))->text, "dependency alpha failed: boom");

    /* An unnamed task is named by its id. */
    uint64_t dx[] = {x};
    submit_full(TID(7), "f", dx, 1, 0, 0, NULL);
    sched_place(S);
    done_err(w, x, "bad");
    char want[128];
    snprintf(want, sizeof want, "dependency %" PRIu64 " failed: bad", x);
    ck_assert_str_eq(find(EV_RESULT, TID(7))->text, want);
}
END_TEST

START_TEST(test_retries)
{
    int u;
    sched_worker_t *w = sched_worker_add(S, "w", 1, &u);
    uint64_t a = TID(1);
    submit_full(a, "f", NULL, 0, 0, 2, NULL);
    for (int attempt = 0; attempt < 3; attempt++) {
        clear();
        sched_place(S);
        ck_assert_ptr_nonnull(find(EV_COMPUTE, a));
        done_err(w, a, "flaky");
        if (attempt < 2) {
            ck_assert_int_eq(sched_state_of(S, a), TS_READY);
            ck_assert_ptr_null(find(EV_RESULT, a));
        }
    }
    ck_assert_int_eq(sched_state_of(S, a), TS_ERRED);
    rec_t *e = find(EV_RESULT, a);
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(e->text, "flaky");
    sched_stats_t st;
    sched_get_stats(S, &st);
    ck_assert_uint_eq(st.retried, 2);
    ck_assert_uint_eq(st.failed, 1);
    /* A retried task that then succeeds is fine. */
    submit_full(TID(2), "f", NULL, 0, 0, 1, NULL);
    sched_place(S);
    done_err(w, TID(2), "once");
    sched_place(S);
    done_ok(w, TID(2), "ok");
    ck_assert_int_eq(sched_state_of(S, TID(2)), TS_MEMORY);
}
END_TEST

/* ---- cancellation ---------------------------------------------------------------------- */

START_TEST(test_cancel)
{
    int u;
    sched_worker_t *w = sched_worker_add(S, "w", 1, &u); /* limit 2 */
    uint64_t a = TID(1), b = TID(2), r = TID(3), c = TID(4), d = TID(5);
    uint64_t da[] = {a}, dc[] = {c};
    submit_full(a, "f", NULL, 0, 9, 0, "a");
    submit_full(b, "f", NULL, 0, 8, 0, NULL);
    submit(r, 0);
    submit_full(c, "f", da, 1, 0, 0, NULL);
    submit_full(d, "f", dc, 1, 0, 0, NULL);
    sched_place(S);
    ck_assert_int_eq(sched_state_of(S, a), TS_PROCESSING);
    ck_assert_int_eq(sched_state_of(S, b), TS_PROCESSING);
    ck_assert_int_eq(sched_state_of(S, r), TS_READY);
    ck_assert_int_eq(sched_worker_running(w), 2);

    /* Cancel a running task: WCANCEL, its dependents cancelled too, its
     * slot free at once. */
    clear();
    ck_assert_int_eq(sched_cancel(S, C, a), 0);
    ck_assert_ptr_nonnull(find(EV_WCANCEL, a));
    ck_assert_ptr_eq(find(EV_WCANCEL, a)->user, &u);
    rec_t *e = find(EV_RESULT, a);
    ck_assert_int_eq(e->status, TASK_CANCELLED);
    ck_assert_str_eq(e->text, "cancelled");
    e = find(EV_RESULT, c);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->status, TASK_CANCELLED);
    ck_assert_str_eq(e->text, "dependency a was cancelled");
    ck_assert_str_eq(find(EV_RESULT, d)->text, "dependency a was cancelled");
    ck_assert_int_eq(sched_worker_running(w), 1);
    sched_place(S);
    ck_assert_int_eq(sched_state_of(S, r), TS_PROCESSING);
    /* The worker's late answer for a is ignored. */
    ck_assert_int_eq(sched_task_done(S, w, a, TASK_OK, "x", 1, 5), -1);
    ck_assert_int_eq(sched_state_of(S, a), TS_CANCELLED);

    /* Cancel a waiting task directly; its dependency is unaffected. */
    uint64_t wt = TID(20), gate = TID(21);
    uint64_t dr[] = {r}, dg[] = {gate};
    submit_full(wt, "f", dr, 1, 0, 0, NULL);
    ck_assert_int_eq(sched_state_of(S, wt), TS_WAITING);
    clear();
    ck_assert_int_eq(sched_cancel(S, C, wt), 0);
    ck_assert_int_eq(sched_state_of(S, wt), TS_CANCELLED);
    ck_assert_str_eq(find(EV_RESULT, wt)->text, "cancelled");
    ck_assert_int_eq(sched_state_of(S, r), TS_PROCESSING);
    /* Free it and reuse its id for a task waiting on something else: r's
     * stale dependent entry must not count for the new task. */
    ck_assert_int_eq(sched_release(S, C, wt), 0);
    ck_assert_int_eq(sched_state_of(S, wt), TS_FORGOTTEN);
    submit_full(gate, "f", NULL, 0, -100, 0, NULL);
    ck_assert_int_eq(submit_full(wt, "f", dg, 1, 0, 0, NULL), 0);
    ck_assert_int_eq(sched_state_of(S, wt), TS_WAITING);

    /* Cancel a ready task: out of the queue, never computed. */
    uint64_t q = TID(6);
    submit(q, 0);
    clear();
    ck_assert_int_eq(sched_cancel(S, C, q), 0);
    ck_assert_int_eq(sched_state_of(S, q), TS_CANCELLED);
    ck_assert_ptr_null(find(EV_WCANCEL, q));
    done_ok(w, b, "b");
    done_ok(w, r, "r");
    /* the new wt still waits for gate, not for r */
    ck_assert_int_eq(sched_state_of(S, wt), TS_WAITING);
    sched_place(S);
    ck_assert_ptr_null(find(EV_COMPUTE, q));
    ck_assert_ptr_nonnull(find(EV_COMPUTE, gate));
    done_ok(w, gate, "g");
    ck_assert_int_eq(sched_state_of(S, wt), TS_READY);
    sched_place(S);
    done_ok(w, wt, "w");
    ck_assert_uint_eq(sched_count(S, TS_READY), 0);

    /* Cancelling a finished task does nothing; submitting on a cancelled
     * one cancels at once. */
    ck_assert_int_eq(sched_cancel(S, C, b), 0);
    ck_assert_int_eq(sched_state_of(S, b), TS_MEMORY);
    uint64_t dq[] = {q};
    ck_assert_int_eq(submit_full(TID(7), "f", dq, 1, 0, 0, NULL), 0);
    ck_assert_int_eq(sched_state_of(S, TID(7)), TS_CANCELLED);
    char want[64];
    snprintf(want, sizeof want, "dependency %" PRIu64 " was cancelled", q);
    ck_assert_str_eq(find(EV_RESULT, TID(7))->text, want);

    /* Another client cannot cancel (or release) our tasks. */
    sched_client_t *other = sched_client_add(S, NULL);
    submit(TID(8), 0);
    ck_assert_int_eq(sched_cancel(S, other, TID(8)), -1);
    ck_assert_int_eq(sched_release(S, other, TID(8)), -1);
    ck_assert_int_ne(sched_state_of(S, TID(8)), TS_CANCELLED);
    ck_assert_uint_eq(sched_client_id(other), sched_client_id(C) + 1);
}
END_TEST

/* ---- worker loss ----------------------------------------------------------------------- */

START_TEST(test_worker_loss)
{
    int u1, u2;
    sched_worker_t *w1 = sched_worker_add(S, "w1", 1, &u1);
    uint64_t a = TID(1), b = TID(2);
    submit_full(a, "f", NULL, 0, 0, 0, "crasher");
    submit(b, 0);
    sched_place(S);
    ck_assert_int_eq(sched_worker_running(w1), 2);
    /* Orderly leave: back to ready, not suspicious. */
    sched_worker_remove(S, w1, 0);
    ck_assert_int_eq(sched_state_of(S, a), TS_READY);
    ck_assert_int_eq(sched_state_of(S, b), TS_READY);
    ck_assert_int_eq(sched_task_suspicious(S, a), 0);
    ck_assert_uint_eq(sched_nworkers(S), 0);

    char name[16];
    for (int k = 1; k <= 3; k++) {
        snprintf(name, sizeof name, "dead%d", k);
        sched_worker_t *w = sched_worker_add(S, name, 1, &u2);
        clear();
        sched_place(S);
        /* the requeued tasks keep their place in the queue */
        ck_assert_uint_eq(R.v[0].id, a);
        ck_assert_int_eq(sched_state_of(S, a), TS_PROCESSING);
        if (k == 2)
            done_ok(w, b, "b"); /* b finishes on the second worker */
        sched_worker_remove(S, w, 1);
        if (k < 3) {
            ck_assert_int_eq(sched_state_of(S, a), TS_READY);
            ck_assert_int_eq(sched_task_suspicious(S, a), k);
        }
    }
    ck_assert_int_eq(sched_state_of(S, a), TS_ERRED);
    rec_t *e = find(EV_RESULT, a);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->status, TASK_ERR);
    ck_assert_str_eq(e->text, "task crasher was running on 3 workers that died (last: dead3)");
    ck_assert_str_eq(e->worker, "dead3");
    ck_assert_int_eq(sched_state_of(S, b), TS_MEMORY);
    ck_assert_uint_eq(sched_count(S, TS_PROCESSING), 0);
    sched_stats_t st;
    sched_get_stats(S, &st);
    ck_assert_uint_eq(st.requeued, 2 + 2 + 1);
}
END_TEST

/* ---- release ---------------------------------------------------------------------------- */

START_TEST(test_release_frees)
{
    int u;
    sched_worker_t *w = sched_worker_add(S, "w", 2, &u);
    for (int round = 0; round < 5; round++) {
        uint64_t base = (uint64_t)round * 1000;
        /* a fan-in: 500 leaves and one task depending on all of them */
        uint64_t deps[500];
        for (int i = 0; i < 500; i++) {
            deps[i] = TID(base + 1 + (uint64_t)i);
            char fn[16];
            snprintf(fn, sizeof fn, "fn%d", i % 7);
            submit_full(deps[i], fn, NULL, 0, 0, 0, NULL);
        }
        uint64_t sink = TID(base + 999);
        submit_full(sink, "sink", deps, 500, 0, 0, NULL);
        /* The client releases the leaves at once: they are still needed
         * by the sink, so they run. */
        for (int i = 0; i < 500; i++)
            ck_assert_int_eq(sched_release(S, C, deps[i]), 0);
        ck_assert_uint_eq(sched_ntasks(S), 501);
        while (sched_count(S, TS_READY) + sched_count(S, TS_PROCESSING) > 0) {
            clear();
            sched_place(S);
            for (size_t i = 0; i < R.n; i++)
                if (R.v[i].kind == EV_COMPUTE)
                    done_ok(w, R.v[i].id, "res");
        }
        ck_assert_int_eq(sched_state_of(S, sink), TS_MEMORY);
        /* The leaves were freed as soon as the sink finished. */
        ck_assert_uint_eq(sched_ntasks(S), 1);
        ck_assert_int_eq(sched_release(S, C, sink), 0);
        ck_assert_uint_eq(sched_ntasks(S), 0);
        ck_assert_uint_eq(sched_interned(S), 0);
        ck_assert_uint_eq(sched_count(S, TS_MEMORY), 0);
        ck_assert_uint_eq(sched_count(S, TS_FORGOTTEN), (uint64_t)(round + 1) * 501);
    }
    /* Releasing twice, or an unknown id, is harmless. */
    ck_assert_int_eq(sched_release(S, C, TID(1)), -1);
}
END_TEST

START_TEST(test_release_pending)
{
    int u;
    sched_worker_t *w = sched_worker_add(S, "w", 1, &u);
    uint64_t a = TID(1), b = TID(2), c = TID(3);
    uint64_t da[] = {a};
    submit(a, 0);
    submit_full(b, "f", da, 1, 0, 0, NULL);
    submit(c, 0);
    sched_place(S); /* a and c processing, b waiting */
    ck_assert_int_eq(sched_state_of(S, c), TS_PROCESSING);

    /* Released while running and nothing needs it: cancelled on its
     * worker and freed, and not reported to the client. */
    clear();
    sched_release(S, C, c);
    ck_assert_ptr_nonnull(find(EV_WCANCEL, c));
    ck_assert_ptr_null(find(EV_RESULT, c));
    ck_assert_int_eq(sched_state_of(S, c), TS_FORGOTTEN);
    ck_assert_uint_eq(sched_worker_running(w), 1);

    /* a is released but b needs it: it keeps running. */
    clear();
    sched_release(S, C, a);
    ck_assert_ptr_null(find(EV_WCANCEL, a));
    ck_assert_int_eq(sched_state_of(S, a), TS_PROCESSING);
    /* Now b is released too: nothing wants either any more. */
    sched_release(S, C, b);
    ck_assert_ptr_nonnull(find(EV_WCANCEL, a));
    ck_assert_uint_eq(sched_ntasks(S), 0);
    ck_assert_uint_eq(sched_count(S, TS_PROCESSING), 0);
    ck_assert_uint_eq(sched_count(S, TS_WAITING), 0);
    ck_assert_uint_eq(sched_worker_running(w), 0);
}
END_TEST

START_TEST(test_client_remove)
{
    int u;
    sched_worker_t *w = sched_worker_add(S, "w", 1, &u);
    sched_client_t *c2 = sched_client_add(S, NULL);
    uint64_t mine = (sched_client_id(c2) << 40) | 1;
    /* The other client's task depends on one of ours. */
    submit(TID(1), 0);
    submit(TID(2), 0);
    submit(TID(3), 0);
    uint64_t d1[] = {TID(1)};
    sched_submit_t sub = {.id = mine, .func = "f", .func_len = 1, .args = "\x90",
                          .args_len = 1, .deps = d1, .ndeps = 1};
    ck_assert_int_eq(sched_submit(S, c2, &sub), 0);
    sched_place(S);
    clear();
    uint64_t t1 = TID(1), t2 = TID(2), t3 = TID(3);
    sched_client_remove(S, C);
    C = c2;
    /* t1 lives on (c2's task needs it), the others are gone. */
    ck_assert_int_eq(sched_state_of(S, t1), TS_PROCESSING);
    ck_assert_ptr_nonnull(find(EV_WCANCEL, t2));
    ck_assert_int_eq(sched_state_of(S, t2), TS_FORGOTTEN);
    ck_assert_int_eq(sched_state_of(S, t3), TS_FORGOTTEN);
    ck_assert_uint_eq(sched_ntasks(S), 2);
    /* It completes (not reported: its client is gone) and c2's task runs. */
    clear();
    ck_assert_int_eq(sched_task_done(S, w, d1[0], TASK_OK, "v", 1, 3), 0);
    ck_assert_ptr_null(find(EV_RESULT, d1[0]));
    sched_place(S);
    ck_assert_ptr_nonnull(find(EV_COMPUTE, mine));
    done_ok(w, mine, "m");
    ck_assert_uint_eq(sched_ntasks(S), 1);
    sched_client_remove(S, c2);
    C = NULL;
    ck_assert_uint_eq(sched_ntasks(S), 0);
}
END_TEST

/* Error propagation down a long chain must not recurse (or be slow). */
START_TEST(test_long_chain)
{
    int u;
    sched_worker_t *w = sched_worker_add(S, "w", 1, &u);
    enum { N = 200000 };
    submit(TID(1), 0);
    for (uint64_t i = 2; i <= N; i++) {
        uint64_t d[] = {TID(i - 1)};
        ck_assert_int_eq(submit_full(TID(i), "f", d, 1, 0, 0, NULL), 0);
    }
    sched_place(S);
    done_err(w, TID(1), "root");
    ck_assert_uint_eq(sched_count(S, TS_ERRED), N);
    for (uint64_t i = 1; i <= N; i++)
        sched_release(S, C, TID(i));
    ck_assert_uint_eq(sched_ntasks(S), 0);
}
END_TEST

/* The prefetch follows real changes of the average duration, not every
 * wobble of it (each change relists every worker). */
START_TEST(test_prefetch_hysteresis)
{
    int u;
    sched_worker_t *w = sched_worker_add(S, "w", 1, &u);
    uint64_t n = 0;
    /* Tasks of 100 us: 10000 / 100 = 100 extra. */
    for (int i = 0; i < 200; i++) {
        ck_assert_int_eq(submit(TID(++n), 0), 0);
        sched_place(S);
        ck_assert_int_eq(sched_task_done(S, w, TID(n), TASK_OK, "x", 1, 100), 0);
    }
    sched_place(S);
    ck_assert_uint_eq(sched_worker_limit(S, w), 101);
    /* A few slightly longer ones: the average moves a little, the limit
     * does not. */
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(submit(TID(++n), 0), 0);
        sched_place(S);
        ck_assert_int_eq(sched_task_done(S, w, TID(n), TASK_OK, "x", 1, 110), 0);
        sched_place(S);
        ck_assert_uint_eq(sched_worker_limit(S, w), 101);
    }
    ck_assert(sched_avg_duration_us(S) > 101);
    /* Twice as long for good: it follows, to within an eighth of the
     * exact 1 + 10000 / 200. */
    for (int i = 0; i < 200; i++) {
        ck_assert_int_eq(submit(TID(++n), 0), 0);
        sched_place(S);
        ck_assert_int_eq(sched_task_done(S, w, TID(n), TASK_OK, "x", 1, 200), 0);
    }
    sched_place(S);
    ck_assert_uint_ge(sched_worker_limit(S, w), 51);
    ck_assert_uint_le(sched_worker_limit(S, w), 51 + 51 / 8 + 1);
}
END_TEST

/* ---- the ready queue, against a model ------------------------------------------------- */

/*
 * Random graphs (priorities, dependencies finishing out of order, retries)
 * on one single-threaded worker: every task placed must be the first of
 * the ready ones by (priority desc, submission order asc), whichever part
 * of the ready queue (FIFO lane or heap) it was in.
 */
START_TEST(test_ready_order_model)
{
    enum { N = 3000 };
    static int prio[N + 1], state[N + 1], ndep[N + 1], retries[N + 1];
    static uint64_t deps[N + 1][2];
    enum { M_NONE, M_WAIT, M_READY, M_RUN, M_DONE };
    int u;
    sched_worker_t *w = sched_worker_add(S, "w", 1, &u);
    unsigned seed = 12345;
#define RND() (seed = seed * 1103515245u + 12345u, (seed >> 16) & 0x7fff)
    int submitted = 0, running[4], nrun = 0;
    memset(state, 0, sizeof state);
    while (submitted < N || nrun > 0) {
        /* Submit a few. */
        for (int k = RND() % 8; k > 0 && submitted < N; k--) {
            int i = ++submitted;
            prio[i] = (int)(RND() % 3) - 1;
            retries[i] = RND() % 5 == 0;
            ndep[i] = 0;
            for (int d = 0; d < 2 && i > 1; d++)
                if (RND() % 3 == 0) {
                    int j = i - 1 - (int)(RND() % (i - 1 < 50 ? i - 1 : 50));
                    if (state[j] != M_DONE && state[j] != M_NONE)
                        deps[i][ndep[i]++] = TID(j);
                }
            ck_assert_int_eq(submit_full(TID(i), "f", deps[i], ndep[i], prio[i], retries[i],
                                         NULL), 0);
            state[i] = ndep[i] ? M_WAIT : M_READY;
        }
        /* Place, and check each placement against the model. */
        clear();
        sched_place(S);
        for (size_t e = 0; e < R.n; e++) {
            if (R.v[e].kind != EV_COMPUTE)
                continue;
            int best = 0;
            for (int i = 1; i <= submitted; i++)
                if (state[i] == M_READY && (!best || prio[i] > prio[best]))
                    best = i;
            ck_assert_int_ne(best, 0);
            ck_assert_uint_eq(R.v[e].id, TID(best));
            state[best] = M_RUN;
            running[nrun++] = best;
        }
        /* Finish one running task (a failure with a retry left goes back). */
        if (nrun > 0) {
            int k = (int)(RND() % nrun), i = running[k];
            running[k] = running[--nrun];
            if (retries[i] && RND() % 2) {
                retries[i]--;
                ck_assert_int_eq(sched_task_done(S, w, TID(i), TASK_ERR, "e", 1, 20000), 0);
                state[i] = M_READY;
            } else {
                done_ok(w, TID(i), "r");
                state[i] = M_DONE;
                for (int j = i + 1; j <= submitted; j++) {
                    if (state[j] != M_WAIT)
                        continue;
                    int ready = 1;
                    for (int d = 0; d < ndep[j]; d++)
                        if (state[deps[j][d] & 0xffffffffffull] != M_DONE)
                            ready = 0;
                    if (ready)
                        state[j] = M_READY;
                }
            }
        }
    }
    ck_assert_uint_eq(sched_count(S, TS_MEMORY), N);
#undef RND
}
END_TEST

/* Short tasks are placed in runs on one worker; long ones round robin. */
START_TEST(test_chunked_placement)
{
    int u1, u2, u3;
    sched_worker_t *w[3] = {sched_worker_add(S, "w1", 1, &u1), sched_worker_add(S, "w2", 1, &u2),
                            sched_worker_add(S, "w3", 1, &u3)};
    uint64_t n = 0;
    /* Measure a duration of 2 us: runs of SCHED_CHUNK_US / 2 = 500. */
    ck_assert_int_eq(submit(TID(++n), 0), 0);
    sched_place(S);
    ck_assert_int_eq(sched_task_done(S, find(EV_COMPUTE, TID(1))->user == &u1 ? w[0]
                                        : find(EV_COMPUTE, TID(1))->user == &u2 ? w[1] : w[2],
                                     TID(1), TASK_OK, "x", 1, 2), 0);
    clear();
    for (int i = 0; i < 3000; i++)
        ck_assert_int_eq(submit(TID(++n), 0), 0);
    sched_place(S);
    ck_assert_uint_eq(count_kind(EV_COMPUTE), 3000);
    /* Runs of 500, each on the next worker, in submission order. */
    for (size_t i = 0; i < 3000; i++) {
        ck_assert_uint_eq(R.v[i].id, TID(2 + i));
        ck_assert_ptr_eq(R.v[i].user, R.v[i - i % 500].user);
        if (i % 500 == 0 && i > 0)
            ck_assert_ptr_ne(R.v[i].user, R.v[i - 1].user);
    }
    for (int k = 0; k < 3; k++)
        ck_assert_uint_eq(sched_worker_running(w[k]), 1000);

    /* Long tasks pull the average above SCHED_CHUNK_US: one at a time. */
    uint64_t first = 2;
    for (int k = 0; k < 200; k++, first++) {
        rec_t *e = find(EV_COMPUTE, TID(first));
        sched_worker_t *ww = e->user == &u1 ? w[0] : e->user == &u2 ? w[1] : w[2];
        ck_assert_int_eq(sched_task_done(S, ww, TID(first), TASK_OK, "x", 1, 50000), 0);
    }
    ck_assert(sched_avg_duration_us(S) > SCHED_CHUNK_US);
    /* Drain what is running, then place fresh tasks. */
    for (uint64_t id = first; id <= n; id++) {
        rec_t *e = find(EV_COMPUTE, TID(id));
        sched_worker_t *ww = e->user == &u1 ? w[0] : e->user == &u2 ? w[1] : w[2];
        ck_assert_int_eq(sched_task_done(S, ww, TID(id), TASK_OK, "x", 1, 50000), 0);
    }
    clear();
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(submit(TID(++n), 0), 0);
    sched_place(S);
    ck_assert_uint_eq(count_kind(EV_COMPUTE), 6);
    for (size_t i = 1; i < 6; i++)
        ck_assert_ptr_ne(R.v[i].user, R.v[i - 1].user);
}
END_TEST

/* The run length follows each function's own durations: a function never
 * measured is spread even right after tiny ones, and what was learnt about
 * a function survives its tasks being freed. */
START_TEST(test_chunk_per_function)
{
    int u[3];
    sched_worker_t *w[3];
    for (int i = 0; i < 3; i++)
        w[i] = sched_worker_add(S, "w", 1, &u[i]);
#define WOF(e) ((e)->user == &u[0] ? w[0] : (e)->user == &u[1] ? w[1] : w[2])
    ck_assert_int_eq(submit_full(TID(1), "f", NULL, 0, 0, 0, NULL), 0);
    sched_place(S);
    ck_assert_int_eq(sched_task_done(S, WOF(find(EV_COMPUTE, TID(1))), TID(1), TASK_OK, "x",
                                     1, 2), 0);
    /* "g" has no measurement: one per worker, round robin. */
    clear();
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(submit_full(TID(10 + i), "g", NULL, 0, 0, 0, NULL), 0);
    sched_place(S);
    ck_assert_uint_eq(count_kind(EV_COMPUTE), 6);
    for (size_t i = 1; i < 6; i++)
        ck_assert_ptr_ne(R.v[i].user, R.v[i - 1].user);
    /* "f" is tiny: ten in one run. */
    clear();
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(submit_full(TID(20 + i), "f", NULL, 0, 0, 0, NULL), 0);
    sched_place(S);
    ck_assert_uint_eq(count_kind(EV_COMPUTE), 10);
    for (size_t i = 1; i < 10; i++)
        ck_assert_ptr_eq(R.v[i].user, R.v[0].user);
    /* Release everything (what runs is cancelled): no task uses "f" now. */
    uint64_t ids[] = {TID(1), TID(10), TID(11), TID(12), TID(13), TID(14), TID(15),
                      TID(20), TID(21), TID(22), TID(23), TID(24), TID(25), TID(26),
                      TID(27), TID(28), TID(29)};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        ck_assert_int_eq(sched_release(S, C, ids[i]), 0);
    ck_assert_uint_eq(sched_count(S, TS_PROCESSING), 0);
    ck_assert_uint_eq(sched_ntasks(S), 0);
    ck_assert_uint_eq(sched_interned(S), 0);
    /* "f" again: still known to be tiny. */
    clear();
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(submit_full(TID(40 + i), "f", NULL, 0, 0, 0, NULL), 0);
    sched_place(S);
    ck_assert_uint_eq(count_kind(EV_COMPUTE), 10);
    for (size_t i = 1; i < 10; i++)
        ck_assert_ptr_eq(R.v[i].user, R.v[0].user);
#undef WOF
}
END_TEST

/* Args and results of every size come back intact, whether the record keeps
 * them inline or not, and records are reused without leaking anything. */
START_TEST(test_data_sizes_and_reuse)
{
    int u;
    sched_worker_t *w = sched_worker_add(S, "w", 4, &u);
    static const size_t sizes[] = {0, 1, 8, 16, 17, 31, 200};
    char buf[256];
    for (int round = 0; round < 3; round++) {
        uint64_t base = (uint64_t)round * 100;
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            size_t n = sizes[k];
            for (size_t i = 0; i < n; i++)
                buf[i] = (char)('a' + (i + k) % 26);
            /* Args of n bytes (not valid msgpack: the scheduler does not look). */
            sched_submit_t sub = {.id = TID(base + 1 + k), .func = "f", .func_len = 1,
                                  .args = buf, .args_len = n};
            ck_assert_int_eq(sched_submit(S, C, &sub), 0);
        }
        clear();
        sched_place(S);
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            size_t n = sizes[k];
            rec_t *e = find(EV_COMPUTE, TID(base + 1 + k));
            ck_assert_ptr_nonnull(e);
            ck_assert_uint_eq(e->args_len, n);
            for (size_t i = 0; i < n && i < sizeof e->args; i++)
                ck_assert_int_eq(e->args[i], 'a' + (i + k) % 26);
            /* The result: n bytes of another pattern. */
            for (size_t i = 0; i < n; i++)
                buf[i] = (char)('A' + (i + 3 * k) % 26);
            ck_assert_int_eq(sched_task_done(S, w, TID(base + 1 + k), TASK_OK, buf, n, 5000),
                             0);
            e = find(EV_RESULT, TID(base + 1 + k));
            ck_assert_ptr_nonnull(e);
            ck_assert_uint_eq(strlen(e->text), n < sizeof e->text ? n : sizeof e->text - 1);
            for (size_t i = 0; i < n && i < sizeof e->text - 1; i++)
                ck_assert_int_eq(e->text[i], 'A' + (i + 3 * k) % 26);
        }
        /* A dependent of all of them (an unpooled record) sees every result;
         * one of two deps (pooled) sees its two. */
        uint64_t all[7], two[2] = {TID(base + 4), TID(base + 7)};
        for (size_t k = 0; k < 7; k++)
            all[k] = TID(base + 1 + k);
        ck_assert_int_eq(submit_full(TID(base + 50), "g", all, 7, 0, 0, NULL), 0);
        ck_assert_int_eq(submit_full(TID(base + 51), "g", two, 2, 0, 0, NULL), 0);
        clear();
        sched_place(S);
        rec_t *e = find(EV_COMPUTE, TID(base + 50));
        ck_assert_ptr_nonnull(e);
        ck_assert_uint_eq(e->ndeps, 7);
        for (size_t k = 0; k < 4; k++) {
            ck_assert_uint_eq(e->dep_ids[k], TID(base + 1 + k));
            ck_assert_uint_eq(e->dep_len[k], sizes[k]);
            for (size_t i = 0; i < sizes[k] && i < 31; i++)
                ck_assert_int_eq(e->dep_res[k][i], 'A' + (i + 3 * k) % 26);
        }
        e = find(EV_COMPUTE, TID(base + 51));
        ck_assert_uint_eq(e->ndeps, 2);
        ck_assert_uint_eq(e->dep_len[0], 16);
        ck_assert_uint_eq(e->dep_len[1], 200);
        done_ok(w, TID(base + 50), "x");
        done_ok(w, TID(base + 51), "0123456789abcdef");
        for (size_t k = 0; k < 7; k++)
            ck_assert_int_eq(sched_release(S, C, TID(base + 1 + k)), 0);
        ck_assert_int_eq(sched_release(S, C, TID(base + 50)), 0);
        ck_assert_int_eq(sched_release(S, C, TID(base + 51)), 0);
        ck_assert_uint_eq(sched_ntasks(S), 0);
        ck_assert_uint_eq(sched_interned(S), 0);
    }
}
END_TEST

/* Names of 1..255 bytes, packed ahead: checked by the recorder's
 * cb_compute for every task placed. */
/* ---- the data plane: results kept on workers --------------------------------------- */

#define DWOF(e) ((e)->user == &DU1 ? DW1 : (e)->user == &DU2 ? DW2 : DW3)
static int DU1, DU2, DU3;
static sched_worker_t *DW1, *DW2, *DW3;

static void data_workers(int n)
{
    DW1 = sched_worker_add(S, "w1", 1, &DU1);
    DW2 = n > 1 ? sched_worker_add(S, "w2", 1, &DU2) : NULL;
    DW3 = n > 2 ? sched_worker_add(S, "w3", 1, &DU3) : NULL;
    ck_assert_int_eq(sched_worker_set_data(DW1, "tcp://h1:1"), 0);
    if (DW2)
        ck_assert_int_eq(sched_worker_set_data(DW2, "tcp://h2:2"), 0);
    if (DW3)
        ck_assert_int_eq(sched_worker_set_data(DW3, "tcp://h3:3"), 0);
}

/* Run task id to completion on the worker it was sent to, kept there. */
static sched_worker_t *finish_kept(uint64_t id, uint64_t nbytes)
{
    rec_t *c = find(EV_COMPUTE, id);
    ck_assert_ptr_nonnull(c);
    sched_worker_t *w = c->user == &DU1 ? DW1 : c->user == &DU2 ? DW2 : DW3;
    ck_assert_int_eq(sched_task_done_kept(S, w, id, nbytes, 100), 0);
    return w;
}

static size_t count_ev(int kind, uint64_t id, void *user)
{
    size_t n = 0;
    for (size_t i = 0; i < R.n; i++)
        n += R.v[i].kind == kind && R.v[i].id == id && (!user || R.v[i].user == user);
    return n;
}

START_TEST(test_kept_holders_and_locality)
{
    data_workers(2);
    ck_assert_int_eq(submit(TID(1), 0), 0);
    ck_assert_int_eq(submit(TID(2), 0), 0);
    sched_place(S);
    sched_worker_t *wa = finish_kept(TID(1), 1000);
    sched_worker_t *wb = finish_kept(TID(2), 100000);
    ck_assert_ptr_ne(wa, wb);
    /* Recorded: holder, size, the client told with the worker's name. */
    rec_t *k = find(EV_KEPT, TID(2));
    ck_assert_ptr_nonnull(k);
    ck_assert_uint_eq(k->nbytes, 100000);
    ck_assert_uint_eq(k->nholders, 1);
    ck_assert_str_eq(k->worker, sched_worker_name(wb));
    ck_assert_uint_eq(sched_worker_stored(wb), 100000);
    ck_assert_uint_eq(sched_worker_nheld(wa), 1);
    size_t nh;
    ck_assert_ptr_eq(sched_holders_of(S, TID(1), &nh)[0], wa);
    ck_assert_uint_eq(nh, 1);
    ck_assert_int_eq(sched_state_of(S, TID(1)), TS_MEMORY);

    /* C needs both: it goes where most of its input bytes are, and COMPUTE
     * says where each input is. */
    for (int round = 0; round < 4; round++) {
        uint64_t deps[2] = {TID(1), TID(2)};
        uint64_t c = TID(10 + round);
        ck_assert_int_eq(submit_full(c, "g", deps, 2, 0, 0, NULL), 0);
        sched_place(S);
        rec_t *e = find(EV_COMPUTE, c);
        ck_assert_ptr_nonnull(e);
        ck_assert_ptr_eq(DWOF(e), wb);
        ck_assert_uint_eq(e->dep_nholders[0], 1);
        ck_assert_str_eq(e->dep_holder[0], sched_worker_data(wa));
        ck_assert_str_eq(e->dep_holder[1], sched_worker_data(wb));
        ck_assert_int_eq(sched_task_done(S, wb, c, TASK_OK, "x", 1, 100), 0);
        /* D needs only the small one: it goes to wa. */
        uint64_t d = TID(20 + round);
        ck_assert_int_eq(submit_full(d, "g", deps, 1, 0, 0, NULL), 0);
        sched_place(S);
        e = find(EV_COMPUTE, d);
        ck_assert_ptr_eq(DWOF(e), wa);
        ck_assert_int_eq(sched_task_done(S, wa, d, TASK_OK, "x", 1, 100), 0);
    }
    /* A successful inline result names its worker too. */
    rec_t *r = find(EV_RESULT, TID(10));
    ck_assert_ptr_nonnull(r);
    ck_assert_str_eq(r->worker, sched_worker_name(wb));
}
END_TEST

/* Plain tasks until w is full (its in-flight limit), with `other` paused
 * meanwhile so that it stays idle.  Returns the next free task number. */
static int fill_worker(sched_worker_t *w, sched_worker_t *other, int n)
{
    sched_worker_set_paused(S, other, 1);
    while (sched_worker_running(w) < sched_worker_limit(S, w)) {
        ck_assert_int_lt(n, 1000);
        ck_assert_int_eq(submit(TID(n), 0), 0);
        sched_place(S);
        rec_t *e = find(EV_COMPUTE, TID(n));
        ck_assert_ptr_nonnull(e);
        ck_assert_ptr_eq(DWOF(e), w);
        n++;
    }
    sched_worker_set_paused(S, other, 0);
    ck_assert_uint_eq(sched_worker_running(other), 0);
    return n;
}

/* A task whose input lies on a worker that is full waits there when the
 * queue is shorter than fetching the input elsewhere would take (8 MB at
 * 100 MB/s: 80 ms, against two 20 ms tasks ahead of it), and goes to the
 * idle worker when the input is cheap to move (100 kB: 1 ms). */
START_TEST(test_locality_waits_for_full_holder)
{
    data_workers(2);
    /* Measured durations: 20 ms a task, so one task of prefetch each. */
    ck_assert_int_eq(submit(TID(1), 0), 0);
    ck_assert_int_eq(submit(TID(2), 0), 0);
    sched_place(S);
    rec_t *e1 = find(EV_COMPUTE, TID(1)), *e2 = find(EV_COMPUTE, TID(2));
    sched_worker_t *wa = DWOF(e1), *wb = DWOF(e2);
    ck_assert_ptr_ne(wa, wb);
    ck_assert_int_eq(sched_task_done_kept(S, wa, TID(1), 8000000, 20000), 0); /* big */
    ck_assert_int_eq(sched_task_done_kept(S, wb, TID(2), 100000, 20000), 0);  /* small */
    ck_assert_uint_eq(sched_worker_limit(S, wa), 2);

    /* The big input's holder is full, the other worker idle: wait. */
    int n = fill_worker(wa, wb, 100);
    uint64_t dep = TID(1);
    ck_assert_int_eq(submit_full(TID(10), "g", &dep, 1, 0, 0, NULL), 0);
    sched_place(S);
    rec_t *e = find(EV_COMPUTE, TID(10));
    ck_assert_ptr_nonnull(e);
    ck_assert_ptr_eq(DWOF(e), wa);
    ck_assert_uint_eq(sched_worker_running(wa), 3); /* over its limit: queued there */
    ck_assert_uint_eq(sched_worker_running(wb), 0);

    /* ...but not behind a queue longer than the fetch: with five tasks
     * ahead (100 ms) the next one goes to the idle worker. */
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(submit_full(TID(11 + i), "g", &dep, 1, 0, 0, NULL), 0);
        sched_place(S);
        ck_assert_ptr_eq(DWOF(find(EV_COMPUTE, TID(11 + i))), wa);
    }
    ck_assert_int_eq(submit_full(TID(13), "g", &dep, 1, 0, 0, NULL), 0);
    sched_place(S);
    ck_assert_ptr_eq(DWOF(find(EV_COMPUTE, TID(13))), wb);

    /* Drain both, then fill the small input's holder: that input moves. */
    for (sched_worker_t *w = wa;; w = wb) {
        for (size_t i = R.n; i-- > 0;) {
            rec_t *r = &R.v[i];
            if (r->kind == EV_COMPUTE && DWOF(r) == w &&
                sched_state_of(S, r->id) == TS_PROCESSING)
                done_ok(w, r->id, "x");
        }
        if (w == wb)
            break;
    }
    ck_assert_uint_eq(sched_worker_running(wa), 0);
    ck_assert_uint_eq(sched_worker_running(wb), 0);
    fill_worker(wb, wa, n);
    dep = TID(2);
    ck_assert_int_eq(submit_full(TID(20), "g", &dep, 1, 0, 0, NULL), 0);
    sched_place(S);
    ck_assert_ptr_eq(DWOF(find(EV_COMPUTE, TID(20))), wa);
}
END_TEST

START_TEST(test_kept_free_on_release)
{
    data_workers(2);
    ck_assert_int_eq(submit(TID(1), 0), 0);
    sched_place(S);
    sched_worker_t *w = finish_kept(TID(1), 5000);
    /* A dependent keeps it while pending, even once released. */
    uint64_t dep = TID(1);
    ck_assert_int_eq(submit_full(TID(2), "g", &dep, 1, 0, 0, NULL), 0);
    sched_place(S);
    ck_assert_int_eq(sched_release(S, C, TID(1)), 0);
    ck_assert_uint_eq(count_kind(EV_FREE), 0);
    ck_assert_int_eq(sched_state_of(S, TID(1)), TS_MEMORY);
    ck_assert_int_eq(sched_task_done(S, DWOF(find(EV_COMPUTE, TID(2))), TID(2), TASK_OK, "x", 1,
                                     10), 0);
    /* Nobody needs it now: FREE to its holder, record gone. */
    ck_assert_uint_eq(count_ev(EV_FREE, TID(1), w == DW1 ? (void *)&DU1 : (void *)&DU2), 1);
    ck_assert_int_eq(sched_state_of(S, TID(1)), TS_FORGOTTEN);
    ck_assert_uint_eq(sched_worker_stored(w), 0);
    ck_assert_uint_eq(sched_worker_nheld(w), 0);
}
END_TEST

START_TEST(test_kept_lost_recomputed)
{
    data_workers(2);
    sched_worker_set_paused(S, DW2, 1);
    /* A -> B, both kept on w1; the client wants only B. */
    ck_assert_int_eq(submit(TID(1), 0), 0);
    uint64_t a = TID(1);
    ck_assert_int_eq(submit_full(TID(2), "g", &a, 1, 0, 0, NULL), 0);
    sched_place(S);
    finish_kept(TID(1), 70000);
    sched_place(S);
    ck_assert_ptr_eq(DWOF(find(EV_COMPUTE, TID(2))), DW1);
    finish_kept(TID(2), 80000);
    ck_assert_int_eq(sched_release(S, C, TID(1)), 0);
    /* A's record stays (B may have to be computed again), its bytes go:
     * nothing pending needs them. */
    ck_assert_int_eq(sched_state_of(S, TID(1)), TS_MEMORY);
    ck_assert_uint_eq(count_ev(EV_FREE, TID(1), &DU1), 1);
    ck_assert_uint_eq(sched_worker_stored(DW1), 80000);
    ck_assert_uint_eq(sched_worker_nheld(DW1), 1);
    sched_worker_set_paused(S, DW2, 0);
    clear();
    sched_worker_remove(S, DW1, 1);
    DW1 = NULL;
    /* B is wanted and lost: computed again, and A before it. */
    ck_assert_int_eq(sched_state_of(S, TID(2)), TS_WAITING);
    ck_assert_int_eq(sched_state_of(S, TID(1)), TS_READY);
    sched_place(S);
    ck_assert_ptr_eq(find(EV_COMPUTE, TID(1))->user, &DU2);
    ck_assert_ptr_null(find(EV_COMPUTE, TID(2)));
    finish_kept(TID(1), 70000);
    sched_place(S);
    rec_t *e = find(EV_COMPUTE, TID(2));
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(e->dep_holder[0], "tcp://h2:2");
    finish_kept(TID(2), 80000);
    rec_t *k = find(EV_KEPT, TID(2));
    ck_assert_ptr_nonnull(k);
    ck_assert_str_eq(k->worker, "w2");
}
END_TEST

/* A chain of kept results frees each intermediate's bytes once nothing
 * pending needs them, keeps the records, and computes them again if the
 * end of the chain is lost. */
START_TEST(test_kept_chain_frees_intermediates)
{
    data_workers(2);
    sched_worker_set_paused(S, DW2, 1);
    /* A -> B -> D, and C also on A; the client wants C and D. */
    uint64_t a = TID(1), b = TID(2);
    ck_assert_int_eq(submit(a, 0), 0);
    ck_assert_int_eq(submit_full(b, "g", &a, 1, 0, 0, NULL), 0);
    ck_assert_int_eq(submit_full(TID(3), "g", &a, 1, 0, 0, NULL), 0);
    ck_assert_int_eq(submit_full(TID(4), "g", &b, 1, 0, 0, NULL), 0);
    ck_assert_int_eq(sched_release(S, C, a), 0);
    ck_assert_int_eq(sched_release(S, C, b), 0);
    sched_place(S);
    finish_kept(a, 1000000);
    sched_place(S);
    finish_kept(b, 2000000);
    /* C is still pending on A: A's bytes stay. */
    ck_assert_uint_eq(count_ev(EV_FREE, a, NULL), 0);
    ck_assert_uint_eq(sched_worker_stored(DW1), 3000000);
    sched_place(S);
    ck_assert_int_eq(sched_task_done(S, DW1, TID(3), TASK_OK, "x", 1, 10), 0);
    /* Only B (a kept result) holds A now: FREE, the record stays. */
    ck_assert_uint_eq(count_ev(EV_FREE, a, &DU1), 1);
    ck_assert_int_eq(sched_state_of(S, a), TS_MEMORY);
    ck_assert_uint_eq(sched_worker_stored(DW1), 2000000);
    sched_place(S);
    finish_kept(TID(4), 3000000);
    /* D done: B's bytes go too; D's stay (the client wants D). */
    ck_assert_uint_eq(count_ev(EV_FREE, b, &DU1), 1);
    ck_assert_uint_eq(count_ev(EV_FREE, TID(4), NULL), 0);
    ck_assert_uint_eq(sched_worker_stored(DW1), 3000000);
    sched_stats_t st;
    sched_get_stats(S, &st);
    ck_assert_uint_eq(st.dropped, 2);

    /* D's holder dies: D, B and A are computed again, A first. */
    sched_worker_set_paused(S, DW2, 0);
    clear();
    sched_worker_remove(S, DW1, 1);
    DW1 = NULL;
    ck_assert_int_eq(sched_state_of(S, TID(4)), TS_WAITING);
    ck_assert_int_eq(sched_state_of(S, b), TS_WAITING);
    ck_assert_int_eq(sched_state_of(S, a), TS_READY);
    sched_place(S);
    finish_kept(a, 1000000);
    sched_place(S);
    finish_kept(b, 2000000);
    ck_assert_uint_eq(count_ev(EV_FREE, a, &DU2), 1);
    sched_place(S);
    finish_kept(TID(4), 3000000);
    ck_assert_uint_eq(count_ev(EV_FREE, b, &DU2), 1);
    ck_assert_uint_eq(sched_worker_stored(DW2), 3000000);
    rec_t *k = find(EV_KEPT, TID(4));
    ck_assert_ptr_nonnull(k);
    ck_assert_str_eq(k->worker, "w2");

    /* Releasing D frees it and forgets the whole chain. */
    ck_assert_int_eq(sched_release(S, C, TID(4)), 0);
    ck_assert_uint_eq(count_ev(EV_FREE, TID(4), &DU2), 1);
    ck_assert_int_eq(sched_state_of(S, TID(4)), TS_FORGOTTEN);
    ck_assert_int_eq(sched_state_of(S, b), TS_FORGOTTEN);
    ck_assert_int_eq(sched_state_of(S, a), TS_FORGOTTEN);
    ck_assert_uint_eq(sched_worker_stored(DW2), 0);
    ck_assert_uint_eq(sched_worker_nheld(DW2), 0);
}
END_TEST

/* Copies fetched by workers become holders (HAVE); unwanted ones get FREE. */
START_TEST(test_replicas)
{
    data_workers(3);
    sched_worker_set_paused(S, DW2, 1);
    sched_worker_set_paused(S, DW3, 1);
    uint64_t a = TID(1);
    ck_assert_int_eq(submit(a, 0), 0);
    sched_place(S);
    finish_kept(a, 500000);
    /* B runs on w2 (w1 paused now), fetches A there and keeps the copy. */
    sched_worker_set_paused(S, DW1, 1);
    sched_worker_set_paused(S, DW2, 0);
    ck_assert_int_eq(submit_full(TID(2), "g", &a, 1, 0, 0, NULL), 0);
    sched_place(S);
    ck_assert_ptr_eq(DWOF(find(EV_COMPUTE, TID(2))), DW2);
    ck_assert_int_eq(sched_replica_add(S, DW2, a), 1);
    ck_assert_int_eq(sched_replica_add(S, DW2, a), 1); /* twice: still one holder */
    size_t nh;
    sched_holders_of(S, a, &nh);
    ck_assert_uint_eq(nh, 2);
    ck_assert_uint_eq(sched_worker_stored(DW2), 500000);
    ck_assert_int_eq(sched_task_done(S, DW2, TID(2), TASK_OK, "x", 1, 10), 0);
    /* Copies of unknown results are dropped at once. */
    clear();
    ck_assert_int_eq(sched_replica_add(S, DW3, TID(99)), 0);
    ck_assert_uint_eq(count_ev(EV_FREE, TID(99), &DU3), 1);

    /* The first holder dies: the copy keeps A in memory, nothing recomputed. */
    sched_worker_remove(S, DW1, 1);
    DW1 = NULL;
    ck_assert_int_eq(sched_state_of(S, a), TS_MEMORY);
    ck_assert_ptr_eq(sched_holders_of(S, a, &nh)[0], DW2);
    ck_assert_uint_eq(nh, 1);
    ck_assert_uint_eq(count_kind(EV_COMPUTE), 0);
    sched_stats_t st;
    sched_get_stats(S, &st);
    ck_assert_uint_eq(st.requeued, 0);
    ck_assert_uint_eq(st.replicas, 2);

    /* Released: FREE goes to the copy's worker too. */
    ck_assert_int_eq(sched_release(S, C, a), 0);
    ck_assert_uint_eq(count_ev(EV_FREE, a, &DU2), 1);
    ck_assert_int_eq(sched_state_of(S, a), TS_FORGOTTEN);
    ck_assert_uint_eq(sched_worker_stored(DW2), 0);
    /* A copy announced after that is dropped. */
    ck_assert_int_eq(sched_replica_add(S, DW3, a), 0);
    ck_assert_uint_eq(count_ev(EV_FREE, a, &DU3), 1);
}
END_TEST

START_TEST(test_scatter_lost_fails)
{
    data_workers(2);
    sched_worker_t *ws[1] = {DW1};
    ck_assert_int_eq(sched_scatter(S, C, TID(1), 300000, ws, 1), 0);
    ck_assert_int_eq(sched_state_of(S, TID(1)), TS_MEMORY);
    ck_assert_int_eq(sched_scatter(S, C, TID(1), 1, ws, 1), -1); /* duplicate */
    ck_assert_uint_eq(sched_worker_stored(DW1), 300000);
    uint64_t x = TID(1);
    ck_assert_int_eq(submit_full(TID(2), "g", &x, 1, 0, 0, NULL), 0);
    sched_place(S);
    ck_assert_ptr_eq(find(EV_COMPUTE, TID(2))->user, &DU1); /* went to the data */
    clear();
    sched_worker_remove(S, DW1, 1);
    rec_t *r = find(EV_RESULT, TID(1));
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->status, TASK_ERR);
    ck_assert_str_eq(r->text, "scattered data lost with worker w1");
    sched_place(S);
    r = find(EV_RESULT, TID(2));
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->status, TASK_ERR);
    ck_assert_ptr_nonnull(strstr(r->text, "scattered data lost with worker w1"));
    ck_assert_ptr_null(find(EV_COMPUTE, TID(2)));
}
END_TEST

START_TEST(test_task_missing_and_pause)
{
    data_workers(2);
    sched_worker_set_paused(S, DW2, 1);
    ck_assert_int_eq(submit(TID(1), 0), 0);
    sched_place(S);
    ck_assert_ptr_eq(find(EV_COMPUTE, TID(1))->user, &DU1);
    finish_kept(TID(1), 90000);
    /* w1 paused, w2 resumed: B has to go to w2 despite the data. */
    sched_worker_set_paused(S, DW1, 1);
    sched_worker_set_paused(S, DW2, 0);
    ck_assert(sched_worker_paused(DW1));
    uint64_t a = TID(1);
    ck_assert_int_eq(submit_full(TID(2), "g", &a, 1, 0, 0, NULL), 0);
    ck_assert_int_eq(submit(TID(3), 0), 0);
    sched_place(S);
    ck_assert_ptr_eq(find(EV_COMPUTE, TID(2))->user, &DU2);
    ck_assert_uint_eq(count_ev(EV_COMPUTE, TID(3), &DU1), 0);
    sched_worker_set_paused(S, DW1, 0);
    clear();
    /* w2 could not fetch A: A's holder is told to drop it, A runs again,
     * B waits for it (not counted as a retry). */
    ck_assert_int_eq(sched_task_missing(S, DW2, TID(2), &a, 1), 0);
    ck_assert_int_eq(sched_task_missing(S, DW2, TID(2), &a, 1), -1); /* not running now */
    ck_assert_uint_eq(count_ev(EV_FREE, TID(1), &DU1), 1);
    sched_place(S);
    ck_assert_int_eq(sched_state_of(S, TID(2)), TS_WAITING);
    ck_assert_ptr_nonnull(find(EV_COMPUTE, TID(1)));
    finish_kept(TID(1), 90000);
    sched_place(S);
    ck_assert_ptr_nonnull(find(EV_COMPUTE, TID(2)));
    ck_assert_uint_eq(find(EV_COMPUTE, TID(2))->dep_nholders[0], 1);
}
END_TEST

/* ---- resources and restrictions --------------------------------------------------- */

static int submit_cons(uint64_t id, const char *res, double amount, const char *only, int prio)
{
    static const char args[] = "\x90";
    sched_resource_t r = {res, res ? strlen(res) : 0, amount};
    sched_name_t o = {only, only ? strlen(only) : 0};
    sched_submit_t sub = {
        .id = id, .func = "g", .func_len = 1, .args = args, .args_len = 1,
        .priority = prio, .res = res ? &r : NULL, .nres = res ? 1 : 0,
        .only = only ? &o : NULL, .nonly = only ? 1 : 0,
    };
    return sched_submit(S, C, &sub);
}

static size_t count_on(void *user)
{
    size_t n = 0;
    for (size_t i = 0; i < R.n; i++)
        n += R.v[i].kind == EV_COMPUTE && R.v[i].user == user;
    return n;
}

START_TEST(test_resources_never_oversubscribed)
{
    int u1, u2;
    sched_worker_t *cpu = sched_worker_add(S, "cpu", 4, &u1);
    sched_worker_t *gpu = sched_worker_add(S, "gpu", 4, &u2);
    sched_resource_t g = {"GPU", 3, 2.0};
    ck_assert_int_eq(sched_worker_set_resources(S, gpu, &g, 1), 0);
    /* Bad declarations are refused. */
    sched_resource_t bad = {"GPU", 3, -1.0};
    ck_assert_int_eq(sched_worker_set_resources(S, cpu, &bad, 1), -1);
    sched_resource_t dup[2] = {{"A", 1, 1}, {"A", 1, 2}};
    ck_assert_int_eq(sched_worker_set_resources(S, cpu, dup, 2), -1);

    for (int i = 1; i <= 6; i++)
        ck_assert_int_eq(submit_cons(TID(i), "GPU", 1.0, NULL, 0), 0);
    for (int i = 7; i <= 8; i++)
        ck_assert_int_eq(submit(TID(i), 0), 0);
    sched_place(S);
    /* Two GPUs: two GPU tasks at a time however many threads and however
     * much prefetch; none on the worker without GPUs. */
    ck_assert_uint_eq(count_on(&u2) - (find(EV_COMPUTE, TID(7)) && find(EV_COMPUTE, TID(7))->user == &u2) -
                          (find(EV_COMPUTE, TID(8)) && find(EV_COMPUTE, TID(8))->user == &u2),
                      2);
    double used;
    ck_assert(sched_worker_resource(gpu, "GPU", &used) == 2.0);
    ck_assert(used == 2.0);
    for (int i = 1; i <= 6; i++) {
        rec_t *e = find(EV_COMPUTE, TID(i));
        if (e)
            ck_assert_ptr_eq(e->user, &u2);
    }
    ck_assert_ptr_nonnull(find(EV_COMPUTE, TID(7)));
    ck_assert_ptr_nonnull(find(EV_COMPUTE, TID(8)));
    /* Waiting GPU tasks count as ready. */
    ck_assert_uint_eq(sched_count(S, TS_READY), 4);

    /* Each completion frees one GPU: one more task; in submission order. */
    size_t ran = 0;
    uint64_t next = 1;
    while (ran < 6) {
        rec_t *e = NULL;
        for (; next <= 6 && !(e = find(EV_COMPUTE, TID(next))); next++)
            ;
        ck_assert_ptr_nonnull(e);
        uint64_t id = e->id;
        next++;
        done_ok(gpu, id, "r");
        ran++;
        sched_place(S);
        sched_worker_resource(gpu, "GPU", &used);
        ck_assert(used <= 2.0);
        ck_assert_uint_le(sched_worker_running(gpu), 4);
    }
    sched_worker_resource(gpu, "GPU", &used);
    ck_assert(used == 0.0);
    ck_assert_uint_eq(count_on(&u1) <= 2, 1);
    (void)cpu;
}
END_TEST

START_TEST(test_resources_returned)
{
    int u1, u2;
    sched_worker_t *a = sched_worker_add(S, "a", 2, &u1);
    sched_resource_t g = {"GPU", 3, 1.0};
    ck_assert_int_eq(sched_worker_set_resources(S, a, &g, 1), 0);
    ck_assert_int_eq(submit_cons(TID(1), "GPU", 1.0, NULL, 0), 0);
    ck_assert_int_eq(submit_cons(TID(2), "GPU", 1.0, NULL, 0), 0);
    sched_place(S);
    ck_assert_ptr_nonnull(find(EV_COMPUTE, TID(1)));
    ck_assert_ptr_null(find(EV_COMPUTE, TID(2)));
    double used;
    /* Cancel returns it. */
    ck_assert_int_eq(sched_cancel(S, C, TID(1)), 0);
    sched_worker_resource(a, "GPU", &used);
    ck_assert(used == 0.0);
    sched_place(S);
    ck_assert_ptr_nonnull(find(EV_COMPUTE, TID(2)));
    /* An error returns it, and the next task gets it. */
    ck_assert_int_eq(submit_cons(TID(3), "GPU", 1.0, NULL, 0), 0);
    sched_place(S);
    ck_assert_ptr_null(find(EV_COMPUTE, TID(3)));
    done_err(a, TID(2), "boom");
    sched_worker_resource(a, "GPU", &used);
    ck_assert(used == 0.0);
    sched_place(S);
    ck_assert_ptr_nonnull(find(EV_COMPUTE, TID(3)));
    /* Worker loss: the task goes back and waits for another GPU worker. */
    clear();
    sched_worker_remove(S, a, 1);
    ck_assert_int_eq(sched_state_of(S, TID(3)), TS_READY);
    sched_worker_t *b = sched_worker_add(S, "b", 1, &u2);
    sched_place(S);
    ck_assert_ptr_null(find(EV_COMPUTE, TID(3))); /* b has no GPU */
    ck_assert_uint_eq(sched_count(S, TS_READY), 1);
    sched_worker_t *c = sched_worker_add(S, "c", 1, &u1);
    ck_assert_int_eq(sched_worker_set_resources(S, c, &g, 1), 0);
    sched_place(S);
    ck_assert_ptr_eq(find(EV_COMPUTE, TID(3))->user, &u1);
    sched_worker_resource(c, "GPU", &used);
    ck_assert(used == 1.0);
    done_ok(c, TID(3), "x");
    sched_worker_resource(c, "GPU", &used);
    ck_assert(used == 0.0);
    (void)b;
}
END_TEST

START_TEST(test_restrictions)
{
    int u1, u2, u3;
    sched_worker_t *w1 = sched_worker_add(S, "w1", 2, &u1);
    sched_worker_t *w2 = sched_worker_add(S, "w2", 2, &u2);
    for (int i = 1; i <= 6; i++)
        ck_assert_int_eq(submit_cons(TID(i), NULL, 0, "w2", 0), 0);
    /* Restricted to a worker that is not there: it waits. */
    ck_assert_int_eq(submit_cons(TID(7), NULL, 0, "w3", 0), 0);
    for (int round = 0; round < 10 && sched_count(S, TS_MEMORY) < 6; round++) {
        sched_place(S);
        for (int i = 1; i <= 6; i++)
            if (sched_state_of(S, TID(i)) == TS_PROCESSING)
                done_ok(w2, TID(i), "r");
    }
    ck_assert_uint_eq(sched_count(S, TS_MEMORY), 6);
    ck_assert_uint_eq(count_on(&u1), 0);
    ck_assert_uint_eq(count_on(&u2), 6);
    ck_assert_int_eq(sched_state_of(S, TID(7)), TS_READY);
    /* Unconstrained tasks still go everywhere meanwhile. */
    ck_assert_int_eq(submit(TID(8), 0), 0);
    sched_place(S);
    ck_assert_int_eq(sched_state_of(S, TID(8)), TS_PROCESSING);
    sched_worker_t *w3 = sched_worker_add(S, "w3", 1, &u3);
    sched_place(S);
    ck_assert_ptr_eq(find(EV_COMPUTE, TID(7))->user, &u3);
    /* Bad constraints are refused with a reason. */
    ck_assert_int_eq(submit_cons(TID(9), "GPU", -2, NULL, 0), -1);
    ck_assert_ptr_nonnull(strstr(find(EV_RESULT, TID(9))->text, "amount"));
    ck_assert_int_eq(submit_cons(TID(10), "", 1, NULL, 0), -1);
    static const char args[] = "\x90";
    sched_resource_t twice[2] = {{"GPU", 3, 1}, {"GPU", 3, 1}};
    sched_submit_t sub = {.id = TID(11), .func = "g", .func_len = 1, .args = args,
                          .args_len = 1, .res = twice, .nres = 2};
    ck_assert_int_eq(sched_submit(S, C, &sub), -1);
    ck_assert_ptr_nonnull(strstr(find(EV_RESULT, TID(11))->text, "twice"));
    ck_assert_int_eq(sched_state_of(S, TID(11)), TS_FORGOTTEN);
    (void)w1;
    (void)w3;
}
END_TEST

START_TEST(test_resources_kinds_and_release)
{
    int u1;
    sched_worker_t *w = sched_worker_add(S, "w", 4, &u1);
    sched_resource_t r[2] = {{"GPU", 3, 1.0}, {"MEM", 3, 10.0}};
    ck_assert_int_eq(sched_worker_set_resources(S, w, r, 2), 0);
    /* MEM=6 twice does not fit in 10: one at a time; GPU=1 runs next to
     * one of them; fractions add up exactly to the total. */
    ck_assert_int_eq(submit_cons(TID(1), "MEM", 6, NULL, 0), 0);
    ck_assert_int_eq(submit_cons(TID(2), "MEM", 6, NULL, 0), 0);
    ck_assert_int_eq(submit_cons(TID(3), "GPU", 0.5, NULL, 0), 0);
    ck_assert_int_eq(submit_cons(TID(4), "GPU", 0.5, NULL, 0), 0);
    ck_assert_int_eq(submit_cons(TID(5), "GPU", 0.5, NULL, 0), 0);
    /* Higher priority goes first within a kind. */
    ck_assert_int_eq(submit_cons(TID(6), "MEM", 6, NULL, 5), 0);
    sched_place(S);
    ck_assert_int_eq(sched_state_of(S, TID(6)), TS_PROCESSING);
    ck_assert_int_eq(sched_state_of(S, TID(1)), TS_READY);
    ck_assert_int_eq(sched_state_of(S, TID(3)), TS_PROCESSING);
    ck_assert_int_eq(sched_state_of(S, TID(4)), TS_PROCESSING);
    ck_assert_int_eq(sched_state_of(S, TID(5)), TS_READY);
    /* Releasing waiting tasks frees them and their kinds cleanly. */
    ck_assert_int_eq(sched_release(S, C, TID(1)), 0);
    ck_assert_int_eq(sched_release(S, C, TID(5)), 0);
    ck_assert_int_eq(sched_state_of(S, TID(1)), TS_FORGOTTEN);
    done_ok(w, TID(6), "r");
    sched_place(S);
    ck_assert_int_eq(sched_state_of(S, TID(2)), TS_PROCESSING);
    double used;
    sched_worker_resource(w, "MEM", &used);
    ck_assert(used == 6.0);
    sched_worker_resource(w, "GPU", &used);
    ck_assert(used == 1.0);
}
END_TEST

START_TEST(test_work_stealing)
{
    int u1, u2;
    /* One worker of 2 threads, no duration known: 4 in flight, 2 queued. */
    sched_worker_t *w1 = sched_worker_add(S, "w1", 2, &u1);
    for (int i = 1; i <= 4; i++)
        ck_assert_int_eq(submit(TID(i), 0), 0);
    sched_place(S);
    ck_assert_uint_eq(sched_worker_running(w1), 4);
    /* Nobody idle: nothing to do. */
    ck_assert_uint_eq(sched_steal(S, 64), 0);
    sched_worker_t *w2 = sched_worker_add(S, "w2", 1, &u2);
    sched_place(S);
    clear();
    /* w2 has one idle thread: one task asked for, the most recent one. */
    ck_assert_uint_eq(sched_steal(S, 64), 1);
    ck_assert_uint_eq(count_kind(EV_STEAL), 1);
    rec_t *st = find(EV_STEAL, TID(4));
    ck_assert_ptr_nonnull(st);
    ck_assert_ptr_eq(st->user, &u1);
    /* Not asked twice while the answer is pending. */
    ck_assert_uint_eq(sched_steal(S, 64), 0);
    /* A reply from the wrong worker or for another task is ignored. */
    ck_assert_int_eq(sched_steal_reply(S, w2, TID(4), 1), -1);
    ck_assert_int_eq(sched_steal_reply(S, w1, TID(3), 1), -1);
    /* Given back: ready again, placed on the idle worker. */
    ck_assert_int_eq(sched_steal_reply(S, w1, TID(4), 1), 0);
    ck_assert_int_eq(sched_state_of(S, TID(4)), TS_READY);
    ck_assert_uint_eq(sched_worker_running(w1), 3);
    sched_place(S);
    ck_assert_ptr_eq(find(EV_COMPUTE, TID(4))->user, &u2);
    /* A late TASK_DONE from the victim is stale. */
    ck_assert_int_eq(sched_task_done(S, w1, TID(4), TASK_OK, "x", 1, 10), -1);
    done_ok(w2, TID(4), "r");
    ck_assert_int_eq(sched_state_of(S, TID(4)), TS_MEMORY);

    /* Refused (it had started): it stays where it is. */
    sched_place(S);
    clear();
    ck_assert_uint_eq(sched_steal(S, 1), 1);
    uint64_t id = R.v[0].id;
    ck_assert_int_eq(sched_steal_reply(S, w1, id, 0), 0);
    ck_assert_int_eq(sched_state_of(S, id), TS_PROCESSING);
    ck_assert_ptr_null(find(EV_COMPUTE, id));
    /* Finished while a steal is pending: the late reply finds nothing. */
    clear();
    ck_assert_uint_eq(sched_steal(S, 1), 1);
    id = R.v[0].id;
    done_ok(w1, id, "r");
    ck_assert_int_eq(sched_steal_reply(S, w1, id, 1), -1);
    ck_assert_int_eq(sched_state_of(S, id), TS_MEMORY);
    sched_stats_t stats;
    sched_get_stats(S, &stats);
    ck_assert_uint_eq(stats.steals, 3);
    ck_assert_uint_eq(stats.stolen, 1);
}
END_TEST

START_TEST(test_steal_skips_big_inputs_and_constraints)
{
    data_workers(1);
    /* A 100 MB input kept on w1 and a function never measured: moving it
     * is not worth it. */
    ck_assert_int_eq(submit(TID(1), 0), 0);
    sched_place(S);
    finish_kept(TID(1), 100000000);
    uint64_t a = TID(1);
    for (int i = 2; i <= 5; i++)
        ck_assert_int_eq(submit_full(TID(i), "big", &a, 1, 0, 0, NULL), 0);
    sched_place(S);
    ck_assert_uint_eq(sched_worker_running(DW1), 4);
    /* A constrained task is not stolen either. */
    ck_assert_int_eq(submit_cons(TID(6), NULL, 0, "w1", 0), 0);
    sched_place(S);
    ck_assert_uint_eq(sched_worker_running(DW1), 5);
    int u2;
    sched_worker_t *w2 = sched_worker_add(S, "idle", 4, &u2);
    sched_place(S);
    clear();
    ck_assert_uint_eq(sched_steal(S, 64), 0);
    (void)w2;
}
END_TEST

START_TEST(test_refetch)
{
    data_workers(1);
    ck_assert_int_eq(submit(TID(1), 0), 0);
    sched_place(S);
    finish_kept(TID(1), 100000);
    clear();
    ck_assert_int_eq(sched_refetch(S, C, TID(1)), 0);
    ck_assert_uint_eq(count_ev(EV_KEPT, TID(1), NULL), 1);
    ck_assert_int_eq(sched_refetch(S, C, TID(99)), -1);
    /* Lost: a new worker computes it again, then the client hears. */
    sched_worker_remove(S, DW1, 1);
    ck_assert_int_eq(sched_state_of(S, TID(1)), TS_READY);
    data_workers(1);
    sched_place(S);
    finish_kept(TID(1), 100000);
    ck_assert_uint_eq(count_ev(EV_KEPT, TID(1), NULL), 2);
}
END_TEST

START_TEST(test_func_names_packed)
{
    int u;
    sched_worker_add(S, "w", 8, &u);
    char name[256];
    static const size_t lens[] = {1, 30, 31, 32, 100, 255};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        memset(name, 'n', lens[k]);
        name[lens[k]] = '\0';
        name[0] = (char)('a' + k);
        ck_assert_int_eq(submit_full(TID(k + 1), name, NULL, 0, 0, 0, NULL), 0);
        ck_assert_int_eq(submit_full(TID(k + 101), name, NULL, 0, 0, 0, NULL), 0);
    }
    ck_assert_uint_eq(sched_interned(S), sizeof lens / sizeof lens[0]);
    sched_place(S);
    ck_assert_uint_eq(count_kind(EV_COMPUTE), 2 * sizeof lens / sizeof lens[0]);
}
END_TEST

Suite *state_suite(void)
{
    Suite *s = suite_create("scheduler_state");
    TCase *tc = tcase_create("state");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_priority_order);
    tcase_add_test(tc, test_spread_over_workers);
    tcase_add_test(tc, test_prefetch_follows_durations);
    tcase_add_test(tc, test_deps_release_dependents);
    tcase_add_test(tc, test_duplicate_and_unknown);
    tcase_add_test(tc, test_error_propagation);
    tcase_add_test(tc, test_retries);
    tcase_add_test(tc, test_cancel);
    tcase_add_test(tc, test_worker_loss);
    tcase_add_test(tc, test_release_frees);
    tcase_add_test(tc, test_release_pending);
    tcase_add_test(tc, test_client_remove);
    tcase_add_test(tc, test_long_chain);
    tcase_add_test(tc, test_prefetch_hysteresis);
    tcase_add_test(tc, test_ready_order_model);
    tcase_add_test(tc, test_chunked_placement);
    tcase_add_test(tc, test_chunk_per_function);
    tcase_add_test(tc, test_data_sizes_and_reuse);
    tcase_add_test(tc, test_func_names_packed);
    tcase_add_test(tc, test_kept_holders_and_locality);
    tcase_add_test(tc, test_locality_waits_for_full_holder);
    tcase_add_test(tc, test_kept_free_on_release);
    tcase_add_test(tc, test_kept_lost_recomputed);
    tcase_add_test(tc, test_kept_chain_frees_intermediates);
    tcase_add_test(tc, test_replicas);
    tcase_add_test(tc, test_scatter_lost_fails);
    tcase_add_test(tc, test_task_missing_and_pause);
    tcase_add_test(tc, test_refetch);
    tcase_add_test(tc, test_resources_never_oversubscribed);
    tcase_add_test(tc, test_work_stealing);
    tcase_add_test(tc, test_steal_skips_big_inputs_and_constraints);
    tcase_add_test(tc, test_resources_returned);
    tcase_add_test(tc, test_restrictions);
    tcase_add_test(tc, test_resources_kinds_and_release);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(state_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
