"""A run's trained weights: kept at the end of every run, and loaded back with the config that built them.

    <run dir>/final_weights.pt   (checkpoint.final_weights=true, the default)
        torch.save of {"format": "speedrun-weights", "version": 1, "step": N, "model": state_dict}

Weights only, in the dtypes they were trained in (fp32 master weights: 4 bytes per parameter, about
0.5 GB for GPT-2 124M), with no optimizer or data state: enough to sample or evaluate, not to resume
(a resumable one is `checkpoint.final=true`, three times the size). Written atomically
(harness/atomic_io): a crash or a full disk leaves no file or the previous one, never a torn one, and a
failed write is a warning, not a failed run (the metrics are already complete).

`load_trained(path)` takes what a user has at hand: a run folder (its final_weights.pt, else its newest
checkpoint), a checkpoint folder (`checkpoints/step_NNNNNN`, verified against its manifest) or a folder
of checkpoints. The model is rebuilt from the run's config.yaml, or for a checkpoint from the config it
records (trainer.pt), so checkpoints written to another `checkpoint.dir` load too.
"""
from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from common.atomic_io import atomic_open
from common.paths import REPO
from common.tokens import EOT_TOKEN, VOCAB_SIZE
from data.tokenizer import gpt2_encoding, recorded_bpe
from harness.checkpoint.store import MANIFEST, CheckpointError, latest, load_file, read_manifest, verify
from model.config import AttnImpl, ModelConfig
from model.gpt import GPT

WEIGHTS_FILE = "final_weights.pt"
FORMAT, VERSION = "speedrun-weights", 1
EXPECTED = ("pass a run folder (outputs/runs/...), a checkpoint folder (.../checkpoints/step_NNNNNN) "
            f"or a {WEIGHTS_FILE}")


class WeightsError(ValueError):
    """Trained weights cannot be found or used; the message names the path and what to pass instead."""


def save_final_weights(run_dir: Path, model: torch.nn.Module, step: int) -> Path | None:
    """Write `model`'s state_dict (the raw module) to run_dir/final_weights.pt; None (and one warning
    line) if the disk refuses it."""
    path = Path(run_dir) / WEIGHTS_FILE
    try:
        with atomic_open(path, "wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, "step": int(step), "model": model.state_dict()}, f)
    except OSError as e:
        print(f"warning: final weights not written to {path} ({e.strerror or e}); the run's metrics are complete. "
              "Fix: free disk space, or checkpoint.final_weights=false", file=sys.stderr, flush=True)
        return None
    print(f"final weights: {path} ({path.stat().st_size / 2**20:.1f} MiB)", flush=True)
    return path


@dataclass
class Trained:
    """A trained model ready for inference (eval mode) and what is needed to feed it text."""
    model: GPT
    step: int              # optimizer steps it was trained for
    source: str            # the file its weights came from
    tokenizer_bpe: str     # the run's data.tokenizer_bpe ("" = the default sources, data/tokenizer.py)
    synthetic: bool        # trained on synthetic token ids (no text tokenizer applies)
    bos_token: int         # the token every training document started with (<|endoftext|> for text)
    data_dir: str = ""     # the run's data.dir (its tokenizer.json names the BPE file that made the shards)

    @property
    def reads_text(self) -> bool:
        """True for a GPT-2-vocabulary model trained on text (FineWeb), False for synthetic token ids."""
        return not self.synthetic and self.model.cfg.vocab_size >= VOCAB_SIZE

    def encoding(self, bpe: str | None = None):
        """The GPT-2 tokenizer as the data package loads it offline (data/tokenizer.py): `bpe`, else the
        run's data.tokenizer_bpe when that file is here, else the BPE file recorded beside the run's shards
        (data.dir/tokenizer.json, written by data.prep.tokenize), else the default sources. Raises TokenizerError."""
        if not self.reads_text:
            raise WeightsError(f"{self.source} was trained on synthetic token ids (vocab {self.model.cfg.vocab_size}), "
                               "not GPT-2 text: use a model trained on FineWeb (e.g. experiment=cpu_fineweb)")
        if not bpe and self.tokenizer_bpe and Path(self.tokenizer_bpe).expanduser().exists():
            bpe = self.tokenizer_bpe
        if not bpe and self.data_dir:
            folder = Path(self.data_dir).expanduser()  # relative: to where train.py ran, the repository root
            bpe = recorded_bpe(folder if folder.is_absolute() or folder.is_dir() else REPO / folder)
        return gpt2_encoding(bpe or None)


def model_config(section: dict) -> ModelConfig:
    """ModelConfig from a run's `model` section (yaml or a checkpoint's flat model.* keys)."""
    try:
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), section))
    except OmegaConfBaseException as e:
        raise WeightsError(f"the run's model config does not fit this code's ModelConfig "
                           f"({' '.join(str(e).split())[:200]}); use the code version that trained it") from None
    cfg.attn_impl = AttnImpl.sdpa  # inference: the same mask predicate, exact on any device and length
    return cfg


