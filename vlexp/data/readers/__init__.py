"""Readers of training pairs: CSV/parquet tables, tar-shard streams, in-memory lists."""
