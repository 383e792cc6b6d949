"""measure.shards.jobs: shard records (real captures of shards [0,4) and [4,8)) combine into records shaped as mode
chunks writes them, refusing shards that do not tile or were measured on different files; a shard job that fails
leaves no record and no scratch logits."""

from __future__ import annotations

import fcntl
import sys

import pytest

from ggufbench.core.errors import ToolFailed
from ggufbench.core.io import read_json, write_json
from ggufbench.core.units import GIB
from ggufbench.llamacpp.logits import logits_file_size
from ggufbench.llamacpp.perplexity_output import parse_kld, parse_perplexity
from ggufbench.measure.shards.jobs import ShardFiles, base_combine_job, combine_job, shard_job
from ggufbench.measure.shards.plan import plan_shards, scored_tokens
from tests.support import DATA
from tests.support.jobs import make_job
from tests.support.models import quant_manifest

SHARDED = DATA / "cpu-0.3.36" / "sharded"
RUN = {"n_gpu_layers": 99, "flash_attn": "on"}


def read(name: str) -> str:
    return (SHARDED / name).read_text(encoding="utf-8")


def plan_json(tmp_path):
    """The plan for 8 chunks of 512 with room for 4 at once: shards [0,4) and [4,8)."""
    plan = plan_shards(8 * 512 + 10, 512, 49152, None, disk_budget_gib=logits_file_size(512, 49152, 4) / GIB)
    assert plan.shards == [[0, 4], [4, 8]]
    path = tmp_path / "plan.json"
    write_json(path, {"stage": "kld_shard_plan", "result": plan.to_dict()})
    return path, plan


def shard_record(tmp_path, i: int, a: int, b: int, q2k_sha: str = "sha-Q2_K") -> str:
    def prov(quant, sha):
        return {"model": "smol", "quant": quant, "file_sha256": sha, "build": "cpu", "build_key": "k1"}

    rec = {"stage": "kld_shard", "shard": i, "chunks": [a, b],
           "params": {"ctx": 512, "base_kv": "f16", "type_k": "f16", "type_v": "f16", "threads": 2, **RUN},
           "result": {"n_chunk": b - a, "n_tokens_scored": scored_tokens(b - a, 512), "tokens_differing": i,
                      "tokens_compared": (b - a) * 512, "logits_bytes_forecast": 100 + i,
                      "logits_bytes_written": 100 + i, "scratch_peak_bytes": 200 + i,
                      "base": {"result": parse_perplexity(read(f"base_chunks{a}-{b}.txt")).to_dict(),
                               "cmd": ["llama-perplexity", f"base-{i}"], "wall_seconds": 1.0,
                               "provenance": prov("F16", "sha-F16")},
                      "kld": {"Q2_K|f16": {"result": parse_kld(read(f"kld_q2_k_chunks{a}-{b}.txt")).to_dict(),
                                           "cmd": ["llama-perplexity", f"kld-{i}"], "wall_seconds": 2.0,
                                           "provenance": prov("Q2_K", q2k_sha)}}}}
    path = tmp_path / f"shard-{i}.json"
    write_json(path, rec)
    return str(path)


def test_combine_job_writes_one_kld_record_over_the_shards_equal_to_the_unsharded_run(tmp_path):
    plan, _ = plan_json(tmp_path)
    shards = [shard_record(tmp_path, 1, 4, 8), shard_record(tmp_path, 0, 0, 4)]  # in any order
    out = tmp_path / "kld.json"
    rec = combine_job(make_job(out=out, log=tmp_path / "log"), shards=shards, plan=plan, quant="Q2_K", kv="f16",
                    chunks=None)
    assert read_json(out) == rec and rec["stage"] == "kld"
    whole = parse_kld(read("kld_q2_k_chunks0-8.txt"))
    r = rec["result"]
    assert r["kld_mean"] == pytest.approx(whole.kld_mean, abs=2e-6) and r["n_chunks"] == 8
    assert r["shard_kld_mean"] == [0.409545, 0.448324] and r["tokens_differing"] == 1
    p = rec["params"]
    assert (p["kld_mode"], p["n_shards"], p["ctx"], p["threads"], p["flash_attn"]) == ("sharded", 2, 512, 2, "on")
    prov = rec["provenance"]
    assert (prov["quant"], prov["baseline_quant"], prov["baseline_sha256"], prov["baseline_kv"]) == (
        "Q2_K", "F16", "sha-F16", "f16")
    assert rec["tool"] == {"cmd": ["llama-perplexity", "kld-0"], "wall_seconds": 4.0}


