"""core.io: atomic writes (a failed write leaves the old file), JSON reads that name the file."""

from __future__ import annotations

import json

import pytest

from ggufbench.core.errors import ToolFailed
from ggufbench.core.io import read_json, write_json


def test_write_json_is_atomic_and_round_trips(tmp_path):
    path = tmp_path / "results" / "kld" / "cpu" / "Q2_K_ctx512.json"  # parents are made
    record = {"stage": "kld", "result": {"kld_mean": 0.416352, "same_top_p_pct": 68.725}, "path": tmp_path}
    write_json(path, record)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no .partial left behind
    back = read_json(path)
    assert back["result"] == {"kld_mean": 0.416352, "same_top_p_pct": 68.725}
    assert back["path"] == str(tmp_path)  # default=str for paths
    assert path.read_text().endswith("}\n")


def test_write_json_replaces_existing(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"v": 1})
    write_json(path, {"v": 2})
    assert read_json(path) == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


@pytest.mark.faults
def test_write_json_failure_leaves_old_file(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"v": 1})
    circular: dict = {}
    circular["self"] = circular
    with pytest.raises(ValueError):
        write_json(path, circular)
    assert read_json(path) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


@pytest.mark.faults
def test_read_json_invalid(tmp_path):
    path = tmp_path / "half.json"
    path.write_text('{"stage": "perplexity", "result": {"ppl": 12.02')  # a half-written record
    with pytest.raises(ToolFailed) as ei:
        read_json(path)
    msg = str(ei.value)
    assert str(path) in msg
    assert "not valid JSON" in msg
    assert "delete it and rerun" in msg
    assert path.exists()  # not one of the workflow's records: left for the user


@pytest.mark.faults
def test_a_half_written_record_under_results_is_removed_so_a_plain_rerun_re_makes_it(tmp_path):
    path = tmp_path / "results" / "perplexity" / "r.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"stage": "perplexity", "result": {"ppl": 12.02')
    with pytest.raises(ToolFailed, match=r"r.json is not valid JSON .*: removed it; a plain rerun makes it again"):
        read_json(path)
    assert not path.exists()


def test_read_json_missing_file_is_not_hidden(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "nope.json")


def test_read_json_real_values(tmp_path, capture):
    path = tmp_path / "bench.json"
    path.write_text(capture("bench_q8_0.jsonl").splitlines()[0])
    assert read_json(path)["avg_ts"] == 1019.409153
    json.dumps(read_json(path))


@pytest.mark.faults
def test_atomic_path_removes_its_temp_file_when_the_block_raises(tmp_path):
    from ggufbench.core.io import atomic_path

    dest = tmp_path / "plot.png"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(dest, suffix=".png") as tmp:
        assert tmp.parent == dest.parent and tmp.name == ".plot.png.partial.png"
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]
    assert dest.read_bytes() == b"old"


def test_write_text_keeps_utf8_and_replaces(tmp_path):
    from ggufbench.core.io import write_text

    path = tmp_path / "data" / "corpus.txt"
    write_text(path, "first\n")
    write_text(path, "Δp ± 0.5 你好\n")
    assert path.read_bytes() == "Δp ± 0.5 你好\n".encode()
    assert [p.name for p in path.parent.iterdir()] == ["corpus.txt"]


def test_record_envelope_keys():
    from ggufbench.core.io import record, tool_info

    tool = tool_info(["llama-perplexity", "-c", 512], 1.5)
    assert tool == {"cmd": ["llama-perplexity", "-c", "512"], "wall_seconds": 1.5}
    rec = record("perplexity", {"build": "cpu"}, {"ctx": 512}, {"ppl": 12.02}, tool, shard=2)
    assert list(rec) == ["stage", "shard", "provenance", "params", "result", "tool"]
    assert rec["provenance"] == {"build": "cpu"} and rec["result"] == {"ppl": 12.02}
    # a shard's record: no provenance and no tool of its own
    assert list(record("kld-shard", None, {}, {"passes": []})) == ["stage", "params", "result"]
    assert tool_info(None, None) == {"cmd": None, "wall_seconds": None}


def test_sha256_file_matches_hashlib_across_buffer_boundaries(tmp_path):
    import hashlib

    from ggufbench.core.io import sha256_file

    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 41 + b"tail"  # not a multiple of the buffer
    path.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert sha256_file(path) == want
    assert sha256_file(path, bufsize=7) == want
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_symlink_replaces_a_link_and_a_file(tmp_path):
    from ggufbench.core.io import symlink

    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.write_bytes(b"A")
    b.write_bytes(b"B")
    link = tmp_path / "models" / "m" / "source" / "model.gguf"  # parents are made
    symlink(a, link)
    assert link.is_symlink() and link.readlink() == a and link.read_bytes() == b"A"
    symlink(b, link)  # an existing link is replaced
    assert link.readlink() == b and link.read_bytes() == b"B"
    link.unlink()
    link.write_bytes(b"a regular file")
    symlink(a, link)  # so is a regular file
    assert link.is_symlink() and link.read_bytes() == b"A"
    assert sorted(p.name for p in link.parent.iterdir()) == ["model.gguf"]
