"""WikiText-2 raw from the hub's parquet files, written as the classic wiki.test.raw text.

Served on loopback with the layout Salesforce/wikitext has (one parquet per config and split); the rows are
the raw file's lines as the dataset's builder made them (whitespace-only lines became "").
"""

from __future__ import annotations

import hashlib
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ggufbench.sources.corpus import wikitext_raw
from tests.support.hubserver import FakeHub, drive, hf_env

# the start of wiki.test.raw, line by line (every line starts with a space; blank lines are " \n")
RAW = (" \n = Robert Boulter = \n \n Robert Boulter is an English film , television and theatre actor . \n \n"
       " = = Career = = \n \n \n = = = 2000 – 2005 = = = \n \n In 2000 Boulter had a guest @-@ starring role . \n")


def hub_rows(raw: str) -> list[str]:
    """What the dataset's builder did: each line with its newline, whitespace-only lines as ''."""
    return [line if line.strip() else "" for line in raw.splitlines(keepends=True)]


def parquet(rows: list[str]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"text": rows}), buf)
    return buf.getvalue()


@pytest.fixture
def hub():
    h = FakeHub().start()
    yield h
    h.stop()


def test_rows_give_back_the_raw_file_byte_for_byte():
    assert wikitext_raw(hub_rows(RAW)) == RAW


def test_rows_without_newlines_are_refused():
    with pytest.raises(ValueError, match="line-per-row"):
        wikitext_raw([" = Robert Boulter = ", ""])


def test_wikitext2_raw_test_split_from_the_hub(hub, tmp_path):
    commit = hub.commit("Salesforce/wikitext", {
        "wikitext-2-raw-v1/test-00000-of-00001.parquet": parquet(hub_rows(RAW)),
        "wikitext-2-raw-v1/train-00000-of-00001.parquet": parquet([" = Other = \n"]),
        "wikitext-2-v1/test-00000-of-00001.parquet": parquet([" <unk> \n"]),
        "README.md": b"---\nlicense: cc-by-sa-3.0\n---\n",
    }, repo_type="dataset")
    out = tmp_path / "wiki.test.raw"
    lock = tmp_path / "hub.lock.json"
    run = drive(hf_env(hub, tmp_path / "hf"), op="corpus", repo="Salesforce/wikitext", config="wikitext-2-raw-v1",
                split="test", out=str(out), lock=str(lock))
    assert run.returncode == 0, run.stdout + run.stderr
    assert out.read_bytes() == RAW.encode("utf-8")
    assert run.result["source"] == f"hf://datasets/Salesforce/wikitext@{commit}/wikitext-2-raw-v1/test"
    assert "dataset:Salesforce/wikitext@main config=wikitext-2-raw-v1 split=test" in lock.read_text()
    # only the test split's parquet was fetched, from the dataset endpoints, at the commit
    gets = [r.path for r in hub.requests if r.method == "GET" and "/resolve/" in r.path]
    assert gets == [f"/datasets/Salesforce/wikitext/resolve/{commit}/wikitext-2-raw-v1/test-00000-of-00001.parquet"]
    assert hub.unhandled == []
    assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(RAW.encode()).hexdigest()


def test_missing_split_lists_the_configs(hub, tmp_path):
    hub.commit("Salesforce/wikitext", {"wikitext-2-raw-v1/test-00000-of-00001.parquet": parquet([" a \n"])},
               repo_type="dataset")
    run = drive(hf_env(hub, tmp_path / "hf"), op="corpus", repo="Salesforce/wikitext", config="wikitext-103-raw-v1",
                split="test", out=str(tmp_path / "x"))
    assert run.returncode != 0
    assert "wikitext-103-raw-v1/test-*.parquet" in run.stderr and "wikitext-2-raw-v1" in run.stderr
