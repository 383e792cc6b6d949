#!/usr/bin/env python3
"""Benchmark of the quality plan: llama-perplexity invocations and estimated GPU-seconds of the workflow's
plan (PPL cells read from KLD/baseline runs when they measure the same thing) against the naive sequence
(one PPL run per cell, a baseline pass, one KLD run per quant and KV type).

Seconds are estimated per invocation as  load + tokens x rate(ctx) x (kld_factor for KLD-mode runs),
with rate(ctx) = r0 + r1 * ctx, all fitted on measured job records (tool wall time of real runs) under
--calibrate (a results/ folder of a run with at least two context lengths, e.g. the demo's).

  python tools/ppl_plan_cost.py --config config/config.yaml --corpus-tokens 297000 --calibrate results

With --sharded OVERLAY (e.g. config/kld-sharded.yaml, kld.mode: sharded over the whole corpus) it compares
instead, for full-dataset PPL and KLD: the naive plan (a full-corpus PPL run per cell, plus the config's
chunk-limited KLD: a baseline pass and a KLD run per quant and KV type) against the sharded plan (per shard a
baseline pass and every KLD run, over the whole corpus; the PPL cells those runs cover read from them; the other
cells their own runs). --n-vocab sizes the shards (the exact logits forecast under the overlay's budget).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from ggufbench.measure import runs as plan  # noqa: E402
from ggufbench.measure.shards.plan import plan_shards  # noqa: E402


def n_tokens(run: plan.Run, corpus_tokens: int) -> int:
    n_max = corpus_tokens // run.ctx
    return (min(run.chunks, n_max) if run.chunks else n_max) * run.ctx


def load_records(results: Path) -> list[dict]:
    out = []
    for stage in ("perplexity", "kld", "kld-base"):
        for p in sorted((results / stage).rglob("*.json")):
            r = json.loads(p.read_text())
            res = r["result"]
            out.append({"kind": r["stage"], "ctx": r["params"]["ctx"], "tokens": res["n_chunks"] * res["n_ctx"],
                        "wall": r["tool"]["wall_seconds"]})
    if not out:
        raise SystemExit(f"no job records under {results}/(perplexity|kld|kld-base)")
    return out


def nnls(xs: list[tuple], ys: list[float]) -> list[float]:
    """Least squares with every coefficient >= 0 (a cost cannot be negative): the best of the fits on each
    subset of the columns whose coefficients all come out non-negative."""
    import itertools

    import numpy as np

    x, y = np.array(xs, dtype=float), np.array(ys, dtype=float)
    best, best_err = [0.0] * x.shape[1], float(np.sum(y**2))
    for k in range(1, x.shape[1] + 1):
        for cols in itertools.combinations(range(x.shape[1]), k):
            coef, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
            if (coef < 0).any():
                continue
            err = float(np.sum((x[:, cols] @ coef - y) ** 2))
            if err < best_err:
                best, best_err = [0.0] * x.shape[1], err
                for c, v in zip(cols, coef, strict=True):
                    best[c] = float(v)
    return best


def fit(records: list[dict]) -> dict:
    """wall = load + tokens * (r0 + r1 * ctx), non-negative least squares on PPL-mode runs (r1: attention's
    growth with context); the KLD-mode factor from KLD runs."""
    ppl = [r for r in records if r["kind"] != "kld"]
    load, r0, r1 = nnls([(1.0, r["tokens"], r["tokens"] * r["ctx"]) for r in ppl], [r["wall"] for r in ppl])
    if len({r["ctx"] for r in ppl}) < 2:
        r0, r1 = r0 + r1 * ppl[0]["ctx"], 0.0  # one context: no ctx term
    rate = lambda ctx: max(r0 + r1 * ctx, 1e-12)  # noqa: E731
    klds = [r for r in records if r["kind"] == "kld"]
    factor = statistics.median(max(r["wall"] - load, 0) / (r["tokens"] * rate(r["ctx"])) for r in klds) if klds else 1
    return {"load_s": load, "r0": r0, "r1": r1, "kld_factor": factor, "n_records": len(records)}


def seconds(run: plan.Run, corpus_tokens: int, model: dict) -> float:
    rate = max(model["r0"] + model["r1"] * run.ctx, 1e-12)
    s = n_tokens(run, corpus_tokens) * rate * (model["kld_factor"] if run.kind == "kld" else 1.0)
    return model["load_s"] + s


def merged(config: dict, overlay: dict) -> dict:
    """Snakemake's merge of two --configfile files: key by key, recursively."""
    out = dict(config)
    for k, v in overlay.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def sharded_comparison(config: dict, overlay: dict, corpus_tokens: int, n_vocab: int) -> tuple[list, list, dict]:
    """(naive runs, sharded runs, shard plan) for full-dataset PPL and KLD."""
    full = merged(config, overlay)
    naive = [r for r in plan.ppl_cells(full)] + plan.kld_runs(config)  # full-corpus PPL + chunk-limited KLD
    k = full["kld"]
    sp = plan_shards(corpus_tokens, k["ctx"], n_vocab, k.get("chunks"), k["sharded"].get("disk_budget_gib", 4),
                     k["sharded"].get("parallel", 1))
    sharded = []
    for run in plan.kld_runs(full):  # each is made once per shard, over the shard's chunks
        for a, b in sp.shards:
            sharded.append(plan.Run(run.kind, run.build, run.model, run.quant, run.ctx, run.kv, b - a, run.corpus))
    sharded += [run for cell, run in plan.ppl_sources(full) if run is cell]  # cells no KLD run covers
    return naive, sharded, sp.to_dict()


