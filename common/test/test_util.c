/* test_util.c - parsing edge cases, addresses, the scheduler file, paths. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

static char s_dir[256];

static void s_tmpdir(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(s_dir, sizeof s_dir, "%s/shoal-test-util-XXXXXX", t && *t ? t : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(s_dir));
}

static void s_rm_rf(const char *path)
{
    /* Tests only create a few known names; a shell keeps this short. */
    char cmd[600];
    ck_assert_int_eq(util_fmt(cmd, sizeof cmd, "rm -rf '%s'", path), 0);
    ck_assert_int_eq(system(cmd), 0);
}

static void s_write_file(const char *path, const void *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(util_write_all(fd, data, n), 0);
    close(fd);
}

START_TEST(test_parse_long)
{
    long v;
    ck_assert_int_eq(util_parse_long("42", 0, 100, &v), 0);
    ck_assert_int_eq(v, 42);
    ck_assert_int_eq(util_parse_long("-5", -10, 10, &v), 0);
    ck_assert_int_eq(v, -5);
    ck_assert_int_eq(util_parse_long("0", 0, 0, &v), 0);
    static const char *bad[] = {"", " 1", "1 ", "1x", "x1", "0x10", "--1", "+", NULL};
    for (int i = 0; bad[i]; i++) {
        errno = 0;
        ck_assert_msg(util_parse_long(bad[i], -100, 100, &v) == -1 && errno == EINVAL,
                      "accepted '%s'", bad[i]);
    }
    ck_assert_int_eq(util_parse_long(NULL, 0, 1, &v), -1);
    errno = 0;
    ck_assert_int_eq(util_parse_long("101", 0, 100, &v), -1);
    ck_assert_int_eq(errno, ERANGE);
    ck_assert_int_eq(util_parse_long("-1", 0, 100, &v), -1);
    ck_assert_int_eq(errno, ERANGE);
    errno = 0;
    ck_assert_int_eq(util_parse_long("99999999999999999999999", 0, 100, &v), -1);
    ck_assert_int_eq(errno, ERANGE);
}
END_TEST

START_TEST(test_parse_duration)
{
    static const struct {
        const char *in;
        double out;
    } ok[] = {
        {"2", 2}, {"0.5", 0.5}, {"10s", 10}, {"500ms", 0.5}, {"2m", 120}, {"1h", 3600},
        {"1.5min", 90}, {"0", 0}, {".25", 0.25}, {"5.", 5}, {"1e3", 1000}, {"250us", 250e-6},
        {"1d", 86400},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        double d = -1;
        ck_assert_msg(util_parse_duration(ok[i].in, &d) == 0, "refused '%s'", ok[i].in);
        ck_assert_msg(fabs(d - ok[i].out) < 1e-9, "'%s' -> %g", ok[i].in, d);
    }
    static const char *bad[] = {"", "-1", "abc", "1x", "inf", "nan", "1e", " 1", "1 s",
                                "s", "0x10", "1..2", "1e999", "10sec2", NULL};
    for (int i = 0; bad[i]; i++) {
        double d;
        ck_assert_msg(util_parse_duration(bad[i], &d) == -1, "accepted '%s'", bad[i]);
    }
    double d;
    ck_assert_int_eq(util_parse_duration(NULL, &d), -1);
}
END_TEST

START_TEST(test_parse_size)
{
    static const struct {
        const char *in;
        uint64_t out;
    } ok[] = {
        {"4GB", 4000000000ULL},  {"512MiB", 512ULL << 20}, {"1e9", 1000000000ULL},
        {"100k", 100000},        {"100 kB", 100000},       {"1.5GiB", 3ULL << 29},
        {"0", 0},                {"12", 12},               {"2TB", 2000000000000ULL},
        {"1KiB", 1024},          {"1kib", 1024},           {"3b", 3},
        {"1Ki", 1024},           {"16 G", 16000000000ULL},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t v = 1;
        ck_assert_msg(util_parse_size(ok[i].in, &v) == 0, "refused '%s'", ok[i].in);
        ck_assert_msg(v == ok[i].out, "'%s' -> %llu", ok[i].in, (unsigned long long)v);
    }
    static const char *bad[] = {"", "-1", "GB", "12XB", "1e20", "20000PB", "1  GB", "inf",
                                "4 GB extra", " 4GB", NULL};
    for (int i = 0; bad[i]; i++) {
        uint64_t v;
        ck_assert_msg(util_parse_size(bad[i], &v) == -1, "accepted '%s'", bad[i]);
    }
    uint64_t v;
    errno = 0;
    ck_assert_int_eq(util_parse_size("1e20", &v), -1);
    ck_assert_int_eq(errno, ERANGE);
}
END_TEST

