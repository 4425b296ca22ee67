# GGUF models through the server (test_gguf.py): hostile files at start-up, a Q4_K_M model
# served (Generate, GenerateStream, GetModelInfo, batch invariance, the KV cache report),
# --device auto falling back with its reason. Included from test/integration/CMakeLists.txt.
set(_gguf_env "INFERD_BIN=$<TARGET_FILE:inferd>" "PYTHONDONTWRITEBYTECODE=1"
  "MKMODEL=$<TARGET_FILE:mkmodel>" "GGUF_DUMP=$<TARGET_FILE:gguf_dump>")
if(TARGET fake_libcuda)
  list(APPEND _gguf_env "FAKE_CUDA_DRIVER=$<TARGET_FILE:fake_libcuda>")
endif()
add_test(NAME integration_gguf
  COMMAND ${INFERD_IT_PYTHON} -m unittest -v test_gguf
  WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
set_tests_properties(integration_gguf PROPERTIES
  TIMEOUT 600
  LABELS "integration"
  ENVIRONMENT "${_gguf_env}")
