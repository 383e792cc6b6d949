"""report.figures: the figures the rule declares, made from the stored tables; the Pareto front; offload strategies
read from llama-bench's fields."""

from __future__ import annotations

import re

import pytest

from ggufbench.report import figures as F
from tests.support.report_pages import REPO, stored_tables


def test_figures_rule_outputs_are_the_figures_module_makes():
    smk = (REPO / "rules" / "report.smk").read_text()
    block = smk[smk.index("rule figures:"):smk.index("rule summary_report:")]
    keys = re.findall(r"^\s+(\w+)=report\(\"reports/figures/(\w+)\.png\", caption=\"../docs/report/(\w+)\.rst\"",
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


def test_pareto_front_on_the_measured_ladder():
    k = F.scoreboard_kld(stored_tables("cpu-demo")["kld"])
    front = F.pareto_front(k["file_size_bytes"], k["kld_mean"])
    # on this ladder every quant is on the frontier: each bigger file has a lower mean KLD
    assert front.all() and len(k) == 5
    # a point beaten on both axes drops off
    assert list(F.pareto_front([1, 2, 3], [0.5, 0.6, 0.1])) == [True, False, True]


def test_offload_strategy_from_llama_bench_fields():
    cpu = F.with_strategy(stored_tables("cpu-demo")["bench"])
    assert set(cpu["strategy_label"]) == {"CPU only"}
    gpu = F.with_strategy(stored_tables("h200-demo")["bench"])
    assert set(gpu["strategy_label"]) == {"-ngl 99"}
    row = gpu.iloc[0].to_dict() | {"n_cpu_moe": 20}
    assert F.offload_strategy(row) == ("n-cpu-moe", "-ngl 99 -ncmoe 20")
