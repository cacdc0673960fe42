/*
 * main.c - shoal-mpi: a shoal cluster inside an MPI job, for a client
 * program that is not an MPI program itself (the dask-mpi command line).
 *
 *   mpirun -n N shoal-mpi [options] -- PROGRAM [ARGS...]
 *
 * Rank 0 runs the scheduler, rank 1 runs PROGRAM with SHOAL_SCHEDULER set,
 * ranks 2 and up one worker each; fewer ranks double up (mpirole.h).  When
 * PROGRAM exits every rank stops and exits with PROGRAM's status, which
 * mpirun then returns.  Without PROGRAM the cluster serves outside clients
 * (give --scheduler-file) until the job is stopped.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mpi.h>

#include "log.h"
#include "mpirole.h"
#include "util.h"

#define PROG "shoal-mpi"
#define EXIT_USAGE 2
/* Kept in step with shoal.h, which this program does not include. */
#define SHOAL_MPI_VERSION "0.1.0"

static void s_usage(FILE *f)
{
    fprintf(f,
            "usage: mpirun -n N " PROG " [options] [--] [PROGRAM [ARGS...]]\n"
            "\n"
            "Start a shoal cluster on the ranks of an MPI job: rank 0 runs the scheduler,\n"
            "rank 1 runs PROGRAM with SHOAL_SCHEDULER set to the scheduler's address (which\n"
            "every rank gets by MPI_Bcast), every other rank runs a worker.  With 2 ranks,\n"
            "rank 0 runs the scheduler and PROGRAM and rank 1 a worker; with 1, that rank\n"
            "runs all three.  When PROGRAM exits, every rank stops and mpirun returns\n"
            "PROGRAM's exit status.  Without PROGRAM the cluster serves clients (use\n"
            "--scheduler-file) until the job is stopped.\n"
            "\n"
            "options:\n"
            "  --nthreads T             executor threads per worker (default: the rank's\n"
            "                           CPUs, shared among the worker ranks of its node)\n"
            "  --scheduler-port P       scheduler port (default 0: a free one)\n"
            "  --host H                 address the scheduler binds and advertises\n"
            "  --interface IFACE        ... or the IPv4 address of this interface of rank\n"
            "                           0's node, e.g. ib0 (default: 127.0.0.1 when every\n"
            "                           rank is on rank 0's node and there is a PROGRAM,\n"
            "                           else all interfaces, advertising the first IPv4)\n"
            "  --scheduler-file PATH    also write the scheduler file here (for clients\n"
            "                           outside the job); removed when the cluster stops\n"
            "  --local-directory DIR    working directory of the scheduler and workers\n"
            "  --library PATH.so        task library every worker loads (repeatable)\n"
            "  --log-level LEVEL        error, warn, info (default) or debug\n"
            "  --help, --version\n"
            "\n"
            "environment: SHOAL_BINDIR (where shoal-scheduler and shoal-worker are;\n"
            "default: beside this program, then $PATH).  PROGRAM also gets\n"
            "SHOAL_MPI_NWORKERS, the number of workers started.\n"
            "\n"
            "exit status: PROGRAM's (128 + N if it was killed by signal N, 127 if it\n"
            "could not be started); 1 if the cluster could not start or a scheduler or\n"
            "worker died (MPI_Abort); 2 bad usage.\n");
}

/* Ranks other than 0 keep quiet about usage errors: every rank parses the
 * same command line, so one copy of the message is enough. */
static int s_quiet(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v)
            return strcmp(v, "0") != 0;
    }
    return 0;
}

static int s_bad(const char *fmt, const char *arg)
{
    if (!s_quiet()) {
        fprintf(stderr, PROG ": ");
        fprintf(stderr, fmt, arg);
        fprintf(stderr, "\nTry '" PROG " --help'.\n");
    }
    return EXIT_USAGE;
}

enum {
    OPT_NTHREADS = 256, OPT_PORT, OPT_HOST, OPT_IFACE, OPT_SFILE, OPT_LOCALDIR,
    OPT_LIBRARY, OPT_LOGLEVEL, OPT_HELP, OPT_VERSION,
};

