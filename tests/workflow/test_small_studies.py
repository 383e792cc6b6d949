"""The first studies people run on their own model, each end to end to reports/summary.html (issue 25): one GGUF
with kld: on (nothing to measure against its own logits), PPL only (no kld:), speed only (no perplexity:, no kld:).
Each is a study the schema accepts; each must measure what it asked for and write a report whose sections say
plainly what was not measured.

They ride on the demo run: its quants are the GGUFs (`local:` sources) and its llama.cpp build is in the build
cache, so each study measures only its few cells (ctx 512, 4 chunks, llama-bench with one repetition of a short
prompt): seconds of llama.cpp each, in a working directory of its own."""

from __future__ import annotations

import html
import re
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ggufbench.report.figures import FIGURES
from tests.support.workflow import REPO, snakemake

pytestmark = pytest.mark.e2e

BENCH = {"prompt": [64], "gen": [16], "repetitions": 1}
PPL = {"corpus": "pydocs", "ctx": [512], "kv": ["f16"], "chunks": 4}
KLD = {"corpus": "pydocs", "ctx": 512, "chunks": 4}


def gguf(demo, quant: str) -> str:
    """The demo's GGUF of a quant (made by its quantize_gguf jobs)."""
    workdir, _ = demo
    (path,) = (workdir / "results/models/smollm2-135m/quantized" / quant).glob("*.gguf")
    return str(path)