def report(name: str, runs: list, corpus_tokens: int, model: dict) -> float:
    by_kind: dict[str, list[float]] = {}
    for r in runs:
        by_kind.setdefault(r.kind, []).append(seconds(r, corpus_tokens, model))
    parts = ", ".join(f"{k} {len(v)} runs {sum(v):.0f} s" for k, v in by_kind.items())
    total = sum(map(sum, by_kind.values()))
    print(f"{name:>7}: {len(runs)} llama-perplexity runs, {total:.0f} s  ({parts})")
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--corpus-tokens", type=int, required=True, help="tokens of the corpus for the model")
    ap.add_argument("--calibrate", required=True, help="results/ folder with measured perplexity/kld records")
    ap.add_argument("--sharded", help="an overlay config with kld.mode: sharded (see the docstring)")
    ap.add_argument("--n-vocab", type=int, default=248320, help="the model's vocabulary (sizes the shards)")
    a = ap.parse_args()
    config = yaml.safe_load(Path(a.config).read_text())
    model = fit(load_records(Path(a.calibrate)))
    if a.sharded:
        naive, sharded, sp = sharded_comparison(config, yaml.safe_load(Path(a.sharded).read_text()),
                                                a.corpus_tokens, a.n_vocab)
        print(f"cost model from {model['n_records']} measured runs: load {model['load_s']:.2f} s, "
              f"rate {model['r0']:.3e} + {model['r1']:.3e}*ctx s/token, KLD factor {model['kld_factor']:.2f}")
        print(f"shards: {len(sp['shards'])} of up to {sp['chunks_per_shard']} chunks for {sp['n_chunk']} chunks; "
              f"largest shard's logits {max(sp['shard_logits_bytes']) / 2**30:.2f} GiB under a "
              f"{sp['disk_budget_bytes'] / 2**30:.2f} GiB budget "
              f"(unsharded: {sp['unsharded_logits_bytes'] / 2**30:.1f} GiB)")
        s_naive = report("naive", naive, a.corpus_tokens, model)
        s_sh = report("sharded", sharded, a.corpus_tokens, model)
        print(f"sharded / naive: runs {len(sharded)}/{len(naive)}; GPU-seconds {s_sh:.0f}/{s_naive:.0f} = "
              f"{s_sh / s_naive:.3f} — and the sharded plan's KLD covers all {sp['n_chunk']} chunks, the naive one "
              f"{config['kld'].get('chunks')}")
        return
    ours, naive = plan.planned_runs(config), plan.naive_runs(config)
    print(f"cost model from {model['n_records']} measured runs: load {model['load_s']:.2f} s, "
          f"rate {model['r0']:.3e} + {model['r1']:.3e}*ctx s/token, KLD factor {model['kld_factor']:.2f}")
    for name, runs in (("naive", naive), ("plan", ours)):
        by_kind: dict[str, list[float]] = {}
        for r in runs:
            by_kind.setdefault(r.kind, []).append(seconds(r, a.corpus_tokens, model))
        parts = ", ".join(f"{k} {len(v)} runs {sum(v):.0f} s" for k, v in by_kind.items())
        print(f"{name:>5}: {len(runs)} llama-perplexity runs, {sum(map(sum, by_kind.values())):.0f} s  ({parts})")
    s_naive = sum(seconds(r, a.corpus_tokens, model) for r in naive)
    s_ours = sum(seconds(r, a.corpus_tokens, model) for r in ours)
    print(f"plan / naive: runs {len(ours)}/{len(naive)} = {len(ours) / len(naive):.3f}; "
          f"GPU-seconds {s_ours:.0f}/{s_naive:.0f} = {s_ours / s_naive:.3f} ({1 - s_ours / s_naive:.1%} fewer)")


if __name__ == "__main__":
    main()
