/*
 * main.c - `shoal-jobqueue slurm|pbs`: the dask-jobqueue of shoal, from the
 * command line.
 *
 * It runs a shoal scheduler where it is started (a login node), writes a
 * batch job script whose job starts shoal-worker processes that connect
 * back, and submits it with sbatch or qsub: --jobs N of them, or as many as
 * the waiting tasks call for with --adapt MIN:MAX.  It shows the jobs and
 * their states as they change, cancels the jobs whose workers stay idle
 * (adapt), and on exit (SIGINT/SIGTERM, or when the --run PROGRAM ends)
 * cancels every job it submitted and stops the scheduler.
 *
 * Processes: one thread of our own plus libshoal's I/O thread (the status
 * client).  SIGINT, SIGTERM, SIGHUP and SIGCHLD are blocked before any thread
 * exists and taken with sigtimedwait in the one loop, so nothing happens in
 * a signal handler.  Children (the scheduler, the --run program, batch
 * commands) are reaped by pid, never with waitpid(-1).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <ifaddrs.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shoal.h"

#include "batch.h"
#include "jobscript.h"
#include "log.h"
#include "u64map.h"
#include "util.h"

#define PROG "shoal-jobqueue"
#define EXIT_USAGE 2
#define MAX_JOBS 10000
/* Jobs in a row that end before any of their workers connected, after which
 * submitting more is pointless (a broken script, a wrong address). */
#define MAX_FAILED_STARTS 3
/* After a failed submission, wait this long before the next (doubling). */
#define SUBMIT_BACKOFF_MIN 5.0
#define SUBMIT_BACKOFF_MAX 300.0
/* Seconds the scheduler and the --run program get after SIGTERM. */
#define STOP_WAIT 10.0
#define SCHED_START_WAIT 20.0

extern char **environ;

/* ---- state --------------------------------------------------------------- */

typedef struct job {
    char id[BATCH_ID_MAX];
    char state[BATCH_STATE_MAX];   /* last state the batch system reported */
    uint64_t key;                  /* fnv1a64 of id, the by_id key */
    double submitted;              /* util_now() */
    int ended;                     /* left the queue */
    int cancelled;                 /* we asked the batch system to end it */
    int nworkers;                  /* its workers connected at the last status */
    int ever;                      /* one of its workers connected once */
    int busy;                      /* tasks on its workers at the last status */
    int idle_checks;               /* consecutive adapt checks it was idle */
} job_t;

typedef struct opts {
    jq_system_t sys;
    const char *host, *iface, *sfile_arg, *worker_bin, *sched_bin, *log_dir;
    long port;
    long njobs;
    int adapt;
    long adapt_min, adapt_max, wait_count;
    double adapt_interval, poll_interval, cancel_timeout, margin;
    int dry_run;
    char **run_argv;              /* --run PROGRAM ARGS, or NULL */
} opts_t;

typedef struct jq {
    opts_t o;
    jq_spec_t spec;
    char *script;                 /* the job script text */
    char rundir[PATH_MAX];        /* private: the script, our scheduler file */
    char script_path[PATH_MAX + 64];
    char sfile[PATH_MAX + 64];
    char address[SHOAL_ADDR_MAX];
    char prefix[JQ_NAME_MAX + 2]; /* "NAME-": worker names start so */
    sigset_t sigs;                /* blocked; taken with sigtimedwait */
    sigset_t stop_sigs;           /* the subset that interrupts commands */
    job_t **jobs;                 /* every job not yet ended, in order */
    size_t njobs, capjobs;
    u64map_t *by_id;
    pid_t sched_pid, prog_pid;
    int prog_status;              /* wait status of the --run program */
    shoal_client_t *client;
    int stopping;
    int exit_code;
    int failed_starts;
    int no_demand;                /* consecutive adapt checks without demand */
    int total_workers;            /* at the last status */
    int submitted_any;            /* a submission has succeeded */
    double submit_after;          /* util_now() before which none is tried */
    double submit_backoff;        /* seconds, doubling after each failure */
} jq_t;

/* ---- usage --------------------------------------------------------------- */

static void s_usage(FILE *f)
{
    fprintf(f,
        "usage: " PROG " slurm|pbs [options] [--run PROGRAM [ARGS...]]\n"
        "\n"
        "Run a shoal scheduler here and batch jobs whose workers connect back to it\n"
        "(like dask-jobqueue).  Jobs are submitted with sbatch (slurm) or qsub (pbs),\n"
        "their states shown as they change, and cancelled on exit.\n"
        "\n"
        "scheduler:\n"
        "  --host HOST              address the scheduler binds and the workers connect to\n"
        "                           (default: the first non-loopback IPv4 address)\n"
        "  --interface IFACE        use the IPv4 address of network interface IFACE\n"
        "  --scheduler-port PORT    default %d; 0 picks a free port\n"
        "  --scheduler-file PATH    write the scheduler's address here for clients\n"
        "jobs (each job runs PROCESSES worker processes of CORES/PROCESSES threads):\n"
        "  --jobs N                 jobs to keep running (default 1; with --adapt: MIN)\n"
        "  --cores N                cores per job (default 1)\n"
        "  --processes N            worker processes per job (default 1; divides --cores)\n"
        "  --memory SIZE            memory per job, e.g. 16GB\n"
        "  --walltime TIME          per job, HH:MM:SS or e.g. 2h (default 01:00:00)\n"
        "  --queue NAME             partition / queue\n"
        "  --account NAME           account / project to charge\n"
        "  --job-name NAME          default shoal-worker; workers are named NAME-JOBID\n"
        "  --job-extra DIRECTIVE    add '#SBATCH DIRECTIVE' / '#PBS DIRECTIVE' (repeatable)\n"
        "  --prologue COMMAND       a shell line run before the workers (repeatable)\n"
        "  --log-directory DIR      job output files go here\n"
        "  --worker-bin PATH        shoal-worker to run (default: next to " PROG ")\n"
        "  --worker-extra ARG       one more shoal-worker argument (repeatable)\n"
        "  --death-timeout SECONDS  workers exit when the scheduler is gone this long (60)\n"
        "  --lifetime-margin TIME   workers retire (shoal-worker --lifetime) this long\n"
        "                           before the walltime; default max(60s, 5%%), 0: never\n"
        "scaling:\n"
        "  --adapt MIN:MAX          submit jobs while tasks wait for a free thread, cancel\n"
        "                           jobs whose workers stay idle; between MIN and MAX jobs\n"
        "  --adapt-interval TIME    how often to look (default 2s)\n"
        "  --adapt-wait-count N     idle checks in a row before a job is cancelled (5)\n"
        "  --poll-interval TIME     how often to ask squeue/qstat (default 5s)\n"
        "  --cancel-timeout TIME    on exit, wait this long for the jobs to leave the\n"
        "                           queue (default 30s)\n"
        "other:\n"
        "  --dry-run                print the job script and exit\n"
        "  --run PROGRAM [ARGS...]  run PROGRAM with SHOAL_SCHEDULER set, then stop\n"
        "                           everything and exit with its status (must be last)\n"
        "  --help, --version\n"
        "\n"
        "exit status: the --run program's, else 0 after SIGINT/SIGTERM; 1 on errors\n"
        "(the scheduler failed, jobs keep ending before their workers connect), 2 for\n"
        "bad options.\n",
        SHOAL_DEFAULT_PORT);
}

