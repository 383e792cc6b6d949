"""The workflow's DAG, lint and config checks, through the real Snakemake (dry runs: no job runs)."""

from __future__ import annotations

import yaml

from tests.support.workflow import REPO, job_counts, snakemake


def test_demo_dag_is_complete(tmp_path):
    out = snakemake(tmp_path, "-n", "--cores", "2", configfile=REPO / "config/demo.yaml").stdout
    counts = job_counts(out)
    # 4 quants x 2 KV types x 2 contexts = 16 PPL cells; the 8 at ctx 512 come from the baseline pass and the
    # 7 KLD runs (4 quants x 2 KV types, less F16 with f16 KV: that is the baseline pass); 6 llama-bench (4 quants
    # by default, and -b/-ub 4096 and no-mmap on Q4_K_M, the quant the claims are read on); a server
    # check per VRAM budget (2) at the one served context; the cloze task set, answered by the 4 quants and once more
    # by F16 with other batch sizes (the noise floor)
    assert counts == {"build_llama_cpp": 1, "fetch_model_source": 1, "make_corpus": 1, "quantize_gguf": 4,
                      "kld_base": 1, "llama_bench": 6, "perplexity": 8, "kld": 7, "aggregate": 1, "figures": 1,
                      "server_check": 2, "server_table": 1, "summary_report": 1, "make_task_set": 1,
                      "task_score": 4, "task_noise_floor": 1, "kv_cost": 2, "all": 1, "total": 44}


def test_demo_is_the_default_config(tmp_path):
    out = snakemake(tmp_path, "-n", "--cores", "2").stdout
    assert job_counts(out)["quantize_gguf"] == 4


def test_study_config_dry_runs_to_a_complete_dag(tmp_path):
    out = snakemake(tmp_path, "-n", "--cores", "8", configfile=REPO / "config/config.yaml").stdout
    counts = job_counts(out)
    # 5 quants from the hub; PPL 5 quants x 2 ctx x 3 KV types, the 15 at ctx 512 from KLD runs (14) and the
    # Q8_0 baseline pass
    assert counts["download_gguf"] == 5
    assert counts["perplexity"] == 15
    # KLD at ctx 512 and 8192 (issue 26): a baseline pass and 14 KLD runs at each
    assert counts["kld"] == 28 and counts["kld_base"] == 2
    # the KV-type cost by the scorer: 5 quants x ctx 8192 and 32768, every KV type in one run each
    assert counts["kv_cost"] == 10
    # the answers (issue 27): ARC-Challenge, ARC-Easy, MMLU x 5 quants x 3 KV types, and a noise floor per set
    assert counts["make_task_set"] == 3 and counts["task_score"] == 45 and counts["task_noise_floor"] == 3
    # llama-bench: 5 quants x 11 offload strategies (the 5 offloads; the study's C7 and its mmap twin, the layer
    # split, -b/-ub 4096 beside n-cpu-moe and both fits: issue 28); the tuner: 5 quants x 2 VRAM budgets x 2
    # contexts; a server check per report budget (12, 16, 24 GiB) and context
    assert counts["llama_bench"] == 55
    assert "results/bench/cuda/qwen3.5-35b-a3b/Q4_K_M/c7.json" in out
    assert "results/bench/cuda/qwen3.5-35b-a3b/Q4_K_M/layer-split.json" in out
    assert counts["tune_offload"] == 20
    assert counts["server_check"] == 6 and counts["server_table"] == 1
    assert "quantize_gguf" not in counts
    assert "results/models/qwen3.5-35b-a3b/hub/bartowski-Q4_K_L/manifest.json" in out


def test_study_with_sharded_kld_dry_runs(tmp_path):
    """config/kld-sharded.yaml over the study: the shard plan is a checkpoint (its shard jobs appear once it has
    run); the 15 ctx-512 cells wait for the combined shard records instead of PPL runs of their own."""
    proc = snakemake(tmp_path, "-n", "--cores", "8", "--configfile", str(REPO / "config/config.yaml"),
                     str(REPO / "config/kld-sharded.yaml"))
    counts = job_counts(proc.stdout)
    # a shard plan and 14 combined KLD records per kld.ctx; the baseline's own PPL is a cell only at ctx 512 (at 8192
    # the PPL matrix scores the whole corpus, the KLD 4 chunks: not the same measurement)
    assert counts["kld_shard_plan"] == 2 and counts["kld_combine"] == 28 and counts["kld_base_combine"] == 1
    assert counts["perplexity"] == 15  # ctx 8192 only, on the whole corpus as before
    assert "kld" not in counts and "kld_base" not in counts
    assert "The run involves checkpoint jobs" in proc.stdout + proc.stderr


def test_gpu_jobs_ask_for_a_gpu(tmp_path):
    out = snakemake(tmp_path, "-n", "--cores", "8", configfile=REPO / "config/config.yaml").stdout
    blocks = out.split("\n\n")
    gpu_rules = {"perplexity", "kld", "kld_base", "llama_bench", "tune_offload"}
    for block in blocks:
        for rule in gpu_rules:
            if block.lstrip().startswith(f"rule {rule}:") or f"\nrule {rule}:" in block:
                assert "gpu=1" in block, block


def test_lint_is_clean():
    for cfg in ("config/demo.yaml", "config/config.yaml", "config/config.yaml config/kld-sharded.yaml"):
        proc = snakemake(REPO, "--lint", "--configfile", *(str(REPO / c) for c in cfg.split()), check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Lints for" not in proc.stdout + proc.stderr


def _write(tmp_path, config):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_unknown_key_fails_before_any_job_and_names_it(tmp_path):
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    config["perplexity"]["ktx"] = [512]
    proc = snakemake(tmp_path, "-n", configfile=_write(tmp_path, config), check=False)
    assert proc.returncode != 0
    assert "'ktx' was unexpected" in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists()


def test_wrong_type_names_the_key(tmp_path):
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    config["kld"]["chunks"] = "many"
    proc = snakemake(tmp_path, "-n", configfile=_write(tmp_path, config), check=False)
    assert proc.returncode != 0
    text = proc.stderr + proc.stdout
    assert "'many' is not of type 'integer'" in text and "chunks" in text


def test_inconsistent_config_names_the_key(tmp_path):
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    config["models"]["smollm2-135m"]["baseline"] = "BF16"
    proc = snakemake(tmp_path, "-n", configfile=_write(tmp_path, config), check=False)
    assert proc.returncode != 0
    assert "models.smollm2-135m.baseline: 'BF16' is not one of" in proc.stderr + proc.stdout
