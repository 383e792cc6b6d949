"""Shared test data: real llama.cpp output captured from the CPU build vendored in llama-cpp-python 0.3.36,
running SmolLM2-135M (see the file names in tests/data/cpu-0.3.36/); and llama.cpp itself for tests that run its
tools directly: $GGUFBENCH_LLAMA_BIN, else this checkout's results/builds/cpu/bin, else the demo's build (the
build cache, or a fresh CPU build: ~3-5 min on 2 cores)."""

import os
from pathlib import Path

import pytest
import yaml

from ggufbench.core.cache import cache_dir
from ggufbench.core.errors import GgufbenchError
from ggufbench.llamacpp.build import TOOLS, build_llama_cpp, fetch_source
from tests.support import DATA, REPO

CPU_CAPTURES = DATA / "cpu-0.3.36"


@pytest.fixture
def data_dir() -> Path:
    return CPU_CAPTURES


@pytest.fixture
def capture():
    """capture('kld_q2_k.txt') -> the file's text, exactly as the tool printed it (UTF-8: ±, Δp)."""

    def read(name: str) -> str:
        return (CPU_CAPTURES / name).read_text(encoding="utf-8")

    return read


# llama.cpp for tests that run its tools directly (not through the workflow) ------------------------------

def demo_build() -> dict:
    return yaml.safe_load((REPO / "config/demo.yaml").read_text())["builds"]["cpu"]


@pytest.fixture(scope="session")
def llama_bin(tmp_path_factory) -> Path:
    env = os.environ.get("GGUFBENCH_LLAMA_BIN")
    if env:
        missing = [t for t in TOOLS if not (Path(env) / t).is_file()]
        assert not missing, f"GGUFBENCH_LLAMA_BIN={env} lacks {missing}"
        return Path(env)
    local = REPO / "results/builds/cpu/bin"
    if all((local / t).is_file() for t in TOOLS):
        return local
    out = tmp_path_factory.mktemp("llama")
    try:
        build_llama_cpp("cpu", demo_build(), out, jobs=os.cpu_count() or 1, log=out / "build.log")
    except (GgufbenchError, OSError) as e:
        pytest.skip(f"no llama.cpp CPU build: none in $GGUFBENCH_LLAMA_BIN or {local}, and building the demo's "
                    f"failed: {e}")
    return out / "bin"


@pytest.fixture(scope="session")
def llama_src() -> Path:
    try:
        src, _ = fetch_source(demo_build()["source"], cache_dir())
    except (GgufbenchError, OSError) as e:
        pytest.skip(f"the demo's llama.cpp source tree (for models/ggml-vocab-*.gguf) is not available: {e}")
    return src
