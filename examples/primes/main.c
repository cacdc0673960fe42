/*
 * primes/main.c - sum the primes below 100000, 200000 and 300000 on a shoal
 * cluster, one task each.
 *
 *   build/examples/primes [ADDRESS] [--library PATH]
 *
 * With no ADDRESS the client connects as shoal_connect(NULL) does: to
 * $SHOAL_SCHEDULER, else to $SHOAL_SCHEDULER_FILE, else to a local cluster
 * that it starts and stops itself.  The task library (libprimes.so, built
 * from tasks.c) is found next to this executable and uploaded to the
 * cluster, so the workers need not have it installed.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <shoal.h>

#include "../example.h"

static const char s_usage[] =
    "usage: primes [ADDRESS] [--library PATH]\n"
    "  ADDRESS         scheduler address (default: $SHOAL_SCHEDULER, then\n"
    "                  $SHOAL_SCHEDULER_FILE, else a local cluster)\n"
    "  --library PATH  the task library (default: libprimes.so next to this program)\n";

int main(int argc, char **argv)
{
    static const uint64_t ns[] = {100000, 200000, 300000};
    enum { N = sizeof ns / sizeof ns[0] };
    const char *address = NULL, *library = NULL;
    char libpath[PATH_MAX];
    shoal_client_t *c = NULL;
    shoal_future_t *fs[N] = {NULL};
    shoal_error_t err = {{0}};
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
            fprintf(stderr, "primes: unexpected argument '%s'\n%s", argv[i], s_usage);
            return 2;
        }
    }
    if (!library) {
        if (s_library_next_to_exe("libprimes.so", libpath, sizeof libpath) < 0) {
            fprintf(stderr, "primes: cannot locate libprimes.so; use --library PATH\n");
            return 1;
        }
        library = libpath;
    }
    if (access(library, R_OK) != 0) {
        fprintf(stderr, "primes: task library %s: %s (run `make` first?)\n", library,
                strerror(errno));
        return 1;
    }

    c = shoal_connect(address, &err);
    if (!c) {
        fprintf(stderr, "primes: cannot connect: %s\n", err.msg);
        return 1;
    }
    if (shoal_upload_library(c, library, &err) < 0) {
        fprintf(stderr, "primes: cannot upload %s: %s\n", library, err.msg);
        goto out;
    }

    /* Submit all three before waiting for any: they run in parallel. */
    for (i = 0; i < N; i++) {
        msgpack_sbuffer sb;
        msgpack_packer pk;

        /* The arguments are one MessagePack array: [n]. */
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, 1);
        msgpack_pack_uint64(&pk, ns[i]);
        fs[i] = shoal_submit(c, "sum_primes", sb.data, sb.size, NULL, &err);
        msgpack_sbuffer_destroy(&sb);
        if (!fs[i]) {
            fprintf(stderr, "primes: submit: %s\n", err.msg);
            goto out;
        }
    }
    for (i = 0; i < N; i++) {
        int64_t sum;
        if (shoal_result_i64(fs[i], -1, &sum, &err) < 0) {
            fprintf(stderr, "primes: sum_primes(%" PRIu64 ") failed: %s\n", ns[i], err.msg);
            goto out;
        }
        printf("%" PRIu64 " : Sum = %" PRId64 "\n", ns[i], sum);
    }
    rc = 0;
out:
    for (i = 0; i < N; i++)
        shoal_release(fs[i]);
    shoal_disconnect(c);
    return rc;
}
