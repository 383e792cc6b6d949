"""llamacpp.tokenize: the text llama-perplexity reads from -f, and its token ids from the real llama-tokenize
(llama_bin) on llama.cpp's qwen2 vocab GGUF; ids checked against llama.cpp's own test vectors
(models/ggml-vocab-qwen2.gguf.out: "Hello world" 9707 1879, "\\n" 198, "\\n\\n" 271, "\\t" 197)."""

from __future__ import annotations

import stat
import sys

import pytest

from ggufbench.core.errors import ToolFailed
from ggufbench.llamacpp.tokenize import count_tokens, perplexity_text, tokenize_ids


@pytest.mark.parametrize("data, text", [(b"Hello world\n", b"Hello world"), (b"Hello world\n\n", b"Hello world\n"),
                                        (b"a\\tb", b"a\\tb"), (b"\r\n", b"\r"), (b"", b"")])
def test_perplexity_text_drops_one_trailing_newline_only(tmp_path, data, text):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(data)
    assert perplexity_text(corpus) == text


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
