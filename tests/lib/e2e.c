/*
 * e2e.c - Check helpers for the end-to-end tests (see e2e.h).
 */
#define _GNU_SOURCE
#include "e2e.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double e2e_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void e2e_sleep(double s)
{
    struct timespec ts;
    if (s <= 0)
        return;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

int e2e_contains(const char *hay, const char *needle)
{
    return hay && needle && strcasestr(hay, needle) != NULL;
}

TCase *e2e_tcase(const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, E2E_TIMEOUT);
    tcase_add_unchecked_fixture(tc, cluster_fixture_setup, cluster_fixture_teardown);
    return tc;
}

void e2e_add(TCase *tc, const TTest *t)
{
    const char *only = getenv("E2E_ONLY"), *p;

    if (!only || !*only) {
        tcase_add_test(tc, t);
        return;
    }
    for (p = only; *p;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        char tok[128];

        if (n > 0 && n < sizeof tok) {
            memcpy(tok, p, n);
            tok[n] = '\0';
            if (strstr(t->name, tok)) {
                tcase_add_test(tc, t);
                return;
            }
        }
        p += n;
        if (*p == ',')
            p++;
    }
}

int e2e_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

/* --- submitting ------------------------------------------------------------------ */

void e2e_pack_ints(msgpack_sbuffer *sb, const int64_t *v, size_t n)
{
    msgpack_packer pk;

    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        msgpack_pack_int64(&pk, v[i]);
}

static shoal_future_t *s_submit(const char *file, int line, shoal_client_t *c,
                                const char *func, const shoal_submit_opts_t *o,
                                msgpack_sbuffer *sb)
{
    shoal_error_t err;
    shoal_future_t *f;

    memset(&err, 0, sizeof err);
    f = shoal_submit(c, func, sb->data, sb->size, o, &err);
    msgpack_sbuffer_destroy(sb);
    ck_assert_msg(f != NULL, "%s:%d: shoal_submit(%s) failed: %s", file, line, func,
                  err.msg);
    return f;
}

shoal_future_t *e2e_sub_iv(const char *file, int line, shoal_client_t *c,
                           const char *func, const shoal_submit_opts_t *o,
                           const int64_t *v, size_t n)
{
    msgpack_sbuffer sb;

    msgpack_sbuffer_init(&sb);
    e2e_pack_ints(&sb, v, n);
    return s_submit(file, line, c, func, o, &sb);
}

shoal_future_t *e2e_sub_fv(const char *file, int line, shoal_client_t *c,
                           const char *func, const shoal_submit_opts_t *o,
                           shoal_future_t *const *v, size_t n)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(shoal_pack_future(&pk, v[i]) == 0,
                      "%s:%d: shoal_pack_future failed", file, line);
    return s_submit(file, line, c, func, o, &sb);
}

shoal_future_t *e2e_sub_s(const char *file, int line, shoal_client_t *c,
                          const char *func, const shoal_submit_opts_t *o, const char *s)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    size_t n = strlen(s);

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_str(&pk, n);
    msgpack_pack_str_body(&pk, s, n);
    return s_submit(file, line, c, func, o, &sb);
}

shoal_future_t *e2e_sub_slow(const char *file, int line, shoal_client_t *c, int64_t x,
                             double seconds, const shoal_submit_opts_t *o)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_int64(&pk, x);
    msgpack_pack_double(&pk, seconds);
    return s_submit(file, line, c, "slow_inc", o, &sb);
}

shoal_future_t *e2e_sub_raw(const char *file, int line, shoal_client_t *c,
                            const char *func, const shoal_submit_opts_t *o,
                            const void *args, size_t len)
{
    shoal_error_t err;
    shoal_future_t *f;

    memset(&err, 0, sizeof err);
    f = shoal_submit(c, func, args, len, o, &err);
    ck_assert_msg(f != NULL, "%s:%d: shoal_submit(%s) failed: %s", file, line, func,
                  err.msg);
    return f;
}

/* --- results ------------------------------------------------------------------------ */

