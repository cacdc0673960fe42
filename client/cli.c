/*
 * cli.c - `shoal`, the command-line client.
 *
 *   shoal submit [OPTIONS] [--array SPEC] -- CMD [ARGS...]
 *   shoal map    [OPTIONS] -- CMD [ARGS...]     one task per line of stdin
 *   shoal status [OPTIONS] [--json]
 *   shoal graph  [OPTIONS] [--library PATH]... [--get KEY]... [--json] FILE.json
 *
 * submit and map share one engine.  A producer thread turns items (the single
 * command, array indexes, or stdin lines) into shoal.cmd tasks and appends
 * their futures to a bounded ring; the main thread takes futures off the ring
 * in order, waits for each, prints its output and releases it.  Output thus
 * comes in input order as soon as the in-order prefix is done, memory stays
 * flat however long the input is, and at most --max-pending tasks are in
 * flight.  The producer is a thread of its own so that a slow stdin
 * (`tail -f log | shoal map ...`) never holds back output that is ready.
 *
 * graph reads a Dask-style JSON graph (shoal_graph_load_json), checks it and
 * its function names against the --library files before connecting, uploads
 * the libraries, submits the graph as one message and prints the wanted keys.
 *
 * Signals: SIGINT/SIGTERM/SIGHUP are caught by a handler that only writes to
 * a pipe; a thread reading that pipe cancels the tasks in flight, and the main
 * thread then disconnects (which also stops a --local cluster) and exits
 * 128+signal.  The signals are deliberately not blocked: a blocked mask would
 * be inherited by the processes the library starts (a local cluster, or
 * commands run inline), which could then not be stopped with SIGTERM.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"
#include "shoal.h"
#include "util.h"

#define CLI_MAX_LINE        (1u << 20)   /* longest stdin line for map (bytes, no '\n') */
#define CLI_READ_CHUNK      (64u << 10)
#define CLI_MAX_ARRAY       10000000ull  /* items in one --array */
#define CLI_DEFAULT_PENDING 100000l
#define CLI_MAX_PENDING     10000000l
#define CLI_MAX_ARGV_BYTES  (16u << 20)  /* one task's argv after substitution */
#define CLI_MAX_ENV         4096
#define CLI_CONNECT_TIMEOUT 5.0
#define CLI_LOCAL_TIMEOUT   60.0         /* a local cluster has processes to start */
#define CLI_MAX_NOTES       100          /* per-task error lines before going quiet */
#define CLI_MAX_FAILED_KEPT 1000         /* failing items named in the summary */
#define CLI_WAIT_SLICE      1.0          /* seconds between checks for a stop */

/* Exit statuses of shoal itself.  A single `submit` otherwise passes on the
 * command's own status (128+N if a signal killed it). */
#define EXIT_FAIL    1
#define EXIT_USAGE   2
#define EXIT_TIMEOUT 124   /* single submit: the command timed out, as timeout(1) */
#define EXIT_SHOAL   125   /* single submit: shoal itself failed */
#define EXIT_NORUN   127   /* single submit: the command could not be run */

/* ------------------------------------------------------------------------ */
/* Help texts                                                                */

static const char s_main_help[] =
    "usage: shoal COMMAND [OPTIONS] [-- CMD ARGS...]\n"
    "\n"
    "Run command lines as tasks on a shoal cluster.\n"
    "\n"
    "commands:\n"
    "  submit   run one command, or one per index of an --array, and print the output\n"
    "  map      run a command once per line of stdin (like GNU parallel -k)\n"
    "  status   show the workers and the task counts of a scheduler\n"
    "  graph    run a task graph from a JSON file (a Dask-style dict of tasks)\n"
    "\n"
    "Every command needs a scheduler: --scheduler ADDRESS, --scheduler-file PATH,\n"
    "or $SHOAL_SCHEDULER / $SHOAL_SCHEDULER_FILE.  --local starts a cluster on\n"
    "this machine for the duration of the command instead.\n"
    "\n"
    "  shoal --help | --version\n"
    "  shoal COMMAND --help\n";

#define CONN_HELP                                                                 \
    "connection:\n"                                                               \
    "  --scheduler ADDRESS      tcp://HOST:PORT, HOST:PORT, HOST or inline://\n" \
    "  --scheduler-file PATH    read the address from a scheduler file\n"        \
    "  --local                  start a cluster on this machine for this command\n" \
    "  --local-workers N        worker processes of that cluster (default: one per core)\n" \
    "  --connect-timeout SECS   give up connecting after SECS (default 5)\n"    \
    "Without these, $SHOAL_SCHEDULER or else $SHOAL_SCHEDULER_FILE is used.\n"

#define TASK_HELP                                                                 \
    "task options:\n"                                                             \
    "  --timeout SECS           kill a command that runs longer (default: none)\n" \
    "  --env K=V                add K=V to the command's environment (repeatable;\n" \
    "                           it runs the command through env(1) on the worker;\n" \
    "                           `{}` in V is replaced like in ARGS)\n" \
    "  --cwd DIR                run the command in DIR (on the worker)\n"        \
    "  --retries N              rerun a task that failed (worker lost...) up to N times\n" \
    "  -j, --max-pending N      at most N tasks in flight (default 100000)\n"

static const char s_submit_help[] =
    "usage: shoal submit [OPTIONS] [--array SPEC] [--] CMD [ARGS...]\n"
    "\n"
    "Without --array: run CMD once on a worker, print its stdout and stderr, and\n"
    "exit with its exit status (128+N if signal N killed it, 124 if it timed out,\n"
    "127 if it could not be run, 125 if shoal itself failed).  `{}` is left as is.\n"
    "\n"
    "With --array SPEC: run one task per index, every `{}` in CMD and ARGS replaced\n"
    "by the index.  SPEC is a comma-separated list of N, N-M or N-M:STEP (for\n"
    "example 1-100, 0-99:2, 1,3,5-9), at most 10000000 indexes, run and printed in\n"
    "the order written.  Each task's stdout goes to stdout and its stderr to stderr,\n"
    "in index order.  Exit status 0 if every command exited 0, else 1 (the failing\n"
    "indexes are named on stderr).\n"
    "\n"
    "  --array SPEC             run a task array\n"
    "\n"
    TASK_HELP
    "\n"
    CONN_HELP
    "\n"
    "examples:\n"
    "  shoal submit --scheduler node1:8686 -- hostname\n"
    "  shoal submit --array 1-100 -- ./simulate --seed {} --out run{}.dat\n";

static const char s_map_help[] =
    "usage: shoal map [OPTIONS] [--] CMD [ARGS...]\n"
    "\n"
    "Run CMD once per line of stdin, every `{}` in CMD and ARGS replaced by the\n"
    "line (without its newline); with no `{}`, the line is added as the last\n"
    "argument.  An empty line is an empty argument.  Lines may be at most 1 MiB.\n"
    "Outputs are printed in input order as soon as all earlier ones are done.\n"
    "Exit status 0 if every command exited 0, else 1 (failing lines are named).\n"
    "\n"
    TASK_HELP
    "\n"
    CONN_HELP
    "\n"
    "examples:\n"
    "  ls *.fastq | shoal map -- gzip -k {}\n"
    "  seq 1000 | shoal map --timeout 60 -- ./simulate --seed\n";

static const char s_status_help[] =
    "usage: shoal status [OPTIONS]\n"
    "\n"
    "Print the scheduler's workers (name, host, pid, threads, running and completed\n"
    "tasks) and its tasks by state.  Exit status 1 if the scheduler cannot be reached.\n"
    "\n"
    "  --json                   print one JSON object instead of a table\n"
    "\n"
    CONN_HELP;

