"""A real llama.cpp update, as the README's recipe makes it: config/update.yaml has two CPU builds, `previous` and
`current`, both at the llama.cpp of llama-cpp-python 0.3.16 (4227c9b, 2025-08-14: a bare -fa, no --fit, no
llama-fit-params, an older llama-perplexity and llama-bench); the overlay config/update-bump.yaml moves `current`
to 0.3.36 (0c1e570, the demo's). The README's three commands run as written: only `current`'s jobs rerun (the
job list), `previous` keeps its results (their bytes and mtimes), and the report's builds section names both
commits and judges every cell. The 0.3.16 build compiles once (~8 min on 2 cores; then cached), 0.3.36 is the
demo's cached build."""

from __future__ import annotations

import json
import re
import shlex
import shutil

import pandas as pd
import pytest

from tests.support import REPO
from tests.support.workflow import job_counts, snakemake

pytestmark = pytest.mark.e2e
OLD_COMMIT, NEW_COMMIT = "4227c9be4268", "0c1e57098bba"


def readme_commands() -> list[list[str]]:
    """The recipe's commands, from the README's block that uses config/update-bump.yaml."""
    text = (REPO / "README.md").read_text()
    block = next(b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if "update-bump.yaml" in b)
    return [shlex.split(line.split(" #")[0].strip()) for line in block.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def update(tmp_path_factory):
    """The workdir after each step: (before, dry run of the bump, after), with the records' states."""
    work = tmp_path_factory.mktemp("update")
    shutil.copytree(REPO / "config", work / "config")
    before, dry, after = readme_commands()
    assert before[:4] == ["snakemake", "--cores", "2", "reports/summary.html"] and "-n" in dry
    snakemake(work, *before[1:])
    kept = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (work / "results").rglob("*.json")
            if "/previous/" in p.as_posix()}
    plan = snakemake(work, *dry[1:]).stdout
    snakemake(work, *after[1:])
    return work, kept, plan


def test_both_builds_start_at_the_old_llama_cpp_and_it_lacks_what_came_later(update):
    work, _, _ = update
    for b in ("previous", "current"):
        rec = json.loads((work / f"results/builds/{b}/build.json").read_text())
        if b == "previous":
            assert rec["commit"].startswith(OLD_COMMIT) and rec["source"]["version"] == "0.3.16"
            f = rec["features"]
            assert f["flash_attn"] == "flag" and f["bench_flash_attn"] == "0|1"
            assert f["fit"] is False and f["bench_n_cpu_moe"] is False
            assert "llama-fit-params" not in rec["tools"]
        else:  # after the bump
            assert rec["commit"].startswith(NEW_COMMIT) and rec["source"]["version"] == "0.3.36"
            assert rec["features"]["fit"] is True and "llama-fit-params" in rec["tools"]
    assert not (work / "results/builds/previous/bin/llama-fit-params").exists()


def test_the_bump_reruns_only_the_current_builds_jobs(update):
    _, _, plan = update
    builds = set(re.findall(r"wildcards: (?:.*, )?build=([^,\s]+)", plan))
    assert builds == {"current"}, builds
    assert job_counts(plan) == {"build_llama_cpp": 1, "kld_base": 1, "kld": 3, "llama_bench": 2, "aggregate": 1,
                                "figures": 1, "summary_report": 1, "total": 10}


def test_the_pinned_build_keeps_its_results(update):
    _, kept, _ = update
    assert len(kept) >= 7  # build record, baseline record, 3 KLD, 2 bench
    for p, (mtime, data) in kept.items():
        assert p.stat().st_mtime_ns == mtime and p.read_bytes() == data, p


def test_the_report_names_both_commits_and_judges_every_cell(update):
    work, _, _ = update
    t = pd.read_parquet(work / "results/tables/builds.parquet").set_index("build")
    assert t.loc["previous", "llama_cpp_commit"].startswith(OLD_COMMIT)
    assert t.loc["current", "llama_cpp_commit"].startswith(NEW_COMMIT)
    html = (work / "reports/summary.html").read_text()
    assert "different commits" in html and OLD_COMMIT in html and NEW_COMMIT in html
    for name, cells in (("kld", 3), ("bench", 4)):
        m = re.search(rf"<h3>{name}: <code>current</code> vs <code>previous</code> — (\d+) of (\d+) cells differ",
                      html)
        assert m, name
        assert int(m.group(2)) == cells, (name, m.groups())
    kld = pd.read_parquet(work / "results/tables/kld.parquet")
    both = kld.pivot_table(index=["quant", "kv"], columns="build", values="kld_mean")
    assert both.notna().all().all() and len(both) == 3
