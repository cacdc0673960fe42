/*
 * shoal.h - the shoal client library (libshoal).
 *
 * A client connects to a scheduler, submits tasks (a function name plus
 * MessagePack arguments, or a command line), and gets futures back.  A
 * background I/O thread owns the socket: futures complete while the caller
 * computes, and every function here may be called from several threads at
 * once.  Nothing here busy-polls; waits sleep on condition variables.
 *
 * Conventions:
 *   - Functions returning int return 0 on success and -1 on failure; functions
 *     returning a pointer return NULL on failure.  On failure, if `err` is not
 *     NULL it holds a sentence a person can read, and errno is set.
 *   - Timeouts are in seconds; a negative timeout waits forever, 0 does not wait.
 *     A wait that times out fails with errno ETIMEDOUT.
 *   - Futures belong to the caller until shoal_release().  Releasing a future
 *     tells the scheduler the result is no longer wanted, so the task record and
 *     result are freed everywhere once nothing else depends on them.
 *   - Byte buffers returned by accessors are owned by the future and stay valid
 *     until it is released.
 */
#ifndef SHOAL_H
#define SHOAL_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "shoal_task.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SHOAL_VERSION "0.1.0"
#define SHOAL_DEFAULT_PORT 8686

typedef struct shoal_client shoal_client_t;
typedef struct shoal_future shoal_future_t;
typedef struct shoal_as_completed shoal_as_completed_t;

typedef struct shoal_error {
    char msg[512];
} shoal_error_t;

/* --- Connecting ------------------------------------------------------------ */

typedef struct shoal_connect_opts {
    /* "tcp://HOST:PORT", "HOST:PORT", "inline://", or NULL.  NULL means:
     * $SHOAL_SCHEDULER if set, else $SHOAL_SCHEDULER_FILE if set, else start a
     * local cluster (a scheduler and `local_nworkers` worker processes as
     * children of this process, torn down by shoal_disconnect()). */
    const char *address;
    const char *scheduler_file;  /* read the address from this JSON file */
    double timeout;              /* connect timeout; 0 means the default, 10 s */
    int local_nworkers;          /* local cluster: 0 means one per core */
    int local_nthreads;          /* local cluster: threads per worker, 0 means 1 */
    const char *name;            /* client name shown in status; may be NULL */
    /* Busy-polling: a thread waiting for a result with at most a few of its
     * tasks unfinished keeps polling the connection for up to this many
     * microseconds before it sleeps, so that a short task's answer does not
     * wait for a sleeping CPU to wake (about half of a round trip on small
     * machines).  It stops on its own while answers take longer than that.
     * 0 means $SHOAL_SPIN_US if set, else 500; negative means never. */
    int spin_us;
} shoal_connect_opts_t;

/* Connect with default options to `address` (see shoal_connect_opts_t). */
shoal_client_t *shoal_connect(const char *address, shoal_error_t *err);

shoal_client_t *shoal_connect_opts(const shoal_connect_opts_t *opts,
                                   shoal_error_t *err);

/* Disconnect: releases every future still held, closes the connection and, for
 * a local cluster, stops the scheduler and workers it started.  Futures and
 * as_completed iterators must not be used afterwards.  Accepts NULL. */
void shoal_disconnect(shoal_client_t *c);

/* The address this client is connected to ("inline://" for inline mode). */
const char *shoal_client_address(const shoal_client_t *c);

/* Block until at least n workers are connected (0 = ok immediately). */
int shoal_wait_for_workers(shoal_client_t *c, int n, double timeout,
                           shoal_error_t *err);

/* Send the shared object at `path` to the scheduler, which hands it to every
 * worker, now and joining later.  Returns once the scheduler has stored it.
 * In inline mode the library is loaded into this process. */
int shoal_upload_library(shoal_client_t *c, const char *path, shoal_error_t *err);

/* --- Submitting ------------------------------------------------------------ */

typedef struct shoal_submit_opts {
    int priority;      /* higher runs first; default 0 */
    int retries;       /* times to rerun a task that failed; default 0 */
    const char *name;  /* optional label shown in errors and status */
    /* Resources the task needs while it runs, as "NAME=AMOUNT[,...]"
     * (e.g. "GPU=1,MEM=4e9"): it runs only on a worker that declared them
     * (shoal-worker --resources) and has that much free, and holds them
     * while it runs.  Names are 1 to 64 letters, digits, '_', '-' or '.',
     * each given once; amounts are positive numbers.  A malformed string
     * fails the submission with EINVAL and says what is wrong.  NULL: none. */
    const char *resources;
    /* Restrict the task to these workers (NULL-terminated list of worker
     * names, at most 1024).  NULL or an empty list: any worker. */
    const char *const *workers;
} shoal_submit_opts_t;

