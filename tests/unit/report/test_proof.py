"""report.proof: the candidates a server check starts, in the recommendation's pick order, as plain values (the job
that starts them is measure.server_check; tests/unit/measure/test_server_check.py). Records of real captures."""

from __future__ import annotations

import json

from ggufbench.report.proof import candidates
from tests.unit.measure.test_server_check import CONFIG, write_records


def test_the_candidates_that_fit_come_in_pick_order_as_plain_values(tmp_path):
    _, _, records = write_records(tmp_path)
    c = candidates(records, CONFIG, model="smol", build="cpu", context=1024, budget_gib=1.0)
    assert [r["quant"] for r in c["ranked"]] == ["F16", "Q8_0", "Q2_K"]  # best KLD first: 0, 0.0041, 0.4164
    assert (c["n_candidates"], c["baseline"]) == (3, "F16")
    json.dumps(c)  # numpy scalars and NaN made plain: the record is JSON
    assert all(type(r["need_bytes"]) in (int, float) for r in c["ranked"])


def test_a_budget_keeps_only_what_fits(tmp_path):
    _, _, records = write_records(tmp_path)
    fits = candidates(records, CONFIG, model="smol", build="cpu", context=1024, budget_gib=0.2)
    assert [r["quant"] for r in fits["ranked"]] == ["Q8_0", "Q2_K"]
    none = candidates(records, CONFIG, model="smol", build="cpu", context=1024, budget_gib=0.05)
    assert none["ranked"] == [] and none["n_candidates"] == 3
