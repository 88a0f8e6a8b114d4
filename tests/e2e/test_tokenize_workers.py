"""python -m data.prep.tokenize with its worker processes: byte-identical speedrun shards, sharding rule, safe
output, the CLI."""
from __future__ import annotations

import numpy as np
import pytest

from common.tokens import EOT_TOKEN
from data.prep.sources import SourceError
from data.prep.tokenize import main, tokenize_corpus
from data.shards import open_shard
from data.tokenizer import encoding_from_ranks, load_ranks
from tests.support.data_helpers import FINEWEB_SAMPLE, SHARED_BPE
from tests.unit.data import test_tokenize as unit
from tests.unit.data.test_tokenize import sha256

bpe, corpus = unit.bpe, unit.corpus  # the unit tests' fixtures


@pytest.mark.e2e  # the tokenizer's worker processes
@pytest.mark.skipif(not (FINEWEB_SAMPLE / "tokens").is_dir() or not SHARED_BPE.is_file(),
                    reason="../shared/corpora/fineweb-sample or ../shared/tokenizer is absent")
def test_reproduces_the_fineweb_sample_shards_byte_for_byte(tmp_path):
    out = tmp_path / "tokens"
    summary = tokenize_corpus(str(FINEWEB_SAMPLE / "docs.jsonl"), out, 250, 2_000_000, bpe=str(SHARED_BPE),
                              workers=2, progress=False)
    expected = sorted(p.name for p in (FINEWEB_SAMPLE / "tokens").glob("*.bin"))
    assert sorted(p.name for p in out.glob("*.bin")) == expected
    for name in expected:
        assert sha256(out / name) == sha256(FINEWEB_SAMPLE / "tokens" / name), name
    assert summary["docs"] == 2800 and summary["tokens"] == 405_727 + 3_959_053


@pytest.mark.e2e  # the tokenizer's worker processes
def test_sharding_rule_and_worker_independence(corpus, bpe, tmp_path):
    path, docs = corpus
    outs = []
    for workers in (1, 3):
        out = tmp_path / f"w{workers}"
        tokenize_corpus(str(path), out, 17, 5000, bpe=bpe, workers=workers, progress=False)
        outs.append({p.name: p.read_bytes() for p in out.iterdir()})
    assert outs[0] == outs[1]
    enc = encoding_from_ranks(load_ranks(bpe))
    encoded = [[EOT_TOKEN, *enc.encode_ordinary(d)] for d in docs]
    out = tmp_path / "w1"
    val = np.asarray(open_shard(out / "fineweb_val_000000.bin"))
    assert val.tolist() == [t for doc in encoded[:17] for t in doc]  # the first N docs, whole
    train = sorted(out.glob("fineweb_train_*.bin"))
    sizes = [len(open_shard(p)) for p in train]
    assert all(s == 5000 for s in sizes[:-1]) and 0 < sizes[-1] <= 5000  # fixed size, remainder last
    stream = np.concatenate([open_shard(p) for p in train]).tolist()
    assert stream == [t for doc in encoded[17:] for t in doc]  # documents straddle shard boundaries
    assert stream.count(EOT_TOKEN) == len(docs) - 17  # "<|endoftext|>" inside text is not special


@pytest.mark.e2e  # the tokenizer's worker processes
def test_an_error_leaves_the_output_folder_untouched(corpus, bpe, tmp_path):
    path, _ = corpus
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines.insert(250, "{broken json\n")
    path.write_text("".join(lines), encoding="utf-8")
    out = tmp_path / "out"
    with pytest.raises(SourceError, match=r"docs.jsonl:251 is not valid JSON"):
        tokenize_corpus(str(path), out, 10, 1000, bpe=bpe, workers=2, progress=False)
    assert not out.exists()  # shards already finished were staged, then discarded; the folder it made too


@pytest.mark.e2e  # the tokenizer's worker processes
def test_cli_reports_one_line(corpus, bpe, tmp_path, capsys):
    path, _ = corpus
    assert main([str(path), "--out", str(tmp_path / "o"), "--val-docs", "5", "--shard-tokens", "4000",
                 "--bpe", bpe, "--workers", "2", "--no-progress"]) == 0
    assert "300 docs" in capsys.readouterr().out
    assert main([str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "p"), "--val-docs", "5",
                 "--bpe", bpe]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: source") and "does not exist" in err
