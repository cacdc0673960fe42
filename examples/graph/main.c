/*
 * graph/main.c - a small task graph with futures as arguments:
 *
 *     a = 1, b = 2
 *     x = inc(a)        y = inc(b)        (run in parallel)
 *     z = mul(x, y)                       (runs once both are done)
 *
 * mul's arguments are references to x and y (shoal_pack_future): the client
 * submits all three tasks at once and never sees x or y; the scheduler runs
 * mul when both are done, with their results in place of the references.
 *
 *   build/examples/graph [ADDRESS] [--library PATH]
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <shoal.h>

#include "../example.h"

static const char s_usage[] =
    "usage: graph [ADDRESS] [--library PATH]\n"
    "  ADDRESS         scheduler address (default: $SHOAL_SCHEDULER, then\n"
    "                  $SHOAL_SCHEDULER_FILE, else a local cluster)\n"
    "  --library PATH  the task library (default: libgraph.so next to this program)\n";

/* Submit func with one integer argument. */
static shoal_future_t *s_submit_int(shoal_client_t *c, const char *func, int64_t v,
                                    shoal_error_t *err)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    shoal_future_t *f;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_int64(&pk, v);
    f = shoal_submit(c, func, sb.data, sb.size, NULL, err);
    msgpack_sbuffer_destroy(&sb);
    return f;
}

/* Submit func(f1, f2): both arguments are futures. */
static shoal_future_t *s_submit_2futures(shoal_client_t *c, const char *func,
                                         const shoal_future_t *f1,
                                         const shoal_future_t *f2, shoal_error_t *err)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    shoal_future_t *f = NULL;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (msgpack_pack_array(&pk, 2) < 0 || shoal_pack_future(&pk, f1) < 0 ||
        shoal_pack_future(&pk, f2) < 0) {
        snprintf(err->msg, sizeof err->msg, "cannot pack the arguments of %s", func);
        goto out;
    }
    f = shoal_submit(c, func, sb.data, sb.size, NULL, err);
out:
    msgpack_sbuffer_destroy(&sb);
    return f;
}

int main(int argc, char **argv)
{
    const char *address = NULL, *library = NULL;
    char libpath[PATH_MAX];
    shoal_client_t *c;
    shoal_future_t *x = NULL, *y = NULL, *z = NULL;
    shoal_error_t err = {{0}};
    int64_t result;
    int i, rc = 1;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(s_usage, stdout);
            return 0;
        } else if (strcmp(argv[i], "--library") == 0 && i + 1 < argc) {
            library = argv[++i];
        } else if (argv[i][0] != '-' && !address) {
            address = argv[i];
        } else {
            fprintf(stderr, "graph: unexpected argument '%s'\n%s", argv[i], s_usage);
            return 2;
        }
    }
    if (!library) {
        if (s_library_next_to_exe("libgraph.so", libpath, sizeof libpath) < 0) {
            fprintf(stderr, "graph: cannot locate libgraph.so; use --library PATH\n");
            return 1;
        }
        library = libpath;
    }
    if (access(library, R_OK) != 0) {
        fprintf(stderr, "graph: task library %s: %s (run `make` first?)\n", library,
                strerror(errno));
        return 1;
    }

    c = shoal_connect(address, &err);
    if (!c) {
        fprintf(stderr, "graph: cannot connect: %s\n", err.msg);
        return 1;
    }
    if (shoal_upload_library(c, library, &err) < 0) {
        fprintf(stderr, "graph: cannot upload %s: %s\n", library, err.msg);
        goto out;
    }
    if (!(x = s_submit_int(c, "inc", 1, &err)) || !(y = s_submit_int(c, "inc", 2, &err)) ||
        !(z = s_submit_2futures(c, "mul", x, y, &err))) {
        fprintf(stderr, "graph: submit: %s\n", err.msg);
        goto out;
    }
    /* x and y are not needed here any more: releasing them now is fine, the
     * scheduler keeps their results until mul has used them. */
    shoal_release(x);
    shoal_release(y);
    x = y = NULL;
    if (shoal_result_i64(z, -1, &result, &err) < 0) {
        fprintf(stderr, "graph: mul failed: %s\n", err.msg);
        goto out;
    }
    printf("z = %lld\n", (long long)result);
    rc = 0;
out:
    shoal_release(x);
    shoal_release(y);
    shoal_release(z);
    shoal_disconnect(c);
    return rc;
}
