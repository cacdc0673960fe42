/*
 * main.c - `shoal-ssh HOST [HOST...]`: a shoal cluster over ssh.
 *
 * The scheduler runs on the first host and the workers on the others (and on
 * the first too with --worker-on-scheduler, or when there is only one host),
 * each through the system ssh client (remote.h).  The workers are started
 * once the scheduler has logged its address, so that they can be given it
 * directly; its port comes from that log line, which makes --scheduler-port 0
 * work.  Every line the remote processes print is shown prefixed by its host.
 *
 * Stopping remote processes.  Without a terminal, sshd does not pass signals
 * on, and when the connection ends it does not kill the session's processes
 * either.  So every remote command runs under a small sh wrapper (S_WRAPPER)
 * that starts the command in the background and watches the session's stdin:
 * when it reaches end of file - because we closed it, or because ssh died and
 * sshd tore the session down - the wrapper sends the command SIGTERM (an
 * orderly exit for the scheduler and the workers), and SIGKILL if it is still
 * there 20 seconds later.  When the command ends by itself, the wrapper exits
 * with its status, which ssh passes back to us.
 *
 * Shutdown (SIGINT, SIGTERM, SIGHUP, or the scheduler ending): close the
 * stdin of every ssh client, wait up to --stop-timeout for them to exit, then
 * SIGTERM the ssh clients still there (ssh then closes the connection, which
 * also ends the remote sessions), and SIGKILL them 5 seconds later.  A second
 * signal skips the wait.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ev.h>

#include "log.h"
#include "remote.h"
#include "sshutil.h"
#include "util.h"

/* shoal.h has a comment containing a comment opener; -Wcomment would stop
 * the -Werror build (as in scheduler/main.c). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wcomment"
#include "shoal.h"
#pragma GCC diagnostic pop

#define PROG "shoal-ssh"
#define EXIT_FAIL 1
#define EXIT_USAGE 2

#define MAX_SSH_OPTS 64
#define MAX_LIBRARIES 64
#define MAX_OPT_LEN 1024
#define MAX_PATH_ARG 4096
#define MAX_PREFIX 1024
#define REMOTE_CMD_MAX 16384
#define KILL_GRACE 5.0
#define NAME_MAX_LEN 100

/* The remote wrapper, run as: sh -c S_WRAPPER shoal-ssh DIR PROGRAM ARGS...
 * It must stay one line without single quotes: it is put in single quotes
 * in a command line that the user's login shell (sh, bash, zsh or csh)
 * reads.  fd 3 keeps the session's stdin for the watcher, because an
 * asynchronous list otherwise reads /dev/null; the command itself gets
 * /dev/null.  The watcher's output goes to /dev/null so that it does not
 * hold the session open once the command is gone. */
static const char S_WRAPPER[] =
    "d=$1; shift; "
    "if [ -n \"$d\" ]; then mkdir -p -- \"$d\" && cd -- \"$d\" || exit 126; fi; "
    "exec 3<&0 </dev/null; "
    "\"$@\" 3<&- & p=$!; "
    "{ cat >/dev/null; kill -TERM $p; n=0; "
    "while [ $n -lt 20 ] && kill -0 $p; do sleep 1; n=$((n+1)); done; "
    "kill -KILL $p; } <&3 >/dev/null 2>&1 & w=$!; "
    "exec 3<&-; wait $p; r=$?; kill $w 2>/dev/null; exit $r";

typedef struct opts {
    ssh_hostlist_t hosts;
    long ssh_port;                 /* 0: ssh's default */
    const char *ssh_opts[MAX_SSH_OPTS];
    size_t nssh_opts;
    const char *identity;
    long connect_timeout;
    long nthreads, nworkers;       /* 0: not given */
    char prefix[MAX_PREFIX + 1];
    long sched_port;
    const char *sched_host;        /* --scheduler-host */
    const char *sfile;
    int worker_on_sched;           /* -1: default */
    const char *local_dir;
    const char *libs[MAX_LIBRARIES];
    size_t nlibs;
    const char *log_level;
    double start_timeout, stop_timeout;
    int dry_run;
} opts_t;

enum { ROLE_SCHED, ROLE_WORKER };
enum { PHASE_STARTING, PHASE_RUNNING, PHASE_STOPPING };

typedef struct node {
    int role;
    const char *dest;              /* as given: [user@]host */
    char name[NAME_MAX_LEN + 16];  /* worker name, "" for the default */
    remote_t *r;
} node_t;

typedef struct app {
    struct ev_loop *loop;
    opts_t *o;
    node_t *nodes;
    size_t nnodes;
    int phase;
    int rc;
    int stop_stage;                /* 0 waiting, 1 SIGTERM sent, 2 SIGKILL sent */
    char address[SHOAL_ADDR_MAX];
    int sfile_written;
    ev_signal sig[3];
    ev_timer start_timer, stop_timer;
} app_t;