static void s_die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void s_die_usage(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, PROG ": ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '" PROG " --help'.\n");
    exit(EXIT_USAGE);
}

/* ---- options ------------------------------------------------------------- */

enum {
    O_HOST = 256, O_IFACE, O_PORT, O_SFILE, O_JOBS, O_CORES, O_PROCS, O_MEMORY,
    O_WALLTIME, O_QUEUE, O_ACCOUNT, O_NAME, O_EXTRA, O_PROLOGUE, O_LOGDIR, O_WBIN,
    O_WEXTRA, O_DEATH, O_MARGIN, O_ADAPT, O_ADAPT_INT, O_WAIT_COUNT, O_POLL, O_CANCEL_TO,
    O_DRY, O_HELP, O_VERSION, O_SBIN,
};

static const struct option s_longopts[] = {
    {"host", required_argument, NULL, O_HOST},
    {"interface", required_argument, NULL, O_IFACE},
    {"scheduler-port", required_argument, NULL, O_PORT},
    {"scheduler-file", required_argument, NULL, O_SFILE},
    {"jobs", required_argument, NULL, O_JOBS},
    {"cores", required_argument, NULL, O_CORES},
    {"processes", required_argument, NULL, O_PROCS},
    {"memory", required_argument, NULL, O_MEMORY},
    {"walltime", required_argument, NULL, O_WALLTIME},
    {"queue", required_argument, NULL, O_QUEUE},
    {"account", required_argument, NULL, O_ACCOUNT},
    {"job-name", required_argument, NULL, O_NAME},
    {"job-extra", required_argument, NULL, O_EXTRA},
    {"prologue", required_argument, NULL, O_PROLOGUE},
    {"log-directory", required_argument, NULL, O_LOGDIR},
    {"worker-bin", required_argument, NULL, O_WBIN},
    {"worker-extra", required_argument, NULL, O_WEXTRA},
    {"death-timeout", required_argument, NULL, O_DEATH},
    {"lifetime-margin", required_argument, NULL, O_MARGIN},
    {"adapt", required_argument, NULL, O_ADAPT},
    {"adapt-interval", required_argument, NULL, O_ADAPT_INT},
    {"adapt-wait-count", required_argument, NULL, O_WAIT_COUNT},
    {"poll-interval", required_argument, NULL, O_POLL},
    {"cancel-timeout", required_argument, NULL, O_CANCEL_TO},
    {"dry-run", no_argument, NULL, O_DRY},
    {"help", no_argument, NULL, O_HELP},
    {"version", no_argument, NULL, O_VERSION},
    /* For tests and unusual installs: the scheduler program. */
    {"scheduler-bin", required_argument, NULL, O_SBIN},
    {NULL, 0, NULL, 0},
};

/* Does the long option `arg` ("--name" or "--name=value") take the next
 * argument as its value? */
static int s_takes_value(const char *arg)
{
    size_t i;

    if (strncmp(arg, "--", 2) != 0 || strchr(arg, '='))
        return 0;
    for (i = 0; s_longopts[i].name; i++)
        if (!strcmp(arg + 2, s_longopts[i].name))
            return s_longopts[i].has_arg == required_argument;
    return 0;
}

static double s_duration_opt(const char *name, const char *v, double min, double max)
{
    double d;

    if (util_parse_duration(v, &d) < 0 || d < min || d > max)
        s_die_usage("--%s: '%s' is not a duration from %g to %g seconds (e.g. 5, 30s, 2m)",
                    name, v, min, max);
    return d;
}

static long s_long_opt(const char *name, const char *v, long min, long max)
{
    long n;

    if (util_parse_long(v, min, max, &n) < 0)
        s_die_usage("--%s: '%s' is not a number from %ld to %ld", name, v, min, max);
    return n;
}

/* The directory this program is in, for its sibling programs. */
static void s_sibling(const char *name, char *out, size_t cap)
{
    char self[PATH_MAX], *slash;
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

    if (n <= 0) {
        util_fmt(out, cap, "%s", name);
        return;
    }
    self[n] = '\0';
    slash = strrchr(self, '/');
    if (slash)
        *slash = '\0';
    util_fmt(out, cap, "%s/%s", self, name);
}

/* The IPv4 address of interface `name`, or (name NULL) of the first one
 * that is up and not loopback, as the scheduler itself chooses. */
static int s_iface_ipv4(const char *name, char *out, size_t cap, char *names, size_t ncap)
{
    struct ifaddrs *ifs = NULL, *i;
    int rc = -1;
    size_t nl = 0;

    if (names && ncap)
        names[0] = '\0';
    if (getifaddrs(&ifs) < 0)
        return -1;
    for (i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET)
            continue;
        if (names && nl + strlen(i->ifa_name) + 3 < ncap) {
            int w = snprintf(names + nl, ncap - nl, "%s%s", nl ? ", " : "", i->ifa_name);
            if (w > 0)
                nl += (size_t)w;
        }
        if (name ? strcmp(i->ifa_name, name) != 0
                 : ((i->ifa_flags & IFF_LOOPBACK) || !(i->ifa_flags & IFF_UP)))
            continue;
        if (rc < 0 &&
            inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, out,
                      (socklen_t)cap))
            rc = 0;
    }
    freeifaddrs(ifs);
    return rc;
}

