# data/: test_data covers the sampler (the batch formula, shuffling, hashes), test_data_files
# reading shards (formats, 64-bit offsets, every bad-input message), test_data_tools the
# shard makers (prepare, synth).
ct_unit_test(test_data LIBS ct_data)
ct_unit_test(test_data_files LIBS ct_data)
ct_unit_test(test_data_tools LIBS ct_data)
