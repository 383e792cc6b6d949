"""measure.shards.plan: shards tile the corpus's chunks within the logits budget, aligned to batches, starting where a
text can start."""

from __future__ import annotations

import pytest

from ggufbench.core.errors import ConfigError, ToolFailed
from ggufbench.core.units import GIB
from ggufbench.llamacpp.logits import logits_file_size
from ggufbench.llamacpp.perplexity_output import parse_kld
from ggufbench.measure.shards.plan import plan_shards
from tests.support import DATA

SHARDED = DATA / "cpu-0.3.36" / "sharded"


def kld(a: int, b: int) -> dict:
    return parse_kld((SHARDED / f"kld_q2_k_chunks{a}-{b}.txt").read_text(encoding="utf-8")).flat()


def test_shards_tile_the_chunks_within_the_budget_aligned_to_batches():
    unsharded = logits_file_size(512, 49152, 179)
    # the demo corpus, a quarter of its logits
    p = plan_shards(91872, 512, 49152, None, disk_budget_gib=unsharded / 4 / GIB)
    assert p.n_chunk == 179 and p.chunks_per_shard == 44 and p.chunks_per_shard % 4 == 0
    assert p.shards[0] == [0, 44] and p.shards[-1] == [176, 179] and len(p.shards) == 5
    assert all(a == b for (_, a), (b, _) in zip(p.shards, p.shards[1:], strict=False))
    assert max(p.shard_logits_bytes) <= p.disk_budget_bytes and p.unsharded_logits_bytes == unsharded
    assert p.shard_logits_bytes[0] == logits_file_size(512, 49152, 44)


def test_parallel_splits_the_budget_and_chunks_limit_the_total():
    one = plan_shards(91872, 512, 49152, 8, disk_budget_gib=1.0)
    assert one.shards == [[0, 8]]
    two = plan_shards(91872, 512, 49152, None, disk_budget_gib=0.25, parallel=2)
    assert 2 * max(two.shard_logits_bytes) <= two.disk_budget_bytes
    assert two.chunks_per_shard == 5 and all((b - a) % 4 == 0 for a, b in two.shards[:-1])  # batch-aligned


def test_a_last_shard_of_one_chunk_borrows_one_from_the_shard_before():
    # room for 2 chunks: 5 chunks -> [0,2) [2,3) [3,5); the 1-chunk shard's text runs on into the next chunk
    p = plan_shards(5 * 512 + 10, 512, 49152, None, disk_budget_gib=logits_file_size(512, 49152, 2) / GIB)
    assert p.shards == [[0, 2], [2, 3], [3, 5]]


def test_shards_start_only_where_a_text_can_start():
    # room for 5 chunks: batch-aligned shards of 4 where they can start; chunk 4 starts inside a character, so
    # the first shard takes 5 instead
    budget = logits_file_size(512, 49152, 5) / GIB
    assert plan_shards(10 * 512 + 10, 512, 49152, None, disk_budget_gib=budget).shards == [[0, 4], [4, 8], [8, 10]]
    p = plan_shards(10 * 512 + 10, 512, 49152, None, disk_budget_gib=budget, can_start=lambda c: c != 4)
    assert p.shards == [[0, 5], [5, 10]]
    # and no shard is left with a single last chunk: 9 chunks in shards of up to 4 -> 4 + 3 + 2, not 4 + 4 + 1
    four = logits_file_size(512, 49152, 4) / GIB
    assert plan_shards(9 * 512 + 10, 512, 49152, None, disk_budget_gib=four).shards == [[0, 4], [4, 7], [7, 9]]
    with pytest.raises(ToolFailed, match="no chunk boundary in 1..2 can start a shard"):
        plan_shards(10 * 512 + 10, 512, 49152, None, disk_budget_gib=logits_file_size(512, 49152, 2) / GIB,
                    can_start=lambda c: c in (0, 10))


def test_a_budget_below_two_chunks_names_the_key_and_the_least_that_works():
    with pytest.raises(ConfigError, match=r"kld.sharded.disk_budget_gib = 0.01 .* at least 0.047 GiB"):
        plan_shards(91872, 512, 49152, None, disk_budget_gib=0.01)
    with pytest.raises(ToolFailed, match="1 chunk"):
        plan_shards(700, 512, 49152, None, disk_budget_gib=1.0)
