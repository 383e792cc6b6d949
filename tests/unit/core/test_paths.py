"""core.paths: the results/ templates filled, budgets printed as the rules' wildcards expect, and the rules
taking every results/ path from here."""

from __future__ import annotations

import re

import pytest

from ggufbench.core import paths
from tests.support import REPO


def test_path_fills_every_field():
    assert paths.path(paths.PERPLEXITY, build="cpu", model="smollm2", quant="Q8_0", ctx=512, kv="f16") == \
        "results/perplexity/cpu/smollm2/Q8_0/ctx512_kv-f16.json"
    assert paths.path(paths.KLD_SHARD, build="cuda", model="qwen", ctx=4096, shard=3) == \
        "results/kld-shards/cuda/qwen/ctx4096/shard-3.json"
    with pytest.raises(KeyError):  # a field left out is an error, not a path with "{quant}" in it
        paths.path(paths.BENCH, build="cpu", model="m", strategy="all-gpu")


@pytest.mark.parametrize("budget, shown", [(16, "16"), (16.0, "16"), (2.5, "2.5"), ("24", "24")])
def test_budget_prints_as_the_wildcard_does(budget, shown):
    assert paths.path(paths.TUNE, build="b", model="m", quant="q", budget=budget, ctx=4096) == \
        f"results/tune/b/m/q/vram-{shown}GiB_ctx4096.json"
    assert paths.path(paths.SERVER, build="b", model="m", budget=budget, ctx=8192) == \
        f"results/server/b/m/vram-{shown}GiB_ctx8192.json"


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
