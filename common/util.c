/*
 * util.c - small shared helpers.  Everything that parses text here is
 * bounded and strict: a value either matches completely or is refused.
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "util.h"

#include "log.h"
#include "shoal.h" /* SHOAL_DEFAULT_PORT, SHOAL_VERSION */

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define SFILE_MAX (64 * 1024)
#define JSON_MAX_DEPTH 32

double util_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double util_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int util_fmt(char *dst, size_t cap, const char *fmt, ...)
{
    if (!dst || cap == 0) {
        errno = EINVAL;
        return -1;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
    if (n < 0) {
        dst[0] = '\0';
        errno = EINVAL;
        return -1;
    }
    if ((size_t)n >= cap) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

int util_write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int util_parse_long(const char *s, long min, long max, long *out)
{
    if (!s || !*s || isspace((unsigned char)*s)) {
        errno = EINVAL;
        return -1;
    }
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno == ERANGE) {
        return -1;
    }
    if (end == s || *end != '\0') {
        errno = EINVAL;
        return -1;
    }
    if (v < min || v > max) {
        errno = ERANGE;
        return -1;
    }
    *out = v;
    return 0;
}

/* A plain decimal number: digits, optional fraction, optional exponent.  Not
 * strtod's full grammar: no hex floats, "inf", "nan" or leading spaces. */
static int s_parse_number(const char *s, double *out, const char **rest)
{
    const char *p = s;
    int digits = 0;
    while (isdigit((unsigned char)*p)) {
        p++;
        digits++;
    }
    if (*p == '.') {
        p++;
        while (isdigit((unsigned char)*p)) {
            p++;
            digits++;
        }
    }
    if (!digits)
        return -1;
    if ((*p == 'e' || *p == 'E') &&
        (isdigit((unsigned char)p[1]) ||
         ((p[1] == '+' || p[1] == '-') && isdigit((unsigned char)p[2])))) {
        p += 2;
        while (isdigit((unsigned char)*p))
            p++;
    }
    /* Bounded copy: strtod must not read past what we validated. */
    char buf[64];
    size_t n = (size_t)(p - s);
    if (n >= sizeof buf)
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    errno = 0;
    double v = strtod(buf, NULL);
    if (errno == ERANGE && v != 0.0)
        return -1;
    if (!isfinite(v) || v < 0)
        return -1;
    *out = v;
    *rest = p;
    return 0;
}

int util_parse_duration(const char *s, double *out)
{
    if (!s) {
        errno = EINVAL;
        return -1;
    }
    double v;
    const char *u;
    if (s_parse_number(s, &v, &u) < 0) {
        errno = EINVAL;
        return -1;
    }
    static const struct {
        const char *name;
        double mult;
    } units[] = {
        {"", 1},      {"s", 1},     {"sec", 1},     {"ms", 1e-3}, {"us", 1e-6},
        {"m", 60},    {"min", 60},  {"h", 3600},    {"d", 86400},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (!strcmp(u, units[i].name)) {
            double r = v * units[i].mult;
            if (!isfinite(r)) {
                errno = ERANGE;
                return -1;
            }
            *out = r;
            return 0;
        }
    }
    errno = EINVAL;
    return -1;
}

int util_parse_size(const char *s, uint64_t *out)
{
    if (!s) {
        errno = EINVAL;
        return -1;
    }
    double v;
    const char *u;
    if (s_parse_number(s, &v, &u) < 0) {
        errno = EINVAL;
        return -1;
    }
    if (*u == ' ')
        u++;
    /* Dask's conventions: decimal k/M/G/T/P (optionally with B), binary
     * Ki/Mi/... (optionally with B); case-insensitive. */
    static const struct {
        const char *name;
        double mult;
    } units[] = {
        {"", 1},
        {"b", 1},
        {"k", 1e3},
        {"kb", 1e3},
        {"m", 1e6},
        {"mb", 1e6},
        {"g", 1e9},
        {"gb", 1e9},
        {"t", 1e12},
        {"tb", 1e12},
        {"p", 1e15},
        {"pb", 1e15},
        {"ki", 1024.0},
        {"kib", 1024.0},
        {"mi", 1048576.0},
        {"mib", 1048576.0},
        {"gi", 1073741824.0},
        {"gib", 1073741824.0},
        {"ti", 1099511627776.0},
        {"tib", 1099511627776.0},
        {"pi", 1125899906842624.0},
        {"pib", 1125899906842624.0},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (!strcasecmp(u, units[i].name)) {
            double r = v * units[i].mult;
            /* 2^64 as a double; anything at or above overflows. */
            if (!isfinite(r) || r >= 18446744073709551616.0) {
                errno = ERANGE;
                return -1;
            }
            *out = (uint64_t)(r + 0.5 < 18446744073709551616.0 ? r + 0.5 : r);
            return 0;
        }
    }
    errno = EINVAL;
    return -1;
}

static void s_err(char *err, size_t errcap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void s_err(char *err, size_t errcap, const char *fmt, ...)
{
    if (!err || errcap == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errcap, fmt, ap);
    va_end(ap);
}

static int s_host_char(int c)
{
    return isalnum(c) || c == '.' || c == '-' || c == '_' || c == '*';
}

static int s_ipv6_char(int c)
{
    return isxdigit(c) || c == ':' || c == '.';
}

int util_normalize_address(const char *in, char *out, size_t cap, char *err,
                           size_t errcap)
{
    char host[SHOAL_ADDR_MAX];
    size_t hlen;
    int bracketed = 0;
    long port = SHOAL_DEFAULT_PORT;

    if (err && errcap)
        err[0] = '\0';
    if (!in || !*in) {
        s_err(err, errcap, "empty address");
        goto einval;
    }
    size_t inlen = strnlen(in, SHOAL_ADDR_MAX + 1);
    if (inlen > SHOAL_ADDR_MAX) {
        s_err(err, errcap, "address too long (over %d characters)", SHOAL_ADDR_MAX);
        goto einval;
    }
    const char *p = in;
    if (!strncmp(p, "tcp://", 6)) {
        p += 6;
    } else if (strstr(p, "://")) {
        s_err(err, errcap, "unsupported transport in '%s' (only tcp:// is supported)", in);
        goto einval;
    }

    const char *portstr = NULL;
    if (*p == '[') {
        const char *close = strchr(p, ']');
        if (!close) {
            s_err(err, errcap, "missing ']' in '%s'", in);
            goto einval;
        }
        hlen = (size_t)(close - (p + 1));
        if (hlen == 0) {
            s_err(err, errcap, "empty IPv6 address in '%s'", in);
            goto einval;
        }
        for (size_t i = 0; i < hlen; i++) {
            if (!s_ipv6_char((unsigned char)p[1 + i])) {
                s_err(err, errcap, "invalid character '%c' in IPv6 address '%s'",
                      isprint((unsigned char)p[1 + i]) ? p[1 + i] : '?', in);
                goto einval;
            }
        }
        memcpy(host, p + 1, hlen);
        host[hlen] = '\0';
        bracketed = 1;
        if (close[1] == ':') {
            portstr = close + 2;
        } else if (close[1] != '\0') {
            s_err(err, errcap, "unexpected text after ']' in '%s'", in);
            goto einval;
        }
    } else {
        const char *colon = strchr(p, ':');
        if (colon && strchr(colon + 1, ':')) {
            s_err(err, errcap, "IPv6 address '%s' needs brackets: [addr]:port", in);
            goto einval;
        }
        hlen = colon ? (size_t)(colon - p) : strlen(p);
        if (hlen == 0) {
            s_err(err, errcap, "missing host in '%s'", in);
            goto einval;
        }
        for (size_t i = 0; i < hlen; i++) {
            if (!s_host_char((unsigned char)p[i])) {
                s_err(err, errcap, "invalid character '%c' in host of '%s'",
                      isprint((unsigned char)p[i]) ? p[i] : '?', in);
                goto einval;
            }
        }
        memcpy(host, p, hlen);
        host[hlen] = '\0';
        if (colon)
            portstr = colon + 1;
    }

    if (portstr) {
        size_t n = strlen(portstr);
        if (n == 0 || n > 5) {
            s_err(err, errcap, "invalid port in '%s' (expected 0-65535)", in);
            goto einval;
        }
        for (size_t i = 0; i < n; i++) {
            if (!isdigit((unsigned char)portstr[i])) {
                s_err(err, errcap, "invalid port in '%s' (expected 0-65535)", in);
                goto einval;
            }
        }
        if (util_parse_long(portstr, 0, 65535, &port) < 0) {
            s_err(err, errcap, "port out of range in '%s' (expected 0-65535)", in);
            goto einval;
        }
    }

    if (!out || util_fmt(out, cap, bracketed ? "tcp://[%s]:%ld" : "tcp://%s:%ld", host,
                         port) < 0) {
        s_err(err, errcap, "address '%s' too long for the output buffer", in);
        goto einval;
    }
    return 0;
einval:
    errno = EINVAL;
    return -1;
}

/* ---- scheduler file ---------------------------------------------------- */

int util_sfile_write(const char *path, const char *address)
{
    if (!path || !*path || !address) {
        errno = EINVAL;
        return -1;
    }
    char tmp[PATH_MAX];
    if (util_fmt(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) < 0)
        return -1;

    /* JSON-escape the address (it is validated, but do not rely on that). */
    char esc[SHOAL_ADDR_MAX * 6 + 1];
    size_t e = 0;
    for (const char *a = address; *a; a++) {
        unsigned char c = (unsigned char)*a;
        if (e + 7 > sizeof esc) {
            errno = ENAMETOOLONG;
            return -1;
        }
        if (c == '"' || c == '\\') {
            esc[e++] = '\\';
            esc[e++] = (char)c;
        } else if (c < 0x20) {
            int n = snprintf(esc + e, sizeof esc - e, "\\u%04x", c);
            e += (size_t)n;
        } else {
            esc[e++] = (char)c;
        }
    }
    esc[e] = '\0';

    char buf[sizeof esc + 256];
    int n = snprintf(buf, sizeof buf,
                     "{\"type\": \"shoal-scheduler\", \"address\": \"%s\", \"pid\": %ld, "
                     "\"version\": \"%s\"}\n",
                     esc, (long)getpid(), SHOAL_VERSION);
    if (n < 0 || (size_t)n >= sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }

    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    if (util_write_all(fd, buf, (size_t)n) < 0 || fsync(fd) < 0) {
        int saved = errno;
        close(fd);
        unlink(tmp);
        errno = saved;
        return -1;
    }
    if (close(fd) < 0 || rename(tmp, path) < 0) {
        int saved = errno;
        unlink(tmp);
        errno = saved;
        return -1;
    }
    return 0;
}

/* A minimal JSON reader: enough to walk one object and pull out string
 * values.  Bounded by the input length and a nesting depth. */
struct json {
    const char *p;
    const char *end;
};

static void s_json_ws(struct json *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int s_hex(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Parse a string at j->p (which must be '"'); copy its decoded value into
 * out (if not NULL; -1 if it does not fit).  \u escapes beyond ASCII are
 * refused: nothing we store needs them. */
static int s_json_string(struct json *j, char *out, size_t cap)
{
    size_t n = 0;
    if (j->p >= j->end || *j->p != '"')
        return -1;
    j->p++;
    while (j->p < j->end) {
        unsigned char c = (unsigned char)*j->p++;
        if (c == '"') {
            if (out) {
                if (n >= cap)
                    return -1;
                out[n] = '\0';
            }
            return 0;
        }
        if (c < 0x20)
            return -1;
        if (c == '\\') {
            if (j->p >= j->end)
                return -1;
            c = (unsigned char)*j->p++;
            switch (c) {
            case '"': case '\\': case '/': break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case 'u': {
                if (j->end - j->p < 4)
                    return -1;
                int v = 0;
                for (int i = 0; i < 4; i++) {
                    int h = s_hex((unsigned char)j->p[i]);
                    if (h < 0)
                        return -1;
                    v = v * 16 + h;
                }
                j->p += 4;
                if (v == 0 || v >= 0x80)
                    return -1;
                c = (unsigned char)v;
                break;
            }
            default:
                return -1;
            }
        }
        if (out) {
            if (n + 1 >= cap)
                return -1;
            out[n++] = (char)c;
        }
    }
    return -1;
}

static int s_json_skip(struct json *j, int depth);

static int s_json_skip_container(struct json *j, int depth, char close, int is_obj)
{
    if (depth >= JSON_MAX_DEPTH)
        return -1;
    j->p++;
    s_json_ws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        return 0;
    }
    for (;;) {
        s_json_ws(j);
        if (is_obj) {
            if (s_json_string(j, NULL, 0) < 0)
                return -1;
            s_json_ws(j);
            if (j->p >= j->end || *j->p != ':')
                return -1;
            j->p++;
            s_json_ws(j);
        }
        if (s_json_skip(j, depth + 1) < 0)
            return -1;
        s_json_ws(j);
        if (j->p >= j->end)
            return -1;
        if (*j->p == ',') {
            j->p++;
            continue;
        }
        if (*j->p == close) {
            j->p++;
            return 0;
        }
        return -1;
    }
}

static int s_json_skip(struct json *j, int depth)
{
    if (j->p >= j->end)
        return -1;
    char c = *j->p;
    if (c == '"')
        return s_json_string(j, NULL, 0);
    if (c == '{')
        return s_json_skip_container(j, depth, '}', 1);
    if (c == '[')
        return s_json_skip_container(j, depth, ']', 0);
    static const char *const words[] = {"true", "false", "null"};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(words[i]);
        if ((size_t)(j->end - j->p) >= n && !memcmp(j->p, words[i], n)) {
            j->p += n;
            return 0;
        }
    }
    /* Number: sign, digits, fraction, exponent (loosely). */
    const char *start = j->p;
    if (*j->p == '-')
        j->p++;
    while (j->p < j->end && (isdigit((unsigned char)*j->p) || *j->p == '.' || *j->p == 'e' ||
                             *j->p == 'E' || *j->p == '+' || *j->p == '-'))
        j->p++;
    if (j->p == start || !isdigit((unsigned char)j->p[-1]))
        return -1;
    return 0;
}

/* Extract "address" (and check "type" if present) from the file's text. */
static int s_sfile_parse(const char *text, size_t len, char *addr, size_t cap, char *err,
                         size_t errcap)
{
    struct json j = {text, text + len};
    char key[64];
    char raw[SHOAL_ADDR_MAX + 1];
    int have_addr = 0;

    s_json_ws(&j);
    if (j.p >= j.end || *j.p != '{') {
        s_err(err, errcap, "not a JSON object");
        return -1;
    }
    j.p++;
    s_json_ws(&j);
    if (j.p < j.end && *j.p == '}') {
        j.p++;
    } else {
        for (;;) {
            s_json_ws(&j);
            const char *kstart = j.p;
            if (s_json_string(&j, key, sizeof key) < 0) {
                /* A long key is not one of ours: skip it. */
                j.p = kstart;
                if (s_json_string(&j, NULL, 0) < 0) {
                    s_err(err, errcap, "malformed JSON (bad key)");
                    return -1;
                }
                key[0] = '\0';
            }
            s_json_ws(&j);
            if (j.p >= j.end || *j.p != ':') {
                s_err(err, errcap, "malformed JSON (expected ':')");
                return -1;
            }
            j.p++;
            s_json_ws(&j);
            if (!strcmp(key, "address")) {
                if (j.p >= j.end || *j.p != '"' || s_json_string(&j, raw, sizeof raw) < 0) {
                    s_err(err, errcap, "\"address\" is not a valid string");
                    return -1;
                }
                have_addr = 1;
            } else if (!strcmp(key, "type")) {
                char type[64];
                if (j.p >= j.end || *j.p != '"' || s_json_string(&j, type, sizeof type) < 0 ||
                    strcmp(type, "shoal-scheduler") != 0) {
                    s_err(err, errcap, "not a shoal scheduler file (\"type\" is not "
                                       "\"shoal-scheduler\")");
                    return -1;
                }
            } else if (s_json_skip(&j, 1) < 0) {
                s_err(err, errcap, "malformed JSON value for key \"%s\"", key);
                return -1;
            }
            s_json_ws(&j);
            if (j.p < j.end && *j.p == ',') {
                j.p++;
                continue;
            }
            if (j.p < j.end && *j.p == '}') {
                j.p++;
                break;
            }
            s_err(err, errcap, "malformed JSON (expected ',' or '}')");
            return -1;
        }
    }
    s_json_ws(&j);
    if (j.p != j.end) {
        s_err(err, errcap, "trailing text after the JSON object");
        return -1;
    }
    if (!have_addr) {
        s_err(err, errcap, "no \"address\" key");
        return -1;
    }
    char why[160];
    if (util_normalize_address(raw, addr, cap, why, sizeof why) < 0) {
        s_err(err, errcap, "bad address: %s", why);
        return -1;
    }
    return 0;
}

/* One attempt: 0 ok, -1 with errno ENOENT (absent) or EINVAL/other. */
static int s_sfile_try(const char *path, char *addr, size_t cap, char *err, size_t errcap)
{
    /* O_NONBLOCK so that a FIFO at this path cannot block us. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int saved = errno;
        s_err(err, errcap, "%s: %s", path, strerror(saved));
        errno = saved;
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int saved = errno;
        close(fd);
        s_err(err, errcap, "%s: %s", path, strerror(saved));
        errno = saved;
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        s_err(err, errcap, "%s: not a regular file", path);
        errno = EINVAL;
        return -1;
    }
    if (st.st_size > SFILE_MAX) {
        close(fd);
        s_err(err, errcap, "%s: too large (%lld bytes, limit %d)", path,
              (long long)st.st_size, SFILE_MAX);
        errno = EINVAL;
        return -1;
    }
    char *buf = malloc(SFILE_MAX + 1);
    if (!buf) {
        close(fd);
        s_err(err, errcap, "out of memory");
        errno = ENOMEM;
        return -1;
    }
    size_t len = 0;
    /* Read until EOF, but never more than the limit (the file may grow). */
    while (len <= SFILE_MAX) {
        ssize_t r = read(fd, buf + len, SFILE_MAX + 1 - len);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int saved = errno;
            free(buf);
            close(fd);
            s_err(err, errcap, "%s: %s", path, strerror(saved));
            errno = saved;
            return -1;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    if (len > SFILE_MAX) {
        free(buf);
        s_err(err, errcap, "%s: too large (limit %d bytes)", path, SFILE_MAX);
        errno = EINVAL;
        return -1;
    }
    char why[200];
    int rc = s_sfile_parse(buf, len, addr, cap, why, sizeof why);
    free(buf);
    if (rc < 0) {
        s_err(err, errcap, "%s: %s", path, why);
        errno = EINVAL;
        return -1;
    }
    return 0;
}

int util_sfile_read(const char *path, double timeout, char *addr, size_t cap, char *err,
                    size_t errcap)
{
    if (err && errcap)
        err[0] = '\0';
    if (!path || !*path || !addr || cap == 0) {
        s_err(err, errcap, "no scheduler file given");
        errno = EINVAL;
        return -1;
    }
    double deadline = util_now() + (timeout > 0 ? timeout : 0);
    for (;;) {
        if (s_sfile_try(path, addr, cap, err, errcap) == 0)
            return 0;
        /* Only absence is worth waiting for: the writer renames the file
         * into place, so a file we can see is complete. */
        if (errno != ENOENT)
            return -1;
        double left = deadline - util_now();
        if (left <= 0) {
            s_err(err, errcap, "%s: no scheduler file after %.1f s", path,
                  timeout > 0 ? timeout : 0.0);
            errno = ENOENT;
            return -1;
        }
        double nap = left < 0.05 ? left : 0.05;
        struct timespec ts = {(time_t)nap, (long)((nap - (double)(time_t)nap) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

/* ---- misc --------------------------------------------------------------- */

uint64_t util_fnv1a64(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

long util_ncpus(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    /* The affinity mask is what a batch system (Slurm cgroups, taskset)
     * actually grants us; fall back to the online count. */
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? n : 1;
}

static pthread_once_t s_host_once = PTHREAD_ONCE_INIT;
static char s_host[256];

static void s_host_init(void)
{
    if (gethostname(s_host, sizeof s_host - 1) < 0 || !s_host[0]) {
        memcpy(s_host, "localhost", sizeof "localhost");
        return;
    }
    s_host[sizeof s_host - 1] = '\0';
    char *dot = strchr(s_host, '.');
    if (dot && dot != s_host)
        *dot = '\0';
}

const char *util_hostname(void)
{
    pthread_once(&s_host_once, s_host_init);
    return s_host;
}

int util_mkdir_p(const char *path)
{
    char buf[PATH_MAX];
    if (!path || !*path) {
        errno = EINVAL;
        return -1;
    }
    size_t n = strlen(path);
    if (n >= sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, path, n + 1);
    /* Create each prefix in turn; existing directories are fine. */
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        if (buf[i - 1] == '/')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0700) < 0) {
            int e = errno;
            struct stat st;
            if (e != EEXIST || stat(buf, &st) < 0 || !S_ISDIR(st.st_mode)) {
                errno = e == EEXIST ? ENOTDIR : e;
                return -1;
            }
        }
        buf[i] = saved;
    }
    return 0;
}

static pthread_once_t s_rt_once = PTHREAD_ONCE_INIT;
static char s_rt[PATH_MAX];

static void s_rt_init(void)
{
    const char *env = getenv("SHOAL_RUNTIME_DIR");
    int ok;
    if (env && *env) {
        ok = util_fmt(s_rt, sizeof s_rt, "%s", env) == 0;
    } else {
        const char *tmp = getenv("TMPDIR");
        if (!tmp || !*tmp)
            tmp = "/tmp";
        ok = util_fmt(s_rt, sizeof s_rt, "%s/shoal-%ld", tmp, (long)getuid()) == 0;
    }
    if (!ok)
        util_fmt(s_rt, sizeof s_rt, "/tmp/shoal-%ld", (long)getuid());
    /* Strip trailing slashes so callers can append "/name". */
    size_t n = strlen(s_rt);
    while (n > 1 && s_rt[n - 1] == '/')
        s_rt[--n] = '\0';

    if (util_mkdir_p(s_rt) < 0) {
        log_err("cannot create runtime directory %s: %s", s_rt, strerror(errno));
        return;
    }
    /* A shared /tmp: a directory someone else created for us is not ours to
     * trust with sockets and libraries. */
    struct stat st;
    if (lstat(s_rt, &st) == 0) {
        if (st.st_uid != getuid())
            log_err("runtime directory %s is owned by uid %ld, not us", s_rt,
                    (long)st.st_uid);
        else if ((st.st_mode & 077) && (!env || !*env))
            chmod(s_rt, 0700);
    }
}

const char *util_runtime_dir(void)
{
    pthread_once(&s_rt_once, s_rt_init);
    return s_rt;
}
