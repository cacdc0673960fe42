/*
 * test_worker.c - the executor pool in isolation, then bin/shoal-worker end
 * to end against a fake scheduler (a ROUTER socket driven by the proto_*
 * functions in this process; the harness is fake.h, shared with
 * test_data.c, which tests the data plane).
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "exec.h"
#include "mp.h"
#include "pool.h"
#include "proto.h"
#include "util.h"

/* ==== pool =============================================================== */

/* What the test jobs do, chosen through job->user. */
enum { J_COUNT = 1, J_BLOCK, J_STUCK };

typedef struct tjob {
    pool_job_t pj;           /* first: a pool_job_t * is a tjob_t * */
    int kind;
    int runs;                /* times run (atomic) */
    int seen_cancel;         /* the run callback saw the cancelled flag */
    int done_seen;           /* times it came back through take_done */
} tjob_t;

static volatile int s_gate;          /* J_BLOCK jobs run until cancelled or this */
static int s_notifies;
static int s_stuck_secs_ms = 1500;

static void s_test_run(pool_job_t *pj, void *arg)
{
    tjob_t *t = (tjob_t *)pj;
    (void)arg;
    __atomic_add_fetch(&t->runs, 1, __ATOMIC_RELAXED);
    if (t->kind == J_BLOCK) {
        while (!__atomic_load_n(&pj->cancelled, __ATOMIC_ACQUIRE) &&
               !__atomic_load_n(&s_gate, __ATOMIC_ACQUIRE))
            usleep(1000);
        t->seen_cancel = __atomic_load_n(&pj->cancelled, __ATOMIC_ACQUIRE);
    } else if (t->kind == J_STUCK) {
        usleep((useconds_t)s_stuck_secs_ms * 1000);   /* ignores cancellation */
    }
    pj->status = 0;
}

static void s_test_notify(void *arg)
{
    (void)arg;
    __atomic_add_fetch(&s_notifies, 1, __ATOMIC_RELAXED);
}

/* Take done jobs until `want` have come back or 10 s pass; returns the count. */
static size_t s_collect(pool_t *p, size_t want, pool_job_t **order, size_t cap)
{
    size_t got = 0;
    double end = util_now() + 10;

    while (got < want && util_now() < end) {
        pool_job_t *j = pool_take_done(p);
        if (!j) {
            usleep(200);
            continue;
        }
        for (; j; j = j->next) {
            ((tjob_t *)j)->done_seen++;
            if (order && got < cap)
                order[got] = j;
            got++;
        }
    }
    return got;
}

START_TEST(pool_many_jobs)
{
    enum { N = 100000, BATCH = 997 };
    tjob_t *jobs = calloc(N, sizeof(*jobs));
    pool_t *p = pool_create(2, s_test_run, s_test_notify, NULL);
    size_t i, got;

    ck_assert_ptr_nonnull(jobs);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(pool_nthreads(p), 2);
    s_notifies = 0;
    /* Batches of various sizes, the way COMPUTE messages arrive. */
    for (i = 0; i < N; i += BATCH) {
        size_t k, end = i + BATCH < N ? i + BATCH : N;
        for (k = i; k < end; k++) {
            jobs[k].kind = J_COUNT;
            jobs[k].pj.id = k + 1;
            jobs[k].pj.next = k + 1 < end ? &jobs[k + 1].pj : NULL;
        }
        ck_assert_int_eq(pool_submit(p, &jobs[i].pj), (int)(end - i));
    }
    got = s_collect(p, N, NULL, 0);
    ck_assert_uint_eq(got, N);
    for (i = 0; i < N; i++) {
        ck_assert_int_eq(jobs[i].runs, 1);
        ck_assert_int_eq(jobs[i].done_seen, 1);
        ck_assert_int_eq(jobs[i].pj.state, POOL_JOB_DONE);
    }
    /* Wake-ups are coalesced: one per empty -> non-empty transition. */
    ck_assert_int_ge(s_notifies, 1);
    ck_assert_int_le(s_notifies, N);
    ck_assert_uint_eq(pool_queued(p), 0);
    ck_assert_uint_eq(pool_running(p), 0);
    ck_assert_ptr_null(pool_take_done(p));
    ck_assert_int_eq(pool_shutdown(p, 5), 0);
    pool_destroy(p);
    free(jobs);
}
END_TEST

START_TEST(pool_fifo_single_thread)
{
    enum { N = 1000 };
    tjob_t jobs[N];
    pool_job_t *order[N];
    pool_t *p = pool_create(1, s_test_run, s_test_notify, NULL);
    size_t i;

    memset(jobs, 0, sizeof(jobs));
    for (i = 0; i < N; i++) {
        jobs[i].kind = J_COUNT;
        jobs[i].pj.next = NULL;
        ck_assert_int_eq(pool_submit(p, &jobs[i].pj), 1);
    }
    ck_assert_uint_eq(s_collect(p, N, order, N), N);
    for (i = 0; i < N; i++)
        ck_assert_ptr_eq(order[i], &jobs[i].pj);
    pool_destroy(p);
}
END_TEST

static void s_wait_running(pool_t *p, size_t n)
{
    double end = util_now() + 5;
    while (pool_running(p) < n && util_now() < end)
        usleep(1000);
    ck_assert_uint_eq(pool_running(p), n);
}

