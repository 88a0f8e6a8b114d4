"""GPT-2's token constants, the one definition every package uses (data shards, model, tokenizer, evals)."""

EOT_TOKEN = 50256   # <|endoftext|>: the document separator, prefixed to every document in the shards (the BOS)
VOCAB_SIZE = 50257  # 50256 BPE ranks + <|endoftext|>
