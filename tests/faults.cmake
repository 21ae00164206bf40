# Test-only faults (common/fault.h) through ctrain-launch: a rank killed mid-run is restarted by
# --max-restarts from the newest checkpoint and ends bitwise equal to an uninterrupted run; a
# rank killed while a checkpoint is written (async and not) leaves the previous checkpoint and
# a .tmp that a resume ignores.
add_test(NAME mpi_faults
         COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/mpi_faults.py ${CMAKE_BINARY_DIR}/bin)
set_tests_properties(mpi_faults PROPERTIES LABELS mpi TIMEOUT 300 SKIP_RETURN_CODE 77)