START_TEST(pool_cancel_queued_and_running)
{
    enum { N = 10 };
    tjob_t jobs[N];
    pool_job_t *order[N];
    pool_t *p = pool_create(1, s_test_run, s_test_notify, NULL);
    size_t i, got;

    memset(jobs, 0, sizeof(jobs));
    s_gate = 0;
    for (i = 0; i < N; i++) {
        jobs[i].kind = i == 0 ? J_BLOCK : J_COUNT;
        jobs[i].pj.id = i + 1;
        jobs[i].pj.next = i + 1 < N ? &jobs[i + 1].pj : NULL;
    }
    ck_assert_int_eq(pool_submit(p, &jobs[0].pj), N);
    s_wait_running(p, 1);
    ck_assert_uint_eq(pool_queued(p), N - 1);

    /* Queued: removed and handed back, never run.  First, middle and last
     * of the queue, to exercise every unlink case. */
    ck_assert_int_eq(pool_cancel(p, &jobs[1].pj), 1);
    ck_assert_int_eq(pool_cancel(p, &jobs[5].pj), 1);
    ck_assert_int_eq(pool_cancel(p, &jobs[N - 1].pj), 1);
    ck_assert_uint_eq(pool_queued(p), N - 4);
    /* Running: flagged, comes back through the done queue. */
    ck_assert_int_eq(pool_cancel(p, &jobs[0].pj), 0);

    got = s_collect(p, N - 3, order, N);
    ck_assert_uint_eq(got, N - 3);
    ck_assert_ptr_eq(order[0], &jobs[0].pj);
    ck_assert_int_eq(jobs[0].seen_cancel, 1);
    ck_assert_int_ne(jobs[0].pj.cancelled, 0);
    for (i = 0; i < N; i++) {
        int dropped = i == 1 || i == 5 || i == N - 1;
        ck_assert_int_eq(jobs[i].runs, dropped ? 0 : 1);
        ck_assert_int_eq(jobs[i].done_seen, dropped ? 0 : 1);
    }
    /* The remaining ones ran in order after the cancelled head. */
    ck_assert_ptr_eq(order[1], &jobs[2].pj);
    ck_assert_ptr_eq(order[N - 4], &jobs[N - 2].pj);
    /* Cancelling a finished job only sets its flag. */
    ck_assert_int_eq(pool_cancel(p, &jobs[2].pj), 0);
    usleep(20000);
    ck_assert_ptr_null(pool_take_done(p));
    pool_destroy(p);
}
END_TEST

START_TEST(pool_shutdown_with_running_jobs)
{
    enum { N = 7 };
    tjob_t jobs[N];
    pool_t *p = pool_create(2, s_test_run, s_test_notify, NULL);
    pool_job_t *q, *d;
    size_t nq = 0, nd = 0, i;
    double t0;

    memset(jobs, 0, sizeof(jobs));
    s_gate = 0;
    for (i = 0; i < N; i++) {
        jobs[i].kind = J_BLOCK;
        jobs[i].pj.next = i + 1 < N ? &jobs[i + 1].pj : NULL;
    }
    ck_assert_int_eq(pool_submit(p, &jobs[0].pj), N);
    s_wait_running(p, 2);
    t0 = util_now();
    ck_assert_int_eq(pool_shutdown(p, 5), 0);
    ck_assert(util_now() - t0 < 2.0);
    /* Running jobs were cancelled and came back; the others never started. */
    for (d = pool_take_done(p); d; d = d->next) {
        ck_assert_int_eq(((tjob_t *)d)->seen_cancel, 1);
        nd++;
    }
    for (q = pool_take_queued(p); q; q = q->next) {
        ck_assert_int_eq(((tjob_t *)q)->runs, 0);
        nq++;
    }
    ck_assert_uint_eq(nd, 2);
    ck_assert_uint_eq(nq, N - 2);
    /* No more work after shutdown; the jobs stay the caller's. */
    jobs[0].pj.next = NULL;
    errno = 0;
    ck_assert_int_eq(pool_submit(p, &jobs[0].pj), -1);
    ck_assert_int_eq(errno, ESHUTDOWN);
    ck_assert_int_eq(pool_shutdown(p, 1), 0);    /* idempotent */
    pool_destroy(p);
}
END_TEST

