"""Quants on disk for unit tests: a real GGUF (gguf's own writer) and the manifest the workflow writes for it, so
a job that verifies its model file before running reads a real one."""

from __future__ import annotations

from pathlib import Path

from ggufbench.sources.manifest import load_manifest, write_manifest

from .hubserver import tiny_gguf


def quant_manifest(folder: Path, model: str, quant: str, origin: dict | None = None, n_floats: int = 256) -> Path:
    """folder/<model>-<quant>.gguf and folder/manifest.json (size and sha256 as write_manifest records them)."""
    folder.mkdir(parents=True, exist_ok=True)
    gguf = folder / f"{model}-{quant}.gguf"
    gguf.write_bytes(tiny_gguf(f"{model}-{quant}", n_floats=n_floats))
    write_manifest(folder / "manifest.json", model, quant, [gguf], origin or {"kind": "quantize"})
    return folder / "manifest.json"


def sha(manifest: Path) -> str:
    return load_manifest(manifest)["files"][0]["sha256"]
