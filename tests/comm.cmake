# comm/ tests, labelled mpi: the collectives under mpirun at world sizes 1-4, as a plain process
# (a world of one without a launcher), with the int-count splitting forced on, and the watchdog.
set(CT_MPI_ENV "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1;OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")

# ct_mpi_test(NAME NP n [ENV k=v...] COMMAND ...): runs COMMAND under mpirun -np n.
function(ct_mpi_test name)
  cmake_parse_arguments(T "" "NP;TIMEOUT" "ENV;COMMAND" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  add_test(NAME ${name} COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe ${MPIEXEC_NUMPROC_FLAG}
           ${T_NP} ${T_COMMAND})
  set_tests_properties(${name} PROPERTIES LABELS mpi TIMEOUT ${T_TIMEOUT}
                       ENVIRONMENT "${CT_MPI_ENV};${T_ENV}")
endfunction()

add_executable(mpi_collectives mpi_collectives.c)
target_link_libraries(mpi_collectives PRIVATE ct_comm PkgConfig::CUNIT)
foreach(np 1 2 3 4)
  ct_mpi_test(mpi_collectives_np${np} NP ${np} COMMAND $<TARGET_FILE:mpi_collectives>)
endforeach()
# Every operation split into pieces of 1000 elements (the path for counts above INT_MAX).
ct_mpi_test(mpi_collectives_chunked_np3 NP 3 ENV CTRAIN_COMM_MAX_COUNT=1000
            COMMAND $<TARGET_FILE:mpi_collectives>)
# No launcher: Open MPI's singleton start gives a world of one.
add_test(NAME mpi_collectives_singleton COMMAND mpi_collectives)
set_tests_properties(mpi_collectives_singleton PROPERTIES LABELS mpi TIMEOUT 120
                     ENVIRONMENT "${CT_MPI_ENV}")

# The watchdog: a stalled rank makes every rank report and the job exit non-zero in time.
add_executable(mpi_watchdog_stall mpi_watchdog_stall.c)
target_link_libraries(mpi_watchdog_stall PRIVATE ct_comm)
add_test(NAME mpi_watchdog COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/mpi_watchdog.sh
         ${MPIEXEC_EXECUTABLE} $<TARGET_FILE:mpi_watchdog_stall>)
set_tests_properties(mpi_watchdog PROPERTIES LABELS mpi TIMEOUT 120 ENVIRONMENT "${CT_MPI_ENV}")

# The NCCL backend on device buffers: one GPU per rank, else every rank exits 77 (skipped).
if(CT_HAVE_CUDA)
  add_executable(mpi_nccl mpi_nccl.c)
  target_link_libraries(mpi_nccl PRIVATE ct_comm CUDA::cudart PkgConfig::CUNIT)
  foreach(np 1 2)
    ct_mpi_test(mpi_nccl_np${np} NP ${np} COMMAND $<TARGET_FILE:mpi_nccl>)
    set_tests_properties(mpi_nccl_np${np} PROPERTIES LABELS "mpi;cuda" SKIP_RETURN_CODE 77)
  endforeach()
endif()
