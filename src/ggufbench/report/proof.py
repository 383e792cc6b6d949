"""The recommendation for a VRAM budget at a served context, proven: its llama-server command started (rule
server_check)."""

from __future__ import annotations

from ..core.errors import DoesNotFit
from ..core.io import read_json, tool_info, write_json
from ..core.io import record as make_record
from ..llamacpp.emulate import emulated_gpu
from ..measure.provenance import provenance
from ..sources.manifest import model_path


def _plain(v):
    """A table value as JSON writes it: numpy scalars as Python numbers, NaN as None."""
    if isinstance(v, dict | list | str) or v is None:
        return v
    if hasattr(v, "item"):
        v = v.item()
    return None if isinstance(v, float) and v != v else v


def server_check_job(server_bin, build_json, records: dict, manifests: dict[str, str], config: dict, model: str,
                     budget_gib: float, context: int, server: dict, run: dict, out, log) -> dict:
    """The recommendation for one VRAM budget at one served context, proven: the candidates that fit, in pick
    order (recommend.ranked), are started as llama-server commands until one starts and answers a completion.
    On a CUDA build the GPU shows only the budget free while it runs (the emulation), so "it started" means it
    starts on a card of that size. A candidate that does not fit is recorded and the next is tried."""
    from ..llamacpp.cli import paste_ready, server_args
    from ..llamacpp.server import check
    from . import recommend
    from .tables import record_tables

    build = read_json(build_json)
    gpu_build = build.get("backend") == "CUDA"
    tables = record_tables(records)
    c = recommend.candidates(tables, config, model, build["build"], context)
    ranked = recommend.ranked(c, budget_gib) if not c.empty else []
    attempts, chosen = [], None
    with emulated_gpu(budget_gib if gpu_build else None, gpu_build, at_most=True) as emulation:
        for cand in ranked[: server["max_attempts"]]:
            args = server_args(model_path(manifests[cand["quant"]]), context, cand["spec"], cand["type_k"],
                               cand["type_v"], cand["threads"], run, build)
            attempt = {"quant": cand["quant"], "kv": cand["kv"], "strategy": cand["strategy"],
                       "threads": _plain(cand["threads"]), "need_bytes": _plain(cand["need_bytes"]),
                       "basis": cand["basis"], "command": paste_ready(server_bin, args)}
            try:
                proof = check(server_bin, args, server["prompt"], server["n_predict"], server["timeout_s"], log)
            except DoesNotFit as e:
                attempts.append({**attempt, "status": "does not fit", "reason": str(e)})
                continue
            attempts.append({**attempt, "status": "started", **proof})
            chosen = cand
            break
    status = ("started" if chosen is not None else "nothing fits" if not ranked else "none started")
    first = chosen if chosen is not None else ranked[0] if ranked else None
    quant = first["quant"] if first is not None else recommend.baseline(config, model)
    prov = provenance(build_json, manifests[quant], None, "", emulation)
    rec = None
    if chosen is not None:
        rec = {k: _plain(chosen[k]) for k in (
            "quant", "kv", "type_k", "type_v", "strategy", "threads", "spec", "source", "bench_strategy", "tg",
            "tg_lo", "tg_hi", "pp", "need_bytes", "basis", "kld", "kld_u", "kld_p99_9", "ppl", "ppl_u",
            "file_size_bytes")}
    record = make_record("server", prov, {"budget_gib": budget_gib, "context": context, **server, **run},
                         {"status": status, "recommendation": rec, "n_candidates": len(c), "n_fit": len(ranked),
                          "command": attempts[-1]["command"] if chosen is not None else None, "attempts": attempts},
                         tool_info(attempts[-1]["cmd"] if chosen is not None else None,
                                   sum(a.get("load_seconds", 0) for a in attempts)))
    write_json(out, record)
    return record
