# Issue 13's attacks against a real inferd (test_hardening.py): raw HTTP/2 (python3-h2),
# grpcio and sockets. Included from test/integration/CMakeLists.txt; uses inference.cmake's
# slower model (requests that stay in the engine for seconds).
add_test(NAME integration_hardening
  COMMAND ${INFERD_IT_PYTHON} -m unittest -v test_hardening
  WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
set_tests_properties(integration_hardening PROPERTIES
  TIMEOUT 300
  LABELS "integration"
  ENVIRONMENT "INFERD_BIN=$<TARGET_FILE:inferd>;PYTHONDONTWRITEBYTECODE=1;PYTHONPATH=${CMAKE_CURRENT_SOURCE_DIR};INFERD_LONG_MODEL=${INFERD_MODELS_DIR}/inference_long.bin;INFERD_LONG_TOKENIZER=${INFERD_MODELS_DIR}/inference_long.tokenizer.bin")
