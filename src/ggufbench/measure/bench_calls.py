"""The llama-bench calls of a bench strategy: one per offload setting (each N of --n-cpu-moe), KV type, -b, -ub and
served context, each with its own VRAM peak; threads, prompt and generation sizes swept inside a call."""

from __future__ import annotations

from ..core.config import kv_pair
from ..llamacpp.bench_output import test_label
from ..llamacpp.cli import depths
from .runs import as_list

# Plans -------------------------------------------------------------------------------------------------

def strategy_settings(name: str, spec: dict) -> list[dict]:
    """One offload setting per llama-bench invocation: a `n_cpu_moe` list expands to one setting per N
    (each gets its own VRAM measurement). Keys: n_gpu_layers, override_tensor, n_cpu_moe, fit_target."""
    base = {"strategy": name}
    for key in ("n_gpu_layers", "override_tensor", "fit_target"):
        if spec.get(key) is not None:
            base[key] = spec[key]
    if spec.get("n_cpu_moe") is None:
        return [base]
    return [{**base, "n_cpu_moe": int(n)} for n in as_list(spec["n_cpu_moe"])]


def invocations(bench: dict, strategy: str, spec: dict) -> list[dict]:
    """Every llama-bench call of one strategy: its settings x KV types x -b x -ub x contexts. Threads, prompt,
    gen and depth are swept inside each call (they do not change the memory a setting takes; the context does,
    so each context is a call of its own, with its own VRAM peak and its own "does not fit")."""
    out = []
    for setting in strategy_settings(strategy, spec):
        for kv in as_list(bench.get("kv") or ["f16"]):
            for b in as_list(bench.get("batch") or [None]):
                for ub in as_list(bench.get("ubatch") or [None]):
                    for ctx in bench.get("contexts") or [None]:
                        out.append({**setting, "kv": kv, "batch": b, "ubatch": ub, "context": ctx})
    return out


def planned_rows(bench: dict, inv: dict, threads: list[int], gpu_build: bool, run: dict) -> list[dict]:
    """The rows a call would have written, with the llama-bench fields that name its setting (as llama-bench
    reports them: -ngl -1 under fit, "none" without -ot): what a "does not fit" call stands for."""
    rows = []
    for d in depths(bench, inv.get("context")):
        for t in threads:
            for p in bench["prompt"]:
                if p:
                    rows.append({"n_prompt": p, "n_gen": 0, "n_depth": d, "n_threads": t})
            for n in bench["gen"]:
                if n:
                    rows.append({"n_prompt": 0, "n_gen": n, "n_depth": d, "n_threads": t})
    k, v = kv_pair(inv.get("kv", "f16"))
    fit = inv.get("fit_target")
    ngl = -1 if fit else inv.get("n_gpu_layers", run["n_gpu_layers"] if gpu_build else -1)
    named = {"type_k": k, "type_v": v, "n_gpu_layers": ngl, "n_cpu_moe": inv.get("n_cpu_moe", 0),
             "tensor_buft_overrides": inv.get("override_tensor", "none"), "fit_target": fit or 0,
             "backends": "CUDA" if gpu_build else "CPU", "n_batch": inv.get("batch"), "n_ubatch": inv.get("ubatch")}
    return [{**r, "test": test_label(r), **named} for r in rows]
