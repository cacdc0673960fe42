/*
 * jobscript.c - validation and text of the batch job script (see
 * jobscript.h).
 */
#define _GNU_SOURCE
#include "jobscript.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* Characters refused in directives and directive paths: the shell's quoting,
 * substitution and command separators. */
static const char s_meta[] = "`$;<>()\\'\"!";

static int s_fail(char *err, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int s_fail(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;

    if (err && cap) {
        va_start(ap, fmt);
        vsnprintf(err, cap, fmt, ap);
        va_end(ap);
    }
    return 0;
}

static int s_is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* A printable description of a refused byte, for error messages. */
static const char *s_show(unsigned char c, char *buf, size_t cap)
{
    if (c == '\n')
        return "a newline";
    if (c < 0x20 || c == 0x7f) {
        snprintf(buf, cap, "control character 0x%02x", c);
        return buf;
    }
    snprintf(buf, cap, "'%c'", c);
    return buf;
}

int jq_valid_name(const char *s, char *err, size_t errcap)
{
    size_t n = s ? strlen(s) : 0, i;
    char b[40];

    if (n == 0 || n >= JQ_NAME_MAX)
        return s_fail(err, errcap, "must be 1 to %d characters", JQ_NAME_MAX - 1);
    if (!s_is_alnum(s[0]))
        return s_fail(err, errcap, "must start with a letter or digit");
    for (i = 0; i < n; i++)
        if (!s_is_alnum(s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
            return s_fail(err, errcap, "contains %s (letters, digits, '.', '_', '-' only)",
                          s_show((unsigned char)s[i], b, sizeof(b)));
    return 1;
}

int jq_valid_word(const char *s, char *err, size_t errcap)
{
    size_t n = s ? strlen(s) : 0, i;
    char b[40];

    if (n == 0 || n >= JQ_WORD_MAX)
        return s_fail(err, errcap, "must be 1 to %d characters", JQ_WORD_MAX - 1);
    for (i = 0; i < n; i++)
        if (!s_is_alnum(s[i]) && !strchr("._-@:+", s[i]))
            return s_fail(err, errcap,
                          "contains %s (letters, digits and . _ - @ : + only)",
                          s_show((unsigned char)s[i], b, sizeof(b)));
    return 1;
}

int jq_valid_directive(const char *s, char *err, size_t errcap)
{
    size_t n = s ? strlen(s) : 0, i;
    int blank = 1;
    char b[40];

    if (n == 0 || n > JQ_DIRECTIVE_MAX)
        return s_fail(err, errcap, "must be 1 to %d characters", JQ_DIRECTIVE_MAX);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7e || strchr(s_meta, c))
            return s_fail(err, errcap, "contains %s, which is not allowed in a directive",
                          s_show(c, b, sizeof(b)));
        if (c != ' ')
            blank = 0;
    }
    if (blank)
        return s_fail(err, errcap, "is blank");
    return 1;
}

int jq_valid_line(const char *s, char *err, size_t errcap)
{
    size_t n = s ? strlen(s) : 0, i;
    char b[40];

    if (n == 0 || n > JQ_LINE_MAX)
        return s_fail(err, errcap, "must be 1 to %d characters", JQ_LINE_MAX);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return s_fail(err, errcap, "contains %s (one line per --prologue)",
                          s_show(c, b, sizeof(b)));
    }
    return 1;
}

int jq_valid_path(const char *s, char *err, size_t errcap)
{
    size_t n = s ? strlen(s) : 0, i;
    char b[40];

    if (n == 0 || n >= JQ_PATH_MAX)
        return s_fail(err, errcap, "must be 1 to %d characters", JQ_PATH_MAX - 1);
    if (s[0] != '/')
        return s_fail(err, errcap, "is not an absolute path");
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f || c == '%' || c == '#' || strchr(s_meta, c))
            return s_fail(err, errcap, "contains %s, which a job directive cannot hold",
                          c == ' ' ? "a space" : s_show(c, b, sizeof(b)));
    }
    return 1;
}

