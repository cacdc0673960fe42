/*
 * test_client.c - unit tests of libshoal that need no real cluster.
 *
 *   - inline:// clients end to end (tasks run in the test process);
 *   - the remote path against a fake scheduler: a ROUTER socket served by a
 *     thread of the test, speaking just enough of docs/PROTOCOL.md to drive
 *     the client through submissions, results, dependencies, cancellation,
 *     releases, status, library upload, BYE and a scheduler restart;
 *   - connection failures: unreachable and silent schedulers (bounded
 *     timeouts), bad addresses, missing scheduler files, refused handshakes,
 *     a local cluster whose binaries cannot be found.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "shoal.h"

#include "client_int.h" /* the busy-polling test reads the client's counters */

#include "exec.h"
#include "mp.h"
#include "proto.h"
#include "util.h"

/* ---- helpers -------------------------------------------------------------- */

typedef struct pbuf {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} pbuf_t;

static void pb_init(pbuf_t *b)
{
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
}

static void pb_free(pbuf_t *b)
{
    msgpack_sbuffer_destroy(&b->sb);
}

/* Submit func with integer arguments. */
static shoal_future_t *submit_ints(shoal_client_t *c, const char *func, int n,
                                   const int64_t *v, shoal_error_t *err)
{
    pbuf_t b;
    pb_init(&b);
    msgpack_pack_array(&b.pk, (uint32_t)n);
    for (int i = 0; i < n; i++)
        msgpack_pack_int64(&b.pk, v[i]);
    shoal_future_t *f = shoal_submit(c, func, b.sb.data, b.sb.size, NULL, err);
    pb_free(&b);
    return f;
}

static shoal_future_t *submit_str(shoal_client_t *c, const char *func, const char *s,
                                  const shoal_submit_opts_t *o, shoal_error_t *err)
{
    pbuf_t b;
    pb_init(&b);
    msgpack_pack_array(&b.pk, 1);
    shoal_pack_cstr(&b.pk, s);
    shoal_future_t *f = shoal_submit(c, func, b.sb.data, b.sb.size, o, err);
    pb_free(&b);
    return f;
}

static shoal_future_t *submit_none(shoal_client_t *c, const char *func, shoal_error_t *err)
{
    static const char empty = (char)0x90;
    return shoal_submit(c, func, &empty, 1, NULL, err);
}

static shoal_client_t *connect_inline(void)
{
    shoal_error_t err;
    shoal_client_t *c = shoal_connect("inline://", &err);
    ck_assert_msg(c != NULL, "inline connect failed: %s", err.msg);
    return c;
}

/* ---- inline:// ---------------------------------------------------------------- */

START_TEST(test_inline_sum_echo)
{
    shoal_error_t err;
    shoal_client_t *c = connect_inline();
    ck_assert_str_eq(shoal_client_address(c), "inline://");

    int64_t v[] = {1, 2, 39};
    shoal_future_t *f = submit_ints(c, "shoal.sum", 3, v, &err);
    ck_assert_msg(f != NULL, "%s", err.msg);
    ck_assert_int_eq(shoal_future_status(f), SHOAL_FINISHED);
    ck_assert_uint_eq(shoal_future_id(f) >> 40, 1);
    int64_t r = 0;
    ck_assert_int_eq(shoal_result_i64(f, -1, &r, &err), 0);
    ck_assert_int_eq(r, 42);
    double d = 0;
    ck_assert_int_eq(shoal_result_f64(f, 0, &d, &err), 0);
    ck_assert(d == 42.0);
    ck_assert_str_eq(shoal_future_worker(f), "inline");
    ck_assert_ptr_null(shoal_future_error(f));

    shoal_future_t *e = submit_str(c, "shoal.echo", "hello", NULL, &err);
    ck_assert_ptr_nonnull(e);
    msgpack_object o;
    ck_assert_int_eq(shoal_result_object(e, 1, &o, &err), 0);
    ck_assert_int_eq(o.type, MSGPACK_OBJECT_STR);
    ck_assert_int_eq(o.via.str.size, 5);
    ck_assert(memcmp(o.via.str.ptr, "hello", 5) == 0);
    /* A second call gives the same object (unpacked once). */
    msgpack_object o2;
    ck_assert_int_eq(shoal_result_object(e, 1, &o2, &err), 0);
    ck_assert_ptr_eq(o.via.str.ptr, o2.via.str.ptr);
    /* Not an integer. */
    ck_assert_int_eq(shoal_result_i64(e, 0, &r, &err), -1);
    ck_assert_int_eq(errno, EINVAL);

    const void *data;
    size_t len;
    shoal_future_t *n = submit_none(c, "shoal.noop", &err);
    ck_assert_int_eq(shoal_result(n, 0, &data, &len, &err), 0);
    ck_assert_uint_eq(len, 1);
    ck_assert_int_eq(((const unsigned char *)data)[0], 0xc0);

    shoal_release(f);
    shoal_release(e);
    shoal_release(n);
    shoal_release(NULL);
    shoal_disconnect(c);
    shoal_disconnect(NULL);
}
END_TEST

START_TEST(test_inline_fail_and_unknown)
{
    shoal_error_t err;
    shoal_client_t *c = connect_inline();
    shoal_submit_opts_t o = {.name = "boomer"};
    shoal_future_t *f = submit_str(c, "shoal.fail", "boom", &o, &err);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(shoal_future_status(f), SHOAL_ERROR);
    ck_assert_str_eq(shoal_future_error(f), "boom");
    ck_assert_str_eq(shoal_future_worker(f), "inline");
    const void *data;
    size_t len;
    ck_assert_int_eq(shoal_result(f, 1, &data, &len, &err), -1);
    ck_assert_int_eq(errno, EIO);
    ck_assert_msg(strstr(err.msg, "boomer") && strstr(err.msg, "boom") &&
                      strstr(err.msg, "inline"),
                  "error does not name task, worker and reason: %s", err.msg);

    shoal_future_t *u = submit_none(c, "no.such.function", &err);
    ck_assert_ptr_nonnull(u);
    ck_assert_int_eq(shoal_future_status(u), SHOAL_ERROR);
    ck_assert_ptr_nonnull(strstr(shoal_future_error(u), "no.such.function"));

    /* Bad submissions fail the call itself. */
    ck_assert_ptr_null(shoal_submit(c, "shoal.noop", "\x01", 1, NULL, &err));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "MessagePack array"));
    ck_assert_ptr_null(shoal_submit(c, "", "\x90", 1, NULL, &err));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(shoal_submit(c, "shoal.noop", "\x92\x01", 2, NULL, &err));
    ck_assert_int_eq(errno, EINVAL);
    shoal_submit_opts_t bad = {.retries = -1};
    ck_assert_ptr_null(shoal_submit(c, "shoal.noop", "\x90", 1, &bad, &err));
    ck_assert_int_eq(errno, EINVAL);

    shoal_release(f);
    shoal_release(u);
    shoal_disconnect(c);
}
END_TEST

START_TEST(test_inline_deps)
{
    shoal_error_t err;
    shoal_client_t *c = connect_inline();
    int64_t v[] = {1, 2};
    shoal_future_t *a = submit_ints(c, "shoal.sum", 2, v, &err);
    ck_assert_ptr_nonnull(a);

    /* b = sum(a, 10); c2 = sum(a, b) */
    pbuf_t b;
    pb_init(&b);
    msgpack_pack_array(&b.pk, 2);
    ck_assert_int_eq(shoal_pack_future(&b.pk, a), 0);
    msgpack_pack_int(&b.pk, 10);
    shoal_future_t *fb = shoal_submit(c, "shoal.sum", b.sb.data, b.sb.size, NULL, &err);
    pb_free(&b);
    ck_assert_msg(fb != NULL, "%s", err.msg);
    pb_init(&b);
    msgpack_pack_array(&b.pk, 2);
    shoal_pack_future(&b.pk, a);
    shoal_pack_future(&b.pk, fb);
    shoal_future_t *fc = shoal_submit(c, "shoal.sum", b.sb.data, b.sb.size, NULL, &err);
    pb_free(&b);
    ck_assert_ptr_nonnull(fc);
    int64_t r;
    ck_assert_int_eq(shoal_result_i64(fb, 0, &r, &err), 0);
    ck_assert_int_eq(r, 13);
    ck_assert_int_eq(shoal_result_i64(fc, 0, &r, &err), 0);
    ck_assert_int_eq(r, 16);

    /* A released future cannot be referred to any more. */
    uint64_t aid = shoal_future_id(a);
    shoal_release(a);
    pb_init(&b);
    msgpack_pack_array(&b.pk, 1);
    exec_pack_ref(&b.pk, aid);
    ck_assert_ptr_null(shoal_submit(c, "shoal.sum", b.sb.data, b.sb.size, NULL, &err));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "unknown or released future"));
    pb_free(&b);

    /* Failure propagates to dependents, naming the failed task. */
    shoal_submit_opts_t o = {.name = "root"};
    shoal_future_t *bad = submit_str(c, "shoal.fail", "kaput", &o, &err);
    pb_init(&b);
    msgpack_pack_array(&b.pk, 2);
    shoal_pack_future(&b.pk, bad);
    msgpack_pack_int(&b.pk, 1);
    shoal_future_t *dep = shoal_submit(c, "shoal.sum", b.sb.data, b.sb.size, NULL, &err);
    pb_free(&b);
    ck_assert_ptr_nonnull(dep);
    ck_assert_int_eq(shoal_future_status(dep), SHOAL_ERROR);
    ck_assert_str_eq(shoal_future_error(dep), "dependency root failed: kaput");
    ck_assert_int_eq(shoal_result_i64(dep, 0, &r, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "dependency root failed: kaput"));

    shoal_release(fb);
    shoal_release(fc);
    shoal_release(bad);
    shoal_release(dep);
    shoal_disconnect(c);
}
END_TEST

