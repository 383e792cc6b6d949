"""The measurement plan: which PPL cells come from KLD/baseline runs (no GPU pass twice)."""

from __future__ import annotations

import copy

import yaml

from ggufbench.measure import runs as plan
from tests.support.workflow import REPO


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


def test_demo_ctx512_cells_come_from_kld_runs():
    config = load("demo.yaml")
    sources = {(c.quant, c.kv, c.ctx): r.kind for c, r in plan.ppl_sources(config)}
    assert len(sources) == 4 * 2 * 2
    assert sources[("F16", "f16", 512)] == "kld_base"
    assert sources[("Q4_K_M", "q8_0", 512)] == "kld"
    assert {k for (_, _, ctx), k in sources.items() if ctx == 1024} == {"perplexity"}
    ours, naive = plan.planned_runs(config), plan.naive_runs(config)
    # 1 baseline pass + 7 KLD runs + 8 PPL runs at ctx 1024, against 16 PPL + 1 + 7
    assert (len(ours), len(naive)) == (16, 24)
    assert len({r.path for r in ours}) == len(ours)


def test_a_cell_differing_in_chunks_is_measured_itself():
    config = load("demo.yaml")
    config["perplexity"]["chunks"] = 10  # the KLD runs score 8 chunks: not the same measurement
    kinds = {(c.quant, c.kv, c.ctx): r.kind for c, r in plan.ppl_sources(config)}
    assert set(kinds.values()) == {"perplexity"}


def test_a_cell_differing_in_corpus_is_measured_itself():
    config = copy.deepcopy(load("demo.yaml"))
    config["corpora"]["other"] = {"python_docs": {"max_bytes": 200000}}
    config["kld"]["corpus"] = "other"
    assert {r.kind for _, r in plan.ppl_sources(config)} == {"perplexity"}


def test_single_kld_kv_covers_only_its_cells():
    config = load("demo.yaml")
    config["kld"]["kv"] = "f16"
    kinds = {(c.quant, c.kv, c.ctx): r.kind for c, r in plan.ppl_sources(config)}
    assert [k for k, v in kinds.items() if v != "perplexity"] == [(q, "f16", 512) for q in
                                                                    config["models"]["smollm2-135m"]["quants"]]
    assert sum(r.kind == "kld" for r in plan.kld_runs(config)) == 3


def test_study_plan_counts():
    config = load("config.yaml")
    ours, naive = plan.planned_runs(config), plan.naive_runs(config)
    # 5 quants x 3 KV at kld.ctx 512 and 8192: each 1 baseline pass + 14 KLD runs; the ctx-512 PPL cells come from
    # them, the 15 ctx-8192 PPL cells are runs of their own (the whole corpus; KLD at 8192 scores 4 chunks)
    assert sum(r.kind == "perplexity" for r in ours) == 15
    assert sum(r.kind == "kld" for r in ours) == 28
    assert (len(ours), len(naive)) == (45, 60)
    assert sorted({(r.ctx, r.chunks) for r in ours if r.kind == "kld"}) == [(512, 25), (8192, 4)]


def test_kv_cost_runs():
    config = load("config.yaml")
    runs = plan.kv_cost_runs(config)
    # 5 quants x 2 contexts, every KV type of kv_cost.kv in each run
    assert len(runs) == 10 and {(r.ctx, r.chunks) for r in runs} == {(8192, 16), (32768, 4)}
    assert runs[0].path == "results/kv-cost/cuda/qwen3.5-35b-a3b/Q8_0/ctx8192.json"
    assert plan.kv_cost_runs(load("demo.yaml")) == [plan.KvCostRun("cpu", "smollm2-135m", "F16", 512, 2),
                                                    plan.KvCostRun("cpu", "smollm2-135m", "F16", 4096, 1)]
    assert plan.kv_cost_runs({**config, "kv_cost": None}) == []


def test_chunks_by_ctx():
    config = load("config.yaml")
    assert plan.ppl_chunks(config, 512) == 25
    assert plan.ppl_chunks(config, 8192) is None