/* --- usage and option checks --------------------------------------------------- */

static int s_self_prefix(char *out, size_t cap);

static void s_usage(FILE *f)
{
    char prefix[MAX_PREFIX + 1];

    if (s_self_prefix(prefix, sizeof prefix) < 0)
        memcpy(prefix, "?", 2);
    fprintf(f,
        "usage: " PROG " [options] HOST [HOST...]\n"
        "\n"
        "Start a shoal cluster over ssh: the scheduler on the first HOST, workers on\n"
        "the others.  HOST is [user@]name-or-address.  Every remote line is shown as\n"
        "\"[HOST] line\".  Ctrl-C or SIGTERM stops every remote process.\n"
        "\n"
        "options:\n"
        "  --hostfile FILE          read hosts from FILE (one per line, '#' comments),\n"
        "                           after those on the command line\n"
        "  --ssh-port N             ssh port on the hosts (default: ssh's)\n"
        "  --ssh-option OPT         pass -o OPT to ssh (repeatable, up to %d); these\n"
        "                           come first, so they override the defaults below\n"
        "  --ssh-identity FILE      pass -i FILE to ssh\n"
        "  --connect-timeout S      ssh ConnectTimeout in seconds (default 5)\n"
        "  --nthreads N             threads per worker process (default: the worker's)\n"
        "  --nworkers M             worker processes per host (default 1)\n"
        "  --remote-prefix DIR      where shoal is installed on the hosts: runs\n"
        "                           DIR/bin/shoal-scheduler and DIR/bin/shoal-worker\n"
        "                           (default: this program's own prefix, %s)\n"
        "  --scheduler-port P       scheduler port (default %d; 0: any free port)\n"
        "  --scheduler-host ADDR    bind the scheduler to ADDR and give workers ADDR\n"
        "                           (default: bind every interface; workers use the\n"
        "                           first HOST's name)\n"
        "  --scheduler-file PATH    write the scheduler's address here (JSON), locally\n"
        "  --worker-on-scheduler    also run workers on the first host (the default\n"
        "                           when only one host is given)\n"
        "  --local-directory DIR    working directory of the remote processes (made if\n"
        "                           missing; default: the remote login directory)\n"
        "  --library PATH.so        task library for the workers, a path on the hosts\n"
        "                           (repeatable)\n"
        "  --log-level LEVEL        error, warn, info or debug, for the workers (the\n"
        "                           scheduler logs at info at least: its address)\n"
        "  --start-timeout S        wait this long for the scheduler (default 60)\n"
        "  --stop-timeout S         on stop, wait this long for remote processes before\n"
        "                           killing the ssh clients (default 15)\n"
        "  --dry-run                print the ssh commands and exit\n"
        "  --help, --version\n"
        "\n"
        "exit status: 0 stopped by a signal, 1 the scheduler could not start or ended,\n"
        "2 bad usage.\n",
        MAX_SSH_OPTS, prefix, SHOAL_DEFAULT_PORT);
}

static int s_bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int s_bad(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, PROG ": %s\nTry '" PROG " --help'.\n", msg);
    return EXIT_USAGE;
}

/* A value going into a command line: bounded, no control characters. */
static int s_ok_value(const char *s, size_t max)
{
    size_t n = strnlen(s, max + 1);
    return n > 0 && n <= max && !ssh_has_control(s);
}

