"""core.paths: the results/ templates filled, budgets printed as the rules' wildcards expect, and the rules
taking every results/ path from here."""

from __future__ import annotations

import ast
import functools
import re

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from ggufbench.core import paths
from tests.support import REPO


def test_path_fills_every_field():
    assert paths.path(paths.PERPLEXITY, build="cpu", model="smollm2", quant="Q8_0", ctx=512, kv="f16") == \
        "results/perplexity/cpu/smollm2/Q8_0/ctx512_kv-f16.json"
    assert paths.path(paths.KLD_SHARD, build="cuda", model="qwen", ctx=4096, shard=3) == \
        "results/kld-shards/cuda/qwen/ctx4096/shard-3.json"
    with pytest.raises(KeyError):  # a field left out is an error, not a path with "{quant}" in it
        paths.path(paths.BENCH, build="cpu", model="m", strategy="all-gpu")


@pytest.mark.parametrize("budget, shown", [(16, "16"), (16.0, "16"), (2.5, "2.5"), ("24", "24"), (1e-05, "0.00001"),
                                           (0.01, "0.01"), (4096.0, "4096"), (15.1234567, "15.1234567")])
def test_budget_prints_as_the_wildcard_does(budget, shown):
    """A plain decimal, never an exponent (`:g` wrote 1e-05) nor rounded (`:g` wrote 15.1235 for 15.1234567)."""
    assert paths.path(paths.TUNE, build="b", model="m", quant="q", budget=budget, ctx=4096) == \
        f"results/tune/b/m/q/vram-{shown}GiB_ctx4096.json"
    assert paths.path(paths.SERVER, build="b", model="m", budget=budget, ctx=8192) == \
        f"results/server/b/m/vram-{shown}GiB_ctx8192.json"


@pytest.mark.parametrize("budget", [float("nan"), float("inf"), -1.0, True])
def test_a_budget_that_is_no_amount_is_refused(budget):
    with pytest.raises(ValueError, match="a VRAM budget is a finite number of GiB"):
        paths.path(paths.TUNE, build="b", model="m", quant="q", budget=budget, ctx=4096)


@functools.cache
def _budget_wildcard() -> re.Pattern:
    """The rules' `budget` wildcard constraint, as rules/common.smk states it."""
    common = (REPO / "rules" / "common.smk").read_text()
    literal = re.search(r"^\s*budget=(\"[^\"]*\"),\s*$", common, re.MULTILINE).group(1)
    return re.compile(ast.literal_eval(literal))


@functools.cache
def _schema_budget_bounds() -> frozenset[tuple[float, float]]:
    """(minimum, maximum) of every budget key of the schema (report.vram_budgets_gib, report.target_gpu.vram_gib,
    tuner.vram_budgets_gib, and gpu.emulate_free_gib, which shares their bounds)."""
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    props = schema["properties"]
    nodes = [props["report"]["properties"]["vram_budgets_gib"]["items"],
             props["report"]["properties"]["target_gpu"]["properties"]["vram_gib"],
             props["tuner"]["properties"]["vram_budgets_gib"]["items"], props["gpu"]["properties"]["emulate_free_gib"]]
    nodes = [schema["$defs"]["gib"] if "$ref" in n else n for n in nodes]
    return frozenset((n["minimum"], n["maximum"]) for n in nodes)


def _check_budget_path(budget: float, wildcard: re.Pattern) -> None:
    shown = re.fullmatch(r"results/tune/b/m/q/vram-(.*)GiB_ctx4096\.json",
                         paths.path(paths.TUNE, build="b", model="m", quant="q", budget=budget, ctx=4096)).group(1)
    assert wildcard.fullmatch(shown), f"budget {budget!r} prints as {shown!r}, which the rules' wildcard does not match"
    assert float(shown) == budget  # the job reads float(wildcards.budget): the configured budget, exactly


def test_every_budget_the_schema_accepts_maps_to_a_path_the_rules_make():
    """Before, a budget of 1e-05 GiB was accepted and asked for results/tune/.../vram-1e-05GiB_..., a path no
    rule makes: Snakemake failed on that internal missing file."""
    wildcard = _budget_wildcard()
    (low, high), = _schema_budget_bounds()  # one range for all of them
    for budget in (low, high, low * 1.5, 0.1 + 0.2, 15.5, 16, 1 / 3, float(high) - 1e-9):
        _check_budget_path(budget, wildcard)


@given(st.floats(min_value=0.01, max_value=4096))
def test_every_budget_between_the_bounds_maps_to_a_path_the_rules_make(budget):
    assert _schema_budget_bounds() == {(0.01, 4096)}
    _check_budget_path(budget, _budget_wildcard())


def test_manifest_folder_per_origin_kind_and_table():
    assert paths.manifest("qwen", "Q4_K_M", "hub") == "results/models/qwen/hub/Q4_K_M/manifest.json"
    assert paths.manifest("qwen", "Q8_0", "quantize") == "results/models/qwen/quantized/Q8_0/manifest.json"
    assert paths.manifest("qwen", "F16", "source") == "results/models/qwen/quantized/F16/manifest.json"
    assert paths.manifest("qwen", "IQ2", "local") == "results/models/qwen/local/IQ2/manifest.json"
    with pytest.raises(KeyError):
        paths.manifest("qwen", "Q8_0", "synthetic")  # a model source kind, never a quant's
    assert paths.table("kld") == "results/tables/kld.parquet"
    assert [paths.table(t) for t in paths.TABLES] == [f"results/tables/{t}.parquet" for t in paths.TABLES]


def test_rules_name_no_results_path_literally():
    """Every results/ path in the rules comes from core/paths.py (comments aside), so one change moves it
    everywhere: the rules' outputs, common.smk's input helpers and the lock refresh agree."""
    rules = sorted((REPO / "rules").glob("*.smk"))
    assert rules
    literal = re.compile(r"""[frb]*["']results/""")
    found = []
    for f in rules:
        for n, line in enumerate(f.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if literal.search(code):
                found.append(f"{f.relative_to(REPO)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)