int jq_valid_arg(const char *s, char *err, size_t errcap)
{
    size_t n = s ? strlen(s) : 0, i;
    char b[40];

    if (n == 0 || n > JQ_LINE_MAX)
        return s_fail(err, errcap, "must be 1 to %d characters", JQ_LINE_MAX);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return s_fail(err, errcap, "contains %s", s_show(c, b, sizeof(b)));
    }
    return 1;
}

/* ---- walltime and memory ------------------------------------------------- */

/* Digits only, at most 9 of them. */
static int s_small_number(const char *s, size_t n, long *out)
{
    long v = 0;
    size_t i;

    if (n == 0 || n > 9)
        return -1;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int jq_parse_walltime(const char *s, long *out)
{
    const long max = 366L * 86400;
    long parts[3] = {0, 0, 0}, days = 0, total;
    const char *p, *dash, *colon;
    size_t nparts = 0;
    double d;

    if (!s || !*s || strlen(s) > 32)
        goto bad;
    if (!strchr(s, ':')) {
        /* A plain duration: "3600", "90m", "2h". */
        if (util_parse_duration(s, &d) < 0 || d < 1 || d > (double)max)
            goto bad;
        *out = (long)d;
        return 0;
    }
    p = s;
    if ((dash = strchr(s, '-'))) {
        if (s_small_number(s, (size_t)(dash - s), &days) < 0)
            goto bad;
        p = dash + 1;
    }
    for (;;) {
        colon = strchr(p, ':');
        size_t n = colon ? (size_t)(colon - p) : strlen(p);
        if (nparts == 3 || s_small_number(p, n, &parts[nparts]) < 0)
            goto bad;
        nparts++;
        if (!colon)
            break;
        p = colon + 1;
    }
    if (nparts == 2) {          /* MM:SS */
        if (dash || parts[1] >= 60)
            goto bad;
        total = parts[0] * 60 + parts[1];
    } else if (nparts == 3) {   /* HH:MM:SS */
        if (parts[1] >= 60 || parts[2] >= 60)
            goto bad;
        total = days * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2];
    } else {
        goto bad;
    }
    if (total < 1 || total > max)
        goto bad;
    *out = total;
    return 0;
bad:
    errno = EINVAL;
    return -1;
}

void jq_format_walltime(long secs, char *out, size_t cap)
{
    snprintf(out, cap, "%02ld:%02ld:%02ld", secs / 3600, secs / 60 % 60, secs % 60);
}

void jq_format_memory(jq_system_t sys, uint64_t bytes, char *out, size_t cap)
{
    const uint64_t mib = 1ULL << 20, gib = 1ULL << 30;
    /* Whole GiB as such (16GiB: "16G"); anything else rounded up to whole
     * MiB (16GB: "15259M"), so that a job never asks for less than was said
     * nor much more. */
    int gb = bytes >= gib && bytes % gib == 0;
    uint64_t n = gb ? bytes / gib : (bytes + mib - 1) / mib;

    if (n == 0)
        n = 1;
    if (sys == JQ_PBS)
        snprintf(out, cap, "%llu%s", (unsigned long long)n, gb ? "gb" : "mb");
    else
        snprintf(out, cap, "%llu%s", (unsigned long long)n, gb ? "G" : "M");
}

long jq_lifetime(long walltime, double margin)
{
    double m, life;

    if (margin < 0) {
        m = walltime * 0.05;
        if (m < 60)
            m = 60;
        if (m > walltime / 2.0)
            m = walltime / 2.0;
    } else if (margin == 0) {
        return 0;
    } else {
        m = margin;
    }
    life = walltime - m;
    return life >= 1 ? (long)life : 0;
}

