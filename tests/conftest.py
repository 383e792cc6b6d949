"""Shared test data: real llama.cpp output captured from the CPU build vendored in llama-cpp-python 0.3.36,
running SmolLM2-135M (see the file names in tests/data/cpu-0.3.36/)."""

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data" / "cpu-0.3.36"


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def capture():
    """capture('kld_q2_k.txt') -> the file's text, exactly as the tool printed it (UTF-8: ±, Δp)."""

    def read(name: str) -> str:
        return (DATA / name).read_text(encoding="utf-8")

    return read
