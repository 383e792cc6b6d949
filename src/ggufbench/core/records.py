"""A result record is believed only when it describes what its path names and what is there now.

Every record under results/ lies at a path that names its measurement (paths.py: build, model, quant, ctx, KV type,
strategy, budget). A record read back (by the aggregate, a server check, a KLD job reading its baseline's) must say
the same in its own stage, provenance and params, and, where the reader knows them, name the build (its key), the
model file (its sha256) and the corpus (its sha256) that are there now. One that does not (copied from another
build, another quant, a half-edited file, `{}`) is removed like any corrupt file, so a plain rerun measures it
again; nothing is believed because of where it lies.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import paths
from .errors import ToolFailed
from .io import made_here, read_json

# The record templates, their stage, and where each path field is in the record.
STAGES = {paths.PERPLEXITY: "perplexity", paths.KLD: "kld", paths.KLD_BASE: "kld_base", paths.BENCH: "bench",
          paths.TUNE: "tune", paths.SERVER: "server", paths.KLD_SHARD: "kld_shard", paths.TASKS: "tasks",
          paths.TASKS_NOISE_FLOOR: "tasks", paths.KV_COST: "kv_cost"}
FIELDS = {"build": ("provenance", "build"), "model": ("provenance", "model"), "quant": ("provenance", "quant"),
          "kv": ("params", "kv"), "strategy": ("params", "strategy"), "budget": ("params", "budget_gib"),
          "taskset": ("params", "task_set")}
# ctx: the pass's context (params.ctx), or the served context of a tuner job or server check (params.context)
CTX_KEY = {"tune": "context", "server": "context"}


def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)
    rx = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+?)" for i, p in enumerate(parts))
    return re.compile(rf"(?:^|/){rx}$")


_PATTERNS = {t: _pattern(t) for t in STAGES}


def path_fields(path: str | Path) -> tuple[str, dict[str, str]] | None:
    """(the stage a record at this path must hold, the fields its path names), or None for another path."""
    text = Path(path).as_posix()
    for template, rx in _PATTERNS.items():
        m = rx.search(text)
        if m:
            return STAGES[template], m.groupdict()
    return None


@dataclass
class Now:
    """What is there now, as the reader knows it: each build's key, each quant's file sha256 (as a record's
    provenance joins them), each corpus's sha256. A part the reader does not know is not checked."""

    build_keys: dict[str, str] = field(default_factory=dict)
    # the key of each build's llama.cpp tools alone (build.json tools_key): a record those tools measured stays valid
    # when only ggufbench's scorer changed (the tools compile bit for bit again); a kv_cost record needs the full key
    tools_keys: dict[str, str] = field(default_factory=dict)
    file_sha256: dict[tuple[str, str], str] = field(default_factory=dict)   # (model, quant) -> sha256[,sha256...]
    corpus_sha256: dict[str, str] = field(default_factory=dict)


def _same(value, named: str, key: str) -> bool:
    if key == "budget":
        try:
            return math.isclose(float(value), float(named))
        except (TypeError, ValueError):
            return False
    if key in ("ctx", "shard"):
        return str(value) == named
    return value == named


def _envelope_problem(rec, stage: str) -> str | None:
    if not isinstance(rec, dict):
        return f"is {type(rec).__name__}, not a record"
    missing = [k for k in ("stage", "params", "result") if not isinstance(rec.get(k), dict | str)]
    if stage != "kld_shard" and not isinstance(rec.get("provenance"), dict):
        missing.append("provenance")
    if missing:
        return f"has no {', '.join(missing)}"
    return None


def _path_problems(rec: dict, stage: str, named: dict[str, str]) -> list[str]:
    out = []
    if rec["stage"] != stage:
        out.append(f"holds a {rec['stage']!r} record where its path names a {stage!r} one")
    for key, want in named.items():
        if stage == "kld_shard" and key in ("build", "model"):
            continue  # a shard record keeps each pass's provenance inside its result, none of its own
        if key == "shard":
            got = rec.get("shard")
        else:
            where, name = FIELDS.get(key, ("params", CTX_KEY.get(stage, "ctx")))
            got = (rec.get(where) or {}).get(name)
        if not _same(got, want, key):
            out.append(f"says {key} {got!r} where its path names {want!r}")
    return out


def _now_problems(rec: dict, now: Now) -> list[str]:
    prov = rec.get("provenance") or {}
    out = []
    key = now.build_keys.get(prov.get("build"))
    tools_key = now.tools_keys.get(prov.get("build")) if rec.get("stage") != "kv_cost" else None
    if key is not None and prov.get("build_key") not in (key, tools_key):
        out.append(f"was measured with build key {prov.get('build_key')!r}, build {prov.get('build')!r} is {key!r} "
                   "now")
    sha = now.file_sha256.get((prov.get("model"), prov.get("quant")))
    if sha is not None and prov.get("file_sha256") != sha:
        out.append(f"measured the file {str(prov.get('file_sha256'))[:12]}, the quant's file is {sha[:12]} now")
    base = now.file_sha256.get((prov.get("model"), prov.get("baseline_quant")))
    if base is not None and prov.get("baseline_sha256") not in (None, base):
        out.append(f"is against baseline {str(prov.get('baseline_sha256'))[:12]}, the baseline is {base[:12]} now")
    corpus = now.corpus_sha256.get(prov.get("corpus"))
    if corpus is not None and prov.get("corpus_sha256") != corpus:
        out.append(f"measured corpus {str(prov.get('corpus_sha256'))[:12]}, {prov.get('corpus')} is {corpus[:12]} "
                   "now")
    return out


def record_problems(path: str | Path, rec, now: Now | None = None) -> list[str]:
    """Why a record is not the measurement its path names (or not of what is there now); [] when it is."""
    found = path_fields(path)
    if found is None:
        return []
    stage, named = found
    bad = _envelope_problem(rec, stage)
    if bad:
        return [bad]
    return _path_problems(rec, stage, named) + (_now_problems(rec, now) if now else [])


def read_records(paths_: list, now: Now | None = None) -> list[dict]:
    """The records at these paths, if each is what its path names (record_problems). Those that are not are all
    removed (when this workflow made them) and one ToolFailed names each with why, so a plain rerun measures them
    again; a record that is not JSON is removed the same way (io.read_json)."""
    records, bad = [], []
    for path in paths_:
        try:
            rec = read_json(path)
        except ToolFailed as e:
            bad.append(str(e))
            continue
        problems = record_problems(path, rec, now)
        if problems:
            removed = made_here(path)
            if removed:
                Path(path).unlink(missing_ok=True)
            bad.append(f"{path} {'; '.join(problems)}" + (": removed it" if removed else ": delete it"))
        else:
            records.append(rec)
    if bad:
        raise ToolFailed(f"{len(bad)} record(s) are not the measurement their path names, so they cannot be trusted; "
                         "a plain rerun measures them again:\n  " + "\n  ".join(bad))
    return records


def read_record(path: str | Path, now: Now | None = None) -> dict:
    """One record, as read_records reads it."""
    return read_records([path], now)[0]