static int s_parse_seconds(const char *s, double min, double max, double *out)
{
    double v;
    if (util_parse_duration(s, &v) < 0 || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* The installation prefix of this program: /P/bin/shoal-ssh -> /P. */
static int s_self_prefix(char *out, size_t cap)
{
    char buf[PATH_MAX];
    char *slash;

    if (!realpath("/proc/self/exe", buf))
        return -1;
    for (int i = 0; i < 2; i++) {
        slash = strrchr(buf, '/');
        if (!slash)
            return -1;
        *slash = '\0';
    }
    if (!buf[0])
        memcpy(buf, "/", 2);
    return util_fmt(out, cap, "%s", buf);
}

/* --- building the commands ------------------------------------------------------- */

/* Argument vectors with the strings they own. */
typedef struct argv_buf {
    char *v[2 * MAX_SSH_OPTS + 32];
    char *owned[2 * MAX_SSH_OPTS + 32];
    size_t n, nowned;
} argv_buf_t;

static void s_argv_add(argv_buf_t *a, const char *s)
{
    if (a->n < sizeof a->v / sizeof a->v[0] - 1)
        a->v[a->n++] = (char *)s;
    a->v[a->n] = NULL;
}

static int s_argv_add_copy(argv_buf_t *a, const char *s)
{
    char *c = strdup(s);
    if (!c)
        return -1;
    a->owned[a->nowned++] = c;
    s_argv_add(a, c);
    return 0;
}

static void s_argv_free(argv_buf_t *a)
{
    for (size_t i = 0; i < a->nowned; i++)
        free(a->owned[i]);
    a->n = a->nowned = 0;
}

/* The remote command line for node nd, for the login shell on its host.
 * `address` is the scheduler's (workers only).  0, or -1 if too long. */
static int s_remote_cmd(const opts_t *o, const node_t *nd, const char *address, char *out,
                        size_t cap)
{
    char prog[MAX_PREFIX + 64], num[32];
    sbuf_t b;

    sbuf_init(&b, out, cap);
    sbuf_add(&b, "exec sh -c ");
    sbuf_quote(&b, S_WRAPPER);
    sbuf_add(&b, " shoal-ssh ");
    sbuf_quote(&b, o->local_dir ? o->local_dir : "");
    if (nd->role == ROLE_SCHED) {
        snprintf(prog, sizeof prog, "%s/bin/shoal-scheduler", o->prefix);
        sbuf_add(&b, " ");
        sbuf_quote(&b, prog);
        snprintf(num, sizeof num, "%ld", o->sched_port);
        sbuf_add(&b, " --port ");
        sbuf_add(&b, num);
        if (o->sched_host) {
            sbuf_add(&b, " --host ");
            sbuf_quote(&b, o->sched_host);
        }
    } else {
        snprintf(prog, sizeof prog, "%s/bin/shoal-worker", o->prefix);
        sbuf_add(&b, " ");
        sbuf_quote(&b, prog);
        sbuf_add(&b, " ");
        sbuf_quote(&b, address);
        if (o->nthreads) {
            snprintf(num, sizeof num, "%ld", o->nthreads);
            sbuf_add(&b, " --nthreads ");
            sbuf_add(&b, num);
        }
        if (o->nworkers) {
            snprintf(num, sizeof num, "%ld", o->nworkers);
            sbuf_add(&b, " --nworkers ");
            sbuf_add(&b, num);
        }
        if (nd->name[0]) {
            sbuf_add(&b, " --name ");
            sbuf_quote(&b, nd->name);
        }
        for (size_t i = 0; i < o->nlibs; i++) {
            sbuf_add(&b, " --library ");
            sbuf_quote(&b, o->libs[i]);
        }
    }
    if (nd->role == ROLE_SCHED) {
        /* We learn the port from the scheduler's "scheduler at" line, an
         * info record: never let a quieter level (or $SHOAL_LOG_LEVEL on
         * the host) hide it. */
        sbuf_add(&b, " --log-level ");
        sbuf_add(&b, o->log_level && !strcmp(o->log_level, "debug") ? "debug" : "info");
    } else if (o->log_level) {
        sbuf_add(&b, " --log-level ");
        sbuf_quote(&b, o->log_level);
    }
    return b.overflow ? -1 : 0;
}

/* The ssh command for node nd.  0, or -1 (message logged). */
static int s_ssh_argv(const opts_t *o, const node_t *nd, const char *address, argv_buf_t *a)
{
    char remote[REMOTE_CMD_MAX], buf[MAX_OPT_LEN + 32];

    memset(a, 0, sizeof *a);
    if (s_remote_cmd(o, nd, address, remote, sizeof remote) < 0) {
        log_err("the remote command for %s is longer than %d bytes", nd->dest,
                REMOTE_CMD_MAX);
        return -1;
    }
    s_argv_add(a, "ssh");
    /* No terminal: remote processes get no signal from sshd without one,
     * which the wrapper deals with; and a terminal would mangle output. */
    s_argv_add(a, "-T");
    /* The user's options first: for -o, ssh keeps the first value it sees. */
    for (size_t i = 0; i < o->nssh_opts; i++) {
        s_argv_add(a, "-o");
        s_argv_add(a, o->ssh_opts[i]);
    }
    s_argv_add(a, "-o");
    s_argv_add(a, "BatchMode=yes");
    snprintf(buf, sizeof buf, "ConnectTimeout=%ld", o->connect_timeout);
    s_argv_add(a, "-o");
    if (s_argv_add_copy(a, buf) < 0)
        goto oom;
    /* A connection that dies silently (host down, network cut) is noticed
     * within 45 s, and ssh's exit stops the remote side. */
    s_argv_add(a, "-o");
    s_argv_add(a, "ServerAliveInterval=15");
    s_argv_add(a, "-o");
    s_argv_add(a, "ServerAliveCountMax=3");
    if (o->ssh_port) {
        snprintf(buf, sizeof buf, "%ld", o->ssh_port);
        s_argv_add(a, "-p");
        if (s_argv_add_copy(a, buf) < 0)
            goto oom;
    }
    if (o->identity) {
        s_argv_add(a, "-i");
        s_argv_add(a, o->identity);
    }
    /* "--": nothing after it is an ssh option, whatever the host. */
    s_argv_add(a, "--");
    s_argv_add(a, nd->dest);
    if (s_argv_add_copy(a, remote) < 0)
        goto oom;
    return 0;
oom:
    log_err("out of memory");
    s_argv_free(a);
    return -1;
}

/* The address workers are given: tcp://HOST:PORT. */
static int s_make_address(const opts_t *o, long port, char *out, size_t cap)
{
    const char *h = o->sched_host ? o->sched_host : ssh_host_part(o->hosts.host[0]);
    return util_fmt(out, cap, ssh_host_is_ipv6(h) ? "tcp://[%s]:%ld" : "tcp://%s:%ld", h,
                    port);
}

/* --- the nodes ----------------------------------------------------------------------- */

/* Scheduler first, then the workers.  Worker names are the host names, made
 * unique with -2, -3... when a host is listed more than once. */
static int s_plan(app_t *app)
{
    opts_t *o = app->o;
    size_t nh = o->hosts.n, k = 0;
    int on_sched = o->worker_on_sched >= 0 ? o->worker_on_sched : nh == 1;

    app->nodes = calloc(nh + 1, sizeof *app->nodes);
    if (!app->nodes)
        return -1;
    app->nodes[k].role = ROLE_SCHED;
    app->nodes[k++].dest = o->hosts.host[0];
    for (size_t i = on_sched ? 0 : 1; i < nh; i++) {
        node_t *nd = &app->nodes[k++];
        const char *h = ssh_host_part(o->hosts.host[i]);
        int seen = 0;

        nd->role = ROLE_WORKER;
        nd->dest = o->hosts.host[i];
        for (size_t j = 0; j < i; j++)
            if (!strcmp(ssh_host_part(o->hosts.host[j]), h))
                seen++;
        if (strlen(h) <= NAME_MAX_LEN) {
            if (seen)
                snprintf(nd->name, sizeof nd->name, "%s-%d", h, seen + 1);
            else
                snprintf(nd->name, sizeof nd->name, "%s", h);
        }
    }
    app->nnodes = k;
    return 0;
}

static size_t s_running_workers(const app_t *app)
{
    size_t n = 0;
    for (size_t i = 0; i < app->nnodes; i++)
        if (app->nodes[i].role == ROLE_WORKER && remote_running(app->nodes[i].r))
            n++;
    return n;
}

static size_t s_running(const app_t *app)
{
    size_t n = 0;
    for (size_t i = 0; i < app->nnodes; i++)
        if (remote_running(app->nodes[i].r))
            n++;
    return n;
}

/* A wait status in words, with a hint for the usual causes. */
static void s_describe(int status, char *out, size_t cap)
{
    if (WIFSIGNALED(status)) {
        snprintf(out, cap, "ssh killed by signal %d", WTERMSIG(status));
        return;
    }
    switch (WEXITSTATUS(status)) {
    case 255:
        snprintf(out, cap, "ssh failed (exit status 255: cannot connect or log in)");
        break;
    case 127:
        snprintf(out, cap, "exit status 127: command not found (is shoal installed "
                           "there? see --remote-prefix)");
        break;
    case 126:
        snprintf(out, cap, "exit status 126: cannot enter --local-directory or run "
                           "the command");
        break;
    default:
        snprintf(out, cap, "exit status %d", WEXITSTATUS(status));
        break;
    }
}

/* --- stopping ------------------------------------------------------------------------ */

static void s_finish_if_done(app_t *app)
{
    if (app->phase == PHASE_STOPPING && s_running(app) == 0)
        ev_break(app->loop, EVBREAK_ALL);
}

static void s_kill_all(app_t *app, int sig)
{
    for (size_t i = 0; i < app->nnodes; i++)
        remote_kill(app->nodes[i].r, sig);
}

static void s_stop_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    app_t *app = w->data;

    (void)revents;
    if (app->stop_stage == 0) {
        log_warn("remote processes still running after %.0f s: stopping the ssh "
                 "clients (%zu left)", app->o->stop_timeout, s_running(app));
        s_kill_all(app, SIGTERM);
        app->stop_stage = 1;
        ev_timer_set(w, KILL_GRACE, 0);
        ev_timer_start(loop, w);
    } else if (app->stop_stage == 1) {
        log_warn("ssh clients still running: killing them");
        s_kill_all(app, SIGKILL);
        app->stop_stage = 2;
    }
}

static void s_begin_stop(app_t *app)
{
    if (app->phase == PHASE_STOPPING)
        return;
    app->phase = PHASE_STOPPING;
    ev_timer_stop(app->loop, &app->start_timer);
    for (size_t i = 0; i < app->nnodes; i++)
        remote_close_stdin(app->nodes[i].r);
    if (s_running(app) > 0)
        log_info("stopping %zu remote process%s", s_running(app),
                 s_running(app) == 1 ? "" : "es");
    ev_timer_init(&app->stop_timer, s_stop_timer_cb, app->o->stop_timeout, 0);
    app->stop_timer.data = app;
    ev_timer_start(app->loop, &app->stop_timer);
    s_finish_if_done(app);
}

static void s_signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    app_t *app = w->data;

    (void)loop;
    (void)revents;
    if (app->phase != PHASE_STOPPING) {
        log_info("signal %d: stopping the cluster", w->signum);
        s_begin_stop(app);
        return;
    }
    /* Asked again: do not wait for the remote side. */
    ev_timer_stop(app->loop, &app->stop_timer);
    if (app->stop_stage == 0) {
        log_warn("signal %d again: stopping the ssh clients now", w->signum);
        s_kill_all(app, SIGTERM);
        app->stop_stage = 1;
        ev_timer_set(&app->stop_timer, KILL_GRACE, 0);
        ev_timer_start(app->loop, &app->stop_timer);
    } else {
        log_warn("signal %d again: killing the ssh clients", w->signum);
        s_kill_all(app, SIGKILL);
        app->stop_stage = 2;
    }
}

