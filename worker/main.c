/*
 * main.c - `shoal-worker`: command line, then either one worker (worker.h)
 * or, with --nworkers M > 1, a supervisor of M worker processes
 * (supervisor.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shoal.h"

#include "log.h"
#include "proto.h"
#include "supervisor.h"
#include "tasklib.h"
#include "util.h"
#include "worker.h"

#define MAX_LIBRARIES 64
#define MAX_THREADS 1024
#define MAX_WORKERS 1024
#define MAX_DEATH_TIMEOUT (30.0 * 24 * 3600)
#define MAX_LIFETIME (365.0 * 24 * 3600)
/* A staggered lifetime is never shorter than this. */
#define MIN_LIFETIME 0.1
#define MIN_MESSAGE_SIZE 4096ULL
#define MAX_MESSAGE_SIZE (1ULL << 40)
/* --memory-limit below this is refused (a worker needs a few MB itself). */
#define MIN_MEMORY_LIMIT (1ULL << 20)
#define MAX_TRANSFER_LIMIT 1024
#define MAX_TRANSFER_TIMEOUT (24.0 * 3600)

static void s_usage(FILE *f)
{
    fprintf(f,
        "usage: shoal-worker [ADDRESS] [options]\n"
        "\n"
        "Connect to a shoal scheduler and run its tasks.  ADDRESS is tcp://HOST:PORT,\n"
        "HOST:PORT or HOST (default port %d); or give --scheduler-file.\n"
        "\n"
        "options:\n"
        "  --scheduler-file PATH    read the scheduler's address from PATH (waits up to\n"
        "                           the death timeout for the file to appear)\n"
        "  --nthreads N             executor threads per worker process (1..%d;\n"
        "                           default: cores / nworkers, at least 1)\n"
        "  --nworkers M             worker processes (1..%d, default 1); with M > 1\n"
        "                           this process supervises them, named NAME-0..M-1,\n"
        "                           and restarts one that crashes\n"
        "  --name NAME              worker name (default HOST-PID)\n"
        "  --library PATH.so        load a task library (repeatable, up to %d)\n"
        "  --death-timeout SECONDS  exit when nothing is heard from the scheduler for\n"
        "                           this long (default 60s)\n"
        "  --lifetime DURATION      retire after this long (e.g. 55m): take no more\n"
        "                           tasks, hand queued ones back, give running ones\n"
        "                           min(DURATION/10, 60s) to finish, say BYE, exit 0\n"
        "                           (for batch jobs: stop before the walltime)\n"
        "  --lifetime-stagger DURATION\n"
        "                           add a random amount in [-DURATION, +DURATION] to\n"
        "                           the lifetime, so that workers do not all leave at\n"
        "                           once (each of --nworkers draws its own)\n"
        "  --max-message-size SIZE  largest message accepted (default 1GiB)\n"
        "\n"
        "data plane:\n"
        "  --contact-address HOST   address to bind and advertise for the data\n"
        "                           endpoint (default: 127.0.0.1 for a loopback\n"
        "                           scheduler, else the first non-loopback IPv4)\n"
        "  --data-port PORT         data endpoint port (default 0: any free port;\n"
        "                           with --nworkers M, worker i gets PORT+i)\n"
        "  --resources SPEC         resources for tasks that require them,\n"
        "                           e.g. \"GPU=2,MEM=10e9\" (at most 64)\n"
        "  --memory-limit LIMIT     SIZE (4GB, 512MiB), FRACTION of the memory (0.5),\n"
        "                           auto (default: memory / worker processes on this\n"
        "                           host) or 0 (no limit).  Over 60%% of it in stored\n"
        "                           results: spill to disk; process over 80%%: pause\n"
        "                           (no new tasks) until below 70%%\n"
        "  --local-directory DIR    where spilled results go (default: the runtime\n"
        "                           directory, $SHOAL_RUNTIME_DIR or /tmp/shoal-UID)\n"
        "  --transfer-limit N       results fetched from peers at a time (1..%d,\n"
        "                           default %d)\n"
        "  --transfer-timeout DURATION\n"
        "                           give up on a peer that has not answered a request\n"
        "                           for this long, plus 1 s per 16 MiB (default 30s)\n"
        "\n"
        "  --log-level LEVEL        error, warn, info or debug (default: $SHOAL_LOG_LEVEL\n"
        "                           or info)\n"
        "  --help, --version\n"
        "\n"
        "exit status: 0 stopped (scheduler said BYE, or SIGINT/SIGTERM), 1 error,\n"
        "2 bad configuration, 3 scheduler lost (death timeout).\n",
        SHOAL_DEFAULT_PORT, MAX_THREADS, MAX_WORKERS, MAX_LIBRARIES, MAX_TRANSFER_LIMIT,
        WORKER_TRANSFER_LIMIT);
}

