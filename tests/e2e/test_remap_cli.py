"""python -m data.prep.remap as a user runs it: the proxy's data made from the FineWeb sample, and a refusal."""
from __future__ import annotations

import json

import pytest

from data.shards import open_shard
from tests.conftest import FINEWEB_TOKENS, error_lines, needs_fineweb, run_script


@pytest.mark.e2e
@needs_fineweb
def test_makes_the_track3_proxy_data_from_the_fineweb_sample(tmp_path):
    """The command in configs/experiment/track3_proxy_cpu.yaml: vocab 8192, 11.9% of train in the catch-all."""
    out = tmp_path / "fineweb-sample-top8191"
    proc = run_script("data.prep.remap", str(FINEWEB_TOKENS), "--top-k", "8191", "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert f"train with data.dir={out} model.vocab_size=8192" in proc.stdout
    rec = json.loads((out / "vocab_remap.json").read_text())
    assert (rec["vocab_size"], rec["catch_all"], rec["bos_token"], rec["train_tokens"]) == (8192, 8191, 128, 3_959_053)
    assert round(rec["catch_all_fraction"], 3) == 0.119
    for src in FINEWEB_TOKENS.glob("*.bin"):
        remapped = open_shard(out / src.name)
        assert len(remapped) == len(open_shard(src)) and int(remapped.max()) == 8191

    again = run_script("data.prep.remap", str(FINEWEB_TOKENS), "--top-k", "8191", "--out", str(out), "--no-progress")
    refusal = f"error: {out} already exists and is not empty: pass --overwrite to replace it, or another --out"
    assert again.returncode == 2 and error_lines(again) == [refusal]
