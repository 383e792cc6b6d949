"""`python -m ggufbench.lockfile refresh --configfile config/config.yaml`: resolve every hub selection of the
config again, print which ones changed upstream, rewrite the lock and remove the manifests of the changed
ones only (their paths from core/paths.py), so the next `snakemake` run downloads and re-measures those and
nothing else. `--check` only reports (exit status 1 when something changed)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from ..core import paths
from ..core.errors import GgufbenchError
from .hub_lock import dataset_key, quant_key, read, write

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
                                 [paths.path(paths.MODEL_SOURCE, model=model),
                                  paths.path(paths.MODEL_SOURCE_RECORD, model=model)]))
        for quant, origin in m.get("quants", {}).items():
            hub = origin.get("hub")
            if hub:
                out.append(Selection(quant_key(hub["repo"], hub.get("revision", "main"), quant=hub.get("quant"),
                                               filename=hub.get("file")), f"models.{model}.quants.{quant}", hub,
                                     "quant", [paths.manifest(model, quant, "hub")]))
    for name, c in config.get("corpora", {}).items():
        ds = c.get("hub_dataset")
        if ds:
            out.append(Selection(dataset_key(ds["repo"], ds.get("revision", "main"), ds["config"], ds["split"]),
                                 f"corpora.{name}", ds, "dataset",
                                 [paths.path(paths.CORPUS, corpus=name), paths.path(paths.CORPUS_RECORD, corpus=name)]))
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


def _status(before: dict | None, entry: dict, commit: str) -> str:
    """What a selection's lock entry did upstream: new, unchanged (maybe under another commit), or CHANGED."""
    if before is None:
        return "new in the lock"
    if _digest(before) == _digest(entry):
        moved = before["commit"] != commit
        return "unchanged" + (f" (commit {before['commit'][:12]} -> {commit[:12]}, same bytes)" if moved else "")
    return (f"CHANGED upstream: commit {before['commit'][:12]} -> {commit[:12]}, files "
            + ", ".join(_diff(before, entry)))


def _invalidate(rows: list[tuple], workdir: Path, out) -> None:
    """Remove what each changed selection made (its manifest links), so the next run fetches and re-measures it."""
    for label, _, status, _, sel in rows:
        if not status.startswith("CHANGED"):
            continue
        for rel in sel.invalidate:
            p = workdir / rel
            if p.exists() or p.is_symlink():
                p.unlink()
                print(f"removed {rel}: the next snakemake run fetches {label} again and re-measures it", file=out)


def refresh(config: dict, lock: Path, workdir: Path, check: bool = False, out=sys.stdout) -> list[str]:
    """Resolve every selection again; report; unless `check`, rewrite the lock and invalidate changed ones.

    Returns the labels that changed (new selections count as changed only when they were locked before).
    """
    from . import hub

    old = read(lock)
    new: dict[str, dict] = {}
    rows = []
    resolved: dict[str, tuple] = {}  # one lookup per lock key; every selection sharing it gets its status
    for sel in selections(config):
        if sel.key not in resolved:
            res = _resolve(sel)
            new[sel.key] = res.lock_entry()
            resolved[sel.key] = (res, _status(old.get(sel.key), new[sel.key], res.commit))
        res, status = resolved[sel.key]
        rows.append((sel.label, sel.key, status, hub.human_bytes(res.total_size), sel))
    changed = [label for label, _, status, _, _ in rows if status.startswith("CHANGED")]
    for label, key, status, size, _ in rows:
        print(f"{label}: {key} [{size}]: {status}", file=out)
    if check:
        return changed
    # keep entries of selections the config no longer names (other configs may share the lock)
    write(lock, {**old, **new})
    print(f"wrote {lock}", file=out)
    _invalidate(rows, workdir, out)
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