static void s_parse(jq_t *q, int argc, char **argv)
{
    opts_t *o = &q->o;
    jq_spec_t *s = &q->spec;
    static char wbin[PATH_MAX], sbin[PATH_MAX], logdir[PATH_MAX];
    char why[256];
    int c, i, run_at = -1;
    uint64_t mem;

    memset(o, 0, sizeof(*o));
    memset(s, 0, sizeof(*s));
    o->port = SHOAL_DEFAULT_PORT;
    o->njobs = -1;
    o->wait_count = 5;
    o->adapt_interval = 2.0;
    o->poll_interval = 5.0;
    o->cancel_timeout = 30.0;
    o->margin = -1;
    s->job_name = "shoal-worker";
    s->cores = 1;
    s->processes = 1;
    s->walltime = 3600;
    s->death_timeout = 60;

    if (argc < 2)
        s_die_usage("which batch system: slurm or pbs?");
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        s_usage(stdout);
        exit(0);
    }
    if (!strcmp(argv[1], "--version")) {
        printf(PROG " %s\n", SHOAL_VERSION);
        exit(0);
    }
    if (!strcmp(argv[1], "slurm"))
        o->sys = JQ_SLURM;
    else if (!strcmp(argv[1], "pbs"))
        o->sys = JQ_PBS;
    else
        s_die_usage("the first argument is the batch system, slurm or pbs, not '%s'",
                    argv[1]);
    s->sys = o->sys;

    /* Everything after --run belongs to the program: cut it off before
     * getopt could permute or parse it. */
    for (i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--run")) {
            run_at = i;
            break;
        }
        if (s_takes_value(argv[i]))
            i++;
    }
    if (run_at > 0) {
        if (run_at + 1 >= argc)
            s_die_usage("--run needs a PROGRAM");
        o->run_argv = argv + run_at + 1;
        argc = run_at;
    }

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc - 1, argv + 1, "+:h", s_longopts, NULL)) != -1) {
        switch (c) {
        case O_HOST:
            /* What the scheduler's --host accepts, less its '*'. */
            if (!*optarg || strlen(optarg) > 200 ||
                strspn(optarg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                               "0123456789.-_:") != strlen(optarg))
                s_die_usage("--host '%s' is not a host name or address", optarg);
            o->host = optarg;
            break;
        case O_IFACE:
            if (!*optarg || strlen(optarg) >= IF_NAMESIZE)
                s_die_usage("--interface '%s' is not an interface name", optarg);
            o->iface = optarg;
            break;
        case O_PORT:
            o->port = s_long_opt("scheduler-port", optarg, 0, 65535);
            break;
        case O_SFILE:
            if (!*optarg || strlen(optarg) >= PATH_MAX)
                s_die_usage("--scheduler-file: bad path");
            o->sfile_arg = optarg;
            break;
        case O_JOBS:
            o->njobs = s_long_opt("jobs", optarg, 0, MAX_JOBS);
            break;
        case O_CORES:
            s->cores = (int)s_long_opt("cores", optarg, 1, JQ_MAX_CORES);
            break;
        case O_PROCS:
            s->processes = (int)s_long_opt("processes", optarg, 1, JQ_MAX_CORES);
            break;
        case O_MEMORY:
            if (util_parse_size(optarg, &mem) < 0 || mem < (1u << 20) ||
                mem > (1ULL << 50))
                s_die_usage("--memory: '%s' is not a size from 1MiB to 1PiB (e.g. 4GB, "
                            "500MiB)", optarg);
            s->memory = mem;
            break;
        case O_WALLTIME:
            if (jq_parse_walltime(optarg, &s->walltime) < 0)
                s_die_usage("--walltime: '%s' is not HH:MM:SS, D-HH:MM:SS, MM:SS or a "
                            "duration like 2h (at most 366 days)", optarg);
            break;
        case O_QUEUE:
            if (!jq_valid_word(optarg, why, sizeof(why)))
                s_die_usage("--queue '%s' %s", optarg, why);
            s->queue = optarg;
            break;
        case O_ACCOUNT:
            if (!jq_valid_word(optarg, why, sizeof(why)))
                s_die_usage("--account '%s' %s", optarg, why);
            s->account = optarg;
            break;
        case O_NAME:
            if (!jq_valid_name(optarg, why, sizeof(why)))
                s_die_usage("--job-name '%s' %s", optarg, why);
            s->job_name = optarg;
            break;
        case O_EXTRA:
            if (!jq_valid_directive(optarg, why, sizeof(why)))
                s_die_usage("--job-extra '%s' %s", optarg, why);
            if (s->nextra >= JQ_MAX_EXTRA)
                s_die_usage("too many --job-extra (at most %d)", JQ_MAX_EXTRA);
            s->extra[s->nextra++] = optarg;
            break;
        case O_PROLOGUE:
            if (!jq_valid_line(optarg, why, sizeof(why)))
                s_die_usage("--prologue %s", why);
            if (s->nprologue >= JQ_MAX_EXTRA)
                s_die_usage("too many --prologue (at most %d)", JQ_MAX_EXTRA);
            s->prologue[s->nprologue++] = optarg;
            break;
        case O_LOGDIR:
            if (!*optarg || strlen(optarg) >= JQ_PATH_MAX)
                s_die_usage("--log-directory: bad path");
            o->log_dir = optarg;
            break;
        case O_WBIN:
            if (!jq_valid_arg(optarg, why, sizeof(why)) || strlen(optarg) >= PATH_MAX)
                s_die_usage("--worker-bin %s", why);
            o->worker_bin = optarg;
            break;
        case O_WEXTRA:
            if (!jq_valid_arg(optarg, why, sizeof(why)))
                s_die_usage("--worker-extra %s", why);
            if (s->nworker_extra >= JQ_MAX_EXTRA)
                s_die_usage("too many --worker-extra (at most %d)", JQ_MAX_EXTRA);
            s->worker_extra[s->nworker_extra++] = optarg;
            break;
        case O_DEATH:
            s->death_timeout = (long)s_duration_opt("death-timeout", optarg, 1, 30 * 86400);
            break;
        case O_MARGIN:
            o->margin = s_duration_opt("lifetime-margin", optarg, 0, 366 * 86400);
            break;
        case O_ADAPT: {
            const char *colon = strchr(optarg, ':');
            char lo[32];
            if (!colon || (size_t)(colon - optarg) >= sizeof(lo))
                s_die_usage("--adapt: '%s' is not MIN:MAX", optarg);
            util_fmt(lo, sizeof(lo), "%.*s", (int)(colon - optarg), optarg);
            o->adapt_min = s_long_opt("adapt (MIN)", lo, 0, MAX_JOBS);
            o->adapt_max = s_long_opt("adapt (MAX)", colon + 1, 1, MAX_JOBS);
            if (o->adapt_min > o->adapt_max)
                s_die_usage("--adapt: MIN %ld is more than MAX %ld", o->adapt_min,
                            o->adapt_max);
            o->adapt = 1;
            break;
        }
        case O_ADAPT_INT:
            o->adapt_interval = s_duration_opt("adapt-interval", optarg, 0.1, 3600);
            break;
        case O_WAIT_COUNT:
            o->wait_count = s_long_opt("adapt-wait-count", optarg, 1, 100000);
            break;
        case O_POLL:
            o->poll_interval = s_duration_opt("poll-interval", optarg, 0.2, 3600);
            break;
        case O_CANCEL_TO:
            o->cancel_timeout = s_duration_opt("cancel-timeout", optarg, 0, 3600);
            break;
        case O_DRY:
            o->dry_run = 1;
            break;
        case O_SBIN:
            if (!*optarg || strlen(optarg) >= PATH_MAX)
                s_die_usage("--scheduler-bin: bad path");
            o->sched_bin = optarg;
            break;
        case O_HELP:
        case 'h':
            s_usage(stdout);
            exit(0);
        case O_VERSION:
            printf(PROG " %s\n", SHOAL_VERSION);
            exit(0);
        case ':':
            s_die_usage("option '%s' needs a value", argv[optind]);
        default:
            s_die_usage("unknown option '%s'", argv[optind]);
        }
    }
    if (optind + 1 < argc)
        s_die_usage("unexpected argument '%s'", argv[optind + 1]);

    /* Cross-checks. */
    if (o->host && o->iface)
        s_die_usage("give --host or --interface, not both");
    if (s->processes > s->cores || s->cores % s->processes)
        s_die_usage("--cores %d cannot be split evenly into --processes %d", s->cores,
                    s->processes);
    if (o->adapt && o->njobs >= 0 && (o->njobs < o->adapt_min || o->njobs > o->adapt_max))
        s_die_usage("--jobs %ld is outside --adapt %ld:%ld", o->njobs, o->adapt_min,
                    o->adapt_max);
    if (o->njobs < 0)
        o->njobs = o->adapt ? o->adapt_min : 1;
    if (o->dry_run && o->port == 0)
        s_die_usage("--dry-run needs a fixed --scheduler-port (0 is chosen only when the "
                    "scheduler starts)");
    if (o->margin >= (double)s->walltime)
        s_die_usage("--lifetime-margin is not shorter than the walltime");
    s->lifetime = jq_lifetime(s->walltime, o->margin);

    /* Paths written into the script are absolute. */
    if (o->log_dir) {
        char want[PATH_MAX + JQ_PATH_MAX], cwd[PATH_MAX];
        /* Refuse a bad name before creating anything. */
        if (o->log_dir[0] == '/')
            util_fmt(want, sizeof(want), "%s", o->log_dir);
        else if (getcwd(cwd, sizeof(cwd)))
            util_fmt(want, sizeof(want), "%s/%s", cwd, o->log_dir);
        else
            s_die_usage("--log-directory: cannot find the current directory");
        if (!jq_valid_path(want, why, sizeof(why)))
            s_die_usage("--log-directory '%s' %s", o->log_dir, why);
        if (util_mkdir_p(o->log_dir) < 0)
            s_die_usage("--log-directory %s: cannot create it: %s", o->log_dir,
                        strerror(errno));
        if (!realpath(o->log_dir, logdir))
            s_die_usage("--log-directory %s: %s", o->log_dir, strerror(errno));
        if (!jq_valid_path(logdir, why, sizeof(why)))
            s_die_usage("--log-directory '%s' %s", logdir, why);
        s->log_dir = logdir;
    }
    if (o->worker_bin) {
        if (o->worker_bin[0] == '/') {
            util_fmt(wbin, sizeof(wbin), "%s", o->worker_bin);
        } else if (!realpath(o->worker_bin, wbin)) {
            s_die_usage("--worker-bin %s: %s", o->worker_bin, strerror(errno));
        }
    } else {
        s_sibling("shoal-worker", wbin, sizeof(wbin));
    }
    if (access(wbin, X_OK) != 0)
        log_warn("the worker program %s is not executable here; the jobs need it at that "
                 "path", wbin);
    s->worker_bin = wbin;
    if (o->sched_bin)
        util_fmt(sbin, sizeof(sbin), "%s", o->sched_bin);
    else
        s_sibling("shoal-scheduler", sbin, sizeof(sbin));
    o->sched_bin = sbin;
    o->worker_bin = wbin;
}

