/*
 * sshutil.c - host names, host files and shell quoting for shoal-ssh.
 */
#define _GNU_SOURCE
#include "sshutil.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_USER_MAX 32
#define S_DNS_MAX 253
#define S_IPV6_MAX 45

static void __attribute__((format(printf, 3, 4)))
s_why(char *why, size_t cap, const char *fmt, ...)
{
    va_list ap;

    if (!why || !cap)
        return;
    va_start(ap, fmt);
    vsnprintf(why, cap, fmt, ap);
    va_end(ap);
}

static int s_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static int s_hex(char c)
{
    return (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || (c >= '0' && c <= '9');
}

/* A character shown in an error message: printable as is, else '?'. */
static char s_show(char c)
{
    return c > ' ' && c < 0x7f ? c : '?';
}

int ssh_host_is_ipv6(const char *host)
{
    return strchr(host, ':') != NULL;
}

const char *ssh_host_part(const char *dest)
{
    const char *at = strchr(dest, '@');
    return at ? at + 1 : dest;
}

int ssh_host_valid(const char *dest, char *why, size_t whycap)
{
    size_t n, i, ulen = 0;
    const char *at, *host;

    if (!dest || !*dest) {
        s_why(why, whycap, "empty host name");
        return 0;
    }
    n = strnlen(dest, SSH_HOST_MAX);
    if (n >= SSH_HOST_MAX) {
        s_why(why, whycap, "longer than %d characters", SSH_HOST_MAX - 1);
        return 0;
    }
    at = strchr(dest, '@');
    if (at) {
        ulen = (size_t)(at - dest);
        if (ulen == 0 || ulen > S_USER_MAX) {
            s_why(why, whycap, "the user name before '@' must be 1 to %d characters",
                  S_USER_MAX);
            return 0;
        }
        if (dest[0] == '-') {
            s_why(why, whycap, "the user name must not start with '-'");
            return 0;
        }
        for (i = 0; i < ulen; i++) {
            char c = dest[i];
            if (!s_alnum(c) && c != '.' && c != '_' && c != '-') {
                s_why(why, whycap, "character '%c' is not allowed in a user name",
                      s_show(c));
                return 0;
            }
        }
    }
    host = at ? at + 1 : dest;
    n = strlen(host);
    if (n == 0) {
        s_why(why, whycap, "no host after '@'");
        return 0;
    }
    if (ssh_host_is_ipv6(host)) {
        if (n > S_IPV6_MAX) {
            s_why(why, whycap, "IPv6 address longer than %d characters", S_IPV6_MAX);
            return 0;
        }
        for (i = 0; i < n; i++) {
            char c = host[i];
            if (!s_hex(c) && c != ':' && c != '.') {
                s_why(why, whycap,
                      "character '%c' is not allowed in an IPv6 address (give it bare, "
                      "without brackets or a zone)",
                      s_show(c));
                return 0;
            }
        }
        return 1;
    }
    if (n > S_DNS_MAX) {
        s_why(why, whycap, "host name longer than %d characters", S_DNS_MAX);
        return 0;
    }
    if (!s_alnum(host[0])) {
        s_why(why, whycap, "a host name must start with a letter or digit");
        return 0;
    }
    for (i = 0; i < n; i++) {
        char c = host[i];
        if (!s_alnum(c) && c != '.' && c != '-' && c != '_') {
            s_why(why, whycap, "character '%c' is not allowed in a host name", s_show(c));
            return 0;
        }
    }
    return 1;
}

int ssh_hostlist_add(ssh_hostlist_t *l, const char *dest, char *why, size_t whycap)
{
    char reason[256];

    if (!ssh_host_valid(dest, reason, sizeof reason)) {
        s_why(why, whycap, "invalid host '%.64s%s': %s", dest,
              strlen(dest) > 64 ? "..." : "", reason);
        errno = EINVAL;
        return -1;
    }
    if (l->n >= SSH_MAX_HOSTS) {
        s_why(why, whycap, "too many hosts (at most %d)", SSH_MAX_HOSTS);
        errno = E2BIG;
        return -1;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        void *p;

        if (cap > SSH_MAX_HOSTS)
            cap = SSH_MAX_HOSTS;
        p = realloc(l->host, cap * sizeof *l->host);
        if (!p) {
            s_why(why, whycap, "out of memory");
            return -1;
        }
        l->host = p;
        l->cap = cap;
    }
    memcpy(l->host[l->n], dest, strlen(dest) + 1);
    l->n++;
    return 0;
}

void ssh_hostlist_free(ssh_hostlist_t *l)
{
    if (!l)
        return;
    free(l->host);
    l->host = NULL;
    l->n = l->cap = 0;
}

static int s_blank(int c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Handle one line of a host file (NUL-terminated, no newline). */
static int s_hostfile_line(ssh_hostlist_t *l, const char *path, long lineno, char *line,
                           char *why, size_t whycap)
{
    char *p = line, *end, *hash, reason[400];

    hash = strchr(p, '#');
    if (hash)
        *hash = '\0';
    while (s_blank((unsigned char)*p))
        p++;
    end = p + strlen(p);
    while (end > p && s_blank((unsigned char)end[-1]))
        *--end = '\0';
    if (!*p)
        return 0;
    for (char *q = p; *q; q++) {
        if (s_blank((unsigned char)*q)) {
            s_why(why, whycap, "%s:%ld: one host per line", path, lineno);
            errno = EINVAL;
            return -1;
        }
    }
    if (ssh_hostlist_add(l, p, reason, sizeof reason) < 0) {
        s_why(why, whycap, "%s:%ld: %s", path, lineno, reason);
        return -1;
    }
    return 0;
}

int ssh_hostlist_read(ssh_hostlist_t *l, const char *path, char *why, size_t whycap)
{
    char line[SSH_HOSTFILE_LINE_MAX + 1];
    size_t len = 0;
    long lineno = 1;
    FILE *f;
    int c, rc = 0;

    f = fopen(path, "re");
    if (!f) {
        int e = errno;
        s_why(why, whycap, "%s: %s", path, strerror(e));
        errno = e;
        return -1;
    }
    /* Byte by byte, so that a NUL or an over-long line is seen rather than
     * silently cut (fgets cannot tell either). */
    while ((c = getc(f)) != EOF) {
        if (c == '\n') {
            line[len] = '\0';
            if (s_hostfile_line(l, path, lineno, line, why, whycap) < 0) {
                rc = -1;
                goto out;
            }
            len = 0;
            if (++lineno > SSH_HOSTFILE_MAX_LINES) {
                s_why(why, whycap, "%s: more than %d lines", path, SSH_HOSTFILE_MAX_LINES);
                errno = E2BIG;
                rc = -1;
                goto out;
            }
            continue;
        }
        if (c == '\0') {
            s_why(why, whycap, "%s:%ld: NUL byte (not a text file?)", path, lineno);
            errno = EINVAL;
            rc = -1;
            goto out;
        }
        if (len >= SSH_HOSTFILE_LINE_MAX) {
            s_why(why, whycap, "%s:%ld: line longer than %d bytes", path, lineno,
                  SSH_HOSTFILE_LINE_MAX);
            errno = EINVAL;
            rc = -1;
            goto out;
        }
        line[len++] = (char)c;
    }
    if (ferror(f)) {
        int e = errno;
        s_why(why, whycap, "%s: read error: %s", path, strerror(e));
        errno = e;
        rc = -1;
        goto out;
    }
    if (len > 0) {
        line[len] = '\0';
        if (s_hostfile_line(l, path, lineno, line, why, whycap) < 0)
            rc = -1;
    }
out:
    fclose(f);
    return rc;
}

/* --- bounded string building ---------------------------------------------------- */

void sbuf_init(sbuf_t *b, char *mem, size_t cap)
{
    b->p = mem;
    b->cap = cap;
    b->len = 0;
    b->overflow = cap == 0;
    if (cap)
        mem[0] = '\0';
}

void sbuf_addn(sbuf_t *b, const char *s, size_t n)
{
    if (b->overflow)
        return;
    if (n >= b->cap - b->len) {
        b->overflow = 1;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void sbuf_add(sbuf_t *b, const char *s)
{
    sbuf_addn(b, s, strlen(s));
}

void sbuf_addf(sbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->overflow)
        return;
    va_start(ap, fmt);
    n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= b->cap - b->len) {
        b->overflow = 1;
        b->p[b->len] = '\0';
        return;
    }
    b->len += (size_t)n;
}

static int s_shell_safe(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++) {
        char c = *s;
        if (!s_alnum(c) && !strchr("_@+:,./-", c))
            return 0;
    }
    return 1;
}

void sbuf_quote(sbuf_t *b, const char *s)
{
    if (s_shell_safe(s)) {
        sbuf_add(b, s);
        return;
    }
    sbuf_add(b, "'");
    for (const char *q; (q = strchr(s, '\'')); s = q + 1) {
        sbuf_addn(b, s, (size_t)(q - s));
        sbuf_add(b, "'\\''");
    }
    sbuf_add(b, s);
    sbuf_add(b, "'");
}

int ssh_has_control(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f)
            return 1;
    }
    return 0;
}
