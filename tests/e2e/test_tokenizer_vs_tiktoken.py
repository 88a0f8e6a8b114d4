"""The offline GPT-2 tokenizer against tiktoken at full size: OpenAI-format conversion of the 50k vocabulary,
equality with tiktoken's gpt2 on real text."""
from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks, load_tiktoken_bpe

from data import tokenizer as tk
from tests.support.data_helpers import FINEWEB_SAMPLE, SHARED, SHARED_BPE, write_openai_files
from tests.unit.data import test_tokenizer as unit

ranks, no_tokenizer_env = unit.ranks, unit.no_tokenizer_env  # the unit tests' fixtures (the second autouse)
needs_shared = pytest.mark.skipif(not SHARED_BPE.is_file(), reason="../shared/tokenizer/gpt2.tiktoken is absent")
TRICKY = ["Hello world", "  leading spaces\n\n\ttabs   and  runs  ", "it's we'll they've I'M", "naïve café 東京 🙂",
          "text with <|endoftext|> inside", "1234567 3.14159 -42", "\x00\x01 control \u00ad soft hyphen", ""]


@pytest.mark.e2e  # integration: tiktoken's converter on the full 50k vocabulary
def test_encoder_json_conversion_matches_tiktokens_own(ranks, tmp_path):
    enc_json, vocab_bpe = write_openai_files(ranks, tmp_path / "openai")
    ours = tk.load_ranks(enc_json)
    theirs = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(vocab_bpe), encoder_json_file=str(enc_json))
    assert ours == theirs == ranks
    assert tk.ranks_fingerprint(ours) == tk.ranks_fingerprint(ranks)
    assert tk.load_ranks(tmp_path / "openai") == ranks  # a folder works too


@pytest.mark.e2e  # integration: tiktoken on real text
@needs_shared
def test_equals_tiktoken_gpt2_on_real_text(tmp_path, monkeypatch):
    """Reference: tiktoken's own r50k_base (GPT-2's ranks, pattern, <|endoftext|>; hash-checked by tiktoken).

    tiktoken's gpt2 and r50k_base are the same BPE; r50k_base's published file is
    byte-identical to ../shared/tokenizer/gpt2.tiktoken, so tiktoken loads it from its
    cache with no network.
    """
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    url = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
    shutil.copy(SHARED_BPE, cache / hashlib.sha1(url.encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    reference = tiktoken.get_encoding("r50k_base")
    assert reference.n_vocab == 50257 and reference.eot_token == tk.EOT_TOKEN
    enc_json, _ = write_openai_files(load_tiktoken_bpe(str(SHARED_BPE)), tmp_path / "openai")
    ours = [tk.gpt2_encoding(SHARED_BPE), tk.gpt2_encoding(enc_json)]
    shakespeare = (SHARED / "corpora" / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    docs = [json.loads(line)["text"] for line in open(FINEWEB_SAMPLE / "docs.jsonl", encoding="utf-8")][::20]
    expected = [reference.encode_ordinary(t) for t in [shakespeare, *docs, *TRICKY]]
    assert len(expected[0]) == 338_025
    for enc in ours:
        assert enc.encode_ordinary_batch([shakespeare, *docs, *TRICKY]) == expected
        assert enc.decode(expected[0]) == shakespeare
        assert enc.encode("<|endoftext|>", allowed_special="all") == [50256]
    assert tk.ranks_fingerprint(tk.load_ranks(SHARED_BPE)) == tk.GPT2_RANKS_SHA256
