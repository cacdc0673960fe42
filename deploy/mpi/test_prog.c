/*
 * test_prog.c - an MPI program that uses the C call (shoal_mpi.h), run by
 * tests/test_deploy_mpi.c under mpirun.  Not installed.
 *
 *   mpirun -n N shoal-mpi-testprog [--exit N] [--no-finalize] [--nthreads T]
 *
 * After shoal_mpi_initialize() the client rank connects with
 * shoal_connect(NULL), waits for every worker, checks shoal.sum on a few
 * arguments and over a map of 1000 inputs, checks the workers the
 * scheduler reports, prints "testprog: ok ..." and exits 0 (or --exit N).
 * --no-finalize leaves the stop to the MPI_Finalize hook.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "shoal.h"
#include "shoal_mpi.h"

#define NMAP 1000

static int s_fail(const char *what, const shoal_error_t *err)
{
    fprintf(stderr, "testprog: %s: %s\n", what, err ? err->msg : "");
    return 1;
}

/* The checks on the client rank; 0 if all passed. */
static int s_client(void)
{
    shoal_error_t err = {{0}};
    shoal_client_t *c = NULL;
    shoal_future_t *f = NULL, *fs[NMAP] = {NULL};
    const void *argp[NMAP];
    size_t lens[NMAP];
    msgpack_sbuffer sb[NMAP];
    shoal_status_info_t st = {0};
    int64_t v, total = 0;
    int rc = 1, nw = shoal_mpi_nworkers();
    const char *env = getenv("SHOAL_SCHEDULER");

    if (!env || !shoal_mpi_address() || strcmp(env, shoal_mpi_address()) != 0) {
        fprintf(stderr, "testprog: SHOAL_SCHEDULER is not the scheduler's address\n");
        return 1;
    }
    c = shoal_connect(NULL, &err);
    if (!c)
        return s_fail("connect", &err);
    if (strcmp(shoal_client_address(c), env) != 0) {
        fprintf(stderr, "testprog: connected to %s, not %s\n", shoal_client_address(c), env);
        goto out;
    }
    if (shoal_wait_for_workers(c, nw, 30, &err) < 0) {
        s_fail("wait for workers", &err);
        goto out;
    }

    /* shoal.sum(1, 2, 3, 4) */
    msgpack_sbuffer one;
    msgpack_packer pk;
    msgpack_sbuffer_init(&one);
    msgpack_packer_init(&pk, &one, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 4);
    for (int i = 1; i <= 4; i++)
        msgpack_pack_int(&pk, i);
    f = shoal_submit(c, "shoal.sum", one.data, one.size, NULL, &err);
    msgpack_sbuffer_destroy(&one);
    if (!f || shoal_result_i64(f, 30, &v, &err) < 0) {
        s_fail("shoal.sum", &err);
        goto out;
    }
    if (v != 10) {
        fprintf(stderr, "testprog: shoal.sum(1,2,3,4) = %" PRId64 "\n", v);
        goto out;
    }

    /* map shoal.sum(i, 1) over 1000 inputs */
    for (int i = 0; i < NMAP; i++) {
        msgpack_sbuffer_init(&sb[i]);
        msgpack_packer_init(&pk, &sb[i], msgpack_sbuffer_write);
        msgpack_pack_array(&pk, 2);
        msgpack_pack_int(&pk, i);
        msgpack_pack_int(&pk, 1);
        argp[i] = sb[i].data;
        lens[i] = sb[i].size;
    }
    int mrc = shoal_map(c, "shoal.sum", argp, lens, NMAP, NULL, fs, &err);
    for (int i = 0; i < NMAP; i++)
        msgpack_sbuffer_destroy(&sb[i]);
    if (mrc < 0) {
        s_fail("map", &err);
        goto out;
    }
    if (shoal_gather(fs, NMAP, 60, &err) < 0) {
        s_fail("gather", &err);
        goto out;
    }
    for (int i = 0; i < NMAP; i++) {
        if (shoal_result_i64(fs[i], 0, &v, &err) < 0 || v != i + 1) {
            fprintf(stderr, "testprog: task %d gave %" PRId64 "\n", i, v);
            goto out;
        }
        total += v;
    }
    if (total != (int64_t)NMAP * (NMAP + 1) / 2) {
        fprintf(stderr, "testprog: total %" PRId64 "\n", total);
        goto out;
    }
    if (shoal_status(c, &st, 10, &err) < 0) {
        s_fail("status", &err);
        goto out;
    }
    if (st.nworkers != nw) {
        fprintf(stderr, "testprog: %d workers connected, expected %d\n", st.nworkers, nw);
        goto out;
    }
    /* Every worker is one of ours: named after its MPI rank. */
    for (int i = 0; i < st.nworkers; i++) {
        if (strncmp(st.workers[i].name, "mpi-rank-", 9) != 0) {
            fprintf(stderr, "testprog: unexpected worker %s\n", st.workers[i].name);
            goto out;
        }
    }
    printf("testprog: ok: %d tasks, total %" PRId64 ", %d workers\n", NMAP + 1, total,
           st.nworkers);
    fflush(stdout);
    rc = 0;
out:
    shoal_status_free(&st);
    for (int i = 0; i < NMAP; i++)
        shoal_release(fs[i]);
    shoal_release(f);
    shoal_disconnect(c);
    return rc;
}

int main(int argc, char **argv)
{
    int exit_code = -1, finalize = 1, rank;
    shoal_mpi_opts_t o;

    memset(&o, 0, sizeof o);
    MPI_Init(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--exit") && i + 1 < argc)
            exit_code = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-finalize"))
            finalize = 0;
        else if (!strcmp(argv[i], "--nthreads") && i + 1 < argc)
            o.nthreads = atoi(argv[++i]);
        else {
            fprintf(stderr, "testprog: unknown argument %s\n", argv[i]);
            MPI_Finalize();
            return 2;
        }
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (shoal_mpi_initialize(MPI_COMM_WORLD, &o) < 0) {
        fprintf(stderr, "testprog: rank %d: shoal_mpi_initialize failed\n", rank);
        MPI_Finalize();
        return 1;
    }
    /* Only the client rank gets here. */
    int rc = s_client();
    if (rc == 0 && exit_code >= 0)
        rc = exit_code;
    if (finalize && shoal_mpi_finalize(rc) < 0) {
        fprintf(stderr, "testprog: shoal_mpi_finalize failed\n");
        rc = 1;
    }
    if (finalize && shoal_mpi_finalize(rc) != 0) /* a second call is harmless */
        rc = 1;
    MPI_Finalize();
    return rc;
}
