"""llamacpp.nvml: GPU facts and the VRAM sampler, and what they say on a machine without a GPU."""

from __future__ import annotations

import json

import pytest

from ggufbench.core.errors import ToolFailed
from ggufbench.llamacpp import nvml
from ggufbench.llamacpp.run import run_tool


def _has_nvml() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


no_gpu = pytest.mark.skipif(_has_nvml(), reason="NVML works on this machine: the no-GPU path is not exercised")


@no_gpu
def test_gpu_info_without_gpu():
    info = nvml.gpu_info()
    assert info["available"] is False
    assert info["reason"].startswith("no GPU")
    assert "NVML" in info["reason"]
    assert info["gpus"] == []
    json.dumps(info)


@no_gpu
def test_vram_sampler_without_gpu():
    with nvml.VramSampler(interval_s=0.01) as s:
        pass
    r = s.result
    assert r.available is False
    assert r.reason.startswith("no GPU")
    assert r.peak_delta_mib is None and r.samples == 0
    d = r.to_dict()
    assert d["available"] is False and d["reason"] == r.reason


@no_gpu
def test_vram_sampler_does_not_swallow_the_tools_error():
    # a failing tool inside the sampler still fails the job, and the sampler still reports why it had no data
    with pytest.raises(ToolFailed, match="status 3"), nvml.VramSampler() as s:
        run_tool(["sh", "-c", "exit 3"])
    assert s.result.available is False and s.result.reason.startswith("no GPU")


def test_nvml_init_failure_is_reported_not_raised(monkeypatch):
    # the same path on any machine: NVML's library missing (what a CPU-only node without a driver gives)
    pynvml = pytest.importorskip("pynvml")

    def fail():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", fail)
    info = nvml.gpu_info()
    assert info["available"] is False
    assert info["reason"].startswith("no GPU: NVML unavailable (NVMLError_LibraryNotFound")
    with nvml.VramSampler() as s:
        pass
    assert s.result.available is False
    assert s.result.reason == info["reason"]
