/*
 * test_tasklib.c - the task registry: built-in functions, loading task
 * libraries by path and from bytes, refusing what is not one.
 *
 * Needs build/test/libbasic.so (tests/tasklibs/basic.c); the path can be
 * overridden with $SHOAL_TEST_LIBBASIC.  Uses a private runtime directory.
 */
#define _GNU_SOURCE
#include <check.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "exec.h"
#include "tasklib.h"
#include "util.h"

static char s_rtdir[256];
static char s_libpath[4096];
/* Functions in libbasic's table, counted independently of tasklib (with
 * dlsym) so the registry's count can be checked against it. */
static size_t s_nbasic;

/* --- helpers ----------------------------------------------------------------- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct res {
    int rc;
    exec_result_t r;
    msgpack_zone z;
    msgpack_object o;
} res_t;

/* Run `name` from t with the args packed by the caller. */
static void call(tasklib_t *t, const char *name, msgpack_sbuffer *args,
                 volatile const int *cancelled, res_t *out)
{
    shoal_task_fn fn = tasklib_find(t, name, strlen(name));
    ck_assert_msg(fn != NULL, "no function %s", name);
    out->rc = exec_task(fn, 1, "t", cancelled, args->data, args->size, NULL, 0, &out->r);
    msgpack_zone_init(&out->z, 256);
    if (out->rc == 0) {
        size_t off = 0;
        ck_assert_int_eq(msgpack_unpack(out->r.data, out->r.len, &off, &out->z, &out->o),
                         MSGPACK_UNPACK_SUCCESS);
    }
}

static void res_free(res_t *r)
{
    if (r->rc == 0)
        free(r->r.data);
    msgpack_zone_destroy(&r->z);
}

typedef struct args {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} args_t;

