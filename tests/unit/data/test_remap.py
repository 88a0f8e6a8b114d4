"""data.prep.remap: the top-K vocabulary remap of a shard folder, its mapping file, its refusals, its staged
output, and the trainer's refusal of a model vocabulary other than the remapped one (data/vocab_remap.py)."""
from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest

from data.build import build_train_loader
from data.config import DataConfig, LoaderMode
from data.prep import remap as R
from data.shards import open_shard, write_shard
from data.vocab_remap import REMAP_FILE, check_model_vocab, read_remap

TRAIN = [5, 5, 5, 7, 7, 9, 9, 3, 1, 50256, 50256, 50256, 50256]  # 50256: 4, 5: 3, 7 and 9: 2 (a tie), 1 and 3: 1
VAL = [50256, 9, 7, 5, 42, 3]                                       # 42 never occurs in train


def make_src(root, train=TRAIN, val=VAL, split=2):
    """A source folder: val in one shard, train split over two."""
    root.mkdir(parents=True, exist_ok=True)
    write_shard(root / "fineweb_val_000000.bin", np.array(val))
    write_shard(root / "fineweb_train_000001.bin", np.array(train[:split]))
    write_shard(root / "fineweb_train_000002.bin", np.array(train[split:]))
    return root


def tokens(path):
    return open_shard(path).tolist()


def test_keeps_the_most_frequent_in_order_ties_by_id_the_rest_to_the_catch_all(tmp_path):
    src, out = make_src(tmp_path / "src"), tmp_path / "out"
    rec = R.remap_shards(src, out, top_k=3, progress=False)
    assert rec["kept_ids"] == [50256, 5, 7]                     # 7 beats 9 (same count) by its smaller id
    new = {50256: 0, 5: 1, 7: 2}
    assert tokens(out / "fineweb_train_000001.bin") == [1, 1]
    assert tokens(out / "fineweb_train_000002.bin") == [new.get(t, 3) for t in TRAIN[2:]]
    assert tokens(out / "fineweb_val_000000.bin") == [0, 3, 2, 1, 3, 3]  # val ids unseen in train: catch-all
    assert (rec["catch_all"], rec["vocab_size"], rec["bos_token"]) == (3, 4, 0)
    assert rec["catch_all_fraction"] == pytest.approx(4 / 13) and rec["catch_all_fraction_val"] == pytest.approx(3 / 6)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in src.iterdir()) + [REMAP_FILE]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_mapping_file_records_the_source_and_reads_back(tmp_path):
    src, out = make_src(tmp_path / "src"), tmp_path / "out"
    R.remap_shards(src, out, top_k=2, progress=False)
    raw = json.loads((out / REMAP_FILE).read_text())
    assert raw["source"] == str(src.resolve()) and raw["top_k"] == 2 and raw["source_vocab"] == 50257
    assert raw["train_tokens"] == len(TRAIN) and raw["val_tokens"] == len(VAL)
    assert raw["source_shards"] == {p.name: {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
                                             "tokens": len(open_shard(p))} for p in sorted(src.iterdir())}
    info = read_remap(out)
    assert (info.vocab_size, info.catch_all, info.bos_token, info.kept_ids) == (3, 2, 0, (50256, 5))
    assert read_remap(src) is None  # source shards carry no record


def test_select_top_k_is_deterministic_among_equal_counts():
    counts = np.array([0, 2, 5, 2, 0, 5])
    assert R.select_top_k(counts, 6).tolist() == [2, 5, 1, 3, 0, 4]


def test_bytes_do_not_depend_on_the_chunk_size(tmp_path):
    rng = np.random.default_rng(0)
    src = make_src(tmp_path / "src", train=rng.zipf(1.3, 5000) % 50257, val=rng.integers(0, 50257, 700), split=2345)
    outs = [tmp_path / f"out{c}" for c in (1, 7, 1 << 20)]
    for c in (1, 7, 1 << 20):
        R.remap_shards(src, tmp_path / f"out{c}", top_k=100, progress=False, chunk_tokens=c)
    for name in [p.name for p in outs[0].iterdir()]:
        assert len({(o / name).read_bytes() for o in outs}) == 1, name


def test_a_remapped_folder_remaps_again_within_its_own_vocabulary(tmp_path):
    first = tmp_path / "k3"
    R.remap_shards(make_src(tmp_path / "src"), first, top_k=3, progress=False)
    rec = R.remap_shards(first, tmp_path / "k1", top_k=1, progress=False)
    assert (rec["source_vocab"], rec["kept_ids"], rec["bos_token"]) == (4, [0], 0)
    with pytest.raises(R.RemapError, match=r"--top-k 4 must be in \[1, 3\]"):
        R.remap_shards(first, tmp_path / "k4", top_k=4, progress=False)


def _bad_shard(src):
    (src / "fineweb_train_000002.bin").write_bytes((src / "fineweb_train_000002.bin").read_bytes()[:-2])


