"""Corpora: WikiText-2 raw from the hub's parquet files, written as the classic wiki.test.raw text, and a user's
own `local:` file, refused by name when it is not UTF-8 text.

Served on loopback with the layout Salesforce/wikitext has (one parquet per config and split); the rows are
the raw file's lines as the dataset's builder made them (whitespace-only lines became "").
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ggufbench.core.errors import ConfigError
from ggufbench.sources.corpus import make_corpus, wikitext_raw, write_corpus
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


# --- a user's own text (corpora.<name>.local) -------------------------------------------------------------------

def _make_local(tmp_path, data: bytes):
    own = tmp_path / "wiki.test.raw"
    own.write_bytes(data)
    out = tmp_path / "results" / "data" / "wiki" / "corpus.txt"
    return own, out, lambda: make_corpus("wiki", {"local": {"path": str(own)}}, out)


def test_a_local_utf8_corpus_is_written_byte_for_byte(tmp_path):
    own, out, make = _make_local(tmp_path, RAW.encode())
    info = make()
    assert out.read_bytes() == RAW.encode()
    assert (info.kind, info.source, info.n_bytes) == ("local", str(own.resolve()), len(RAW.encode()))
    assert info.sha256 == hashlib.sha256(RAW.encode()).hexdigest()


@pytest.mark.faults
def test_a_windows_1252_corpus_is_refused_at_make_corpus_naming_key_file_offset_and_fix(tmp_path):
    """The issue's Latin-1 corpus was a UnicodeDecodeError naming no file (and llama.cpp itself would have measured
    it with every such byte turned into U+FFFD). Here WikiText exported as Windows text: its en dash is 0x96."""
    own, out, make = _make_local(tmp_path, RAW.encode("cp1252"))
    with pytest.raises(ConfigError) as e:
        make()
    at = RAW.index("\u2013")  # ASCII before it: the character offset is the byte offset
    line = RAW[:at].count("\n") + 1
    assert str(e.value) == (
        f"corpora.wiki.local.path: {own} is not UTF-8 text: byte offset {at} is 0x96, invalid start byte "
        f"(line {line}); llama.cpp reads a corpus as UTF-8 and would silently replace such bytes, measuring another "
        f"text: convert it to UTF-8, e.g. `iconv -f latin1 -t utf-8 {own} > {own}.utf8`, and use that file (latin1 "
        "is a guess: `file -i` names the encoding; cp1252 for Windows text)")
    assert not out.parent.exists()  # nothing written, no measurement can start on it
    own.write_bytes(RAW.encode("cp1252").decode("cp1252").encode())  # what `iconv -f cp1252 -t utf-8` writes
    assert make().n_bytes == len(RAW.encode())  # the same job, run again, makes it
    assert out.read_bytes() == RAW.encode()


@pytest.mark.faults
@pytest.mark.parametrize(("data", "what"), [
    (gzip.compress(RAW.encode(), mtime=0), "is a binary file, not text (byte offset 1 is 0x8b, invalid start byte; "
                                           "the first NUL byte is at offset 3; the file starts with 1f 8b 08 00"),
    (RAW.encode("utf-16"), "is UTF-16 text (utf-16 (byte-order mark ff fe); byte offset 0 is 0xff, invalid start "
                           "byte), not UTF-8, the encoding llama.cpp reads: convert it to UTF-8, e.g. "
                           "`iconv -f utf-16 "),
    (b"", "is empty: a corpus needs text"),
    (b"\n\n", "holds only whitespace (2 bytes): a corpus needs text"),
], ids=["gzip", "utf-16", "empty", "blank"])
def test_a_binary_utf16_or_empty_corpus_is_refused_at_make_corpus(tmp_path, data, what):
    own, out, make = _make_local(tmp_path, data)
    with pytest.raises(ConfigError) as e:
        make()
    assert str(e.value).startswith(f"corpora.wiki.local.path: {own} {what}")
    assert not out.parent.exists()


@pytest.mark.faults
def test_a_local_corpus_path_that_is_a_folder_is_named(tmp_path):
    out = tmp_path / "results" / "data" / "wiki" / "corpus.txt"
    with pytest.raises(ConfigError, match=re.escape(f"corpora.wiki.local.path: {tmp_path} is not a file")):
        make_corpus("wiki", {"local": {"path": str(tmp_path)}}, out)


@pytest.mark.faults
def test_an_empty_dataset_text_is_refused_naming_its_source(tmp_path):
    out = tmp_path / "corpus.txt"
    source = "hf://datasets/Salesforce/wikitext@0123abc/wikitext-2-raw-v1/test"
    with pytest.raises(ConfigError, match=re.escape(f"corpora.wiki: {source} is empty: a corpus needs text")):
        write_corpus("", out, "wiki", "hub_dataset", source)
    assert not out.exists()