static const char s_graph_help[] =
    "usage: shoal graph [OPTIONS] [--library PATH]... [--get KEY]... [--json] FILE.json\n"
    "\n"
    "Run a task graph.  FILE.json is one object mapping keys to tasks or values,\n"
    "like a Dask graph:\n"
    "  {\"a\": 1, \"b\": 2, \"x\": [\"inc\", \"a\"], \"y\": [\"inc\", \"b\"], \"z\": [\"mul\", \"x\", \"y\"]}\n"
    "An array whose first element is a string is a task: that function, applied to\n"
    "the other elements.  In a task's arguments, at any depth, a string equal to a\n"
    "key stands for that key's value.  Anything else is a literal value.  Only what\n"
    "the wanted keys need runs; the graph goes to the scheduler as one message.\n"
    "\n"
    "Before anything runs, the file is checked (JSON syntax, duplicate keys,\n"
    "cycles) and so is every function name, against the built-in ones (shoal.*)\n"
    "and those of the --library files, which are then uploaded to the cluster.\n"
    "\n"
    "  --library PATH           a task library (.so) to check against and upload\n"
    "                           (repeatable)\n"
    "  --no-function-check      do not check function names here: the workers have\n"
    "                           libraries of their own (shoal-worker --library)\n"
    "  --get KEY                compute KEY (repeatable; default: every key that no\n"
    "                           task refers to)\n"
    "  --json                   print one JSON object {\"KEY\": VALUE, ...}\n"
    "\n"
    "Output: when one key is wanted (one --get, or a graph with one such key), its\n"
    "value alone, as JSON; otherwise one line `KEY = VALUE` per key (VALUE as JSON)\n"
    "in the order asked for or, by default, the file's.  Exit status 0 if every\n"
    "key was computed; 1 if a task failed (its error is printed on stderr) or the\n"
    "cluster could not be used; 2 if the file, a function name or an option is\n"
    "wrong (then nothing was submitted).\n"
    "\n"
    CONN_HELP
    "\n"
    "example:\n"
    "  shoal graph --local --library build/examples/libgraph.so --get z \\\n"
    "      examples/graph/graph.json\n";

/* ------------------------------------------------------------------------ */
/* Option parsing                                                            */

enum {
    O_HELP = 1, O_SCHED, O_SFILE, O_LOCAL, O_LOCAL_WORKERS, O_CONNECT_TIMEOUT,
    O_ARRAY, O_TIMEOUT, O_ENV, O_CWD, O_RETRIES, O_PENDING, O_JSON,
    O_LIBRARY, O_GET, O_NO_FUNC_CHECK,
};

typedef struct optdef {
    const char *name;   /* long name, without "--" */
    char shortname;     /* 0 if none */
    int has_arg;
    int id;
} optdef_t;

typedef struct optparse {
    const char *cmd;    /* "shoal submit", for messages */
    int argc;
    char **argv;
    int i;              /* next argument to look at */
    const char *val;    /* value of the option just returned */
} optparse_t;

#define CONN_OPTS                                                   \
    {"help", 'h', 0, O_HELP}, {"scheduler", 0, 1, O_SCHED},         \
    {"scheduler-file", 0, 1, O_SFILE}, {"local", 0, 0, O_LOCAL},    \
    {"local-workers", 0, 1, O_LOCAL_WORKERS},                       \
    {"connect-timeout", 0, 1, O_CONNECT_TIMEOUT}

#define TASK_OPTS                                                   \
    {"timeout", 0, 1, O_TIMEOUT}, {"env", 0, 1, O_ENV},             \
    {"cwd", 0, 1, O_CWD}, {"retries", 0, 1, O_RETRIES},             \
    {"max-pending", 'j', 1, O_PENDING}

static const optdef_t s_submit_opts[] = {CONN_OPTS, TASK_OPTS,
                                         {"array", 0, 1, O_ARRAY}, {NULL, 0, 0, 0}};
static const optdef_t s_map_opts[] = {CONN_OPTS, TASK_OPTS, {NULL, 0, 0, 0}};
static const optdef_t s_status_opts[] = {CONN_OPTS, {"json", 0, 0, O_JSON},
                                         {NULL, 0, 0, 0}};
static const optdef_t s_graph_opts[] = {CONN_OPTS, {"json", 0, 0, O_JSON},
                                        {"library", 0, 1, O_LIBRARY},
                                        {"get", 0, 1, O_GET},
                                        {"no-function-check", 0, 0, O_NO_FUNC_CHECK},
                                        {NULL, 0, 0, 0}};

static void __attribute__((format(printf, 2, 3)))
s_usage_err(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see '%s --help')\n", cmd);
}

/* The next option: its id (> 0); 0 at the end of the options, with p->i at
 * the first operand (past a "--" if there was one); -1 after printing an
 * error.  Accepts --name VALUE, --name=VALUE, -x VALUE and -xVALUE. */
static int s_opt_next(optparse_t *p, const optdef_t *defs)
{
    const char *a;
    const optdef_t *d;

    if (p->i >= p->argc)
        return 0;
    a = p->argv[p->i];
    if (strcmp(a, "--") == 0) {
        p->i++;
        return 0;
    }
    if (a[0] != '-' || a[1] == '\0')   /* an operand ("-" alone is one too) */
        return 0;
    p->val = NULL;
    if (a[1] == '-') {
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        for (d = defs; d->name; d++) {
            if (strlen(d->name) != nlen || memcmp(d->name, name, nlen) != 0)
                continue;
            p->i++;
            if (!d->has_arg) {
                if (eq) {
                    s_usage_err(p->cmd, "option '--%s' takes no value", d->name);
                    return -1;
                }
                return d->id;
            }
            if (eq) {
                p->val = eq + 1;
            } else if (p->i < p->argc) {
                p->val = p->argv[p->i++];
            } else {
                s_usage_err(p->cmd, "option '--%s' needs a value", d->name);
                return -1;
            }
            return d->id;
        }
        s_usage_err(p->cmd, "unknown option '--%.*s'", (int)(nlen > 200 ? 200 : nlen),
                    name);
        return -1;
    }
    for (d = defs; d->name; d++) {
        if (d->shortname == 0 || d->shortname != a[1])
            continue;
        p->i++;
        if (!d->has_arg) {
            if (a[2] != '\0') {
                s_usage_err(p->cmd, "option '-%c' takes no value", a[1]);
                return -1;
            }
            return d->id;
        }
        if (a[2] != '\0') {
            p->val = a + 2;
        } else if (p->i < p->argc) {
            p->val = p->argv[p->i++];
        } else {
            s_usage_err(p->cmd, "option '-%c' needs a value", a[1]);
            return -1;
        }
        return d->id;
    }
    s_usage_err(p->cmd, "unknown option '%.200s'", a);
    return -1;
}

static int s_parse_count(const char *cmd, const char *opt, const char *val, long min,
                         long max, long *out)
{
    if (util_parse_long(val, min, max, out) < 0) {
        s_usage_err(cmd, "%s: '%.100s' is not a whole number from %ld to %ld", opt, val,
                    min, max);
        return -1;
    }
    return 0;
}