static const struct option s_opts[] = {
    {"nthreads", required_argument, NULL, OPT_NTHREADS},
    {"scheduler-port", required_argument, NULL, OPT_PORT},
    {"host", required_argument, NULL, OPT_HOST},
    {"interface", required_argument, NULL, OPT_IFACE},
    {"scheduler-file", required_argument, NULL, OPT_SFILE},
    {"local-directory", required_argument, NULL, OPT_LOCALDIR},
    {"library", required_argument, NULL, OPT_LIBRARY},
    {"log-level", required_argument, NULL, OPT_LOGLEVEL},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

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

int main(int argc, char **argv)
{
    const char *libs[MPIROLE_MAX_LIBRARIES + 1];
    int nlibs = 0, c;
    long nthreads = 0, port = 0;
    mpirole_opts_t ro;
    char desc[128];

    memset(&ro, 0, sizeof ro);
    log_init(PROG);
    opterr = 0;
    /* "+": stop at PROGRAM, whose own options are not ours. */
    while ((c = getopt_long(argc, argv, "+:", s_opts, NULL)) != -1) {
        switch (c) {
        case OPT_NTHREADS:
            if (util_parse_long(optarg, 1, 1024, &nthreads) < 0)
                return s_bad("--nthreads: '%s' is not a number from 1 to 1024", optarg);
            break;
        case OPT_PORT:
            if (util_parse_long(optarg, 0, 65535, &port) < 0)
                return s_bad("--scheduler-port: '%s' is not a number from 0 to 65535",
                             optarg);
            break;
        case OPT_HOST:
            if (!*optarg || strlen(optarg) > 200 ||
                strspn(optarg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                               "0123456789.-_:") != strlen(optarg))
                return s_bad("--host: '%s' is not a host name or address", optarg);
            ro.host = optarg;
            break;
        case OPT_IFACE:
            if (!*optarg || strlen(optarg) > 15)
                return s_bad("--interface: '%s' is not an interface name", optarg);
            ro.interface = optarg;
            break;
        case OPT_SFILE:
            if (!*optarg || strlen(optarg) >= PATH_MAX - 256)
                return s_bad("--scheduler-file: '%s' is not a usable path", optarg);
            ro.scheduler_file = optarg;
            break;
        case OPT_LOCALDIR:
            if (!*optarg || strlen(optarg) >= PATH_MAX - 256)
                return s_bad("--local-directory: '%s' is not a usable path", optarg);
            ro.local_directory = optarg;
            break;
        case OPT_LIBRARY:
            if (nlibs >= MPIROLE_MAX_LIBRARIES)
                return s_bad("too many --library options (at most %s)", "64");
            if (!*optarg || strlen(optarg) >= PATH_MAX - 256)
                return s_bad("--library: '%s' is not a usable path", optarg);
            libs[nlibs++] = optarg;
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
            if (!s_quiet())
                s_usage(stdout);
            return 0;
        case OPT_VERSION:
            if (!s_quiet())
                printf(PROG " %s\n", SHOAL_MPI_VERSION);
            return 0;
        case ':':
            return s_bad("option '%s' needs a value", argv[optind - 1]);
        default:
            return s_bad("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (ro.host && ro.interface)
        return s_bad("give --host or --interface, not both%s", "");
    libs[nlibs] = NULL;
    ro.libraries = libs;
    ro.nthreads = (int)nthreads;
    ro.port = (int)port;
    ro.have_client = optind < argc;
    if (ro.have_client) {
        if (!argv[optind][0])
            return s_bad("the program name is empty%s", "");
        snprintf(desc, sizeof desc, "%s", argv[optind]);
        ro.client_desc = desc;
    } else if (!ro.scheduler_file && !s_quiet()) {
        log_warn("no PROGRAM and no --scheduler-file: clients must be given the "
                 "address logged below");
    }

    if (MPI_Init(&argc, &argv) != MPI_SUCCESS) {
        log_err("MPI_Init failed");
        return 1;
    }
    /* After MPI_Init, so that our handlers are the ones in place. */
    mpirole_catch_signals();
    mpirole_t *m = mpirole_start(MPI_COMM_WORLD, &ro);
    if (!m) {
        MPI_Finalize();
        return 1;
    }
    int status;
    if (mpirole_is_client(m))
        status = mpirole_run_program(m, argv + optind);
    else
        status = mpirole_serve(m);
    status = mpirole_stop(m, status);
    mpirole_destroy(m);
    MPI_Finalize();
    return status;
}
