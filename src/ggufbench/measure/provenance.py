"""What every result row carries about where it was measured: the model file, the build, the machine, the GPU
(and its emulation), the corpus; and llama.cpp's own word that a CUDA build ran on the GPU."""

from __future__ import annotations

import platform
import re
import socket
from pathlib import Path

from ..core.errors import ToolFailed
from ..core.io import read_json
from ..llamacpp.nvml import gpu_info
from ..sources.manifest import model_provenance


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def devices_in_output(text: str) -> list[str]:
    """GPU names llama.cpp reports it used, e.g. 'Device 0: NVIDIA H200, compute capability 9.0'."""
    return re.findall(r"Device \d+: (.+?), compute capability", text)


def ran_on_cuda(text: str) -> bool:
    """llama.cpp's own word that the CUDA backend was used: system_info's `CUDA :` entry (llama-perplexity),
    ggml_cuda_init finding a device, or llama-bench's `"backends": "CUDA"`."""
    return bool(re.search(r'CUDA :|"backends": "[^"]*CUDA|ggml_cuda_init: found [1-9]', text))


def provenance(build_json: str | Path, manifest: str | Path, corpus_json: str | Path | None = None,
               tool_output: str = "", emulation: dict | None = None) -> dict:
    b = read_json(build_json)
    prov = {**model_provenance(manifest), "build": b["build"], "build_key": b.get("key"),
            "llama_cpp_version": b.get("version"), "llama_cpp_commit": b.get("commit"),
            "backend": b.get("backend"), "host": socket.gethostname(), "cpu_name": cpu_name()}
    info = gpu_info()
    gpus = devices_in_output(tool_output) or [g["name"] for g in info["gpus"]]
    prov["gpu_name"] = ", ".join(gpus) if gpus else None
    prov["gpu_driver"] = info.get("driver")
    if prov["backend"] == "CUDA" and tool_output and not (info["available"] and ran_on_cuda(tool_output)):
        raise ToolFailed("a CUDA build ran but no GPU was seen (NVML: "
                         f"{info.get('reason', 'ok')}; llama.cpp's system_info lists no CUDA backend): it "
                         "ran on the CPU, so its numbers would be mislabelled")
    emulation = emulation or {"emulated": False, "reason": "not a GPU job"}
    prov["gpu_emulated_free_mib"] = emulation.get("target_free_mib")  # None: the real GPU's free memory
    prov["gpu_emulation"] = emulation
    if corpus_json:
        c = read_json(corpus_json)
        prov.update(corpus=c["name"], corpus_sha256=c["sha256"], corpus_source=c["source"])
    return prov