/* --- running --------------------------------------------------------------------------- */

static void s_line_cb(remote_t *r, const char *line, size_t len, void *arg);
static void s_exit_cb(remote_t *r, int status, void *arg);

static int s_start_node(app_t *app, node_t *nd)
{
    static const remote_ops_t ops = {.line = s_line_cb, .exited = s_exit_cb};
    argv_buf_t a;

    if (s_ssh_argv(app->o, nd, app->address, &a) < 0)
        return -1;
    nd->r = remote_start(app->loop, nd->dest, a.v, &ops, nd);
    s_argv_free(&a);
    if (!nd->r) {
        log_err("cannot start ssh for %s: %s", nd->dest, strerror(errno));
        return -1;
    }
    return 0;
}

static app_t s_app;

static void s_start_workers(app_t *app)
{
    size_t n = 0, failed = 0;

    for (size_t i = 0; i < app->nnodes; i++) {
        node_t *nd = &app->nodes[i];
        if (nd->role != ROLE_WORKER)
            continue;
        if (s_start_node(app, nd) < 0)
            failed++;
        else
            n++;
    }
    if (n)
        log_info("starting workers on %zu host%s", n, n == 1 ? "" : "s");
    else if (!failed)
        log_warn("no worker hosts: the scheduler runs alone (give more hosts, or "
                 "--worker-on-scheduler)");
}