START_TEST(pool_shutdown_bounded_when_stuck)
{
    tjob_t job;
    pool_t *p = pool_create(1, s_test_run, s_test_notify, NULL);
    double t0;

    memset(&job, 0, sizeof(job));
    job.kind = J_STUCK;
    s_stuck_secs_ms = 1500;
    ck_assert_int_eq(pool_submit(p, &job.pj), 1);
    s_wait_running(p, 1);
    t0 = util_now();
    errno = 0;
    ck_assert_int_eq(pool_shutdown(p, 0.2), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert(util_now() - t0 < 1.0);
    ck_assert_int_ne(job.pj.cancelled, 0);
    /* Once the task returns, a second shutdown joins it. */
    ck_assert_int_eq(pool_shutdown(p, 5), 0);
    ck_assert_ptr_eq(pool_take_done(p), &job.pj);
    pool_destroy(p);
}
END_TEST

START_TEST(pool_bad_arguments)
{
    errno = 0;
    ck_assert_ptr_null(pool_create(0, s_test_run, s_test_notify, NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(pool_create(1025, s_test_run, s_test_notify, NULL));
    ck_assert_ptr_null(pool_create(1, NULL, s_test_notify, NULL));
    pool_destroy(NULL);
}
END_TEST

/* ==== end to end: a fake scheduler ======================================= */

#include "fake.h"

/* Outcomes collected from TASK_DONE, indexed by task id (< MAX_ID). */
#define MAX_ID 64
typedef struct outcome {
    int count;
    int status;
    char payload[256];
    size_t len;
} outcome_t;

static int s_heartbeats;

/* Collect TASK_DONE items until every id in `ids` has an outcome or timeout.
 * Heartbeats are counted and echoed like the scheduler does. */
static void s_collect_done(fake_t *f, const peer_t *p, outcome_t *out, const uint64_t *ids,
                           size_t nids, int timeout_ms)
{
    double end = util_now() + timeout_ms / 1000.0;
    proto_msg_t m;

    for (;;) {
        size_t i, missing = 0;
        for (i = 0; i < nids; i++)
            if (out[ids[i]].count == 0)
                missing++;
        if (!missing)
            return;
        int left = (int)((end - util_now()) * 1000);
        ck_assert_msg(left > 0, "timed out waiting for %zu TASK_DONE", missing);
        if (s_recv(f, &m, left) < 0)
            continue;
        if (m.hdr.type == MSG_HEARTBEAT) {
            s_heartbeats++;
            s_send_nil(f, p, MSG_HEARTBEAT);
        } else if (m.hdr.type == MSG_TASK_DONE) {
            const msgpack_object *items, *it;
            size_t n, k, in;
            ck_assert_int_eq(mp_array(&m.body, &items, &n), 0);
            for (k = 0; k < n; k++) {
                uint64_t id;
                int64_t st;
                uint64_t dur;
                const void *pl;
                size_t pn;
                ck_assert_int_eq(mp_array(&items[k], &it, &in), 0);
                ck_assert_uint_eq(in, 5);
                ck_assert_int_eq(mp_u64(&it[0], &id), 0);
                ck_assert_int_eq(mp_i64(&it[1], &st), 0);
                ck_assert_int_eq(mp_u64(&it[3], &dur), 0);
                ck_assert_uint_lt(id, MAX_ID);
                out[id].count++;
                out[id].status = (int)st;
                if (st == 0)
                    ck_assert_int_eq(it[2].type, MSGPACK_OBJECT_BIN);
                else
                    ck_assert_int_eq(it[2].type, MSGPACK_OBJECT_STR);
                ck_assert_int_eq(mp_bin(&it[2], &pl, &pn), 0);
                if (pn > sizeof(out[id].payload) - 1)
                    pn = sizeof(out[id].payload) - 1;
                memcpy(out[id].payload, pl, pn);
                out[id].payload[pn] = '\0';
                out[id].len = pn;
            }
        }
        proto_msg_close(&m);
    }
}

/* Unpack an ok payload (a packed msgpack object) and compare to an int. */
static void s_check_int_result(const outcome_t *o, int64_t want)
{
    msgpack_unpacked u;
    size_t off = 0;
    int64_t v;

    ck_assert_int_eq(o->status, 0);
    msgpack_unpacked_init(&u);
    ck_assert_int_eq(msgpack_unpack_next(&u, o->payload, o->len, &off), MSGPACK_UNPACK_SUCCESS);
    ck_assert_int_eq(mp_i64(&u.data, &v), 0);
    ck_assert_int_eq(v, want);
    msgpack_unpacked_destroy(&u);
}

START_TEST(e2e_compute_cancel_bye)
{
    fake_t f;
    peer_t p;
    proto_batch_t b;
    msgpack_sbuffer sb;
    msgpack_packer *pk;
    outcome_t out[MAX_ID];
    proto_msg_t m;
    pid_t pid;
    int st;

    memset(out, 0, sizeof(out));
    s_fake_open(&f);
    pid = s_start((const char *[]){f.endpoint, "--nthreads", "2", "--name", "tw",
                                   "--death-timeout", "30", NULL});
    s_expect_hello(&f, &p, 2);
    ck_assert_str_eq(p.name, "tw");
    ck_assert_int_eq(p.pid, pid);
    s_welcome(&f, &p, 7);

    proto_batch_init(&b, MSG_COMPUTE);
    s_pack_args(&sb, "");
    s_item(&b, 1, "shoal.noop", &sb);
    s_pack_args(&sb, "s", "hi");
    s_item(&b, 2, "shoal.echo", &sb);
    s_pack_args(&sb, "iii", (int64_t)1, (int64_t)2, (int64_t)3);
    s_item(&b, 3, "shoal.sum", &sb);
    s_pack_args(&sb, "");
    s_item(&b, 4, "no.such.function", &sb);
    /* 5: function name is not a string. */
    pk = proto_batch_add(&b);
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint64(pk, 5);
    msgpack_pack_int(pk, 42);
    mp_pack_bin(pk, "\x90", 1);
    msgpack_pack_array(pk, 0);
    /* No readable id: dropped with a warning, the rest still runs. */
    pk = proto_batch_add(&b);
    msgpack_pack_array(pk, 1);
    mp_pack_cstr(pk, "not an id");
    pk = proto_batch_add(&b);
    msgpack_pack_int(pk, -3);
    /* 6: a dependency result put in place of its reference: 10 + 5. */
    pk = proto_batch_add(&b);
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint64(pk, 6);
    mp_pack_cstr(pk, "shoal.sum");
    s_pack_args(&sb, "ri", (uint64_t)40, (int64_t)5);
    mp_pack_bin(pk, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint64(pk, 40);
    mp_pack_bin(pk, "\x0a", 1);
    s_pack_args(&sb, "s", "boom");
    s_item(&b, 7, "shoal.fail", &sb);
    /* 9: dependency entry that is not [id, bin]. */
    pk = proto_batch_add(&b);
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint64(pk, 9);
    mp_pack_cstr(pk, "shoal.noop");
    mp_pack_bin(pk, "\x90", 1);
    msgpack_pack_array(pk, 1);
    msgpack_pack_int(pk, 1);
    /* 10: too few fields. */
    pk = proto_batch_add(&b);
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint64(pk, 10);
    mp_pack_cstr(pk, "shoal.noop");
    ck_assert_int_eq(proto_batch_send(&b, f.sock, p.ident, p.ident_len), 0);

    s_collect_done(&f, &p, out, (const uint64_t[]){1, 2, 3, 4, 5, 6, 7, 9, 10}, 9, 10000);
    ck_assert_int_eq(out[1].status, 0);
    ck_assert_uint_eq(out[1].len, 1);
    ck_assert_int_eq((uint8_t)out[1].payload[0], 0xc0);       /* nil */
    ck_assert_int_eq(out[2].status, 0);
    ck_assert_mem_eq(out[2].payload, "\xa2hi", 3);
    s_check_int_result(&out[3], 6);
    ck_assert_int_eq(out[4].status, 1);
    ck_assert_str_eq(out[4].payload, "unknown function 'no.such.function' on worker tw");
    ck_assert_int_eq(out[5].status, 1);
    ck_assert_ptr_nonnull(strstr(out[5].payload, "malformed"));
    s_check_int_result(&out[6], 15);
    ck_assert_int_eq(out[7].status, 1);
    ck_assert_ptr_nonnull(strstr(out[7].payload, "boom"));
    ck_assert_int_eq(out[9].status, 1);
    ck_assert_int_eq(out[10].status, 1);

    /* Command tasks: the exit status of each child reaches shoal.cmd (the
     * worker's event loop must not reap them). */
    {
        uint64_t k, cmd_ids[8];
        for (k = 0; k < 8; k++) {
            msgpack_packer apk;
            char script[32];
            util_fmt(script, sizeof(script), "echo out%d; exit %d", (int)k, (int)k + 1);
            msgpack_sbuffer_init(&sb);
            msgpack_packer_init(&apk, &sb, msgpack_sbuffer_write);
            msgpack_pack_array(&apk, 1);
            msgpack_pack_map(&apk, 1);
            mp_pack_cstr(&apk, "argv");
            msgpack_pack_array(&apk, 3);
            mp_pack_cstr(&apk, "/bin/sh");
            mp_pack_cstr(&apk, "-c");
            mp_pack_cstr(&apk, script);
            s_item(&b, 30 + k, "shoal.cmd", &sb);
            cmd_ids[k] = 30 + k;
        }
        ck_assert_int_eq(proto_batch_send(&b, f.sock, p.ident, p.ident_len), 0);
        s_collect_done(&f, &p, out, cmd_ids, 8, 10000);
        for (k = 0; k < 8; k++) {
            msgpack_unpacked u;
            const msgpack_object *o;
            size_t off = 0;
            int64_t code;
            const void *so;
            size_t sn;
            char want[16];
            ck_assert_msg(out[30 + k].status == 0, "command %d failed: %s", (int)k,
                          out[30 + k].payload);
            msgpack_unpacked_init(&u);
            ck_assert_int_eq(msgpack_unpack_next(&u, out[30 + k].payload, out[30 + k].len,
                                                 &off), MSGPACK_UNPACK_SUCCESS);
            o = mp_map_get(&u.data, "exit");
            ck_assert(o && mp_i64(o, &code) == 0);
            ck_assert_int_eq(code, (int64_t)k + 1);
            o = mp_map_get(&u.data, "stdout");
            ck_assert(o && mp_bin(o, &so, &sn) == 0);
            util_fmt(want, sizeof(want), "out%d\n", (int)k);
            ck_assert_uint_eq(sn, strlen(want));
            ck_assert_mem_eq(so, want, sn);
            msgpack_unpacked_destroy(&u);
        }
    }

    /* Fill both threads with long sleeps, queue a third, then cancel all
     * three: a noop sent afterwards can only run if the running ones let go
     * of their threads. */
    s_pack_args(&sb, "d", 30.0);
    s_item(&b, 20, "shoal.sleep", &sb);
    s_pack_args(&sb, "d", 30.0);
    s_item(&b, 21, "shoal.sleep", &sb);
    s_pack_args(&sb, "d", 30.0);
    s_item(&b, 22, "shoal.sleep", &sb);
    ck_assert_int_eq(proto_batch_send(&b, f.sock, p.ident, p.ident_len), 0);
    usleep(300000);
    msgpack_sbuffer_init(&sb);
    {
        msgpack_packer cpk;
        msgpack_packer_init(&cpk, &sb, msgpack_sbuffer_write);
        msgpack_pack_array(&cpk, 4);
        msgpack_pack_uint64(&cpk, 22);
        msgpack_pack_uint64(&cpk, 20);
        msgpack_pack_uint64(&cpk, 21);
        msgpack_pack_uint64(&cpk, 33);    /* unknown here: ignored */
    }
    s_send_packed(&f, &p, MSG_WCANCEL, &sb);
    msgpack_sbuffer_destroy(&sb);
    s_pack_args(&sb, "s", "after");
    s_item(&b, 23, "shoal.echo", &sb);
    ck_assert_int_eq(proto_batch_send(&b, f.sock, p.ident, p.ident_len), 0);
    s_collect_done(&f, &p, out, (const uint64_t[]){23}, 1, 5000);
    ck_assert_int_eq(out[23].status, 0);

    /* A heartbeat arrives every second. */
    s_heartbeats = 0;
    ck_assert_int_eq(s_recv_type(&f, &m, MSG_HEARTBEAT, 3000), 0);
    proto_msg_close(&m);

    /* A type the worker does not handle is answered with ERROR 3. */
    s_send_nil(&f, &p, MSG_STATUS);
    ck_assert_int_eq(s_recv_type(&f, &m, MSG_ERROR, 3000), 0);
    {
        int64_t code;
        const msgpack_object *o = mp_map_get(&m.body, "code");
        ck_assert(o && mp_i64(o, &code) == 0);
        ck_assert_int_eq(code, PERR_UNKNOWN_TYPE);
    }
    proto_msg_close(&m);

    /* ERROR 4 (the scheduler forgot us): the worker registers again. */
    msgpack_sbuffer_init(&sb);
    {
        msgpack_packer epk;
        msgpack_packer_init(&epk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&epk, 2);
        mp_pack_cstr(&epk, "code");
        msgpack_pack_int(&epk, PERR_NOT_REGISTERED);
        mp_pack_cstr(&epk, "message");
        mp_pack_cstr(&epk, "not registered");
    }
    s_send_packed(&f, &p, MSG_ERROR, &sb);
    msgpack_sbuffer_destroy(&sb);
    s_expect_hello(&f, &p, 2);

    /* The cancelled tasks never reported. */
    ck_assert_int_eq(out[20].count + out[21].count + out[22].count, 0);
    ck_assert_int_eq(out[1].count, 1);

    s_send_nil(&f, &p, MSG_BYE);
    st = s_wait_exit(pid, 5);
    ck_assert_msg(st != -1, "worker did not exit after BYE");
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 0);
    proto_batch_destroy(&b);
    s_fake_close(&f);
}
END_TEST

/* Compile a task library: FN(x) = x + ADD, and FN.stuck() that sleeps 30 s
 * ignoring cancellation.  Returns 0 or -1.
 * The compiler is the one `make` uses; the test needs it at run time. */
static int s_build_lib(const char *dir, const char *base, const char *fn, int add,
                       char *so, size_t cap)
{
    char src[PATH_MAX], cmd[4 * PATH_MAX];
    FILE *f;

    util_fmt(src, sizeof(src), "%s/%s.c", dir, base);
    util_fmt(so, cap, "%s/%s.so", dir, base);
    if (!(f = fopen(src, "w")))
        return -1;
    fprintf(f,
            "#include <shoal_task.h>\n"
            "#include <time.h>\n"
            "static int f(shoal_task_ctx_t *ctx, const msgpack_object *args,\n"
            "             msgpack_packer *out)\n"
            "{\n"
            "    int64_t x;\n"
            "    if (shoal_arg_i64(ctx, args, 0, &x) < 0)\n"
            "        return -1;\n"
            "    msgpack_pack_int64(out, x + %d);\n"
            "    return 0;\n"
            "}\n"
            "/* Ignores cancellation: shutdown must not wait for it forever. */\n"
            "static int stuck(shoal_task_ctx_t *ctx, const msgpack_object *args,\n"
            "                 msgpack_packer *out)\n"
            "{\n"
            "    struct timespec ts = {30, 0};\n"
            "    (void)ctx; (void)args;\n"
            "    nanosleep(&ts, NULL);\n"
            "    return msgpack_pack_nil(out);\n"
            "}\n"
            "SHOAL_TASKS({\"%s\", f}, {\"%s.stuck\", stuck});\n", add, fn, fn);
    fclose(f);
    util_fmt(cmd, sizeof(cmd),
             "${CC:-cc} -shared -fPIC -I'%s/include' $(pkg-config --cflags msgpack "
             "2>/dev/null) -o '%s' '%s'", s_root, so, src);
    return system(cmd) == 0 ? 0 : -1;
}

static void *s_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    void *buf;
    long n;

    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    ck_assert_int_gt(n, 0);
    buf = malloc((size_t)n);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void s_send_library(fake_t *f, const peer_t *p, const char *name, const void *data,
                           size_t len, size_t nframes)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    proto_frame_t fr = {data, len, NULL, NULL};

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    mp_pack_cstr(&pk, "name");
    mp_pack_cstr(&pk, name);
    mp_pack_cstr(&pk, "hash");
    msgpack_pack_uint64(&pk, util_fnv1a64(data, len));
    ck_assert_int_eq(proto_send(f->sock, p->ident, p->ident_len, MSG_LIBRARY, sb.data,
                                sb.size, &fr, nframes), 0);
    msgpack_sbuffer_destroy(&sb);
}

START_TEST(e2e_libraries)
{
    char dir[] = "/tmp/shoal-test-worker-XXXXXX", lib1[PATH_MAX], lib2[PATH_MAX];
    char rtdir[PATH_MAX + 16], cmd[PATH_MAX + 32];
    fake_t f;
    peer_t p;
    proto_batch_t b;
    msgpack_sbuffer sb;
    outcome_t out[MAX_ID];
    proto_msg_t m;
    void *bytes;
    size_t len;
    pid_t pid;
    int st;
    double t0;

    memset(out, 0, sizeof(out));
    ck_assert_ptr_nonnull(mkdtemp(dir));
    util_fmt(s_tmpdir, sizeof(s_tmpdir), "%s", dir);
    ck_assert_msg(s_build_lib(dir, "libt1", "t.add1", 1, lib1, sizeof(lib1)) == 0,
                  "cannot compile a test task library (is cc installed?)");
    ck_assert(s_build_lib(dir, "libt2", "t.add100", 100, lib2, sizeof(lib2)) == 0);
    /* Uploaded libraries go to the runtime directory: keep ours private. */
    util_fmt(rtdir, sizeof(rtdir), "%s/rt", dir);
    setenv("SHOAL_RUNTIME_DIR", rtdir, 1);

    s_fake_open(&f);
    pid = s_start((const char *[]){f.endpoint, "--nthreads", "1", "--library", lib1,
                                   "--name", "lw", NULL});
    s_expect_hello(&f, &p, 1);
    s_welcome(&f, &p, 1);

    /* Junk bytes and a LIBRARY without its frame are refused, and the
     * worker goes on; then a real one sent over the wire. */
    s_send_library(&f, &p, "junk.so", "not an ELF file", 15, 1);
    s_send_library(&f, &p, "empty.so", "", 0, 0);
    bytes = s_read_file(lib2, &len);
    s_send_library(&f, &p, "libt2.so", bytes, len, 1);
    free(bytes);

    proto_batch_init(&b, MSG_COMPUTE);
    s_pack_args(&sb, "i", (int64_t)41);
    s_item(&b, 1, "t.add1", &sb);
    s_pack_args(&sb, "i", (int64_t)1);
    s_item(&b, 2, "t.add100", &sb);
    s_pack_args(&sb, "s", "x");
    s_item(&b, 3, "t.add1", &sb);
    ck_assert_int_eq(proto_batch_send(&b, f.sock, p.ident, p.ident_len), 0);
    s_collect_done(&f, &p, out, (const uint64_t[]){1, 2, 3}, 3, 10000);
    s_check_int_result(&out[1], 42);
    s_check_int_result(&out[2], 101);
    ck_assert_int_eq(out[3].status, 1);
    ck_assert_ptr_nonnull(strstr(out[3].payload, "integer"));

    /* A task that ignores cancellation delays SIGTERM's exit by the join
     * bound (5 s), not forever. */
    s_pack_args(&sb, "");
    s_item(&b, 4, "t.add1.stuck", &sb);
    ck_assert_int_eq(proto_batch_send(&b, f.sock, p.ident, p.ident_len), 0);
    usleep(300000);
    t0 = util_now();
    ck_assert_int_eq(kill(pid, SIGTERM), 0);
    ck_assert_int_eq(s_recv_type(&f, &m, MSG_BYE, 3000), 0);
    proto_msg_close(&m);
    st = s_wait_exit(pid, 10);
    ck_assert_msg(st != -1, "worker hung on a task that ignores cancellation");
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ck_assert(util_now() - t0 > 4.0);
    proto_batch_destroy(&b);
    s_fake_close(&f);
    util_fmt(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
    s_tmpdir[0] = '\0';
}
END_TEST

START_TEST(e2e_sigterm_sends_bye)
{
    fake_t f;
    peer_t p;
    proto_batch_t b;
    msgpack_sbuffer sb;
    proto_msg_t m;
    pid_t pid;
    int st;

    s_fake_open(&f);
    pid = s_start((const char *[]){f.endpoint, "--nthreads", "1", NULL});
    s_expect_hello(&f, &p, 1);
    s_welcome(&f, &p, 1);
    /* A running task is cancelled at shutdown, not waited for. */
    proto_batch_init(&b, MSG_COMPUTE);
    s_pack_args(&sb, "d", 60.0);
    s_item(&b, 1, "shoal.sleep", &sb);
    ck_assert_int_eq(proto_batch_send(&b, f.sock, p.ident, p.ident_len), 0);
    usleep(200000);
    ck_assert_int_eq(kill(pid, SIGTERM), 0);
    ck_assert_int_eq(s_recv_type(&f, &m, MSG_BYE, 5000), 0);
    proto_msg_close(&m);
    st = s_wait_exit(pid, 5);
    ck_assert_msg(st != -1, "worker did not exit after SIGTERM");
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 0);
    proto_batch_destroy(&b);
    s_fake_close(&f);
}
END_TEST

START_TEST(e2e_death_timeout)
{
    fake_t f;
    peer_t p;
    pid_t pid;
    int st;

    s_fake_open(&f);
    pid = s_start((const char *[]){f.endpoint, "--death-timeout", "1.5", NULL});
    /* Registered but never answered: the worker gives up. */
    s_expect_hello(&f, &p, 0);
    st = s_wait_exit(pid, 6);
    ck_assert_msg(st != -1, "worker did not exit after its death timeout");
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 3);
    s_fake_close(&f);
}
END_TEST

START_TEST(e2e_bad_command_lines)
{
    struct { const char *args[6]; int code; } cases[] = {
        {{NULL}, 2},
        {{"tcp://127.0.0.1:1", "--nthreads", "0", NULL}, 2},
        {{"tcp://127.0.0.1:1", "--nworkers", "2000", NULL}, 2},
        {{"tcp://127.0.0.1:1", "--bogus", NULL}, 2},
        {{"tcp://127.0.0.1:1", "--name", "has space", NULL}, 2},
        {{"tcp://127.0.0.1:1", "--death-timeout", "-1", NULL}, 2},
        {{"tcp://127.0.0.1:1", "--lifetime", "0", NULL}, 2},
        {{"tcp://127.0.0.1:1", "--lifetime", "soon", NULL}, 2},
        {{"tcp://127.0.0.1:1", "--lifetime-stagger", "5", NULL}, 2},
        {{"tcp://127.0.0.1:1", "--lifetime", "10", "--lifetime-stagger", "10", NULL}, 2},
        {{"tcp://127.0.0.1:1", "--scheduler-file", "/x", NULL}, 2},
        {{"not a host!", NULL}, 2},
        {{"tcp://127.0.0.1:1", "--library", "/nonexistent/libx.so", NULL}, 1},
        {{"--scheduler-file", "/nonexistent/sched.json", "--death-timeout", "0.2", NULL}, 1},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pid_t pid = s_start(cases[i].args);
        int st = s_wait_exit(pid, 5);
        ck_assert_msg(st != -1, "case %zu did not exit", i);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == cases[i].code,
                      "case %zu: status %d, want exit %d", i, st, cases[i].code);
    }
}
END_TEST

