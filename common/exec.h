/*
 * exec.h - running one task in this process: decode its arguments, put the
 * results of its dependencies in place of the future references
 * (MessagePack ext SHOAL_EXT_FUTURE), call the function, collect its result.
 * Used by the worker's executor threads and by inline:// clients.
 */
#ifndef SHOAL_EXEC_H
#define SHOAL_EXEC_H

#include <stddef.h>
#include <stdint.h>

#include "shoal_task.h"

typedef struct exec_dep {
    uint64_t id;
    const void *data;   /* the dependency's result: one packed msgpack object */
    size_t len;
} exec_dep_t;

typedef struct exec_result {
    void *data;         /* success: packed result (malloc'd; caller frees) */
    size_t len;
    char err[1024];     /* failure: error text */
} exec_result_t;

/* Run fn on `args` (len bytes, must be one msgpack array).  Returns 0 with
 * r->data/len set, or -1 with r->err set (bad arguments, a reference with no
 * matching dep, the function's own error, a function that packed nothing or
 * more than one object).  Never crashes on malformed args. */
int exec_task(shoal_task_fn fn, uint64_t id, const char *worker,
              volatile const int *cancelled, const void *args, size_t len,
              const exec_dep_t *deps, size_t ndeps, exec_result_t *r);

/* Find the future references in packed args.  On success *ids is a malloc'd
 * array of *n distinct ids (NULL if none) and 0 is returned; -1 (EINVAL) if
 * args is not one well-formed msgpack array. */
int exec_scan_deps(const void *args, size_t len, uint64_t **ids, size_t *n);

/* Pack a future reference (ext SHOAL_EXT_FUTURE, 8 bytes big-endian). */
int exec_pack_ref(msgpack_packer *pk, uint64_t id);

#endif
