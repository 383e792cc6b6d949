"""Files the workflow writes and reads: every write goes to a temporary name in the same folder and is renamed
into place when complete (a killed job never leaves a file that counts), JSON records with one envelope,
sha256, and symlinks made the same way."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from .errors import ToolFailed


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed to `path` when the block ends without an error,
    removed when it raises. suffix keeps an extension a writer insists on (matplotlib's .png)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial{suffix}")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: dict) -> None:
    """Write JSON next to path and rename it into place, so a killed job never leaves a half file."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def made_here(path: str | Path) -> bool:
    """A file under a results/ folder: this workflow made it, so it may remove it for a plain rerun to re-make."""
    return "results" in Path(path).resolve().parts


def read_json(path: str | Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except json.JSONDecodeError as e:
        if made_here(path):  # removed, so a plain rerun re-makes it
            path.unlink(missing_ok=True)
            raise ToolFailed(f"{path} is not valid JSON ({e}): removed it; a plain rerun makes it again") from e
        raise ToolFailed(f"{path} is not valid JSON ({e}); fix or delete it and rerun the job that makes it") from e


def record(stage: str, provenance: dict | None, params: dict, result: dict, tool: dict | None = None,
           **extra) -> dict:
    """The envelope of every result record: {stage, provenance, params, result, tool: {cmd, wall_seconds}}
    (a shard's record, which keeps each pass's provenance inside its result, has none of its own)."""
    rec = {"stage": stage, **extra}
    if provenance is not None:
        rec["provenance"] = provenance
    rec.update(params=params, result=result)
    if tool is not None:
        rec["tool"] = tool
    return rec


def tool_info(cmd: list, wall_seconds: float | None) -> dict:
    return {"cmd": [str(c) for c in cmd] if cmd is not None else None, "wall_seconds": wall_seconds}


def sha256_file(path: str | Path, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def symlink(target: Path, link: Path) -> None:
    """link -> target (as given: callers pass it absolute), replacing what link was, atomically."""
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.partial")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(link)


def _verified_stamp(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified")


def stamp_verified(path: str | Path, sha256: str) -> None:
    """Note that path, as it is now (size, mtime), has this sha256: the next check is a stat, not a hash."""
    path = Path(path)
    st = path.stat()
    write_json(_verified_stamp(path), {"sha256": sha256, "stat": [st.st_size, st.st_mtime_ns]})


def mismatch(path: str | Path, size: int, sha256: str) -> str | None:
    """Why path is not the file a record describes (missing, other size, other sha256), or None. The sha256 is
    computed again only when the size or mtime differ from the last check that matched (stamp_verified)."""
    path = Path(path)
    if not path.is_file():
        return "is missing"
    st = path.stat()
    if st.st_size != size:
        return f"is {st.st_size:,} bytes, its record says {size:,}"
    try:
        seen = json.loads(_verified_stamp(path).read_text())
    except (OSError, ValueError):
        seen = {}
    if seen.get("sha256") == sha256 and seen.get("stat") == [st.st_size, st.st_mtime_ns]:
        return None
    got = sha256_file(path)
    if got != sha256:
        return f"has sha256 {got[:12]}, its record says {sha256[:12]}"
    stamp_verified(path, sha256)
    return None


def remove_with_stamp(path: str | Path) -> None:
    path = Path(path)
    _verified_stamp(path).unlink(missing_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()