static int s_bad(const char *fmt, const char *arg)
{
    fprintf(stderr, "shoal-worker: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'shoal-worker --help'.\n");
    return WORKER_EXIT_CONFIG;
}

static int s_parse_level(const char *s)
{
    if (!strcmp(s, "error"))
        return LOG_LVL_ERROR;
    if (!strcmp(s, "warn") || !strcmp(s, "warning"))
        return LOG_LVL_WARN;
    if (!strcmp(s, "info"))
        return LOG_LVL_INFO;
    if (!strcmp(s, "debug"))
        return LOG_LVL_DEBUG;
    return -1;
}

/* A name is printable ASCII without spaces: it appears in logs, errors and
 * the scheduler's status, and children append "-i" to it. */
static int s_valid_name(const char *s)
{
    size_t n = strlen(s), i;

    if (n == 0 || n >= WORKER_NAME_MAX - 8)
        return 0;
    for (i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] > '~')
            return 0;
    return 1;
}

enum {
    OPT_SFILE = 256, OPT_NTHREADS, OPT_NWORKERS, OPT_NAME, OPT_LIBRARY,
    OPT_DEATH, OPT_MAXMSG, OPT_LOGLEVEL, OPT_HELP, OPT_VERSION, OPT_CHILD,
    OPT_LIFETIME, OPT_STAGGER, OPT_CONTACT, OPT_DATAPORT, OPT_RESOURCES, OPT_MEMLIMIT,
    OPT_LOCALDIR, OPT_XFERLIMIT, OPT_XFERTIMEOUT,
};

/* Memory this process may use: physical memory, or less if a cgroup says
 * so (containers, batch jobs).  0 if unknown. */
static uint64_t s_total_memory(void)
{
    static const char *const limits[] = {
        "/sys/fs/cgroup/memory.max",                     /* cgroup v2 */
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",   /* cgroup v1 */
    };
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    uint64_t total = pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize : 0;
    size_t i;

    for (i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
        char buf[64], *end;
        unsigned long long v;
        size_t n;
        FILE *f = fopen(limits[i], "r");
        if (!f)
            continue;
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        errno = 0;
        v = strtoull(buf, &end, 10);
        /* "max" (v2) or a huge number (v1) mean no limit. */
        if (end != buf && !errno && v > 0 && (total == 0 || v < total))
            total = v;
    }
    return total;
}

/* --memory-limit: SIZE, a FRACTION (0 < f <= 1) of the memory, "auto"
 * (memory / nworkers) or 0.  0 or -1. */
static int s_parse_memory_limit(const char *s, long nworkers, uint64_t *out)
{
    uint64_t total = s_total_memory();
    char *end;
    double f;

    if (!strcmp(s, "auto")) {
        *out = total / (uint64_t)(nworkers > 0 ? nworkers : 1);
        return 0;
    }
    errno = 0;
    f = strtod(s, &end);
    if (end != s && !*end && !errno && isfinite(f) && f >= 0 && f <= 1) {
        if (f == 0) {
            *out = 0;
            return 0;
        }
        if (total == 0)
            return -1;
        *out = (uint64_t)(f * (double)total);
        return *out >= MIN_MEMORY_LIMIT ? 0 : -1;
    }
    if (util_parse_size(s, out) < 0 || *out < MIN_MEMORY_LIMIT)
        return -1;
    return 0;
}

/* A host name or an IP address (IPv6 without brackets). */
static int s_valid_host(const char *s)
{
    size_t n = strlen(s), i;

    if (n == 0 || n > 253)
        return 0;
    for (i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == ':' || c == '_'))
            return 0;
    }
    return 1;
}

/* The i of a supervised child named NAME-i, or 0. */
static long s_child_index(const char *name)
{
    const char *dash = strrchr(name, '-');
    long i = 0;

    if (dash && util_parse_long(dash + 1, 0, 100000, &i) == 0)
        return i;
    return 0;
}

