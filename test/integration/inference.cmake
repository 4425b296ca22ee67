# inferd.v1.Inference through the server (test_inference.py, python3-grpcio).
# Included from test/integration/CMakeLists.txt after INFERD_IT_PYTHON is found.
#
# Besides the built-in default model (context 512) the test needs requests that stay in
# the engine for seconds (cancellation, deadlines, admission queue, saturation): a 6M
# parameter model with a 2048 context, a few hundred tokens/s under ASan.
inferd_make_model(inference_long --dim 288 --hidden-dim 768 --layers 6 --heads 6 --kv-heads 6
  --vocab 1024 --seq-len 2048 --seed 3)
add_custom_target(inferd_inference_test_model ALL DEPENDS
  ${INFERD_MODELS_DIR}/inference_long.bin ${INFERD_MODELS_DIR}/inference_long.tokenizer.bin)

add_test(NAME integration_inference
  COMMAND ${INFERD_IT_PYTHON} -m unittest -v test_inference
  WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
set_tests_properties(integration_inference PROPERTIES
  TIMEOUT 300
  LABELS "integration"
  ENVIRONMENT "INFERD_BIN=$<TARGET_FILE:inferd>;PYTHONDONTWRITEBYTECODE=1;INFERD_MODEL=${INFERD_DEFAULT_MODEL};INFERD_TOKENIZER=${INFERD_DEFAULT_TOKENIZER};INFERD_LONG_MODEL=${INFERD_MODELS_DIR}/inference_long.bin;INFERD_LONG_TOKENIZER=${INFERD_MODELS_DIR}/inference_long.tokenizer.bin")
