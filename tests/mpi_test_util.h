/*
 * Helpers for multi-rank CUnit suites (tests/mpi_*.c, run under mpirun by CTest). STYLE rule 8's
 * traps: no _FATAL asserts (a rank that skips a collective hangs the others), and every rank
 * exits with the failure count all-reduced over the world, so one rank's failure fails all.
 */
#ifndef CT_MPI_TEST_UTIL_H
#define CT_MPI_TEST_UTIL_H

#include "comm/comm.h"
#include "test_util.h"

#include <stdio.h>

/* The world every case of the suite uses, and groups that setup made (freed before it). */
static ct_comm *ct_mpi_world;
static ct_comm *ct_mpi_groups[4];

static inline void ct_mpi_test_end(void) {
    for (size_t i = 0; i < CT_ARRAY_LEN(ct_mpi_groups); i++)
        ct_comm_free(ct_mpi_groups[i]);
    ct_comm_free(ct_mpi_world);
    ct_comm_finalize();
}

/* Starts MPI, calls `setup` (may be NULL; returns 0 to run, or a reason to skip: when any rank
 * skips, every rank exits 77, CTest's skip code), runs the cases as one suite (rank 0 verbose,
 * the others print their failures), all-reduces the failure flag and returns the exit code. */
static inline int ct_mpi_test_main(int *argc, char ***argv, const char *suite_name,
                                   int (*setup)(void), const ct_test_case *cases, int n_cases) {
    if (ct_comm_init_world(&ct_mpi_world, argc, argv) != CT_OK) {
        fprintf(stderr, "init_world: %s\n", ct_error_message());
        return 2;
    }
    int rank = ct_comm_rank(ct_mpi_world);
    int32_t skip = setup ? setup() != 0 : 0, failed = 0;
    if (ct_comm_allreduce(ct_mpi_world, &skip, 1, CT_COMM_I32, NULL) != CT_OK) skip = 1;
    if (skip) {
        if (rank == 0) printf("%s: skipped on %d rank(s)\n", suite_name, skip);
        ct_mpi_test_end();
        return 77;
    }
    if (CU_initialize_registry() != CUE_SUCCESS) {
        failed = 1;
    } else {
        CU_pSuite suite = CU_add_suite(suite_name, NULL, NULL);
        for (int i = 0; suite && i < n_cases; i++)
            if (!CU_add_test(suite, cases[i].name, cases[i].fn)) suite = NULL;
        if (!suite) {
            failed = 1;
        } else {
            CU_basic_set_mode(rank == 0 ? CU_BRM_VERBOSE : CU_BRM_SILENT);
            CU_basic_run_tests();
            failed = CU_get_number_of_failure_records() != 0;
            if (failed) {
                fprintf(stderr, "[rank %d] %u failure records:\n", rank,
                        CU_get_number_of_failure_records());
                for (const CU_FailureRecord *f = CU_get_failure_list(); f; f = f->pNext)
                    fprintf(stderr, "[rank %d]   %s:%u: %s (in %s)\n", rank, f->strFileName,
                            f->uiLineNumber, f->strCondition, f->pTest->pName);
            }
        }
        CU_cleanup_registry();
    }
    if (ct_comm_allreduce(ct_mpi_world, &failed, 1, CT_COMM_I32, NULL) != CT_OK) {
        fprintf(stderr, "[rank %d] failure count all-reduce: %s\n", rank, ct_error_message());
        failed = 1;
    }
    if (rank == 0) printf("%d rank(s) failed\n", failed);
    ct_mpi_test_end();
    return failed != 0;
}

#endif