static int s_parse_secs(const char *cmd, const char *opt, const char *val, double *out)
{
    if (util_parse_duration(val, out) < 0) {
        s_usage_err(cmd, "%s: '%.100s' is not a duration (e.g. 30, 2.5, 500ms, 10m)",
                    opt, val);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Connecting                                                                */

typedef struct conn_cfg {
    const char *address;
    const char *sfile;
    int local;
    long local_workers;
    double timeout;
    int timeout_set;
} conn_cfg_t;

/* Handle a connection option: 1 if it was one, 0 if not, -1 on a bad value. */
static int s_conn_opt(const char *cmd, conn_cfg_t *cc, int id, const char *val)
{
    switch (id) {
    case O_SCHED:
        cc->address = val;
        return 1;
    case O_SFILE:
        cc->sfile = val;
        return 1;
    case O_LOCAL:
        cc->local = 1;
        return 1;
    case O_LOCAL_WORKERS:
        return s_parse_count(cmd, "--local-workers", val, 1, 4096, &cc->local_workers) < 0
                   ? -1 : 1;
    case O_CONNECT_TIMEOUT:
        if (s_parse_secs(cmd, "--connect-timeout", val, &cc->timeout) < 0)
            return -1;
        if (cc->timeout <= 0 || cc->timeout > 86400) {
            s_usage_err(cmd, "--connect-timeout: must be more than 0 and at most a day");
            return -1;
        }
        cc->timeout_set = 1;
        return 1;
    default:
        return 0;
    }
}

/* A set, non-empty environment variable, or NULL.  An empty one is removed,
 * so that the library (which reads the same variables) agrees it is unset. */
static const char *s_env(const char *name)
{
    const char *v = getenv(name);
    if (v && *v == '\0') {
        unsetenv(name);
        v = NULL;
    }
    return v;
}

/* Connect as the options say.  On failure prints why and sets *code. */
static shoal_client_t *s_connect(const char *cmd, const conn_cfg_t *cc, int *code)
{
    shoal_connect_opts_t o;
    shoal_error_t err = {{0}};
    shoal_client_t *c;
    char where[600] = "";
    const char *env_addr = s_env("SHOAL_SCHEDULER");
    const char *env_file = s_env("SHOAL_SCHEDULER_FILE");

    memset(&o, 0, sizeof o);
    o.name = "shoal-cli";
    o.timeout = cc->timeout_set ? cc->timeout : CLI_CONNECT_TIMEOUT;
    *code = EXIT_USAGE;
    if (cc->local_workers && !cc->local) {
        s_usage_err(cmd, "--local-workers is only for --local");
        return NULL;
    }
    if (cc->local && (cc->address || cc->sfile)) {
        s_usage_err(cmd, "--local starts its own cluster: it goes with neither "
                         "--scheduler nor --scheduler-file");
        return NULL;
    }
    if (cc->address && cc->sfile) {
        s_usage_err(cmd, "give --scheduler or --scheduler-file, not both");
        return NULL;
    }
    if (cc->local || cc->address || cc->sfile) {
        /* An explicit choice wins over the environment; clear it so that the
         * library cannot prefer it (with --local, NULL must mean "local"). */
        unsetenv("SHOAL_SCHEDULER");
        unsetenv("SHOAL_SCHEDULER_FILE");
    }
    if (cc->local) {
        /* The cluster's processes log to our stderr, between the commands'
         * own output: keep them to warnings unless the user asked. */
        setenv("SHOAL_LOG_LEVEL", "warn", 0);
        o.local_nworkers = (int)cc->local_workers;
        if (!cc->timeout_set)
            o.timeout = CLI_LOCAL_TIMEOUT;
        util_fmt(where, sizeof where, " (local cluster)");
    } else if (cc->address) {
        o.address = cc->address;
        util_fmt(where, sizeof where, " at %.500s", cc->address);
    } else if (cc->sfile) {
        o.scheduler_file = cc->sfile;
        util_fmt(where, sizeof where, " named in %.500s", cc->sfile);
    } else if (env_addr) {
        util_fmt(where, sizeof where, " at %.500s (from $SHOAL_SCHEDULER)", env_addr);
    } else if (env_file) {
        util_fmt(where, sizeof where, " named in %.500s (from $SHOAL_SCHEDULER_FILE)",
                 env_file);
    } else {
        fprintf(stderr,
                "%s: no scheduler given: use --scheduler ADDRESS or --scheduler-file "
                "PATH,\nor set $SHOAL_SCHEDULER or $SHOAL_SCHEDULER_FILE; --local starts "
                "a cluster on this machine for this command only\n", cmd);
        return NULL;
    }
    c = shoal_connect_opts(&o, &err);
    if (!c) {
        fprintf(stderr, "%s: cannot connect to the scheduler%s: %s\n", cmd, where,
                err.msg[0] ? err.msg : strerror(errno));
        *code = EXIT_FAIL;
        return NULL;
    }
    *code = 0;
    return c;
}

/* ------------------------------------------------------------------------ */
/* Array specs: "1-100", "1-100:2", "1,3,5-9"                                */

typedef struct range {
    uint64_t lo, hi, step;
} range_t;

typedef struct arrayspec {
    range_t *r;
    size_t n;
    uint64_t count;   /* indexes in all ranges */
} arrayspec_t;

static int s_parse_u64(const char *s, size_t len, uint64_t *out)
{
    char buf[32];
    long v;
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (buf[0] < '0' || buf[0] > '9')   /* no sign, no space */
        return -1;
    if (util_parse_long(buf, 0, LONG_MAX, &v) < 0)
        return -1;
    *out = (uint64_t)v;
    return 0;
}

/* Parse SPEC into as->r (malloc'd).  0, or -1 after printing why. */
static int s_parse_array(const char *cmd, const char *spec, arrayspec_t *as)
{
    size_t cap = 0;
    const char *p = spec;

    memset(as, 0, sizeof *as);
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *dash = memchr(p, '-', len);
        const char *colon = memchr(p, ':', len);
        range_t r = {0, 0, 1};
        uint64_t n;

        if (len == 0) {
            s_usage_err(cmd, "--array '%.100s': empty item", spec);
            goto error;
        }
        if (colon && !dash) {
            s_usage_err(cmd, "--array '%.100s': a :STEP needs a range N-M", spec);
            goto error;
        }
        if (s_parse_u64(p, dash ? (size_t)(dash - p) : len, &r.lo) < 0)
            goto bad;
        r.hi = r.lo;
        if (dash) {
            const char *hi = dash + 1;
            size_t hlen = (colon ? (size_t)(colon - hi) : len - (size_t)(hi - p));
            if (colon && colon < dash)
                goto bad;
            if (s_parse_u64(hi, hlen, &r.hi) < 0)
                goto bad;
            if (colon && s_parse_u64(colon + 1, len - (size_t)(colon + 1 - p), &r.step) < 0)
                goto bad;
            if (r.step == 0) {
                s_usage_err(cmd, "--array '%.100s': the step must be at least 1", spec);
                goto error;
            }
            if (r.hi < r.lo) {
                s_usage_err(cmd, "--array '%.100s': range %" PRIu64 "-%" PRIu64
                            " goes down", spec, r.lo, r.hi);
                goto error;
            }
        }
        n = (r.hi - r.lo) / r.step + 1;
        if (n > CLI_MAX_ARRAY || as->count + n > CLI_MAX_ARRAY) {
            s_usage_err(cmd, "--array '%.100s': more than %llu indexes", spec,
                        CLI_MAX_ARRAY);
            goto error;
        }
        as->count += n;
        if (as->n == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            range_t *nr = realloc(as->r, ncap * sizeof *nr);
            if (!nr) {
                fprintf(stderr, "%s: out of memory\n", cmd);
                goto error;
            }
            as->r = nr;
            cap = ncap;
        }
        as->r[as->n++] = r;
        if (!end)
            break;
        p = end + 1;
    }
    return 0;
bad:
    s_usage_err(cmd, "--array '%.100s': expected a comma-separated list of N, N-M or "
                "N-M:STEP (N, M >= 0)", spec);
error:
    free(as->r);
    memset(as, 0, sizeof *as);
    return -1;
}

/* ------------------------------------------------------------------------ */
/* Reading stdin line by line, bounded                                       */

typedef struct lreader {
    int fd;
    char *buf;
    size_t cap, start, end;
    size_t scan;        /* bytes after start already searched for '\n' */
    int eof;
    uint64_t lineno;    /* number of the line last returned (1-based) */
} lreader_t;

static int s_lr_init(lreader_t *lr, int fd)
{
    memset(lr, 0, sizeof *lr);
    lr->fd = fd;
    lr->cap = CLI_MAX_LINE + 1 + CLI_READ_CHUNK;
    lr->buf = malloc(lr->cap);
    return lr->buf ? 0 : -1;
}

/* 1 with the next line (without its '\n'; valid until the next call), 0 at
 * the end of the input, -1 with errno E2BIG for a line over CLI_MAX_LINE
 * bytes or a read error.  A last line without a newline still counts. */
static int s_lr_next(lreader_t *lr, const char **line, size_t *len)
{
    for (;;) {
        char *base = lr->buf + lr->start;
        char *nl = memchr(base + lr->scan, '\n', lr->end - lr->start - lr->scan);
        ssize_t r;

        if (nl) {
            size_t n = (size_t)(nl - base);
            lr->lineno++;
            if (n > CLI_MAX_LINE) {
                errno = E2BIG;
                return -1;
            }
            *line = base;
            *len = n;
            lr->start += n + 1;
            lr->scan = 0;
            return 1;
        }
        lr->scan = lr->end - lr->start;
        if (lr->scan > CLI_MAX_LINE) {
            lr->lineno++;
            errno = E2BIG;
            return -1;
        }
        if (lr->eof) {
            if (lr->scan == 0)
                return 0;
            lr->lineno++;
            *line = base;
            *len = lr->scan;
            lr->start = lr->end;
            lr->scan = 0;
            return 1;
        }
        /* Move the partial line to the front only when the tail is short, so
         * each byte is moved about once however short the lines are. */
        if (lr->start > 0 && lr->cap - lr->end < CLI_READ_CHUNK) {
            memmove(lr->buf, base, lr->end - lr->start);
            lr->end -= lr->start;
            lr->start = 0;
        }
        r = read(lr->fd, lr->buf + lr->end, lr->cap - lr->end);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            lr->eof = 1;
        else
            lr->end += (size_t)r;
    }
}

/* ------------------------------------------------------------------------ */
/* The submit/map engine                                                     */

typedef enum { SRC_SINGLE, SRC_ARRAY, SRC_LINES } src_kind_t;

typedef struct slot {
    shoal_future_t *f;
    uint64_t label;   /* array index, or line number */
} slot_t;

typedef struct job {
    const char *cmd;            /* "shoal submit" / "shoal map" */
    shoal_client_t *c;
    src_kind_t src;

    /* The command template and the task options. */
    int tpl_argc;
    char **tpl_argv;
    size_t *tpl_len;            /* strlen of each template argument */
    size_t *tpl_nph;            /* number of "{}" in each */
    int append_item;            /* map without "{}": the line is a last argument */
    char **tpl_own;             /* the template, when built here (with --env) */
    const char **env;           /* --env values */
    size_t nenv;
    const char *cwd;
    double timeout;
    shoal_submit_opts_t sopts;

    /* Item sources (producer thread only). */
    arrayspec_t arr;
    size_t arr_pos;
    uint64_t arr_cur;
    lreader_t lr;
    int single_done;

    /* One task's argv, rebuilt per item (producer thread only). */
    char *sbuf;
    size_t scap;
    const char **sargv;
    size_t *soff;

    /* The ring of futures in flight, in input order. */
    pthread_mutex_t mu;
    pthread_cond_t cv_item;     /* an item was added or the producer ended */
    pthread_cond_t cv_space;    /* an item was removed or a stop */
    slot_t *ring;
    size_t cap, head, count;
    int producer_done;
    int stop;                   /* atomic: submit nothing more, stop waiting */
    int stop_sig;               /* the signal that caused it, or 0 */
    char perr[600];             /* the producer's fatal error, if any */

    /* Results (main thread only). */
    uint64_t ndone, nfailed, nnotes;
    uint64_t failed[CLI_MAX_FAILED_KEPT];
    size_t nfailed_kept;
    int single_code;
    int werr;                   /* writing our stdout failed */
    int werrno;                 /* and why */
} job_t;

static int g_sigpipe[2] = {-1, -1};

static void s_on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    if (write(g_sigpipe[1], &b, 1) < 0) {
        /* Nothing to do in a handler; a full pipe already holds a signal. */
    }
    errno = saved;
}

