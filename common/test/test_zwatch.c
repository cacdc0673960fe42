/* test_zwatch.c - ZeroMQ sockets in a libev loop: edge-triggered ZMQ_FD
 * handled without lost wake-ups, bounded consumption, write interest. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "zwatch.h"

static void *s_ctx;

typedef struct {
    const char *endpoint;
    int n;
    int pause_every; /* sleep 1 ms after this many messages (0: never) */
} sender_t;

/* Sender thread: its own socket (zmq sockets are not thread-safe). */
static void *s_sender(void *arg)
{
    sender_t *s = arg;
    void *sock = zmq_socket(s_ctx, ZMQ_PUSH);
    int hwm = 0;
    zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    if (zmq_connect(sock, s->endpoint) < 0)
        abort();
    for (int i = 0; i < s->n; i++) {
        uint32_t v = (uint32_t)i;
        if (zmq_send(sock, &v, sizeof v, 0) < 0)
            abort();
        if (s->pause_every && (i + 1) % s->pause_every == 0) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    int linger = 5000;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(sock);
    return NULL;
}

typedef struct {
    void *sock;
    int expect;
    int got;
    int calls;
    int batch; /* receive at most this many per callback */
    int order_ok;
} recv_state_t;

static void s_recv_cb(struct ev_loop *loop, zwatch_t *w, int revents, void *arg)
{
    recv_state_t *st = arg;
    ck_assert(revents & EV_READ);
    ck_assert(!(revents & EV_WRITE)); /* not requested */
    ck_assert_ptr_eq(zwatch_socket(w), st->sock);
    st->calls++;
    for (int i = 0; i < st->batch; i++) {
        uint32_t v;
        int rc = zmq_recv(st->sock, &v, sizeof v, ZMQ_DONTWAIT);
        if (rc < 0) {
            ck_assert_int_eq(errno, EAGAIN);
            break;
        }
        if (v != (uint32_t)st->got)
            st->order_ok = 0;
        st->got++;
    }
    if (st->got == st->expect)
        ev_break(loop, EVBREAK_ALL);
}

static int s_timed_out;
static void s_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)t;
    (void)revents;
    s_timed_out = 1;
    ev_break(loop, EVBREAK_ALL);
}

/* (Re)arm the guard timer: a timer must be stopped before it is set, and a
 * run that ended early leaves it running. */
static void s_arm(struct ev_loop *loop, ev_timer *t, double after)
{
    ev_timer_stop(loop, t);
    ev_timer_set(t, after, 0);
    ev_timer_start(loop, t);
}

static void s_run_recv(const char *transport, int n, int batch, int pause_every)
{
    s_ctx = zmq_ctx_new();
    void *pull = zmq_socket(s_ctx, ZMQ_PULL);
    int hwm = 0;
    zmq_setsockopt(pull, ZMQ_RCVHWM, &hwm, sizeof hwm);
    char ep[256];
    if (!strcmp(transport, "tcp")) {
        ck_assert_int_eq(zmq_bind(pull, "tcp://127.0.0.1:*"), 0);
        size_t len = sizeof ep;
        ck_assert_int_eq(zmq_getsockopt(pull, ZMQ_LAST_ENDPOINT, ep, &len), 0);
    } else {
        snprintf(ep, sizeof ep, "inproc://zw-%d", (int)getpid());
        ck_assert_int_eq(zmq_bind(pull, ep), 0);
    }

    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    recv_state_t st = {pull, n, 0, 0, batch, 1};
    zwatch_t *w = zwatch_create(loop, pull, EV_READ, s_recv_cb, &st);
    ck_assert_ptr_nonnull(w);
    zwatch_start(w);
    zwatch_start(w); /* idempotent */
    ev_timer guard;
    ev_timer_init(&guard, s_timeout_cb, 20.0, 0);
    ev_timer_start(loop, &guard);
    s_timed_out = 0;

    sender_t snd = {ep, n, pause_every};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, s_sender, &snd), 0);
    ev_run(loop, 0);
    pthread_join(th, NULL);

    ck_assert_msg(!s_timed_out, "timed out with %d of %d messages", st.got, n);
    ck_assert_int_eq(st.got, n);
    ck_assert(st.order_ok);
    if (batch < n)
        ck_assert_int_ge(st.calls, n / batch);

    zwatch_destroy(w);
    zwatch_destroy(NULL);
    ev_timer_stop(loop, &guard);
    ev_loop_destroy(loop);
    zmq_close(pull);
    zmq_ctx_term(s_ctx);
}

