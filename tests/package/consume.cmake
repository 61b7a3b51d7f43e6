# Run by ctest: builds and runs tests/package/consumer against ssmkit in one of three ways.
#   -DMODE=find_package|find_package_no_openmp|add_subdirectory|fetchcontent -DSOURCE_DIR=...
#   -DWORK_DIR=... -DGENERATOR=...
# Embedded (add_subdirectory, fetchcontent), ssmkit must leave the CUDA language alone unless asked.
file(REMOVE_RECURSE ${WORK_DIR})
if(MODE MATCHES "^find_package")
  set(consumer_args -DSSMKIT_CONSUME_MODE=find_package)
  if(MODE STREQUAL "find_package_no_openmp")
    list(APPEND consumer_args -DCMAKE_DISABLE_FIND_PACKAGE_OpenMP=ON)
  endif()
  execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/ssmkit-build -G ${GENERATOR}
                          -DSSMKIT_BUILD_TESTS=OFF -DSSMKIT_BUILD_BENCHMARKS=OFF -DSSMKIT_BUILD_EXAMPLES=OFF
                          -DSSMKIT_ENABLE_CUDA=OFF -DCMAKE_INSTALL_PREFIX=${WORK_DIR}/prefix
                  COMMAND_ERROR_IS_FATAL ANY)
  execute_process(COMMAND ${CMAKE_COMMAND} --install ${WORK_DIR}/ssmkit-build COMMAND_ERROR_IS_FATAL ANY)
  list(APPEND consumer_args -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)
else()
  set(consumer_args -DSSMKIT_CONSUME_MODE=${MODE} -DSSMKIT_SOURCE_DIR=${SOURCE_DIR})
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/package/consumer -B ${WORK_DIR}/consumer
                        -G ${GENERATOR} ${consumer_args} COMMAND_ERROR_IS_FATAL ANY)
file(READ ${WORK_DIR}/consumer/CMakeCache.txt cache)
if(NOT MODE MATCHES "^find_package" AND cache MATCHES "CMAKE_CUDA_COMPILER:")
  message(FATAL_ERROR "${MODE}: ssmkit looked for CUDA in a CPU-only project")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK_DIR}/consumer COMMAND_ERROR_IS_FATAL ANY)
execute_process(COMMAND ${WORK_DIR}/consumer/consumer OUTPUT_VARIABLE out COMMAND_ERROR_IS_FATAL ANY)
if(NOT out MATCHES "sum 66.0")
  message(FATAL_ERROR "consumer printed: ${out}")
endif()
message(STATUS "${MODE}: ${out}")