START_TEST(test_normalize_address)
{
    static const struct {
        const char *in, *out;
    } ok[] = {
        {"tcp://host:1234", "tcp://host:1234"},
        {"host:1234", "tcp://host:1234"},
        {"host", "tcp://host:8686"},
        {"tcp://host", "tcp://host:8686"},
        {"10.0.0.1:9", "tcp://10.0.0.1:9"},
        {"[::1]:5000", "tcp://[::1]:5000"},
        {"tcp://[fe80::1]:1", "tcp://[fe80::1]:1"},
        {"[::1]", "tcp://[::1]:8686"},
        {"*:0", "tcp://*:0"},
        {"node-01.cluster_a:65535", "tcp://node-01.cluster_a:65535"},
        {"h:00080", "tcp://h:80"},
    };
    char out[SHOAL_ADDR_MAX], err[256];
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        err[0] = '\0';
        ck_assert_msg(util_normalize_address(ok[i].in, out, sizeof out, err, sizeof err) == 0,
                      "refused '%s': %s", ok[i].in, err);
        ck_assert_str_eq(out, ok[i].out);
    }
    static const char *bad[] = {
        "", "tcp://", ":80", "host:", "host:65536", "host:-1", "host:1x", "host:123456",
        "ipc://x", "udp://h:1", "::1", "fe80::1:80", "[::1", "[]:80", "[::1]x", "[::g]:1",
        "ho st:1", "host/x:1", "h\"q:1", "host:1:2", "tcp://tcp://h:1", "h\n:1", NULL,
    };
    for (int i = 0; bad[i]; i++) {
        err[0] = '\0';
        errno = 0;
        int rc = util_normalize_address(bad[i], out, sizeof out, err, sizeof err);
        ck_assert_msg(rc == -1 && errno == EINVAL, "accepted '%s' as '%s'", bad[i], out);
        ck_assert_msg(err[0] != '\0', "no reason for '%s'", bad[i]);
    }
    ck_assert_int_eq(util_normalize_address(NULL, out, sizeof out, err, sizeof err), -1);
    /* Too long, and an output buffer that is too small. */
    char longhost[SHOAL_ADDR_MAX + 10];
    memset(longhost, 'a', sizeof longhost - 1);
    longhost[sizeof longhost - 1] = '\0';
    ck_assert_int_eq(util_normalize_address(longhost, out, sizeof out, err, sizeof err), -1);
    ck_assert_int_eq(util_normalize_address("host:1", out, 10, err, sizeof err), -1);
    /* err may be NULL. */
    ck_assert_int_eq(util_normalize_address("bad host", out, sizeof out, NULL, 0), -1);
}
END_TEST

