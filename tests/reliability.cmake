# Nothing lost, nothing silently wrong (docs/reliability.md): resume identity, metrics across
# resumes and restarts, data checked before the first step, saves rescued elsewhere, val_loss
# at world sizes 1, 2 and 4, SIGTERM through ctrain-launch.
add_test(NAME mpi_reliability
         COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/mpi_reliability.py ${CMAKE_BINARY_DIR}/bin)
set_tests_properties(mpi_reliability PROPERTIES LABELS mpi TIMEOUT 600 SKIP_RETURN_CODE 77)
