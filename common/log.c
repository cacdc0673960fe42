/*
 * log.c - one-line log records on stderr.
 *
 * Each record is formatted into a stack buffer and written with a single
 * write(2), so records from several threads (or processes sharing stderr)
 * never interleave mid-line.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096

static const char *s_prog = "shoal";
/* -1: not read from the environment yet. */
static volatile int s_level = -1;

static int s_level_from_env(void)
{
    const char *v = getenv("SHOAL_LOG_LEVEL");
    if (!v || !*v)
        return LOG_LVL_INFO;
    if (!strcasecmp(v, "error") || !strcmp(v, "0"))
        return LOG_LVL_ERROR;
    if (!strcasecmp(v, "warn") || !strcasecmp(v, "warning") || !strcmp(v, "1"))
        return LOG_LVL_WARN;
    if (!strcasecmp(v, "info") || !strcmp(v, "2"))
        return LOG_LVL_INFO;
    if (!strcasecmp(v, "debug") || !strcmp(v, "3"))
        return LOG_LVL_DEBUG;
    return LOG_LVL_INFO;
}

void log_init(const char *prog)
{
    if (prog && *prog) {
        /* Show the basename only: argv[0] may be a long path. */
        const char *slash = strrchr(prog, '/');
        s_prog = slash && slash[1] ? slash + 1 : prog;
    }
    s_level = s_level_from_env();
}

void log_set_level(int level)
{
    if (level < LOG_LVL_ERROR)
        level = LOG_LVL_ERROR;
    if (level > LOG_LVL_DEBUG)
        level = LOG_LVL_DEBUG;
    s_level = level;
}

int log_get_level(void)
{
    int l = s_level;
    if (l < 0) {
        l = s_level_from_env();
        s_level = l;
    }
    return l;
}

static const char *const s_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

void log_msg(int level, const char *fmt, ...)
{
    if (level > log_get_level())
        return;
    if (level < LOG_LVL_ERROR)
        level = LOG_LVL_ERROR;
    if (level > LOG_LVL_DEBUG)
        level = LOG_LVL_DEBUG;

    int saved_errno = errno;
    char line[LOG_LINE_MAX];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    time_t t = tv.tv_sec;
    localtime_r(&t, &tm);

    int n = snprintf(line, sizeof line, "%04d-%02d-%02d %02d:%02d:%02d.%03ld %s[%ld] %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (long)(tv.tv_usec / 1000), s_prog, (long)getpid(),
                     s_names[level]);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof line)
        n = sizeof line - 1;

    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    if (m > 0)
        n += m;
    /* Truncated records keep their newline; mark the cut with "...". */
    if ((size_t)n >= sizeof line - 1) {
        n = sizeof line - 1;
        memcpy(line + n - 4, "...", 3);
        n -= 1;
    }
    /* Drop a trailing newline the caller may have supplied; we add one. */
    while (n > 0 && line[n - 1] == '\n')
        n--;
    line[n++] = '\n';

    const char *p = line;
    size_t left = (size_t)n;
    while (left > 0) {
        ssize_t w = write(STDERR_FILENO, p, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        p += w;
        left -= (size_t)w;
    }
    errno = saved_errno;
}
