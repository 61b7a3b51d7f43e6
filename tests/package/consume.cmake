# Run by ctest: builds and runs tests/package/consumer against ssmkit in one of three ways.
#   -DMODE=find_package|add_subdirectory|fetchcontent -DSOURCE_DIR=... -DWORK_DIR=... -DGENERATOR=...
file(REMOVE_RECURSE ${WORK_DIR})
set(consumer_args -DSSMKIT_CONSUME_MODE=${MODE})
if(MODE STREQUAL "find_package")
  execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/ssmkit-build -G ${GENERATOR}
                          -DSSMKIT_BUILD_TESTS=OFF -DSSMKIT_BUILD_BENCHMARKS=OFF -DSSMKIT_BUILD_EXAMPLES=OFF
                          -DSSMKIT_ENABLE_CUDA=OFF -DCMAKE_INSTALL_PREFIX=${WORK_DIR}/prefix
                  COMMAND_ERROR_IS_FATAL ANY)
  execute_process(COMMAND ${CMAKE_COMMAND} --install ${WORK_DIR}/ssmkit-build COMMAND_ERROR_IS_FATAL ANY)
  list(APPEND consumer_args -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)
else()
  list(APPEND consumer_args -DSSMKIT_SOURCE_DIR=${SOURCE_DIR} -DSSMKIT_ENABLE_CUDA=OFF)
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/package/consumer -B ${WORK_DIR}/consumer
                        -G ${GENERATOR} ${consumer_args} COMMAND_ERROR_IS_FATAL ANY)
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK_DIR}/consumer COMMAND_ERROR_IS_FATAL ANY)
execute_process(COMMAND ${WORK_DIR}/consumer/consumer OUTPUT_VARIABLE out COMMAND_ERROR_IS_FATAL ANY)
if(NOT out MATCHES "sum 66.0")
  message(FATAL_ERROR "consumer printed: ${out}")
endif()
message(STATUS "${MODE}: ${out}")
