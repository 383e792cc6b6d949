# The ggufbench-kvscore target (included by kvscore.cmake at the end of llama.cpp's top-level CMakeLists.txt). It
# links the same static llama and ggml libraries as llama-perplexity, so it runs on the build's backends (CPU, CUDA).
find_package(Threads REQUIRED)
add_executable(ggufbench-kvscore "${CMAKE_CURRENT_LIST_DIR}/kvscore.cpp")
target_link_libraries(ggufbench-kvscore PRIVATE llama Threads::Threads)
target_compile_features(ggufbench-kvscore PRIVATE cxx_std_17)
set_target_properties(ggufbench-kvscore PROPERTIES RUNTIME_OUTPUT_DIRECTORY "${CMAKE_BINARY_DIR}/bin")