def _from_run(run_dir: Path, weights: Path) -> dict:
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise WeightsError(f"{weights} has no config.yaml beside it to rebuild the model; {EXPECTED}")
    cfg = OmegaConf.load(config)
    blob = load_file(weights, "final weights")
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or blob.get("version") != VERSION:
        raise WeightsError(f"{weights} is not a speedrun weights file (format {FORMAT!r} version {VERSION}); {EXPECTED}")
    data = cfg.get("data") or {}
    synthetic = data.get("synthetic")
    return {"section": OmegaConf.to_container(cfg.model, resolve=True), "state": blob["model"],
            "step": int(blob["step"]), "max_steps": int(cfg.train.max_steps),
            "bpe": str(data.get("tokenizer_bpe") or ""), "data_dir": str(data.get("dir") or ""),
            "synthetic": synthetic is not None,
            "bos": int(synthetic.get("bos_token", EOT_TOKEN)) if synthetic is not None else EOT_TOKEN}


def _from_checkpoint(path: Path) -> dict:
    verify(path, read_manifest(path))
    trainer = load_file(path / "trainer.pt", "trainer state")
    try:
        flat, run = json.loads(trainer["config"]), json.loads(trainer["run_config"])
        step, max_steps = int(trainer["step"]), int(run["train.max_steps"])
    except (TypeError, KeyError, ValueError):
        raise WeightsError(f"checkpoint {path}: trainer.pt does not hold this trainer's configs") from None
    section = _unflatten({k[len("model."):]: v for k, v in flat.items() if k.startswith("model.")})
    synthetic = run.get("data.synthetic") is not None or any(k.startswith("data.synthetic.") for k in run)
    return {"section": section, "state": load_file(path / "model.pt", "model state"), "step": step,
            "max_steps": max_steps, "bpe": str(run.get("data.tokenizer_bpe") or ""),
            "data_dir": str(run.get("data.dir") or ""), "synthetic": synthetic,
            "bos": int(run.get("data.synthetic.bos_token", EOT_TOKEN)) if synthetic else EOT_TOKEN}


def _unflatten(flat: dict) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def locate(path: str | Path) -> tuple[str, Path]:
    """("run", final_weights.pt) or ("checkpoint", step folder) for what the user passed."""
    path = Path(path).expanduser()
    if not path.exists():
        raise WeightsError(f"{path}: no such file or folder; {EXPECTED}")
    if path.is_file():  # final_weights.pt, or a file of a checkpoint folder (model.pt, manifest.json)
        return ("checkpoint", path.parent) if (path.parent / MANIFEST).is_file() else ("run", path)
    if (path / MANIFEST).is_file():
        return "checkpoint", path
    if (path / WEIGHTS_FILE).is_file():
        return "run", path / WEIGHTS_FILE
    for folder in (path, path / "checkpoints"):
        if (found := latest(folder)) is not None:
            return "checkpoint", found
    raise WeightsError(f"{path} holds no {WEIGHTS_FILE} and no complete checkpoint (the run was started with "
                       f"checkpoint.final_weights=false, or has not finished); {EXPECTED}")


def inference_device(name: str = "auto") -> torch.device:
    """auto: CUDA when available, else CPU; cpu / cuda / cuda:N as given (CUDA must exist)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise WeightsError(f"--device {name} but no CUDA device is available: use --device cpu (or auto)")
    return device


def autocast_for(device: torch.device):
    """The precision the trainer uses by default: bf16 autocast on CUDA, fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> Trained:
    """The model trained in `path` (see the module docstring), in eval mode on `device`, with the
    sliding window it had at its last step."""
    kind, where = locate(path)
    try:
        parts = _from_checkpoint(where) if kind == "checkpoint" else _from_run(where.parent, where)
    except CheckpointError as e:
        raise WeightsError(str(e)) from None
    model = GPT(model_config(parts["section"]))
    try:
        model.load_state_dict(parts["state"])
    except RuntimeError as e:
        raise WeightsError(f"{where}: the weights do not fit the model its config describes: "
                           f"{' '.join(str(e).split())[:300]}") from None
    model.set_train_progress(parts["step"], parts["max_steps"])
    model.to(device).eval()
    source = where / "model.pt" if kind == "checkpoint" else where
    return Trained(model, parts["step"], str(source), parts["bpe"], parts["synthetic"], parts["bos"], parts["data_dir"])
