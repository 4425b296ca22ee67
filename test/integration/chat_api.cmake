# inferd.v1.Inference on GGUF models with real vocabularies (test_chat_api.py): Tokenize and
# chat against llama.cpp (node-llama-cpp), stop strings, batch invariance, bad inputs, health
# under maximum-size prompts. Skipped without Node.js and the npm references.
# Included from test/integration/CMakeLists.txt.
add_test(NAME integration_chat_api
  COMMAND ${INFERD_IT_PYTHON} -m unittest -v test_chat_api
  WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
set_tests_properties(integration_chat_api PROPERTIES
  TIMEOUT 900
  LABELS "integration"
  ENVIRONMENT "INFERD_BIN=$<TARGET_FILE:inferd>;PYTHONDONTWRITEBYTECODE=1;MKMODEL=$<TARGET_FILE:mkmodel>;INFERCTL=$<TARGET_FILE:inferctl>")
