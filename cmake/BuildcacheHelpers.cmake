# bc_library(NAME name SRCS ... DEPS ...): a static library buildcache::<name> whose headers are
# included from the repository root (#include "agent/store/blob_store.h").
function(bc_library)
  cmake_parse_arguments(A "" "NAME" "SRCS;DEPS" ${ARGN})
  add_library(bc_${A_NAME} STATIC ${A_SRCS})
  add_library(buildcache::${A_NAME} ALIAS bc_${A_NAME})
  target_include_directories(bc_${A_NAME} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  target_link_libraries(bc_${A_NAME} PUBLIC ${A_DEPS})
endfunction()

# bc_test(NAME name SRCS ... DEPS ... [LABELS ...]): a GoogleTest binary registered with CTest, one
# CTest entry per test case so failures name the behaviour that broke.
function(bc_test)
  cmake_parse_arguments(A "" "NAME" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${A_NAME} ${A_SRCS})
  set_target_properties(${A_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  target_link_libraries(${A_NAME} PRIVATE ${A_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  target_compile_definitions(${A_NAME} PRIVATE
    BC_SOURCE_DIR="${PROJECT_SOURCE_DIR}" BC_BINARY_DIR="${PROJECT_BINARY_DIR}")
  if(NOT A_LABELS)
    set(A_LABELS unit)
  endif()
  gtest_discover_tests(${A_NAME} PROPERTIES LABELS "${A_LABELS}" DISCOVERY_TIMEOUT 60)
endfunction()
include(GoogleTest)
