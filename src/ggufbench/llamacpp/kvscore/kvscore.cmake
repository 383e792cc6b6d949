# Adds the ggufbench-kvscore target to llama.cpp's own build without touching its tree: ggufbench's build passes
# -DCMAKE_PROJECT_llama.cpp_INCLUDE=<this file>, which CMake reads right after llama.cpp's project() call. The
# llama target does not exist yet there, so the target is defined once the top-level CMakeLists.txt is done
# (a deferred include: a deferred call may not add a subdirectory).
if(CMAKE_VERSION VERSION_LESS 3.19)
    message(WARNING "ggufbench-kvscore needs CMake 3.19+ (cmake_language(DEFER)); it is left out of this build")
    return()
endif()
# (the deferred call's arguments are read when it runs: the folder is kept in a variable now)
set(GGUFBENCH_KVSCORE_DIR "${CMAKE_CURRENT_LIST_DIR}")
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL include "${GGUFBENCH_KVSCORE_DIR}/target.cmake")