static int s_stopped(job_t *j)
{
    return __atomic_load_n(&j->stop, __ATOMIC_ACQUIRE);
}

/* Stop: submit nothing more and cancel every task in flight.  The cancelled
 * futures complete, which wakes the main thread. */
static void s_job_stop(job_t *j, int sig)
{
    size_t i;
    pthread_mutex_lock(&j->mu);
    if (!j->stop) {
        j->stop_sig = sig;
        __atomic_store_n(&j->stop, 1, __ATOMIC_RELEASE);
        for (i = 0; i < j->count; i++)
            shoal_cancel(j->ring[(j->head + i) % j->cap].f);
    }
    pthread_cond_broadcast(&j->cv_space);
    pthread_cond_broadcast(&j->cv_item);
    pthread_mutex_unlock(&j->mu);
}

static void *s_sigthread(void *arg)
{
    job_t *j = arg;
    unsigned char b;
    int n = 0;

    for (;;) {
        ssize_t r = read(g_sigpipe[0], &b, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return NULL;
        if (++n > 1)
            _exit(128 + b);   /* a second signal: the user does not want to wait */
        fprintf(stderr, "\n%s: %s: cancelling the tasks in flight (again to exit now)\n",
                j->cmd, strsignal(b));
        s_job_stop(j, b);
    }
}

/* Put the default signal handling back and end the signal thread: closing
 * the pipe's write end makes its read() return 0.  The handlers go first so
 * that none writes to a closed (or reused) descriptor. */
static void s_sigthread_end(pthread_t t)
{
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    close(g_sigpipe[1]);
    pthread_join(t, NULL);
    close(g_sigpipe[0]);
    g_sigpipe[0] = g_sigpipe[1] = -1;
}

static void __attribute__((format(printf, 2, 3))) s_perr(job_t *j, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->perr, sizeof j->perr, fmt, ap);
    va_end(ap);
}

/* The next item: 1 with its text and label, 0 at the end, -1 with j->perr. */
static int s_next_item(job_t *j, const char **item, size_t *ilen, uint64_t *label,
                       char *numbuf, size_t numcap)
{
    const range_t *r;
    int rc;

    switch (j->src) {
    case SRC_SINGLE:
        if (j->single_done)
            return 0;
        j->single_done = 1;
        *item = "";
        *ilen = 0;
        *label = 0;
        return 1;
    case SRC_ARRAY:
        if (j->arr_pos >= j->arr.n)
            return 0;
        r = &j->arr.r[j->arr_pos];
        *label = j->arr_cur;
        if (r->hi - j->arr_cur >= r->step) {
            j->arr_cur += r->step;
        } else if (++j->arr_pos < j->arr.n) {
            j->arr_cur = j->arr.r[j->arr_pos].lo;
        }
        util_fmt(numbuf, numcap, "%" PRIu64, *label);
        *item = numbuf;
        *ilen = strlen(numbuf);
        return 1;
    case SRC_LINES:
        rc = s_lr_next(&j->lr, item, ilen);
        if (rc < 0) {
            if (errno == E2BIG)
                s_perr(j, "line %" PRIu64 " of the input is longer than 1 MiB; "
                       "stopped reading there", j->lr.lineno);
            else
                s_perr(j, "reading stdin: %s", strerror(errno));
            return -1;
        }
        if (rc == 0)
            return 0;
        if (memchr(*item, '\0', *ilen)) {
            s_perr(j, "line %" PRIu64 " of the input contains a NUL byte; stopped "
                   "reading there", j->lr.lineno);
            return -1;
        }
        *label = j->lr.lineno;
        return 1;
    }
    return 0;
}

/* Build the argv of one task into j->sargv, "{}" replaced by the item.
 * 0, or -1 with j->perr. */
static int s_build_argv(job_t *j, const char *item, size_t ilen)
{
    size_t need = 0, pos = 0;
    int i, n = j->tpl_argc;

    if (j->src == SRC_SINGLE) {
        for (i = 0; i < n; i++)
            j->sargv[i] = j->tpl_argv[i];
        j->sargv[n] = NULL;
        return 0;
    }
    for (i = 0; i < n; i++) {
        /* nph * ilen cannot overflow: both are bounded by a few MiB. */
        need += j->tpl_len[i] - 2 * j->tpl_nph[i] + j->tpl_nph[i] * ilen + 1;
        if (need > CLI_MAX_ARGV_BYTES)
            goto too_long;
    }
    if (j->append_item)
        need += ilen + 1;
    if (need > CLI_MAX_ARGV_BYTES)
        goto too_long;
    if (need > j->scap) {
        size_t ncap = j->scap ? j->scap : 4096;
        char *nb;
        while (ncap < need)
            ncap *= 2;
        nb = realloc(j->sbuf, ncap);
        if (!nb) {
            s_perr(j, "out of memory");
            return -1;
        }
        j->sbuf = nb;
        j->scap = ncap;
    }
    for (i = 0; i < n; i++) {
        const char *a = j->tpl_argv[i];
        j->soff[i] = pos;
        if (j->tpl_nph[i] == 0) {
            memcpy(j->sbuf + pos, a, j->tpl_len[i] + 1);
            pos += j->tpl_len[i] + 1;
            continue;
        }
        for (;;) {
            const char *ph = strstr(a, "{}");
            size_t seg = ph ? (size_t)(ph - a) : strlen(a);
            memcpy(j->sbuf + pos, a, seg);
            pos += seg;
            if (!ph)
                break;
            memcpy(j->sbuf + pos, item, ilen);
            pos += ilen;
            a = ph + 2;
        }
        j->sbuf[pos++] = '\0';
    }
    if (j->append_item) {
        j->soff[n] = pos;
        memcpy(j->sbuf + pos, item, ilen);
        pos += ilen;
        j->sbuf[pos++] = '\0';
        n++;
    }
    for (i = 0; i < n; i++)
        j->sargv[i] = j->sbuf + j->soff[i];
    j->sargv[n] = NULL;
    return 0;
too_long:
    s_perr(j, "the command for %s %.40s would be more than 16 MiB long",
           j->src == SRC_LINES ? "line" : "index", item);
    return -1;
}