START_TEST(test_recv_inproc_fast)
{
    /* Drain everything per call. */
    s_run_recv("inproc", 100000, 1 << 30, 0);
}
END_TEST

START_TEST(test_recv_inproc_bounded)
{
    /* 16 per call: the watcher must call again without sleeping while
     * messages remain (ZMQ_FD will not fire again for them). */
    s_run_recv("inproc", 50000, 16, 0);
}
END_TEST

START_TEST(test_recv_tcp_bursty)
{
    /* Gaps make the loop block and rely on ZMQ_FD to wake it. */
    s_run_recv("tcp", 5000, 7, 50);
}
END_TEST

START_TEST(test_recv_tcp_one_at_a_time)
{
    s_run_recv("tcp", 500, 1, 1);
}
END_TEST

/* Write interest: a DEALER with no peer is not writable; once a peer
 * connects it is.  The callback sends, then switches interest to EV_READ
 * (set_events while started) and gets the echo. */
typedef struct {
    void *sock;
    int write_calls;
    int read_calls;
    int phase;
} rw_state_t;

static void s_rw_cb(struct ev_loop *loop, zwatch_t *w, int revents, void *arg)
{
    rw_state_t *st = arg;
    if (revents & EV_WRITE) {
        st->write_calls++;
        ck_assert_int_eq(zmq_send(st->sock, "ping", 4, ZMQ_DONTWAIT), 4);
        zwatch_set_events(w, EV_READ);
    }
    if (revents & EV_READ) {
        st->read_calls++;
        char buf[8];
        int rc = zmq_recv(st->sock, buf, sizeof buf, ZMQ_DONTWAIT);
        ck_assert_int_eq(rc, 4);
        ck_assert_mem_eq(buf, "pong", 4);
        ev_break(loop, EVBREAK_ALL);
    }
}

static void *s_echo(void *arg)
{
    void *router = arg;
    zmq_msg_t id, body;
    zmq_msg_init(&id);
    zmq_msg_init(&body);
    if (zmq_msg_recv(&id, router, 0) < 0 || zmq_msg_recv(&body, router, 0) < 0)
        abort();
    if (zmq_msg_size(&body) != 4 || memcmp(zmq_msg_data(&body), "ping", 4))
        abort();
    zmq_msg_send(&id, router, ZMQ_SNDMORE);
    zmq_send(router, "pong", 4, 0);
    zmq_msg_close(&body);
    return NULL;
}

