"""report.figures: the figures the rule declares, made from the stored tables (the rows they draw: test_rows.py), and
from every small study's tables, each plot or a panel that says what was not measured (issue 25)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from ggufbench.report import figures as F
from tests.support.report_pages import REPO
from tests.unit.report.conftest import study


def test_figures_rule_outputs_are_the_figures_module_makes():
    smk = (REPO / "rules" / "report.smk").read_text()
    block = smk[smk.index("rule figures:"):smk.index("rule summary_report:")]
    # one line or snakefmt's one argument a line
    keys = re.findall(r"^\s+(\w+)=report\(\s*\"reports/figures/(\w+)\.png\",\s*caption=\"../docs/report/(\w+)\.rst\"",
                      block, re.M)
    assert sorted(k for k, _, _ in keys) == sorted(F.FIGURES)
    for key, stem, caption in keys:
        assert key == stem == caption
        assert (REPO / "docs" / "report" / f"{caption}.rst").is_file()


def test_every_figure_is_made_and_embedded(cpu_page):
    page, out = cpu_page
    for key in F.FIGURES:
        png = out / "figures" / f"{key}.png"
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000, key
    assert page.count('src="data:image/png;base64,') == len(F.FIGURES)
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # nothing to fetch: opens offline
    with pytest.raises(ValueError, match="known"):
        F.make_figures({}, {"nonsense": out / "x.png"})


# study (tests/unit/report/conftest.py) -> {figure: what its panel says instead of a plot}; the others are drawn
NO_PLOT = {
    "one quant, PPL only": {"kld_vs_size": "No KLD results in this run", "kld_percentiles": "No KLD results"},
    "one quant, KLD of its KV types": {"kld_vs_size": "KLD was measured only for the baseline quant with other KV",
                                       "kld_percentiles": "KLD was measured only for the baseline quant"},
    "one quant, one KV type": {"kld_vs_size": "No KLD results", "kld_percentiles": "No KLD results",
                               "kv_heatmap": "Only KV f16 measured: nothing to compare it with"},
    "speed only": {"kld_vs_size": "No KLD results", "kld_percentiles": "No KLD results",
                   "ppl_vs_size": "No perplexity results", "kv_heatmap": "No perplexity results"},
    "no bench results": {k: "No llama-bench results in this run" for k in ("speed", "speed_vs_vram", "threads")},
    "no f16 KV": {"kld_vs_size": "No KLD results", "kld_percentiles": "No KLD results",
                  "kv_heatmap": "No f16-KV cells in this run"},
    "nothing fits": {k: "No llama-bench setting fit in device memory (12 tests did not fit)"
                     for k in ("speed", "speed_vs_vram", "threads")},
    "one ctx": {}, "no VRAM": {}, "two models, one without KLD": {},
    "tables with columns, no rows": {"kld_vs_size": "No KLD results", "kld_percentiles": "No KLD results",
                                     "ppl_vs_size": "No perplexity results", "kv_heatmap": "No perplexity results",
                                     **{k: "No llama-bench results" for k in ("speed", "speed_vs_vram", "threads")}},
}
for _said in NO_PLOT.values():  # the stored runs predate kv_cost: its figure says what measures it
    _said["kv_cost_by_position"] = "No KV-cost results in this run: kv_cost: in the config"


@pytest.mark.parametrize("case", list(NO_PLOT))
def test_every_figure_of_a_small_study_is_made_or_says_why_not(case, tmp_path, monkeypatch):
    """Each figure maker on each small study (issue 25): a PNG comes out, a plot where its question can be answered,
    else a panel that says what was not measured."""
    said = {}
    no_data = F._no_data
    monkeypatch.setattr(F, "_no_data", lambda title, why, path: (said.setdefault(path.stem, why),
                                                                 no_data(title, why, path)))
    tables, _ = study(case)
    figures = {key: tmp_path / f"{key}.png" for key in F.FIGURES}
    for key, (table, make) in F.MAKERS.items():
        make(tables.get(table, pd.DataFrame()), figures[key])  # no small study scores tasks
        assert figures[key].read_bytes()[:4] == b"\x89PNG", key
    expected = {**NO_PLOT[case], "flips_vs_kld": "No task results in this run"}
    assert set(said) == set(expected), said
    for key, phrase in expected.items():
        assert phrase in said[key], (key, said[key])


def test_flip_rate_against_kld_over_the_demos_cells(demo_tasks, tmp_path, monkeypatch):
    """The demo's four cells with a KLD (real captures): drawn, Spearman ρ = 1 over 4 cells in the panel's title."""
    titles = []
    monkeypatch.setattr(F.plt.Axes, "set_title", lambda ax, t, **kw: titles.append(t))
    F.flips_vs_kld(demo_tasks, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 10_000
    assert titles == ["cloze: Spearman ρ = 1.00 (n = 4 cells, 926 questions)"]


def test_kv_cost_by_position_shows_a_one_chunk_bin_without_an_interval(tmp_path, monkeypatch):
    """The demo's position bins as its run of 2026-12-05 gave them (ctx 512 over 2 chunks, ctx 4096 over 1): a bin
    of one chunk has no interval (half width inf), so it is drawn hollow with no whisker, not a whisker down to the
    axis; the last bin is named by the context (its exclusive end is ctx - 1: "1K–4K", not "1K–3.99902K")."""
    pos = pd.DataFrame({
        "build": "cpu", "model": "smollm2-135m", "quant": "F16", "kv": "q8_0", "ref_kv": "f16",
        "ctx": [512, 512, 4096, 4096, 4096], "bin": [0, 1, 0, 1, 2], "pos_lo": [0, 128, 0, 128, 1024],
        "pos_hi": [128, 511, 128, 1024, 4095], "n_chunks": [2, 2, 1, 1, 1],
        "kld_mean": [0.036985, 0.000279, 0.000284, 0.000269, 0.000311],
        "kld_half_width": [0.466330, 0.000276, np.inf, np.inf, np.inf],
        "kld_resolved": [False, True, False, False, False]})
    ticks, legends = [], []
    set_xticks, legend = F.plt.Axes.set_xticks, F.plt.Axes.legend
    monkeypatch.setattr(F.plt.Axes, "set_xticks", lambda ax, t, labels=None, **kw: (
        ticks.append(list(labels)), set_xticks(ax, t, labels, **kw))[1])
    monkeypatch.setattr(F.plt.Axes, "legend", lambda ax, *a, **kw: (
        legends.append(ax.get_legend_handles_labels()[1]), legend(ax, *a, **kw))[1])
    F.kv_cost_by_position(pos, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 10_000
    assert ticks == [["0–128", "128–512"], ["0–128", "128–1K", "1K–4K"]]
    assert legends == [["q8_0", "q8_0 (not resolved)"], ["q8_0 (one chunk: no interval)"]]
