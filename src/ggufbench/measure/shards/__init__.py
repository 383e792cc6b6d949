"""Sharded KLD (kld.mode: sharded): shard texts, the shard plan, statistics combined over shards, scratch disk."""
