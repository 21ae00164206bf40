# launcher/: test_job covers job.toml loading (defaults, every value type, overrides, every
# error message with its file, line and key), ct_job_print round trips and the docs writer.
ct_unit_test(test_job LIBS ct_job)
# ctrain-launch's mpirun command (--dry-run), its usage errors, the direct worker inside an MPI
# or Slurm job, and real runs: --nproc 1 in-process and --nproc 2 through mpirun.
ct_script_test(test_cli_launch cli_launch.sh cli)
