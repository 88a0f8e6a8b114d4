"""The pieces of tools/gpu_checks.sh that run on CPU: repeat_shards.py, mfu.py, and the script's syntax."""
import json
import subprocess

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from data.shards import find_shards, open_shard, write_shard
from tests.conftest import REPO


def test_repeat_shards_tiles_the_train_stream_and_links_val(tmp_path):
    from tools.repeat_shards import repeat_shards
    src = tmp_path / "src"
    write_shard(src / "fineweb_train_000001.bin", np.arange(100))
    write_shard(src / "fineweb_train_000002.bin", np.arange(100, 150))
    write_shard(src / "fineweb_val_000000.bin", np.arange(7))
    out = tmp_path / "out"
    repeat_shards(src, out, train_tokens=400, shard_tokens=120)
    shards = find_shards(out, "fineweb_train_*.bin")
    assert [len(open_shard(f)) for f in shards] == [120, 120, 120, 40]
    stream = np.concatenate([np.asarray(open_shard(f)) for f in shards])
    np.testing.assert_array_equal(stream, np.tile(np.arange(150), 3)[:400])
    assert (out / "fineweb_val_000000.bin").is_symlink()
    repeat_shards(src, out, train_tokens=100, shard_tokens=120)  # a smaller call replaces, never mixes
    assert [len(open_shard(f)) for f in find_shards(out, "fineweb_train_*.bin")] == [100]


def test_mfu_counts_matmul_flops_and_steady_throughput(tmp_path, capsys):
    from analysis.mfu import flops_per_token, main
    from harness.config.schema import register_configs
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=["model=gpt2_124m", "optim=adamw"])
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    mm, attn, shape = flops_per_token(tmp_path)
    assert shape["n_matmul"] == 12 * 12 * 768**2 + 50257 * 768  # blocks' weights + the tied head; no biases
    assert mm == 6 * shape["n_matmul"] and attn == 12 * 12 * 768 * 1024 / 2
    events = [{"event": "run", "hardware": {"gpu": "NVIDIA H200"}}]
    events += [{"event": "train", "step": s, "tokens": s * 524288, "train_time_ms": 1000.0 * s} for s in range(1, 21)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(e) for e in events))
    assert main([str(tmp_path)]) == 0
    row = capsys.readouterr().out.splitlines()[-1]
    tflops = (mm + attn) * 524288 / 1e12
    assert f"| 524,288 | 123.5M | {tflops:.3g} | 989 (NVIDIA H200) | {tflops / 989.4:.1%}" in row


def test_gpu_checks_script_parses():
    assert subprocess.run(["bash", "-n", str(REPO / "tools" / "gpu_checks.sh")]).returncode == 0
    assert subprocess.run(["bash", "-n", str(REPO / "tools" / "gpu_carry.sh")]).returncode == 0
