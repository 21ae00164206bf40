# The hang watchdog's frozen-rank test, labelled mpi: rank 1 of a 3-rank training job gets
# SIGSTOP and the others must report it and end the job (tests/mpi_watchdog_frozen.sh). The
# stalled-collective tests are mpi_watchdog (comm.cmake) and mpi_watchdog_train (core.cmake).
ct_script_test(mpi_watchdog_frozen mpi_watchdog_frozen.sh mpi)
set_tests_properties(mpi_watchdog_frozen PROPERTIES TIMEOUT 180)