START_TEST(test_sfile_roundtrip)
{
    s_tmpdir();
    char path[512], addr[SHOAL_ADDR_MAX], err[256];
    util_fmt(path, sizeof path, "%s/sched.json", s_dir);
    ck_assert_int_eq(util_sfile_write(path, "tcp://node1:8686"), 0);
    ck_assert_int_eq(util_sfile_read(path, 0, addr, sizeof addr, err, sizeof err), 0);
    ck_assert_str_eq(addr, "tcp://node1:8686");

    /* The file is the documented JSON. */
    char buf[512];
    int fd = open(path, O_RDONLY);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    ck_assert_int_gt(n, 0);
    buf[n] = '\0';
    ck_assert_ptr_nonnull(strstr(buf, "\"type\": \"shoal-scheduler\""));
    ck_assert_ptr_nonnull(strstr(buf, "\"address\": \"tcp://node1:8686\""));
    char pid[64];
    util_fmt(pid, sizeof pid, "\"pid\": %ld", (long)getpid());
    ck_assert_ptr_nonnull(strstr(buf, pid));
    ck_assert_ptr_nonnull(strstr(buf, "\"version\": \""));

    /* Overwrite in place; no temp files are left behind. */
    ck_assert_int_eq(util_sfile_write(path, "tcp://[::1]:9000"), 0);
    ck_assert_int_eq(util_sfile_read(path, 0, addr, sizeof addr, err, sizeof err), 0);
    ck_assert_str_eq(addr, "tcp://[::1]:9000");
    char tmp[600];
    util_fmt(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    ck_assert_int_eq(access(tmp, F_OK), -1);

    /* An address that does not fit the caller's buffer. */
    ck_assert_int_eq(util_sfile_read(path, 0, addr, 8, err, sizeof err), -1);

    /* Unwritable location. */
    char bad[600];
    util_fmt(bad, sizeof bad, "%s/no/such/dir/s.json", s_dir);
    ck_assert_int_eq(util_sfile_write(bad, "tcp://h:1"), -1);
    ck_assert_int_eq(util_sfile_write(NULL, "tcp://h:1"), -1);
    s_rm_rf(s_dir);
}
END_TEST

START_TEST(test_sfile_timeout)
{
    s_tmpdir();
    char path[512], addr[SHOAL_ADDR_MAX], err[256];
    util_fmt(path, sizeof path, "%s/absent.json", s_dir);
    double t0 = util_now();
    errno = 0;
    ck_assert_int_eq(util_sfile_read(path, 0, addr, sizeof addr, err, sizeof err), -1);
    ck_assert_int_eq(errno, ENOENT);
    ck_assert(util_now() - t0 < 0.5);
    t0 = util_now();
    errno = 0;
    ck_assert_int_eq(util_sfile_read(path, 0.3, addr, sizeof addr, err, sizeof err), -1);
    ck_assert_int_eq(errno, ENOENT);
    double took = util_now() - t0;
    ck_assert_msg(took >= 0.29 && took < 2.0, "waited %.3f s", took);
    ck_assert_ptr_nonnull(strstr(err, "absent.json"));
    s_rm_rf(s_dir);
}
END_TEST

static void *s_late_writer(void *arg)
{
    struct timespec ts = {0, 300 * 1000000};
    nanosleep(&ts, NULL);
    if (util_sfile_write(arg, "tcp://late:1") < 0)
        abort();
    return NULL;
}

START_TEST(test_sfile_wait_appears)
{
    s_tmpdir();
    char path[512], addr[SHOAL_ADDR_MAX], err[256];
    util_fmt(path, sizeof path, "%s/late.json", s_dir);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, s_late_writer, path), 0);
    double t0 = util_now();
    ck_assert_int_eq(util_sfile_read(path, 10, addr, sizeof addr, err, sizeof err), 0);
    ck_assert(util_now() - t0 < 5);
    ck_assert_str_eq(addr, "tcp://late:1");
    pthread_join(th, NULL);
    s_rm_rf(s_dir);
}
END_TEST