START_TEST(e2e_supervisor_restarts_and_stops)
{
    fake_t f;
    peer_t a, b, c;
    proto_msg_t m;
    pid_t sup, killed, other, again;
    int st, byes = 0;
    double end;

    s_fake_open(&f);
    sup = s_start((const char *[]){f.endpoint, "--nworkers", "2", "--nthreads", "1",
                                   "--name", "sv", NULL});
    s_expect_hello(&f, &a, 1);
    s_expect_hello(&f, &b, 1);
    s_welcome(&f, &a, 1);
    s_welcome(&f, &b, 2);
    ck_assert(!strcmp(a.name, "sv-0") || !strcmp(a.name, "sv-1"));
    ck_assert(!strcmp(b.name, "sv-0") || !strcmp(b.name, "sv-1"));
    ck_assert_str_ne(a.name, b.name);
    ck_assert_int_ne(a.pid, sup);
    ck_assert_int_ne(b.pid, sup);

    killed = (pid_t)a.pid;
    other = (pid_t)b.pid;
    s_track(killed);
    s_track(other);
    ck_assert_int_eq(kill(killed, SIGKILL), 0);
    /* The restarted child says HELLO with the same name and a new pid. */
    s_expect_hello(&f, &c, 1);
    ck_assert_str_eq(c.name, a.name);
    ck_assert_int_ne(c.pid, killed);
    again = (pid_t)c.pid;
    s_track(again);
    s_welcome(&f, &c, 3);

    ck_assert_int_eq(kill(sup, SIGTERM), 0);
    /* Both children leave with BYE. */
    end = util_now() + 5;
    while (byes < 2 && util_now() < end) {
        if (s_recv(&f, &m, 200) == 0) {
            if (m.hdr.type == MSG_BYE)
                byes++;
            proto_msg_close(&m);
        }
    }
    ck_assert_int_eq(byes, 2);
    st = s_wait_exit(sup, 12);
    ck_assert_msg(st != -1, "supervisor did not exit after SIGTERM");
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 0);
    /* The supervisor reaped its children before it exited. */
    usleep(100000);
    ck_assert_int_eq(kill(other, 0), -1);
    ck_assert_int_eq(errno, ESRCH);
    ck_assert_int_eq(kill(again, 0), -1);
    ck_assert_int_eq(errno, ESRCH);
    s_fake_close(&f);
}
END_TEST

