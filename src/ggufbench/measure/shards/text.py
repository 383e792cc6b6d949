"""Shard texts for kld.mode sharded: where the corpus can be cut so that a shard's own tokenization is the same
tokens as the whole corpus's (gpt2-type byte-level vocabularies)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...core.errors import ConfigError, ToolFailed
from ...llamacpp.gguf import tokenizer

# --- shard texts from the tokenizer's pieces -------------------------------------------------------------


def _gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE maps every byte to a printable character; this is the inverse map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


@dataclass
class Vocab:
    model: str                 # tokenizer.ggml.model: gpt2 (byte-level BPE), the one sharding supports
    pieces: list[bytes]        # the text each token id stands for (b"" for control tokens)
    add_bos: bool              # whether llama.cpp adds BOS: taken from the tokenization itself (plan job)
    bos_id: int | None


def read_vocab(gguf_path: str | Path) -> Vocab:
    """Each token's text piece from the GGUF's tokenizer, as llama.cpp's token_to_piece gives it for a
    plain-text corpus (control tokens print nothing). Reads only the metadata (models.read_kv: a 248K-token
    vocabulary in about a second, where GGUFReader takes ten)."""
    tok = tokenizer(gguf_path)  # typed: a key of the wrong type is named (gguf.BadGguf)
    model = tok["model"] or ""
    tokens = [t.decode("utf-8", errors="surrogateescape") for t in tok["tokens"]]
    if not tokens:
        raise ToolFailed(f"{gguf_path} has no tokenizer.ggml.tokens: sharded KLD needs the model's vocabulary")
    types = tok["token_type"] or [1] * len(tokens)
    pieces: list[bytes] = []
    if model == "gpt2":
        dec = _gpt2_byte_decoder()
        for s, ty in zip(tokens, types, strict=True):
            if ty == CONTROL:
                pieces.append(b"")
            elif ty == USER_DEFINED or any(ch not in dec for ch in s):
                pieces.append(s.encode("utf-8", errors="surrogateescape"))
            else:
                pieces.append(bytes(dec[ch] for ch in s))
    else:
        # measured on llama.cpp's own vocab GGUFs (docs/kld-sharded.md): every gpt2 one (Qwen2/3.5, Llama 3,
        # Command-R, DeepSeek, GPT-2, StarCoder, Falcon) re-tokenizes shard texts to the same ids; SentencePiece
        # ones (llama-spm, phi-3, baichuan) do not (~15% of tokens differ: the space prefix it adds)
        raise ConfigError(f"kld.mode: sharded cuts shard texts from the tokenizer's pieces, and {gguf_path} has a "
                          f"'{model}' tokenizer; only gpt2 (byte-level BPE) tokenizers re-tokenize them to the same "
                          "ids: use kld.mode: chunks for this model")
    return Vocab(model, pieces, tok["add_bos"], tok["bos_id"])


CONTROL, USER_DEFINED = 3, 4  # llama_token_type values
REPLACEMENT = "\ufffd".encode()


def tokenizer_view(text: bytes) -> tuple[bytes, list[int]]:
    """The bytes llama.cpp's tokenizer reads for `text`, and for each of them the offset in text of the character
    it starts (-1 for a byte inside a character).
    llama.cpp decodes UTF-8 leniently (unicode_cpts_from_utf8) and reads a byte that starts no sequence as
    U+FFFD (a lone byte >= 0x80 becomes the pieces of U+FFFD)."""
    view, where = bytearray(), []
    i, n = 0, len(text)
    while i < n:
        b = text[i]
        k = 1 if b < 0x80 else 2 if b & 0xE0 == 0xC0 else 3 if b & 0xF0 == 0xE0 else 4 if b & 0xF8 == 0xF0 else 0
        if k and (k == 1 or (i + k <= n and all(text[j] & 0xC0 == 0x80 for j in range(i + 1, i + k)))):
            view += text[i:i + k]
            where += [i] + [-1] * (k - 1)   # -1: inside a character
            i += k
        else:
            view += REPLACEMENT
            where += [i] + [-1] * (len(REPLACEMENT) - 1)
            i += 1
    return bytes(view), where


def token_spans(ids: list[int], vocab: Vocab, text: bytes, max_skip: int = 16) -> list[int]:
    """Byte offset in `text` (the corpus as llama-perplexity reads it) where each token's piece ends, found by
    walking the pieces along what the tokenizer read (tokenizer_view); -1 where a token ends inside a character
    (byte-level BPE splits some characters over two tokens: no text can start at the second). A byte the
    tokenizer dropped (measured: a 0x1d control byte between two quotes made no token) is stepped over, up to
    max_skip bytes."""
    view, where = tokenizer_view(text)
    ends, pos = [], 0
    for i, t in enumerate(ids):
        piece = vocab.pieces[t]
        if piece and not view.startswith(piece, pos):
            j = view.find(piece, pos, pos + max_skip + len(piece))
            if j < 0:
                raise ToolFailed(f"token {i} (id {t}, {piece[:20]!r}) is not found in the corpus after "
                                 f"{ends[-1] if ends else 0} bytes: the tokenizer's pieces do not walk the text; use "
                                 "kld.mode: chunks for this model")
            pos = j
        pos += len(piece)
        ends.append(where[pos] if pos < len(view) else len(text))
    return ends


def first_token(chunk: int, n_ctx: int, add_bos: bool) -> int:
    """The first token a shard starting at `chunk` must reproduce. A model that adds BOS gets one at the start of
    the shard text in place of the chunk's first token, which llama-perplexity replaces with BOS anyway, so that
    token is left out of the text."""
    return chunk * n_ctx + (1 if add_bos and chunk > 0 else 0)


def cuttable(ends: list[int], n_ctx: int, add_bos: bool) -> Callable[[int], bool]:
    """Whether a shard can start at chunk c: the token before it ends on a character boundary."""
    def ok(c: int) -> bool:
        first = first_token(c, n_ctx, add_bos)
        return first == 0 or (first - 1 < len(ends) and ends[first - 1] >= 0)
    return ok


def tokens_differing(expected: list[int], got: list[int], n_ctx: int, add_bos: bool) -> int:
    """Positions where the shard's tokens differ from the full tokenization's (a missing or extra token counts
    as one). With a BOS-adding model each chunk's first token is replaced by BOS before evaluation in both runs,
    so those positions do not count."""
    mismatched = sum(1 for i, (a, b) in enumerate(zip(expected, got, strict=False))
                     if a != b and not (add_bos and i % n_ctx == 0))
    return mismatched + abs(len(expected) - len(got))