const char *jq_jobid_expr(jq_system_t sys)
{
    /* Under Slurm's qsub wrapper a #PBS script runs as a Slurm job. */
    return sys == JQ_PBS ? "${PBS_JOBID:-${SLURM_JOB_ID:-$$}}" : "${SLURM_JOB_ID:-$$}";
}

/* ---- the script ---------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int failed;
} sbuf_t;

static void s_add(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void s_add(sbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->failed)
        return;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        {
            size_t ncap = b->cap * 2 + (size_t)n;
            char *np = realloc(b->p, ncap);
            if (!np) {
                b->failed = 1;
                return;
            }
            b->p = np;
            b->cap = ncap;
        }
    }
}

/* Append s single-quoted for bash: 'it'\''s'. */
static void s_add_quoted(sbuf_t *b, const char *s)
{
    const char *q;

    s_add(b, "'");
    while ((q = strchr(s, '\''))) {
        s_add(b, "%.*s'\\''", (int)(q - s), s);
        s = q + 1;
    }
    s_add(b, "%s'", s);
}

/* Check every field once more: the script must never carry an unchecked
 * value, whoever filled the spec. */
static int s_check_spec(const jq_spec_t *s, char *err, size_t errcap)
{
    char why[256];
    size_t i;

    if (s->sys != JQ_SLURM && s->sys != JQ_PBS)
        return s_fail(err, errcap, "unknown batch system");
    if (!jq_valid_name(s->job_name, why, sizeof(why)))
        return s_fail(err, errcap, "--job-name '%s' %s", s->job_name ? s->job_name : "",
                      why);
    if (s->cores < 1 || s->cores > JQ_MAX_CORES || s->processes < 1 ||
        s->processes > s->cores || s->cores % s->processes)
        return s_fail(err, errcap, "--cores %d cannot be split into %d processes",
                      s->cores, s->processes);
    if (s->walltime < 1)
        return s_fail(err, errcap, "the walltime must be at least one second");
    if (s->queue && !jq_valid_word(s->queue, why, sizeof(why)))
        return s_fail(err, errcap, "--queue '%s' %s", s->queue, why);
    if (s->account && !jq_valid_word(s->account, why, sizeof(why)))
        return s_fail(err, errcap, "--account '%s' %s", s->account, why);
    if (s->nextra > JQ_MAX_EXTRA || s->nprologue > JQ_MAX_EXTRA ||
        s->nworker_extra > JQ_MAX_EXTRA)
        return s_fail(err, errcap, "too many repeated options (at most %d each)",
                      JQ_MAX_EXTRA);
    for (i = 0; i < s->nextra; i++)
        if (!jq_valid_directive(s->extra[i], why, sizeof(why)))
            return s_fail(err, errcap, "--job-extra '%s' %s", s->extra[i], why);
    for (i = 0; i < s->nprologue; i++)
        if (!jq_valid_line(s->prologue[i], why, sizeof(why)))
            return s_fail(err, errcap, "--prologue %s", why);
    if (s->log_dir && !jq_valid_path(s->log_dir, why, sizeof(why)))
        return s_fail(err, errcap, "--log-directory '%s' %s", s->log_dir, why);
    if (!s->worker_bin || s->worker_bin[0] != '/' ||
        !jq_valid_arg(s->worker_bin, why, sizeof(why)))
        return s_fail(err, errcap, "the worker program must be an absolute path");
    if (!s->address || strncmp(s->address, "tcp://", 6) != 0 ||
        !jq_valid_word(s->address + 6, why, sizeof(why)))
        return s_fail(err, errcap, "bad scheduler address '%s'",
                      s->address ? s->address : "");
    for (i = 0; i < s->nworker_extra; i++)
        if (!jq_valid_arg(s->worker_extra[i], why, sizeof(why)))
            return s_fail(err, errcap, "--worker-extra %s", why);
    if (s->lifetime < 0 || s->death_timeout < 1)
        return s_fail(err, errcap, "bad worker lifetime or death timeout");
    return 1;
}

