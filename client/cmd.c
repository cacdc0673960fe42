/*
 * cmd.c - command tasks from the client side: packing the argument map of
 * the built-in "shoal.cmd" function and decoding its result map (the formats
 * are documented at SHOAL_CMD_FUNC in shoal.h).
 */
#include "client_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cmdtask.h"
#include "mp.h"

static size_t s_count(const char *const *v)
{
    size_t n = 0;
    while (v[n])
        n++;
    return n;
}

int shoal_pack_cmd(msgpack_packer *pk, const shoal_cmd_t *cmd)
{
    if (!pk || !cmd || !cmd->argv || !cmd->argv[0] || !cmd->argv[0][0] ||
        (cmd->stdin_len && !cmd->stdin_data)) {
        errno = EINVAL;
        return -1;
    }
    size_t argc = s_count(cmd->argv);
    size_t envc = cmd->env ? s_count(cmd->env) : 0;
    if (argc > CMDTASK_MAX_ARGV || envc > CMDTASK_MAX_ARGV) {
        errno = E2BIG;
        return -1;
    }
    int rc = msgpack_pack_map(pk, 5);
    rc |= mp_pack_cstr(pk, "argv");
    rc |= msgpack_pack_array(pk, (uint32_t)argc);
    for (size_t i = 0; i < argc; i++)
        rc |= mp_pack_cstr(pk, cmd->argv[i]);
    rc |= mp_pack_cstr(pk, "env");
    if (cmd->env) {
        rc |= msgpack_pack_array(pk, (uint32_t)envc);
        for (size_t i = 0; i < envc; i++)
            rc |= mp_pack_cstr(pk, cmd->env[i]);
    } else {
        rc |= msgpack_pack_nil(pk);
    }
    rc |= mp_pack_cstr(pk, "cwd");
    rc |= mp_pack_cstr(pk, cmd->cwd); /* NULL packs nil */
    rc |= mp_pack_cstr(pk, "stdin");
    if (cmd->stdin_data)
        rc |= mp_pack_bin(pk, cmd->stdin_data, cmd->stdin_len);
    else
        rc |= msgpack_pack_nil(pk);
    rc |= mp_pack_cstr(pk, "timeout");
    if (cmd->timeout > 0)
        rc |= msgpack_pack_double(pk, cmd->timeout);
    else
        rc |= msgpack_pack_nil(pk);
    if (rc) {
        errno = ENOMEM;
        return -1;
    }
    return 0;
}

shoal_future_t *shoal_submit_cmd(shoal_client_t *c, const shoal_cmd_t *cmd,
                                 const shoal_submit_opts_t *opts, shoal_error_t *err)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    /* The function's arguments are an array holding the one map. */
    if (msgpack_pack_array(&pk, 1) < 0 || shoal_pack_cmd(&pk, cmd) < 0) {
        int e = errno;
        msgpack_sbuffer_destroy(&sb);
        client_fail(err, e,
                    e == EINVAL ? "invalid command: argv must hold at least a program name"
                    : e == E2BIG ? "invalid command: more than 4096 arguments or variables"
                                 : "out of memory packing the command");
        return NULL;
    }
    shoal_future_t *f = shoal_submit(c, SHOAL_CMD_FUNC, sb.data, sb.size, opts, err);
    int e = errno;
    msgpack_sbuffer_destroy(&sb);
    errno = e;
    return f;
}

int shoal_cmd_result(shoal_future_t *f, double timeout, shoal_cmd_result_t *out,
                     shoal_error_t *err)
{
    msgpack_object o;
    if (!out)
        return client_fail(err, EINVAL, "shoal_cmd_result: no output");
    memset(out, 0, sizeof *out);
    if (shoal_result_object(f, timeout, &o, err) < 0)
        return -1;
    int64_t ex, sig;
    int to;
    const void *sout, *serr;
    size_t lout, lerr;
    if (mp_i64(mp_map_get(&o, "exit"), &ex) < 0 || mp_i64(mp_map_get(&o, "signal"), &sig) < 0 ||
        mp_bool(mp_map_get(&o, "timed_out"), &to) < 0 ||
        mp_bin(mp_map_get(&o, "stdout"), &sout, &lout) < 0 ||
        mp_bin(mp_map_get(&o, "stderr"), &serr, &lerr) < 0 || ex < INT32_MIN ||
        ex > INT32_MAX || sig < 0 || sig > INT32_MAX)
        return client_fail(err, EBADMSG,
                           "the result of task %llu is not a command result (was it "
                           "submitted with shoal_submit_cmd?)",
                           (unsigned long long)shoal_future_id(f));
    out->exit_code = (int)ex;
    out->signal = (int)sig;
    out->timed_out = to;
    out->out = sout;
    out->out_len = lout;
    out->err = serr;
    out->err_len = lerr;
    return 0;
}