START_TEST(test_sfile_garbage)
{
    s_tmpdir();
    char path[512], addr[SHOAL_ADDR_MAX], err[256];
    util_fmt(path, sizeof path, "%s/g.json", s_dir);
    static const char *bad[] = {
        "",
        "{",
        "[]",
        "null",
        "{}",
        "{\"address\": 5}",
        "{\"address\": \"tcp://h:1\"",
        "{\"address\": \"tcp://h:1\"} x",
        "{\"address\": \"tcp://h:1\",}",
        "{\"address\" \"tcp://h:1\"}",
        "{\"address\": \"tcp://h:1\nx\"}",
        "{\"address\": \"tcp://bad host:1\"}",
        "{\"address\": \"tcp://h:99999\"}",
        "{\"type\": \"Scheduler\", \"address\": \"tcp://h:1\"}",
        "{\"address\": \"tcp://h:1\\q\"}",
        "{\"address\": \"tcp://h:1\\u00e9\"}",
        "{\"address\": \"tcp://h:1\\u0000\"}",
        "{\"pid\": 12, \"address\": \"tcp://h:1\", \"x\": [1, {\"a\": }]}",
        "{\"pid\": -, \"address\": \"tcp://h:1\"}",
        "{\"pid\": tru, \"address\": \"tcp://h:1\"}",
        "\xff\xfe{",
        NULL,
    };
    for (int i = 0; bad[i]; i++) {
        s_write_file(path, bad[i], strlen(bad[i]));
        err[0] = '\0';
        errno = 0;
        int rc = util_sfile_read(path, 0, addr, sizeof addr, err, sizeof err);
        ck_assert_msg(rc == -1 && errno == EINVAL, "accepted %s", bad[i]);
        ck_assert_msg(err[0], "no reason for %s", bad[i]);
    }
    /* Deep nesting in a skipped value is bounded, not a stack overflow. */
    {
        size_t depth = 50000;
        char *deep = malloc(depth * 2 + 64);
        size_t n = 0;
        n += (size_t)snprintf(deep, 64, "{\"x\": ");
        memset(deep + n, '[', depth);
        n += depth;
        memset(deep + n, ']', depth);
        n += depth;
        n += (size_t)snprintf(deep + n, 64, ", \"address\": \"tcp://h:1\"}");
        s_write_file(path, deep, n);
        free(deep);
        errno = 0;
        ck_assert_int_eq(util_sfile_read(path, 0, addr, sizeof addr, err, sizeof err), -1);
        ck_assert_int_eq(errno, EINVAL);
    }
    /* Over 64 KiB: refused even though it is valid JSON. */
    {
        size_t big = 70 * 1024;
        char *b = malloc(big);
        memset(b, ' ', big);
        const char *obj = "{\"address\": \"tcp://h:1\"}";
        memcpy(b, obj, strlen(obj));
        s_write_file(path, b, big);
        free(b);
        errno = 0;
        ck_assert_int_eq(util_sfile_read(path, 0, addr, sizeof addr, err, sizeof err), -1);
        ck_assert_int_eq(errno, EINVAL);
        ck_assert_ptr_nonnull(strstr(err, "large"));
    }
    /* A directory where the file should be. */
    {
        char d[600];
        util_fmt(d, sizeof d, "%s/dir.json", s_dir);
        ck_assert_int_eq(mkdir(d, 0700), 0);
        errno = 0;
        ck_assert_int_eq(util_sfile_read(d, 1, addr, sizeof addr, err, sizeof err), -1);
        ck_assert_int_eq(errno, EINVAL);
    }
    /* Accepted variants: escapes, other keys of every kind, Dask-style
     * extras, whitespace, a missing type. */
    static const struct {
        const char *text, *addr;
    } good[] = {
        {"{\"address\": \"tcp:\\/\\/h:1\"}", "tcp://h:1"},
        {"{\"address\":\"h\"}", "tcp://h:8686"},
        {" \n\t{ \"type\" : \"shoal-scheduler\" , \"address\" : \"tcp://h:2\" }\n ",
         "tcp://h:2"},
        {"{\"a\\\"b\": \"x\\\\y\\\"\", \"n\": -1.5e3, \"t\": true, \"f\": false, \"z\": null,"
         " \"o\": {\"w\": [1, [2, {}], \"s\"]}, \"e\": [], \"address\": \"tcp://x:3\","
         " \"long_key_that_is_much_longer_than_sixty_four_characters_in_total_xxxxxxxxxxx\": 1}",
         "tcp://x:3"},
        {"{\"address\": \"tcp://h\\u002dx:4\"}", "tcp://h-x:4"},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        s_write_file(path, good[i].text, strlen(good[i].text));
        err[0] = '\0';
        ck_assert_msg(util_sfile_read(path, 0, addr, sizeof addr, err, sizeof err) == 0,
                      "refused %s: %s", good[i].text, err);
        ck_assert_str_eq(addr, good[i].addr);
    }
    s_rm_rf(s_dir);
}
END_TEST

START_TEST(test_paths)
{
    s_tmpdir();
    char p[600];
    util_fmt(p, sizeof p, "%s/a/b//c/", s_dir);
    ck_assert_int_eq(util_mkdir_p(p), 0);
    ck_assert_int_eq(util_mkdir_p(p), 0); /* existing is fine */
    struct stat st;
    util_fmt(p, sizeof p, "%s/a/b/c", s_dir);
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert(S_ISDIR(st.st_mode));
    ck_assert_int_eq(st.st_mode & 0777, 0700);
    /* A file in the way. */
    util_fmt(p, sizeof p, "%s/file", s_dir);
    s_write_file(p, "x", 1);
    util_fmt(p, sizeof p, "%s/file/sub", s_dir);
    ck_assert_int_eq(util_mkdir_p(p), -1);
    ck_assert_int_eq(util_mkdir_p(""), -1);

    s_rm_rf(s_dir);
}
END_TEST

