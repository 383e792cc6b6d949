"""A quant's manifest: its GGUF file(s) with size and sha256, and where they came from. Every later job takes
the model path from it (the first shard of a split file) and puts the sha256 in each result's provenance."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import ToolFailed
from ..core.io import read_json, sha256_file, write_json
from ..llamacpp.gguf import KV_SHAPE_COLUMNS, check_gguf, kv_shape


def file_record(path: Path, root: Path) -> dict:
    return {"path": str(path.relative_to(root)), "size": path.stat().st_size, "sha256": sha256_file(path)}


def write_manifest(manifest: Path, model: str, quant: str, files: list[Path], origin: dict) -> dict:
    root = manifest.parent
    for f in files:
        check_gguf(f)
    data = {"model": model, "quant": quant, "files": [file_record(f, root) for f in files], "origin": origin}
    write_json(manifest, data)
    return data


def load_manifest(manifest: str | Path) -> dict:
    manifest = Path(manifest)
    data = read_json(manifest)
    if not data.get("files"):
        raise ToolFailed(f"{manifest} lists no files; delete it and rerun the model's download/quantize job")
    return data


def model_path(manifest: str | Path) -> Path:
    """The path llama.cpp is given: the only file, or the first shard (-00001-of-000NN) of a split GGUF."""
    manifest = Path(manifest)
    files = sorted(f["path"] for f in load_manifest(manifest)["files"])
    return manifest.parent / files[0]


def model_provenance(manifest: str | Path) -> dict:
    data = load_manifest(manifest)
    files = sorted(data["files"], key=lambda f: f["path"])  # the order model_path gives llama.cpp
    origin = data.get("origin") or {}
    return {"model": data["model"], "quant": data["quant"], "file": Path(files[0]["path"]).name,
            "file_sha256": ",".join(f["sha256"] for f in files),
            "file_size_bytes": sum(f["size"] for f in files), "n_files": len(files),
            "origin": origin.get("kind"), "origin_repo": origin.get("repo"),  # hub quants: repo and commit
            "origin_revision": origin.get("commit") or origin.get("revision"), **_kv_columns(manifest)}


def _kv_columns(manifest: str | Path) -> dict:
    """The GGUF's KV-cache shape (n_layer, n_layer_kv, n_head_kv, n_embd_head_k/v, n_ctx_train): with these a
    row's KV cache at any context can be estimated where VRAM was not measured (report.recommend)."""
    path = model_path(manifest)
    shape = kv_shape(path) if path.is_file() else {}  # a record about a file no longer there keeps its other facts
    return {k: shape.get(k) for k in KV_SHAPE_COLUMNS}
