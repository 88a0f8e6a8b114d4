"""Read back an offline wandb run (`run-*.wandb`) so tests check what wandb would upload, not just a folder.

The file is wandb's record log: a 7-byte header (":W&B", magic, version), then LevelDB-log style
32 KiB blocks of chunks (crc32 u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last), each
record a serialized wandb_internal_pb2.Record.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK, CHUNK_HEADER = 32 * 1024, 7


def _chunks(data: bytes):
    assert data[:4] == b":W&B", "not a wandb run file"
    pos, pending = 7, b""
    while pos + CHUNK_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK_HEADER:  # block trailer padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + CHUNK_HEADER])
        if kind == 0 and length == 0:
            pos += left
            continue
        body = data[pos + CHUNK_HEADER:pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind == 1:
            yield body
        elif kind == 2:
            pending = body
        elif kind == 3:
            pending += body
        elif kind == 4:
            yield pending + body


def _key(item) -> str:
    return ".".join(item.nested_key) if item.nested_key else item.key


def read_offline_run(path: Path) -> dict:
    """{"run": {id, project, group, name, tags}, "config": {...}, "metrics": {name: step_metric},
    "history": [rows], "summary": {...}} of one `run-*.wandb` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    out = {"run": {}, "config": {}, "metrics": {}, "history": [], "summary": {}}
    for raw in _chunks(Path(path).read_bytes()):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out["run"] = {"id": run.run_id, "project": run.project, "group": run.run_group,
                          "name": run.display_name, "tags": list(run.tags)}
            out["config"].update({u.key: json.loads(u.value_json) for u in run.config.update})
        elif kind == "config":
            out["config"].update({_key(u): json.loads(u.value_json) for u in record.config.update})
        elif kind == "metric":
            out["metrics"][record.metric.name] = record.metric.step_metric
        elif kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            out["summary"].update({_key(u): json.loads(u.value_json) for u in record.summary.update})
    return out


def offline_runs(root: Path) -> list[Path]:
    """Every offline run file under `root`."""
    return sorted(Path(root).rglob("offline-run-*/run-*.wandb"))


def isolated_wandb_env(tmp_path: Path, monkeypatch) -> dict:
    """Environment for a train.py subprocess: no WANDB_* settings of the developer (API key, mode,
    base URL) leak in, and wandb keeps its settings, caches and artifacts under tmp_path."""
    import os

    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    home = tmp_path / "wandb-home"
    return {"WANDB_DIR": str(home), "WANDB_CONFIG_DIR": str(home / "config"), "WANDB_CACHE_DIR": str(home / "cache"),
            "WANDB_DATA_DIR": str(home / "data"), "WANDB_ARTIFACT_DIR": str(home / "artifacts"),
            "OMP_NUM_THREADS": "1"}