static void *s_producer(void *arg)
{
    job_t *j = arg;
    char numbuf[32];

    for (;;) {
        const char *item;
        size_t ilen;
        uint64_t label;
        shoal_future_t *f;
        shoal_error_t err = {{0}};
        shoal_cmd_t cmd;

        if (s_next_item(j, &item, &ilen, &label, numbuf, sizeof numbuf) <= 0)
            break;
        if (s_build_argv(j, item, ilen) < 0)
            break;
        memset(&cmd, 0, sizeof cmd);
        cmd.argv = j->sargv;
        cmd.env = NULL;   /* the worker's own; --env goes through env(1) */
        cmd.cwd = j->cwd;
        cmd.timeout = j->timeout;

        /* Submitting under the lock orders it against a stop: once the main
         * thread has seen `stop` under this lock, nothing more is submitted,
         * so it can disconnect while this thread may still sit in read(). */
        pthread_mutex_lock(&j->mu);
        while (j->count == j->cap && !j->stop)
            pthread_cond_wait(&j->cv_space, &j->mu);
        if (j->stop) {
            pthread_mutex_unlock(&j->mu);
            break;
        }
        f = shoal_submit_cmd(j->c, &cmd, &j->sopts, &err);
        if (!f) {
            s_perr(j, "cannot submit a task: %s", err.msg[0] ? err.msg : strerror(errno));
            pthread_mutex_unlock(&j->mu);
            break;
        }
        j->ring[(j->head + j->count) % j->cap] = (slot_t){f, label};
        j->count++;
        pthread_cond_signal(&j->cv_item);
        pthread_mutex_unlock(&j->mu);
    }
    pthread_mutex_lock(&j->mu);
    j->producer_done = 1;
    pthread_cond_signal(&j->cv_item);
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

static const char *s_label_kind(const job_t *j)
{
    return j->src == SRC_LINES ? "line" : "index";
}

/* A line on stderr about one task, at most CLI_MAX_NOTES of them: when
 * every task fails (a lost scheduler, a typo in the command) a million
 * identical lines help nobody; the summary still counts them all. */
static void __attribute__((format(printf, 3, 4)))
s_note(job_t *j, const slot_t *s, const char *fmt, ...)
{
    va_list ap;
    if (j->nnotes++ >= CLI_MAX_NOTES) {
        if (j->nnotes == CLI_MAX_NOTES + 1)
            fprintf(stderr, "%s: (further task errors are not shown)\n", j->cmd);
        return;
    }
    fflush(stdout);
    if (j->src == SRC_SINGLE)
        fprintf(stderr, "%s: ", j->cmd);
    else
        fprintf(stderr, "%s: %s %" PRIu64 ": ", j->cmd, s_label_kind(j), s->label);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void s_mark_failed(job_t *j, const slot_t *s)
{
    j->nfailed++;
    if (j->nfailed_kept < CLI_MAX_FAILED_KEPT)
        j->failed[j->nfailed_kept++] = s->label;
}

/* Wait for one task and print its output.  0 when done with it, 1 if a stop
 * interrupted the wait, -1 if writing our own stdout failed. */
static int s_job_finish_one(job_t *j, const slot_t *s)
{
    shoal_cmd_result_t res;
    shoal_error_t err = {{0}};
    int rc, e;

    if (shoal_future_status(s->f) == SHOAL_PENDING && fflush(stdout) != 0)
        return -1;
    for (;;) {
        /* Wait in slices so that a stop is seen even if the library were slow
         * to complete a cancelled future. */
        rc = shoal_cmd_result(s->f, CLI_WAIT_SLICE, &res, &err);
        e = errno;
        if (rc == 0 || e != ETIMEDOUT)
            break;
        if (s_stopped(j))
            return 1;
    }
    j->ndone++;
    if (rc < 0) {
        if (s_stopped(j))
            return 1;
        s_mark_failed(j, s);
        s_note(j, s, "%s%s", e == ECANCELED ? "cancelled: " : "task failed: ",
               err.msg[0] ? err.msg : strerror(e));
        j->single_code = e == EIO ? EXIT_NORUN : EXIT_SHOAL;
        return 0;
    }
    if (res.out_len && fwrite(res.out, 1, res.out_len, stdout) != res.out_len)
        return -1;
    if (res.err_len) {
        /* Keep the order of this task's output relative to earlier ones when
         * both streams go to one terminal. */
        if (fflush(stdout) != 0)
            return -1;
        fwrite(res.err, 1, res.err_len, stderr);
    }
    if (res.timed_out) {
        s_mark_failed(j, s);
        if (j->timeout > 0)
            s_note(j, s, "timed out after %g s and was killed", j->timeout);
        else
            s_note(j, s, "timed out and was killed");
        j->single_code = EXIT_TIMEOUT;
    } else if (res.signal) {
        s_mark_failed(j, s);
        s_note(j, s, "killed by signal %d (%s)", res.signal, strsignal(res.signal));
        j->single_code = 128 + res.signal;
    } else {
        if (res.exit_code != 0)
            s_mark_failed(j, s);
        j->single_code = res.exit_code & 0xff;
    }
    return 0;
}

/* "3,5-9,12": consecutive labels as ranges. */
static void s_print_failed(const job_t *j)
{
    size_t i = 0;
    while (i < j->nfailed_kept) {
        size_t k = i;
        while (k + 1 < j->nfailed_kept && j->failed[k + 1] == j->failed[k] + 1)
            k++;
        if (k == i)
            fprintf(stderr, "%s%" PRIu64, i ? "," : "", j->failed[i]);
        else
            fprintf(stderr, "%s%" PRIu64 "-%" PRIu64, i ? "," : "", j->failed[i],
                    j->failed[k]);
        i = k + 1;
    }
    if (j->nfailed > j->nfailed_kept)
        fprintf(stderr, " and %" PRIu64 " more", j->nfailed - j->nfailed_kept);
}

/* After a stop: cancel and drop what is left, disconnect (stopping a local
 * cluster) and exit at once: the producer may be blocked reading stdin. */
static void __attribute__((noreturn)) s_job_abort(job_t *j, int code)
{
    size_t i;
    pthread_mutex_lock(&j->mu);
    for (i = 0; i < j->count; i++) {
        shoal_future_t *f = j->ring[(j->head + i) % j->cap].f;
        shoal_cancel(f);
        shoal_release(f);
    }
    j->count = 0;
    shoal_disconnect(j->c);
    j->c = NULL;
    pthread_mutex_unlock(&j->mu);
    fflush(stdout);
    fflush(stderr);
    _exit(code);
}

/* Run the job to the end; returns the exit status. */
static int s_job_run(job_t *j)
{
    pthread_t prod, sigt;
    struct sigaction sa;
    int rc;

    if (pipe(g_sigpipe) < 0) {
        fprintf(stderr, "%s: pipe: %s\n", j->cmd, strerror(errno));
        return EXIT_SHOAL;
    }
    rc = pthread_create(&sigt, NULL, s_sigthread, j);
    if (rc == 0) {
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = s_on_signal;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
    }
    if (rc != 0) {
        fprintf(stderr, "%s: cannot start a thread: %s\n", j->cmd, strerror(rc));
        return EXIT_SHOAL;
    }
    rc = pthread_create(&prod, NULL, s_producer, j);
    if (rc != 0) {
        fprintf(stderr, "%s: cannot start a thread: %s\n", j->cmd, strerror(rc));
        s_sigthread_end(sigt);
        return EXIT_SHOAL;
    }
    for (;;) {
        slot_t s;
        int r;

        pthread_mutex_lock(&j->mu);
        if (j->count == 0 && !j->producer_done && !j->stop) {
            /* About to sleep: what is printed so far should be visible. */
            pthread_mutex_unlock(&j->mu);
            if (fflush(stdout) != 0) {
                j->werr = 1;
                j->werrno = errno;
            }
            pthread_mutex_lock(&j->mu);
            while (j->count == 0 && !j->producer_done && !j->stop && !j->werr)
                pthread_cond_wait(&j->cv_item, &j->mu);
        }
        if (j->stop || j->werr || j->count == 0) {
            pthread_mutex_unlock(&j->mu);
            break;
        }
        s = j->ring[j->head];
        pthread_mutex_unlock(&j->mu);

        r = s_job_finish_one(j, &s);
        if (r < 0)
            j->werrno = errno;

        pthread_mutex_lock(&j->mu);
        j->head = (j->head + 1) % j->cap;
        j->count--;
        pthread_cond_signal(&j->cv_space);
        pthread_mutex_unlock(&j->mu);
        shoal_release(s.f);
        if (r < 0) {
            j->werr = 1;
            break;
        }
        if (r > 0)
            break;
    }
    if (!j->werr && fflush(stdout) != 0) {
        j->werr = 1;
        j->werrno = errno;
    }
    if (j->werr) {
        /* A closed pipe (`| head`) is a normal way to stop reading: quiet. */
        if (j->werrno != EPIPE)
            fprintf(stderr, "%s: writing the output: %s\n", j->cmd, strerror(j->werrno));
        s_job_stop(j, 0);
        s_job_abort(j, EXIT_FAIL);
    }
    if (s_stopped(j))
        s_job_abort(j, 128 + (j->stop_sig ? j->stop_sig : SIGINT));
    pthread_join(prod, NULL);
    s_sigthread_end(sigt);

    if (j->src == SRC_SINGLE) {
        if (j->perr[0]) {
            fprintf(stderr, "%s: %s\n", j->cmd, j->perr);
            return EXIT_SHOAL;
        }
        return j->single_code;
    }
    if (j->nfailed) {
        fprintf(stderr, "%s: %" PRIu64 " of %" PRIu64 " tasks failed (%s%s ", j->cmd,
                j->nfailed, j->ndone, s_label_kind(j),
                j->nfailed > 1 ? (j->src == SRC_LINES ? "s" : "es") : "");
        s_print_failed(j);
        fprintf(stderr, ")\n");
    }
    /* Last, so that it is what the user sees: the input was not all run. */
    if (j->perr[0])
        fprintf(stderr, "%s: %s\n", j->cmd, j->perr);
    return j->nfailed || j->perr[0] ? EXIT_FAIL : 0;
}

/* ------------------------------------------------------------------------ */
/* shoal submit / shoal map                                                  */

static int s_check_env(const char *cmd, const char *kv)
{
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv) {
        s_usage_err(cmd, "--env '%.100s': expected NAME=VALUE", kv);
        return -1;
    }
    return 0;
}

/* Note a cluster with no worker: tasks would wait silently otherwise. */
static void s_check_workers(const char *cmd, shoal_client_t *c, const conn_cfg_t *cc)
{
    shoal_status_info_t st;
    shoal_error_t err = {{0}};

    if (cc->local) {
        /* The local cluster's workers are starting; wait for one to say so. */
        if (shoal_wait_for_workers(c, 1, CLI_LOCAL_TIMEOUT, &err) < 0)
            fprintf(stderr, "%s: warning: no local worker came up: %s\n", cmd, err.msg);
        return;
    }
    memset(&st, 0, sizeof st);
    if (shoal_status(c, &st, cc->timeout_set ? cc->timeout : CLI_CONNECT_TIMEOUT,
                     &err) < 0)
        return;   /* not worth failing for: the tasks will tell */
    if (st.nworkers == 0)
        fprintf(stderr, "%s: note: no worker is connected to the scheduler yet; the "
                        "tasks wait until one joins\n", cmd);
    shoal_status_free(&st);
}

static int s_cmd_tasks(int argc, char **argv, int is_map)
{
    const char *cmd = is_map ? "shoal map" : "shoal submit";
    const optdef_t *defs = is_map ? s_map_opts : s_submit_opts;
    optparse_t p = {cmd, argc, argv, 1, NULL};
    conn_cfg_t cc;
    job_t *j;
    const char *array = NULL;
    long pending = CLI_DEFAULT_PENDING, retries = 0;
    int id, code = EXIT_USAGE, i, nph_total = 0;

    memset(&cc, 0, sizeof cc);
    j = calloc(1, sizeof *j);
    if (!j) {
        fprintf(stderr, "%s: out of memory\n", cmd);
        return EXIT_FAIL;
    }
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv_item, NULL);
    pthread_cond_init(&j->cv_space, NULL);
    j->cmd = cmd;
    j->env = calloc(CLI_MAX_ENV + 1, sizeof *j->env);
    if (!j->env) {
        fprintf(stderr, "%s: out of memory\n", cmd);
        goto out;
    }
    while ((id = s_opt_next(&p, defs)) != 0) {
        int r;
        if (id < 0)
            goto out;
        if (id == O_HELP) {
            fputs(is_map ? s_map_help : s_submit_help, stdout);
            code = 0;
            goto out;
        }
        r = s_conn_opt(cmd, &cc, id, p.val);
        if (r < 0)
            goto out;
        if (r > 0)
            continue;
        switch (id) {
        case O_ARRAY:
            array = p.val;
            break;
        case O_TIMEOUT:
            if (s_parse_secs(cmd, "--timeout", p.val, &j->timeout) < 0)
                goto out;
            break;
        case O_ENV:
            if (s_check_env(cmd, p.val) < 0)
                goto out;
            if (j->nenv == CLI_MAX_ENV) {
                s_usage_err(cmd, "more than %d --env options", CLI_MAX_ENV);
                goto out;
            }
            j->env[j->nenv++] = p.val;
            break;
        case O_CWD:
            if (p.val[0] == '\0') {
                s_usage_err(cmd, "--cwd: empty directory name");
                goto out;
            }
            j->cwd = p.val;
            break;
        case O_RETRIES:
            if (s_parse_count(cmd, "--retries", p.val, 0, 1000, &retries) < 0)
                goto out;
            break;
        case O_PENDING:
            if (s_parse_count(cmd, "--max-pending", p.val, 1, CLI_MAX_PENDING,
                              &pending) < 0)
                goto out;
            break;
        default:
            s_usage_err(cmd, "unexpected option");
            goto out;
        }
    }
    if (p.i >= argc) {
        s_usage_err(cmd, "no command given: put it after the options, after `--`");
        goto out;
    }
    if (argv[p.i][0] == '\0') {
        s_usage_err(cmd, "the command name is empty");
        goto out;
    }
    if (j->nenv == 0) {
        j->tpl_argc = argc - p.i;
        j->tpl_argv = argv + p.i;
    } else {
        /* shoal.cmd's "env" replaces the whole environment, which would take
         * PATH, HOME and the rest away from the command.  What a user of
         * --env means is "the worker's environment plus these", which is
         * what `env -- K=V... CMD ARGS...` does on the worker. */
        size_t k, n = 0;
        if (strchr(argv[p.i], '=')) {
            s_usage_err(cmd, "with --env, the command name cannot contain '='");
            goto out;
        }
        j->tpl_own = calloc(j->nenv + 2 + (size_t)(argc - p.i) + 1, sizeof *j->tpl_own);
        if (!j->tpl_own) {
            fprintf(stderr, "%s: out of memory\n", cmd);
            code = EXIT_FAIL;
            goto out;
        }
        j->tpl_own[n++] = "env";
        j->tpl_own[n++] = "--";
        for (k = 0; k < j->nenv; k++)
            j->tpl_own[n++] = (char *)j->env[k];
        for (i = p.i; i < argc; i++)
            j->tpl_own[n++] = argv[i];
        j->tpl_argc = (int)n;
        j->tpl_argv = j->tpl_own;
    }
    j->tpl_len = calloc((size_t)j->tpl_argc, sizeof *j->tpl_len);
    j->tpl_nph = calloc((size_t)j->tpl_argc, sizeof *j->tpl_nph);
    j->sargv = calloc((size_t)j->tpl_argc + 2, sizeof *j->sargv);
    j->soff = calloc((size_t)j->tpl_argc + 2, sizeof *j->soff);
    if (!j->tpl_len || !j->tpl_nph || !j->sargv || !j->soff) {
        fprintf(stderr, "%s: out of memory\n", cmd);
        code = EXIT_FAIL;
        goto out;
    }
    for (i = 0; i < j->tpl_argc; i++) {
        const char *a = j->tpl_argv[i];
        j->tpl_len[i] = strlen(a);
        while ((a = strstr(a, "{}")) != NULL) {
            j->tpl_nph[i]++;
            nph_total++;
            a += 2;
        }
    }
    if (is_map) {
        j->src = SRC_LINES;
        j->append_item = nph_total == 0;
        if (s_lr_init(&j->lr, STDIN_FILENO) < 0) {
            fprintf(stderr, "%s: out of memory\n", cmd);
            code = EXIT_FAIL;
            goto out;
        }
        j->cap = (size_t)pending;
    } else if (array) {
        if (s_parse_array(cmd, array, &j->arr) < 0)
            goto out;
        j->src = SRC_ARRAY;
        j->arr_cur = j->arr.r[0].lo;
        j->cap = j->arr.count < (uint64_t)pending ? (size_t)j->arr.count : (size_t)pending;
    } else {
        j->src = SRC_SINGLE;
        j->cap = 1;
    }
    j->ring = calloc(j->cap, sizeof *j->ring);
    if (!j->ring) {
        fprintf(stderr, "%s: out of memory (--max-pending %ld)\n", cmd, pending);
        code = EXIT_FAIL;
        goto out;
    }
    j->sopts.retries = (int)retries;

    j->c = s_connect(cmd, &cc, &code);
    if (!j->c) {
        if (code == EXIT_FAIL && !is_map && !array)
            code = EXIT_SHOAL;
        goto out;
    }
    s_check_workers(cmd, j->c, &cc);
    if (is_map && isatty(STDIN_FILENO))
        fprintf(stderr, "%s: reading one task per line from the terminal "
                        "(end with Ctrl-D)\n", cmd);
    code = s_job_run(j);
    shoal_disconnect(j->c);
    j->c = NULL;
out:
    free(j->arr.r);
    free(j->lr.buf);
    free(j->ring);
    free(j->env);
    free(j->tpl_own);
    free(j->tpl_len);
    free(j->tpl_nph);
    free(j->sargv);
    free(j->soff);
    free(j->sbuf);
    pthread_cond_destroy(&j->cv_space);
    pthread_cond_destroy(&j->cv_item);
    pthread_mutex_destroy(&j->mu);
    free(j);
    return code;
}

