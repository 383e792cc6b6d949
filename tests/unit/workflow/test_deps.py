"""workflow.deps: each rule's inputs and params for a config, as the rules read them (the demo and the study
configs, validated with their defaults as the workflow does); what each rule reads from the config, declared; and
what a code change reruns (code_version)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import yaml

from ggufbench.core.config import validated
from ggufbench.workflow import deps
from ggufbench.workflow.deps import READS, Deps, canonical, code_version
from tests.support import REPO


def load(name: str) -> dict:
    return validated(yaml.safe_load((REPO / "config" / name).read_text()))


@pytest.fixture(scope="module")
def demo() -> Deps:
    return Deps(load("demo.yaml"))


@pytest.fixture(scope="module")
def study() -> Deps:
    return Deps(load("config.yaml"))


def wc(**kw):
    return SimpleNamespace(**kw)


def test_canonical_sorts_keys_so_a_reordered_config_is_the_same_param():
    assert repr(canonical({"b": 1, "a": {"d": [{"y": 1, "x": 2}], "c": 0}})) == \
        repr({"a": {"c": 0, "d": [{"x": 2, "y": 1}]}, "b": 1})


def test_a_measurement_reads_its_build_record_model_and_corpus_not_its_tool(demo):
    w = wc(build="cpu", model="smollm2-135m", quant="Q8_0", ctx="1024", kv="q8_0")
    assert demo.perplexity_inputs(w) == {
        "build": "results/builds/cpu/build.json",
        "manifest": "results/models/smollm2-135m/quantized/Q8_0/manifest.json",
        "corpus": "results/data/pydocs/corpus.txt", "corpus_record": "results/data/pydocs/corpus.json"}
    assert demo.perplexity_chunks(w) == 4  # chunks_by_ctx
    k = demo.kld_inputs(wc(build="cpu", model="smollm2-135m", quant="Q2_K", ctx="512", kv="q8_0"))
    assert k["logits"] == "results/kld-base/cpu/smollm2-135m/ctx512_kv-f16.logits"  # the f16-KV baseline's
    assert k["base_record"] == "results/kld-base/cpu/smollm2-135m/ctx512_kv-f16.json"
    base = demo.kld_base_inputs(wc(build="cpu", model="smollm2-135m", ctx="512"))
    assert base["manifest"].endswith("F16/manifest.json")


def test_a_cpu_build_does_not_take_settings_it_cannot_measure_with(demo, study):
    cpu = wc(build="cpu")
    assert demo.run_settings(cpu)["n_gpu_layers"] is None and demo.gpu_settings(cpu) == {} and demo.gpu_count(cpu) == 0
    cuda = wc(build=next(iter(study.builds)))
    assert study.gpu_count(cuda) == 1 and study.run_settings(cuda)["n_gpu_layers"] == 99


def test_bench_params_leave_out_how_samples_are_summarised(demo):
    measured = demo.bench_measured(wc(build="cpu"))
    assert not set(measured) & {"discard_first", "noise_threshold_pct", "strategies"}
    assert demo.bench_summary() == {"discard_first": True, "noise_threshold_pct": 5.0}
    assert demo.bench_strategy_spec(wc(strategy="default")) == {}


def test_quants_of_every_kind_have_their_folder(study, demo):
    assert study.manifest("qwen3.5-35b-a3b", "Q8_0") == "results/models/qwen3.5-35b-a3b/hub/Q8_0/manifest.json"
    assert demo.quantize_inputs(wc(model="smollm2-135m")) == {
        "source": "results/models/smollm2-135m/source/model.gguf", "build": "results/builds/cpu/build.json"}


def test_result_lists_cover_the_plan(demo, study):
    assert len(demo.perplexity_results()) == 16 and len(demo.kld_results()) == 7 and len(demo.bench_results()) == 6
    assert [b for b in demo.bench_results() if "default" not in b] == [
        "results/bench/cpu/smollm2-135m/Q4_K_M/b4096.json", "results/bench/cpu/smollm2-135m/Q4_K_M/no-mmap.json"]
    assert demo.server_results() == ["results/server/cpu/smollm2-135m/vram-0.2GiB_ctx1024.json",
                                     "results/server/cpu/smollm2-135m/vram-1GiB_ctx1024.json"]
    assert len(study.tune_results()) == 20
    w = wc(build="cpu", model="smollm2-135m", budget="1", ctx="1024")
    inputs = demo.server_check_inputs(w)
    assert len(inputs["kld"]) == 7 and len(inputs["manifests"]) == 4 and inputs["tune"] == []
    assert demo.model_quants(w) == ["F16", "Q2_K", "Q4_K_M", "Q8_0"]


def test_sharded_inputs_and_the_shard_disk(tmp_path):
    config = load("config.yaml")
    config["kld"] = {**config["kld"], "mode": "sharded", "sharded": {"disk_budget_gib": 4, "parallel": 1}}
    d = Deps(config)
    w = wc(build="cuda", model="qwen3.5-35b-a3b", ctx="512", shard="1")
    runs = d.kld_shard_runs(w)
    assert ["Q4_K_M", "q8_0"] in runs and ["Q8_0", "f16"] not in runs  # the baseline pass is the shard's own
    inputs = d.kld_shard_inputs(w)
    assert inputs["plan"] == "results/kld-shards/cuda/qwen3.5-35b-a3b/ctx512/plan.json"
    assert len(inputs["manifests"]) == len(d.kld_shard_quants(w)) == 5
    plan = tmp_path / "plan.json"
    plan.write_text('{"result": {"n_shards": 2, "shard_logits_bytes": [5, 2500001]}}')
    assert d.kld_shard_disk_mb(w, wc(plan=str(plan))) == 3
    assert d.kld_shard_records(w, plan) == [f"results/kld-shards/cuda/qwen3.5-35b-a3b/ctx512/shard-{i}.json"
                                            for i in (0, 1)]


def rule_params(rule: str) -> set[str]:
    """The params: names of a rule in rules/*.smk."""
    text = "\n".join(p.read_text() for p in (REPO / "rules").glob("*.smk"))
    block = re.search(rf"^(?:rule|checkpoint) {rule}:\n(.*?)(?=^\S|\Z)", text, re.S | re.M).group(1)
    params = re.search(r"^    params:\n((?:        .*\n|\s*\n)*)", block, re.M)
    return set(re.findall(r"^        (\w+)=", params.group(1), re.M)) if params else set()


def test_every_rule_declares_what_it_reads_and_no_guard_is_a_param():
    rules = set(re.findall(r"^(?:rule|checkpoint) (\w+):", "\n".join(
        p.read_text() for p in (REPO / "rules").glob("*.smk")), re.M))
    assert set(READS) <= rules
    missing = rules - set(READS) - {"server_table", "figures"}  # these read no config value
    assert missing == set()
    for rule, keys in READS.items():
        params = rule_params(rule)
        for key, effect in keys.items():
            assert effect in deps.EFFECTS
            if effect != deps.MEASURED:  # a value read without measuring it must not be what a param holds
                assert key.split(".")[-1] not in params, (rule, key)


def test_settings_hand_a_job_only_what_is_declared_unmeasured():
    config = load("demo.yaml")
    assert deps.settings(config, "kld_base") == {"kld.max_logits_gib": 1}
    assert deps.settings(config, "llama_bench") == {"bench.discard_first": True, "bench.noise_threshold_pct": 5.0}
    assert deps.settings(config, "perplexity") == {}


def test_the_code_version_follows_the_code_a_rule_runs(tmp_path, monkeypatch):
    """A post-processing rule's param: it changes with the modules its script calls and what they import, and
    with nothing else (a measurement's code is not in it)."""
    pkg = tmp_path / "ggufbench"
    (pkg / "report" / "templates").mkdir(parents=True)
    (pkg / "measure").mkdir()
    (pkg / "report" / "__init__.py").write_text("")
    (pkg / "report" / "tables.py").write_text("from ..measure import tuner\nfrom . import other\n")
    (pkg / "report" / "other.py").write_text("X = 1\n")
    (pkg / "measure" / "tuner.py").write_text("Y = 1\n")
    (pkg / "measure" / "quality.py").write_text("Z = 1\n")
    monkeypatch.setattr(deps, "PACKAGE", pkg)

    def version() -> str:
        deps._imports.cache_clear()
        deps.code_version.cache_clear()
        return code_version("ggufbench.report.tables")

    first = version()
    (pkg / "measure" / "quality.py").write_text("Z = 2\n")  # not imported by the tables
    assert version() == first
    (pkg / "measure" / "tuner.py").write_text("Y = 2\n")    # imported, one step away
    assert version() != first


def test_the_post_processing_rules_hold_their_code_version(demo):
    assert {r for r in deps.POST_PROCESSING if "code" in rule_params(r)} == set(deps.POST_PROCESSING)
    assert re.fullmatch(r"[0-9a-f]{16}", demo.code("aggregate"))
    measuring = ("perplexity", "kld", "kld_base", "llama_bench", "tune_offload", "build_llama_cpp", "quantize_gguf")
    assert not any("code" in rule_params(r) for r in measuring)  # a code change measures nothing anew


def test_the_profiles_leave_snakemakes_code_trigger_out():
    for profile in ("default", "slurm"):
        cfg = yaml.safe_load((REPO / "profiles" / profile / "config.yaml").read_text())
        assert cfg["rerun-triggers"] == ["mtime", "params", "input", "software-env"], profile


def test_task_passes_their_inputs_and_the_baseline_cell():
    config = load("demo.yaml")
    config["tasks"] = {"sets": {"cloze": {"cloze": {"corpus": "pydocs"}}, "arc": {"local": {"path": "arc.bin"}}},
                       "kv": ["f16", "q8_0"], "quants": ["Q2_K"]}
    d = Deps(validated(config))
    model = "smollm2-135m"
    assert d.task_cells(model) == [("F16", "f16"), ("Q2_K", "f16"), ("Q2_K", "q8_0")]  # the baseline always
    assert len(d.task_results()) == 2 * 3
    assert "results/tasks/cpu/smollm2-135m/cloze/Q2_K_kv-q8_0.json" in d.task_results()
    assert d.task_noise_floor_results() == [f"results/tasks/cpu/{model}/{t}/noise-floor/F16_kv-f16.json"
                                            for t in ("arc", "cloze")]  # canonical: sorted
    w = wc(build="cpu", model=model, taskset="cloze", quant="Q2_K", kv="q8_0")
    assert d.task_set_inputs(w) == {"corpus": "results/data/pydocs/corpus.txt",
                                    "corpus_record": "results/data/pydocs/corpus.json"}
    assert d.task_set_inputs(wc(taskset="arc")) == {}
    assert d.task_score_inputs(w) == {"build": "results/builds/cpu/build.json",
                                      "manifest": "results/models/smollm2-135m/quantized/Q2_K/manifest.json",
                                      "tasks": "results/tasks/sets/cloze/tasks.bin",
                                      "task_record": "results/tasks/sets/cloze/tasks.json"}
    assert d.task_scoring(w) == {"ctx": 512, "batch": None, "ubatch": None}
    assert d.task_noise_floor(w) == {"batch": 512, "ubatch": 64}
    assert d.task_baselines() == {model: ["F16", "f16"]}
    assert d.task_set_spec(w)["cloze"]["choices"] == 3
    plain = Deps({k: v for k, v in load("demo.yaml").items() if k != "tasks"})
    assert plain.task_results() == plain.task_noise_floor_results() == [] and plain.task_baselines() == {}


def test_kv_cost_runs_one_job_per_quant_and_context_with_every_kv_type(demo, study):
    """The demo scores its F16 at 512 and 4096; the study every quant at 8192 and 32768, q8_0, q4_0 and q8_0-q4_0
    in one run each, on the corpus its record names."""
    assert demo.kv_cost_results() == ["results/kv-cost/cpu/smollm2-135m/F16/ctx512.json",
                                      "results/kv-cost/cpu/smollm2-135m/F16/ctx4096.json"]
    w = wc(build="cpu", model="smollm2-135m", quant="F16", ctx="4096")
    assert demo.kv_cost_cells(w) == {"batch": 512, "bins": [0, 128, 1024], "chunks": 1, "kvs": ["q8_0"],
                                     "ref_kv": "f16"}
    assert demo.kv_cost_cells(wc(**{**vars(w), "ctx": "512"}))["bins"] == [0, 128]  # edges past the context dropped
    assert demo.kv_cost_inputs(w)["corpus"] == "results/data/pydocs/corpus.txt"
    assert "results/data/pydocs/corpus.json" in demo.corpus_records()
    assert len(study.kv_cost_results()) == 10
    cells = study.kv_cost_cells(wc(build="cuda", model="qwen3.5-35b-a3b", quant="Q4_K_M", ctx="32768"))
    assert cells["kvs"] == ["q8_0", "q4_0", "q8_0-q4_0"] and cells["chunks"] == 4
    assert all(READS["kv_cost"][f"kv_cost.{k}"] == deps.MEASURED for k in ("kv", "ref_kv", "bins", "batch"))
