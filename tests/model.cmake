# model/: one gradient check per op (STYLE rule 3, tests/test_op_<op>.c), each against a float64
# reference forward and central finite differences; shared helpers and the reasons for the
# tolerances in tests/test_op_util.h.
ct_unit_test(test_op_layernorm LIBS ct_model)
ct_unit_test(test_op_linear LIBS ct_model)
ct_unit_test(test_op_gelu LIBS ct_model)
ct_unit_test(test_op_add LIBS ct_model)
ct_unit_test(test_op_embedding LIBS ct_model)
ct_unit_test(test_op_attention LIBS ct_model)
ct_unit_test(test_op_lm_head_loss LIBS ct_model)
# Activation recomputation: block and selective against none, bitwise, with hooks; memory.
ct_unit_test(test_gpt_recompute LIBS ct_model)
ct_unit_test(test_half LIBS ct_model)