static void args_init(args_t *a, uint32_t n)
{
    msgpack_sbuffer_init(&a->sb);
    msgpack_packer_init(&a->pk, &a->sb, msgpack_sbuffer_write);
    msgpack_pack_array(&a->pk, n);
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

static void *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc((size_t)n);
    ck_assert_uint_eq(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

/* --- builtins ---------------------------------------------------------------- */

START_TEST(test_builtins_registered)
{
    tasklib_t *t = tasklib_create();
    ck_assert_ptr_nonnull(t);
    ck_assert_uint_eq(tasklib_count(t), 6);
    const char *names[] = {"shoal.cmd", "shoal.noop", "shoal.echo", "shoal.sleep",
                           "shoal.fail", "shoal.sum"};
    for (size_t i = 0; i < 6; i++)
        ck_assert_ptr_nonnull(tasklib_find(t, names[i], strlen(names[i])));
    ck_assert_ptr_null(tasklib_find(t, "shoal.nope", 10));
    ck_assert_ptr_null(tasklib_find(t, "", 0));
    ck_assert_ptr_null(tasklib_find(t, NULL, 3));
    /* Names are length-delimited, not NUL-terminated. */
    ck_assert_ptr_nonnull(tasklib_find(t, "shoal.noopXYZ", 10));
    ck_assert_ptr_null(tasklib_find(t, "shoal.noo", 9));
    tasklib_destroy(t);
    tasklib_destroy(NULL);
    ck_assert_uint_eq(tasklib_count(NULL), 0);
    ck_assert_ptr_null(tasklib_find(NULL, "shoal.noop", 10));
}
END_TEST

START_TEST(test_builtins_run)
{
    tasklib_t *t = tasklib_create();
    args_t a;
    res_t r;

    args_init(&a, 0);
    call(t, "shoal.noop", &a.sb, NULL, &r);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_int_eq(r.o.type, MSGPACK_OBJECT_NIL);
    res_free(&r);
    call(t, "shoal.echo", &a.sb, NULL, &r);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_int_eq(r.o.type, MSGPACK_OBJECT_NIL);
    res_free(&r);
    call(t, "shoal.sum", &a.sb, NULL, &r);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_uint_eq(r.o.via.u64, 0);
    res_free(&r);
    call(t, "shoal.fail", &a.sb, NULL, &r);
    ck_assert_int_eq(r.rc, -1);
    ck_assert_str_eq(r.r.err, "shoal.fail called without a message");
    res_free(&r);
    call(t, "shoal.sleep", &a.sb, NULL, &r);
    ck_assert_int_eq(r.rc, -1);
    res_free(&r);
    msgpack_sbuffer_destroy(&a.sb);

    args_init(&a, 2);
    msgpack_pack_map(&a.pk, 1);
    pack_str(&a.pk, "k");
    msgpack_pack_int(&a.pk, -3);
    msgpack_pack_int(&a.pk, 9);
    call(t, "shoal.echo", &a.sb, NULL, &r);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_int_eq(r.o.type, MSGPACK_OBJECT_MAP);
    ck_assert_int_eq(r.o.via.map.ptr[0].val.via.i64, -3);
    res_free(&r);
    msgpack_sbuffer_destroy(&a.sb);

    args_init(&a, 3);
    msgpack_pack_int(&a.pk, 1);
    msgpack_pack_int(&a.pk, -2);
    msgpack_pack_int(&a.pk, 10);
    call(t, "shoal.sum", &a.sb, NULL, &r);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_int_eq(r.o.type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    ck_assert_uint_eq(r.o.via.u64, 9);
    res_free(&r);
    msgpack_sbuffer_destroy(&a.sb);

    args_init(&a, 2);
    msgpack_pack_int(&a.pk, 1);
    msgpack_pack_double(&a.pk, 2.5);
    call(t, "shoal.sum", &a.sb, NULL, &r);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_int_eq(r.o.type, MSGPACK_OBJECT_FLOAT64);
    ck_assert(fabs(r.o.via.f64 - 3.5) < 1e-12);
    res_free(&r);
    msgpack_sbuffer_destroy(&a.sb);

    /* Beyond int64 but within uint64, and beyond both. */
    args_init(&a, 2);
    msgpack_pack_int64(&a.pk, INT64_MAX);
    msgpack_pack_int64(&a.pk, 1);
    call(t, "shoal.sum", &a.sb, NULL, &r);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_uint_eq(r.o.via.u64, (uint64_t)INT64_MAX + 1);
    res_free(&r);
    msgpack_sbuffer_destroy(&a.sb);
    args_init(&a, 2);
    msgpack_pack_uint64(&a.pk, UINT64_MAX);
    msgpack_pack_int64(&a.pk, 1);
    call(t, "shoal.sum", &a.sb, NULL, &r);
    ck_assert_int_eq(r.rc, -1);
    ck_assert_ptr_nonnull(strstr(r.r.err, "64 bits"));
    res_free(&r);
    msgpack_sbuffer_destroy(&a.sb);

    args_init(&a, 2);
    msgpack_pack_int(&a.pk, 1);
    pack_str(&a.pk, "x");
    call(t, "shoal.sum", &a.sb, NULL, &r);
    ck_assert_int_eq(r.rc, -1);
    ck_assert_str_eq(r.r.err, "argument 1: expected a number");
    res_free(&r);
    msgpack_sbuffer_destroy(&a.sb);

    args_init(&a, 1);
    pack_str(&a.pk, "it broke");
    call(t, "shoal.fail", &a.sb, NULL, &r);
    ck_assert_int_eq(r.rc, -1);
    ck_assert_str_eq(r.r.err, "it broke");
    res_free(&r);
    msgpack_sbuffer_destroy(&a.sb);

    tasklib_destroy(t);
}
END_TEST

START_TEST(test_sleep)
{
    tasklib_t *t = tasklib_create();
    args_t a;
    res_t r;
    volatile int cancelled = 0;

    args_init(&a, 1);
    msgpack_pack_double(&a.pk, 0.12);
    double t0 = now();
    call(t, "shoal.sleep", &a.sb, &cancelled, &r);
    double took = now() - t0;
    ck_assert_int_eq(r.rc, 0);
    ck_assert_int_eq(r.o.type, MSGPACK_OBJECT_NIL);
    ck_assert(took >= 0.12 && took < 1.0);
    res_free(&r);
    msgpack_sbuffer_destroy(&a.sb);

    /* Cancelled: returns within a slice, with an error. */
    args_init(&a, 1);
    msgpack_pack_int(&a.pk, 30);
    cancelled = 1;
    t0 = now();
    call(t, "shoal.sleep", &a.sb, &cancelled, &r);
    ck_assert(now() - t0 < 0.5);
    ck_assert_int_eq(r.rc, -1);
    ck_assert_str_eq(r.r.err, "cancelled");
    res_free(&r);
    msgpack_sbuffer_destroy(&a.sb);

    args_init(&a, 1);
    msgpack_pack_double(&a.pk, -1);
    call(t, "shoal.sleep", &a.sb, NULL, &r);
    ck_assert_int_eq(r.rc, -1);
    res_free(&r);
    msgpack_sbuffer_destroy(&a.sb);
    args_init(&a, 1);
    msgpack_pack_double(&a.pk, NAN);
    call(t, "shoal.sleep", &a.sb, NULL, &r);
    ck_assert_int_eq(r.rc, -1);
    res_free(&r);
    msgpack_sbuffer_destroy(&a.sb);
    tasklib_destroy(t);
}
END_TEST

/* --- loading ----------------------------------------------------------------- */

static void check_basic_inc(tasklib_t *t)
{
    args_t a;
    res_t r;
    args_init(&a, 1);
    msgpack_pack_int(&a.pk, 41);
    call(t, "inc", &a.sb, NULL, &r);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_int_eq(r.o.via.i64, 42);
    res_free(&r);
    msgpack_sbuffer_destroy(&a.sb);
}

START_TEST(test_load_path)
{
    tasklib_t *t = tasklib_create();
    char err[512];
    ck_assert_msg(tasklib_load(t, s_libpath, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(tasklib_count(t), 6 + s_nbasic);
    check_basic_inc(t);

    args_t a;
    res_t r;
    args_init(&a, 1);
    pack_str(&a.pk, "custom failure");
    call(t, "fail", &a.sb, NULL, &r);
    ck_assert_int_eq(r.rc, -1);
    ck_assert_str_eq(r.r.err, "custom failure");
    res_free(&r);
    msgpack_sbuffer_destroy(&a.sb);

    args_init(&a, 1);
    msgpack_pack_int(&a.pk, 1000);
    call(t, "bytes", &a.sb, NULL, &r);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_int_eq(r.o.type, MSGPACK_OBJECT_BIN);
    ck_assert_uint_eq(r.o.via.bin.size, 1000);
    ck_assert_uint_eq((unsigned char)r.o.via.bin.ptr[300], 300 & 0xff);
    res_free(&r);
    msgpack_sbuffer_destroy(&a.sb);

    /* Loading again (even through another spelling of the path) is a no-op. */
    ck_assert_int_eq(tasklib_load(t, s_libpath, err, sizeof err), 0);
    char other[4200];
    snprintf(other, sizeof other, "%s/../test/libbasic.so", "build/test");
    if (access(other, R_OK) == 0)
        ck_assert_int_eq(tasklib_load(t, other, err, sizeof err), 0);
    ck_assert_uint_eq(tasklib_count(t), 6 + s_nbasic);
    check_basic_inc(t);
    tasklib_destroy(t);
}
END_TEST

START_TEST(test_load_refused)
{
    tasklib_t *t = tasklib_create();
    char err[512], path[512];
    Dl_info info;

    /* Not a library at all. */
    snprintf(path, sizeof path, "%s/garbage.so", s_rtdir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    unsigned char junk[4096];
    unsigned seed = 7;
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (unsigned char)rand_r(&seed);
    ck_assert_int_eq(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
    close(fd);
    ck_assert_int_eq(tasklib_load(t, path, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "cannot load"));

    /* Missing file. */
    ck_assert_int_eq(tasklib_load(t, "/nonexistent/libx.so", err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/libx.so"));
    ck_assert_int_eq(tasklib_load(t, "", err, sizeof err), -1);
    ck_assert_int_eq(tasklib_load(t, NULL, NULL, 0), -1);

    /* A real library without a task table: libm. */
    double (*volatile cosp)(double) = cos;
    ck_assert_int_ne(dladdr((void *)cosp, &info), 0);
    ck_assert_ptr_nonnull(info.dli_fname);
    ck_assert_int_eq(tasklib_load(t, info.dli_fname, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "no shoal_tasks table"));

    /* Still only the builtins, and they still work. */
    ck_assert_uint_eq(tasklib_count(t), 6);
    ck_assert_ptr_nonnull(tasklib_find(t, "shoal.noop", 10));
    tasklib_destroy(t);
}
END_TEST

START_TEST(test_load_bytes)
{
    tasklib_t *t = tasklib_create();
    char err[512], want[1024];
    size_t len;
    void *bytes = read_file(s_libpath, &len);
    uint64_t hash = 0, hash2 = 0;
    struct stat st;

    ck_assert_msg(tasklib_load_bytes(t, "dir/lib basic!.so", bytes, len, &hash, err,
                                     sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(hash, util_fnv1a64(bytes, len));
    ck_assert_uint_eq(tasklib_count(t), 6 + s_nbasic);
    check_basic_inc(t);
    snprintf(want, sizeof want, "%s/libs/%016llx-lib_basic_.so", s_rtdir,
             (unsigned long long)hash);
    ck_assert_msg(stat(want, &st) == 0, "missing %s", want);
    ck_assert_uint_eq((unsigned)(st.st_mode & 0777), 0700);
    ck_assert_uint_eq((size_t)st.st_size, len);
    snprintf(want, sizeof want, "%s/libs", s_rtdir);
    ck_assert_int_eq(stat(want, &st), 0);
    ck_assert_uint_eq((unsigned)(st.st_mode & 0777), 0700);

    /* The same bytes again, under any name: nothing happens. */
    ck_assert_int_eq(tasklib_load_bytes(t, "other", bytes, len, &hash2, err, sizeof err), 0);
    ck_assert_uint_eq(hash2, hash);
    ck_assert_uint_eq(tasklib_count(t), 6 + s_nbasic);

    /* A second registry loading by path, then the bytes: the names are
     * replaced (same count) and still work. */
    tasklib_t *t2 = tasklib_create();
    ck_assert_int_eq(tasklib_load(t2, s_libpath, err, sizeof err), 0);
    ck_assert_int_eq(tasklib_load_bytes(t2, NULL, bytes, len, NULL, err, sizeof err), 0);
    ck_assert_uint_eq(tasklib_count(t2), 6 + s_nbasic);
    check_basic_inc(t2);
    tasklib_destroy(t2);

    /* Refused: empty, too large (the bytes are never read), not a library. */
    ck_assert_int_eq(tasklib_load_bytes(t, "x", bytes, 0, NULL, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "empty"));
    ck_assert_int_eq(tasklib_load_bytes(t, "x", bytes, (512u << 20) + 1, NULL, err,
                                        sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "too large"));
    ck_assert_int_eq(errno, EFBIG);
    char junk[1000];
    memset(junk, 0x5a, sizeof junk);
    ck_assert_int_eq(tasklib_load_bytes(t, "junk", junk, sizeof junk, &hash, err,
                                        sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "cannot load"));
    snprintf(want, sizeof want, "%s/libs/%016llx-junk.so", s_rtdir,
             (unsigned long long)hash);
    ck_assert_int_eq(stat(want, &st), -1);   /* removed again */
    ck_assert_uint_eq(tasklib_count(t), 6 + s_nbasic);
    free(bytes);
    tasklib_destroy(t);
}
END_TEST

typedef struct race {
    tasklib_t *t;
    volatile int stop;
    long finds;
} race_t;

static void *finder(void *p)
{
    race_t *r = p;
    while (!r->stop) {
        ck_assert_ptr_nonnull(tasklib_find(r->t, "shoal.sum", 9));
        tasklib_find(r->t, "inc", 3);
        r->finds++;
    }
    return NULL;
}

/* Lookups keep working while a library is loaded from another thread. */
START_TEST(test_concurrent)
{
    race_t r = {.t = tasklib_create()};
    pthread_t th[2];
    char err[512];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, finder, &r);
    usleep(20000);
    ck_assert_int_eq(tasklib_load(r.t, s_libpath, err, sizeof err), 0);
    usleep(20000);
    r.stop = 1;
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    ck_assert_ptr_nonnull(tasklib_find(r.t, "inc", 3));
    ck_assert_int_gt(r.finds, 0);
    tasklib_destroy(r.t);
}
END_TEST

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static Suite *suite(void)
{
    Suite *s = suite_create("tasklib");
    TCase *tc = tcase_create("tasklib");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_builtins_registered);
    tcase_add_test(tc, test_builtins_run);
    tcase_add_test(tc, test_sleep);
    tcase_add_test(tc, test_load_path);
    tcase_add_test(tc, test_load_refused);
    tcase_add_test(tc, test_load_bytes);
    tcase_add_test(tc, test_concurrent);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    const char *lib = getenv("SHOAL_TEST_LIBBASIC");
    snprintf(s_libpath, sizeof s_libpath, "%s", lib ? lib : "build/test/libbasic.so");
    if (access(s_libpath, R_OK) != 0) {
        fprintf(stderr, "test_tasklib: %s not found (run from the repository root "
                "after `make build/test/libbasic.so`)\n", s_libpath);
        return EXIT_FAILURE;
    }
    if (s_libpath[0] != '/') {
        /* dlopen wants a path with a slash; make it absolute. */
        char *abs = realpath(s_libpath, NULL);
        if (abs) {
            snprintf(s_libpath, sizeof s_libpath, "%s", abs);
            free(abs);
        }
    }
    void *h = dlopen(s_libpath, RTLD_NOW | RTLD_LOCAL);
    const shoal_task_def_t *defs = h ? dlsym(h, "shoal_tasks") : NULL;
    if (!defs) {
        fprintf(stderr, "test_tasklib: %s has no task table\n", s_libpath);
        return EXIT_FAILURE;
    }
    while (defs[s_nbasic].name)
        s_nbasic++;
    dlclose(h);
    snprintf(s_rtdir, sizeof s_rtdir, "%s/shoal-test-tasklib-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(s_rtdir)) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    setenv("SHOAL_RUNTIME_DIR", s_rtdir, 1);

    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    nftw(s_rtdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
