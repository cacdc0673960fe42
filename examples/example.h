/*
 * example.h - helpers shared by the example client programs (header-only, so
 * each example stays one file to build and read).
 */
#ifndef SHOAL_EXAMPLE_H
#define SHOAL_EXAMPLE_H

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static inline double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline int s_library_next_to_exe(const char *name, char *out, size_t cap)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char *slash;
    int w;

    if (n < 0 || (size_t)n >= sizeof exe - 1)
        return -1;
    exe[n] = '\0';
    slash = strrchr(exe, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    w = snprintf(out, cap, "%s/%s", exe, name);
    return w < 0 || (size_t)w >= cap ? -1 : 0;
}

/* A whole number in [min, max]: "20000" or "2e4". */
static inline int s_parse_count(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;
    double d;

    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno == 0 && *end == '\0') {
        if (v < min || v > max)
            return -1;
        *out = v;
        return 0;
    }
    errno = 0;
    d = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !(d >= (double)min) || d > (double)max ||
        d >= 0x1p64 || d != floor(d))
        return -1;
    *out = (uint64_t)d;
    return 0;
}

#endif
