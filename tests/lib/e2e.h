/*
 * e2e.h - Check helpers shared by the end-to-end tests: tcases with a
 * timeout and the cluster fixture, submitting tasks with packed arguments,
 * and result checks that fail the test with the caller's file and line.
 *
 * The macros in capitals assert (they end the test on failure); the
 * functions in lower case do not.
 */
#ifndef SHOAL_TEST_E2E_H
#define SHOAL_TEST_E2E_H

#include <check.h>
#include <msgpack.h>
#include <stdint.h>

#include "cluster.h"
#include "shoal.h"

/* Per-test timeout in seconds (scaled by $CK_TIMEOUT_MULTIPLIER by Check). */
#define E2E_TIMEOUT 60
/* Default wait for one result. */
#define E2E_WAIT 30.0

double e2e_now(void);
void e2e_sleep(double seconds);

/* A tcase with E2E_TIMEOUT and the cluster fixture (cluster.h). */
TCase *e2e_tcase(const char *name);
/* Add a test to tc unless $E2E_ONLY is set and names none of its
 * comma-separated substrings (to run one test while debugging:
 * E2E_ONLY=cancel_running build/test/e2e/test_wait). */
void e2e_add(TCase *tc, const TTest *t);
/* Run the suite (fork mode unless CK_FORK=no); returns the exit status. */
int e2e_run(Suite *s);

/* --- submitting ------------------------------------------------------------------ */

shoal_future_t *e2e_sub_iv(const char *file, int line, shoal_client_t *c,
                           const char *func, const shoal_submit_opts_t *o,
                           const int64_t *v, size_t n);
shoal_future_t *e2e_sub_fv(const char *file, int line, shoal_client_t *c,
                           const char *func, const shoal_submit_opts_t *o,
                           shoal_future_t *const *v, size_t n);
shoal_future_t *e2e_sub_s(const char *file, int line, shoal_client_t *c,
                          const char *func, const shoal_submit_opts_t *o, const char *s);
shoal_future_t *e2e_sub_slow(const char *file, int line, shoal_client_t *c, int64_t x,
                             double seconds, const shoal_submit_opts_t *o);
shoal_future_t *e2e_sub_raw(const char *file, int line, shoal_client_t *c,
                            const char *func, const shoal_submit_opts_t *o,
                            const void *args, size_t len);

/* func(i0, i1, ...) with integer arguments. */
#define SUB_I(c, func, o, ...)                                                      \
    e2e_sub_iv(__FILE__, __LINE__, (c), (func), (o), (const int64_t[]){__VA_ARGS__}, \
               sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t))
/* func() with no arguments. */
#define SUB_0(c, func, o) e2e_sub_iv(__FILE__, __LINE__, (c), (func), (o), NULL, 0)
/* func(f0, f1, ...) with futures as arguments (dependencies). */
#define SUB_F(c, func, o, ...)                                                         \
    e2e_sub_fv(__FILE__, __LINE__, (c), (func), (o),                                   \
               (shoal_future_t *const[]){__VA_ARGS__},                                 \
               sizeof((shoal_future_t *const[]){__VA_ARGS__}) / sizeof(shoal_future_t *))
/* func("s"). */
#define SUB_S(c, func, o, s) e2e_sub_s(__FILE__, __LINE__, (c), (func), (o), (s))
/* slow_inc(x, seconds). */
#define SUB_SLOW(c, x, secs, o) e2e_sub_slow(__FILE__, __LINE__, (c), (x), (secs), (o))

/* Pack an array of integers into sb (initialised by the caller). */
void e2e_pack_ints(msgpack_sbuffer *sb, const int64_t *v, size_t n);

/* --- results ----------------------------------------------------------------------- */

int64_t e2e_i64(const char *file, int line, shoal_future_t *f, double timeout);
/* Asserts the future failed (SHOAL_ERROR, errno EIO); returns its error text. */
const char *e2e_err(const char *file, int line, shoal_future_t *f, double timeout);
/* Asserts the future ends SHOAL_CANCELLED within timeout. */
void e2e_cancelled(const char *file, int line, shoal_future_t *f, double timeout);
/* Wait until f is done (whatever the outcome); 0, or -1 on timeout. */
int e2e_wait_done(shoal_future_t *f, double timeout);

#define I64(f) e2e_i64(__FILE__, __LINE__, (f), E2E_WAIT)
#define I64_T(f, t) e2e_i64(__FILE__, __LINE__, (f), (t))
#define ERRTEXT(f) e2e_err(__FILE__, __LINE__, (f), E2E_WAIT)
#define ERRTEXT_T(f, t) e2e_err(__FILE__, __LINE__, (f), (t))
#define CANCELLED(f, t) e2e_cancelled(__FILE__, __LINE__, (f), (t))

/* Non-zero if needle occurs in hay, ignoring case (hay may be NULL). */
int e2e_contains(const char *hay, const char *needle);

/* Case-insensitive substring assertion with both strings in the message. */
#define CONTAINS(hay, needle)                                                       \
    do {                                                                            \
        const char *h_ = (hay), *n_ = (needle);                                     \
        ck_assert_msg(e2e_contains(h_, n_), "expected \"%s\" to contain \"%s\"", \
                      h_ ? h_ : "(null)", n_);                                      \
    } while (0)

/* shoal_status that must succeed; free with shoal_status_free. */
void e2e_status(const char *file, int line, shoal_client_t *c, shoal_status_info_t *st);
#define STATUS(c, st) e2e_status(__FILE__, __LINE__, (c), (st))

/* Poll the scheduler until its task total is `total` (e.g. 0 after release);
 * returns the last total seen. */
uint64_t e2e_wait_total(shoal_client_t *c, uint64_t total, double timeout);

/* A cluster that must start (asserts). */
cluster_t *e2e_cluster(const char *file, int line, const cluster_opts_t *o);
#define CLUSTER(...) e2e_cluster(__FILE__, __LINE__, &(cluster_opts_t){__VA_ARGS__})

#endif
