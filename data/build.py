"""The trainer's only entry point into data: build the train stream and the validation set."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch

from data.bos import BOSAlignedLoader
from data.config import DataConfig, LoaderMode, ShardTail
from data.loader import ContiguousLoader, resolve_shards, validation_batches
from data.replay import ReplayLoader
from data.shards import ShardError
from data.synthetic import ensure_synthetic_shards
from data.varlen import VarlenLoader, VarlenValidation
from data.vocab_remap import check_model_vocab, read_remap


def prepare_data(cfg: DataConfig) -> None:
    """Create synthetic shards if configured (call on one process per node, then barrier)."""
    if cfg.synthetic is not None:
        if not cfg.dir:
            raise ValueError("data.dir must name the folder to generate synthetic shards into")
        if read_remap(cfg.dir) is not None:  # e.g. experiment=track3_proxy_cpu data=synthetic: its data.dir is kept
            raise ShardError(f"data.dir={cfg.dir} holds remapped FineWeb shards, not synthetic ones: give "
                             "data=synthetic its own folder (data.dir=outputs/data/synthetic)")
        ensure_synthetic_shards(cfg.dir, cfg.synthetic)


def _document_token(cfg: DataConfig, remap) -> int:
    """The token that starts every document: the config's, or <|endoftext|>'s id in remapped shards."""
    bos = cfg.bos_token if remap is None else remap.bos_token
    if remap is not None and bos == remap.catch_all:
        raise ShardError(f"data.mode={cfg.mode.value} needs a document separator, but {remap.path} sent <|endoftext|> "
                         f"to the catch-all id {bos}: use data.mode=contiguous, or remap with a larger --top-k")
    return bos


def build_train_loader(cfg: DataConfig, seq_len: int, micro_batch_seqs: int, rank: int,
                       world: int, step_tokens: int = 0) -> ContiguousLoader | BOSAlignedLoader | VarlenLoader:
    """This rank's endless stream of (inputs, targets) int64 [micro_batch_seqs, seq_len], in `data.mode`.

    step_tokens: tokens per optimizer step over all ranks (needed by data.shard_tail=skip_step).
    Every loader has `state_dict()` / `load_state_dict()` (a global position, the same on every rank).
    Shards remapped to a smaller vocabulary (data/vocab_remap.py) need model.vocab_size = theirs, and
    documents there start with <|endoftext|>'s new id.
    """
    files = resolve_shards(cfg.dir, cfg.train_pattern, "train")
    remap = check_model_vocab(cfg.dir, cfg.vocab_check)
    if cfg.mode is LoaderMode.varlen:  # one packed row of seq_len tokens per micro-step (micro_batch_seqs 1)
        v = cfg.varlen
        return VarlenLoader(files, seq_len, v.max_doc_len, rank, world, virtual_ranks=v.virtual_ranks,
                            version=v.version, vocab_size=cfg.vocab_check, prefetch=cfg.prefetch,
                            bos=_document_token(cfg, remap))
    if cfg.mode is LoaderMode.bos:
        bos = _document_token(cfg, remap)
        return BOSAlignedLoader(files, micro_batch_seqs, seq_len, rank, world, max_doc_len=cfg.bos_max_doc_len,
                                vocab_size=cfg.vocab_check, prefetch=cfg.prefetch, bos=bos)
    if cfg.shard_tail is not ShardTail.read or cfg.repeat_first_batch:
        return ReplayLoader(files, micro_batch_seqs, seq_len, rank, world, shard_tail=cfg.shard_tail,
                            step_tokens=step_tokens, repeat_first_batch=cfg.repeat_first_batch,
                            vocab_size=cfg.vocab_check, prefetch=cfg.prefetch)
    return ContiguousLoader(files, micro_batch_seqs, seq_len, rank, world, vocab_size=cfg.vocab_check,
                            prefetch=cfg.prefetch)


class ValidationSet:
    """The fixed first `val_tokens` tokens of the val shards; re-iterable, this rank's share."""

    def __init__(self, cfg: DataConfig, val_tokens: int, micro_batch_seqs: int, seq_len: int, rank: int, world: int):
        self.files: list[Path] = resolve_shards(cfg.dir, cfg.val_pattern, "validation")
        check_model_vocab(cfg.dir, cfg.vocab_check)
        self.args = (val_tokens, micro_batch_seqs, seq_len, rank, world, cfg.vocab_check)
        next(iter(self), None)  # validate sizes and divisibility now, not at the first eval

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return validation_batches(self.files, *self.args)


def build_val_batches(cfg: DataConfig, val_tokens: int, micro_batch_seqs: int, seq_len: int,
                      rank: int, world: int) -> ValidationSet | VarlenValidation:
    """This rank's validation batches; in data.mode=varlen the records' (inputs, targets, cu_seqlens)
    micro-steps of data.varlen.val_rank_tokens (micro_batch_seqs and seq_len unused)."""
    if cfg.mode is LoaderMode.varlen:
        files = resolve_shards(cfg.dir, cfg.val_pattern, "validation")
        remap = check_model_vocab(cfg.dir, cfg.vocab_check)
        return VarlenValidation(files, val_tokens, cfg.varlen.val_rank_tokens, rank, world,
                                virtual_ranks=cfg.varlen.virtual_ranks, vocab_size=cfg.vocab_check,
                                bos=_document_token(cfg, remap))
    return ValidationSet(cfg, val_tokens, micro_batch_seqs, seq_len, rank, world)