START_TEST(e2e_supervisor_killed_children_follow)
{
    fake_t f;
    peer_t a, b;
    pid_t sup;
    int st, i;

    /* Orphaned grandchildren (the workers of a supervisor that was killed)
     * are reparented to this process, so the test can reap and check them.
     * Not inherited over fork: set here, in Check's test process. */
    ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    s_fake_open(&f);
    sup = s_start((const char *[]){f.endpoint, "--nworkers", "2", "--nthreads", "1", NULL});
    s_expect_hello(&f, &a, 1);
    s_expect_hello(&f, &b, 1);
    /* A supervisor that is killed outright takes its children with it
     * (PR_SET_PDEATHSIG gives them SIGTERM). */
    s_track((pid_t)a.pid);
    s_track((pid_t)b.pid);
    ck_assert_int_eq(kill(sup, SIGKILL), 0);
    st = s_wait_exit(sup, 5);
    ck_assert(st != -1 && WIFSIGNALED(st));
    for (i = 0; i < 2; i++) {
        st = s_wait_exit((pid_t)(i == 0 ? a.pid : b.pid), 5);
        ck_assert_msg(st != -1, "a child outlived its supervisor");
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                      "child did not shut down cleanly (status %d)", st);
    }
    s_fake_close(&f);
}
END_TEST