/* ---- processes ------------------------------------------------------------ */

/*
 * fork + exec of `path` with `argv` and `envp`.  Between fork and exec only
 * async-signal-safe calls (libshoal's I/O thread may exist).  The child
 * dies with us (PR_SET_PDEATHSIG, SIGTERM: an orderly stop), gets the
 * default signal mask and SIGPIPE disposition, and leads its own process
 * group when `own_group` is set.
 */
static pid_t s_spawn(const char *path, char *const argv[], char *const envp[], int own_group)
{
    pid_t parent = getpid(), pid = fork();

    if (pid != 0)
        return pid;
    {
        struct sigaction sa;
        sigset_t none;

        if (own_group)
            setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127);
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = SIG_DFL;
        sigaction(SIGPIPE, &sa, NULL);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execve(path, argv, envp);
        {
            static const char msg[] = PROG ": cannot execute a program\n";
            ssize_t w = write(2, msg, sizeof(msg) - 1);
            (void)w;
        }
        _exit(127);
    }
}

/* SIGTERM, wait up to `secs`, then SIGKILL; returns the wait status. */
static int s_stop_child(pid_t pid, double secs, const char *what)
{
    double end = util_now() + secs;
    int st = 0;

    if (pid <= 0)
        return 0;
    kill(pid, SIGTERM);
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR))
            return st;
        if (util_now() >= end)
            break;
        usleep(20000);
    }
    log_warn("%s (pid %d) still running %.0f s after SIGTERM: killing it", what, (int)pid,
             secs);
    kill(pid, SIGKILL);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return st;
}