int64_t e2e_i64(const char *file, int line, shoal_future_t *f, double timeout)
{
    shoal_error_t err;
    int64_t v = 0;
    int rc;

    memset(&err, 0, sizeof err);
    rc = shoal_result_i64(f, timeout, &v, &err);
    ck_assert_msg(rc == 0, "%s:%d: task %llu: no integer result (errno %d: %s): %s",
                  file, line, (unsigned long long)shoal_future_id(f), errno,
                  strerror(errno), err.msg);
    ck_assert_msg(shoal_future_status(f) == SHOAL_FINISHED,
                  "%s:%d: result returned but status is %d", file, line,
                  (int)shoal_future_status(f));
    return v;
}

const char *e2e_err(const char *file, int line, shoal_future_t *f, double timeout)
{
    shoal_error_t err;
    const void *data = NULL;
    size_t len = 0;
    const char *text;
    int rc, e;

    memset(&err, 0, sizeof err);
    rc = shoal_result(f, timeout, &data, &len, &err);
    e = errno;
    ck_assert_msg(rc == -1, "%s:%d: task %llu succeeded, expected a failure", file, line,
                  (unsigned long long)shoal_future_id(f));
    ck_assert_msg(e != ETIMEDOUT, "%s:%d: task %llu did not finish within %.1f s", file,
                  line, (unsigned long long)shoal_future_id(f), timeout);
    ck_assert_msg(e == EIO, "%s:%d: failed task: errno %d (%s), expected EIO; err: %s",
                  file, line, e, strerror(e), err.msg);
    ck_assert_msg(shoal_future_status(f) == SHOAL_ERROR, "%s:%d: status %d, expected ERROR",
                  file, line, (int)shoal_future_status(f));
    ck_assert_msg(err.msg[0] != '\0', "%s:%d: failed result without error text", file,
                  line);
    text = shoal_future_error(f);
    ck_assert_msg(text && text[0], "%s:%d: shoal_future_error is empty for a failed task",
                  file, line);
    return text;
}

int e2e_wait_done(shoal_future_t *f, double timeout)
{
    shoal_future_t *fs[1] = {f};
    return shoal_wait(fs, 1, SHOAL_ALL_COMPLETED, timeout, NULL) == 1 ? 0 : -1;
}

void e2e_cancelled(const char *file, int line, shoal_future_t *f, double timeout)
{
    shoal_error_t err;
    const void *data;
    size_t len;
    int rc, e;

    ck_assert_msg(e2e_wait_done(f, timeout) == 0,
                  "%s:%d: task %llu not done %.1f s after the cancel", file, line,
                  (unsigned long long)shoal_future_id(f), timeout);
    ck_assert_msg(shoal_future_status(f) == SHOAL_CANCELLED,
                  "%s:%d: status %d, expected CANCELLED (error: %s)", file, line,
                  (int)shoal_future_status(f),
                  shoal_future_error(f) ? shoal_future_error(f) : "-");
    memset(&err, 0, sizeof err);
    rc = shoal_result(f, 0, &data, &len, &err);
    e = errno;
    ck_assert_msg(rc == -1 && e == ECANCELED,
                  "%s:%d: shoal_result of a cancelled task: rc %d errno %d", file, line,
                  rc, e);
}

void e2e_status(const char *file, int line, shoal_client_t *c, shoal_status_info_t *st)
{
    shoal_error_t err;

    memset(&err, 0, sizeof err);
    memset(st, 0, sizeof *st);
    ck_assert_msg(shoal_status(c, st, 10.0, &err) == 0, "%s:%d: shoal_status: %s", file,
                  line, err.msg);
}

uint64_t e2e_wait_total(shoal_client_t *c, uint64_t total, double timeout)
{
    double end = e2e_now() + timeout;
    uint64_t last = UINT64_MAX;

    for (;;) {
        shoal_status_info_t st;
        shoal_error_t err;
        if (shoal_status(c, &st, 5.0, &err) == 0) {
            last = st.total;
            shoal_status_free(&st);
            if (last == total)
                return last;
        }
        if (e2e_now() >= end)
            return last;
        e2e_sleep(0.05);
    }
}

cluster_t *e2e_cluster(const char *file, int line, const cluster_opts_t *o)
{
    cluster_t *cl = cluster_start_opts(o);
    ck_assert_msg(cl != NULL, "%s:%d: the cluster did not start (see stderr)", file, line);
    return cl;
}