/* "... scheduler at tcp://H:P ..." -> P, or -1. */
static long s_port_from_line(const char *line)
{
    const char *p = strstr(line, "scheduler at tcp://"), *end, *colon = NULL;
    char port[8];
    long v;

    if (!p)
        return -1;
    p += strlen("scheduler at ");
    for (end = p; *end && *end != ' ' && *end != '\t'; end++)
        if (*end == ':')
            colon = end;
    if (!colon || colon < p + strlen("tcp://") || (size_t)(end - colon - 1) >= sizeof port ||
        end == colon + 1)
        return -1;
    memcpy(port, colon + 1, (size_t)(end - colon - 1));
    port[end - colon - 1] = '\0';
    if (util_parse_long(port, 1, 65535, &v) < 0)
        return -1;
    return v;
}

static void s_scheduler_ready(app_t *app, long port)
{
    opts_t *o = app->o;

    if (s_make_address(o, port, app->address, sizeof app->address) < 0) {
        log_err("scheduler address too long");
        app->rc = EXIT_FAIL;
        s_begin_stop(app);
        return;
    }
    ev_timer_stop(app->loop, &app->start_timer);
    app->phase = PHASE_RUNNING;
    if (o->sfile) {
        if (util_sfile_write(o->sfile, app->address) < 0) {
            log_err("cannot write the scheduler file %s: %s", o->sfile, strerror(errno));
            app->rc = EXIT_FAIL;
            s_begin_stop(app);
            return;
        }
        app->sfile_written = 1;
    }
    printf("scheduler at %s\n", app->address);
    fflush(stdout);
    s_start_workers(app);
}

static void s_line_cb(remote_t *r, const char *line, size_t len, void *arg)
{
    node_t *nd = arg;
    app_t *app = &s_app;
    char out[REMOTE_LINE_MAX + SSH_HOST_MAX + 8];
    sbuf_t b;

    sbuf_init(&b, out, sizeof out);
    sbuf_add(&b, "[");
    sbuf_add(&b, remote_label(r));
    sbuf_add(&b, "] ");
    sbuf_addn(&b, line, len);
    sbuf_add(&b, "\n");
    /* Whole lines in one write, so that our own records never split them. */
    fflush(stdout);
    if (util_write_all(STDOUT_FILENO, out, b.len) < 0 && errno != EPIPE)
        log_debug("cannot write to stdout: %s", strerror(errno));
    if (nd->role == ROLE_SCHED && app->phase == PHASE_STARTING) {
        long port = s_port_from_line(line);
        if (port > 0)
            s_scheduler_ready(app, port);
    }
}

