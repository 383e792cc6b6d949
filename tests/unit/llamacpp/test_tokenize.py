"""llamacpp.tokenize: the text llama-perplexity reads from -f, and its token ids from the real llama-tokenize
(llama_bin) on llama.cpp's qwen2 vocab GGUF; ids checked against llama.cpp's own test vectors
(models/ggml-vocab-qwen2.gguf.out: "Hello world" 9707 1879, "\\n" 198, "\\n\\n" 271, "\\t" 197)."""

from __future__ import annotations

import gzip
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ggufbench.core.errors import GgufbenchError, ToolFailed
from ggufbench.llamacpp.tokenize import count_tokens, perplexity_text, text_problem, tokenize_ids


@pytest.mark.parametrize("data, text", [(b"Hello world\n", b"Hello world"), (b"Hello world\n\n", b"Hello world\n"),
                                        (b"a\\tb", b"a\\tb"), (b"a\r\n", b"a\r"),
                                        ("caf\u00e9 \u2713\n".encode(), "caf\u00e9 \u2713".encode())])
def test_perplexity_text_drops_one_trailing_newline_only(tmp_path, data, text):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(data)
    assert perplexity_text(corpus) == text


# What a user's file can be instead of UTF-8 text, made here as it is made in the wild: a Latin-1 export, text cut
# in the middle of a character (head -c), a Windows "Unicode" file, a gzip left compressed, an empty file.
PROSE = "Robert Boulter is an English film , television and theatre actor .\nHe played Se\u00f1or L\u00f3pez .\n"
UTF8 = PROSE.encode()
N = PROSE.index("\u00f1")  # in Latin-1 one byte a character: the offset of the first non-ASCII byte
NOT_TEXT = [
    ("latin1", PROSE.encode("latin-1"),
     f"is not UTF-8 text: byte offset {N} is 0xf1, invalid continuation byte (line 2)",
     "`iconv -f latin1 -t utf-8 {path} > {path}.utf8`"),
    ("cut", UTF8 + "\u2713".encode()[:2], f"byte offset {len(UTF8)} is 0xe2, unexpected end of data (line 3)",
     "iconv -f latin1"),
    ("utf16", PROSE.encode("utf-16"), "is UTF-16 text (utf-16 (byte-order mark ff fe); byte offset 0 is 0xff",
     "`iconv -f utf-16 -t utf-8 {path} > {path}.utf8`"),
    ("gzip", gzip.compress(UTF8, mtime=0), "is a binary file, not text (byte offset 1 is 0x8b, invalid start byte; "
     "the first NUL byte is at offset 3; the file starts with 1f 8b 08 00", "decompress or export it first"),
    ("nul", UTF8 + b"\0\0\0\0", f"is a binary file, not text (byte offset {len(UTF8)} is 0x00, a NUL byte;",
     "a corpus is UTF-8 text"),
    ("empty", b"", "is empty: a corpus needs text", ""),
    ("blank", b" \n\r\n", "holds only whitespace (4 bytes): a corpus needs text", ""),
]


@pytest.mark.faults
@pytest.mark.parametrize(("kind", "data", "what", "todo"), NOT_TEXT, ids=[c[0] for c in NOT_TEXT])
def test_a_corpus_that_is_not_utf8_text_is_refused_naming_file_offset_and_fix(tmp_path, kind, data, what, todo):
    """llama.cpp reads -f as UTF-8 and turns each invalid byte into U+FFFD without a word (src/unicode.cpp), so
    a Latin-1 corpus measured a different text; here every pass refuses it before llama-tokenize runs."""
    corpus = tmp_path / "mine.txt"
    corpus.write_bytes(data)
    with pytest.raises(GgufbenchError) as e:
        perplexity_text(corpus)
    msg = str(e.value)
    assert msg.startswith(f"{corpus} ") and what in msg and todo.format(path=corpus) in msg
    assert corpus.read_bytes() == data  # the user's own file (not under results/) is left as it is


@pytest.mark.faults
def test_the_iconv_command_the_message_gives_repairs_the_file(tmp_path):
    if not shutil.which("iconv"):
        pytest.skip("no iconv on this machine")
    corpus = tmp_path / "mine.txt"
    corpus.write_bytes(PROSE.encode("latin-1"))
    with pytest.raises(GgufbenchError) as e:
        perplexity_text(corpus)
    command = re.search(r"`(iconv [^`]+)`", str(e.value)).group(1)
    subprocess.run(command, shell=True, check=True)
    assert perplexity_text(Path(f"{corpus}.utf8")) == UTF8[:-1]


@pytest.mark.faults
def test_a_bad_corpus_under_results_is_removed_for_a_plain_rerun_to_make_again(tmp_path):
    """A corpus.txt made before make_corpus checked its source (a NUL-filled local file passed then)."""
    corpus = tmp_path / "results" / "data" / "own" / "corpus.txt"
    corpus.parent.mkdir(parents=True)
    corpus.write_bytes(b"text\0\0")
    with pytest.raises(GgufbenchError, match=r"is a binary file.*Removed it; a plain rerun makes it again"):
        perplexity_text(corpus)
    assert not corpus.exists()


def test_text_problem_passes_utf8_text():
    assert text_problem(UTF8, "x") is None
    assert text_problem("\ufeffBOM-led UTF-8 is UTF-8\n".encode(), "x") is None


def test_ids_as_llama_perplexity_sees_them(llama_bin, llama_src, tmp_path):
    tok, vocab = llama_bin / "llama-tokenize", llama_src / "models" / "ggml-vocab-qwen2.gguf"
    log = tmp_path / "tokenize.log"
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Hello world\n\n")
    assert tokenize_ids(tok, vocab, corpus, log) == [9707, 1879, 198]  # one "\n" left, no BOS for qwen2
    corpus.write_text("\\t<|im_start|>")
    ids = tokenize_ids(tok, vocab, corpus, log)
    assert 197 not in ids and 151644 not in ids  # no escapes processed, special-token text stays text
    assert count_tokens(tok, vocab, corpus, log) == len(ids) > 2
    assert "--no-escape" in log.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "tokenize.log"]  # its temp file is gone


def test_no_ids_list_is_a_failure(tmp_path):
    tool = tmp_path / "llama-tokenize"
    tool.write_text(f"#!{sys.executable}\nprint('main: error: unable to load vocab')\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Hello")
    with pytest.raises(ToolFailed, match=r"printed no \[ids\] list"):
        tokenize_ids(tool, tmp_path / "vocab.gguf", corpus, tmp_path / "tokenize.log")
