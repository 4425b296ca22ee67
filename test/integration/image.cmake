# The installed tree and the container image (issue 14). Included from
# test/integration/CMakeLists.txt after INFERD_IT_PYTHON and _it_env are set.
#
# integration_install: `cmake --install` of this build into a temporary prefix; the installed
# inferd serves the installed built-in model (a second or two).
add_test(NAME integration_install
  COMMAND ${INFERD_IT_PYTHON} -m unittest -v test_install
  WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
set_tests_properties(integration_install PROPERTIES
  TIMEOUT 120
  LABELS "integration"
  ENVIRONMENT "${_it_env};CMAKE_COMMAND=${CMAKE_COMMAND};INFERD_BUILD_DIR=${CMAKE_BINARY_DIR};INFERD_TEST_BUILT_MODEL=${INFERD_DEFAULT_MODEL};INFERD_TEST_BUILT_TOKENIZER=${INFERD_DEFAULT_TOKENIZER}")

# integration_image: tools/image.sh builds the image with podman (a Release build inside it),
# then the test runs it. Labelled slow: minutes on 2 cores from a cold layer cache, so
# `tools/test.sh -LE slow` leaves it out; tools/test.sh and .ci/run run it. RUN_SERIAL: the
# image build takes both cores, which would make the timing-bounded tests beside it flaky.
# It skips, saying why, only where podman is missing or cannot run a container.
add_test(NAME integration_image
  COMMAND ${INFERD_IT_PYTHON} -m unittest -v test_image
  WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
set_tests_properties(integration_image PROPERTIES
  TIMEOUT 2400
  RUN_SERIAL TRUE
  LABELS "integration;image;slow"
  SKIP_REGULAR_EXPRESSION "SKIP_IMAGE_TEST:"
  ENVIRONMENT "${_it_env};INFERD_LONG_MODEL=${INFERD_MODELS_DIR}/inference_long.bin;INFERD_LONG_TOKENIZER=${INFERD_MODELS_DIR}/inference_long.tokenizer.bin")