/* A uniform random number in [-1, 1]: each worker process draws its own,
 * so the workers of one job or one command line retire at different times. */
static double s_random_unit(void)
{
    uint64_t r;

    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
        r = (uint64_t)getpid() * 0x9e3779b97f4a7c15ULL ^ (uint64_t)(util_wall() * 1e6);
    return (double)(r >> 11) / (double)(1ULL << 52) - 1.0;
}

static const struct option s_opts[] = {
    {"scheduler-file", required_argument, NULL, OPT_SFILE},
    {"nthreads", required_argument, NULL, OPT_NTHREADS},
    {"nworkers", required_argument, NULL, OPT_NWORKERS},
    {"name", required_argument, NULL, OPT_NAME},
    {"library", required_argument, NULL, OPT_LIBRARY},
    {"death-timeout", required_argument, NULL, OPT_DEATH},
    {"max-message-size", required_argument, NULL, OPT_MAXMSG},
    {"lifetime", required_argument, NULL, OPT_LIFETIME},
    {"lifetime-stagger", required_argument, NULL, OPT_STAGGER},
    {"log-level", required_argument, NULL, OPT_LOGLEVEL},
    {"contact-address", required_argument, NULL, OPT_CONTACT},
    {"data-port", required_argument, NULL, OPT_DATAPORT},
    {"resources", required_argument, NULL, OPT_RESOURCES},
    {"memory-limit", required_argument, NULL, OPT_MEMLIMIT},
    {"local-directory", required_argument, NULL, OPT_LOCALDIR},
    {"transfer-limit", required_argument, NULL, OPT_XFERLIMIT},
    {"transfer-timeout", required_argument, NULL, OPT_XFERTIMEOUT},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    /* Internal: set by the supervisor for its children (supervisor.h). */
    {SUPERVISOR_CHILD_OPT + 2, required_argument, NULL, OPT_CHILD},
    {NULL, 0, NULL, 0},
};

