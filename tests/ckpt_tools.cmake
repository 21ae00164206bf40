# ctrain ckpt info|verify|export and safetensors (checkpoint/safetensors.c, ckpt_tools.c,
# launcher/cli_ckpt.c). test_safetensors: round trips and malformed files. ckpt_tools: a tiny
# run's checkpoints through info, verify, export (llmc export == final.bin, safetensors and
# llmc exports give the same first loss through model.init_from), corruptions that verify and
# resume must both report with the file (and unit) named; with mpirun also a world-3 fsdp
# checkpoint. ckpt_export: the safetensors export in Hugging Face's GPT2LMHeadModel (or a
# hand-built GPT-2 with HF's names) gives ctrain's logits (skipped without torch).
ct_unit_test(test_safetensors LIBS ct_checkpoint)
add_test(NAME ckpt_tools
         COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/ckpt_tools.py ${CMAKE_BINARY_DIR}/bin)
set_tests_properties(ckpt_tools PROPERTIES LABELS cli TIMEOUT 300 SKIP_RETURN_CODE 77)
add_test(NAME ckpt_export
         COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/ckpt_export.py ${CMAKE_BINARY_DIR}/bin)
set_tests_properties(ckpt_export PROPERTIES LABELS parity TIMEOUT 300 SKIP_RETURN_CODE 77)
