# kernels/: the table's memory entries (memset, copy, casts f32 <-> bf16 <-> f16), its loss
# mean and the chooser. The arithmetic kernels are checked through their ops (tests/model.cmake).
ct_unit_test(test_kernels LIBS ct_kernels)
