# Health checks under faults (issue 5) and the Kubernetes manifests.
# Included from test/integration/CMakeLists.txt, after INFERD_IT_PYTHON and _it_env are set
# (_it_env carries INFERD_BIN, the sanitizer build, and PROBE_BIN when Go is there).
#
# test_health_faults measures detection times (bounds of a second or so) and Check latency
# under saturation: RUN_SERIAL keeps other tests' load from making it flaky.
add_test(NAME integration_health_faults
  COMMAND ${INFERD_IT_PYTHON} -m unittest -v test_health_faults
  WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
set_tests_properties(integration_health_faults PROPERTIES
  TIMEOUT 300
  RUN_SERIAL TRUE
  LABELS "integration"
  ENVIRONMENT "${_it_env}")

add_test(NAME integration_deploy
  COMMAND ${INFERD_IT_PYTHON} -m unittest -v test_deploy
  WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
set_tests_properties(integration_deploy PROPERTIES
  TIMEOUT 60
  LABELS "integration"
  ENVIRONMENT "${_it_env}")
