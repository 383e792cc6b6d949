"""measure.shards.text: shard texts cut at token boundaries that re-tokenize to the same ids (real llama.cpp
tokenizers), and the logits header's tokens."""

from __future__ import annotations

import os
import re
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from ggufbench.core.errors import ConfigError, ToolFailed
from ggufbench.llamacpp.logits import read_logits_tokens
from ggufbench.llamacpp.perplexity_output import parse_kld
from ggufbench.measure.shards.plan import shard_bytes
from ggufbench.measure.shards.text import cuttable, read_vocab, token_spans, tokens_differing
from tests.support import DATA

SHARDED = DATA / "cpu-0.3.36" / "sharded"


def kld(a: int, b: int) -> dict:
    return parse_kld((SHARDED / f"kld_q2_k_chunks{a}-{b}.txt").read_text(encoding="utf-8")).flat()


def test_tokens_differing_ignores_the_chunk_first_token_a_bos_model_replaces():
    assert tokens_differing([1, 2, 3, 4], [1, 2, 3, 4], 2, False) == 0
    assert tokens_differing([1, 2, 3, 4], [9, 2, 8, 4], 2, False) == 2
    assert tokens_differing([1, 2, 3, 4], [9, 2, 8, 4], 2, True) == 0
    assert tokens_differing([1, 2, 3, 4], [1, 2], 2, False) == 2


def test_the_logits_header_gives_its_tokens_and_a_short_file_is_refused(tmp_path):
    path = tmp_path / "x.logits"
    path.write_bytes(b"_logits_" + struct.pack("<Iii", 4, 10, 2) + struct.pack("<8i", *range(8)) + b"\0" * 16)
    assert read_logits_tokens(path) == (4, 10, 2, list(range(8)))
    path.write_bytes(b"_logits_" + struct.pack("<Iii", 4, 10, 2) + struct.pack("<3i", 1, 2, 3))
    with pytest.raises(ToolFailed, match="ends early"):
        read_logits_tokens(path)
    path.write_bytes(b"junk" * 10)
    with pytest.raises(ToolFailed, match="_logits_"):
        read_logits_tokens(path)


GPT2_VOCABS = ["qwen2", "qwen35", "llama-bpe", "command-r", "gpt-2", "deepseek-llm", "starcoder", "falcon"]


def _ids(llama_bin, vocab, path, *extra) -> list[int]:
    out = subprocess.run([str(llama_bin / "llama-tokenize"), "-m", str(vocab), "-f", str(path), "--ids",
                          "--log-disable", "--no-parse-special", *extra], capture_output=True, text=True, check=True)
    return [int(x) for x in re.search(r"\[([\d,\s]*)\]", out.stdout).group(1).split(",")]


# what broke a first version of shard texts: control bytes the tokenizer drops (0x1d between quotes), invalid
# UTF-8 it reads as U+FFFD (a lone 0x85), characters byte-level BPE splits over two tokens; and backslash
# escapes, which llama-perplexity leaves as they are
AWKWARD = ('   | "\x1c"   | File Separator |\n   | "\x1d"   | Group Separator |\n   | "\\x85"   | Next Line |\n'
           '   tab ("\\t"), "\\n" and "\\r\\n"; caf\u00e9 \u2028 end\n')


LONE = b"   lone bytes: \x85 and \xff\xfe here\n"


@pytest.mark.parametrize("name", GPT2_VOCABS)
def test_shard_texts_tokenize_back_to_their_chunks(name, llama_bin, llama_src, tmp_path):
    """llama.cpp's own vocab GGUFs: a text with awkward bytes, tokenized as llama-perplexity reads it (no escape
    processing), shard texts cut at chunk boundaries and re-tokenized: the same ids."""
    vocab_file = llama_src / "models" / f"ggml-vocab-{name}.gguf"
    corpus = tmp_path / "corpus.txt"
    readme = (llama_src / "README.md").read_text(encoding="utf-8")
    corpus.write_bytes(readme[:20000].encode() + (AWKWARD.encode() + LONE) * 30 + readme[20000:40000].encode())
    ids = _ids(llama_bin, vocab_file, corpus, "--no-escape")
    v = read_vocab(vocab_file)
    add_bos = ids[0] == v.bos_id
    text = corpus.read_bytes()
    ends = token_spans(ids, v, text)
    ctx = 128
    ok = cuttable(ends, ctx, add_bos)
    starts = range(0, len(ids) // ctx - 2, 2)
    cut = [a for a in starts if ok(a)]  # not ok: a boundary inside a character; plan_shards never starts one there

    def differing(a: int) -> int:
        start, end = shard_bytes(ends, len(text), ctx, a, a + 2, add_bos=add_bos)
        shard = tmp_path / f"shard-{a}.txt"
        shard.write_bytes(text[start:end])
        got = _ids(llama_bin, vocab_file, shard, "--no-escape")[:2 * ctx]
        return tokens_differing(ids[a * ctx:(a + 2) * ctx], got, ctx, add_bos)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # one llama-tokenize per shard, side by side
        per_shard = list(pool.map(differing, cut))
    assert 2 * ctx * len(cut) >= 3000 and sum(per_shard) == 0 and len(starts) - len(cut) <= 3


def test_a_sentencepiece_vocab_is_refused_with_the_reason(llama_src):
    with pytest.raises(ConfigError, match="'llama' tokenizer; only gpt2 .* kld.mode: chunks"):
        read_vocab(llama_src / "models" / "ggml-vocab-llama-spm.gguf")
