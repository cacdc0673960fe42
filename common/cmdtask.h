/*
 * cmdtask.h - the built-in command task "shoal.cmd" (see include/shoal.h for
 * its argument and result maps).  Runs argv with posix_spawnp in its own
 * process group, feeds stdin, captures stdout/stderr (each bounded by
 * CMDTASK_MAX_OUTPUT; the excess is dropped and noted on stderr), enforces the
 * timeout and cancellation by killing the process group (SIGTERM, then
 * SIGKILL after a grace period), and reaps the child.
 */
#ifndef SHOAL_CMDTASK_H
#define SHOAL_CMDTASK_H

#include "shoal_task.h"

#define CMDTASK_MAX_OUTPUT (64u << 20)
#define CMDTASK_MAX_ARGV 4096

int cmdtask_run(shoal_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out);

#endif