int main(int argc, char **argv)
{
    const char *addr_arg = NULL, *sfile = NULL, *name_arg = NULL, *child_name = NULL;
    const char *libs[MAX_LIBRARIES];
    const char *contact = NULL, *memlimit_arg = "auto", *localdir = NULL;
    static worker_resource_t resources[WORKER_MAX_RESOURCES];
    size_t nlibs = 0, nresources = 0, i;
    long nthreads = 0, nworkers = 1, data_port = 0, xfer_limit = WORKER_TRANSFER_LIMIT;
    double death_timeout = 60.0, lifetime = 0.0, stagger = 0.0;
    double xfer_timeout = WORKER_TRANSFER_TIMEOUT;
    uint64_t memory_limit = 0;
    char contact_buf[256];
    uint64_t max_msg = (uint64_t)PROTO_DEFAULT_MAX_FRAME;
    char address[SHOAL_ADDR_MAX], err[512], name[WORKER_NAME_MAX];
    tasklib_t *lib = NULL;
    worker_config_t wc;
    int c, code;

    log_init("shoal-worker");
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", s_opts, NULL)) != -1) {
        switch (c) {
        case OPT_SFILE:
            sfile = optarg;
            break;
        case OPT_NTHREADS:
            if (util_parse_long(optarg, 1, MAX_THREADS, &nthreads) < 0)
                return s_bad("--nthreads: '%s' is not a number from 1 to 1024", optarg);
            break;
        case OPT_NWORKERS:
            if (util_parse_long(optarg, 1, MAX_WORKERS, &nworkers) < 0)
                return s_bad("--nworkers: '%s' is not a number from 1 to 1024", optarg);
            break;
        case OPT_NAME:
            if (!s_valid_name(optarg))
                return s_bad("--name: '%s' must be 1 to 119 printable characters "
                             "without spaces", optarg);
            name_arg = optarg;
            break;
        case OPT_LIBRARY:
            if (nlibs >= MAX_LIBRARIES)
                return s_bad("too many --library options (at most %s)", "64");
            libs[nlibs++] = optarg;
            break;
        case OPT_DEATH:
            if (util_parse_duration(optarg, &death_timeout) < 0 || death_timeout <= 0 ||
                death_timeout > MAX_DEATH_TIMEOUT)
                return s_bad("--death-timeout: '%s' is not a duration (e.g. 60, 30s, 5m) "
                             "greater than zero and at most 30 days", optarg);
            break;
        case OPT_LIFETIME:
            if (util_parse_duration(optarg, &lifetime) < 0 || lifetime <= 0 ||
                lifetime > MAX_LIFETIME)
                return s_bad("--lifetime: '%s' is not a duration (e.g. 3600, 55m) greater "
                             "than zero and at most a year", optarg);
            break;
        case OPT_STAGGER:
            if (util_parse_duration(optarg, &stagger) < 0 || stagger > MAX_LIFETIME)
                return s_bad("--lifetime-stagger: '%s' is not a duration (e.g. 0, 30s, 4m) "
                             "of at most a year", optarg);
            break;
        case OPT_MAXMSG:
            if (util_parse_size(optarg, &max_msg) < 0 || max_msg < MIN_MESSAGE_SIZE ||
                max_msg > MAX_MESSAGE_SIZE)
                return s_bad("--max-message-size: '%s' is not a size from 4KiB to 1TiB",
                             optarg);
            break;
        case OPT_CONTACT: {
            size_t n = strlen(optarg);
            /* [v6] is accepted and unwrapped: ZeroMQ endpoints add them. */
            if (n >= 2 && optarg[0] == '[' && optarg[n - 1] == ']' && n - 2 < sizeof(contact_buf)) {
                memcpy(contact_buf, optarg + 1, n - 2);
                contact_buf[n - 2] = '\0';
            } else if (util_fmt(contact_buf, sizeof(contact_buf), "%s", optarg) < 0) {
                contact_buf[0] = '\0';
            }
            if (!s_valid_host(contact_buf))
                return s_bad("--contact-address: '%s' is not a host name or IP address",
                             optarg);
            contact = contact_buf;
            break;
        }
        case OPT_DATAPORT:
            if (util_parse_long(optarg, 0, 65535, &data_port) < 0)
                return s_bad("--data-port: '%s' is not a port number (0 to 65535)", optarg);
            break;
        case OPT_RESOURCES:
            if (worker_parse_resources(optarg, resources, &nresources, err, sizeof(err)) < 0) {
                fprintf(stderr, "shoal-worker: --resources '%s': %s\n", optarg, err);
                return WORKER_EXIT_CONFIG;
            }
            break;
        case OPT_MEMLIMIT:
            memlimit_arg = optarg;
            break;
        case OPT_LOCALDIR:
            if (strlen(optarg) == 0 || strlen(optarg) > 3000)
                return s_bad("--local-directory: '%s' is not a usable path", optarg);
            localdir = optarg;
            break;
        case OPT_XFERLIMIT:
            if (util_parse_long(optarg, 1, MAX_TRANSFER_LIMIT, &xfer_limit) < 0)
                return s_bad("--transfer-limit: '%s' is not a number from 1 to 1024", optarg);
            break;
        case OPT_XFERTIMEOUT:
            if (util_parse_duration(optarg, &xfer_timeout) < 0 || xfer_timeout <= 0 ||
                xfer_timeout > MAX_TRANSFER_TIMEOUT)
                return s_bad("--transfer-timeout: '%s' is not a duration greater than zero "
                             "and at most a day", optarg);
            break;
        case OPT_LOGLEVEL: {
            int lvl = s_parse_level(optarg);
            if (lvl < 0)
                return s_bad("--log-level: '%s' is not one of error, warn, info, debug",
                             optarg);
            log_set_level(lvl);
            break;
        }
        case OPT_HELP:
            s_usage(stdout);
            return 0;
        case OPT_VERSION:
            printf("shoal-worker %s (protocol %d)\n", SHOAL_VERSION, PROTO_VERSION);
            return 0;
        case OPT_CHILD:
            if (!s_valid_name(optarg))
                return s_bad("bad internal worker name '%s'", optarg);
            child_name = optarg;
            break;
        case ':':
            return s_bad("option '%s' needs a value", argv[optind - 1]);
        default:
            return s_bad("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        addr_arg = argv[optind++];
    if (optind < argc)
        return s_bad("unexpected argument '%s'", argv[optind]);
    if (addr_arg && sfile)
        return s_bad("give either ADDRESS or --scheduler-file, not both%s", "");
    if (!addr_arg && !sfile)
        return s_bad("no scheduler: give its ADDRESS or --scheduler-file PATH%s", "");
    if (stagger > 0 && lifetime <= 0)
        return s_bad("--lifetime-stagger needs --lifetime%s", "");
    if (stagger >= lifetime && lifetime > 0)
        return s_bad("--lifetime-stagger must be shorter than --lifetime%s", "");
    /* "auto" divides the memory among the worker processes of this host:
     * --nworkers is still the supervisor's M here, also in its children. */
    if (s_parse_memory_limit(memlimit_arg, nworkers, &memory_limit) < 0)
        return s_bad("--memory-limit: '%s' is not a size of at least 1MiB (4GB, 512MiB), "
                     "a fraction of the memory (0.5), auto or 0", memlimit_arg);
    if (localdir) {
        struct stat sb;
        if (util_mkdir_p(localdir) < 0 || stat(localdir, &sb) < 0 || !S_ISDIR(sb.st_mode) ||
            access(localdir, W_OK | X_OK) < 0)
            return s_bad("--local-directory: '%s' is not a writable directory", localdir);
    }

    if (addr_arg) {
        if (util_normalize_address(addr_arg, address, sizeof(address), err,
                                   sizeof(err)) < 0) {
            fprintf(stderr, "shoal-worker: bad scheduler address '%s': %s\n", addr_arg, err);
            return WORKER_EXIT_CONFIG;
        }
    } else if (util_sfile_read(sfile, death_timeout, address, sizeof(address), err,
                               sizeof(err)) < 0) {
        log_err("cannot read the scheduler file %s: %s", sfile, err);
        return WORKER_EXIT_ERROR;
    }

    if (nthreads == 0) {
        long cores = util_ncpus();
        /* A supervised child divides the cores like its supervisor did. */
        nthreads = cores / nworkers;
        if (nthreads < 1)
            nthreads = 1;
        if (nthreads > MAX_THREADS)
            nthreads = MAX_THREADS;
    }
    if (child_name) {
        util_fmt(name, sizeof(name), "%s", child_name);
        nworkers = 1;
        /* Children of one supervisor cannot share a fixed port. */
        if (data_port > 0) {
            data_port += s_child_index(child_name);
            if (data_port > 65535) {
                log_err("--data-port: port %ld for worker %s is out of range", data_port,
                        child_name);
                return WORKER_EXIT_CONFIG;
            }
        }
    } else if (name_arg) {
        util_fmt(name, sizeof(name), "%s", name_arg);
    } else {
        util_fmt(name, sizeof(name), "%s-%d", util_hostname(), (int)getpid());
    }

    /* Libraries are loaded here also by a supervisor, so that a bad one is
     * reported once, at start, instead of crashing children in a loop. */
    if (!(lib = tasklib_create())) {
        log_err("cannot create the task registry: %s", strerror(errno));
        return WORKER_EXIT_ERROR;
    }
    for (i = 0; i < nlibs; i++) {
        if (tasklib_load(lib, libs[i], err, sizeof(err)) < 0) {
            log_err("cannot load task library %s: %s", libs[i], err);
            tasklib_destroy(lib);
            return WORKER_EXIT_ERROR;
        }
    }

    if (nworkers > 1) {
        supervisor_config_t sc = {
            .name = name, .nworkers = (int)nworkers, .argc = argc, .argv = argv,
        };
        code = supervisor_run(&sc);
        tasklib_destroy(lib);
        return code;
    }

    memset(&wc, 0, sizeof(wc));
    wc.address = address;
    wc.name = name;
    wc.nthreads = (int)nthreads;
    wc.death_timeout = death_timeout;
    wc.max_frame = (int64_t)max_msg;
    wc.lib = lib;
    wc.contact_host = contact;
    wc.data_port = (int)data_port;
    wc.resources = resources;
    wc.nresources = nresources;
    wc.memory_limit = memory_limit;
    wc.local_directory = localdir;
    wc.transfer_limit = (int)xfer_limit;
    wc.transfer_timeout = xfer_timeout;
    if (lifetime > 0) {
        wc.lifetime = lifetime + stagger * s_random_unit();
        if (wc.lifetime < MIN_LIFETIME)
            wc.lifetime = MIN_LIFETIME;
    }
    code = worker_run(&wc);
    tasklib_destroy(lib);
    return code;
}
