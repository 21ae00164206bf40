# The trainer on small GPTs (initial loss, overfitting, accumulation, determinism, no malloc).
ct_unit_test(test_gpt LIBS ct_train TIMEOUT 600)

# ct-parity: the C side of the PyTorch parity check (scripts/torch_parity.py).
add_executable(ct-parity parity_dump.c)
target_link_libraries(ct-parity PRIVATE ct_checkpoint)
add_test(NAME torch_parity
         COMMAND python3 ${CMAKE_SOURCE_DIR}/scripts/torch_parity.py ${CMAKE_BINARY_DIR}/bin)
set_tests_properties(torch_parity PROPERTIES LABELS parity TIMEOUT 600 SKIP_RETURN_CODE 77)

# Module layering: every #include "dir/..." must follow the DAG of DESIGN.md.
add_test(NAME test_layering COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_layering.sh
         ${CMAKE_SOURCE_DIR})
set_tests_properties(test_layering PROPERTIES LABELS unit TIMEOUT 60)

# Command-line behaviour: bad flags, job files and data give messages and non-zero exits.
ct_script_test(test_cli cli_errors.sh cli)

# Formatting: the committed .clang-format applies to every C and CUDA file.
add_test(NAME test_format COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_format.sh
         ${CMAKE_SOURCE_DIR})
set_tests_properties(test_format PROPERTIES LABELS unit TIMEOUT 120 SKIP_RETURN_CODE 77)

# Every strategy (ddp, zero1, zero2, fsdp, hsdp) at world sizes 1-4 equals single-process
# training on the same global batch, and its per-step traffic equals the theoretical volume.
add_test(NAME mpi_equivalence
         COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/mpi_equivalence.py ${CMAKE_BINARY_DIR}/bin)
set_tests_properties(mpi_equivalence PROPERTIES LABELS mpi TIMEOUT 900 SKIP_RETURN_CODE 77)

# The hang watchdog through the trainer (comm.timeout_s and CTRAIN_FAULT).
add_test(NAME mpi_watchdog_train COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/mpi_watchdog_train.sh
         ${CMAKE_BINARY_DIR}/bin)
set_tests_properties(mpi_watchdog_train PROPERTIES LABELS mpi TIMEOUT 180 SKIP_RETURN_CODE 77)

# ctrain bench comm: starts 3 ranks itself, checks every collective's result (exit 1 if wrong).
add_test(NAME mpi_bench_comm COMMAND ${CMAKE_BINARY_DIR}/bin/ctrain bench comm --nproc 3
         --min-bytes 1000 --max-bytes 300000 --iters 2)
set_tests_properties(mpi_bench_comm PROPERTIES LABELS mpi TIMEOUT 120
                     ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")

# Exact resume: 4 steps, a checkpoint, then 4 more equal 8 uninterrupted steps bit for bit (ddp at
# world size 1; ddp, zero1, zero2, fsdp at world size 3); a flipped byte in a shard fails the resume.
add_test(NAME mpi_resume
         COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/mpi_resume.py ${CMAKE_BINARY_DIR}/bin)
set_tests_properties(mpi_resume PROPERTIES LABELS mpi TIMEOUT 600 SKIP_RETURN_CODE 77)

# Resharding: checkpoints saved at (world 2, fsdp) and (world 3, zero2) resume at world 1-4 (ddp,
# zero1, fsdp) with the same global batch and match uninterrupted runs; another global batch fails.
add_test(NAME mpi_reshard
         COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/mpi_reshard.py ${CMAKE_BINARY_DIR}/bin)
set_tests_properties(mpi_reshard PROPERTIES LABELS mpi TIMEOUT 600 SKIP_RETURN_CODE 77)
add_test(NAME mpi_precision
         COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/mpi_precision.py ${CMAKE_BINARY_DIR}/bin)
set_tests_properties(mpi_precision PROPERTIES LABELS mpi TIMEOUT 900 SKIP_RETURN_CODE 77)