/* Start the scheduler and wait for its scheduler file. */
static int s_start_scheduler(jq_t *q)
{
    char port[16], err[512];
    char *argv[12];
    double end;
    int k = 0, st;

    util_fmt(port, sizeof(port), "%ld", q->o.port);
    argv[k++] = (char *)q->o.sched_bin;
    if (q->o.host) {
        argv[k++] = "--host";
        argv[k++] = (char *)q->o.host;
    }
    argv[k++] = "--port";
    argv[k++] = port;
    argv[k++] = "--scheduler-file";
    argv[k++] = q->sfile;
    argv[k] = NULL;
    if (access(q->o.sched_bin, X_OK) != 0) {
        log_err("cannot run the scheduler %s: %s", q->o.sched_bin, strerror(errno));
        return -1;
    }
    /* A file left by an earlier run would give us its address. */
    if (unlink(q->sfile) < 0 && errno != ENOENT) {
        log_err("cannot replace the scheduler file %s: %s", q->sfile, strerror(errno));
        return -1;
    }
    /* Its own process group: a Ctrl-C at the terminal reaches us, and we stop
     * the scheduler after the jobs, not before. */
    q->sched_pid = s_spawn(q->o.sched_bin, argv, environ, 1);
    if (q->sched_pid < 0) {
        log_err("cannot start the scheduler: %s", strerror(errno));
        return -1;
    }
    end = util_now() + SCHED_START_WAIT;
    for (;;) {
        if (util_sfile_read(q->sfile, 0, q->address, sizeof(q->address), err,
                            sizeof(err)) == 0)
            return 0;
        if (waitpid(q->sched_pid, &st, WNOHANG) == q->sched_pid) {
            q->sched_pid = 0;
            log_err("the scheduler exited at start (status %d): see its messages above",
                    WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
            return -1;
        }
        if (util_now() > end) {
            log_err("the scheduler did not write %s within %.0f s: %s", q->sfile,
                    SCHED_START_WAIT, err);
            return -1;
        }
        usleep(20000);
    }
}

/* Start the --run program with SHOAL_SCHEDULER (and _FILE) set, in our
 * process group (a Ctrl-C reaches it as it would without us). */
static int s_start_program(jq_t *q)
{
    char path[PATH_MAX], *envp_buf[2], **envp;
    const char *name = q->o.run_argv[0], *pathenv = getenv("PATH"), *p, *e;
    size_t n = 0, k = 0, i;
    int found = 0;

    if (strchr(name, '/')) {
        found = util_fmt(path, sizeof(path), "%s", name) == 0 && access(path, X_OK) == 0;
    } else {
        for (p = pathenv ? pathenv : "/usr/bin:/bin"; *p && !found; p = *e ? e + 1 : e) {
            e = strchr(p, ':');
            if (!e)
                e = p + strlen(p);
            found = e > p && util_fmt(path, sizeof(path), "%.*s/%s", (int)(e - p), p, name) == 0 &&
                    access(path, X_OK) == 0;
        }
    }
    if (!found) {
        log_err("--run: cannot execute '%s': not found or not executable", name);
        return -1;
    }
    while (environ[n])
        n++;
    if (!(envp = calloc(n + 3, sizeof(*envp))))
        return -1;
    for (i = 0; i < n; i++)
        if (strncmp(environ[i], "SHOAL_SCHEDULER=", 16) != 0 &&
            strncmp(environ[i], "SHOAL_SCHEDULER_FILE=", 21) != 0)
            envp[k++] = environ[i];
    if (asprintf(&envp_buf[0], "SHOAL_SCHEDULER=%s", q->address) < 0) {
        free(envp);
        return -1;
    }
    if (asprintf(&envp_buf[1], "SHOAL_SCHEDULER_FILE=%s", q->sfile) < 0) {
        free(envp_buf[0]);
        free(envp);
        return -1;
    }
    envp[k++] = envp_buf[0];
    envp[k++] = envp_buf[1];
    envp[k] = NULL;
    q->prog_pid = s_spawn(path, q->o.run_argv, envp, 0);
    free(envp_buf[0]);
    free(envp_buf[1]);
    free(envp);
    if (q->prog_pid < 0) {
        log_err("--run: cannot start %s: %s", name, strerror(errno));
        q->prog_pid = 0;
        return -1;
    }
    log_info("running %s (pid %d)", name, (int)q->prog_pid);
    return 0;
}

/* ---- jobs ------------------------------------------------------------------ */

static job_t *s_find(jq_t *q, const char *id, size_t len)
{
    uint64_t key = util_fnv1a64(id, len);
    job_t *j;

    if (!key)
        key = 1;
    j = u64map_get(q->by_id, key);
    return j && strlen(j->id) == len && !memcmp(j->id, id, len) ? j : NULL;
}

/* The job a worker belongs to, from its name: NAME-ID, or NAME-ID-i with
 * --processes > 1 (the worker supervisor numbers its children). */
static job_t *s_job_of_worker(jq_t *q, const char *wname)
{
    size_t pl = strlen(q->prefix), n;
    const char *rest, *dash;

    if (strncmp(wname, q->prefix, pl) != 0)
        return NULL;
    rest = wname + pl;
    n = strlen(rest);
    if (q->spec.processes > 1) {
        dash = strrchr(rest, '-');
        if (!dash || !dash[1] || strspn(dash + 1, "0123456789") != strlen(dash + 1))
            return NULL;
        n = (size_t)(dash - rest);
    }
    return s_find(q, rest, n);
}

static int s_active(const job_t *j)
{
    return !j->ended && !j->cancelled;
}

static size_t s_count_active(const jq_t *q)
{
    size_t i, n = 0;

    for (i = 0; i < q->njobs; i++)
        n += s_active(q->jobs[i]);
    return n;
}

static int s_submit_one(jq_t *q)
{
    char id[BATCH_ID_MAX], err[1024];
    job_t *j;

    if (q->failed_starts >= MAX_FAILED_STARTS || util_now() < q->submit_after)
        return -1;
    /* qsub runs in the log directory: PBS writes the output where the
     * directives say, and Slurm's qsub wrapper, which overrides them with
     * NAME.oJOBID in the directory it runs in, then puts it there too.
     * Not interruptible: a submission killed half-way could leave a job
     * in the queue that we never heard of. */
    if (batch_submit(q->o.sys, q->script_path,
                     q->o.sys == JQ_PBS ? q->spec.log_dir : NULL, NULL, id, sizeof(id), err,
                     sizeof(err)) < 0) {
        if (!q->submitted_any) {
            /* The first submission: most likely the options (a queue that
             * does not exist...), which retrying will not fix. */
            log_err("cannot submit the job: %s", err);
            q->stopping = 1;
            q->exit_code = 1;
            return -1;
        }
        q->submit_backoff = q->submit_backoff ? q->submit_backoff * 2 : SUBMIT_BACKOFF_MIN;
        if (q->submit_backoff > SUBMIT_BACKOFF_MAX)
            q->submit_backoff = SUBMIT_BACKOFF_MAX;
        q->submit_after = util_now() + q->submit_backoff;
        log_err("cannot submit a job: %s (trying again in %.0f s)", err, q->submit_backoff);
        return -1;
    }
    q->submitted_any = 1;
    q->submit_backoff = 0;
    if (q->njobs == q->capjobs) {
        size_t ncap = q->capjobs ? q->capjobs * 2 : 16;
        job_t **nj = realloc(q->jobs, ncap * sizeof(*nj));
        if (!nj)
            goto oom;
        q->jobs = nj;
        q->capjobs = ncap;
    }
    if (!(j = calloc(1, sizeof(*j))))
        goto oom;
    util_fmt(j->id, sizeof(j->id), "%s", id);
    j->key = util_fnv1a64(id, strlen(id));
    if (!j->key)
        j->key = 1;
    j->submitted = util_now();
    if (s_find(q, id, strlen(id)) || u64map_put(q->by_id, j->key, j) < 0) {
        /* The same id twice (or a hash collision): track it without the map;
         * its workers are then not matched, which only affects adapt. */
        log_warn("job %s: id already known or not indexable", id);
    }
    q->jobs[q->njobs++] = j;
    log_info("submitted job %s (%s)", id, q->spec.job_name);
    return 0;
oom:
    log_err("out of memory: job %s is not tracked; cancelling it", id);
    {
        const char *ids[1] = {id};
        batch_cancel(q->o.sys, ids, 1, NULL, err, sizeof(err));
    }
    return -1;
}

static void s_submit(jq_t *q, size_t n)
{
    size_t i;

    for (i = 0; i < n && !q->stopping; i++)
        if (s_submit_one(q) < 0)
            break;
}

/* Cancel the given jobs with one command (per 100). */
static void s_cancel(jq_t *q, job_t **js, size_t n, const char *why)
{
    const char **ids;
    char err[1024];
    size_t i;

    if (!n)
        return;
    if (!(ids = calloc(n, sizeof(*ids))))
        return;
    for (i = 0; i < n; i++) {
        ids[i] = js[i]->id;
        js[i]->cancelled = 1;
        log_info("cancelling job %s (%s)", js[i]->id, why);
    }
    if (batch_cancel(q->o.sys, ids, n, q->stopping ? NULL : &q->stop_sigs, err,
                     sizeof(err)) < 0)
        log_err("%s", err);
    free(ids);
}

/* A job left the queue: report and forget it. */
static void s_job_ended(jq_t *q, size_t idx)
{
    job_t *j = q->jobs[idx];

    if (j->cancelled) {
        log_info("job %s has ended (cancelled)", j->id);
    } else if (j->ever) {
        log_info("job %s has ended (its workers retired or the walltime ran out)", j->id);
        q->failed_starts = 0;
    } else {
        q->failed_starts++;
        if (q->spec.log_dir)
            log_err("job %s ended before any of its workers connected: see its output in "
                    "%s", j->id, q->spec.log_dir);
        else
            log_err("job %s ended before any of its workers connected: see its output "
                    "file", j->id);
        if (q->failed_starts >= MAX_FAILED_STARTS && !q->stopping) {
            log_err("%d jobs in a row ended before their workers connected: giving up",
                    q->failed_starts);
            q->stopping = 1;
            q->exit_code = 1;
        }
    }
    if (u64map_get(q->by_id, j->key) == j)
        u64map_del(q->by_id, j->key);
    memmove(q->jobs + idx, q->jobs + idx + 1, (q->njobs - idx - 1) * sizeof(*q->jobs));
    q->njobs--;
    free(j);
}

/* Ask the batch system about every job we track; report state changes. */
static int s_poll_jobs(jq_t *q, int interruptible)
{
    const char **ids;
    char (*states)[BATCH_STATE_MAX];
    char err[1024];
    size_t i, n = q->njobs;
    int rc = 0;

    if (!n)
        return 0;
    ids = calloc(n, sizeof(*ids));
    states = calloc(n, sizeof(*states));
    if (!ids || !states) {
        free(ids);
        free(states);
        return -1;
    }
    for (i = 0; i < n; i++) {
        ids[i] = q->jobs[i]->id;
        util_fmt(states[i], BATCH_STATE_MAX, "%s", q->jobs[i]->state);
    }
    if (batch_query(q->o.sys, ids, n, interruptible ? &q->stop_sigs : NULL, states, err,
                    sizeof(err)) < 0) {
        log_warn("cannot get the jobs' states: %s", err);
        rc = -1;
        goto out;
    }
    for (i = 0; i < n; i++) {
        job_t *j = q->jobs[i];
        if (states[i][0] && strcmp(states[i], j->state) != 0) {
            log_info("job %s: %s", j->id, states[i]);
            util_fmt(j->state, sizeof(j->state), "%s", states[i]);
        }
        if (batch_state_ended(q->o.sys, states[i]))
            j->ended = 1;
    }
    /* Jobs are indexed by position: remove the ended ones last. */
    for (i = q->njobs; i-- > 0;)
        if (q->jobs[i]->ended)
            s_job_ended(q, i);
out:
    free(ids);
    free(states);
    return rc;
}

/* Refresh the workers of each job from the scheduler's status; returns the
 * status for the caller (free with shoal_status_free), or -1. */
static int s_refresh(jq_t *q, shoal_status_info_t *st)
{
    shoal_error_t err;
    size_t i;
    int w;

    if (shoal_status(q->client, st, 10.0, &err) < 0) {
        log_warn("cannot get the scheduler's status: %s", err.msg);
        return -1;
    }
    for (i = 0; i < q->njobs; i++) {
        q->jobs[i]->nworkers = 0;
        q->jobs[i]->busy = 0;
    }
    for (w = 0; w < st->nworkers; w++) {
        job_t *j = s_job_of_worker(q, st->workers[w].name);
        if (!j)
            continue;
        j->nworkers++;
        j->busy += st->workers[w].running;
    }
    for (i = 0; i < q->njobs; i++) {
        job_t *j = q->jobs[i];
        if (j->nworkers && !j->ever) {
            j->ever = 1;
            q->failed_starts = 0;
            log_info("job %s: workers connected", j->id);
        }
    }
    if (st->nworkers != q->total_workers) {
        log_info("%d workers, %d threads connected", st->nworkers, st->nthreads);
        q->total_workers = st->nworkers;
    }
    return 0;
}

/* Keep --jobs N jobs (without --adapt). */
static void s_scale_fixed(jq_t *q)
{
    size_t active = s_count_active(q);

    if (active < (size_t)q->o.njobs)
        s_submit(q, (size_t)q->o.njobs - active);
}

/*
 * Adapt: more jobs while tasks are ready and no thread is free, fewer when
 * jobs stay idle.  Jobs whose workers have not connected yet count as the
 * cores they will bring, so a slow queue does not make us submit without
 * end.
 */
static void s_adapt(jq_t *q, const shoal_status_info_t *st)
{
    size_t active = s_count_active(q), i, pending = 0, ncancel = 0;
    long idle_threads = 0, cores = q->spec.cores;
    job_t **cancel;
    int w;

    for (w = 0; w < st->nworkers; w++) {
        long free_t = (long)st->workers[w].nthreads - st->workers[w].running;
        if (free_t > 0)
            idle_threads += free_t;
    }
    for (i = 0; i < q->njobs; i++)
        if (s_active(q->jobs[i]) && q->jobs[i]->nworkers == 0)
            pending++;

    if (st->ready > 0 && idle_threads == 0) {
        /* Demand: tasks ready to run and nowhere to run them. */
        uint64_t coming = (uint64_t)pending * (uint64_t)cores, want = 0;
        q->no_demand = 0;
        if (st->ready > coming)
            want = (st->ready - coming + (uint64_t)cores - 1) / (uint64_t)cores;
        if (active + want > (size_t)q->o.adapt_max)
            want = (size_t)q->o.adapt_max > active ? (size_t)q->o.adapt_max - active : 0;
        if (want) {
            log_info("adapt: %llu tasks ready, no free thread: submitting %llu jobs",
                     (unsigned long long)st->ready, (unsigned long long)want);
            s_submit(q, (size_t)want);
        }
        for (i = 0; i < q->njobs; i++)
            q->jobs[i]->idle_checks = 0;
    } else {
        q->no_demand++;
        for (i = 0; i < q->njobs; i++) {
            job_t *j = q->jobs[i];
            if (j->nworkers > 0 && j->busy == 0 && st->ready == 0)
                j->idle_checks++;
            else
                j->idle_checks = 0;
        }
    }

    if (active < (size_t)q->o.adapt_min) {
        s_submit(q, (size_t)q->o.adapt_min - active);
        return;
    }
    if (active <= (size_t)q->o.adapt_min || q->no_demand < q->o.wait_count)
        return;
    /* Scale down: jobs still waiting in the queue first (newest first),
     * then jobs whose workers stayed idle. */
    if (!(cancel = calloc(q->njobs, sizeof(*cancel))))
        return;
    for (i = q->njobs; i-- > 0 && active - ncancel > (size_t)q->o.adapt_min;) {
        job_t *j = q->jobs[i];
        if (s_active(j) && j->nworkers == 0 && !j->ever)
            cancel[ncancel++] = j;
    }
    for (i = 0; i < q->njobs && active - ncancel > (size_t)q->o.adapt_min; i++) {
        job_t *j = q->jobs[i];
        if (s_active(j) && j->nworkers > 0 && j->idle_checks >= q->o.wait_count)
            cancel[ncancel++] = j;
    }
    s_cancel(q, cancel, ncancel, "adapt: not needed");
    free(cancel);
}

static void s_status_tick(jq_t *q)
{
    shoal_status_info_t st;

    if (s_refresh(q, &st) < 0) {
        /* Without status, fixed scaling still works; adapt waits. */
        if (!q->o.adapt)
            s_scale_fixed(q);
        return;
    }
    if (q->o.adapt)
        s_adapt(q, &st);
    else
        s_scale_fixed(q);
    shoal_status_free(&st);
}

/* ---- lifecycle ------------------------------------------------------------- */

static void s_on_child(jq_t *q)
{
    int st;

    if (q->prog_pid > 0 && waitpid(q->prog_pid, &st, WNOHANG) == q->prog_pid) {
        q->prog_pid = 0;
        q->prog_status = st;
        if (WIFEXITED(st))
            log_info("%s exited with status %d: stopping", q->o.run_argv[0],
                     WEXITSTATUS(st));
        else
            log_info("%s ended by signal %d: stopping", q->o.run_argv[0], WTERMSIG(st));
        q->exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        q->stopping = 1;
    }
    if (q->sched_pid > 0 && waitpid(q->sched_pid, &st, WNOHANG) == q->sched_pid) {
        q->sched_pid = 0;
        if (!q->stopping) {
            log_err("the scheduler exited unexpectedly (status %d): stopping",
                    WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
            q->stopping = 1;
            q->exit_code = 1;
        }
    }
}

static void s_loop(jq_t *q)
{
    double status_every = q->o.adapt ? q->o.adapt_interval : 1.0;
    double next_poll = util_now() + 1.0, next_status = util_now();

    while (!q->stopping) {
        double now = util_now(), wait = next_poll < next_status ? next_poll : next_status;
        struct timespec ts;
        siginfo_t si;
        int sig;

        wait -= now;
        if (wait < 0)
            wait = 0;
        ts.tv_sec = (time_t)wait;
        ts.tv_nsec = (long)((wait - (double)ts.tv_sec) * 1e9);
        sig = sigtimedwait(&q->sigs, &si, &ts);
        if (sig == SIGCHLD) {
            s_on_child(q);
        } else if (sig > 0) {
            log_info("SIG%s received: cancelling the jobs and stopping", sigabbrev_np(sig));
            q->stopping = 1;
            break;
        }
        if (q->stopping)
            break;
        now = util_now();
        if (now >= next_status) {
            s_status_tick(q);
            next_status = util_now() + status_every;
        }
        if (now >= next_poll && !q->stopping) {
            s_poll_jobs(q, 1);
            next_poll = util_now() + q->o.poll_interval;
        }
    }
}

static void s_shutdown(jq_t *q)
{
    job_t **live;
    size_t i, n = 0;
    double end;

    q->stopping = 1;
    if (q->prog_pid > 0) {
        int st = s_stop_child(q->prog_pid, STOP_WAIT, q->o.run_argv[0]);
        q->prog_pid = 0;
        q->exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
    if (q->njobs && (live = calloc(q->njobs, sizeof(*live)))) {
        for (i = 0; i < q->njobs; i++)
            if (!q->jobs[i]->ended)
                live[n++] = q->jobs[i];
        s_cancel(q, live, n, "shutting down");
        free(live);
    }
    shoal_disconnect(q->client);
    q->client = NULL;
    if (q->sched_pid > 0) {
        s_stop_child(q->sched_pid, STOP_WAIT, "the scheduler");
        q->sched_pid = 0;
    }
    /* Wait (bounded) until the jobs have left the queue, so that nothing of
     * ours is still running when we return. */
    end = util_now() + q->o.cancel_timeout;
    while (q->njobs && util_now() < end) {
        struct timespec half = {0, 500000000L};
        s_poll_jobs(q, 0);
        if (!q->njobs)
            break;
        /* Another Ctrl-C: stop waiting (the jobs are cancelled already). */
        if (sigtimedwait(&q->stop_sigs, NULL, &half) > 0) {
            log_warn("not waiting for the jobs to leave the queue");
            break;
        }
    }
    for (i = 0; i < q->njobs; i++) {
        log_warn("job %s is still in the queue (%s)", q->jobs[i]->id,
                 q->jobs[i]->state[0] ? q->jobs[i]->state : "state unknown");
        free(q->jobs[i]);
    }
    q->njobs = 0;
}

static void s_cleanup_files(jq_t *q)
{
    if (q->script_path[0])
        unlink(q->script_path);
    if (q->rundir[0]) {
        if (!q->o.sfile_arg)
            unlink(q->sfile);
        rmdir(q->rundir);
    }
}

/* A private directory for the script and the scheduler file. */
static int s_make_rundir(jq_t *q)
{
    const char *base = getenv("TMPDIR");
    char why[256];

    if (!base || !*base || !jq_valid_path(base, why, sizeof(why)))
        base = "/tmp";
    if (util_fmt(q->rundir, sizeof(q->rundir), "%s/shoal-jobqueue-XXXXXX", base) < 0 ||
        !mkdtemp(q->rundir)) {
        log_err("cannot create a temporary directory in %s: %s", base, strerror(errno));
        q->rundir[0] = '\0';
        return -1;
    }
    util_fmt(q->script_path, sizeof(q->script_path), "%s/%s.sh", q->rundir,
             q->spec.job_name);
    if (q->o.sfile_arg)
        util_fmt(q->sfile, sizeof(q->sfile), "%s", q->o.sfile_arg);
    else
        util_fmt(q->sfile, sizeof(q->sfile), "%s/scheduler.json", q->rundir);
    return 0;
}

static int s_write_script(jq_t *q)
{
    int fd = open(q->script_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);

    if (fd < 0 || util_write_all(fd, q->script, strlen(q->script)) < 0) {
        log_err("cannot write the job script %s: %s", q->script_path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return close(fd);
}

static int s_make_script(jq_t *q)
{
    char err[512];

    q->spec.address = q->address;
    if (!(q->script = jq_script(&q->spec, err, sizeof(err)))) {
        log_err("cannot write the job script: %s", err);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    jq_t jq, *q = &jq;
    shoal_connect_opts_t co;
    shoal_error_t err;
    char host[256], names[512];

    memset(q, 0, sizeof(*q));
    log_init(PROG);
    s_parse(q, argc, argv);
    util_fmt(q->prefix, sizeof(q->prefix), "%s-", q->spec.job_name);

    if (q->o.iface) {
        if (s_iface_ipv4(q->o.iface, host, sizeof(host), names, sizeof(names)) < 0)
            s_die_usage("--interface %s: no IPv4 address on it (interfaces with one: %s)",
                        q->o.iface, names[0] ? names : "none");
        q->o.host = host;
    }

    if (q->o.dry_run) {
        /* The address the scheduler would advertise. */
        const char *h = q->o.host;
        if (!h)
            h = s_iface_ipv4(NULL, host, sizeof(host), NULL, 0) == 0 ? host
                                                                     : util_hostname();
        util_fmt(q->address, sizeof(q->address), "tcp://%s:%ld", h, q->o.port);
        if (s_make_script(q) < 0)
            return EXIT_USAGE;
        fputs(q->script, stdout);
        free(q->script);
        return 0;
    }

    /* Signals are taken synchronously by the loop; blocked before any thread
     * (libshoal's) exists, so that every thread inherits the mask. */
    sigemptyset(&q->stop_sigs);
    sigaddset(&q->stop_sigs, SIGINT);
    sigaddset(&q->stop_sigs, SIGTERM);
    sigaddset(&q->stop_sigs, SIGHUP);
    q->sigs = q->stop_sigs;
    sigaddset(&q->sigs, SIGCHLD);
    sigprocmask(SIG_BLOCK, &q->sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    q->exit_code = 1;
    if (batch_have_commands(q->o.sys, names, sizeof(names)) < 0) {
        log_err("%s not found in PATH: is the %s client installed here?", names,
                q->o.sys == JQ_PBS ? "PBS" : "Slurm");
        return 1;
    }
    if (!(q->by_id = u64map_create(64))) {
        log_err("out of memory");
        return 1;
    }
    if (s_make_rundir(q) < 0)
        goto out;
    if (s_start_scheduler(q) < 0)
        goto out;
    log_info("scheduler at %s (scheduler file %s)", q->address, q->sfile);
    if (s_make_script(q) < 0 || s_write_script(q) < 0)
        goto out;
    log_info("job script %s: %d cores, %d worker processes, walltime %ld s, workers "
             "retire after %ld s", q->script_path, q->spec.cores, q->spec.processes,
             q->spec.walltime, q->spec.lifetime);

    memset(&co, 0, sizeof(co));
    co.address = q->address;
    co.timeout = 10.0;
    co.name = PROG;
    if (!(q->client = shoal_connect_opts(&co, &err))) {
        log_err("cannot connect to the scheduler at %s: %s", q->address, err.msg);
        goto out;
    }
    q->exit_code = 0;
    s_submit(q, (size_t)q->o.njobs);
    if (q->o.run_argv && s_start_program(q) < 0)
        q->exit_code = 1, q->stopping = 1;
    s_loop(q);

out:
    s_shutdown(q);
    s_cleanup_files(q);
    free(q->script);
    free(q->jobs);
    u64map_destroy(q->by_id);
    return q->exit_code;
}
