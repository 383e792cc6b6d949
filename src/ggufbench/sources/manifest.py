"""A quant's manifest: its GGUF file(s) with size and sha256, and where they came from. Every later job takes
the model path from it (the first shard of a split file) and puts the sha256 in each result's provenance.

The files are verified where they are read (model_path): the size always, the sha256 whenever a file's size or
mtime differs from when it was last hashed (a stamp beside each file, .<file>.verified). A file that no
longer matches is removed with its manifest, so a plain rerun makes it again and remeasures it: a corrupted GGUF
never counts under its old sha256."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import ToolFailed
from ..core.io import made_here, mismatch, read_json, remove_with_stamp, sha256_file, stamp_verified, write_json
from ..llamacpp.gguf import KV_SHAPE_COLUMNS, check_gguf, kv_shape


def file_record(path: Path, root: Path) -> dict:
    return {"path": str(path.relative_to(root)), "size": path.stat().st_size, "sha256": sha256_file(path)}


def write_manifest(manifest: Path, model: str, quant: str, files: list[Path], origin: dict) -> dict:
    root = manifest.parent
    for f in files:
        check_gguf(f)
    data = {"model": model, "quant": quant, "files": [file_record(f, root) for f in files], "origin": origin}
    write_json(manifest, data)
    for f in data["files"]:
        stamp_verified(root / f["path"], f["sha256"])  # just hashed: the first job's check is a stat
    return data


def load_manifest(manifest: str | Path) -> dict:
    manifest = Path(manifest)
    data = read_json(manifest)
    if not data.get("files"):
        if made_here(manifest):  # as read_json treats a record that is not JSON
            manifest.unlink(missing_ok=True)
            raise ToolFailed(f"{manifest} lists no files: removed it; a plain rerun makes the quant again")
        raise ToolFailed(f"{manifest} lists no files; delete it and rerun the model's download/quantize job")
    return data


def model_path(manifest: str | Path, verify: bool = True) -> Path:
    """The path llama.cpp is given: the only file, or the first shard (-00001-of-000NN) of a split GGUF; every
    file verified against the manifest first (verify_files), unless verify is False."""
    manifest = Path(manifest)
    data = load_manifest(manifest)
    if verify:
        verify_files(manifest, data)
    return manifest.parent / sorted(f["path"] for f in data["files"])[0]


def verify_files(manifest: str | Path, data: dict | None = None) -> None:
    """Every file of the manifest has its recorded size and sha256 (core.io.mismatch: hashed again only when size
    or mtime changed since the last check). On a mismatch the file (a link, and the link's target when it lies in
    this results folder, e.g. a Hub blob) and the manifest are removed, and ToolFailed says so: the rerun makes
    the quant again and measures it again. A user's own file (local:) is never deleted, only its link."""
    manifest = Path(manifest)
    data = data or load_manifest(manifest)
    root = manifest.parent
    bad = [(root / f["path"], why) for f in data["files"]
           if (why := mismatch(root / f["path"], f["size"], f["sha256"])) is not None]
    if not bad:
        return
    removed = [p for p, _ in bad]
    origin = data.get("origin") or {}
    if origin.get("kind") == "source" and origin.get("from"):
        removed.append(Path(origin["from"]))  # a hard link of the model's source: that is damaged too
    _remove_quant(manifest, removed)
    what = "; ".join(f"{p} {why}" for p, why in bad)
    raise ToolFailed(f"{what}: the file changed after {manifest} recorded it, so no measurement of it can be "
                     f"trusted. Removed the file and its manifest: a plain rerun makes the quant again and "
                     f"measures it again.")


def _remove_quant(manifest: Path, files: list[Path]) -> None:
    results = next((p for p in manifest.resolve().parents if p.name == "results"), manifest.resolve().parent)
    for path in files:
        if not path.absolute().resolve().is_relative_to(results) and not path.is_symlink():
            continue  # not ours to delete
        if path.is_symlink():
            target = path.resolve()
            if target.is_relative_to(results) and target.is_file():
                target.unlink()  # ours (a Hub blob under results/models): fetched again on the rerun
        remove_with_stamp(path)
    manifest.unlink(missing_ok=True)


def files_sha256(data: dict) -> str:
    """A quant's files' sha256, as every record's provenance names them (in the order model_path gives them)."""
    return ",".join(f["sha256"] for f in sorted(data["files"], key=lambda f: f["path"]))


def model_provenance(manifest: str | Path) -> dict:
    data = load_manifest(manifest)
    files = sorted(data["files"], key=lambda f: f["path"])  # the order model_path gives llama.cpp
    origin = data.get("origin") or {}
    return {"model": data["model"], "quant": data["quant"], "file": Path(files[0]["path"]).name,
            "file_sha256": files_sha256(data),
            "file_size_bytes": sum(f["size"] for f in files), "n_files": len(files),
            "origin": origin.get("kind"), "origin_repo": origin.get("repo"),  # hub quants: repo and commit
            "origin_revision": origin.get("commit") or origin.get("revision"), **_kv_columns(manifest)}


def _kv_columns(manifest: str | Path) -> dict:
    """The GGUF's KV-cache shape (n_layer, n_layer_kv, n_head_kv, n_embd_head_k/v, n_ctx_train): with these a
    row's KV cache at any context can be estimated where VRAM was not measured (report.recommend)."""
    path = model_path(manifest, verify=False)
    shape = kv_shape(path) if path.is_file() else {}  # a record about a file no longer there keeps its other facts
    return {k: shape.get(k) for k in KV_SHAPE_COLUMNS}
