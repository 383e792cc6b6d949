"""ggufbench: measure GGUF quants, KV-cache types and offload settings with llama.cpp.

Layers, each importing only those before it (tests/unit/test_layers.py keeps it so):
  core/      errors, config checks, result paths, atomic writes and records, units
  llamacpp/  building llama.cpp, running its tools, their command lines and output, GGUF metadata, NVML,
             the smaller-card emulation, llama-server
  sources/   where models and texts come from: manifests, PyPI wheels, the Hub and its lock, synthetic MoEs,
             corpora, and the registry of source kinds
  measure/   the measurement plan and the jobs the rules run: quality, speed, the tuner, sharded KLD
  report/    tables, comparisons, recommendations and their proof, figures, the page
The Snakemake workflow (Snakefile, rules/) runs thin scripts (scripts/) that call into it.
"""

__version__ = "0.1.0"