/* ==== --lifetime ========================================================== */

/* A command task [{"argv": ["/bin/sh", "-c", script]}]. */
static void s_cmd_item(proto_batch_t *b, uint64_t id, const char *script)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 1);
    mp_pack_cstr(&pk, "argv");
    msgpack_pack_array(&pk, 3);
    mp_pack_cstr(&pk, "/bin/sh");
    mp_pack_cstr(&pk, "-c");
    mp_pack_cstr(&pk, script);
    s_item(b, id, "shoal.cmd", &sb);
}

/* Non-zero once the file at `path` contains `needle`. */
static int s_file_has(const char *path, const char *needle)
{
    char buf[16384];
    FILE *f = fopen(path, "r");
    size_t n;

    if (!f)
        return 0;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

/*
 * A retiring worker hands its tasks back: once the lifetime is up, a queued
 * task and one sent afterwards never run and are never reported, the running
 * task finishes within the grace period and is reported, and only then comes
 * BYE (after which the scheduler places the others elsewhere); exit 0.
 */
START_TEST(e2e_lifetime_hands_back_tasks)
{
    char dir[] = "/tmp/shoal-test-lifetime-XXXXXX";
    char log[PATH_MAX], gate[PATH_MAX], ran2[PATH_MAX], ran4[PATH_MAX];
    char script[4 * PATH_MAX];
    const double lifetime = 8.0;    /* grace: 0.8 s */
    outcome_t out[MAX_ID];
    fake_t f;
    peer_t p;
    proto_batch_t b;
    proto_msg_t m;
    double t_hello, t_retired, end;
    int st, got_bye = 0, fd;
    pid_t pid;

    memset(out, 0, sizeof(out));
    ck_assert_ptr_nonnull(mkdtemp(dir));
    util_fmt(s_tmpdir, sizeof(s_tmpdir), "%s", dir);
    util_fmt(log, sizeof(log), "%s/worker.log", dir);
    util_fmt(gate, sizeof(gate), "%s/gate", dir);
    util_fmt(ran2, sizeof(ran2), "%s/ran2", dir);
    util_fmt(ran4, sizeof(ran4), "%s/ran4", dir);

    s_fake_open(&f);
    pid = s_start_log((const char *[]){f.endpoint, "--nthreads", "1", "--name", "lt",
                                       "--lifetime", "8", "--death-timeout", "30", NULL},
                      log);
    s_expect_hello(&f, &p, 1);
    t_hello = util_now();
    s_welcome(&f, &p, 1);

    /* 1 runs until the test opens the gate; 2 and 3 wait behind it (one
     * executor thread). */
    proto_batch_init(&b, MSG_COMPUTE);
    util_fmt(script, sizeof(script),
             "while [ ! -e '%s' ]; do sleep 0.02; done; echo first", gate);
    s_cmd_item(&b, 1, script);
    util_fmt(script, sizeof(script), "touch '%s'", ran2);
    s_cmd_item(&b, 2, script);
    {
        msgpack_sbuffer sb;
        s_pack_args(&sb, "s", "third");
        s_item(&b, 3, "shoal.echo", &sb);
    }
    ck_assert_int_eq(proto_batch_send(&b, f.sock, p.ident, p.ident_len), 0);

    /* Wait for the retirement (the log line says so), answering heartbeats. */
    end = util_now() + lifetime + 10;
    while (!s_file_has(log, "retiring")) {
        ck_assert_msg(util_now() < end, "the worker did not retire after its lifetime");
        if (s_recv(&f, &m, 20) == 0) {
            ck_assert_msg(m.hdr.type != MSG_TASK_DONE && m.hdr.type != MSG_BYE,
                          "%s before the lifetime was up", proto_type_name(m.hdr.type));
            if (m.hdr.type == MSG_HEARTBEAT)
                s_send_nil(&f, &p, MSG_HEARTBEAT);
            proto_msg_close(&m);
        }
    }
    t_retired = util_now();
    /* The worker's clock started before its HELLO reached us. */
    ck_assert_msg(t_retired - t_hello > lifetime - 0.5, "retired after %.2f s, lifetime %.0f s",
                  t_retired - t_hello, lifetime);
    ck_assert_msg(s_file_has(log, "2 queued tasks handed back"), "log: queued tasks not "
                  "handed back");

    /* Work sent to a retiring worker is not started either. */
    util_fmt(script, sizeof(script), "touch '%s'", ran4);
    s_cmd_item(&b, 4, script);
    ck_assert_int_eq(proto_batch_send(&b, f.sock, p.ident, p.ident_len), 0);
    usleep(50000);
    /* Open the gate: 1 finishes within the grace period. */
    fd = open(gate, O_WRONLY | O_CREAT, 0600);
    ck_assert_int_ge(fd, 0);
    close(fd);

    end = util_now() + 5;
    while (!got_bye) {
        ck_assert_msg(util_now() < end, "no BYE from the retiring worker");
        if (s_recv(&f, &m, 100) < 0)
            continue;
        if (m.hdr.type == MSG_TASK_DONE) {
            const msgpack_object *items, *it;
            size_t n, k, in;
            ck_assert_int_eq(mp_array(&m.body, &items, &n), 0);
            for (k = 0; k < n; k++) {
                uint64_t id;
                int64_t stv;
                ck_assert_int_eq(mp_array(&items[k], &it, &in), 0);
                ck_assert_int_eq(mp_u64(&it[0], &id), 0);
                ck_assert_int_eq(mp_i64(&it[1], &stv), 0);
                ck_assert_uint_lt(id, MAX_ID);
                out[id].count++;
                out[id].status = (int)stv;
            }
        } else if (m.hdr.type == MSG_BYE) {
            got_bye = 1;
            /* BYE after the running task was reported, within the grace. */
            ck_assert_int_eq(out[1].count, 1);
            ck_assert_msg(util_now() - t_retired < lifetime / 10 + 0.5,
                          "BYE %.2f s after retiring", util_now() - t_retired);
        }
        proto_msg_close(&m);
    }
    ck_assert_int_eq(out[1].status, 0);
    ck_assert_int_eq(out[2].count + out[3].count + out[4].count, 0);
    st = s_wait_exit(pid, 5);
    ck_assert_msg(st != -1, "retired worker did not exit");
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 0);
    ck_assert_msg(access(ran2, F_OK) != 0, "a queued task ran on a retiring worker");
    ck_assert_msg(access(ran4, F_OK) != 0, "a task sent after retiring ran");
    proto_batch_destroy(&b);
    s_fake_close(&f);
    s_kill_all();
}
END_TEST