/* Submit `func` with arguments `args` (`len` bytes of ONE MessagePack array).
 * (Inline clients validate `resources` and `workers` but ignore them: they
 * are their own and only worker.)
 * A future packed into the arguments with shoal_pack_future() makes this task
 * depend on it: the task runs after it, with its result in place of the
 * reference.  `opts` may be NULL.  The bytes are copied. */
shoal_future_t *shoal_submit(shoal_client_t *c, const char *func, const void *args,
                             size_t len, const shoal_submit_opts_t *opts,
                             shoal_error_t *err);

/* Submit `func` once per argument array: args[i] of lens[i] bytes.  On success
 * out[0..n-1] hold the futures, in order.  All or nothing: on failure no future
 * is returned. */
int shoal_map(shoal_client_t *c, const char *func, const void *const *args,
              const size_t *lens, size_t n, const shoal_submit_opts_t *opts,
              shoal_future_t **out, shoal_error_t *err);

/* Pack a reference to `f` (an argument that depends on f's result). */
int shoal_pack_future(msgpack_packer *pk, const shoal_future_t *f);

/* --- Command tasks ---------------------------------------------------------- */

/* The built-in function that runs a command.  Its arguments are one map:
 *   {"argv": [str...], "env": [ "K=V"...] | nil, "cwd": str | nil,
 *    "stdin": bin | nil, "timeout": float seconds | nil}
 * and its result a map:
 *   {"exit": int, "signal": int, "timed_out": bool, "stdout": bin, "stderr": bin}
 * A command that ran is a successful task whatever its exit status; a command
 * that could not be started (no such file...) is a failed task. */
#define SHOAL_CMD_FUNC "shoal.cmd"

typedef struct shoal_cmd {
    const char *const *argv;   /* NULL-terminated; argv[0] searched in PATH */
    const char *const *env;    /* NULL-terminated "K=V" list, or NULL to inherit */
    const char *cwd;           /* or NULL */
    const void *stdin_data;    /* or NULL */
    size_t stdin_len;
    double timeout;            /* seconds; <= 0 means none */
} shoal_cmd_t;

typedef struct shoal_cmd_result {
    int exit_code;             /* -1 if killed by a signal */
    int signal;                /* 0 unless killed by a signal */
    int timed_out;
    const char *out;           /* stdout bytes (owned by the future) */
    size_t out_len;
    const char *err;           /* stderr bytes (owned by the future) */
    size_t err_len;
} shoal_cmd_result_t;

/* Pack the arguments of a command task (used by shoal_submit_cmd). */
int shoal_pack_cmd(msgpack_packer *pk, const shoal_cmd_t *cmd);

shoal_future_t *shoal_submit_cmd(shoal_client_t *c, const shoal_cmd_t *cmd,
                                 const shoal_submit_opts_t *opts, shoal_error_t *err);

/* Wait for a command task and decode its result. */
int shoal_cmd_result(shoal_future_t *f, double timeout, shoal_cmd_result_t *out,
                     shoal_error_t *err);

/* --- Futures ------------------------------------------------------------------ */

typedef enum shoal_status {
    SHOAL_PENDING = 0,     /* not finished yet */
    SHOAL_FINISHED = 1,    /* result available */
    SHOAL_ERROR = 2,       /* the task (or one it depends on) failed */
    SHOAL_CANCELLED = 3,   /* cancelled before it finished */
} shoal_status_t;

shoal_status_t shoal_future_status(const shoal_future_t *f);
uint64_t shoal_future_id(const shoal_future_t *f);
/* Error text of a failed or cancelled future, else NULL. */
const char *shoal_future_error(const shoal_future_t *f);
/* Name of the worker a finished or failed task ran on, or NULL if unknown. */
const char *shoal_future_worker(const shoal_future_t *f);

/* Wait up to `timeout` for f.  On success *data and *len are its result: the bytes
 * of one MessagePack object, owned by the future.  A failed or cancelled task
 * fails with its error text in err (errno EIO / ECANCELED).
 *
 * Where results live: a small result (up to 64 KiB packed) comes with the
 * news that the task finished.  A larger one stays on the worker that made
 * it (other tasks that use it fetch it from there); the future is FINISHED
 * and its bytes are fetched from a worker holding them the first time they
 * are asked for here (shoal_result and the calls built on it,
 * shoal_gather), straight from that worker, never through the scheduler.
 * `timeout` bounds the wait for the task; the transfer of a finished
 * result is given at least 60 s whatever `timeout` is, so a 0 timeout
 * returns the bytes of a finished task.  If no holder can send them
 * (workers gone), the scheduler is asked for them again and recomputes the
 * result if it must; a result that cannot be had at all turns the future
 * to SHOAL_ERROR ("... lost ..."). */
