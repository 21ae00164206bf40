# launcher/: test_job covers job.toml loading (defaults, every value type, overrides, every
# error message with its file, line and key), ct_job_print round trips and the docs writer.
ct_unit_test(test_job LIBS ct_launcher)
