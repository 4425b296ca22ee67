# The OpenAI-compatible HTTP API (test_openai.py): the official openai npm package, curl over
# HTTP/1.1 and HTTP/2, raw HTTP/1.1 and gRPC for the cross-API checks; cancellation on
# disconnect, 429, 503, 413, health evidence. The SDK class is skipped without Node.js and the
# npm references. Included from test/integration/CMakeLists.txt.
add_test(NAME integration_openai
  COMMAND ${INFERD_IT_PYTHON} -m unittest -v test_openai
  WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
set_tests_properties(integration_openai PROPERTIES
  TIMEOUT 900
  LABELS "integration"
  ENVIRONMENT "INFERD_BIN=$<TARGET_FILE:inferd>;PYTHONDONTWRITEBYTECODE=1;MKMODEL=$<TARGET_FILE:mkmodel>;INFERCTL=$<TARGET_FILE:inferctl>")
