"""sources.manifest: a quant's files (relative path, size, sha256) and origin; the path and provenance every
later job takes from it. Real GGUFs from gguf's writer (tests/support/hubserver.tiny_gguf)."""

from __future__ import annotations

import hashlib
import json

import pytest

from ggufbench.core.errors import ToolFailed
from ggufbench.sources.manifest import load_manifest, model_path, model_provenance, write_manifest
from tests.support.hubserver import tiny_gguf

SPLIT = ["Q8_0/m-Q8_0-00001-of-00002.gguf", "Q8_0/m-Q8_0-00002-of-00002.gguf"]


@pytest.fixture
def split_quant(tmp_path):
    folder = tmp_path / "results/models/qwen/hub/Q8_0"
    files = []
    for i, rel in enumerate(SPLIT):
        f = folder / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(tiny_gguf(rel, n_floats=64 * (i + 1), extra={"split.no": i, "split.count": 2}))
        files.append(f)
    return folder / "manifest.json", files


def test_written_manifest_records_each_file(split_quant):
    manifest, files = split_quant
    origin = {"kind": "hub", "repo": "unsloth/Qwen3.5-35B-A3B-GGUF", "commit": "c" * 40}
    data = write_manifest(manifest, "qwen", "Q8_0", list(reversed(files)), origin)
    assert json.loads(manifest.read_text()) == data
    assert data["model"] == "qwen" and data["quant"] == "Q8_0" and data["origin"] == origin
    assert sorted(data["files"], key=lambda f: f["path"]) == [
        {"path": rel, "size": f.stat().st_size, "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
        for rel, f in zip(SPLIT, files, strict=True)]


def test_model_path_is_the_first_shard_and_provenance_sums(split_quant):
    manifest, files = split_quant
    origin = {"kind": "hub", "repo": "unsloth/Qwen3.5-35B-A3B-GGUF", "revision": "main", "commit": "c" * 40}
    write_manifest(manifest, "qwen", "Q8_0", files, origin)
    assert model_path(manifest) == files[0]
    write_manifest(manifest, "qwen", "Q8_0", list(reversed(files)), origin)  # provenance names the same first file
    prov = model_provenance(manifest)
    shas = [f["sha256"] for f in sorted(load_manifest(manifest)["files"], key=lambda f: f["path"])]
    assert prov == {"model": "qwen", "quant": "Q8_0", "file": "m-Q8_0-00001-of-00002.gguf",
                    "file_sha256": ",".join(shas), "file_size_bytes": sum(f.stat().st_size for f in files),
                    "n_files": 2, "origin": "hub", "origin_repo": origin["repo"], "origin_revision": "c" * 40,
                    # and the KV-cache shape: this tiny GGUF names no architecture
                    **dict.fromkeys(("n_layer", "n_layer_kv", "n_head_kv", "n_embd_head_k", "n_embd_head_v",
                                     "n_ctx_train"))}


def test_a_non_gguf_is_refused_before_anything_is_written(tmp_path):
    bad = tmp_path / "m.gguf"
    bad.write_bytes(b"Entry not found")  # a hub error page saved under the file's name
    with pytest.raises(ToolFailed, match="is not a GGUF file"):
        write_manifest(tmp_path / "manifest.json", "m", "q", [bad], {"kind": "local"})
    assert not (tmp_path / "manifest.json").exists()


def test_a_manifest_without_files_says_what_to_rerun(tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"model": "m", "quant": "q", "files": [], "origin": {}}))
    with pytest.raises(ToolFailed, match="lists no files; delete it and rerun"):
        model_path(manifest)
    assert manifest.exists()  # not under a results/ folder: not ours to delete


@pytest.mark.faults
def test_an_empty_manifest_under_results_is_removed_so_a_plain_rerun_makes_the_quant(tmp_path):
    manifest = tmp_path / "results/models/m/quantized/q/manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"model": "m", "quant": "q", "files": [], "origin": {}}))
    with pytest.raises(ToolFailed, match="lists no files: removed it; a plain rerun makes the quant again"):
        model_path(manifest)
    assert not manifest.exists()


# Verified where read: a file that changed after its manifest was written never counts ------------------------

