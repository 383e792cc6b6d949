"""core.records: a record is believed only when it is the measurement its path names and of what is there now.
Records made from real captured llama.cpp output (tests/data/cpu-0.3.36) by the jobs' own record code, then moved,
copied or edited as a user or another tool would."""

from __future__ import annotations

import shutil

import pytest

from ggufbench.core.errors import ToolFailed
from ggufbench.core.io import read_json, write_json
from ggufbench.core.records import Now, path_fields, read_record, read_records, record_problems
from tests.unit.measure.test_server_check import write_records


@pytest.fixture
def made(tmp_path):
    """Real KLD records (Q8_0, Q2_K) and the baseline's, at the paths the workflow gives them under results/."""
    _, manifests, records = write_records(tmp_path / "inputs")
    out = {}
    for src in records["perplexity"]:
        rec = read_json(src)
        rec["provenance"].update(corpus="pydocs", corpus_sha256="c0ffee" * 10 + "c0ff")
        quant = rec["provenance"]["quant"]
        path = (tmp_path / "results/kld-base/cpu/smol/ctx512_kv-f16.json" if rec["stage"] == "kld_base" else
                tmp_path / f"results/kld/cpu/smol/{quant}_ctx512_kv-f16.json")
        write_json(path, rec)
        out[quant] = path
    return out, manifests


def test_the_path_names_the_measurement():
    assert path_fields("results/kld/cpu/smol/Q2_K_ctx512_kv-q8_0.json") == (
        "kld", {"build": "cpu", "model": "smol", "quant": "Q2_K", "ctx": "512", "kv": "q8_0"})
    assert path_fields("/w/results/server/cuda/m/vram-0.2GiB_ctx1024.json") == (
        "server", {"build": "cuda", "model": "m", "budget": "0.2", "ctx": "1024"})
    assert path_fields("results/tables/kld.parquet") is None


def test_records_that_are_what_their_path_names_are_read(made):
    paths, _ = made
    recs = read_records(list(paths.values()))
    assert [r["provenance"]["quant"] for r in recs] == list(paths)


@pytest.mark.faults
@pytest.mark.parametrize(("change", "why"), [
    # the cases: another quant's record (or another build's) put at this path; a record that is `{}`
    (lambda p: shutil.copyfile(p["Q8_0"], p["Q2_K"]), r"says quant 'Q8_0' where its path names 'Q2_K'"),
    (lambda p: write_json(p["Q2_K"], {}), r"has no stage, params, result, provenance"),
    (lambda p: write_json(p["Q2_K"], {**read_json(p["Q2_K"]), "stage": "perplexity"}),
     r"holds a 'perplexity' record where its path names a 'kld' one"),
    (lambda p: write_json(p["Q2_K"], {**read_json(p["Q2_K"]), "provenance": {**read_json(p["Q2_K"])["provenance"],
                                                                              "build": "cuda"}}),
     r"says build 'cuda' where its path names 'cpu'"),
    (lambda p: write_json(p["Q2_K"], {**read_json(p["Q2_K"]), "params": {**read_json(p["Q2_K"])["params"],
                                                                          "ctx": 1024}}),
     r"says ctx 1024 where its path names '512'"),
    (lambda p: p["Q2_K"].write_text("[1, 2]"), r"is list, not a record"),
])
def test_a_record_that_is_not_its_paths_measurement_is_removed_and_named(made, change, why):
    paths, _ = made
    change(paths)
    with pytest.raises(ToolFailed, match=r"1 record\(s\) are not the measurement .* plain rerun measures them again"
                                         rf"(.|\n)*Q2_K_ctx512_kv-f16.json {why}.*: removed it"):
        read_records(list(paths.values()))
    assert not paths["Q2_K"].exists() and paths["Q8_0"].exists()  # only the bad one goes


@pytest.mark.faults
def test_a_record_of_what_is_no_longer_there_is_refused(made):
    """A record of another build key, another file of the quant, or another corpus than there is now."""
    paths, manifests = made
    rec = read_json(paths["Q2_K"])
    prov = rec["provenance"]
    now = Now(build_keys={"cpu": prov["build_key"]}, file_sha256={("smol", "Q2_K"): prov["file_sha256"],
                                                                  ("smol", "F16"): prov["baseline_sha256"]},
              corpus_sha256={prov["corpus"]: prov["corpus_sha256"]})
    assert record_problems(paths["Q2_K"], rec, now) == []
    moved = Now(build_keys={"cpu": "other-key"}, file_sha256={("smol", "Q2_K"): "f" * 64, ("smol", "F16"): "e" * 64},
                corpus_sha256={prov["corpus"]: "d" * 64})
    problems = record_problems(paths["Q2_K"], rec, moved)
    assert [p.split(" ")[:2] for p in problems] == [["was", "measured"], ["measured", "the"], ["is", "against"],
                                                    ["measured", "corpus"]]
    with pytest.raises(ToolFailed, match="build key"):
        read_record(paths["Q2_K"], moved)
    assert not paths["Q2_K"].exists()


def test_a_record_outside_results_is_named_not_removed(tmp_path, made):
    paths, _ = made
    mine = tmp_path / "mine/kld/cpu/smol/Q2_K_ctx512_kv-f16.json"  # not under a results/ folder: not ours
    mine.parent.mkdir(parents=True)
    write_json(mine, {})
    assert path_fields(mine) is None  # not a results/ path: nothing to check it against
    bad = tmp_path / "x/results/kld/cpu/smol/Q2_K_ctx512_kv-f16.json"
    write_json(bad, {})
    with pytest.raises(ToolFailed, match="removed it"):
        read_record(bad)
