"""Token data: the speedrun's shard format, loaders, tokenization and download."""