static void s_exit_cb(remote_t *r, int status, void *arg)
{
    node_t *nd = arg;
    app_t *app = &s_app;
    char what[256];

    s_describe(status, what, sizeof what);
    if (nd->role == ROLE_SCHED) {
        if (app->phase == PHASE_STARTING) {
            log_err("cannot start the scheduler on %s: %s%s%s", remote_label(r), what,
                    remote_last_line(r)[0] ? ": " : "", remote_last_line(r));
            app->rc = EXIT_FAIL;
            s_begin_stop(app);
        } else if (app->phase == PHASE_RUNNING) {
            log_err("the scheduler on %s ended (%s): stopping the workers", remote_label(r),
                    what);
            app->rc = EXIT_FAIL;
            s_begin_stop(app);
        } else {
            log_info("the scheduler on %s stopped", remote_label(r));
        }
    } else if (app->phase == PHASE_RUNNING) {
        size_t left = s_running_workers(app);
        log_err("workers on %s gone after %.1f s: %s%s%s; the cluster goes on with %zu "
                "worker host%s", remote_label(r), remote_age(r), what,
                remote_last_line(r)[0] ? ": " : "", remote_last_line(r), left,
                left == 1 ? "" : "s");
    } else {
        log_info("workers on %s stopped", remote_label(r));
    }
    s_finish_if_done(app);
}

static void s_start_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    app_t *app = w->data;

    (void)loop;
    (void)revents;
    if (app->phase != PHASE_STARTING)
        return;
    log_err("the scheduler on %s did not report its address within %.0f s",
            app->nodes[0].dest, app->o->start_timeout);
    app->rc = EXIT_FAIL;
    s_begin_stop(app);
}

/* Remove the scheduler file if it still names our scheduler. */
static void s_remove_sfile(const app_t *app)
{
    char addr[SHOAL_ADDR_MAX], err[256];

    if (!app->sfile_written)
        return;
    if (util_sfile_read(app->o->sfile, 0, addr, sizeof addr, err, sizeof err) == 0 &&
        strcmp(addr, app->address) != 0)
        return;
    if (unlink(app->o->sfile) < 0 && errno != ENOENT)
        log_warn("cannot remove %s: %s", app->o->sfile, strerror(errno));
}

/* Each remote holds two descriptors: make sure they fit. */
static int s_check_fds(size_t nnodes)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 0;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < 2 * nnodes + 64) {
        log_err("%zu hosts need %zu open files, but the limit is %llu (ulimit -n)", nnodes,
                2 * nnodes + 64, (unsigned long long)rl.rlim_cur);
        return -1;
    }
    return 0;
}

static int s_dry_run(app_t *app)
{
    char line[REMOTE_CMD_MAX * 2];

    if (app->o->sched_port)
        s_make_address(app->o, app->o->sched_port, app->address, sizeof app->address);
    else
        util_fmt(app->address, sizeof app->address, "%s", "tcp://HOST:PORT");
    for (size_t i = 0; i < app->nnodes; i++) {
        node_t *nd = &app->nodes[i];
        argv_buf_t a;
        sbuf_t b;

        if (s_ssh_argv(app->o, nd, app->address, &a) < 0)
            return EXIT_FAIL;
        sbuf_init(&b, line, sizeof line);
        for (size_t k = 0; k < a.n; k++) {
            if (k)
                sbuf_add(&b, " ");
            sbuf_quote(&b, a.v[k]);
        }
        s_argv_free(&a);
        printf("# %s on %s\n%s\n", nd->role == ROLE_SCHED ? "scheduler" : "workers", nd->dest,
               b.overflow ? "(too long to print)" : line);
    }
    return 0;
}

/* --- options --------------------------------------------------------------------------- */

enum {
    OPT_HOSTFILE = 256, OPT_SSH_PORT, OPT_SSH_OPTION, OPT_SSH_IDENTITY, OPT_CONNECT_TIMEOUT,
    OPT_NTHREADS, OPT_NWORKERS, OPT_PREFIX, OPT_SCHED_PORT, OPT_SCHED_HOST, OPT_SFILE,
    OPT_WORKER_ON_SCHED, OPT_LOCAL_DIR, OPT_LIBRARY, OPT_LOG_LEVEL, OPT_START_TIMEOUT,
    OPT_STOP_TIMEOUT, OPT_DRY_RUN, OPT_HELP, OPT_VERSION,
};

