"""'Does not fit in device memory': recognised in llama.cpp's own output, so that a setting too big for the GPU
becomes a result ("does not fit in N GiB") and not a broken job.

llama.cpp says it in several ways (tests/data/cuda-h200-oom, captured on the H200 with all but a few GiB
held): the CUDA backend's `cudaMalloc failed: out of memory` for the weights, the KV cache or the compute
buffers, then a load or context error; or a CUDA_CHECK abort (`CUDA error: out of memory`, SIGABRT). The
server prints the lines; llama-bench silences llama.cpp's log unless -v, and says only `failed to load model`,
`failed to create context` or `ggml-cuda.cu:N: CUDA error`, which other causes print too: a llama-bench
failure of that kind is diagnosed by running the same call again with -v (bench_needs_diagnosis).
"""

from __future__ import annotations

import re

# Memory failure lines, the most telling first: (regex, explanation).
_MEMORY: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"allocating ([\d.]+) MiB on device (\d+): cudaMalloc failed: out of memory"),
     "cudaMalloc of {0} MiB on device {1} failed: out of memory"),
    (re.compile(r"CUDA error: out of memory"), "a CUDA allocation failed: out of memory"),
    # cuBLAS's CUBLAS_STATUS_ALLOC_FAILED through ggml's CUBLAS_CHECK (its workspace did not fit)
    (re.compile(r"CUDA error: the resource allocation failed"), "cuBLAS could not allocate its workspace"),
    (re.compile(r"failed to allocate (CUDA\d+) buffer of size (\d+)"),
     "a {0} buffer of {1} bytes could not be allocated"),
    (re.compile(r"unable to allocate (CUDA\d+) buffer"), "the model's {0} weight buffer could not be allocated"),
    (re.compile(r"failed to allocate buffer for (kv|rs) cache"), "the {0} cache could not be allocated"),
    (re.compile(r"failed to allocate compute (pp|tg) buffers"), "the {0} compute buffers could not be allocated"),
]
# What llama-bench prints (exit 1 or SIGABRT) when something failed and its log was silenced.
_BENCH_SILENT = re.compile(r"llama_bench: error: failed to (load model|create context)|ggml-cuda\.cu:\d+: CUDA error")
# Where in loading it happened, for the reason's wording.
_STAGE = [(re.compile(r"error loading model|failed to load model"), "while loading the model"),
          (re.compile(r"failed to (?:create|initialize the) context"), "while creating the context (KV cache, "
                                                                      "compute buffers)")]


def memory_failure(text: str) -> str | None:
    """Why llama.cpp ran out of device memory, from its output; None when the output shows no such failure."""
    found = []
    for pattern, explanation in _MEMORY:
        m = pattern.search(text)
        if m:
            found.append((m.start(), explanation.format(*m.groups())))
    if not found:
        return None
    reason = min(found)[1]
    stage = next((where for p, where in _STAGE if p.search(text)), None)
    return f"{reason} {stage}" if stage else reason


def bench_needs_diagnosis(text: str) -> bool:
    """llama-bench failed with its log silenced, in a way a memory failure produces (and other causes too)."""
    return bool(_BENCH_SILENT.search(text))
