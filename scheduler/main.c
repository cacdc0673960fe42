/*
 * main.c - shoal-scheduler: options, signals, the scheduler file, the loop.
 * The work is in server.c (network) and state.c (task graph).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include "log.h"
#include "proto.h"
#include "server.h"
#include "util.h"

#include "shoal.h"

#define PROG "shoal-scheduler"
#define EXIT_USAGE 2

static void s_usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " [options]\n"
            "\n"
            "The shoal scheduler: workers and clients connect to it; it owns the task\n"
            "graph and decides where each task runs.\n"
            "\n"
            "options:\n"
            "  --host H                 bind and advertise H (default: bind every interface,\n"
            "                           advertise the first non-loopback IPv4 address)\n"
            "  --port P                 TCP port (default %d; 0 picks a free one)\n"
            "  --scheduler-file PATH    write {\"address\": ...} JSON here once listening;\n"
            "                           removed on exit\n"
            "  --worker-ttl SECONDS     drop a worker silent this long (default 10; clients 3x)\n"
            "  --max-message-size SIZE  largest frame accepted, e.g. 1GiB (default), 64MiB\n"
            "  --log-level LEVEL        error, warn, info (default) or debug\n"
            "  --help                   this text\n"
            "  --version                print the version\n",
            SHOAL_DEFAULT_PORT);
}

static void s_die_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, PROG ": ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see " PROG " --help)\n");
    exit(EXIT_USAGE);
}

/* Host names and addresses only: letters, digits, . - _ : (IPv6) and *. */
static int s_valid_host(const char *h)
{
    size_t n = strlen(h);
    if (n == 0 || n > 200)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_' || c == ':' || c == '*'))
            return 0;
    }
    return 1;
}

static int s_got_signal;

static void s_signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    server_t *srv = w->data;
    log_info("signal %d: shutting down", w->signum);
    s_got_signal = 1;
    server_shutdown(srv);
    ev_break(loop, EVBREAK_ALL);
}

/* Remove the scheduler file if it still names us (another scheduler may
 * have taken the path over since). */
static void s_remove_sfile(const char *path, const char *address)
{
    char addr[SHOAL_ADDR_MAX], err[256];
    if (util_sfile_read(path, 0, addr, sizeof addr, err, sizeof err) == 0 &&
        strcmp(addr, address) != 0) {
        log_warn("scheduler file %s now names %s; leaving it", path, addr);
        return;
    }
    if (unlink(path) < 0 && errno != ENOENT)
        log_warn("cannot remove scheduler file %s: %s", path, strerror(errno));
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'p'},
        {"scheduler-file", required_argument, NULL, 'f'},
        {"worker-ttl", required_argument, NULL, 't'},
        {"max-message-size", required_argument, NULL, 'm'},
        {"log-level", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *host = NULL, *sfile = NULL;
    long port = SHOAL_DEFAULT_PORT;
    double ttl = 10.0;
    uint64_t max_msg = (uint64_t)PROTO_DEFAULT_MAX_FRAME;
    int level = -1;

    log_init(PROG);
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case 'H':
            if (!s_valid_host(optarg))
                s_die_usage("invalid --host '%s' (a host name or address)", optarg);
            host = optarg;
            break;
        case 'p':
            if (util_parse_long(optarg, 0, 65535, &port) < 0)
                s_die_usage("invalid --port '%s' (0 to 65535)", optarg);
            break;
        case 'f':
            if (!*optarg || strlen(optarg) >= 4096)
                s_die_usage("invalid --scheduler-file '%s'", optarg);
            sfile = optarg;
            break;
        case 't':
            if (util_parse_duration(optarg, &ttl) < 0 || !(ttl > 0) || ttl > 86400)
                s_die_usage("invalid --worker-ttl '%s' (seconds, more than 0, at most a day)",
                            optarg);
            break;
        case 'm':
            if (util_parse_size(optarg, &max_msg) < 0 || max_msg < (64u << 10) ||
                max_msg > (uint64_t)INT64_MAX)
                s_die_usage("invalid --max-message-size '%s' (at least 64KiB)", optarg);
            break;
        case 'l':
            if (!strcmp(optarg, "error"))
                level = LOG_LVL_ERROR;
            else if (!strcmp(optarg, "warn") || !strcmp(optarg, "warning"))
                level = LOG_LVL_WARN;
            else if (!strcmp(optarg, "info"))
                level = LOG_LVL_INFO;
            else if (!strcmp(optarg, "debug"))
                level = LOG_LVL_DEBUG;
            else
                s_die_usage("invalid --log-level '%s' (error, warn, info or debug)", optarg);
            break;
        case 'h':
            s_usage(stdout);
            return 0;
        case 'V':
            printf(PROG " %s\n", SHOAL_VERSION);
            return 0;
        case ':':
            s_die_usage("option '%s' needs a value", argv[optind - 1]);
            break;
        default:
            s_die_usage("unknown option '%s'", argv[optind - 1]);
            break;
        }
    }
    if (optind < argc)
        s_die_usage("unexpected argument '%s'", argv[optind]);
    if (level >= 0)
        log_set_level(level);

    signal(SIGPIPE, SIG_IGN);
    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    if (!loop) {
        log_err("cannot create the event loop");
        return 1;
    }
    char err[512];
    server_opts_t opts = {
        .loop = loop, .host = host, .port = (int)port, .worker_ttl = ttl,
        .max_msg = (int64_t)max_msg,
    };
    server_t *srv = server_create(&opts, err, sizeof err);
    if (!srv) {
        log_err("%s", err);
        return 1;
    }
    /* A copy: the file is removed after the server is gone. */
    char address[SHOAL_ADDR_MAX];
    snprintf(address, sizeof address, "%s", server_address(srv));
    if (sfile && util_sfile_write(sfile, address) < 0) {
        log_err("cannot write scheduler file %s: %s", sfile, strerror(errno));
        server_destroy(srv);
        return 1;
    }
    log_info("scheduler at %s", address);

    ev_signal sigint, sigterm;
    ev_signal_init(&sigint, s_signal_cb, SIGINT);
    ev_signal_init(&sigterm, s_signal_cb, SIGTERM);
    sigint.data = sigterm.data = srv;
    ev_signal_start(loop, &sigint);
    ev_signal_start(loop, &sigterm);
    /* The signal watchers alone must not keep the loop running: if the
     * server stops by itself (its socket failed), ev_run returns. */
    ev_unref(loop);
    ev_unref(loop);

    ev_run(loop, 0);

    ev_ref(loop);
    ev_ref(loop);
    ev_signal_stop(loop, &sigint);
    ev_signal_stop(loop, &sigterm);
    /* If the loop ended without a signal, a socket failed. */
    int rc = s_got_signal ? 0 : 1;
    server_shutdown(srv);
    server_destroy(srv);
    if (sfile)
        s_remove_sfile(sfile, address);
    ev_loop_destroy(loop);
    return rc;
}