def corrupt_middle(path, n: int = 64 << 10) -> None:
    """XOR n bytes in the middle of the file, in place (the size stays)."""
    data = bytearray(path.read_bytes())
    mid = max(0, len(data) // 2 - n // 2)
    for i in range(mid, min(len(data), mid + n)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def quant(tmp_path):
    folder = tmp_path / "results/models/smol/Q2_K"
    folder.mkdir(parents=True)
    gguf = folder / "smol-Q2_K.gguf"
    gguf.write_bytes(tiny_gguf("smol-Q2_K", n_floats=64 << 10))  # 256 KiB of tensor data
    write_manifest(folder / "manifest.json", "smol", "Q2_K", [gguf], {"kind": "quantize"})
    return folder / "manifest.json", gguf


@pytest.mark.faults
def test_a_gguf_corrupted_in_place_is_refused_and_removed_with_its_manifest(quant):
    """The issue's case: 64 KiB XORed in the middle, same size. The job refuses it by sha256, and removes file
    and manifest so the rerun makes the quant again (Snakemake sees the manifest missing)."""
    manifest, gguf = quant
    recorded = load_manifest(manifest)["files"][0]["sha256"]
    corrupt_middle(gguf)
    got = hashlib.sha256(gguf.read_bytes()).hexdigest()
    with pytest.raises(ToolFailed, match=rf"has sha256 {got[:12]}, its record says {recorded[:12]}.*"
                                         r"a plain rerun makes the quant again"):
        model_path(manifest)
    assert not gguf.exists() and not manifest.exists()
    assert [p.name for p in manifest.parent.iterdir()] == []  # nor the verification stamp


@pytest.mark.faults
def test_a_truncated_gguf_is_refused_by_size_without_hashing(quant, monkeypatch):
    manifest, gguf = quant
    size = gguf.stat().st_size
    with open(gguf, "r+b") as f:
        f.truncate(size // 2)
    from ggufbench.core import io as mod

    monkeypatch.setattr(mod, "sha256_file", lambda p: pytest.fail("hashed a file whose size is already wrong"))
    with pytest.raises(ToolFailed, match=rf"is {size // 2:,} bytes, its record says {size:,}"):
        model_path(manifest)
    assert not gguf.exists() and not manifest.exists()


def test_an_unchanged_file_is_hashed_again_only_when_its_size_or_mtime_moved(quant, monkeypatch):
    """The stamp write_manifest leaves makes the check a stat; a touch (same bytes, new mtime) hashes once more
    and passes, and the new stamp makes the next read a stat again."""
    import os

    from ggufbench.core import io as mod

    manifest, gguf = quant
    calls = []
    real = mod.sha256_file
    monkeypatch.setattr(mod, "sha256_file", lambda p: calls.append(p) or real(p))
    assert model_path(manifest) == gguf and calls == []
    st = gguf.stat()
    os.utime(gguf, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert model_path(manifest) == gguf and calls == [gguf]
    assert model_path(manifest) == gguf and calls == [gguf]


@pytest.mark.faults
def test_a_missing_file_is_named_and_its_manifest_removed(quant):
    manifest, gguf = quant
    gguf.unlink()
    with pytest.raises(ToolFailed, match=rf"{gguf.name} is missing"):
        model_path(manifest)
    assert not manifest.exists()


@pytest.mark.faults
def test_a_changed_users_file_is_never_deleted_only_unlinked(tmp_path):
    """local: a quant links the user's own GGUF. When that file changes, the link and manifest go (the rerun
    links it again and measures it as it is now); the user's file stays."""
    own = tmp_path / "mine/model-Q4.gguf"
    own.parent.mkdir()
    own.write_bytes(tiny_gguf("mine", n_floats=4096))
    folder = tmp_path / "results/models/mine/Q4"
    folder.mkdir(parents=True)
    (folder / own.name).symlink_to(own)
    write_manifest(folder / "manifest.json", "mine", "Q4", [folder / own.name], {"kind": "local"})
    corrupt_middle(own, 1024)
    with pytest.raises(ToolFailed, match="changed after"):
        model_path(folder / "manifest.json")
    assert own.is_file() and not (folder / own.name).is_symlink() and not (folder / "manifest.json").exists()


@pytest.mark.faults
def test_a_hub_blob_under_results_goes_with_its_link(tmp_path):
    """A hub quant's file is a link into the workflow's own download folder: both go, so the rerun downloads it
    again rather than relinking the damaged blob."""
    blob = tmp_path / "results/models/qwen/hub/blobs/abc123"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(tiny_gguf("qwen", n_floats=4096))
    folder = tmp_path / "results/models/qwen/hub/Q4_K_M"
    folder.mkdir(parents=True)
    (folder / "q.gguf").symlink_to(blob)
    write_manifest(folder / "manifest.json", "qwen", "Q4_K_M", [folder / "q.gguf"], {"kind": "hub"})
    corrupt_middle(blob, 1024)
    with pytest.raises(ToolFailed, match="changed after"):
        model_path(folder / "manifest.json")
    assert not blob.exists() and not (folder / "q.gguf").is_symlink()


@pytest.mark.faults
def test_a_damaged_source_quant_takes_the_source_with_it(tmp_path):
    """`source: true`: the quant is a hard link of the model's source file, so the source is damaged too and goes
    as well (else the rerun would link the damaged bytes again and record their hash as good)."""
    models = tmp_path / "results/models/smol"
    (models / "F16").mkdir(parents=True)
    source = models / "source.gguf"
    source.write_bytes(tiny_gguf("smol", n_floats=4096))
    quant = models / "F16/smol-F16.gguf"
    quant.hardlink_to(source)
    write_manifest(models / "F16/manifest.json", "smol", "F16", [quant], {"kind": "source", "from": str(source)})
    corrupt_middle(quant, 1024)
    with pytest.raises(ToolFailed, match="changed after"):
        model_path(models / "F16/manifest.json")
    assert not source.exists() and not quant.exists()