int shoal_result(shoal_future_t *f, double timeout, const void **data, size_t *len,
                 shoal_error_t *err);

/* Like shoal_result, unpacked: *obj is valid until the future is released. */
int shoal_result_object(shoal_future_t *f, double timeout, msgpack_object *obj,
                        shoal_error_t *err);

/* Convenience: the result as an integer / a double. */
int shoal_result_i64(shoal_future_t *f, double timeout, int64_t *out, shoal_error_t *err);
int shoal_result_f64(shoal_future_t *f, double timeout, double *out, shoal_error_t *err);

/* Wait until all n futures finished.  Returns 0 if every one succeeded; -1 on
 * timeout (ETIMEDOUT) or if any failed (err names the first failed task).
 * Results kept on workers are fetched, all at once from their holders (see
 * shoal_result), so that afterwards shoal_result with a 0 timeout returns
 * every one without waiting. */
int shoal_gather(shoal_future_t *const *fs, size_t n, double timeout, shoal_error_t *err);

typedef enum shoal_wait_mode {
    SHOAL_ALL_COMPLETED = 0,
    SHOAL_FIRST_COMPLETED = 1,
    SHOAL_FIRST_EXCEPTION = 2,
} shoal_wait_mode_t;

/* Wait on n futures in the given mode.  Returns the number of futures that are
 * done (finished, failed or cancelled) when the wait ends; done[i] (if not
 * NULL) is set to 1 for those.  Returns -1 with ETIMEDOUT if the condition was
 * not met within `timeout` (done[] is still filled). */
int shoal_wait(shoal_future_t *const *fs, size_t n, shoal_wait_mode_t mode,
               double timeout, char *done);

/* Iterate futures in the order they complete.  The iterator holds its own
 * reference to each future; the caller still owns (and releases) its own. */
shoal_as_completed_t *shoal_as_completed(shoal_future_t *const *fs, size_t n);
/* Add one more future to the iterator. */
int shoal_as_completed_add(shoal_as_completed_t *ac, shoal_future_t *f);
/* Next completed future; NULL when all have been returned (errno 0) or on
 * timeout (errno ETIMEDOUT). */
shoal_future_t *shoal_as_completed_next(shoal_as_completed_t *ac, double timeout);
void shoal_as_completed_destroy(shoal_as_completed_t *ac);

/* Cancel a pending or running task.  Its future (and those of tasks depending
 * on it) become SHOAL_CANCELLED.  A running C task sees shoal_task_cancelled();
 * a running command is killed.  Returns 0 also if it had already finished. */
int shoal_cancel(shoal_future_t *f);

/* Drop the caller's reference.  Accepts NULL. */
void shoal_release(shoal_future_t *f);

/* --- Cluster status --------------------------------------------------------- */

typedef struct shoal_worker_info {
    char name[128];
    char host[128];
    int pid;
    int nthreads;
    int running;          /* tasks being processed now */
    uint64_t completed;   /* tasks finished since it joined */
    /* From schedulers with the data plane (zero / empty otherwise): */
    char data[256];       /* its data endpoint, "tcp://HOST:PORT" */
    uint64_t id;          /* the scheduler's id for it */
    uint64_t stored_bytes; /* bytes of results it keeps */
    int paused;           /* over its memory limit: takes no new tasks */
} shoal_worker_info_t;

typedef struct shoal_status_info {
    int nworkers;
    int nthreads;         /* total over workers */
    int nclients;
    uint64_t waiting, ready, processing, memory, erred, total;
    shoal_worker_info_t *workers;   /* nworkers entries, free with shoal_status_free */
} shoal_status_info_t;

int shoal_status(shoal_client_t *c, shoal_status_info_t *out, double timeout,
                 shoal_error_t *err);
void shoal_status_free(shoal_status_info_t *s);

/* --- Scatter: data from here onto the workers ------------------------------- */

