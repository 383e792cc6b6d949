"""The measurement plan: which llama-perplexity runs the config asks for, and which record answers each
PPL cell. Used by the workflow (rules/common.smk) and by tools/ppl_plan_cost.py, so both count the same runs.

No GPU pass twice: a KLD run prints PPL(Q) for its quant, KV type, ctx, corpus and chunks exactly as a PPL
run would (llama-perplexity scores the same second half of each chunk in both modes), and the baseline pass
prints the baseline's PPL. So a PPL cell that a KLD run (or the baseline pass) covers is read from that run's
record instead of being measured again.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core import paths


def as_list(value) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


def serve_contexts(config: dict) -> list[int]:
    """The contexts recommendations, tuner and server checks are for: bench.contexts, or without them the one
    llama-bench's own runs hold (largest prompt + largest generation)."""
    b = config["bench"]
    return list(b["contexts"]) or [max(b["prompt"]) + max(b["gen"])]


def ppl_chunks(config: dict, ctx: int) -> int | None:
    ppl = config["perplexity"]
    by_ctx = ppl.get("chunks_by_ctx") or {}
    return by_ctx.get(ctx, by_ctx.get(str(ctx), ppl.get("chunks")))


def kld_chunks(config: dict, ctx: int) -> int | None:
    """--chunks of the KLD passes at ctx: kld.chunks_by_ctx where it names ctx, else kld.chunks."""
    k = config.get("kld") or {}
    by_ctx = k.get("chunks_by_ctx") or {}
    return by_ctx.get(ctx, by_ctx.get(str(ctx), k.get("chunks")))


def kld_ctxs(config: dict) -> list[int]:
    """kld.ctx: one context or a list."""
    return as_list((config.get("kld") or {}).get("ctx", []))


def kld_kvs(config: dict) -> list[str]:
    return as_list((config.get("kld") or {}).get("kv", "f16"))


def kld_base_kv(config: dict) -> str:
    return (config.get("kld") or {}).get("base_kv", "f16")


def kld_mode(config: dict) -> str:
    """chunks (one baseline logits file for kld.chunks chunks) or sharded (shards, docs/kld-sharded.md)."""
    return (config.get("kld") or {}).get("mode", "chunks")


@dataclass(frozen=True)
class Run:
    """One llama-perplexity invocation the plan makes."""

    kind: str          # perplexity | kld_base | kld
    build: str
    model: str
    quant: str
    ctx: int
    kv: str
    chunks: int | None
    corpus: str

    @property
    def path(self) -> str:
        template = {"perplexity": paths.PERPLEXITY, "kld_base": paths.KLD_BASE, "kld": paths.KLD}[self.kind]
        return paths.path(template, build=self.build, model=self.model, quant=self.quant, ctx=self.ctx, kv=self.kv)


def kld_runs(config: dict) -> list[Run]:
    """The baseline passes and KLD runs (none without a `kld:` section: a speed-only study)."""
    k = config.get("kld")
    runs = []
    if not k:
        return runs
    for build in config["builds"]:
        for model, m in config["models"].items():
            base = m["baseline"]
            for ctx in kld_ctxs(config):
                chunks = kld_chunks(config, ctx)
                runs.append(Run("kld_base", build, model, base, ctx, kld_base_kv(config), chunks, k["corpus"]))
                for quant in m["quants"]:
                    for kv in kld_kvs(config):
                        if quant == base and kv == kld_base_kv(config):
                            continue  # the baseline against itself: the baseline pass
                        runs.append(Run("kld", build, model, quant, ctx, kv, chunks, k["corpus"]))
    return runs


@dataclass(frozen=True)
class KvCostRun:
    """One ggufbench-kvscore run: every KV type of kv_cost.kv against kv_cost.ref_kv on one quant at one context."""

    build: str
    model: str
    quant: str
    ctx: int
    chunks: int | None

    @property
    def path(self) -> str:
        return paths.path(paths.KV_COST, build=self.build, model=self.model, quant=self.quant, ctx=self.ctx)


def kv_cost_runs(config: dict) -> list[KvCostRun]:
    """The scorer runs (none without a `kv_cost:` section)."""
    kc = config.get("kv_cost")
    if not kc:
        return []
    by_ctx = kc.get("chunks_by_ctx") or {}
    wanted = kc.get("quants")
    return [KvCostRun(build, model, quant, ctx, by_ctx.get(ctx, by_ctx.get(str(ctx), kc.get("chunks"))))
            for build in config["builds"] for model, m in config["models"].items() for quant in m["quants"]
            if wanted is None or quant in wanted for ctx in kc["ctx"]]


def ppl_cells(config: dict) -> list[Run]:
    """Every cell of the PPL matrix, as the run a naive plan would make for it (none without `perplexity:`)."""
    p = config.get("perplexity")
    if not p:
        return []
    return [Run("perplexity", build, model, quant, ctx, kv, ppl_chunks(config, ctx), p["corpus"])
            for build in config["builds"] for model, m in config["models"].items() for quant in m["quants"]
            for ctx in p["ctx"] for kv in p["kv"]]


def _same_measurement(cell: Run, run: Run) -> bool:
    return (cell.build, cell.model, cell.quant, cell.ctx, cell.kv, cell.corpus, cell.chunks) == (
        run.build, run.model, run.quant, run.ctx, run.kv, run.corpus, run.chunks)


def ppl_sources(config: dict) -> list[tuple[Run, Run]]:
    """(cell, the run whose record answers it): a KLD or baseline run when one measures the same thing."""
    klds = kld_runs(config)
    out = []
    for cell in ppl_cells(config):
        cover = next((r for r in klds if _same_measurement(cell, r)), None)
        out.append((cell, cover or cell))
    return out


def planned_runs(config: dict) -> list[Run]:
    """What the workflow runs: the baseline passes, the KLD runs, and the PPL cells no KLD run covers."""
    return kld_runs(config) + [run for cell, run in ppl_sources(config) if run is cell]


def naive_runs(config: dict) -> list[Run]:
    """The sequence without reuse: one PPL run per cell, a baseline pass, one KLD run per quant (and KV)."""
    return ppl_cells(config) + kld_runs(config)