/* ------------------------------------------------------------------------ */
/* shoal status                                                              */

/* A JSON string; the bytes come from the network, so escape everything. */
static void s_json_str(FILE *out, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    fputc('"', out);
    for (; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\t': fputs("\\t", out); break;
        case '\r': fputs("\\r", out); break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                fprintf(out, "\\u%04x", *p);
            else
                fputc(*p, out);
        }
    }
    fputc('"', out);
}

/* A name for a table cell: control characters from the network become '?'. */
static void s_clean(char *dst, size_t cap, const char *src)
{
    size_t i;
    for (i = 0; i + 1 < cap && src[i]; i++)
        dst[i] = ((unsigned char)src[i] < 0x20 || src[i] == 0x7f) ? '?' : src[i];
    dst[i] = '\0';
}

static void s_status_json(shoal_client_t *c, const shoal_status_info_t *st)
{
    int i;
    printf("{\"scheduler\": ");
    s_json_str(stdout, shoal_client_address(c));
    printf(", \"nworkers\": %d, \"threads\": %d, \"clients\": %d,\n", st->nworkers,
           st->nthreads, st->nclients);
    printf(" \"tasks\": {\"waiting\": %" PRIu64 ", \"ready\": %" PRIu64
           ", \"processing\": %" PRIu64 ", \"memory\": %" PRIu64 ", \"erred\": %" PRIu64
           ", \"total\": %" PRIu64 "},\n",
           st->waiting, st->ready, st->processing, st->memory, st->erred, st->total);
    printf(" \"workers\": [");
    for (i = 0; i < st->nworkers; i++) {
        const shoal_worker_info_t *w = &st->workers[i];
        printf("%s\n  {\"name\": ", i ? "," : "");
        s_json_str(stdout, w->name);
        printf(", \"host\": ");
        s_json_str(stdout, w->host);
        printf(", \"pid\": %d, \"threads\": %d, \"running\": %d, \"completed\": %" PRIu64
               "}", w->pid, w->nthreads, w->running, w->completed);
    }
    printf("%s]}\n", st->nworkers ? "\n " : "");
}