/* Put n pieces of data on the workers and get futures for them, usable as
 * task arguments (shoal_pack_future) like any result: tasks that use one
 * run where it is or fetch it from there.  data[i] is lens[i] bytes of ONE
 * packed MessagePack object (validated; copied).  Each piece goes to one
 * worker, round robin over the workers that are not paused (continuing
 * where the previous scatter of this client stopped), or with `broadcast`
 * to every worker (for data every task needs).  The bytes go straight to
 * the workers' data endpoints; the call returns once every piece is
 * stored on its worker(s) and the scheduler knows where (a worker that
 * fails is replaced by the next one; for broadcast, missing workers are
 * tolerated as long as one has each piece).  The futures are FINISHED at
 * once.  Pieces up to 64 KiB are also kept here, so shoal_result on them
 * costs nothing; larger ones are fetched back from a worker if asked for.
 * All or nothing: on failure no future is returned (and whatever did reach
 * a worker is released).  Pieces are at most 1 GiB less 4 KiB each.
 * Inline clients just make finished futures.  Scattered data cannot be
 * recomputed: if every worker holding a piece is lost, its future and the
 * tasks using it fail. */
int shoal_scatter(shoal_client_t *c, const void *const *data, const size_t *lens, size_t n,
                  int broadcast, shoal_future_t **out, shoal_error_t *err);

/* The same for raw bytes: piece i is stored as a MessagePack bin of
 * lens[i] bytes (what a task gets as that argument). */
int shoal_scatter_bytes(shoal_client_t *c, const void *const *data, const size_t *lens,
                        size_t n, int broadcast, shoal_future_t **out, shoal_error_t *err);

/* --- Task graphs -------------------------------------------------------------- */

/*
 * A task graph is a set of named keys, like a Dask graph (a dict of
 * `key -> value` or `key -> (function, args...)`): each key is either a
 * literal value or a task whose arguments may refer to other keys.  The
 * whole graph is validated, culled to what the wanted keys need, and sent in
 * one call as one SUBMIT message; futures come back for the wanted keys only.
 *
 *   shoal_graph_t *g = shoal_graph_create();
 *   shoal_graph_add_value(g, "a", "\x01", 1, NULL);           // a = 1
 *   // x = inc(a): the argument array holds a reference to key "a"
 *   msgpack_pack_array(&pk, 1); shoal_graph_pack_key(&pk, "a");
 *   shoal_graph_add_task(g, "x", "inc", sb.data, sb.size, NULL, &err);
 *   ...
 *   shoal_graph_submit(c, g, (const char *[]){"z"}, 1, &fz, &err);
 *
 * Keys are 1 to SHOAL_GRAPH_MAX_KEY bytes with no NUL.  Each task is
 * submitted with its key as its name, so errors read "dependency x failed:
 * ...".  A graph is a plain data structure: not thread-safe, independent of
 * any client, reusable (submit it several times, to several clients).
 *
 * Literal values are not tasks: a value of at most SHOAL_GRAPH_INLINE_MAX
 * bytes is copied into the arguments of every task that uses it (as Dask
 * inlines constants).  A larger one used by tasks becomes one shoal.echo
 * task, so that its bytes travel once; a wanted value becomes a shoal.echo
 * task too (a future needs a task).
 *
 * Validation happens before anything is sent: empty or duplicate keys are
 * refused when added; references to unknown keys ("task 'z' refers to
 * unknown key 'q'") and cycles ("cycle: x -> y -> x") when the graph is
 * checked or submitted.  Whether the functions exist is something only the
 * workers know (the client has no view of their function tables), so it is
 * checked on request against what the caller knows: the names it lists
 * (shoal_graph_check) or the task libraries it is about to upload
 * (shoal_graph_check_libraries); built-in functions (shoal.*) always count.
 */
typedef struct shoal_graph shoal_graph_t;

/* MessagePack ext type of a reference to a graph key inside task arguments
 * (the key's bytes).  Resolved by the client: it never goes on the wire. */
#define SHOAL_EXT_KEY 0x54
#define SHOAL_GRAPH_MAX_KEY 255
#define SHOAL_GRAPH_INLINE_MAX 4096
/* Bound on the SUBMIT message of one graph (the scheduler's default
 * --max-message-size, less room for the header).  A scheduler started with a
 * smaller --max-message-size drops a client that sends a larger message, so
 * keep graphs under that size there. */
#define SHOAL_GRAPH_MAX_MESSAGE ((size_t)(1u << 30) - 4096)

/* An empty graph, or NULL (ENOMEM). */
shoal_graph_t *shoal_graph_create(void);
/* Accepts NULL. */
void shoal_graph_destroy(shoal_graph_t *g);

/* Add key = a literal value: `len` bytes of ONE packed MessagePack object
 * (copied).  It may not contain key references (only task arguments can).
 * -1 with errno EEXIST (the key is taken), EINVAL (bad key or value), ENOMEM. */
int shoal_graph_add_value(shoal_graph_t *g, const char *key, const void *packed,
                          size_t len, shoal_error_t *err);

