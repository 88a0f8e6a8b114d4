"""Token data for training: the speedrun's shard format, loaders (contiguous, BOS-aligned, replayed),
prefetch, synthetic shards and the GPT-2 tokenizer. Making shards (tokenize a corpus, download FineWeb)
is data/prep/. The old commands `python -m data.tokenize` / `data.fineweb` name their new ones."""
from common.moved import install

install({
    "data.tokenize": "python -m data.prep.tokenize",
    "data.fineweb": "python -m data.prep.fineweb",
    "data.sources": "python -m data.prep.tokenize (sources: data/prep/sources.py)",
    "data.hub_download": "python -m data.prep.fineweb (downloads: data/prep/hub_download.py)",
    "data.hellaswag": "python -m evals.hellaswag",
})
