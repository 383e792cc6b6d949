"""'Does not fit' recognised in real llama.cpp output captured on the H200 with all but 2 GiB held
(tests/data/cuda-h200-oom), and not in output that is something else."""

from __future__ import annotations

from pathlib import Path

import pytest

from ggufbench.llamacpp.oom import bench_needs_diagnosis, memory_failure
from tests.support import DATA

OOM = DATA / "cuda-h200-oom"


CPU = DATA / "cpu-0.3.36"


def text(name: str) -> str:
    return (OOM / name).read_text(encoding="utf-8")


def test_the_server_says_why_it_could_not_load():
    assert memory_failure(text("server_all_gpu.err")) == \
        "cudaMalloc of 2442.40 MiB on device 0 failed: out of memory while loading the model"
    assert memory_failure(text("server_exps_cpu.err")).startswith("cudaMalloc of 1674.40 MiB on device 0")


@pytest.mark.parametrize("name", ["bench_all_gpu.err", "bench_ncmoe2.err", "bench_exps_cpu_ctx4096.err"])
def test_llama_bench_says_only_that_it_failed_so_it_is_diagnosed(name):
    out = text(name)
    assert "llama_bench: error: failed to load model" in out
    assert memory_failure(out) is None and bench_needs_diagnosis(out)


@pytest.mark.parametrize("path", [OOM / "bench_fit256_ctx4096.err", OOM / "fit_params_256.err",
                                  CPU / "fail_missing_model.txt", CPU / "bench_fail.stderr",
                                  CPU / "fail_bad_logits.txt"])
def test_other_output_is_not_a_memory_failure(path):
    assert memory_failure(path.read_text(encoding="utf-8")) is None


STUDY = DATA / "cuda-h200-study"


def failed_calls(log: Path) -> list[tuple[str, str]]:
    """(command, what its -v rerun printed) for every call of a job log that failed and was diagnosed."""
    out = []
    for block in log.read_text(encoding="utf-8").split("\n$ ")[1:]:
        if "# its error lines:" in block:
            out.append((block.splitlines()[0], block.split("# its error lines:")[1]))
    return out


def test_every_diagnosed_failure_at_the_study_scale_is_a_memory_failure():
    calls = failed_calls(STUDY / "vram-8GiB_ctx544.log") + failed_calls(STUDY / "vram-16GiB_ctx544.log") + \
        failed_calls(STUDY / "all-gpu.log")
    reasons = {cmd.split(" -t 16 ")[-1]: memory_failure(lines) for cmd, lines in calls}
    assert all(reasons.values()), reasons
    assert reasons["-fa on -ctk f16 -ctv f16 -ngl 99 -ncmoe 25"].startswith("cudaMalloc of 8379.15 MiB")
    assert reasons["-fa on -ctk f16 -ctv f16 -ngl 99 -ncmoe 28"] == "a CUDA allocation failed: out of memory"
    assert reasons["-fa on -ctk f16 -ctv f16 -ngl 99 -ncmoe 10"] == "cuBLAS could not allocate its workspace"