@pytest.mark.parametrize("setup,args,message", [
    (lambda s: [p.unlink() for p in s.glob("*train*")], [], "no shards matching fineweb_train_"),
    (lambda s: [p.unlink() for p in s.glob("*val*")], [], "no shards matching fineweb_val_"),
    (None, ["--top-k", "0"], r"--top-k 0 must be in \[1, 50256\]"),
    (None, ["--top-k", "50257"], r"--top-k 50257 must be in \[1, 50256\]"),
    (lambda s: (s.parent / "out").mkdir() or (s.parent / "out" / "x").write_text("keep"), [], "pass --overwrite"),
    (_bad_shard, [], "fineweb_train_000002.bin is .* header promises"),
    (lambda s: write_shard(s / "fineweb_train_000002.bin", np.array([1, 60000])), [],
     "fineweb_train_000002.bin holds token id 60000 >= the source vocabulary 50257"),
    (lambda s: write_shard(s / "fineweb_val_000000.bin", np.array([60000])), [],
     "fineweb_val_000000.bin holds token id 60000"),
])
def test_refusals_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, setup, args, message):
    src = make_src(tmp_path / "src")
    if setup:
        setup(src)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    argv = [str(src), "--out", str(tmp_path / "out"), "--no-progress", *(args or ["--top-k", "2"])]
    assert R.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert re.search(message, err[0]), err[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written, no staging left


def test_the_source_folder_is_never_the_output(tmp_path):
    src = make_src(tmp_path / "src")
    with pytest.raises(R.RemapError, match="is the source folder"):
        R.remap_shards(src, src, top_k=2, overwrite=True, progress=False)


def test_output_is_staged_an_existing_one_survives_a_failure_and_overwrite_replaces_it(tmp_path, monkeypatch):
    src, out = make_src(tmp_path / "src"), tmp_path / "out"
    R.remap_shards(src, out, top_k=2, progress=False)
    old = {p.name: p.read_bytes() for p in out.iterdir()}

    def fail(stage, target):
        assert sorted(p.name for p in stage.iterdir()) == sorted(old)  # everything written before the swap
        raise OSError("disk full")
    monkeypatch.setattr(R, "_replace", fail)
    with pytest.raises(OSError, match="disk full"):
        R.remap_shards(src, out, top_k=3, overwrite=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old
    monkeypatch.undo()
    R.remap_shards(src, out, top_k=3, overwrite=True, progress=False)
    assert read_remap(out).vocab_size == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no staging or old folder left


def test_trainer_refuses_another_vocabulary_on_remapped_shards_naming_it(tmp_path):
    rng = np.random.default_rng(1)
    src = make_src(tmp_path / "src", train=rng.integers(0, 50257, 20000), val=[50256] * 64 + list(range(64)))
    out = tmp_path / "k8191"
    R.remap_shards(src, out, top_k=8191, progress=False)
    with pytest.raises(ValueError, match=r"remapped to a vocabulary of 8192 ids .* model.vocab_size is 50257: "
                                         r"set model.vocab_size=8192") as err:
        build_train_loader(DataConfig(dir=str(out), vocab_check=50257), seq_len=8, micro_batch_seqs=1, rank=0, world=1)
    assert "\n" not in str(err.value)
    assert check_model_vocab(out, 8192).vocab_size == 8192 and check_model_vocab(out, 0) is not None  # 0 = check off
    assert check_model_vocab(src, 50257) is None
    build_train_loader(DataConfig(dir=str(out), vocab_check=8192), seq_len=8, micro_batch_seqs=1, rank=0, world=1)


def test_bos_mode_takes_the_remapped_separator_and_refuses_a_lost_one(tmp_path):
    src = make_src(tmp_path / "src", train=[50256, 1, 1, 1, 2, 50256, 1, 1, 3] * 6)
    R.remap_shards(src, tmp_path / "k2", top_k=2, progress=False)   # 1 -> 0, 50256 -> 1
    loader = build_train_loader(DataConfig(dir=str(tmp_path / "k2"), vocab_check=3, mode=LoaderMode.bos),
                                seq_len=4, micro_batch_seqs=1, rank=0, world=1)
    assert loader.bos == 1
    x, _ = loader.next_batch()
    assert x[0, 0].item() == 1  # a row starts at a document start
    R.remap_shards(src, tmp_path / "k1", top_k=1, progress=False)   # 50256 -> the catch-all
    with pytest.raises(ValueError, match=r"sent <\|endoftext\|> to the catch-all id 1: use data.mode=contiguous"):
        build_train_loader(DataConfig(dir=str(tmp_path / "k1"), vocab_check=2, mode=LoaderMode.bos),
                           seq_len=4, micro_batch_seqs=1, rank=0, world=1)


def test_a_corrupt_mapping_file_is_named(tmp_path):
    out = tmp_path / "out"
    R.remap_shards(make_src(tmp_path / "src"), out, top_k=2, progress=False)
    (out / REMAP_FILE).write_text("{}")
    with pytest.raises(ValueError, match=f"{out / REMAP_FILE} is not a readable vocabulary remap record"):
        read_remap(out)


def test_synthetic_data_is_never_generated_into_a_remapped_folder(tmp_path):
    from data.build import prepare_data
    from data.config import SyntheticConfig

    out = tmp_path / "out"
    R.remap_shards(make_src(tmp_path / "src"), out, top_k=2, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError, match="holds remapped FineWeb shards, not synthetic ones"):
        prepare_data(DataConfig(dir=str(out), synthetic=SyntheticConfig()))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