/* util_runtime_dir computes its answer once per process, so each variant
 * runs in a child of its own (also when CK_FORK=no, as under valgrind). */
static int s_in_child(void (*fn)(void))
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        fn();
        _exit(0);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void s_rt_env(void)
{
    char p[600];
    struct stat st;
    util_fmt(p, sizeof p, "%s/rt/x", s_dir);
    setenv("SHOAL_RUNTIME_DIR", p, 1);
    const char *rt = util_runtime_dir();
    if (strcmp(rt, p) != 0)
        _exit(1);
    if (stat(rt, &st) < 0 || !S_ISDIR(st.st_mode))
        _exit(2);
    if (util_runtime_dir() != rt)
        _exit(3);
}

static void s_rt_default(void)
{
    char want[600];
    struct stat st;
    unsetenv("SHOAL_RUNTIME_DIR");
    setenv("TMPDIR", s_dir, 1);
    util_fmt(want, sizeof want, "%s/shoal-%ld", s_dir, (long)getuid());
    if (strcmp(util_runtime_dir(), want) != 0)
        _exit(1);
    if (stat(want, &st) < 0 || (st.st_mode & 0777) != 0700)
        _exit(2);
}

START_TEST(test_runtime_dir)
{
    s_tmpdir();
    ck_assert_int_eq(s_in_child(s_rt_env), 0);
    ck_assert_int_eq(s_in_child(s_rt_default), 0);
    s_rm_rf(s_dir);
}
END_TEST


static void *s_drain(void *arg)
{
    int fd = *(int *)arg;
    char buf[4096];
    size_t total = 0;
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0)
        total += (size_t)r;
    return (void *)(uintptr_t)total;
}

START_TEST(test_misc)
{
    /* FNV-1a 64 reference values. */
    ck_assert_uint_eq(util_fnv1a64("", 0), 0xcbf29ce484222325ULL);
    ck_assert_uint_eq(util_fnv1a64("a", 1), 0xaf63dc4c8601ec8cULL);
    ck_assert_uint_eq(util_fnv1a64("foobar", 6), 0x85944171f73967e8ULL);

    char b[8];
    ck_assert_int_eq(util_fmt(b, sizeof b, "%s", "1234567"), 0);
    ck_assert_str_eq(b, "1234567");
    ck_assert_int_eq(util_fmt(b, sizeof b, "%s", "12345678"), -1);
    ck_assert_uint_eq(strlen(b), 7); /* still terminated */
    ck_assert_int_eq(util_fmt(b, 0, "x"), -1);

    ck_assert_int_ge(util_ncpus(), 1);
    const char *h = util_hostname();
    ck_assert_ptr_nonnull(h);
    ck_assert_int_gt(strlen(h), 0);
    ck_assert_ptr_null(strchr(h, '.'));

    double a = util_now(), w = util_wall();
    ck_assert(w > 1.6e9);
    struct timespec ts = {0, 10 * 1000000};
    nanosleep(&ts, NULL);
    ck_assert(util_now() - a >= 0.009);

    /* write_all pushes more than a pipe holds, across short writes. */
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, s_drain, &fds[0]), 0);
    size_t n = 1 << 20;
    char *big = calloc(1, n);
    ck_assert_int_eq(util_write_all(fds[1], big, n), 0);
    close(fds[1]);
    void *total;
    pthread_join(th, &total);
    ck_assert_uint_eq((uintptr_t)total, n);
    close(fds[0]);
    free(big);
    ck_assert_int_eq(util_write_all(-1, "x", 1), -1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("util");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_parse_long);
    tcase_add_test(tc, test_parse_duration);
    tcase_add_test(tc, test_parse_size);
    tcase_add_test(tc, test_normalize_address);
    tcase_add_test(tc, test_sfile_roundtrip);
    tcase_add_test(tc, test_sfile_timeout);
    tcase_add_test(tc, test_sfile_wait_appears);
    tcase_add_test(tc, test_sfile_garbage);
    tcase_add_test(tc, test_paths);
    tcase_add_test(tc, test_runtime_dir);
    tcase_add_test(tc, test_misc);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
