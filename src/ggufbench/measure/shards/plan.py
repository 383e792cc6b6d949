"""The shard plan of kld.mode sharded: shards of whole chunks, sized from the exact logits forecast so that
`parallel` of them fit the disk budget."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from ...core.errors import ConfigError, ToolFailed
from ...core.units import GIB
from ...llamacpp.logits import logits_file_size, n_chunks_used, scored_per_chunk
from .text import cuttable, first_token


def shard_bytes(ends: list[int], n_text: int, n_ctx: int, first_chunk: int, end_chunk: int, *,
                add_bos: bool) -> tuple[int, int]:
    """[start, end) in the corpus text of chunks [first_chunk, end_chunk): from the end of the token before the
    shard's first one (_first_token; cuttable says where that is possible), to the end of up to n_ctx tokens
    past its last chunk (the last chunk's last tokens are tokenized in context, and a 1-chunk shard still has
    the two contexts llama-perplexity wants; --chunks cuts the extra off)."""
    if not cuttable(ends, n_ctx, add_bos)(first_chunk):
        raise ToolFailed(f"chunk {first_chunk} starts inside a character: it cannot start a shard (plan_shards "
                         "picks boundaries where cuttable() holds)")
    first = first_token(first_chunk, n_ctx, add_bos)
    start = ends[first - 1] if first > 0 else 0
    last = min(len(ends), (end_chunk + 1) * n_ctx)
    end = n_text if last == len(ends) else next((e for e in ends[last - 1::-1] if e >= 0), n_text)
    return start, end


# --- the shard plan ------------------------------------------------------------------------------------------


@dataclass
class ShardPlan:
    n_ctx: int
    n_vocab: int
    n_tokens: int
    n_chunk: int                     # chunks scored in all (llama-perplexity's rule, kld.chunks as a limit)
    disk_budget_bytes: int
    parallel: int
    chunks_per_shard: int            # the most chunks whose logits fit budget / parallel
    shards: list[list[int]] = field(default_factory=list)   # [first_chunk, end_chunk) each
    shard_logits_bytes: list[int] = field(default_factory=list)
    unsharded_logits_bytes: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


LLAMA_N_BATCH = 2048   # llama-perplexity's default -b: it evaluates n_batch / n_ctx chunks per batch


def chunks_per_batch(n_ctx: int, n_batch: int = LLAMA_N_BATCH) -> int:
    """The chunks llama-perplexity evaluates together in a PPL pass (n_seq; the baseline pass is one)."""
    return max(1, n_batch // n_ctx)


def check_batching(reported: int | None, n_ctx: int, what: str) -> None:
    """A pass batched as the plan assumed: n_batch / n_ctx chunks together (the baseline pass of every version,
    and the KLD pass of a 2026 llama.cpp), or one chunk at a time (the KLD pass of a 2025 one, 4227c9b), which
    any shard boundary matches. Any other batching would make the shards' numbers differ from the unsharded run's."""
    expected = chunks_per_batch(n_ctx)
    if reported is not None and reported not in (1, expected):
        raise ToolFailed(f"{what}: llama-perplexity evaluated {reported} chunks per batch, but the shard plan aligned "
                         f"shards to {expected} (n_batch {LLAMA_N_BATCH} / ctx {n_ctx}): this llama.cpp batches "
                         "differently; use kld.mode: chunks with it")


def plan_shards(n_tokens: int, n_ctx: int, n_vocab: int, chunks: int | None, *, disk_budget_gib: float,
                parallel: int = 1, n_batch: int = LLAMA_N_BATCH,
                can_start: Callable[[int], bool] = lambda c: True) -> ShardPlan:
    """Shards of whole chunks, each one's logits file (exact size) within disk_budget / parallel.

    A shard's size is a multiple of the chunks llama-perplexity evaluates per batch (n_seq = n_batch / n_ctx)
    where it can be, so every batch holds the same chunks as in an unsharded run: batch composition changes
    llama.cpp's numerics slightly (measured: a Q2_K chunk's PPL 24.7547 in a batch of 4 sequences, 24.7533 in a
    batch of 3), and aligned shards make the per-token values, and so the combined statistics, the unsharded
    run's. A shard starts only at a chunk boundary where can_start holds (see cuttable)."""
    n_chunk = n_chunks_used(n_tokens, n_ctx, chunks)
    if n_chunk < 2:
        raise ToolFailed(f"the corpus has {n_tokens} tokens: {n_chunk} chunk(s) of ctx {n_ctx}; llama-perplexity "
                         f"needs at least 2 (use a longer corpus or a smaller kld.ctx)")
    budget = int(disk_budget_gib * GIB)
    per_shard = budget // parallel
    per_chunk = logits_file_size(n_ctx, n_vocab, 1) - 20
    fit = (per_shard - 20) // per_chunk
    # llama-perplexity refuses a text under two contexts: a shard holds 2 chunks or more (one only when its
    # text can run on into the next chunk, see below)
    if fit < 2:
        raise ConfigError(f"kld.sharded.disk_budget_gib = {disk_budget_gib:g} with parallel = {parallel} leaves "
                          f"{per_shard:,} bytes per shard, but two chunks of ctx {n_ctx} with n_vocab {n_vocab} "
                          f"need {logits_file_size(n_ctx, n_vocab, 2):,} bytes of logits: raise the budget to at "
                          f"least {parallel * logits_file_size(n_ctx, n_vocab, 2) / GIB:.3f} GiB or lower parallel")
    k = min(fit, n_chunk)
    n_seq = chunks_per_batch(n_ctx, n_batch)
    shards, start = [], 0
    while start < n_chunk:
        if n_chunk - start <= k:
            end = n_chunk
        else:
            # the longest shard that fits, batch-aligned if it can be, ending where the next one can start, and
            # never leaving a last shard of one chunk (no next chunk to make up its two contexts)
            ends = [e for e in range(start + k, start, -1) if e != n_chunk - 1]
            aligned = [e for e in ends if (e - start) % n_seq == 0] if k >= n_seq else []
            end = next((e for e in aligned + ends if can_start(e)), None)
            if end is None:
                raise ToolFailed(f"no chunk boundary in {start + 1}..{start + k} can start a shard (each splits a "
                                 "character between two tokens): raise kld.sharded.disk_budget_gib")
        shards.append([start, end])
        start = end
    return ShardPlan(n_ctx, n_vocab, n_tokens, n_chunk, budget, parallel, k, shards,
                     [logits_file_size(n_ctx, n_vocab, b - a) for a, b in shards],
                     logits_file_size(n_ctx, n_vocab, n_chunk))


def scored_tokens(n_chunk: int, n_ctx: int) -> int:
    """Tokens llama-perplexity scores over n_chunk chunks: the second half of each, less the last."""
    return n_chunk * scored_per_chunk(n_ctx)