static const struct option s_longopts[] = {
    {"hostfile", required_argument, NULL, OPT_HOSTFILE},
    {"ssh-port", required_argument, NULL, OPT_SSH_PORT},
    {"ssh-option", required_argument, NULL, OPT_SSH_OPTION},
    {"ssh-identity", required_argument, NULL, OPT_SSH_IDENTITY},
    {"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},
    {"nthreads", required_argument, NULL, OPT_NTHREADS},
    {"nworkers", required_argument, NULL, OPT_NWORKERS},
    {"remote-prefix", required_argument, NULL, OPT_PREFIX},
    {"scheduler-port", required_argument, NULL, OPT_SCHED_PORT},
    {"scheduler-host", required_argument, NULL, OPT_SCHED_HOST},
    {"scheduler-file", required_argument, NULL, OPT_SFILE},
    {"worker-on-scheduler", no_argument, NULL, OPT_WORKER_ON_SCHED},
    {"local-directory", required_argument, NULL, OPT_LOCAL_DIR},
    {"library", required_argument, NULL, OPT_LIBRARY},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"start-timeout", required_argument, NULL, OPT_START_TIMEOUT},
    {"stop-timeout", required_argument, NULL, OPT_STOP_TIMEOUT},
    {"dry-run", no_argument, NULL, OPT_DRY_RUN},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

/* Returns -1 to go on, else an exit status. */
static int s_parse(int argc, char **argv, opts_t *o)
{
    const char *hostfiles[16];
    size_t nhostfiles = 0;
    char why[512];
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", s_longopts, NULL)) != -1) {
        switch (c) {
        case OPT_HOSTFILE:
            if (nhostfiles >= sizeof hostfiles / sizeof hostfiles[0])
                return s_bad("too many --hostfile options (at most 16)");
            if (!s_ok_value(optarg, MAX_PATH_ARG))
                return s_bad("--hostfile: invalid path");
            hostfiles[nhostfiles++] = optarg;
            break;
        case OPT_SSH_PORT:
            if (util_parse_long(optarg, 1, 65535, &o->ssh_port) < 0)
                return s_bad("--ssh-port: '%s' is not a port from 1 to 65535", optarg);
            break;
        case OPT_SSH_OPTION:
            if (o->nssh_opts >= MAX_SSH_OPTS)
                return s_bad("too many --ssh-option options (at most %d)", MAX_SSH_OPTS);
            if (!s_ok_value(optarg, MAX_OPT_LEN) || optarg[0] == '-')
                return s_bad("--ssh-option: expected KEY=VALUE of at most %d characters "
                             "without control characters", MAX_OPT_LEN);
            o->ssh_opts[o->nssh_opts++] = optarg;
            break;
        case OPT_SSH_IDENTITY:
            if (!s_ok_value(optarg, MAX_PATH_ARG))
                return s_bad("--ssh-identity: invalid path");
            if (access(optarg, R_OK) < 0)
                return s_bad("--ssh-identity: %s: %s", optarg, strerror(errno));
            o->identity = optarg;
            break;
        case OPT_CONNECT_TIMEOUT:
            if (util_parse_long(optarg, 1, 600, &o->connect_timeout) < 0)
                return s_bad("--connect-timeout: '%s' is not a number of seconds from 1 "
                             "to 600", optarg);
            break;
        case OPT_NTHREADS:
            if (util_parse_long(optarg, 1, 1024, &o->nthreads) < 0)
                return s_bad("--nthreads: '%s' is not a number from 1 to 1024", optarg);
            break;
        case OPT_NWORKERS:
            if (util_parse_long(optarg, 1, 1024, &o->nworkers) < 0)
                return s_bad("--nworkers: '%s' is not a number from 1 to 1024", optarg);
            break;
        case OPT_PREFIX:
            if (!s_ok_value(optarg, MAX_PREFIX) || optarg[0] != '/')
                return s_bad("--remote-prefix: expected an absolute path of at most %d "
                             "characters", MAX_PREFIX);
            util_fmt(o->prefix, sizeof o->prefix, "%s", optarg);
            /* "/opt/shoal/" and "/opt/shoal" alike. */
            for (size_t n = strlen(o->prefix); n > 1 && o->prefix[n - 1] == '/'; n--)
                o->prefix[n - 1] = '\0';
            break;
        case OPT_SCHED_PORT:
            if (util_parse_long(optarg, 0, 65535, &o->sched_port) < 0)
                return s_bad("--scheduler-port: '%s' is not a port from 0 to 65535",
                             optarg);
            break;
        case OPT_SCHED_HOST:
            if (strchr(optarg, '@') || !ssh_host_valid(optarg, why, sizeof why))
                return s_bad("--scheduler-host: invalid address '%s'%s%s", optarg,
                             strchr(optarg, '@') ? "" : ": ", strchr(optarg, '@') ? "" : why);
            o->sched_host = optarg;
            break;
        case OPT_SFILE:
            if (!s_ok_value(optarg, MAX_PATH_ARG))
                return s_bad("--scheduler-file: invalid path");
            o->sfile = optarg;
            break;
        case OPT_WORKER_ON_SCHED:
            o->worker_on_sched = 1;
            break;
        case OPT_LOCAL_DIR:
            if (!s_ok_value(optarg, MAX_PATH_ARG))
                return s_bad("--local-directory: invalid path");
            o->local_dir = optarg;
            break;
        case OPT_LIBRARY:
            if (o->nlibs >= MAX_LIBRARIES)
                return s_bad("too many --library options (at most %d)", MAX_LIBRARIES);
            if (!s_ok_value(optarg, MAX_PATH_ARG))
                return s_bad("--library: invalid path");
            o->libs[o->nlibs++] = optarg;
            break;
        case OPT_LOG_LEVEL:
            if (strcmp(optarg, "error") && strcmp(optarg, "warn") && strcmp(optarg, "info") &&
                strcmp(optarg, "debug"))
                return s_bad("--log-level: '%s' is not one of error, warn, info, debug",
                             optarg);
            o->log_level = optarg;
            break;
        case OPT_START_TIMEOUT:
            if (s_parse_seconds(optarg, 1, 3600, &o->start_timeout) < 0)
                return s_bad("--start-timeout: '%s' is not a duration from 1 s to 1 h",
                             optarg);
            break;
        case OPT_STOP_TIMEOUT:
            if (s_parse_seconds(optarg, 0, 3600, &o->stop_timeout) < 0)
                return s_bad("--stop-timeout: '%s' is not a duration up to 1 h", optarg);
            break;
        case OPT_DRY_RUN:
            o->dry_run = 1;
            break;
        case OPT_HELP:
            s_usage(stdout);
            return 0;
        case OPT_VERSION:
            printf(PROG " %s\n", SHOAL_VERSION);
            return 0;
        case ':':
            return s_bad("option '%s' needs a value", argv[optind - 1]);
        default:
            if (optopt)
                return s_bad("unknown option '-%c'", optopt);
            return s_bad("unknown option '%s'", argv[optind - 1]);
        }
    }
    for (int i = optind; i < argc; i++)
        if (ssh_hostlist_add(&o->hosts, argv[i], why, sizeof why) < 0)
            return s_bad("%s", why);
    for (size_t i = 0; i < nhostfiles; i++)
        if (ssh_hostlist_read(&o->hosts, hostfiles[i], why, sizeof why) < 0)
            return s_bad("--hostfile: %s", why);
    if (o->hosts.n == 0)
        return s_bad("no hosts: give HOST arguments or --hostfile FILE");
    if (!o->prefix[0] && s_self_prefix(o->prefix, sizeof o->prefix) < 0)
        return s_bad("cannot find this program's prefix: give --remote-prefix");
    if (ssh_has_control(o->prefix))
        return s_bad("--remote-prefix: invalid path");
    return -1;
}