static void s_status_table(shoal_client_t *c, const shoal_status_info_t *st)
{
    int i, wn = 4, wh = 4;
    char name[128], host[128];

    s_clean(name, sizeof name, shoal_client_address(c));
    printf("scheduler  %s\n", name);
    printf("workers    %d (%d thread%s in all)\n", st->nworkers, st->nthreads,
           st->nthreads == 1 ? "" : "s");
    printf("clients    %d (this one included)\n", st->nclients);
    printf("tasks      waiting %" PRIu64 ", ready %" PRIu64 ", processing %" PRIu64
           ", memory %" PRIu64 ", erred %" PRIu64 " (total %" PRIu64 ")\n",
           st->waiting, st->ready, st->processing, st->memory, st->erred, st->total);
    if (st->nworkers == 0)
        return;
    for (i = 0; i < st->nworkers; i++) {
        int n = (int)strnlen(st->workers[i].name, sizeof st->workers[i].name);
        int h = (int)strnlen(st->workers[i].host, sizeof st->workers[i].host);
        wn = n > wn ? n : wn;
        wh = h > wh ? h : wh;
    }
    printf("\n%-*s  %-*s  %8s  %7s  %7s  %10s\n", wn, "NAME", wh, "HOST", "PID",
           "THREADS", "RUNNING", "COMPLETED");
    for (i = 0; i < st->nworkers; i++) {
        const shoal_worker_info_t *w = &st->workers[i];
        s_clean(name, sizeof name, w->name);
        s_clean(host, sizeof host, w->host);
        printf("%-*s  %-*s  %8d  %7d  %7d  %10" PRIu64 "\n", wn, name, wh, host, w->pid,
               w->nthreads, w->running, w->completed);
    }
}

static int s_cmd_status(int argc, char **argv)
{
    const char *cmd = "shoal status";
    optparse_t p = {cmd, argc, argv, 1, NULL};
    conn_cfg_t cc;
    shoal_client_t *c;
    shoal_status_info_t st;
    shoal_error_t err = {{0}};
    int id, json = 0, code;

    memset(&cc, 0, sizeof cc);
    while ((id = s_opt_next(&p, s_status_opts)) != 0) {
        int r;
        if (id < 0)
            return EXIT_USAGE;
        if (id == O_HELP) {
            fputs(s_status_help, stdout);
            return 0;
        }
        if (id == O_JSON) {
            json = 1;
            continue;
        }
        r = s_conn_opt(cmd, &cc, id, p.val);
        if (r < 0)
            return EXIT_USAGE;
    }
    if (p.i < argc) {
        s_usage_err(cmd, "unexpected argument '%.100s'", argv[p.i]);
        return EXIT_USAGE;
    }
    c = s_connect(cmd, &cc, &code);
    if (!c)
        return code;
    if (cc.local)
        shoal_wait_for_workers(c, 1, CLI_LOCAL_TIMEOUT, NULL);
    memset(&st, 0, sizeof st);
    if (shoal_status(c, &st, cc.timeout_set ? cc.timeout : CLI_CONNECT_TIMEOUT,
                     &err) < 0) {
        fprintf(stderr, "%s: the scheduler did not answer: %s\n", cmd,
                err.msg[0] ? err.msg : strerror(errno));
        shoal_disconnect(c);
        return EXIT_FAIL;
    }
    if (json)
        s_status_json(c, &st);
    else
        s_status_table(c, &st);
    shoal_status_free(&st);
    shoal_disconnect(c);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "%s: writing the output: %s\n", cmd, strerror(errno));
        return EXIT_FAIL;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* shoal graph                                                               */

/* What the signal thread of `graph` works on. */
typedef struct gwait {
    const char *cmd;
    shoal_future_t **fs;
    size_t n;
    int stop;   /* atomic: the signal that asked us to stop, or 0 */
} gwait_t;

static void *s_graph_sigthread(void *arg)
{
    gwait_t *gw = arg;
    unsigned char b;
    int n = 0;

    for (;;) {
        ssize_t r = read(g_sigpipe[0], &b, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return NULL;
        if (++n > 1)
            _exit(128 + b);
        fprintf(stderr, "\n%s: %s: cancelling the graph (again to exit now)\n", gw->cmd,
                strsignal(b));
        __atomic_store_n(&gw->stop, (int)b, __ATOMIC_RELEASE);
        for (size_t i = 0; i < gw->n; i++)
            shoal_cancel(gw->fs[i]);
    }
}

/* A key for a `KEY = VALUE` line: control characters become '?'. */
static void s_print_key(const char *key)
{
    char buf[SHOAL_GRAPH_MAX_KEY + 1];
    s_clean(buf, sizeof buf, key);
    fputs(buf, stdout);
}

/* Print the outcome of the wanted keys.  0 if all succeeded, else 1. */
static int s_graph_print(const char *cmd, const char *const *want, shoal_future_t **fs,
                         size_t n, int json)
{
    size_t nok = 0;
    int code = 0;

    if (json)
        fputc('{', stdout);
    for (size_t i = 0; i < n; i++) {
        msgpack_object obj;
        shoal_error_t err = {{0}};
        if (shoal_result_object(fs[i], 0, &obj, &err) < 0) {
            fprintf(stderr, "%s: %s\n", cmd, err.msg);
            code = EXIT_FAIL;
            continue;
        }
        if (json) {
            if (nok)
                fputs(", ", stdout);
            json_write_string(stdout, want[i], strlen(want[i]));
            fputs(": ", stdout);
        } else if (n > 1) {
            s_print_key(want[i]);
            fputs(" = ", stdout);
        }
        json_write_msgpack(stdout, &obj);
        if (!json)
            fputc('\n', stdout);
        nok++;
    }
    if (json)
        fputs("}\n", stdout);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "%s: writing the output: %s\n", cmd, strerror(errno));
        code = EXIT_FAIL;
    }
    return code;
}

