"""The smaller-card emulation: what it does without a GPU (here and in CI), and what the H200 run recorded
(tests/data/cuda-h200-oom: the memory held, what llama.cpp and torch then saw, the release on kill -9)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from ggufbench.core.errors import GgufbenchError
from ggufbench.llamacpp import emulate
from ggufbench.llamacpp.emulate import EmulationError, emulated_gpu
from tests.support import DATA

OOM = DATA / "cuda-h200-oom"


def test_without_a_gpu_a_cuda_job_fails_saying_so():
    with pytest.raises(EmulationError, match="no GPU: the CUDA driver library libcuda.so.1 cannot be loaded"):
        with emulated_gpu(3, True):
            pass
    assert issubclass(EmulationError, GgufbenchError)  # a job failure with its reason, like any other


def test_nothing_is_held_when_nothing_is_asked_or_for_a_cpu_build():
    with emulated_gpu(None, True) as r:
        assert r == {"emulated": False, "reason": "gpu.emulate_free_gib not set: the real GPU's free memory"}
    with emulated_gpu(16, False) as r:
        assert not r["emulated"] and r["reason"].startswith("CPU build")


def test_the_helper_runs_as_a_script_and_says_why_it_cannot_hold():
    out = subprocess.run([sys.executable, emulate.__file__, "--free-mib", "1024"], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 1
    assert json.loads(out.stdout)["error"].startswith("no GPU")


def test_on_the_h200_the_card_showed_the_emulated_free_memory_and_got_it_all_back():
    held = json.loads((OOM / "hold.json").read_text())
    dev = held["devices"][0]
    assert held["emulated"] and dev["name"] == "NVIDIA H200"
    assert abs(dev["free_mib"] - 2048) < emulate.TOLERANCE_MIB
    log = (OOM / "hold.txt").read_text()
    free = {m[0]: (int(m[1]), int(m[2])) for m in re.findall(r"^(\w[\w ]*?): nvidia-smi used,free MiB: (\d+), (\d+)",
                                                              log, re.M)}
    assert free["held"][1] == 2050 and free["released"] == free["idle"]
    after_kill = re.search(r"3 s after kill -9 of the job: (\d+), (\d+); helper processes left: (\d+)", log)
    assert after_kill.groups() == ("0", str(free["idle"][1]), "0")


def test_asking_for_more_than_the_card_has_is_refused_with_the_numbers():
    rec = json.loads((OOM / "hold_too_much.json").read_text().splitlines()[0])
    assert re.fullmatch(r"gpu\.emulate_free_gib asks for 999999 MiB free, but device 0 \(NVIDIA H200\) has only "
                        r"\d+ MiB free of 143156 MiB: another process holds the rest\. Free the GPU, or emulate a "
                        r"smaller card", rec["error"])
