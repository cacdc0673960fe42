/*
 * jobscript.h - the batch job script of `shoal-jobqueue`: validation of
 * everything that goes into it, and the script text for Slurm (#SBATCH) or
 * PBS (#PBS, in the select=1:ncpus=..:mpiprocs=..:mem=.. form).
 *
 * A script is an ordinary bash job script that a person can read and submit
 * by hand: the directives, the prologue lines, then one `exec` of
 * shoal-worker with every argument single-quoted.  Directives are comment
 * lines to bash, but the batch system parses them, so nothing that could end
 * a line or confuse its parser gets in: each value is checked here before
 * the script is written, and a bad one is refused with a sentence naming
 * the option.
 */
#ifndef SHOAL_JOBQUEUE_JOBSCRIPT_H
#define SHOAL_JOBQUEUE_JOBSCRIPT_H

#include <stddef.h>
#include <stdint.h>

typedef enum { JQ_SLURM = 1, JQ_PBS = 2 } jq_system_t;

#define JQ_MAX_EXTRA 64          /* --job-extra, --prologue, --worker-extra each */
/* Job names, NUL included: NAME-JOBID-i must stay within a worker name's
 * 119 bytes with job ids of up to BATCH_ID_MAX - 1 (63) bytes. */
#define JQ_NAME_MAX 49
#define JQ_WORD_MAX 128          /* queue, account */
#define JQ_DIRECTIVE_MAX 1000    /* one --job-extra */
#define JQ_LINE_MAX 4000         /* one --prologue line */
#define JQ_PATH_MAX 1024         /* paths written into the script */
#define JQ_MAX_CORES 4096

typedef struct jq_spec {
    jq_system_t sys;
    const char *job_name;        /* jq_valid_name */
    int cores;                   /* threads per job, 1..JQ_MAX_CORES */
    int processes;               /* worker processes per job, divides cores */
    uint64_t memory;             /* bytes per job; 0: no memory request */
    long walltime;               /* seconds, > 0 */
    const char *queue;           /* jq_valid_word, or NULL */
    const char *account;         /* jq_valid_word, or NULL */
    const char *extra[JQ_MAX_EXTRA];       /* directives, jq_valid_directive */
    size_t nextra;
    const char *prologue[JQ_MAX_EXTRA];    /* shell lines, jq_valid_line */
    size_t nprologue;
    const char *log_dir;         /* absolute, jq_valid_path, or NULL */
    const char *worker_bin;      /* absolute path of shoal-worker */
    const char *address;         /* tcp://HOST:PORT the workers connect to */
    long lifetime;               /* worker --lifetime in seconds; 0: none */
    long death_timeout;          /* worker --death-timeout in seconds */
    const char *worker_extra[JQ_MAX_EXTRA];  /* more worker arguments */
    size_t nworker_extra;
} jq_spec_t;

/* Validators: 1 if acceptable, else 0 with a reason in err (which may be
 * NULL). */
/* Job names: a letter or digit, then letters, digits, '.', '_', '-'; at most
 * JQ_NAME_MAX - 1 bytes (they become worker names and log file names). */
int jq_valid_name(const char *s, char *err, size_t errcap);
/* Queue and account names: letters, digits and . _ - @ : + only. */
int jq_valid_word(const char *s, char *err, size_t errcap);
/* A directive (the text after "#SBATCH " / "#PBS "): printable ASCII without
 * ` $ ; < > ( ) \ ' " ! and not blank.  '&' and '|' are allowed: Slurm
 * constraint expressions use them, and the line is a comment to bash. */
int jq_valid_directive(const char *s, char *err, size_t errcap);
/* A prologue line: any shell command on one line (no control characters). */
int jq_valid_line(const char *s, char *err, size_t errcap);
/* A path used in a directive: absolute, no white space, control characters,
 * '%' or the characters refused in directives. */
int jq_valid_path(const char *s, char *err, size_t errcap);
/* A word that is quoted into the worker command: no control characters. */
int jq_valid_arg(const char *s, char *err, size_t errcap);

/* Parse a walltime: [D-]HH:MM:SS, MM:SS, or a duration ("90m", "2h",
 * "3600").  Seconds in *out (1 .. 366 days).  0 or -1. */
int jq_parse_walltime(const char *s, long *out);
/* Format seconds as HH:MM:SS (hours may exceed 24). */
void jq_format_walltime(long secs, char *out, size_t cap);

/* Memory request as the batch system writes it (both count in binary
 * units): a whole number of GiB as Slurm "16G" / PBS "16gb", anything else
 * rounded up to whole MiB, Slurm "954M" / PBS "954mb". */
void jq_format_memory(jq_system_t sys, uint64_t bytes, char *out, size_t cap);

/* The default worker lifetime for a walltime: walltime minus a margin of
 * max(60 s, 5%), the margin being at most half the walltime; or walltime
 * minus `margin` when margin >= 0 is given (0: no lifetime).  Returns the
 * lifetime in whole seconds (>= 1), or 0 for none. */
long jq_lifetime(long walltime, double margin);

/* Build the script.  Returns a malloc'd NUL-terminated string, or NULL with
 * a reason in err (invalid spec: EINVAL; ENOMEM). */
char *jq_script(const jq_spec_t *s, char *err, size_t errcap);

/* The shell variable holding the job id inside a job of this system. */
const char *jq_jobid_expr(jq_system_t sys);

#endif