START_TEST(test_write_interest)
{
    s_ctx = zmq_ctx_new();
    void *dealer = zmq_socket(s_ctx, ZMQ_DEALER);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    rw_state_t st = {dealer, 0, 0, 0};
    zwatch_t *w = zwatch_create(loop, dealer, EV_WRITE, s_rw_cb, &st);
    ck_assert_ptr_nonnull(w);
    zwatch_start(w);

    /* No peer yet: nothing happens for 200 ms. */
    ev_timer guard;
    ev_timer_init(&guard, s_timeout_cb, 0.2, 0);
    ev_timer_start(loop, &guard);
    s_timed_out = 0;
    ev_run(loop, 0);
    ck_assert(s_timed_out);
    ck_assert_int_eq(st.write_calls, 0);

    /* A peer appears: writable, send, then read the echo. */
    void *router = zmq_socket(s_ctx, ZMQ_ROUTER);
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://zw-rw-%d", (int)getpid());
    ck_assert_int_eq(zmq_bind(router, ep), 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, s_echo, router), 0);
    ck_assert_int_eq(zmq_connect(dealer, ep), 0);
    s_arm(loop, &guard, 10.0);
    s_timed_out = 0;
    ev_run(loop, 0);
    pthread_join(th, NULL);
    ck_assert(!s_timed_out);
    ck_assert_int_eq(st.write_calls, 1); /* interest dropped after one */
    ck_assert_int_eq(st.read_calls, 1);

    ev_timer_stop(loop, &guard);
    zwatch_destroy(w);
    ev_loop_destroy(loop);
    int linger = 0;
    zmq_setsockopt(dealer, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(router, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(dealer);
    zmq_close(router);
    zmq_ctx_term(s_ctx);
}
END_TEST

static int s_calls;
static void s_count_cb(struct ev_loop *loop, zwatch_t *w, int revents, void *arg)
{
    (void)w;
    (void)arg;
    ck_assert(revents & EV_READ);
    s_calls++;
    ev_break(loop, EVBREAK_ALL);
}

/* Stopped watchers and empty interest do not fire; restarting or adding
 * interest picks up what is already pending (no ZMQ_FD edge needed). */
START_TEST(test_stop_restart_and_interest)
{
    s_ctx = zmq_ctx_new();
    void *a = zmq_socket(s_ctx, ZMQ_PAIR);
    void *b = zmq_socket(s_ctx, ZMQ_PAIR);
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://zw-pair-%d", (int)getpid());
    ck_assert_int_eq(zmq_bind(a, ep), 0);
    ck_assert_int_eq(zmq_connect(b, ep), 0);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    zwatch_t *w = zwatch_create(loop, a, EV_READ, s_count_cb, NULL);
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(zmq_send(b, "x", 1, 0), 1);

    ev_timer guard;
    ev_timer_init(&guard, s_timeout_cb, 0.1, 0);

    /* Not started. */
    s_calls = 0;
    s_arm(loop, &guard, 0.1);
    ev_run(loop, 0);
    ck_assert_int_eq(s_calls, 0);

    /* Started, but no interest. */
    zwatch_set_events(w, 0);
    zwatch_start(w);
    s_arm(loop, &guard, 0.1);
    s_timed_out = 0;
    ev_run(loop, 0);
    ck_assert(s_timed_out);
    ck_assert_int_eq(s_calls, 0);

    /* Interest added while started: fires at once for the pending message. */
    zwatch_set_events(w, EV_READ);
    s_arm(loop, &guard, 5.0);
    s_timed_out = 0;
    ev_run(loop, 0);
    ck_assert(!s_timed_out);
    ck_assert_int_eq(s_calls, 1);

    /* Stopped: the still-pending message does not fire. */
    zwatch_stop(w);
    zwatch_stop(w); /* idempotent */
    s_arm(loop, &guard, 0.1);
    s_timed_out = 0;
    ev_run(loop, 0);
    ck_assert(s_timed_out);
    ck_assert_int_eq(s_calls, 1);

    /* Restarted: fires again. */
    zwatch_start(w);
    s_arm(loop, &guard, 5.0);
    s_timed_out = 0;
    ev_run(loop, 0);
    ck_assert(!s_timed_out);
    ck_assert_int_eq(s_calls, 2);

    ev_timer_stop(loop, &guard);
    zwatch_destroy(w);
    ev_loop_destroy(loop);
    zmq_close(a);
    zmq_close(b);
    zmq_ctx_term(s_ctx);
}
END_TEST

START_TEST(test_create_errors)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    errno = 0;
    ck_assert_ptr_null(zwatch_create(loop, NULL, EV_READ, s_count_cb, NULL));
    ck_assert_int_eq(errno, EINVAL);
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_PAIR);
    ck_assert_ptr_null(zwatch_create(loop, s, EV_READ, NULL, NULL));
    ck_assert_ptr_null(zwatch_create(NULL, s, EV_READ, s_count_cb, NULL));
    ck_assert_ptr_null(zwatch_socket(NULL));
    zmq_close(s);
    zmq_ctx_term(ctx);
    ev_loop_destroy(loop);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("zwatch");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_recv_inproc_fast);
    tcase_add_test(tc, test_recv_inproc_bounded);
    tcase_add_test(tc, test_recv_tcp_bursty);
    tcase_add_test(tc, test_recv_tcp_one_at_a_time);
    tcase_add_test(tc, test_write_interest);
    tcase_add_test(tc, test_stop_restart_and_interest);
    tcase_add_test(tc, test_create_errors);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
