"""Patch features: extraction to Parquet shards (Sec. 3.1) and the shard contract."""
