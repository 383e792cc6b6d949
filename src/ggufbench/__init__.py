"""ggufbench: measure GGUF quants, KV-cache types and offload settings with llama.cpp.

The Snakemake workflow (Snakefile, rules/) runs thin scripts (scripts/) that call into this package;
each module holds one concern and is unit-tested on real llama.cpp output (tests/).
"""

__version__ = "0.1.0"
