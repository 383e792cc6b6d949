"""How llama.cpp is built and run: its tools, their command lines and output, GGUF files, the GPU (NVML, emulation)."""
