"""config/my-model.yaml, the own-model starter of config/README.md, as a user runs it: dry-run with files at its
paths it plans every stage; without them it is refused before anything runs, naming each key."""

from __future__ import annotations

import subprocess
import sys

import yaml

from tests.support import REPO
from tests.support.hubserver import tiny_gguf
from tests.support.workflow import job_counts

STARTER = REPO / "config" / "my-model.yaml"


def starter_files(cwd) -> dict:
    """The files config/my-model.yaml names, made under cwd (GGUFs with a header, a text); returns the config."""
    config = yaml.safe_load(STARTER.read_text())
    files = [q["local"]["path"] for q in config["models"]["my-model"]["quants"].values() if "local" in q]
    for f in files:
        (cwd / f).parent.mkdir(parents=True, exist_ok=True)
        (cwd / f).write_bytes(tiny_gguf("mine"))
    text = cwd / config["corpora"]["mytext"]["local"]["path"]
    text.parent.mkdir(parents=True, exist_ok=True)
    text.write_text("Some text of my own.\n" * 1000)
    return config


def workdir(tmp_path):
    for name in ("Snakefile", "rules", "scripts", "config", "profiles", "envs", "src"):
        (tmp_path / name).symlink_to(REPO / name)
    return tmp_path


def dry_run(cwd):
    cmd = [sys.executable, "-m", "snakemake", "-n", "reports/summary.html", "--configfile", "config/my-model.yaml"]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_starter_plans_every_stage_once_its_files_are_there(tmp_path):
    cwd = workdir(tmp_path)
    config = starter_files(cwd)
    out = dry_run(cwd)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    jobs = job_counts(out.stdout)
    n_quants, n_kv = len(config["models"]["my-model"]["quants"]), len(config["kld"]["kv"])
    assert jobs["local_gguf"] == n_quants and jobs["build_llama_cpp"] == 1 and jobs["make_corpus"] == 1
    assert jobs["kld"] == n_quants * n_kv - 1  # the baseline's own f16 cell is the baseline pass
    assert jobs["llama_bench"] == n_quants * len(config["bench"]["strategies"])
    assert jobs["tune_offload"] == n_quants and jobs["summary_report"] == 1


def test_without_its_files_it_is_refused_naming_each_key(tmp_path):
    out = dry_run(workdir(tmp_path))
    assert out.returncode != 0
    for key in ("models.my-model.quants.Q8_0.local.path", "models.my-model.quants.Q4_K_M.local.path",
                "corpora.mytext.local.path"):
        assert f"{key}: " in out.stderr + out.stdout
