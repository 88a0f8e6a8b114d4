"""Run the trainer inside the test process (no interpreter start-up): compose a config as train.py's
Hydra app would, then call train.train. Single rank, CPU."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from harness.config.compose import compose_config  # noqa: F401 (tests import it from here)
from harness.process import distributed as D

SMOKE = ["experiment=smoke", "train.precision=fp32", "train.log_every=1", "train.val_tokens=8192"]
# Wall-clock and memory figures differ between any two runs; everything else must match exactly.
TIMING = ("train_time_ms", "step_avg_ms", "tokens_per_s", "target_val_loss_train_time_ms", "peak_host_memory_mib",
          "peak_memory_mib")


def run(run_dir: Path, *overrides: str, stop=None) -> dict:
    """train() on one CPU rank with the smoke experiment + overrides; returns the summary."""
    import train  # noqa: E402  (train.py at the repo root; imported late so collection stays cheap)

    cfg = compose_config(*SMOKE, *overrides)
    run_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocess tests; on shared cores more threads only spin against each other
    try:
        return train.train(cfg, D.RankInfo(0, 0, 1, torch.device("cpu")), run_dir, stop)
    finally:
        torch.set_num_threads(threads)


def user_error(run_dir: Path, *overrides: str) -> str:
    """The message train.py prints on its one `error:` line (exit 2) for `overrides` (no smoke defaults added),
    found in-process: train() raises one of harness.supervisor.USER_ERRORS. (That such an error exits 2 in one line
    through the command line: test_bad_input_leaves_runs_intact.py, the corrupt-checkpoint case)."""
    import pytest

    import train
    from harness.supervisor import USER_ERRORS

    with pytest.raises(USER_ERRORS) as err:
        train.train(compose_config(*overrides), D.RankInfo(0, 0, 1, torch.device("cpu")), Path(run_dir))
    assert "\n" not in str(err.value)
    return str(err.value)


def events(run_dir: Path) -> list[dict]:
    """metrics.jsonl events without the wall-clock fields (which differ between any two runs)."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def tree_hashes(*roots: Path) -> dict[str, str]:
    """sha256 of every file under `roots` (checkpoints, metrics): detects any change."""
    out = {}
    for root in roots:
        for p in sorted(Path(root).rglob("*")):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def checkpoint_steps(root: Path) -> list[int]:
    from harness.checkpoint.store import list_checkpoints

    return [s for s, _ in list_checkpoints(Path(root))]