int main(int argc, char **argv)
{
    static opts_t o;
    app_t *app = &s_app;
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    int rc;

    log_init(PROG);
    o.connect_timeout = 5;
    o.sched_port = SHOAL_DEFAULT_PORT;
    o.worker_on_sched = -1;
    o.start_timeout = 60;
    o.stop_timeout = 15;
    rc = s_parse(argc, argv, &o);
    if (rc >= 0) {
        ssh_hostlist_free(&o.hosts);
        return rc;
    }
    app->o = &o;
    if (s_plan(app) < 0) {
        log_err("out of memory");
        rc = EXIT_FAIL;
        goto out;
    }
    if (o.dry_run) {
        rc = s_dry_run(app);
        goto out;
    }
    if (s_check_fds(app->nnodes) < 0) {
        rc = EXIT_FAIL;
        goto out;
    }
    /* A closed stdout (`| head`) must not kill us before we stop the hosts. */
    signal(SIGPIPE, SIG_IGN);
    app->loop = ev_default_loop(EVFLAG_AUTO);
    if (!app->loop) {
        log_err("cannot create the event loop");
        rc = EXIT_FAIL;
        goto out;
    }
    for (size_t i = 0; i < 3; i++) {
        ev_signal_init(&app->sig[i], s_signal_cb, sigs[i]);
        app->sig[i].data = app;
        ev_signal_start(app->loop, &app->sig[i]);
    }
    app->phase = PHASE_STARTING;
    log_info("starting the scheduler on %s (%s/bin/shoal-scheduler)", app->nodes[0].dest,
             o.prefix);
    if (s_start_node(app, &app->nodes[0]) < 0) {
        rc = EXIT_FAIL;
        goto out;
    }
    ev_timer_init(&app->start_timer, s_start_timer_cb, o.start_timeout, 0);
    app->start_timer.data = app;
    ev_timer_start(app->loop, &app->start_timer);

    ev_run(app->loop, 0);

    for (size_t i = 0; i < 3; i++)
        ev_signal_stop(app->loop, &app->sig[i]);
    ev_timer_stop(app->loop, &app->start_timer);
    ev_timer_stop(app->loop, &app->stop_timer);
    s_remove_sfile(app);
    rc = app->rc;
    if (rc == 0)
        log_info("all remote processes stopped");
out:
    for (size_t i = 0; i < app->nnodes; i++)
        remote_destroy(app->nodes[i].r);
    free(app->nodes);
    ssh_hostlist_free(&o.hosts);
    return rc;
}
