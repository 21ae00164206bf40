/*
 * Helpers shared by the CUnit suites: a main() body that registers tests and returns non-zero
 * when anything failed (CUnit's basic runner exits 0 even then), and relative-error helpers.
 */
#ifndef CT_TEST_UTIL_H
#define CT_TEST_UTIL_H

#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>

typedef struct {
    const char *name;
    void (*fn)(void);
} ct_test_case;

/* A case named after its function, and the run of an array of them. */
#define CT_TEST(fn)                                                                                \
    { #fn, fn }
#define CT_TEST_RUN(suite_name, cases)                                                             \
    ct_test_run(suite_name, cases, (int)(sizeof(cases) / sizeof(cases[0])))
/* A main() that runs the CT_TEST cases given as one suite. */
#define CT_TEST_MAIN(suite_name, ...)                                                              \
    int main(void) {                                                                               \
        const ct_test_case cases[] = {__VA_ARGS__};                                                \
        return CT_TEST_RUN(suite_name, cases);                                                     \
    }

/* Runs the cases as one suite; returns the process exit code (0 = every assertion held). A
 * suite init failure counts as a failure record too, which the plain failures count misses. */
static inline int ct_test_run(const char *suite_name, const ct_test_case *cases, int n_cases) {
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    CU_pSuite suite = CU_add_suite(suite_name, NULL, NULL);
    if (!suite) return 2;
    for (int i = 0; i < n_cases; i++)
        if (!CU_add_test(suite, cases[i].name, cases[i].fn)) return 2;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failed = CU_get_number_of_failure_records() != 0;
    CU_cleanup_registry();
    return failed;
}

/* |a - b| / max(|a|, |b|, floor): relative error that does not explode near zero. */
static inline double ct_test_rel_err(double a, double b, double floor) {
    double scale = fmax(fmax(fabs(a), fabs(b)), floor);
    return fabs(a - b) / scale;
}

#endif
