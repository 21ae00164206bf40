# Multi-node training on one machine: two network namespaces joined by a veth pair play two hosts
# of 2 slots each; 4 fsdp ranks over TCP must equal the same job on one node. Needs root and
# `ip netns`; skipped (exit 77) where namespaces cannot be made or mpirun is missing.
add_test(NAME mpi_multinode COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/mpi_multinode.sh
         ${CMAKE_BINARY_DIR}/bin ${CMAKE_SOURCE_DIR})
set_tests_properties(mpi_multinode PROPERTIES LABELS mpi TIMEOUT 300 SKIP_RETURN_CODE 77)