/*
 * Running tasks get only the grace period: a long task is cancelled and not
 * reported, BYE follows.  With --nworkers 2 each child retires (its own
 * staggered lifetime) and the supervisor then exits 0 without restarting
 * them.
 */
START_TEST(e2e_lifetime_grace_and_supervisor)
{
    fake_t f;
    peer_t a, b;
    proto_batch_t batch;
    msgpack_sbuffer sb;
    proto_msg_t m;
    pid_t sup;
    double t0, end;
    int st, byes = 0, dones = 0;

    s_fake_open(&f);
    t0 = util_now();
    sup = s_start((const char *[]){f.endpoint, "--nworkers", "2", "--nthreads", "1",
                                   "--name", "ls", "--lifetime", "2",
                                   "--lifetime-stagger", "0.5", NULL});
    s_expect_hello(&f, &a, 1);
    s_expect_hello(&f, &b, 1);
    s_welcome(&f, &a, 1);
    s_welcome(&f, &b, 2);
    s_track((pid_t)a.pid);
    s_track((pid_t)b.pid);
    proto_batch_init(&batch, MSG_COMPUTE);
    s_pack_args(&sb, "d", 60.0);
    s_item(&batch, 1, "shoal.sleep", &sb);
    ck_assert_int_eq(proto_batch_send(&batch, f.sock, a.ident, a.ident_len), 0);
    s_pack_args(&sb, "d", 60.0);
    s_item(&batch, 2, "shoal.sleep", &sb);
    ck_assert_int_eq(proto_batch_send(&batch, f.sock, b.ident, b.ident_len), 0);

    end = util_now() + 10;
    while (byes < 2 && util_now() < end) {
        if (s_recv(&f, &m, 100) < 0)
            continue;
        if (m.hdr.type == MSG_BYE) {
            /* lifetime 2 +- 0.5, grace 0.15 to 0.25 */
            double at = util_now() - t0;
            ck_assert_msg(at > 1.4 && at < 4.5, "BYE at %.2f s", at);
            byes++;
        } else if (m.hdr.type == MSG_TASK_DONE) {
            dones++;
        }
        proto_msg_close(&m);
    }
    ck_assert_int_eq(byes, 2);
    ck_assert_int_eq(dones, 0);
    st = s_wait_exit(sup, 8);
    ck_assert_msg(st != -1, "supervisor did not exit after its workers retired");
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 0);
    ck_assert_msg(kill((pid_t)a.pid, 0) == -1 && kill((pid_t)b.pid, 0) == -1,
                  "a retired worker is still running");
    proto_batch_destroy(&batch);
    s_fake_close(&f);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("worker");
    TCase *tc = tcase_create("pool");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, pool_many_jobs);
    tcase_add_test(tc, pool_fifo_single_thread);
    tcase_add_test(tc, pool_cancel_queued_and_running);
    tcase_add_test(tc, pool_shutdown_with_running_jobs);
    tcase_add_test(tc, pool_shutdown_bounded_when_stuck);
    tcase_add_test(tc, pool_bad_arguments);
    suite_add_tcase(s, tc);

    tc = tcase_create("e2e");
    tcase_set_timeout(tc, 40);
    tcase_add_test(tc, e2e_compute_cancel_bye);
    tcase_add_test(tc, e2e_libraries);
    tcase_add_test(tc, e2e_sigterm_sends_bye);
    tcase_add_test(tc, e2e_death_timeout);
    tcase_add_test(tc, e2e_bad_command_lines);
    tcase_add_test(tc, e2e_supervisor_restarts_and_stops);
    tcase_add_test(tc, e2e_supervisor_killed_children_follow);
    tcase_add_test(tc, e2e_lifetime_hands_back_tasks);
    tcase_add_test(tc, e2e_lifetime_grace_and_supervisor);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr;
    int failed;

    s_find_worker_bin();
    atexit(s_kill_all);
    if (access(s_worker_bin, X_OK) != 0) {
        fprintf(stderr, "test_worker: %s not found (build bin/shoal-worker first)\n",
                s_worker_bin);
        return 1;
    }
    sr = srunner_create(s_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
