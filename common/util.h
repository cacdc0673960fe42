/*
 * util.h - small shared helpers: clocks, bounded parsing of command-line
 * values, addresses, the scheduler file, hashing, paths.
 */
#ifndef SHOAL_UTIL_H
#define SHOAL_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define SHOAL_ADDR_MAX 256

double util_now(void);        /* monotonic seconds */
double util_wall(void);       /* wall-clock seconds since the epoch */

/* Parse a decimal integer in [min, max]; the whole string must match.
 * 0 or -1 (EINVAL/ERANGE). */
int util_parse_long(const char *s, long min, long max, long *out);
/* Parse a non-negative number of seconds ("2", "0.5", "10s", "500ms", "2m"). */
int util_parse_duration(const char *s, double *out);
/* Parse a byte size ("4GB", "512MiB", "1e9", "100k"); 0 or -1. */
int util_parse_size(const char *s, uint64_t *out);

/* Normalise a scheduler address: "tcp://H:P" is kept, "H:P" becomes
 * "tcp://H:P", "H" alone gets the default port.  Validates host characters
 * and the port range.  0 or -1 (EINVAL) with a reason in err. */
int util_normalize_address(const char *in, char *out, size_t cap, char *err,
                           size_t errcap);

/* Write the scheduler file atomically (temp file + rename):
 *   {"type": "shoal-scheduler", "address": "...", "pid": N, "version": "..."}
 * 0 or -1 with errno. */
int util_sfile_write(const char *path, const char *address);
/* Read the address out of a scheduler file, waiting up to `timeout` seconds
 * for it to appear (0: no wait).  Bounded: files over 64 KiB are refused.
 * 0 or -1 with a reason in err (ENOENT after the timeout, EINVAL if bad). */
int util_sfile_read(const char *path, double timeout, char *addr, size_t cap,
                    char *err, size_t errcap);

uint64_t util_fnv1a64(const void *p, size_t n);
long util_ncpus(void);
/* Host name (short), never fails: "localhost" as a fallback. */
const char *util_hostname(void);
/* mkdir -p with mode 0700 for created directories.  0 or -1. */
int util_mkdir_p(const char *path);
/* Per-user runtime directory: $SHOAL_RUNTIME_DIR, else $TMPDIR/shoal-UID,
 * else /tmp/shoal-UID; created if missing.  Returns a static string. */
const char *util_runtime_dir(void);
/* Write all of buf to fd (handles EINTR and short writes).  0 or -1. */
int util_write_all(int fd, const void *buf, size_t n);
/* Bounded snprintf that always NUL-terminates; returns -1 if truncated. */
int util_fmt(char *dst, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