char *jq_script(const jq_spec_t *s, char *err, size_t errcap)
{
    sbuf_t b = {NULL, 0, 0, 0};
    char wall[32], mem[32];
    const char *d;
    size_t i;

    if (!s || !s_check_spec(s, err, errcap)) {
        errno = EINVAL;
        return NULL;
    }
    if (!(b.p = malloc(b.cap = 4096))) {
        s_fail(err, errcap, "out of memory");
        return NULL;
    }
    b.p[0] = '\0';
    jq_format_walltime(s->walltime, wall, sizeof(wall));
    if (s->memory)
        jq_format_memory(s->sys, s->memory, mem, sizeof(mem));

    s_add(&b, "#!/usr/bin/env bash\n");
    if (s->sys == JQ_SLURM) {
        d = "#SBATCH";
        s_add(&b, "%s -J %s\n", d, s->job_name);
        s_add(&b, "%s -n 1\n", d);
        s_add(&b, "%s --cpus-per-task=%d\n", d, s->cores);
        if (s->memory)
            s_add(&b, "%s --mem=%s\n", d, mem);
        s_add(&b, "%s -t %s\n", d, wall);
        if (s->queue)
            s_add(&b, "%s -p %s\n", d, s->queue);
        if (s->account)
            s_add(&b, "%s -A %s\n", d, s->account);
        if (s->log_dir) {
            s_add(&b, "%s -e %s/%s-%%j.err\n", d, s->log_dir, s->job_name);
            s_add(&b, "%s -o %s/%s-%%j.out\n", d, s->log_dir, s->job_name);
        }
    } else {
        d = "#PBS";
        s_add(&b, "%s -N %s\n", d, s->job_name);
        s_add(&b, "%s -l select=1:ncpus=%d:mpiprocs=%d", d, s->cores, s->processes);
        if (s->memory)
            s_add(&b, ":mem=%s", mem);
        s_add(&b, "\n");
        s_add(&b, "%s -l walltime=%s\n", d, wall);
        if (s->queue)
            s_add(&b, "%s -q %s\n", d, s->queue);
        if (s->account)
            s_add(&b, "%s -A %s\n", d, s->account);
        if (s->log_dir) {
            /* A directory: PBS names the files NAME.oJOBID / NAME.eJOBID. */
            s_add(&b, "%s -o %s/\n", d, s->log_dir);
            s_add(&b, "%s -e %s/\n", d, s->log_dir);
        }
    }
    for (i = 0; i < s->nextra; i++)
        s_add(&b, "%s %s\n", d, s->extra[i]);
    s_add(&b, "\n");
    for (i = 0; i < s->nprologue; i++)
        s_add(&b, "%s\n", s->prologue[i]);
    if (s->nprologue)
        s_add(&b, "\n");

    /* The worker command: every argument quoted; only the job id is
     * expanded, from the batch system's variable. */
    s_add(&b, "exec ");
    s_add_quoted(&b, s->worker_bin);
    s_add(&b, " ");
    s_add_quoted(&b, s->address);
    s_add(&b, " --nthreads %d --nworkers %d --name ", s->cores / s->processes,
          s->processes);
    s_add_quoted(&b, s->job_name);
    s_add(&b, "-\"%s\"", jq_jobid_expr(s->sys));
    s_add(&b, " --death-timeout %ld", s->death_timeout);
    if (s->lifetime > 0)
        s_add(&b, " --lifetime %lds", s->lifetime);
    for (i = 0; i < s->nworker_extra; i++) {
        s_add(&b, " ");
        s_add_quoted(&b, s->worker_extra[i]);
    }
    s_add(&b, "\n");
    if (b.failed) {
        free(b.p);
        s_fail(err, errcap, "out of memory");
        errno = ENOMEM;
        return NULL;
    }
    return b.p;
}
