"""Speed plans on a synthetic MoE (random weights, the real Qwen tokenizer from llama.cpp's own vocab GGUF,
made by the workflow: `source: {synthetic: ...}`) on a CPU build: two offload strategies (-ot exps=CPU,
--n-cpu-moe over a list) and two thread counts, and the tuner's record on a machine without a GPU."""

from __future__ import annotations

import json

import pytest
import yaml

from ggufbench.llamacpp.gguf import gguf_metadata
from tests.support.workflow import REPO, snakemake

pytestmark = pytest.mark.e2e
TARGETS = ["results/bench/cpu/synth-moe/F16/exps-cpu.json", "results/bench/cpu/synth-moe/F16/n-cpu-moe.json",
           "results/tune/cpu/synth-moe/F16/vram-1GiB_ctx40.json"]


@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    work = tmp_path_factory.mktemp("moe")
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    config["models"] = {"synth-moe": {"source": {"synthetic": {"arch": "qwen3moe", "vocab": "qwen2", "seed": 1}},
                                      "baseline": "F16", "quants": {"F16": {"quantize": "F16"}}}}
    config["bench"] = {"prompt": [32], "gen": [8], "repetitions": 3, "threads": [1, 2],
                       "strategies": {"exps-cpu": {"override_tensor": "exps=CPU"},
                                      "n-cpu-moe": {"n_cpu_moe": [1, 2]}}}
    config["tuner"] = {"vram_budgets_gib": [1]}
    cfg = work / "moe.yaml"
    cfg.write_text(yaml.safe_dump(config))
    snakemake(work, "--cores", "2", *TARGETS, configfile=cfg)
    return work, json.loads((work / "results/models/synth-moe/source/source.json").read_text())


def rows(work, name):
    return json.loads((work / f"results/bench/cpu/synth-moe/F16/{name}.json").read_text())["result"]["rows"]


def test_exps_cpu_strategy(moe):
    work, _ = moe
    r = rows(work, "exps-cpu")
    assert sorted((x["test"], x["n_threads"]) for x in r) == [("pp32", 1), ("pp32", 2), ("tg8", 1), ("tg8", 2)]
    assert all("exps" in x["tensor_buft_overrides"] and x["strategy"] == "exps-cpu" for x in r)
    assert all(x["median_ts"] > 0 and x["first_sample_discarded"] for x in r)


def test_n_cpu_moe_sweep_is_a_call_per_n(moe):
    work, _ = moe
    r = rows(work, "n-cpu-moe")
    assert sorted({x["n_cpu_moe"] for x in r}) == [1, 2]
    assert len(r) == 2 * 2 * 2  # N x threads x (pp, tg)
    calls = json.loads((work / "results/bench/cpu/synth-moe/F16/n-cpu-moe.json").read_text())["result"]["calls"]
    assert [c["cmd"][c["cmd"].index("-ncmoe") + 1] for c in calls] == ["1", "2"]
    assert all(not c["vram"]["available"] and c["vram"]["reason"].startswith("no GPU") for c in calls)


def test_the_workflow_made_the_synthetic_moe(moe):
    work, source = moe
    meta = gguf_metadata(work / "results/models/synth-moe/quantized/F16/synth-moe-F16.gguf")
    assert meta["architecture"] == "qwen3moe" and meta["expert_count"] == 8 and meta["n_vocab"] == 151936


def test_tuner_without_a_gpu_says_so(moe):
    work, _ = moe
    rec = json.loads((work / TARGETS[2]).read_text())
    assert rec["result"]["status"] == "not measured"
    assert rec["result"]["reason"].startswith("no GPU") and "the tuner needs measured VRAM" in rec["result"]["reason"]
