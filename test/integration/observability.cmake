# Observability integration tests (logs, Prometheus, the Grafana dashboard). Meant to be
# included from test/integration/CMakeLists.txt, after its _it_env is set:
#   include(${CMAKE_CURRENT_SOURCE_DIR}/observability.cmake)
# Works on its own too (it finds /usr/bin/python3 and builds the environment itself).
# test_prometheus and test_dashboard use Debian's promtool and prometheus (package
# "prometheus") and skip the parts that need them when they are missing.
if(NOT INFERD_IT_PYTHON)
  find_program(INFERD_IT_PYTHON NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
endif()
if(NOT INFERD_IT_PYTHON)
  message(STATUS "observability integration tests: /usr/bin/python3 not found, skipped")
  return()
endif()
set(_obs_dir ${CMAKE_CURRENT_LIST_DIR})
if(DEFINED _it_env)
  set(_obs_env ${_it_env})
else()
  set(_obs_env
    "INFERD_BIN=$<TARGET_FILE:inferd>"
    "PYTHONDONTWRITEBYTECODE=1"
    "PYTHONPATH=${_obs_dir}"
    "ASAN_OPTIONS=detect_leaks=1:abort_on_error=0"
    "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
endif()
foreach(t logs prometheus dashboard)
  add_test(NAME integration_${t}
    COMMAND ${INFERD_IT_PYTHON} -m unittest -v test_${t}
    WORKING_DIRECTORY ${_obs_dir})
  set_tests_properties(integration_${t} PROPERTIES
    TIMEOUT 300
    LABELS "integration"
    ENVIRONMENT "${_obs_env}")
endforeach()
