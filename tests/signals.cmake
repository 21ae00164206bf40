# ctrain-launch's signals and death (tests/launch_signals.py, docs/launching.md "Signals"):
# SIGKILL to the launcher leaves no process of the job (with and without --max-restarts, and a
# lone child worker); SIGINT/SIGTERM stop the job with a checkpoint (exit 4) and are never
# restarted; a second SIGTERM stops it at once.
add_test(NAME launch_signals
         COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/launch_signals.py ${CMAKE_BINARY_DIR}/bin
                 ${CMAKE_SOURCE_DIR})
set_tests_properties(launch_signals PROPERTIES LABELS mpi TIMEOUT 180 SKIP_RETURN_CODE 77)
