"""The hub lock file: which commit (and which bytes) every hub-sourced quant and dataset resolved to.

Like a package lock: the first run that fetches a selection records it; later runs fetch exactly that commit
and check the bytes against the recorded sha256, so a rerun uses the same bytes even when the uploader has
re-published the quant since (sources/lock_refresh.py re-resolves). Format (JSON, sorted keys):
    {"version": 1, "entries": {"<key>": {"repo", "repo_type", "revision", "commit",
                                          "files": [{"path", "size", "sha256", "blob_id"}]}}}
with keys like "model:unsloth/Qwen3.5-35B-A3B-GGUF@main quant=Q8_0" or
"dataset:Salesforce/wikitext@main config=wikitext-2-raw-v1 split=test".
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.errors import ConfigError
from ..core.io import write_text

VERSION = 1


def quant_key(repo: str, revision: str = "main", *, quant: str | None = None, filename: str | None = None,
              repo_type: str = "model") -> str:
    what = f"file={filename}" if filename else f"quant={(quant or '').upper()}"
    return f"{repo_type}:{repo}@{revision} {what}"


def dataset_key(repo: str, revision: str, config: str, split: str) -> str:
    return f"dataset:{repo}@{revision} config={config} split={split}"


def read(path: str | Path | None) -> dict[str, dict]:
    """The lock's entries ({} when there is no lock file yet)."""
    if not path:
        return {}
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"hub lock file {path} is not valid JSON ({e}); restore it from version control or "
                          "delete it to resolve everything again") from None
    if data.get("version") != VERSION:
        raise ConfigError(f"hub lock file {path}: version {data.get('version')!r}, this ggufbench reads {VERSION}")
    return data.get("entries", {})


def write(path: Path, entries: dict[str, dict]) -> None:
    write_text(path, json.dumps({"version": VERSION, "entries": entries}, indent=2, sort_keys=True) + "\n")


def _locked(path: Path):
    from huggingface_hub.utils import WeakFileLock

    return WeakFileLock(path.with_name(f".{path.name}.lock"))


def put(path: str | Path, key: str, entry: dict) -> None:
    """Add or replace one entry; parallel download jobs each add theirs (file lock around read-modify-write)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        entries = read(path)
        entries[key] = entry
        write(path, entries)
