"""Model configuration schema (Hydra group `model`).

Every architectural choice is a field, so speedrun variants are config changes,
not code forks. Defaults describe GPT-2 small exactly as nanoGPT/llm.c build it.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Norm(Enum):
    layernorm = "layernorm"
    rmsnorm = "rmsnorm"


class MlpAct(Enum):
    gelu = "gelu"    # GPT-2 (tanh approximation, as in the original)
    relu2 = "relu2"  # ReLU squared (speedrun record 5 onwards)


class PosEmb(Enum):
    learned = "learned"  # GPT-2's absolute position table
    none = "none"


@dataclass
class ModelConfig:
    """GPT shape and architecture switches. Sizes count elements, not bytes."""

    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    vocab_size: int = 50257      # tokenizer vocabulary (GPT-2: 50257)
    pad_vocab_to: int = 1        # round the embedding/head rows up to a multiple (64/128 helps matmul kernels)
    block_size: int = 1024       # longest sequence (size of the learned position table)
    mlp_ratio: int = 4           # hidden width of the MLP = mlp_ratio * n_embd
    norm: Norm = Norm.layernorm
    norm_affine: bool = True     # learnable norm gain (and bias, for LayerNorm with bias=true)
    bias: bool = True            # biases in Linear layers and LayerNorm
    mlp_act: MlpAct = MlpAct.gelu
    pos_emb: PosEmb = PosEmb.learned
    tie_embeddings: bool = True  # LM head shares the token embedding matrix (GPT-2)
    fused_qkv: bool = True       # one [3d, d] projection for Q, K, V (GPT-2) or three [d, d]
    init_std: float = 0.02
    scale_proj_init: bool = True  # residual projections init std / sqrt(2 * n_layer) (GPT-2)

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_to
        return (self.vocab_size + m - 1) // m * m

    def check(self) -> None:
        for key in ("n_layer", "n_head", "n_embd", "vocab_size", "pad_vocab_to", "block_size", "mlp_ratio"):
            if getattr(self, key) <= 0:
                raise ValueError(f"model.{key} must be > 0 (got {getattr(self, key)})")
        if self.n_embd % self.n_head:
            raise ValueError(f"model.n_embd={self.n_embd} must be divisible by model.n_head={self.n_head}")
        if self.init_std <= 0:
            raise ValueError(f"model.init_std must be > 0 (got {self.init_std})")
