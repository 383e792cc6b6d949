"""Units: memory in GiB/MiB (llama.cpp and NVML count in 2^20 bytes)."""

GIB = 1024**3
MIB = 1024**2