/* Wait for the futures; a signal cancels them.  Returns 0, or 128+signal. */
static int s_graph_wait(gwait_t *gw)
{
    struct sigaction sa;
    pthread_t sigt;
    int rc, sig;

    if (pipe(g_sigpipe) < 0) {
        /* Not worth failing for: wait without the Ctrl-C handling. */
        shoal_wait(gw->fs, gw->n, SHOAL_ALL_COMPLETED, -1, NULL);
        return 0;
    }
    rc = pthread_create(&sigt, NULL, s_graph_sigthread, gw);
    if (rc != 0) {
        close(g_sigpipe[0]);
        close(g_sigpipe[1]);
        g_sigpipe[0] = g_sigpipe[1] = -1;
        shoal_wait(gw->fs, gw->n, SHOAL_ALL_COMPLETED, -1, NULL);
        return 0;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    while (shoal_wait(gw->fs, gw->n, SHOAL_ALL_COMPLETED, CLI_WAIT_SLICE, NULL) < 0 &&
           !__atomic_load_n(&gw->stop, __ATOMIC_ACQUIRE)) {
    }
    sig = __atomic_load_n(&gw->stop, __ATOMIC_ACQUIRE);
    if (sig)   /* let the cancellations arrive, within reason */
        shoal_wait(gw->fs, gw->n, SHOAL_ALL_COMPLETED, 5.0, NULL);
    s_sigthread_end(sigt);
    return sig ? 128 + sig : 0;
}

static int s_cmd_graph(int argc, char **argv)
{
    const char *cmd = "shoal graph";
    optparse_t p = {cmd, argc, argv, 1, NULL};
    conn_cfg_t cc;
    shoal_client_t *c = NULL;
    shoal_graph_t *g = NULL;
    shoal_error_t err = {{0}};
    const char **libs = calloc((size_t)argc + 1, sizeof *libs);
    const char **want = calloc((size_t)argc + 1, sizeof *want);
    shoal_future_t **fs = NULL;
    size_t nlibs = 0, nwant = 0;
    int id, json = 0, nocheck = 0, code = EXIT_USAGE;
    const char *file;

    memset(&cc, 0, sizeof cc);
    if (!libs || !want) {
        fprintf(stderr, "%s: out of memory\n", cmd);
        code = EXIT_FAIL;
        goto out;
    }
    while ((id = s_opt_next(&p, s_graph_opts)) != 0) {
        int r;
        if (id < 0)
            goto out;
        switch (id) {
        case O_HELP:
            fputs(s_graph_help, stdout);
            code = 0;
            goto out;
        case O_JSON:
            json = 1;
            continue;
        case O_NO_FUNC_CHECK:
            nocheck = 1;
            continue;
        case O_LIBRARY:
            if (p.val[0] == '\0') {
                s_usage_err(cmd, "--library: empty path");
                goto out;
            }
            libs[nlibs++] = p.val;
            continue;
        case O_GET:
            if (p.val[0] == '\0') {
                s_usage_err(cmd, "--get: empty key");
                goto out;
            }
            want[nwant++] = p.val;
            continue;
        default:
            break;
        }
        r = s_conn_opt(cmd, &cc, id, p.val);
        if (r < 0)
            goto out;
        if (r == 0) {
            s_usage_err(cmd, "unexpected option");
            goto out;
        }
    }
    if (p.i >= argc) {
        s_usage_err(cmd, "no graph file given");
        goto out;
    }
    if (p.i + 1 < argc) {
        s_usage_err(cmd, "one graph file at a time (unexpected '%.100s')", argv[p.i + 1]);
        goto out;
    }
    file = argv[p.i];

    /* Everything that can be wrong with the graph is found before connecting. */
    g = shoal_graph_load_json(file, &err);
    if (!g) {
        fprintf(stderr, "%s: %s\n", cmd, err.msg);
        code = errno == ENOMEM ? EXIT_FAIL : EXIT_USAGE;
        goto out;
    }
    if (shoal_graph_size(g) == 0) {
        fprintf(stderr, "%s: %.500s: the graph is empty: nothing to compute\n", cmd, file);
        goto out;
    }
    if ((nocheck ? shoal_graph_check(g, NULL, 0, &err)
                 : shoal_graph_check_libraries(g, libs, nlibs, &err)) < 0) {
        fprintf(stderr, "%s: %.500s: %s\n", cmd, file, err.msg);
        if (errno == ENOENT && !nocheck)
            fprintf(stderr, "%s: give the library that has it with --library PATH, or "
                            "--no-function-check if the workers load it themselves\n", cmd);
        code = errno == ENOMEM ? EXIT_FAIL : EXIT_USAGE;
        goto out;
    }
    if (nwant == 0) {
        size_t ns = shoal_graph_sinks(g, NULL, 0);
        free(want);
        want = calloc(ns + 1, sizeof *want);
        if (!want || ns == 0) {
            fprintf(stderr, "%s: %s\n", cmd, want ? "the graph has no key that nothing "
                                                    "refers to" : "out of memory");
            code = want ? EXIT_USAGE : EXIT_FAIL;
            goto out;
        }
        nwant = shoal_graph_sinks(g, want, ns);
    }
    for (size_t i = 0; i < nwant; i++) {
        if (!shoal_graph_has(g, want[i])) {
            fprintf(stderr, "%s: --get %.300s: no such key in %.500s\n", cmd, want[i], file);
            goto out;
        }
    }
    fs = calloc(nwant, sizeof *fs);
    if (!fs) {
        fprintf(stderr, "%s: out of memory\n", cmd);
        code = EXIT_FAIL;
        goto out;
    }

    c = s_connect(cmd, &cc, &code);
    if (!c)
        goto out;
    code = EXIT_FAIL;
    for (size_t i = 0; i < nlibs; i++) {
        if (shoal_upload_library(c, libs[i], &err) < 0) {
            fprintf(stderr, "%s: uploading %.500s: %s\n", cmd, libs[i], err.msg);
            goto out;
        }
    }
    s_check_workers(cmd, c, &cc);
    if (shoal_graph_submit(c, g, want, nwant, fs, &err) < 0) {
        fprintf(stderr, "%s: cannot submit the graph: %s\n", cmd, err.msg);
        goto out;
    }
    {
        gwait_t gw = {cmd, fs, nwant, 0};
        int sig = s_graph_wait(&gw);
        code = sig ? sig : s_graph_print(cmd, want, fs, nwant, json);
    }
out:
    if (fs)
        for (size_t i = 0; i < nwant; i++)
            shoal_release(fs[i]);
    shoal_disconnect(c);
    shoal_graph_destroy(g);
    free(fs);
    free(libs);
    free(want);
    return code;
}

/* ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    const char *sub;

    /* A closed stdout is seen as a write error and handled (cancel, clean up),
     * rather than killing us with tasks in flight and a local cluster up. */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        fputs(s_main_help, stderr);
        return EXIT_USAGE;
    }
    sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        fputs(s_main_help, stdout);
        return 0;
    }
    if (strcmp(sub, "help") == 0) {
        const char *t = argc > 2 ? argv[2] : "";
        fputs(strcmp(t, "submit") == 0 ? s_submit_help
              : strcmp(t, "map") == 0  ? s_map_help
              : strcmp(t, "status") == 0 ? s_status_help
              : strcmp(t, "graph") == 0 ? s_graph_help : s_main_help, stdout);
        return 0;
    }
    if (strcmp(sub, "--version") == 0 || strcmp(sub, "version") == 0) {
        printf("shoal %s\n", SHOAL_VERSION);
        return 0;
    }
    if (strcmp(sub, "submit") == 0)
        return s_cmd_tasks(argc - 1, argv + 1, 0);
    if (strcmp(sub, "map") == 0)
        return s_cmd_tasks(argc - 1, argv + 1, 1);
    if (strcmp(sub, "status") == 0)
        return s_cmd_status(argc - 1, argv + 1);
    if (strcmp(sub, "graph") == 0)
        return s_cmd_graph(argc - 1, argv + 1);
    if (sub[0] == '-')
        fprintf(stderr, "shoal: unknown option '%.100s' (see 'shoal --help')\n", sub);
    else
        fprintf(stderr, "shoal: unknown command '%.100s' (commands: submit, map, status, graph; "
                        "see 'shoal --help')\n", sub);
    return EXIT_USAGE;
}
