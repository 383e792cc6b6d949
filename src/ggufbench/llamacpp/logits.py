"""The baseline-logits file of llama-perplexity --kl-divergence-base: its exact size, and the disk check.

Format (llama.cpp tools/perplexity/perplexity.cpp): the magic `_logits_` (8 bytes), u32 n_ctx, i32 n_vocab,
i32 n_chunk, i32 tokens[n_ctx*n_chunk], then for each chunk (n_ctx - 1 - n_ctx/2) rows of
nv = 2*((n_vocab+1)/2) + 4 uint16 values. Only the second half of each chunk is stored.
"""

from __future__ import annotations

import shutil
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

from ..core.errors import ToolFailed
from ..core.units import GIB


def scored_per_chunk(n_ctx: int) -> int:
    """Tokens llama-perplexity scores (and stores logits of) in each chunk: its second half, less the last."""
    return n_ctx - 1 - n_ctx // 2


def logits_file_size(n_ctx: int, n_vocab: int, n_chunk: int) -> int:
    nv = 2 * ((n_vocab + 1) // 2) + 4
    return 20 + 4 * n_ctx * n_chunk + 2 * n_chunk * scored_per_chunk(n_ctx) * nv


def n_chunks_used(n_tokens: int, n_ctx: int, chunks: int | None) -> int:
    """llama-perplexity's own rule: min(--chunks, tokens / n_ctx)."""
    n_max = n_tokens // n_ctx
    return n_max if chunks is None or chunks < 0 else min(chunks, n_max)


@dataclass
class LogitsForecast:
    n_ctx: int
    n_vocab: int
    n_tokens: int
    n_chunk: int
    bytes: int
    budget_bytes: int
    free_bytes: int
    largest_chunks_fitting: int

    def to_dict(self) -> dict:
        return asdict(self)


def forecast(n_ctx: int, n_vocab: int, n_tokens: int, chunks: int | None, *, budget_gib: float,
             target_dir: Path) -> LogitsForecast:
    n_chunk = n_chunks_used(n_tokens, n_ctx, chunks)
    size = logits_file_size(n_ctx, n_vocab, n_chunk)
    budget = int(budget_gib * GIB)
    free = shutil.disk_usage(target_dir).free
    limit = min(budget, free)
    per_chunk = logits_file_size(n_ctx, n_vocab, 1) - 20
    fitting = max(0, (limit - 20) // per_chunk)
    return LogitsForecast(n_ctx, n_vocab, n_tokens, n_chunk, size, budget, free, int(min(fitting, n_chunk)))


def check_forecast(fc: LogitsForecast) -> None:
    """Refuse a baseline pass whose logits would exceed the budget or the free space, before it starts."""
    if fc.n_chunk < 1 or fc.n_tokens < 2 * fc.n_ctx:
        raise ToolFailed(f"the corpus has {fc.n_tokens} tokens; llama-perplexity needs at least {2 * fc.n_ctx} "
                         f"(two contexts of {fc.n_ctx}): use a longer corpus or a smaller kld.ctx")
    over = []
    if fc.bytes > fc.budget_bytes:
        over.append(f"the budget kld.max_logits_gib = {fc.budget_bytes / GIB:.2f} GiB")
    if fc.bytes > fc.free_bytes:
        over.append(f"the free disk space ({fc.free_bytes / GIB:.2f} GiB)")
    if over:
        raise ToolFailed(
            f"baseline logits forecast {fc.bytes:,} bytes ({fc.bytes / GIB:.2f} GiB) for {fc.n_chunk} chunks "
            f"of ctx {fc.n_ctx} and n_vocab {fc.n_vocab}, over {' and '.join(over)}. "
            f"The largest --chunks that fits is {fc.largest_chunks_fitting}: set kld.chunks to it (or less), "
            "or raise kld.max_logits_gib / free disk space.")


def check_logits_file(path: Path, fc: LogitsForecast) -> None:
    """A finished baseline file must be exactly the forecast size and start with the magic."""
    check_logits_size(path, fc.bytes, fc.n_chunk, fc.n_ctx, fc.n_vocab)
    with open(path, "rb") as f:
        if f.read(8) != b"_logits_":
            raise ToolFailed(f"{path} does not start with llama.cpp's '_logits_' magic")


def check_logits_size(path: Path, expected: int, n_chunk: int, n_ctx: int, n_vocab: int) -> None:
    size = path.stat().st_size if path.exists() else -1
    if size != expected:
        raise ToolFailed(f"{path}: {size:,} bytes written, {expected:,} expected for {n_chunk} chunks of "
                         f"ctx {n_ctx}, n_vocab {n_vocab}: the baseline pass did not finish")


def read_logits_tokens(path: str | Path) -> tuple[int, int, int, list[int]]:
    """(n_ctx, n_vocab, n_chunk, tokens) from a logits file's header (the format above)."""
    with open(path, "rb") as f:
        head = f.read(20)
        if len(head) < 20 or head[:8] != b"_logits_":
            raise ToolFailed(f"{path} is not a llama.cpp logits file (no '_logits_' header)")
        n_ctx, n_vocab, n_chunk = struct.unpack("<Iii", head[8:20])
        raw = f.read(4 * n_ctx * n_chunk)
    if len(raw) != 4 * n_ctx * n_chunk:
        raise ToolFailed(f"{path}: header promises {n_chunk} chunks of {n_ctx} tokens but the file ends early")
    return n_ctx, n_vocab, n_chunk, list(struct.unpack(f"<{n_ctx * n_chunk}i", raw))