def run_study(demo, tmp_path: Path, quants: dict[str, str], baseline: str, **sections) -> tuple[Path, str]:
    """Write the study's config (the demo's build and corpus, model `mine` of the given GGUFs, the sections
    given), run it to its report in tmp_path/run, and return the working directory and the page as text."""
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    study = {"builds": config["builds"], "corpora": config["corpora"],
             "models": {"mine": {"title": "My GGUF", "baseline": baseline,
                                 "quants": {q: {"local": {"path": p}} for q, p in quants.items()}}},
             "bench": BENCH, "server": {"check": False}, **sections}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    workdir = tmp_path / "run"
    start = time.monotonic()
    snakemake(workdir, "--cores", "2", "reports/summary.html", configfile=path, timeout=900)
    print(f"[small study] {tmp_path.name}: {time.monotonic() - start:.0f} s to its report")
    page = (workdir / "reports/summary.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == len(FIGURES)  # every figure, drawn or saying why not
    return workdir, re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def table(workdir: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(workdir / f"results/tables/{name}.parquet")


def test_one_gguf_with_kld_on(demo, tmp_path):
    """'How good is my one GGUF?': its baseline pass gives its PPL; there is no other quant to measure against it,
    which failed the report with KeyError: 'build' before."""
    workdir, text = run_study(demo, tmp_path, {"Q4_K_M": gguf(demo, "Q4_K_M")}, "Q4_K_M", perplexity=PPL, kld=KLD,
                              report={"title": "one GGUF", "vram_budgets_gib": [1]})
    ppl = table(workdir, "perplexity")
    assert list(ppl["measured_by"]) == ["kld_base"] and ppl["ppl"].iloc[0] > 1
    assert table(workdir, "kld").empty and len(table(workdir, "bench")) == 2
    assert "Q4_K_M (baseline)" in text
    assert ("No KLD results for mine in this run: kld: measures each quant against the baseline (Q4_K_M), and Q4_K_M "
            "is the only one; add quants under models.mine.quants") in text
    assert "No second KV type for mine in this run: only KV f16 was measured" in text
    assert "No KLD results in this run: paired comparisons" in text
    assert "No VRAM measured in this run" in text


def test_ppl_only(demo, tmp_path):
    """No kld: two quants' PPL, one context, one KV type; the scoreboard's ΔPPL is against the baseline's PPL, it
    has no KLD columns and says why."""
    quants = {q: gguf(demo, q) for q in ("Q8_0", "Q2_K")}
    workdir, text = run_study(demo, tmp_path, quants, "Q8_0", perplexity=PPL, report={"title": "PPL only"})
    ppl = table(workdir, "perplexity").set_index("quant")
    assert sorted(ppl.index) == ["Q2_K", "Q8_0"] and set(ppl["measured_by"]) == {"perplexity"}
    assert table(workdir, "kld").empty
    dppl = ppl.loc["Q2_K", "ppl"] - ppl.loc["Q8_0", "ppl"]
    assert "Q8_0 (baseline)" in text and f"{dppl:+.4f}" in text
    assert "No KLD results for mine in this run: the KLD, Δp and same-top-p columns need kld: in the config" in text
    assert "No second KV type for mine in this run: only KV f16 was measured" in text
    assert "No VRAM budget in the config" in text


def test_speed_only(demo, tmp_path):
    """No perplexity:, no kld:: llama-bench alone; the picks are by speed, and every quality section says so."""
    quants = {q: gguf(demo, q) for q in ("Q8_0", "Q2_K")}
    workdir, text = run_study(demo, tmp_path, quants, "Q8_0", report={"title": "speed only", "vram_budgets_gib": [1]})
    assert table(workdir, "perplexity").empty and table(workdir, "kld").empty
    assert len(table(workdir, "bench")) == 4
    assert "No quality results in this run: the picks are by speed alone" in text
    assert "Pick: the fastest at generation (tg median)" in text
    assert "No perplexity or KLD results in this run" in text
    assert "No perplexity results in this run: the KV-cache matrix needs perplexity:" in text


@pytest.mark.faults
def test_a_local_gguf_or_corpus_replaced_in_place_reruns_exactly_its_cells(demo, tmp_path):
    """The issue's case: a `local:` GGUF or corpus replaced in place gave "Nothing to be done" and the old numbers
    stayed. Each job that links a local file takes what it holds now (size and sha256, hashed again only when size
    or mtime moved): a file touched reruns nothing; a file replaced reruns exactly what was measured from it."""
    import shutil

    from tests.support.workflow import job_counts

    disk = tmp_path / "disk"
    disk.mkdir()
    quants = {q: str(shutil.copyfile(gguf(demo, q), disk / f"mine-{q}.gguf")) for q in ("Q8_0", "Q2_K")}
    corpus = disk / "corpus.txt"
    corpus.write_bytes((demo[0] / "results/data/pydocs/corpus.txt").read_bytes())
    local = {"corpora": {"pydocs": {"local": {"path": str(corpus)}}}}
    workdir, _ = run_study(demo, tmp_path, quants, "Q8_0", perplexity=PPL, report={"title": "mine"}, **local)
    cfg = tmp_path / "study.yaml"

    def dry() -> dict:
        out = snakemake(workdir, "-n", "--cores", "1", "reports/summary.html", configfile=cfg).stdout
        counts = job_counts(out)
        return {rule: n for rule, n in counts.items() if rule not in ("total", "all")}

    assert dry() == {}
    for path in (*quants.values(), corpus):  # touched, same bytes: nothing
        Path(path).touch()
    assert dry() == {}
    shutil.copyfile(gguf(demo, "Q4_K_M"), quants["Q2_K"])  # Q2_K's file replaced: its cells, nothing else
    counts = dry()
    assert {r: n for r, n in counts.items() if r in ("local_gguf", "perplexity", "llama_bench")} == {
        "local_gguf": 1, "perplexity": 1, "llama_bench": 1}, counts
    snakemake(workdir, "--cores", "2", "reports/summary.html", configfile=cfg)
    ppl = table(workdir, "perplexity").set_index("quant")
    assert ppl.loc["Q2_K", "file_sha256"] == __import__("hashlib").sha256(Path(quants["Q2_K"]).read_bytes()).hexdigest()
    with corpus.open("a") as f:  # the corpus replaced: every cell measured on it, no GGUF re-linked
        f.write("\n = appended = \n\nA paragraph the old numbers never saw, written after the run.\n")
    counts = dry()
    assert {r: n for r, n in counts.items() if r in ("make_corpus", "perplexity", "local_gguf", "llama_bench")} == {
        "make_corpus": 1, "perplexity": 2}, counts
