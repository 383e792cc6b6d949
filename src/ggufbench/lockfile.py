"""The hub lock file: which commit (and which bytes) every hub-sourced quant and dataset resolved to.

Like a package lock: the first run that fetches a selection records it; later runs fetch exactly that commit
and check the bytes against the recorded sha256, so a rerun uses the same bytes even when the uploader has
re-published the quant since. `python -m ggufbench.lockfile refresh --configfile config/config.yaml`
resolves every selection again, prints which ones changed upstream, rewrites the lock and removes the
manifests of the changed quants only, so the next `snakemake` run downloads and re-measures those and
nothing else. `--check` only reports (exit status 1 when something changed).

Format (JSON, sorted keys, one entry per selection):
    {"version": 1, "entries": {"<key>": {"repo", "repo_type", "revision", "commit",
                                          "files": [{"path", "size", "sha256", "blob_id"}]}}}
with keys like "model:unsloth/Qwen3.5-35B-A3B-GGUF@main quant=Q8_0" or
"dataset:Salesforce/wikitext@main config=wikitext-2-raw-v1 split=test".
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, GgufbenchError

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


def _write(path: Path, entries: dict[str, dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps({"version": VERSION, "entries": entries}, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


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
        _write(path, entries)


# --- refresh -----------------------------------------------------------------------------------------

@dataclass
class Selection:
    key: str
    label: str             # where the config names it: models.<model>.quants.<quant> / corpora.<name>
    spec: dict
    kind: str              # "quant" | "source" | "dataset"
    invalidate: list[str]  # result files to remove when it changed upstream


def selections(config: dict) -> list[Selection]:
    """Every hub selection the config names (quants, models' sources, datasets)."""
    out = []
    for model, m in config.get("models", {}).items():
        src = (m.get("source") or {}).get("hub")
        if src:
            out.append(Selection(quant_key(src["repo"], src.get("revision", "main"), quant=src.get("quant"),
                                           filename=src.get("file")), f"models.{model}.source", src, "source",
                                 [f"results/models/{model}/source/model.gguf",
                                  f"results/models/{model}/source/source.json"]))
        for quant, origin in m.get("quants", {}).items():
            hub = origin.get("hub")
            if hub:
                out.append(Selection(quant_key(hub["repo"], hub.get("revision", "main"), quant=hub.get("quant"),
                                               filename=hub.get("file")), f"models.{model}.quants.{quant}", hub,
                                     "quant", [f"results/models/{model}/hub/{quant}/manifest.json"]))
    for name, c in config.get("corpora", {}).items():
        ds = c.get("hub_dataset")
        if ds:
            out.append(Selection(dataset_key(ds["repo"], ds.get("revision", "main"), ds["config"], ds["split"]),
                                 f"corpora.{name}", ds, "dataset",
                                 [f"results/data/{name}/corpus.txt", f"results/data/{name}/corpus.json"]))
    return out


def _resolve(sel: Selection):
    from . import hub

    s = sel.spec
    if sel.kind == "dataset":
        from .corpus import dataset_split_selector

        return hub.resolve(s["repo"], s.get("revision", "main"), repo_type="dataset",
                           select=dataset_split_selector(s["repo"], s["config"], s["split"]))
    return hub.resolve(s["repo"], s.get("revision", "main"), quant=s.get("quant"), filename=s.get("file"))


def _digest(entry: dict | None) -> dict | None:
    return None if entry is None else {f["path"]: f.get("sha256") or f.get("blob_id") for f in entry["files"]}


def refresh(config: dict, lock: Path, workdir: Path, check: bool = False, out=sys.stdout) -> list[str]:
    """Resolve every selection again; report; unless `check`, rewrite the lock and invalidate changed ones.

    Returns the labels that changed (new selections count as changed only when they were locked before).
    """
    from . import hub

    old = read(lock)
    new: dict[str, dict] = {}
    changed: list[str] = []
    rows = []
    for sel in selections(config):
        if sel.key in new:
            continue
        res = _resolve(sel)
        entry = res.lock_entry()
        new[sel.key] = entry
        before = old.get(sel.key)
        if before is None:
            status = "new in the lock"
        elif _digest(before) == _digest(entry):
            status = "unchanged" + (f" (commit {before['commit'][:12]} -> {res.commit[:12]}, same bytes)"
                                    if before["commit"] != res.commit else "")
        else:
            status = (f"CHANGED upstream: commit {before['commit'][:12]} -> {res.commit[:12]}, files "
                      + ", ".join(_diff(before, entry)))
            changed.append(sel.label)
        rows.append((sel.label, sel.key, status, hub.human_bytes(res.total_size), sel))
    for label, key, status, size, _ in rows:
        print(f"{label}: {key} [{size}]: {status}", file=out)
    if check:
        return changed
    # keep entries of selections the config no longer names (other configs may share the lock)
    _write(lock, {**old, **new})
    print(f"wrote {lock}", file=out)
    for label, _, status, _, sel in rows:
        if status.startswith("CHANGED"):
            for rel in sel.invalidate:
                p = workdir / rel
                if p.exists() or p.is_symlink():
                    p.unlink()
                    print(f"removed {rel}: the next snakemake run fetches {label} again and re-measures it",
                          file=out)
    return changed


def _diff(before: dict, after: dict) -> list[str]:
    a, b = _digest(before), _digest(after)
    out = []
    for path in sorted(set(a) | set(b)):
        if path not in a:
            out.append(f"+{path}")
        elif path not in b:
            out.append(f"-{path}")
        elif a[path] != b[path]:
            out.append(f"~{path} ({(a[path] or '')[:12]} -> {(b[path] or '')[:12]})")
    return out


def main(argv: list[str] | None = None) -> int:
    import yaml

    ap = argparse.ArgumentParser(prog="python -m ggufbench.lockfile",
                                 description="Refresh the hub lock file: which commit every hub quant/dataset uses.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("refresh", help="resolve every hub selection again, report what changed upstream")
    r.add_argument("--configfile", required=True, type=Path)
    r.add_argument("--lock", type=Path, help="lock file (default: the config's hub_lock)")
    r.add_argument("--directory", type=Path, default=Path("."), help="the workflow's working directory")
    r.add_argument("--check", action="store_true", help="report only; exit 1 when something changed upstream")
    args = ap.parse_args(argv)
    config = yaml.safe_load(args.configfile.read_text())
    lock = args.lock or config.get("hub_lock")
    if not lock:
        print(f"{args.configfile} sets no hub_lock and no --lock was given", file=sys.stderr)
        return 2
    lock = Path(lock)
    if not lock.is_absolute():
        lock = args.directory / lock
    try:
        changed = refresh(config, lock, args.directory, check=args.check)
    except GgufbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