/* Add key = func(args...): `args` is `len` bytes of ONE packed MessagePack
 * array (copied) in which shoal_graph_pack_key() marks references to other
 * keys, at any depth; they are replaced by those keys' results (or inlined
 * values) before the task runs.  References to existing futures
 * (shoal_pack_future) are allowed too.  Keys may be referred to before they
 * are added.  `opts` may be NULL; its priority and retries apply, its name is
 * ignored (the key names the task), and so are its resources and workers
 * (graph tasks are placed without restrictions).  -1 with errno as
 * shoal_graph_add_value. */
int shoal_graph_add_task(shoal_graph_t *g, const char *key, const char *func,
                         const void *args, size_t len, const shoal_submit_opts_t *opts,
                         shoal_error_t *err);

/* Pack a reference to graph key `key` (ext SHOAL_EXT_KEY).  0, or -1
 * (EINVAL: bad key; or the packer failed). */
int shoal_graph_pack_key(msgpack_packer *pk, const char *key);

/* Number of keys, and the i-th key in the order added (NULL if out of
 * range; owned by the graph). */
size_t shoal_graph_size(const shoal_graph_t *g);
const char *shoal_graph_key(const shoal_graph_t *g, size_t i);
/* Non-zero if `key` is in the graph. */
int shoal_graph_has(const shoal_graph_t *g, const char *key);

/* The sinks: keys that no task of the graph refers to, in the order added
 * (what a graph "computes" when nothing else is asked for).  Fills
 * out[0..cap-1] (strings owned by the graph) and returns how many sinks
 * there are, which may be more than cap. */
size_t shoal_graph_sinks(const shoal_graph_t *g, const char **out, size_t cap);

/* Validate the structure (every reference resolves, no cycle) and, if
 * `funcs` is not NULL, that every task's function is a built-in one or one
 * of funcs[0..nfuncs-1].  0, or -1 with errno EINVAL (ENOENT: unknown
 * function) and the first problem in err. */
int shoal_graph_check(shoal_graph_t *g, const char *const *funcs, size_t nfuncs,
                      shoal_error_t *err);

/* Like shoal_graph_check, against the functions of the task libraries at
 * paths[0..npaths-1] (loaded into this process with dlopen to read their
 * tables) and the built-in ones. */
int shoal_graph_check_libraries(shoal_graph_t *g, const char *const *paths, size_t npaths,
                                shoal_error_t *err);

/* Validate g (structure only, as shoal_graph_check with funcs NULL), cull it
 * to the keys want[0..nwant-1] need, and submit those tasks in dependency
 * order as ONE SUBMIT message (never split, up to SHOAL_GRAPH_MAX_MESSAGE
 * bytes).  On success out[i] is the future of want[i] (a key wanted twice
 * gives the same future twice, with a reference for each), and the tasks
 * that are only needed along the way are released at once, so the
 * scheduler frees each as soon as its dependents are done.  All or nothing:
 * on failure nothing is sent and no future is returned.  Inline clients run
 * the tasks at once, in dependency order.  The graph is not changed. */
int shoal_graph_submit(shoal_client_t *c, shoal_graph_t *g, const char *const *want,
                       size_t nwant, shoal_future_t **out, shoal_error_t *err);

/*
 * Read a graph from JSON text: one object mapping keys to values, in the
 * style of a Dask graph:
 *   - a value that is an array whose first element is a string is a task:
 *     that string names the function, the other elements are its arguments;
 *   - inside a task's arguments, at any depth (in arrays and object values,
 *     not object keys), a string equal to a key of the graph is a reference
 *     to that key; every other value is literal data;
 *   - any other value (number, string, null, boolean, object, an array that
 *     does not start with a string) is a literal value, taken as is.
 * So {"a": 1, "x": ["inc", "a"], "s": ["sum_list", ["a", "x", 5]]} is
 * a = 1, x = inc(a), s = sum_list([a, x, 5]).  A literal array that starts
 * with a string can be written ["shoal.echo", [...]].  JSON maps to
 * MessagePack as: null -> nil, true/false, integers (no fraction or
 * exponent; must fit in int64) -> int, other numbers -> float64, strings ->
 * str, arrays, objects -> maps.  The reader is strict (RFC 8259) and bounded
 * (64 MiB, 64 levels); errors are "LINE:COL: reason".  NULL on failure
 * (errno EINVAL, E2BIG or ENOMEM).
 */
shoal_graph_t *shoal_graph_parse_json(const char *text, size_t len, shoal_error_t *err);
/* The same, from a file; errors are "PATH:LINE:COL: reason". */
shoal_graph_t *shoal_graph_load_json(const char *path, shoal_error_t *err);

#ifdef __cplusplus
}
#endif
#endif /* SHOAL_H */
