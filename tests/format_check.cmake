# Runs clang-format in dry-run mode over every C++ source of the project.
file(GLOB_RECURSE sources RELATIVE ${SOURCE_DIR}
  ${SOURCE_DIR}/core/*.cpp ${SOURCE_DIR}/core/*.h
  ${SOURCE_DIR}/imaging/*.cpp ${SOURCE_DIR}/imaging/*.h
  ${SOURCE_DIR}/matching/*.cpp ${SOURCE_DIR}/matching/*.h
  ${SOURCE_DIR}/exchange/*.cpp ${SOURCE_DIR}/exchange/*.h
  ${SOURCE_DIR}/storage/*.cpp ${SOURCE_DIR}/storage/*.h
  ${SOURCE_DIR}/tools/*.cpp ${SOURCE_DIR}/tools/*.h
  ${SOURCE_DIR}/tests/*.cpp ${SOURCE_DIR}/tests/*.h)
execute_process(COMMAND ${CLANG_FORMAT} --dry-run --Werror ${sources}
  WORKING_DIRECTORY ${SOURCE_DIR} RESULT_VARIABLE rc ERROR_VARIABLE diag)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "clang-format differences (run clang-format -i on these files):\n${diag}")
endif()