START_TEST(test_inline_cmd)
{
    shoal_error_t err;
    shoal_client_t *c = connect_inline();
    const char *argv[] = {"echo", "hello", NULL};
    shoal_cmd_t cmd = {.argv = argv};
    shoal_future_t *f = shoal_submit_cmd(c, &cmd, NULL, &err);
    ck_assert_msg(f != NULL, "%s", err.msg);
    shoal_cmd_result_t r;
    ck_assert_msg(shoal_cmd_result(f, 10, &r, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(r.exit_code, 0);
    ck_assert_int_eq(r.signal, 0);
    ck_assert_int_eq(r.timed_out, 0);
    ck_assert_uint_eq(r.out_len, 6);
    ck_assert(memcmp(r.out, "hello\n", 6) == 0);

    /* stdin, env, cwd and the exit status. */
    const char *argv2[] = {"sh", "-c", "cat; echo \"$FOO\"; pwd; exit 3", NULL};
    const char *env[] = {"FOO=bar", "PATH=/usr/bin:/bin", NULL};
    shoal_cmd_t cmd2 = {.argv = argv2, .env = env, .cwd = "/",
                        .stdin_data = "in:", .stdin_len = 3, .timeout = 20};
    shoal_future_t *g = shoal_submit_cmd(c, &cmd2, NULL, &err);
    ck_assert_ptr_nonnull(g);
    ck_assert_msg(shoal_cmd_result(g, 10, &r, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(r.exit_code, 3);
    ck_assert_uint_eq(r.out_len, 9);
    ck_assert(memcmp(r.out, "in:bar\n/\n", 9) == 0);

    /* A command that cannot start is a failed task. */
    const char *argv3[] = {"/nonexistent/program", NULL};
    shoal_cmd_t cmd3 = {.argv = argv3};
    shoal_future_t *h = shoal_submit_cmd(c, &cmd3, NULL, &err);
    ck_assert_ptr_nonnull(h);
    ck_assert_int_eq(shoal_future_status(h), SHOAL_ERROR);
    ck_assert_int_eq(shoal_cmd_result(h, 0, &r, &err), -1);

    /* Not a command result. */
    shoal_future_t *n = submit_none(c, "shoal.noop", &err);
    ck_assert_int_eq(shoal_cmd_result(n, 0, &r, &err), -1);
    ck_assert_int_eq(errno, EBADMSG);

    /* Bad commands are refused before anything runs. */
    const char *empty[] = {NULL};
    shoal_cmd_t bad = {.argv = empty};
    ck_assert_ptr_null(shoal_submit_cmd(c, &bad, NULL, &err));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(shoal_submit_cmd(c, NULL, NULL, &err));

    shoal_release(f);
    shoal_release(g);
    shoal_release(h);
    shoal_release(n);
    shoal_disconnect(c);
}
END_TEST

/* Map n tasks of shoal.sum(i, 1) on c; return the futures. */
static shoal_future_t **map_sums(shoal_client_t *c, size_t n, const char *func)
{
    pbuf_t *bufs = calloc(n, sizeof *bufs);
    const void **args = calloc(n, sizeof *args);
    size_t *lens = calloc(n, sizeof *lens);
    shoal_future_t **fs = calloc(n, sizeof *fs);
    shoal_error_t err;
    for (size_t i = 0; i < n; i++) {
        pb_init(&bufs[i]);
        msgpack_pack_array(&bufs[i].pk, 2);
        msgpack_pack_uint64(&bufs[i].pk, i);
        msgpack_pack_int(&bufs[i].pk, 1);
        args[i] = bufs[i].sb.data;
        lens[i] = bufs[i].sb.size;
    }
    int rc = shoal_map(c, func, args, lens, n, NULL, fs, &err);
    ck_assert_msg(rc == 0, "map failed: %s", err.msg);
    for (size_t i = 0; i < n; i++)
        pb_free(&bufs[i]);
    free(bufs);
    free(args);
    free(lens);
    return fs;
}

START_TEST(test_inline_map_gather_wait)
{
    shoal_error_t err;
    shoal_client_t *c = connect_inline();
    size_t n = 200;
    shoal_future_t **fs = map_sums(c, n, "shoal.sum");
    ck_assert_int_eq(shoal_gather(fs, n, 5, &err), 0);
    for (size_t i = 0; i < n; i++) {
        int64_t r;
        ck_assert_int_eq(shoal_result_i64(fs[i], 0, &r, &err), 0);
        ck_assert_int_eq(r, (int64_t)i + 1);
    }
    char done[4];
    ck_assert_int_eq(shoal_wait(fs, 4, SHOAL_ALL_COMPLETED, 0, done), 4);
    ck_assert(done[0] && done[3]);
    ck_assert_int_eq(shoal_wait(fs, 4, SHOAL_FIRST_COMPLETED, -1, NULL), 4);
    ck_assert_int_eq(shoal_wait(fs, 4, SHOAL_FIRST_EXCEPTION, 1, done), 4);
    ck_assert_int_eq(shoal_wait(fs, 0, SHOAL_ALL_COMPLETED, 1, NULL), 0);
    ck_assert_int_eq(shoal_gather(fs, 0, 1, &err), 0);

    /* gather names the first failed task. */
    shoal_future_t *mixed[3];
    mixed[0] = fs[0];
    shoal_submit_opts_t o = {.name = "first-bad"};
    mixed[1] = submit_str(c, "shoal.fail", "bad one", &o, &err);
    o.name = "second-bad";
    mixed[2] = submit_str(c, "shoal.fail", "bad two", &o, &err);
    ck_assert_int_eq(shoal_gather(mixed, 3, 1, &err), -1);
    ck_assert_int_eq(errno, EIO);
    ck_assert_msg(strstr(err.msg, "first-bad") && strstr(err.msg, "bad one"), "%s", err.msg);
    ck_assert_int_eq(shoal_wait(mixed, 3, SHOAL_FIRST_EXCEPTION, 1, done), 3);

    /* Cancelling a completed future is a no-op. */
    ck_assert_int_eq(shoal_cancel(fs[0]), 0);
    ck_assert_int_eq(shoal_future_status(fs[0]), SHOAL_FINISHED);
    ck_assert_int_eq(shoal_cancel(NULL), -1);

    /* map is all or nothing: a bad argument array fails the whole call. */
    const void *args[2] = {"\x90", "\xc1"};
    size_t lens[2] = {1, 1};
    shoal_future_t *out[2] = {NULL, NULL};
    ck_assert_int_eq(shoal_map(c, "shoal.noop", args, lens, 2, NULL, out, &err), -1);
    ck_assert_ptr_null(out[0]);

    shoal_status_info_t st;
    ck_assert_int_eq(shoal_status(c, &st, 1, &err), 0);
    ck_assert_int_eq(st.nworkers, 1);
    ck_assert_str_eq(st.workers[0].name, "inline");
    ck_assert_uint_eq(st.total, n + 2);
    ck_assert_uint_eq(st.erred, 2);
    shoal_status_free(&st);
    ck_assert_int_eq(shoal_wait_for_workers(c, 4, 0, &err), 0);

    shoal_release(mixed[1]);
    shoal_release(mixed[2]);
    for (size_t i = 0; i < n; i++)
        shoal_release(fs[i]);
    free(fs);
    shoal_disconnect(c);
}
END_TEST

START_TEST(test_inline_as_completed)
{
    shoal_error_t err;
    shoal_client_t *c = connect_inline();
    shoal_future_t **fs = map_sums(c, 5, "shoal.sum");
    shoal_as_completed_t *ac = shoal_as_completed(fs, 3);
    ck_assert_ptr_nonnull(ac);
    ck_assert_int_eq(shoal_as_completed_add(ac, fs[3]), 0);
    /* Already-complete futures come back in the order they were added. */
    for (int i = 0; i < 4; i++)
        ck_assert_ptr_eq(shoal_as_completed_next(ac, 0), fs[i]);
    errno = 12345;
    ck_assert_ptr_null(shoal_as_completed_next(ac, 1));
    ck_assert_int_eq(errno, 0);
    /* The iterator keeps its futures alive after the caller released them. */
    shoal_release(fs[0]);
    ck_assert_int_eq(shoal_future_status(fs[0]), SHOAL_FINISHED);
    shoal_as_completed_destroy(ac);

    shoal_as_completed_t *empty = shoal_as_completed(NULL, 0);
    ck_assert_ptr_nonnull(empty);
    ck_assert_ptr_null(shoal_as_completed_next(empty, 0));
    ck_assert_int_eq(errno, 0);
    shoal_as_completed_destroy(empty);
    shoal_as_completed_destroy(NULL);
    (void)err;
    for (int i = 1; i < 5; i++)
        shoal_release(fs[i]);
    free(fs);
    shoal_disconnect(c);
}
END_TEST

START_TEST(test_inline_upload_bad_library)
{
    shoal_error_t err;
    shoal_client_t *c = connect_inline();
    ck_assert_int_eq(shoal_upload_library(c, "/nonexistent/libx.so", &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent/libx.so"));
    ck_assert_int_eq(shoal_upload_library(c, NULL, &err), -1);
    ck_assert_int_eq(errno, EINVAL);
    shoal_disconnect(c);
}
END_TEST

/* ---- a fake scheduler ------------------------------------------------------- */

enum { FAKE_OK, FAKE_REFUSE, FAKE_SILENT, FAKE_NEWER };

#define FAKE_MAX_PEND 4096

typedef struct fake {
    void *ctx, *sock;
    char endpoint[128];
    pthread_t th;
    int mode;
    int stop; /* atomic */
    pthread_mutex_t mu;
    /* counters, under mu */
    int nhello, nbye, nheartbeat, nsubmit, nrelease, ncancel, nstatus;
    int nsubmit_msgs, max_release_ids;
    size_t lib_bytes;
    uint64_t last_deps[8];
    size_t nlast_deps;
    uint64_t client_id;
    /* fake-scheduler state (its thread only) */
    int registered;
    uint8_t ident[256];
    size_t ident_len;
    struct { uint64_t id; double due; int hold; } pend[FAKE_MAX_PEND];
    int npend;
} fake_t;

static void fake_send_result(fake_t *fk, uint64_t id, int status, const void *p, size_t n)
{
    proto_batch_t b;
    proto_batch_init(&b, MSG_RESULT);
    msgpack_packer *pk = proto_batch_add(&b);
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint64(pk, id);
    msgpack_pack_int(pk, status);
    if (status == 0)
        mp_pack_bin(pk, p, n);
    else
        mp_pack_strn(pk, p, n);
    mp_pack_cstr(pk, "fakew");
    proto_batch_send(&b, fk->sock, fk->ident, fk->ident_len);
    proto_batch_destroy(&b);
}

static void fake_send_map(fake_t *fk, int type, pbuf_t *b)
{
    proto_send(fk->sock, fk->ident, fk->ident_len, type, b->sb.data, b->sb.size, NULL, 0);
    pb_free(b);
}

static void fake_on_submit(fake_t *fk, proto_msg_t *m)
{
    const msgpack_object *items;
    size_t n;
    if (mp_array(&m->body, &items, &n) < 0)
        return;
    pthread_mutex_lock(&fk->mu);
    fk->nsubmit_msgs++;
    pthread_mutex_unlock(&fk->mu);
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *it, *deps;
        size_t k, nd;
        uint64_t id;
        const char *func;
        size_t flen;
        const void *args;
        size_t alen;
        if (mp_array(&items[i], &it, &k) < 0 || k != 7 || mp_u64(&it[0], &id) < 0 ||
            mp_str(&it[1], &func, &flen) < 0 || mp_bin(&it[2], &args, &alen) < 0 ||
            mp_array(&it[3], &deps, &nd) < 0)
            continue;
        pthread_mutex_lock(&fk->mu);
        fk->nsubmit++;
        fk->nlast_deps = nd < 8 ? nd : 8;
        for (size_t d = 0; d < fk->nlast_deps; d++)
            mp_u64(&deps[d], &fk->last_deps[d]);
        pthread_mutex_unlock(&fk->mu);
        char f[64];
        snprintf(f, sizeof f, "%.*s", (int)(flen < 63 ? flen : 63), func);
        if (strcmp(f, "ok") == 0) {
            fake_send_result(fk, id, 0, args, alen); /* the result is the args array */
        } else if (strcmp(f, "err") == 0) {
            fake_send_result(fk, id, 1, "boom", 4);
        } else if ((strcmp(f, "delay") == 0 || strcmp(f, "hold") == 0) &&
                   fk->npend < FAKE_MAX_PEND) {
            /* delay: args [ms]; hold: until cancelled */
            double ms = 0;
            msgpack_zone z;
            msgpack_object o;
            size_t off = 0;
            msgpack_zone_init(&z, 256);
            if (msgpack_unpack(args, alen, &off, &z, &o) == MSGPACK_UNPACK_SUCCESS &&
                o.type == MSGPACK_OBJECT_ARRAY && o.via.array.size > 0)
                mp_f64(&o.via.array.ptr[0], &ms);
            msgpack_zone_destroy(&z);
            fk->pend[fk->npend].id = id;
            fk->pend[fk->npend].hold = f[0] == 'h';
            fk->pend[fk->npend].due = util_now() + ms / 1000.0;
            fk->npend++;
        } else if (strcmp(f, "bye") == 0) {
            proto_send(fk->sock, fk->ident, fk->ident_len, MSG_BYE, NULL, 0, NULL, 0);
        } else if (strcmp(f, "restart") == 0) {
            fk->registered = 0; /* forget the client, like a restarted scheduler */
            fk->npend = 0;
        }
    }
}

static void fake_on_ids(fake_t *fk, proto_msg_t *m, int cancel)
{
    const msgpack_object *ids;
    size_t n;
    if (mp_array(&m->body, &ids, &n) < 0)
        return;
    pthread_mutex_lock(&fk->mu);
    if (cancel) {
        fk->ncancel += (int)n;
    } else {
        fk->nrelease += (int)n;
        if ((int)n > fk->max_release_ids)
            fk->max_release_ids = (int)n;
    }
    pthread_mutex_unlock(&fk->mu);
    for (size_t i = 0; i < n && cancel; i++) {
        uint64_t id;
        if (mp_u64(&ids[i], &id) < 0)
            continue;
        for (int j = 0; j < fk->npend; j++) {
            if (fk->pend[j].id == id) {
                fake_send_result(fk, id, 2, "cancelled", 9);
                fk->pend[j] = fk->pend[--fk->npend];
                break;
            }
        }
    }
}

static void fake_handle(fake_t *fk, proto_msg_t *m)
{
    memcpy(fk->ident, m->ident, m->ident_len);
    fk->ident_len = m->ident_len;
    int type = m->hdr.type;
    if (type == MSG_HELLO) {
        pthread_mutex_lock(&fk->mu);
        fk->nhello++;
        uint64_t id = fk->client_id;
        pthread_mutex_unlock(&fk->mu);
        if (fk->mode == FAKE_SILENT)
            return;
        if (fk->mode == FAKE_NEWER) {
            /* A scheduler of a later protocol: header version 2. */
            uint8_t hdr[PROTO_HDR_SIZE];
            proto_hdr_encode(hdr, MSG_ERROR, 0);
            hdr[2] = 2;
            zmq_send(fk->sock, fk->ident, fk->ident_len, ZMQ_SNDMORE);
            zmq_send(fk->sock, hdr, sizeof hdr, ZMQ_SNDMORE);
            zmq_send(fk->sock, "\xc0", 1, 0);
            return;
        }
        if (fk->mode == FAKE_REFUSE) {
            proto_send_error(fk->sock, fk->ident, fk->ident_len, PERR_VERSION,
                             "protocol version mismatch (fake)");
            return;
        }
        if (!mp_str_eq(mp_map_get(&m->body, "role"), "client"))
            return;
        fk->registered = 1;
        pbuf_t b;
        pb_init(&b);
        msgpack_pack_map(&b.pk, 3);
        mp_pack_cstr(&b.pk, "id");
        msgpack_pack_uint64(&b.pk, id);
        mp_pack_cstr(&b.pk, "name");
        mp_pack_cstr(&b.pk, "fake");
        mp_pack_cstr(&b.pk, "nworkers");
        msgpack_pack_int(&b.pk, 2);
        fake_send_map(fk, MSG_WELCOME, &b);
        return;
    }
    if (!fk->registered) {
        proto_send_error(fk->sock, fk->ident, fk->ident_len, PERR_NOT_REGISTERED,
                         "not registered");
        return;
    }
    switch (type) {
    case MSG_HEARTBEAT:
        pthread_mutex_lock(&fk->mu);
        fk->nheartbeat++;
        pthread_mutex_unlock(&fk->mu);
        proto_send(fk->sock, fk->ident, fk->ident_len, MSG_HEARTBEAT, NULL, 0, NULL, 0);
        break;
    case MSG_BYE:
        pthread_mutex_lock(&fk->mu);
        fk->nbye++;
        pthread_mutex_unlock(&fk->mu);
        break;
    case MSG_SUBMIT: fake_on_submit(fk, m); break;
    case MSG_RELEASE: fake_on_ids(fk, m, 0); break;
    case MSG_CANCEL: fake_on_ids(fk, m, 1); break;
    case MSG_STATUS: {
        uint64_t req = 0;
        mp_u64(mp_map_get(&m->body, "req"), &req);
        pthread_mutex_lock(&fk->mu);
        fk->nstatus++;
        pthread_mutex_unlock(&fk->mu);
        pbuf_t b;
        pb_init(&b);
        msgpack_pack_map(&b.pk, 4);
        mp_pack_cstr(&b.pk, "req");
        msgpack_pack_uint64(&b.pk, req);
        mp_pack_cstr(&b.pk, "clients");
        msgpack_pack_int(&b.pk, 1);
        mp_pack_cstr(&b.pk, "tasks");
        msgpack_pack_map(&b.pk, 2);
        mp_pack_cstr(&b.pk, "waiting");
        msgpack_pack_int(&b.pk, 3);
        mp_pack_cstr(&b.pk, "total");
        msgpack_pack_int(&b.pk, 10);
        mp_pack_cstr(&b.pk, "workers");
        msgpack_pack_array(&b.pk, 2);
        for (int w = 0; w < 2; w++) {
            msgpack_pack_array(&b.pk, 6);
            mp_pack_cstr(&b.pk, w ? "w1" : "w0");
            mp_pack_cstr(&b.pk, "hostx");
            msgpack_pack_int(&b.pk, 100 + w);
            msgpack_pack_int(&b.pk, w ? 4 : 2);
            msgpack_pack_int(&b.pk, w);
            msgpack_pack_int(&b.pk, 7);
        }
        fake_send_map(fk, MSG_STATUS_REPLY, &b);
        break;
    }
    case MSG_UPLOAD_LIB: {
        uint64_t req = 0;
        const char *name = "";
        size_t nlen = 0;
        mp_u64(mp_map_get(&m->body, "req"), &req);
        mp_str(mp_map_get(&m->body, "name"), &name, &nlen);
        int ok = !(nlen >= 3 && memcmp(name, "bad", 3) == 0);
        pthread_mutex_lock(&fk->mu);
        fk->lib_bytes = proto_frame_size(m, 0);
        pthread_mutex_unlock(&fk->mu);
        pbuf_t b;
        pb_init(&b);
        msgpack_pack_map(&b.pk, 5);
        mp_pack_cstr(&b.pk, "req");
        msgpack_pack_uint64(&b.pk, req);
        mp_pack_cstr(&b.pk, "name");
        mp_pack_strn(&b.pk, name, nlen);
        mp_pack_cstr(&b.pk, "hash");
        msgpack_pack_uint64(&b.pk, 1);
        mp_pack_cstr(&b.pk, "ok");
        ok ? msgpack_pack_true(&b.pk) : msgpack_pack_false(&b.pk);
        mp_pack_cstr(&b.pk, "error");
        ok ? msgpack_pack_nil(&b.pk) : mp_pack_cstr(&b.pk, "not a task library (fake)");
        fake_send_map(fk, MSG_LIB_ACK, &b);
        break;
    }
    default:
        break;
    }
}

static void *fake_main(void *arg)
{
    fake_t *fk = arg;
    while (!__atomic_load_n(&fk->stop, __ATOMIC_ACQUIRE)) {
        zmq_pollitem_t pi = {.socket = fk->sock, .events = ZMQ_POLLIN};
        zmq_poll(&pi, 1, 10);
        for (;;) {
            proto_msg_t m;
            if (proto_recv(fk->sock, 1, &m, ZMQ_DONTWAIT) < 0) {
                if (errno == EAGAIN)
                    break;
                if (errno == EBADMSG || errno == EPROTONOSUPPORT) {
                    proto_msg_close(&m);
                    continue;
                }
                break;
            }
            fake_handle(fk, &m);
            proto_msg_close(&m);
        }
        double now = util_now();
        for (int j = 0; j < fk->npend;) {
            if (!fk->pend[j].hold && fk->pend[j].due <= now) {
                uint64_t id = fk->pend[j].id;
                fake_send_result(fk, id, 0, "\x91\x01", 2);
                fk->pend[j] = fk->pend[--fk->npend];
            } else {
                j++;
            }
        }
    }
    return NULL;
}

static fake_t *fake_start_at(int mode, int64_t max_msg, const char *endpoint)
{
    fake_t *fk = calloc(1, sizeof *fk);
    ck_assert_ptr_nonnull(fk);
    fk->mode = mode;
    fk->client_id = 7;
    pthread_mutex_init(&fk->mu, NULL);
    fk->ctx = zmq_ctx_new();
    fk->sock = zmq_socket(fk->ctx, ZMQ_ROUTER);
    ck_assert_int_eq(proto_sock_setup(fk->sock, max_msg), 0);
    int linger = 0;
    zmq_setsockopt(fk->sock, ZMQ_LINGER, &linger, sizeof linger);
    ck_assert_int_eq(zmq_bind(fk->sock, endpoint ? endpoint : "tcp://127.0.0.1:*"), 0);
    size_t len = sizeof fk->endpoint;
    ck_assert_int_eq(zmq_getsockopt(fk->sock, ZMQ_LAST_ENDPOINT, fk->endpoint, &len), 0);
    ck_assert_int_eq(pthread_create(&fk->th, NULL, fake_main, fk), 0);
    return fk;
}

static fake_t *fake_start_max(int mode, int64_t max_msg)
{
    return fake_start_at(mode, max_msg, NULL);
}

static fake_t *fake_start(int mode)
{
    return fake_start_max(mode, 0);
}

static void fake_stop(fake_t *fk)
{
    __atomic_store_n(&fk->stop, 1, __ATOMIC_RELEASE);
    pthread_join(fk->th, NULL);
    zmq_close(fk->sock);
    zmq_ctx_term(fk->ctx);
    pthread_mutex_destroy(&fk->mu);
    free(fk);
}

static int fake_get(fake_t *fk, int *field)
{
    pthread_mutex_lock(&fk->mu);
    int v = *field;
    pthread_mutex_unlock(&fk->mu);
    return v;
}

/* Wait (bounded) until *field reaches want. */
static int fake_wait(fake_t *fk, int *field, int want, double timeout)
{
    double end = util_now() + timeout;
    while (fake_get(fk, field) < want && util_now() < end)
        usleep(5000);
    return fake_get(fk, field);
}

static shoal_client_t *connect_fake(fake_t *fk)
{
    shoal_error_t err;
    shoal_connect_opts_t o = {.address = fk->endpoint, .timeout = 5, .name = "tester"};
    shoal_client_t *c = shoal_connect_opts(&o, &err);
    ck_assert_msg(c != NULL, "connect to fake failed: %s", err.msg);
    return c;
}

/* ---- remote path against the fake --------------------------------------------- */

START_TEST(test_remote_basic)
{
    fake_t *fk = fake_start(FAKE_OK);
    shoal_client_t *c = connect_fake(fk);
    shoal_error_t err;
    ck_assert_str_eq(shoal_client_address(c), fk->endpoint);

    int64_t v[] = {5, 6};
    shoal_future_t *f = submit_ints(c, "ok", 2, v, &err);
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(shoal_future_id(f) >> 40, 7);
    msgpack_object o;
    ck_assert_msg(shoal_result_object(f, 5, &o, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(o.type, MSGPACK_OBJECT_ARRAY);
    ck_assert_int_eq(o.via.array.size, 2);
    ck_assert_int_eq(o.via.array.ptr[1].via.u64, 6);
    ck_assert_str_eq(shoal_future_worker(f), "fakew");

    /* Dependencies travel in the SUBMIT item. */
    pbuf_t b;
    pb_init(&b);
    msgpack_pack_array(&b.pk, 2);
    shoal_pack_future(&b.pk, f);
    shoal_pack_future(&b.pk, f);
    shoal_future_t *g = shoal_submit(c, "ok", b.sb.data, b.sb.size, NULL, &err);
    pb_free(&b);
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(shoal_gather(&g, 1, 5, &err), 0);
    pthread_mutex_lock(&fk->mu);
    ck_assert_uint_eq(fk->nlast_deps, 1);
    ck_assert_uint_eq(fk->last_deps[0], shoal_future_id(f));
    pthread_mutex_unlock(&fk->mu);

    /* Errors carry the worker and name the task. */
    shoal_submit_opts_t so = {.name = "exploder"};
    shoal_future_t *e = submit_str(c, "err", "x", &so, &err);
    ck_assert_int_eq(shoal_result(e, 5, NULL, NULL, &err), -1);
    ck_assert_int_eq(errno, EIO);
    ck_assert_str_eq(shoal_future_error(e), "boom");
    ck_assert_msg(strstr(err.msg, "exploder") && strstr(err.msg, "fakew") &&
                      strstr(err.msg, "boom"),
                  "%s", err.msg);

    /* Releases reach the scheduler (batched). */
    shoal_release(f);
    shoal_release(g);
    shoal_release(e);
    ck_assert_int_eq(fake_wait(fk, &fk->nrelease, 3, 5), 3);

    /* A future of another client (or a made-up id) is refused. */
    pb_init(&b);
    msgpack_pack_array(&b.pk, 1);
    exec_pack_ref(&b.pk, (7ULL << 40) | 999);
    ck_assert_ptr_null(shoal_submit(c, "ok", b.sb.data, b.sb.size, NULL, &err));
    ck_assert_int_eq(errno, EINVAL);
    pb_free(&b);

    shoal_disconnect(c);
    ck_assert_int_eq(fake_wait(fk, &fk->nbye, 1, 5), 1);
    fake_stop(fk);
}
END_TEST

START_TEST(test_remote_map_many)
{
    fake_t *fk = fake_start(FAKE_OK);
    shoal_client_t *c = connect_fake(fk);
    shoal_error_t err;
    size_t n = 10000;
    shoal_future_t **fs = map_sums(c, n, "ok");
    ck_assert_msg(shoal_gather(fs, n, 20, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(fake_get(fk, &fk->nsubmit), (int)n);
    msgpack_object o;
    ck_assert_int_eq(shoal_result_object(fs[n - 1], 0, &o, &err), 0);
    ck_assert_uint_eq(o.via.array.ptr[0].via.u64, n - 1);
    for (size_t i = 0; i < n; i++)
        shoal_release(fs[i]);
    free(fs);
    ck_assert_int_eq(fake_wait(fk, &fk->nrelease, (int)n, 10), (int)n);
    shoal_disconnect(c);
    fake_stop(fk);
}
END_TEST

START_TEST(test_remote_batches_split)
{
    /* 20,000 tasks of ~130 bytes: about 2.6 MB of submissions, which must
     * go out in several messages: this fake scheduler drops any message
     * over 1.5 MiB (and the connection with it). */
    fake_t *fk = fake_start_max(FAKE_OK, 3 << 19);
    shoal_client_t *c = connect_fake(fk);
    shoal_error_t err;
    enum { N = 20000 };
    static char blob[120];
    pbuf_t b;
    pb_init(&b);
    msgpack_pack_array(&b.pk, 1);
    mp_pack_bin(&b.pk, blob, sizeof blob);
    const void **args = calloc(N, sizeof *args);
    size_t *lens = calloc(N, sizeof *lens);
    shoal_future_t **fs = calloc(N, sizeof *fs);
    for (int i = 0; i < N; i++) {
        args[i] = b.sb.data;
        lens[i] = b.sb.size;
    }
    ck_assert_int_eq(shoal_map(c, "ok", args, lens, N, NULL, fs, &err), 0);
    ck_assert_msg(shoal_gather(fs, N, 20, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(fake_get(fk, &fk->nsubmit), N);
    ck_assert_int_ge(fake_get(fk, &fk->nsubmit_msgs), 2);
    /* 70,000 releases: no RELEASE message holds more than 65,536 ids. */
    shoal_future_t **more = calloc(50000, sizeof *more);
    ck_assert_int_eq(shoal_map(c, "ok", args, lens, 20000, NULL, more, &err), 0);
    ck_assert_int_eq(shoal_map(c, "ok", args, lens, 20000, NULL, more + 20000, &err), 0);
    ck_assert_int_eq(shoal_map(c, "ok", args, lens, 10000, NULL, more + 40000, &err), 0);
    ck_assert_msg(shoal_gather(more, 50000, 30, &err) == 0, "%s", err.msg);
    for (int i = 0; i < N; i++)
        shoal_release(fs[i]);
    for (int i = 0; i < 50000; i++)
        shoal_release(more[i]);
    ck_assert_int_eq(fake_wait(fk, &fk->nrelease, N + 50000, 10), N + 50000);
    ck_assert_int_le(fake_get(fk, &fk->max_release_ids), 65536);
    pb_free(&b);
    free(args);
    free(lens);
    free(fs);
    free(more);
    shoal_disconnect(c);
    fake_stop(fk);
}
END_TEST

static shoal_future_t *submit_delay(shoal_client_t *c, const char *func, int ms)
{
    shoal_error_t err;
    int64_t v[] = {ms};
    shoal_future_t *f = submit_ints(c, func, 1, v, &err);
    ck_assert_msg(f != NULL, "%s", err.msg);
    return f;
}

START_TEST(test_remote_wait_modes)
{
    fake_t *fk = fake_start(FAKE_OK);
    shoal_client_t *c = connect_fake(fk);
    shoal_error_t err;
    shoal_future_t *fs[3];
    fs[0] = submit_delay(c, "delay", 100);
    fs[1] = submit_delay(c, "hold", 0);
    fs[2] = submit_delay(c, "delay", 300);
    char done[3];

    ck_assert_int_eq(shoal_future_status(fs[1]), SHOAL_PENDING);
    ck_assert_int_eq(shoal_result(fs[1], 0, NULL, NULL, &err), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    double t0 = util_now();
    ck_assert_int_eq(shoal_wait(fs, 3, SHOAL_FIRST_COMPLETED, 5, done), 1);
    ck_assert(done[0] && !done[1] && !done[2]);
    ck_assert(util_now() - t0 < 2);
    /* ALL times out on the held one, with done[] filled. */
    ck_assert_int_eq(shoal_wait(fs, 3, SHOAL_ALL_COMPLETED, 0.6, done), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert(done[0] && !done[1] && done[2]);
    /* No exception and not all done: FIRST_EXCEPTION times out too. */
    ck_assert_int_eq(shoal_wait(fs, 3, SHOAL_FIRST_EXCEPTION, 0.1, NULL), -1);
    ck_assert_int_eq(shoal_gather(fs, 3, 0.1, &err), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);

    /* An error ends FIRST_EXCEPTION although one is still pending. */
    shoal_future_t *ex[3] = {fs[0], fs[1], NULL};
    ex[2] = submit_str(c, "err", "x", NULL, &err);
    ck_assert_int_eq(shoal_wait(ex, 3, SHOAL_FIRST_EXCEPTION, 5, done), 2);
    ck_assert(done[0] && !done[1] && done[2]);

    /* Cancel: the held task becomes CANCELLED; a done one is untouched. */
    ck_assert_int_eq(shoal_cancel(fs[1]), 0);
    ck_assert_int_eq(shoal_cancel(fs[1]), 0);
    ck_assert_int_eq(shoal_cancel(fs[0]), 0);
    ck_assert_int_eq(shoal_result(fs[1], 5, NULL, NULL, &err), -1);
    ck_assert_int_eq(errno, ECANCELED);
    ck_assert_int_eq(shoal_future_status(fs[1]), SHOAL_CANCELLED);
    ck_assert_int_eq(shoal_future_status(fs[0]), SHOAL_FINISHED);
    ck_assert_int_eq(fake_get(fk, &fk->ncancel), 1);
    ck_assert_int_eq(shoal_wait(fs, 3, SHOAL_ALL_COMPLETED, 5, done), 3);

    for (int i = 0; i < 3; i++)
        shoal_release(fs[i]);
    shoal_release(ex[2]);
    shoal_disconnect(c);
    fake_stop(fk);
}
END_TEST

START_TEST(test_remote_as_completed)
{
    fake_t *fk = fake_start(FAKE_OK);
    shoal_client_t *c = connect_fake(fk);
    shoal_future_t *fs[3];
    fs[0] = submit_delay(c, "delay", 450);
    fs[1] = submit_delay(c, "delay", 50);
    fs[2] = submit_delay(c, "delay", 250);
    shoal_as_completed_t *ac = shoal_as_completed(fs, 3);
    ck_assert_ptr_nonnull(ac);
    ck_assert_ptr_eq(shoal_as_completed_next(ac, 5), fs[1]);
    ck_assert_ptr_eq(shoal_as_completed_next(ac, 5), fs[2]);
    ck_assert_ptr_eq(shoal_as_completed_next(ac, 5), fs[0]);
    ck_assert_ptr_null(shoal_as_completed_next(ac, 5));
    ck_assert_int_eq(errno, 0);

    /* A held task: next times out, then cancelling it ends the iteration. */
    shoal_future_t *h = submit_delay(c, "hold", 0);
    ck_assert_int_eq(shoal_as_completed_add(ac, h), 0);
    double t0 = util_now();
    ck_assert_ptr_null(shoal_as_completed_next(ac, 0.2));
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert(util_now() - t0 < 2);
    shoal_release(h); /* the iterator's reference keeps it alive */
    ck_assert_int_eq(shoal_cancel(h), 0);
    ck_assert_ptr_eq(shoal_as_completed_next(ac, 5), h);
    ck_assert_int_eq(shoal_future_status(h), SHOAL_CANCELLED);
    ck_assert_ptr_null(shoal_as_completed_next(ac, 5));
    ck_assert_int_eq(errno, 0);
    ck_assert_int_eq(fake_get(fk, &fk->nrelease), 0);
    shoal_as_completed_destroy(ac);
    /* The last reference went with the iterator: now it is released. */
    ck_assert_int_eq(fake_wait(fk, &fk->nrelease, 1, 5), 1);

    /* Destroying an iterator with pending futures detaches it cleanly. */
    shoal_future_t *h2 = submit_delay(c, "hold", 0);
    shoal_as_completed_t *ac2 = shoal_as_completed(&h2, 1);
    shoal_as_completed_destroy(ac2);
    shoal_cancel(h2);
    ck_assert_int_eq(shoal_wait(&h2, 1, SHOAL_ALL_COMPLETED, 5, NULL), 1);
    shoal_release(h2);

    for (int i = 0; i < 3; i++)
        shoal_release(fs[i]);
    shoal_disconnect(c);
    fake_stop(fk);
}
END_TEST

START_TEST(test_remote_status_and_workers)
{
    fake_t *fk = fake_start(FAKE_OK);
    shoal_client_t *c = connect_fake(fk);
    shoal_error_t err;
    shoal_status_info_t st;
    ck_assert_msg(shoal_status(c, &st, 5, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(st.nworkers, 2);
    ck_assert_int_eq(st.nthreads, 6);
    ck_assert_int_eq(st.nclients, 1);
    ck_assert_uint_eq(st.waiting, 3);
    ck_assert_uint_eq(st.total, 10);
    ck_assert_str_eq(st.workers[1].name, "w1");
    ck_assert_str_eq(st.workers[0].host, "hostx");
    ck_assert_int_eq(st.workers[1].pid, 101);
    ck_assert_int_eq(st.workers[1].running, 1);
    ck_assert_uint_eq(st.workers[1].completed, 7);
    shoal_status_free(&st);
    shoal_status_free(&st);

    ck_assert_int_eq(shoal_wait_for_workers(c, 2, 5, &err), 0);
    ck_assert_int_eq(shoal_wait_for_workers(c, 0, 0, &err), 0);
    double t0 = util_now();
    ck_assert_int_eq(shoal_wait_for_workers(c, 3, 0.5, &err), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_msg(strstr(err.msg, "2 of 3"), "%s", err.msg);
    ck_assert_msg(util_now() - t0 >= 0.45 && util_now() - t0 < 3, "took %g s",
                  util_now() - t0);
    shoal_disconnect(c);
    fake_stop(fk);
}
END_TEST

START_TEST(test_remote_upload)
{
    fake_t *fk = fake_start(FAKE_OK);
    shoal_client_t *c = connect_fake(fk);
    shoal_error_t err;
    char dir[] = "/tmp/shoal-test-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char good[256], bad[256];
    snprintf(good, sizeof good, "%s/libgood.so", dir);
    snprintf(bad, sizeof bad, "%s/badlib.so", dir);
    FILE *fp = fopen(good, "w");
    for (int i = 0; i < 5000; i++)
        fputs("0123456789", fp);
    fclose(fp);
    fp = fopen(bad, "w");
    fputs("x", fp);
    fclose(fp);

    ck_assert_msg(shoal_upload_library(c, good, &err) == 0, "%s", err.msg);
    pthread_mutex_lock(&fk->mu);
    ck_assert_uint_eq(fk->lib_bytes, 50000);
    pthread_mutex_unlock(&fk->mu);
    ck_assert_int_eq(shoal_upload_library(c, bad, &err), -1);
    ck_assert_msg(strstr(err.msg, "not a task library (fake)") && strstr(err.msg, "badlib"),
                  "%s", err.msg);
    ck_assert_int_eq(shoal_upload_library(c, "/nonexistent/lib.so", &err), -1);
    ck_assert_int_eq(errno, ENOENT);
    ck_assert_int_eq(shoal_upload_library(c, dir, &err), -1);
    unlink(good);
    unlink(bad);
    rmdir(dir);
    shoal_disconnect(c);
    fake_stop(fk);
}
END_TEST

START_TEST(test_remote_bye_fails_pending)
{
    fake_t *fk = fake_start(FAKE_OK);
    shoal_client_t *c = connect_fake(fk);
    shoal_error_t err;
    shoal_future_t *h = submit_delay(c, "hold", 0);
    shoal_future_t *b = submit_delay(c, "bye", 0);
    double t0 = util_now();
    ck_assert_int_eq(shoal_result(h, 5, NULL, NULL, &err), -1);
    ck_assert(util_now() - t0 < 3);
    ck_assert_int_eq(errno, EIO);
    ck_assert_ptr_nonnull(strstr(shoal_future_error(h), "scheduler shut down"));
    ck_assert_int_eq(shoal_future_status(b), SHOAL_ERROR);
    /* No new work is accepted while the scheduler is gone. */
    ck_assert_ptr_null(shoal_submit(c, "ok", "\x90", 1, NULL, &err));
    ck_assert_int_eq(errno, ENOTCONN);
    ck_assert_ptr_nonnull(strstr(err.msg, "scheduler shut down"));
    shoal_status_info_t st;
    ck_assert_int_eq(shoal_status(c, &st, 1, &err), -1);
    shoal_release(h);
    shoal_release(b);
    shoal_disconnect(c);
    fake_stop(fk);
}
END_TEST

START_TEST(test_remote_connection_lost)
{
    /* The scheduler disappears (its socket closes): pending futures fail at
     * once, not after the heartbeat timeout, and new work is refused. */
    fake_t *fk = fake_start(FAKE_OK);
    shoal_client_t *c = connect_fake(fk);
    shoal_error_t err;
    shoal_future_t *h = submit_delay(c, "hold", 0);
    ck_assert_int_eq(fake_wait(fk, &fk->nsubmit, 1, 5), 1);
    double t0 = util_now();
    fake_stop(fk);
    ck_assert_int_eq(shoal_result(h, 10, NULL, NULL, &err), -1);
    ck_assert_msg(util_now() - t0 < 3, "took %g s", util_now() - t0);
    ck_assert_ptr_nonnull(strstr(shoal_future_error(h), "lost connection"));
    ck_assert_ptr_null(shoal_submit(c, "ok", "\x90", 1, NULL, &err));
    ck_assert_int_eq(errno, ENOTCONN);
    shoal_release(h);

    /* A scheduler comes back at the same address: the client registers
     * with it (new client id) and works again. */
    char ep[128];
    snprintf(ep, sizeof ep, "%s", shoal_client_address(c));
    fk = fake_start_at(FAKE_OK, 0, ep);
    pthread_mutex_lock(&fk->mu);
    fk->client_id = 11;
    pthread_mutex_unlock(&fk->mu);
    shoal_future_t *g = NULL;
    double end = util_now() + 10;
    while (!g && util_now() < end) {
        g = shoal_submit(c, "ok", "\x90", 1, NULL, &err);
        if (!g)
            usleep(20000);
    }
    ck_assert_msg(g != NULL, "no reconnection: %s", err.msg);
    ck_assert_uint_eq(shoal_future_id(g) >> 40, 11);
    ck_assert_msg(shoal_result(g, 5, NULL, NULL, &err) == 0, "%s", err.msg);
    shoal_release(g);
    t0 = util_now();
    shoal_disconnect(c);
    ck_assert(util_now() - t0 < 3);
    fake_stop(fk);
}
END_TEST

START_TEST(test_remote_restart)
{
    fake_t *fk = fake_start(FAKE_OK);
    shoal_client_t *c = connect_fake(fk);
    shoal_error_t err;
    shoal_future_t *h = submit_delay(c, "hold", 0);
    pthread_mutex_lock(&fk->mu);
    fk->client_id = 9;
    pthread_mutex_unlock(&fk->mu);
    shoal_future_t *r = submit_delay(c, "restart", 0);
    /* The next heartbeat is refused as "not registered": the pending future
     * fails and the client registers again. */
    ck_assert_int_eq(shoal_result(h, 5, NULL, NULL, &err), -1);
    ck_assert_ptr_nonnull(strstr(shoal_future_error(h), "restarted"));
    ck_assert_int_eq(fake_wait(fk, &fk->nhello, 2, 5), 2);
    /* Wait for the new WELCOME to be taken into account. */
    shoal_future_t *g = NULL;
    double end = util_now() + 5;
    while (util_now() < end) {
        g = shoal_submit(c, "ok", "\x90", 1, NULL, &err);
        if (g && shoal_future_id(g) >> 40 == 9)
            break;
        shoal_release(g);
        g = NULL;
        usleep(20000);
    }
    ck_assert_ptr_nonnull(g);
    ck_assert_msg(shoal_result(g, 5, NULL, NULL, &err) == 0, "%s", err.msg);
    shoal_release(g);
    shoal_release(h);
    shoal_release(r);
    shoal_disconnect(c);
    fake_stop(fk);
}
END_TEST

typedef struct thr_arg {
    shoal_client_t *c;
    int ok;
} thr_arg_t;

static void *thr_submit(void *p)
{
    thr_arg_t *a = p;
    shoal_error_t err;
    enum { N = 500 };
    shoal_future_t *fs[N];
    for (int i = 0; i < N; i++) {
        int64_t v[] = {i};
        fs[i] = submit_ints(a->c, "ok", 1, v, &err);
        if (!fs[i])
            return NULL;
    }
    a->ok = shoal_gather(fs, N, 20, &err) == 0;
    for (int i = 0; i < N; i++) {
        msgpack_object o;
        if (shoal_result_object(fs[i], 0, &o, &err) < 0 || o.via.array.ptr[0].via.u64 != (uint64_t)i)
            a->ok = 0;
        shoal_release(fs[i]);
    }
    return NULL;
}

/* Busy-polling (client.c): its setting is validated wherever it comes from;
 * a waiting caller spins (counted in nspins) with few tasks unfinished and
 * a timeout still holds; the count of unfinished futures it is decided on
 * stays exact through completion, cancellation and release; a crowd of
 * unfinished tasks, a long wait, or the setting 0 keep it from spinning. */
static size_t s_pending(shoal_client_t *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->futures.pending;
    pthread_mutex_unlock(&c->mu);
    return n;
}

/* Forget the recent waits (connecting is one, and may be slow on a busy
 * machine), so that only what a check is about decides. */
static void s_forget_waits(shoal_client_t *c)
{
    pthread_mutex_lock(&c->mu);
    c->wait_avg = 0;
    pthread_mutex_unlock(&c->mu);
}

/* Wait `timeout` s for f (a task that does not finish) and return how many
 * of the caller's turns busy-polled meanwhile. */
static uint64_t s_spins_waiting(shoal_client_t *c, shoal_future_t *f, double timeout)
{
    shoal_error_t err;
    pthread_mutex_lock(&c->mu);
    uint64_t before = c->nspins;
    pthread_mutex_unlock(&c->mu);
    ck_assert_int_eq(shoal_result(f, timeout, NULL, NULL, &err), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    pthread_mutex_lock(&c->mu);
    uint64_t n = c->nspins - before;
    pthread_mutex_unlock(&c->mu);
    return n;
}

START_TEST(test_remote_spin)
{
    fake_t *fk = fake_start(FAKE_OK);
    shoal_connect_opts_t o = {.address = fk->endpoint, .timeout = 5};
    shoal_error_t err;
    shoal_client_t *c;

    /* Bad settings are refused with a message naming them. */
    static const char *bad[] = {"fast", "-5", "100001", "1e3", " 7"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        setenv("SHOAL_SPIN_US", bad[i], 1);
        errno = 0;
        ck_assert_ptr_null(shoal_connect_opts(&o, &err));
        ck_assert_int_eq(errno, EINVAL);
        ck_assert_msg(strstr(err.msg, "SHOAL_SPIN_US") && strstr(err.msg, bad[i]), "%s",
                      err.msg);
    }
    o.spin_us = CLIENT_SPIN_MAX_US + 1;
    ck_assert_ptr_null(shoal_connect_opts(&o, &err));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "spin_us"));

    /* The option wins over the environment; negative turns it off; 0 in
     * the environment too. */
    o.spin_us = -1;
    c = shoal_connect_opts(&o, &err);
    ck_assert_msg(c != NULL, "%s", err.msg);
    ck_assert_int_eq(c->spin_us, 0);
    int64_t v[] = {1};
    shoal_future_t *f = submit_ints(c, "ok", 1, v, &err);
    ck_assert_int_eq(shoal_result(f, 5, NULL, NULL, &err), 0);
    shoal_release(f);
    f = submit_delay(c, "hold", 0);
    ck_assert_uint_eq(s_spins_waiting(c, f, 0.2), 0);
    shoal_release(f);
    shoal_disconnect(c);
    setenv("SHOAL_SPIN_US", "0", 1);
    o.spin_us = 0;
    c = shoal_connect_opts(&o, &err);
    ck_assert_msg(c != NULL, "%s", err.msg);
    ck_assert_int_eq(c->spin_us, 0);
    shoal_disconnect(c);
    setenv("SHOAL_SPIN_US", "250", 1);
    c = shoal_connect_opts(&o, &err);
    ck_assert_msg(c != NULL, "%s", err.msg);
    ck_assert_int_eq(c->spin_us, 250);
    shoal_disconnect(c);
    unsetenv("SHOAL_SPIN_US");

    /* The default. */
    c = shoal_connect_opts(&o, &err);
    ck_assert_msg(c != NULL, "%s", err.msg);
    ck_assert_int_eq(c->spin_us, CLIENT_SPIN_US);
    ck_assert_uint_eq(s_pending(c), 0);

    /* Unfinished futures are counted: held ones stay, answered ones go. */
    shoal_future_t *h[CLIENT_SPIN_PENDING + 2];
    h[0] = submit_delay(c, "hold", 0);
    ck_assert_uint_eq(s_pending(c), 1);
    /* Few unfinished and no long waits lately: a waiting caller spins, and
     * its timeout still holds. */
    s_forget_waits(c);
    double t0 = util_now();
    ck_assert_uint_ge(s_spins_waiting(c, h[0], 0.2), 1);
    ck_assert_msg(util_now() - t0 < 3, "a 0.2 s timeout took %g s", util_now() - t0);
    for (int i = 1; i < CLIENT_SPIN_PENDING + 2; i++)
        h[i] = submit_delay(c, "hold", 0);
    ck_assert_uint_eq(s_pending(c), CLIENT_SPIN_PENDING + 2);
    /* Too many unfinished: no spinning. */
    s_forget_waits(c);
    ck_assert_uint_eq(s_spins_waiting(c, h[0], 0.2), 0);
    f = submit_ints(c, "ok", 1, v, &err);
    ck_assert_uint_eq(s_pending(c), CLIENT_SPIN_PENDING + 3);
    ck_assert_int_eq(shoal_result(f, 5, NULL, NULL, &err), 0);
    ck_assert_uint_eq(s_pending(c), CLIENT_SPIN_PENDING + 2);
    shoal_release(f);
    /* Cancelled: no longer unfinished. */
    ck_assert_int_eq(shoal_cancel(h[0]), 0);
    ck_assert_int_eq(shoal_result(h[0], 5, NULL, NULL, &err), -1);
    ck_assert_int_eq(errno, ECANCELED);
    ck_assert_uint_eq(s_pending(c), CLIENT_SPIN_PENDING + 1);
    /* Released before it finished: forgotten, so no longer counted. */
    shoal_release(h[1]);
    ck_assert_uint_eq(s_pending(c), CLIENT_SPIN_PENDING);
    /* Releasing a finished one changes nothing. */
    shoal_release(h[0]);
    ck_assert_uint_eq(s_pending(c), CLIENT_SPIN_PENDING);
    for (int i = 2; i < CLIENT_SPIN_PENDING + 2; i++) {
        ck_assert_int_eq(shoal_cancel(h[i]), 0);
        ck_assert_int_eq(shoal_result(h[i], 5, NULL, NULL, &err), -1);
        shoal_release(h[i]);
    }
    ck_assert_uint_eq(s_pending(c), 0);

    /* A wait longer than the spin turns it off (the average of recent
     * waits is then over spin_us); it comes back once answers are quick,
     * which is not asserted here: how quick they are depends on the
     * machine. */
    s_forget_waits(c);
    f = submit_delay(c, "delay", 200);
    ck_assert_int_eq(shoal_result(f, 5, NULL, NULL, &err), 0);
    shoal_release(f);
    f = submit_delay(c, "hold", 0);
    ck_assert_uint_eq(s_spins_waiting(c, f, 0.2), 0);
    shoal_release(f);
    ck_assert_uint_eq(s_pending(c), 0);

    shoal_disconnect(c);
    fake_stop(fk);
}
END_TEST

START_TEST(test_remote_threads)
{
    fake_t *fk = fake_start(FAKE_OK);
    shoal_client_t *c = connect_fake(fk);
    pthread_t th[4];
    thr_arg_t args[4];
    for (int i = 0; i < 4; i++) {
        args[i].c = c;
        args[i].ok = 0;
        pthread_create(&th[i], NULL, thr_submit, &args[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++)
        ck_assert_msg(args[i].ok, "thread %d: a task failed or did not finish", i);
    shoal_disconnect(c);
    fake_stop(fk);
}
END_TEST

START_TEST(test_disconnect_with_live_futures)
{
    /* Futures not released before disconnect are freed by it (valgrind
     * checks there is no leak), pending ones included. */
    fake_t *fk = fake_start(FAKE_OK);
    shoal_client_t *c = connect_fake(fk);
    submit_delay(c, "hold", 0);
    shoal_future_t *f = submit_delay(c, "ok", 0);
    ck_assert_int_eq(shoal_wait(&f, 1, SHOAL_ALL_COMPLETED, 5, NULL), 1);
    shoal_disconnect(c);
    fake_stop(fk);

    shoal_client_t *ic = connect_inline();
    shoal_future_t *i1 = submit_none(ic, "shoal.noop", NULL);
    ck_assert_ptr_nonnull(i1);
    shoal_disconnect(ic);
}
END_TEST

/* ---- connection failures -------------------------------------------------------- */

/* A loopback port nobody listens on: bind one, note it, close it. */
static int dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

START_TEST(test_connect_unreachable)
{
    char addr[64];
    snprintf(addr, sizeof addr, "tcp://127.0.0.1:%d", dead_port());
    shoal_connect_opts_t o = {.address = addr, .timeout = 0.5};
    shoal_error_t err;
    double t0 = util_now();
    shoal_client_t *c = shoal_connect_opts(&o, &err);
    double dt = util_now() - t0;
    ck_assert_ptr_null(c);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_msg(strstr(err.msg, "could not reach the scheduler") && strstr(err.msg, addr) &&
                      strstr(err.msg, "0.5 s"),
                  "%s", err.msg);
    ck_assert_msg(dt >= 0.45 && dt < 3, "took %g s", dt);

    /* "HOST:PORT" is accepted and normalised. */
    snprintf(addr, sizeof addr, "127.0.0.1:%d", dead_port());
    o.address = addr;
    ck_assert_ptr_null(shoal_connect_opts(&o, &err));
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_ptr_nonnull(strstr(err.msg, "tcp://127.0.0.1:"));
}
END_TEST

START_TEST(test_connect_silent_and_refused)
{
    fake_t *fk = fake_start(FAKE_SILENT);
    shoal_connect_opts_t o = {.address = fk->endpoint, .timeout = 0.5};
    shoal_error_t err;
    double t0 = util_now();
    ck_assert_ptr_null(shoal_connect_opts(&o, &err));
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert(util_now() - t0 < 3);
    ck_assert_int_eq(fake_get(fk, &fk->nhello), 1);
    fake_stop(fk);

    fk = fake_start(FAKE_REFUSE);
    o.address = fk->endpoint;
    o.timeout = 5;
    ck_assert_ptr_null(shoal_connect_opts(&o, &err));
    ck_assert_int_eq(errno, EPROTONOSUPPORT);
    ck_assert_msg(strstr(err.msg, "protocol version mismatch (fake)"), "%s", err.msg);
    fake_stop(fk);

    fk = fake_start(FAKE_NEWER);
    o.address = fk->endpoint;
    t0 = util_now();
    ck_assert_ptr_null(shoal_connect_opts(&o, &err));
    ck_assert_int_eq(errno, EPROTONOSUPPORT);
    ck_assert(util_now() - t0 < 3);
    ck_assert_msg(strstr(err.msg, "protocol version 2"), "%s", err.msg);
    fake_stop(fk);
}
END_TEST

START_TEST(test_connect_bad_address)
{
    shoal_error_t err;
    const char *bad[] = {"tcp://bad host:12", "127.0.0.1:99999", "tcp://", "x:y:z:w", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        double t0 = util_now();
        ck_assert_msg(shoal_connect(bad[i], &err) == NULL, "'%s' accepted", bad[i]);
        ck_assert_msg(errno == EINVAL, "'%s': errno %d", bad[i], errno);
        ck_assert_ptr_nonnull(strstr(err.msg, "address"));
        ck_assert(util_now() - t0 < 1);
    }
}
END_TEST

START_TEST(test_connect_scheduler_file)
{
    shoal_error_t err;
    shoal_connect_opts_t o = {.scheduler_file = "/nonexistent/dir/sched.json", .timeout = 0.3};
    double t0 = util_now();
    ck_assert_ptr_null(shoal_connect_opts(&o, &err));
    ck_assert(util_now() - t0 < 3);
    ck_assert_msg(strstr(err.msg, "/nonexistent/dir/sched.json"), "%s", err.msg);

    /* A good file: written the way the scheduler writes it. */
    fake_t *fk = fake_start(FAKE_OK);
    char path[] = "/tmp/shoal-sfile-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    ck_assert_int_eq(util_sfile_write(path, fk->endpoint), 0);
    o.scheduler_file = path;
    o.timeout = 5;
    shoal_client_t *c = shoal_connect_opts(&o, &err);
    ck_assert_msg(c != NULL, "%s", err.msg);
    ck_assert_str_eq(shoal_client_address(c), fk->endpoint);
    shoal_disconnect(c);

    /* Through the environment. */
    setenv("SHOAL_SCHEDULER_FILE", path, 1);
    c = shoal_connect(NULL, &err);
    unsetenv("SHOAL_SCHEDULER_FILE");
    ck_assert_msg(c != NULL, "%s", err.msg);
    shoal_disconnect(c);
    setenv("SHOAL_SCHEDULER", fk->endpoint, 1);
    c = shoal_connect(NULL, &err);
    ck_assert_msg(c != NULL, "%s", err.msg);
    shoal_disconnect(c);
    setenv("SHOAL_SCHEDULER", "inline://", 1);
    c = shoal_connect(NULL, &err);
    unsetenv("SHOAL_SCHEDULER");
    ck_assert_msg(c != NULL, "%s", err.msg);
    ck_assert_str_eq(shoal_client_address(c), "inline://");
    shoal_disconnect(c);

    /* A file that is not a scheduler file. */
    FILE *fp = fopen(path, "w");
    fputs("{\"nothing\": 1}", fp);
    fclose(fp);
    o.timeout = 0.3;
    ck_assert_ptr_null(shoal_connect_opts(&o, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, path));
    unlink(path);
    fake_stop(fk);
}
END_TEST

START_TEST(test_local_cluster_missing_binaries)
{
    shoal_error_t err;
    unsetenv("SHOAL_SCHEDULER");
    unsetenv("SHOAL_SCHEDULER_FILE");
    setenv("SHOAL_BINDIR", "/nonexistent/bin", 1);
    double t0 = util_now();
    shoal_client_t *c = shoal_connect(NULL, &err);
    unsetenv("SHOAL_BINDIR");
    ck_assert_ptr_null(c);
    ck_assert(util_now() - t0 < 3);
    ck_assert_msg(strstr(err.msg, "shoal-scheduler") && strstr(err.msg, "SHOAL_BINDIR"), "%s",
                  err.msg);
}
END_TEST

static Suite *client_suite(void)
{
    Suite *s = suite_create("client");
    TCase *tc = tcase_create("inline");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_inline_sum_echo);
    tcase_add_test(tc, test_inline_fail_and_unknown);
    tcase_add_test(tc, test_inline_deps);
    tcase_add_test(tc, test_inline_cmd);
    tcase_add_test(tc, test_inline_map_gather_wait);
    tcase_add_test(tc, test_inline_as_completed);
    tcase_add_test(tc, test_inline_upload_bad_library);
    suite_add_tcase(s, tc);

    tc = tcase_create("remote");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_remote_basic);
    tcase_add_test(tc, test_remote_map_many);
    tcase_add_test(tc, test_remote_batches_split);
    tcase_add_test(tc, test_remote_wait_modes);
    tcase_add_test(tc, test_remote_as_completed);
    tcase_add_test(tc, test_remote_status_and_workers);
    tcase_add_test(tc, test_remote_upload);
    tcase_add_test(tc, test_remote_bye_fails_pending);
    tcase_add_test(tc, test_remote_connection_lost);
    tcase_add_test(tc, test_remote_restart);
    tcase_add_test(tc, test_remote_threads);
    tcase_add_test(tc, test_remote_spin);
    tcase_add_test(tc, test_disconnect_with_live_futures);
    suite_add_tcase(s, tc);

    tc = tcase_create("connect");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_connect_unreachable);
    tcase_add_test(tc, test_connect_silent_and_refused);
    tcase_add_test(tc, test_connect_bad_address);
    tcase_add_test(tc, test_connect_scheduler_file);
    tcase_add_test(tc, test_local_cluster_missing_binaries);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    /* Keep the library's logs (warnings about the fake's odd behaviour) out
     * of the test output unless asked for. */
    if (!getenv("SHOAL_LOG_LEVEL"))
        setenv("SHOAL_LOG_LEVEL", "error", 1);
    SRunner *sr = srunner_create(client_suite());
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
