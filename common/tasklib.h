/*
 * tasklib.h - the registry of task functions a process can run: the
 * built-in ones (shoal.cmd, shoal.noop, ...) and those of loaded task
 * libraries (see include/shoal_task.h).  Thread-safe: lookups take a read
 * lock, loads a write lock.  Libraries stay loaded until tasklib_destroy.
 */
#ifndef SHOAL_TASKLIB_H
#define SHOAL_TASKLIB_H

#include <stddef.h>
#include <stdint.h>

#include "shoal_task.h"

typedef struct tasklib tasklib_t;

/* A registry holding the built-in functions:
 *   shoal.cmd    run a command (common/cmdtask.h)
 *   shoal.noop   return nil
 *   shoal.echo   return its first argument (nil if none)
 *   shoal.sleep  sleep arg0 seconds (float), polling cancellation; return nil
 *   shoal.fail   fail with arg0 (a string) as the error text
 *   shoal.sum    sum of its numeric arguments (int if all ints, else float)
 * NULL with errno on failure. */
tasklib_t *tasklib_create(void);
void tasklib_destroy(tasklib_t *t);

/* dlopen a task library and register its functions (a later library's
 * function replaces an earlier one of the same name, with a warning).  A
 * library without `shoal_tasks`, or with a different `shoal_tasks_abi`, is
 * refused.  Loading the same path twice is a no-op.  0, or -1 with err. */
int tasklib_load(tasklib_t *t, const char *path, char *err, size_t errcap);

/* Write library bytes to the runtime directory under a content-hashed name
 * and load it.  *hash_out (if not NULL) receives util_fnv1a64 of the bytes.
 * Loading the same bytes twice is a no-op.  0, or -1 with err. */
int tasklib_load_bytes(tasklib_t *t, const char *name, const void *data, size_t len,
                       uint64_t *hash_out, char *err, size_t errcap);

/* Look a function up by name (not NUL-terminated).  NULL if unknown. */
shoal_task_fn tasklib_find(tasklib_t *t, const char *name, size_t len);

/* Number of registered functions. */
size_t tasklib_count(tasklib_t *t);

#endif
