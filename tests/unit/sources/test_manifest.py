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
