"""A run over many shards: selection, concurrency, per-shard locks, results."""
