"""The llama-bench calls of a bench strategy: one per offload setting (each N of --n-cpu-moe, each -ngl of a layer
split), KV type, -b, -ub and served context, each with its own VRAM peak; threads, prompt and generation sizes swept
inside a call. A strategy may set its own KV types, -b/-ub, threads and no_mmap (the study's C7 is one strategy that
sets them all); the bench section's lists stand for every strategy that does not."""

from __future__ import annotations

from itertools import product

from ..core.config import kv_pair
from ..llamacpp.bench_output import test_label
from ..llamacpp.cli import depths
from .runs import as_list

# A strategy's offload keys: one value each, or (SWEPT) one value or a list, a call each.
OFFLOAD_KEYS = ("override_tensor", "fit_target")
SWEPT = ("n_gpu_layers", "n_cpu_moe")
# A strategy's own lists of what the bench section lists for every strategy (a call each).
CALL_KEYS = {"kv": ["f16"], "batch": [None], "ubatch": [None]}


# Plans -------------------------------------------------------------------------------------------------

def strategy_settings(name: str, spec: dict) -> list[dict]:
    """One offload setting per llama-bench invocation: an `n_cpu_moe` or `n_gpu_layers` list expands to one setting
    per value (each gets its own VRAM measurement). Keys: n_gpu_layers, override_tensor, n_cpu_moe, fit_target, and
    no_mmap (the model loaded without mmap: part of the setting, as the server command carries it)."""
    base = {"strategy": name, **{k: spec[k] for k in OFFLOAD_KEYS if spec.get(k) is not None}}
    if spec.get("no_mmap"):
        base["no_mmap"] = True
    settings = [base]
    for key in SWEPT:
        if spec.get(key) is not None:
            settings = [{**s, key: int(v)} for s in settings for v in as_list(spec[key])]
    return settings


def _axis(bench: dict, spec: dict, key: str) -> list:
    """A call axis: the strategy's own list, else the bench section's, else llama-bench's default (None)."""
    for source in (spec, bench):
        if source.get(key) is not None and source.get(key) != []:
            return as_list(source[key])
    return CALL_KEYS[key]


def invocations(bench: dict, strategy: str, spec: dict) -> list[dict]:
    """Every llama-bench call of one strategy: its settings x KV types x -b x -ub x contexts. Threads, prompt,
    gen and depth are swept inside each call (they do not change the memory a setting takes; the context does,
    so each context is a call of its own, with its own VRAM peak and its own "does not fit"). A strategy's own
    kv, batch and ubatch replace the bench section's lists; its own threads (kept in the call) the bench's."""
    own_threads = {"threads": [int(t) for t in as_list(spec["threads"])]} if spec.get("threads") else {}
    axes = [_axis(bench, spec, k) for k in CALL_KEYS]
    return [{**setting, "kv": kv, "batch": b, "ubatch": ub, "context": ctx, **own_threads}
            for setting in strategy_settings(strategy, spec)
            for kv, b, ub, ctx in product(*axes, bench.get("contexts") or [None])]


def planned_rows(bench: dict, inv: dict, threads: list[int], gpu_build: bool, run: dict) -> list[dict]:
    """The rows a call would have written, with the llama-bench fields that name its setting (as llama-bench
    reports them: -ngl -1 under fit, "none" without -ot): what a "does not fit" call stands for. threads: the
    bench's, unless the call has its strategy's own."""
    rows = []
    for d in depths(bench, inv.get("context")):
        for t in inv.get("threads") or threads:
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
