/*
 * sshutil.h - the pieces of shoal-ssh that do not touch processes: host
 * names, host files, and building command lines that a remote shell reads.
 *
 * Everything that ends up in a remote command line passes through
 * sbuf_quote(), so a host name, path or option value can never be read by
 * the remote shell as anything but one word.  Host names are validated too,
 * because they are also given to ssh itself (a host starting with '-' would
 * be an ssh option) and appear in the scheduler address.
 */
#ifndef SHOAL_SSHUTIL_H
#define SHOAL_SSHUTIL_H

#include <stddef.h>

#define SSH_HOST_MAX 256        /* "[user@]host", including the NUL */
#define SSH_MAX_HOSTS 4096
#define SSH_HOSTFILE_LINE_MAX 1024
#define SSH_HOSTFILE_MAX_LINES 100000

/* --- host names ------------------------------------------------------------ */

/* Check a destination "[user@]host": user is 1..32 of [A-Za-z0-9._-] not
 * starting with '-'; host is a DNS name or IPv4 address ([A-Za-z0-9._-],
 * starting with a letter or digit, at most 253 characters) or a bare IPv6
 * address (hex digits, ':' and '.').  Returns 1 if valid; otherwise 0 with
 * the reason in why. */
int ssh_host_valid(const char *dest, char *why, size_t whycap);

/* The host part of a destination (after "user@"); points into dest. */
const char *ssh_host_part(const char *dest);

/* Non-zero if the host part is an IPv6 address (contains ':'). */
int ssh_host_is_ipv6(const char *host);

/* --- host lists -------------------------------------------------------------- */

typedef struct ssh_hostlist {
    char (*host)[SSH_HOST_MAX];
    size_t n, cap;
} ssh_hostlist_t;

/* Append a validated destination.  0, or -1 with the reason in why (invalid
 * host, too many hosts, out of memory). */
int ssh_hostlist_add(ssh_hostlist_t *l, const char *dest, char *why, size_t whycap);

/* Read a host file: one destination per line; blank lines and text after
 * '#' are ignored; surrounding blanks are trimmed.  Lines are bounded
 * (SSH_HOSTFILE_LINE_MAX), as are their number and the hosts.  0, or -1 with
 * "FILE:LINE: reason" in why. */
int ssh_hostlist_read(ssh_hostlist_t *l, const char *path, char *why, size_t whycap);

void ssh_hostlist_free(ssh_hostlist_t *l);

/* --- bounded string building ---------------------------------------------------- */

/* A string built in caller-provided memory.  Appending past the capacity sets
 * `overflow` and leaves the text truncated but NUL-terminated; check it once
 * at the end. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    int overflow;
} sbuf_t;

void sbuf_init(sbuf_t *b, char *mem, size_t cap);
void sbuf_add(sbuf_t *b, const char *s);
void sbuf_addn(sbuf_t *b, const char *s, size_t n);
void sbuf_addf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Append s as one POSIX shell word: in single quotes, with each ' written as
 * '\''.  Words made only of characters no shell treats specially
 * ([A-Za-z0-9_@+:,./-]) are appended bare, which keeps printed commands
 * readable. */
void sbuf_quote(sbuf_t *b, const char *s);

/* Non-zero if s holds a control character (bytes 0x01-0x1f or 0x7f): such
 * strings are refused in paths and options that go into a remote command. */
int ssh_has_control(const char *s);

#endif
