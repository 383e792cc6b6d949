"""The command a recommendation stands for, proven (rule server_check): the candidates that fit a VRAM budget, in
pick order (report/proof.py ranks them from this build's and model's records), are started as llama-server
commands until one starts and answers a completion. On a CUDA build the GPU shows only the budget free while they
run (llamacpp/emulate.py), so "it started" means it starts on a card of that size. A candidate that does not fit
is recorded and the next is tried."""

from __future__ import annotations

from ..core.errors import DoesNotFit
from ..core.io import record, tool_info, write_json
from ..core.job import Job
from ..llamacpp.cli import paste_ready, server_args
from ..llamacpp.emulate import emulated_gpu
from ..llamacpp.server import check
from ..sources.manifest import model_path
from .provenance import provenance

# What the record keeps of the candidate that started (the recommendation), as report/proof.py gives it.
RECOMMENDATION_KEYS = ("quant", "kv", "type_k", "type_v", "strategy", "threads", "spec", "source", "bench_strategy",
                       "tg", "tg_lo", "tg_hi", "pp", "need_bytes", "basis", "kld", "kld_u", "kld_p99_9", "ppl",
                       "ppl_u", "file_size_bytes")


def _attempt(job: Job, cand: dict, manifests: dict, context: int, server: dict) -> dict:
    """Start one candidate's command, prove it answers, stop it: its attempt record."""
    args = server_args(model_path(manifests[cand["quant"]]), context, cand["spec"], kv=(cand["type_k"], cand["type_v"]),
                       threads=cand["threads"], run=job.run, build=job.build)
    attempt = {"quant": cand["quant"], "kv": cand["kv"], "strategy": cand["strategy"], "threads": cand["threads"],
               "need_bytes": cand["need_bytes"], "basis": cand["basis"], "command": paste_ready(job.tool, args)}
    try:
        proof = check(job.tool, args, job.log, prompt=server["prompt"], n_predict=server["n_predict"],
                      timeout_s=server["timeout_s"])
    except DoesNotFit as e:
        return {**attempt, "status": "does not fit", "reason": str(e)}
    return {**attempt, "status": "started", **proof}


def server_check_job(job: Job, *, ranked: list[dict], n_candidates: int, baseline: str, manifests: dict[str, str],
                     budget_gib: float, context: int, server: dict) -> dict:
    """ranked: the candidates that fit the budget, in pick order, as plain dicts (report.proof.candidates);
    n_candidates: how many there were before the budget; baseline: the quant the record names when none fit."""
    attempts, chosen = [], None
    budget = budget_gib if job.gpu_build else None
    with emulated_gpu(budget, job.gpu_build, at_most=True) as emulation:
        for cand in ranked[: server["max_attempts"]]:
            attempts.append(_attempt(job, cand, manifests, context, server))
            if attempts[-1]["status"] == "started":
                chosen = cand
                break
    status = "started" if chosen is not None else "nothing fits" if not ranked else "none started"
    first = chosen if chosen is not None else ranked[0] if ranked else None
    quant = first["quant"] if first is not None else baseline
    prov = provenance(job.build_json, manifests[quant], None, "", emulation)
    rec = {k: chosen[k] for k in RECOMMENDATION_KEYS} if chosen is not None else None
    started = attempts[-1] if chosen is not None else {}
    out = record("server", prov, {"budget_gib": budget_gib, "context": context, **server, **job.run},
                 {"status": status, "recommendation": rec, "n_candidates": n_candidates, "n_fit": len(ranked),
                  "command": started.get("command"), "attempts": attempts},
                 tool_info(started.get("cmd"), sum(a.get("load_seconds", 0) for a in attempts)))
    write_json(job.out["record"], out)
    return out
