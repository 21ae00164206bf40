# checkpoint/: test_ckpt covers zstd frames and per-rank files (round trips at world sizes
# 1-4, reading 4 -> 3 ranges across files, corruption), test_ckpt_dir the manifest and the
# directory protocol (tmp, rename, latest, prune).
ct_unit_test(test_ckpt LIBS ct_checkpoint)
ct_unit_test(test_ckpt_dir LIBS ct_checkpoint)