def test_base_combine_job_gives_the_baselines_ppl_and_the_largest_disk_use(tmp_path):
    plan, p = plan_json(tmp_path)
    out = tmp_path / "base.json"
    shards = [shard_record(tmp_path, 0, 0, 4), shard_record(tmp_path, 1, 4, 8)]
    rec = base_combine_job(make_job(out=out, log=tmp_path / "log"), shards=shards,
                           plan=plan, chunks=None)
    r = rec["result"]
    assert rec["stage"] == "kld_base" and read_json(out) == rec
    assert r["ppl"] == pytest.approx(parse_perplexity(read("base_chunks0-8.txt")).ppl, abs=1e-3)
    assert r["shard_ppl"] == [13.2824, 10.4797] and r["chunk_ppl"] == []
    assert (r["scratch_peak_bytes"], r["logits_bytes_written"], r["tokens_compared"]) == (201, 101, 8 * 512)
    assert r["unsharded_logits_bytes"] == p.unsharded_logits_bytes and rec["provenance"]["quant"] == "F16"


def test_combining_refuses_shards_that_do_not_tile_or_were_measured_on_different_files(tmp_path):
    plan, _ = plan_json(tmp_path)
    out = tmp_path / "kld.json"
    gap = [shard_record(tmp_path, 0, 0, 3), shard_record(tmp_path, 1, 4, 8)]
    with pytest.raises(ToolFailed, match="shard 0 ends at 3, shard 1 starts at 4"):
        combine_job(make_job(out=out, log=tmp_path / "log"), shards=gap, plan=plan, quant="Q2_K", kv="f16",
                    chunks=None)
    with pytest.raises(ToolFailed, match=r"cover chunks \[\[0, 4\]\], the plan \[\[0, 4\], \[4, 8\]\]"):
        combine_job(make_job(out=out, log=tmp_path / "log"), shards=[shard_record(tmp_path, 0, 0, 4)], plan=plan,
                    quant="Q2_K", kv="f16", chunks=None)  # the last one missing
    changed = [shard_record(tmp_path, 0, 0, 4), shard_record(tmp_path, 1, 4, 8, q2k_sha="sha-other")]
    with pytest.raises(ToolFailed, match=r"different files of this quant \(\['sha-Q2_K', 'sha-other'\]\)"):
        combine_job(make_job(out=out, log=tmp_path / "log"), shards=changed, plan=plan, quant="Q2_K", kv="f16",
                    chunks=None)
    assert not out.exists()


@pytest.mark.parametrize("case", ["corpus changed", "no room", "tool fails"])
def test_a_failing_shard_job_names_why_and_leaves_no_record_nor_scratch(tmp_path, case):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"x" * 100 + b"\n")
    plan = {"shards": [[0, 2]], "n_ctx": 16, "n_vocab": 10, "add_bos": False, "parallel": 1,
            "text_bytes": 100 if case != "corpus changed" else 99, "shard_byte_ranges": [[0, 100]],
            "shard_logits_bytes": [10**18 if case == "no room" else logits_file_size(16, 10, 2)]}
    write_json(tmp_path / "plan.json", {"result": plan})
    write_json(tmp_path / "tokens.json", {"ids": list(range(32))})
    write_json(tmp_path / "build.json", {"build": "cpu", "key": "k1", "backend": "CPU"})
    manifest = quant_manifest(tmp_path / "F16", "smol", "F16")
    tool = tmp_path / "bin/llama-perplexity"  # marks that it ran, prints llama-perplexity's missing-model failure
    tool.parent.mkdir()
    tool.write_text(f"#!{sys.executable}\nimport sys\nopen({str(tmp_path / 'ran')!r}, 'w').close()\n"
                    f"sys.stdout.write(open({str(DATA / 'cpu-0.3.36/fail_missing_model.txt')!r}).read())\n"
                    "sys.exit(1)\n")
    tool.chmod(0o755)
    scratch_root, out = tmp_path / "scratch", tmp_path / "shard-0.json"
    match = {"corpus changed": r"not the text the shard plan was made from \(100 bytes, the plan has 99\)",
             "no room": r"forecast at 1,000,000,000,000,000,000 bytes but .*ggufbench-kld/cpu/smol/ctx16/shard-0 has",
             "tool fails": "llama-perplexity exited with status 1"}[case]
    with pytest.raises(ToolFailed, match=match):
        job = make_job(tool=tool, build_json=tmp_path / "build.json", run=RUN, out=out, log=tmp_path / "log",
                       wildcards={"build": "cpu", "model": "smol", "ctx": "16"})
        files = ShardFiles(base_manifest=manifest, manifests={}, corpus=corpus, corpus_record=None,
                           plan=tmp_path / "plan.json", tokens=tmp_path / "tokens.json")
        shard_job(job, files=files, shard=0, base_kv="f16", runs=[], scratch_root=scratch_root)
    assert not out.exists() and (tmp_path / "ran").exists() == (case == "tool fails")
    assert not (scratch_root / "ggufbench-kld/cpu/smol/ctx16/shard-0").exists()
    if scratch_root.exists():  # the slot was given back
        with open(scratch_root / ".ggufbench-kld-slot-0.lock") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
