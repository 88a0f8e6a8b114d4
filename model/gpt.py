"""GPT-2 as in nanoGPT / llm.c, plus the speedrun's architecture, every choice behind a config field.

Shapes: B = batch (sequences), T = sequence length (tokens), C = n_embd,
H = n_head, D = C // H (head dim), V = padded vocabulary size.

    x = wte(idx) (+ wpe)  -> smear (smear_gate_dim) -> norm (embed_norm)  = x0
    blocks 0 .. L-1       (U-net: decoder layer j also gets w_j * encoder output L/2-1-j;
                           skip_pairs: block out gets g_j * output of block in; model/residual.py)
    x <- x - l y_b        (backout_layer b)
    logits = head(norm(x)) (+ bias), fp32, softcapped (tanh / sigmoid / algebraic)

Records 29-46 run one flat packed row: forward(idx [1, T], targets, cu_seqlens=...) with the row's
sequence starts, and the trainer sets the per-step (long, short) windows with set_attention_windows,
which also advances YaRN (model.yarn, model/rotary.py).

Each parameter carries a *role* (see optim/roles.py): the module kind that decides
its norm and hence how the optimizer updates it. Roles are attached to modules where
the architecture is known (model/layers.py) and read back by `param_roles()`.

Time-dependent architecture (the sliding-window schedule) is set by the trainer through
`set_train_progress(step, max_steps)`; the current window lives in a tensor buffer so a
compiled model does not recompile when it grows.
"""
from __future__ import annotations

import torch
from torch import nn

from model.block import Block
from model.cgi import set_cgi_gains
from model.config import ModelConfig, PosEmb
from model.embeddings import SmearGate, value_embed_layout
from model.heads import capped_logits, check_head_choice, head_logits, head_loss
from model.init import init_weights
from model.layers import make_norm, role_of, tag_param, tagged
from model.masks import Window, build_masks, window_units
from model.residual import Backout, SkipGates
from model.rotary import Yarn, rotary_frequencies

__all__ = ["GPT", "tagged"]


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.check()
        check_head_choice(cfg)  # model.head_matmul=bf16 warns that it changes the records' ML
        self.cfg = cfg
        V, C = cfg.padded_vocab_size, cfg.n_embd
        self.wte = tagged(nn.Embedding(cfg.embed_rows, C), "embed_head" if cfg.tie_embeddings else "embed")
        if cfg.pos_emb is PosEmb.learned:
            self.wpe = tagged(nn.Embedding(cfg.block_size, C), "pos_embed")
        if cfg.smear_gate_dim:
            self.smear = SmearGate(cfg.smear_gate_dim)
        if cfg.embed_norm:
            self.ln_e = make_norm(cfg)
        if cfg.value_embed_tables:
            self.value_embeds = nn.ModuleList(tagged(nn.Embedding(cfg.embed_rows, C), "value_embed")
                                              for _ in range(cfg.value_embed_tables))
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        if cfg.unet_skips:
            tag_param(self, "skip_weights", torch.ones(cfg.n_layer // 2), "scalar")
        if cfg.skip_pairs:
            self.skip_gates = SkipGates(cfg)
        if cfg.backout_layer is not None:
            self.backout = Backout(cfg)
        if cfg.yarn:
            self.yarn = Yarn(cfg.head_dim, cfg.rope_base, cfg.rope_half_truncated,
                             cfg.attn_scale if cfg.attn_scale is not None else cfg.head_dim ** -0.5,
                             cfg.yarn_alpha, cfg.yarn_beta)
        self.ln_f = make_norm(cfg)
        if not cfg.tie_embeddings:
            self.lm_head = tagged(nn.Linear(C, V, bias=cfg.head_bias), "head")
        # (long, short) sliding-window size in window units; see set_train_progress.
        # model.attn_windows_external: FA3's window w stored as w + 1 (masks' q - k < w + 1); until the trainer's
        # first set_attention_windows, long = window_size and short = half of it.
        start = (cfg.window_size + 1, cfg.window_size // 2 + 1) if cfg.attn_windows_external else window_units(cfg, 0, 1)
        self.register_buffer("windows", torch.tensor(start, dtype=torch.int32), persistent=False)
        # ... and as Python ints for the attention backends (FA3 takes its window as an int; a compiled model
        # recompiles once per window, as the records' scripts do)
        self._external_windows = (cfg.window_size, cfg.window_size // 2)
        init_weights(self, cfg, fresh=True)
        self._reset_skip_weights()
        if cfg.embed_bf16:  # after init: the table is drawn in fp32, then rounded once
            self.wte.to(torch.bfloat16)

    def reset_parameters(self) -> None:
        """Initialize every parameter per model.init and the zero-init switches (model/init.py); YaRN back
        to its start."""
        init_weights(self, self.cfg)
        self._reset_skip_weights()
        if hasattr(self, "yarn"):
            self.yarn.reset()

    def _reset_skip_weights(self) -> None:
        if hasattr(self, "skip_weights"):
            with torch.no_grad():
                self.skip_weights.fill_(1.0)

    def draw_cgi_gains(self, seed: int) -> None:
        """Redraw the blocks' CGI norm gains (model.init_cgi_alpha; nothing when 0) with the generators of the
        device the model now lives on. The script draws them on its training GPU, whose streams differ from
        the CPU's that the constructor used: train.py calls this once the model is on a GPU, before training."""
        if self.cfg.init_cgi_alpha:
            set_cgi_gains(self.blocks, self.cfg.init_cgi_alpha, self.cfg.head_dim, self.cfg.init_cgi_pair_from_layer,
                          self.cfg.init_cgi_head_shrink, seed)

    def set_train_progress(self, step: int, max_steps: int) -> None:
        """Called by the trainer before each step (and validation): grows the sliding window."""
        if self.cfg.window_size > 0 and self.cfg.window_grow:
            self.windows.copy_(torch.tensor(window_units(self.cfg, step, max_steps), dtype=torch.int32))

    def set_attention_windows(self, long: int, short: int, rescale_rotary: bool = True) -> None:
        """model.attn_windows_external: this step's (long, short) window in tokens, FlashAttention-3's meaning
        (query i sees keys j <= i with i - j <= window; the records' ws x block_size). With model.yarn and
        rescale_rotary, a long window that differs from the last one YaRN saw rescales the rotary and the
        attention scale (Yarn.apply); the first call after construction or reset() only records it. Records
        43, 46 validate at the end with a longer window and no rescale: rescale_rotary=False."""
        if not self.cfg.attn_windows_external:
            raise ValueError("set_attention_windows needs model.attn_windows_external=true")
        if long < 0 or short < 0:
            raise ValueError(f"attention windows must be >= 0 tokens (got long={long}, short={short})")
        self.windows.copy_(torch.tensor([long + 1, short + 1], dtype=torch.int32))
        self._external_windows = (int(long), int(short))
        if rescale_rotary and hasattr(self, "yarn"):
            self.yarn.update(long)

    def window_tokens(self) -> tuple[int, int]:
        """Current (long, short) window in tokens (0 = no window), for logs."""
        if self.cfg.attn_windows_external:  # stored as window + 1 (masks' q - k < w)
            return tuple(int(w) - 1 for w in self.windows.tolist())
        unit = self.cfg.window_block or 1
        return tuple(int(w) * unit for w in self.windows.tolist()) if self.cfg.window_size else (0, 0)

    def param_roles(self) -> dict[str, str]:
        """Role of every parameter, keyed like `named_parameters()` (tied weights once)."""
        roles: dict[str, str] = {}
        for mod_name, module in self.named_modules():
            for p_name, _ in module.named_parameters(recurse=False):
                full = f"{mod_name}.{p_name}" if mod_name else p_name
                role = role_of(module, p_name)
                if role is None:
                    raise ValueError(f"parameter {full!r} has no optimizer role: tag it (model/layers.py)")
                roles[full] = role
        return {name: roles[name] for name, _ in self.named_parameters()}

    def _value_embeddings(self, idx: torch.Tensor) -> list:
        """Per layer: the value embedding [B, T, C] it mixes into v, or None (model/embeddings.py's layout)."""
        if not self.cfg.value_embed_tables:
            return [None] * self.cfg.n_layer
        tables = [emb(idx) for emb in self.value_embeds]
        return [None if t is None else tables[t] for t in value_embed_layout(self.cfg)]

    def _rope_tables(self, T: int):
        """(cos, sin) [T, D/2] when the rotary runs from tables (YaRN or model.rope_bf16_tables), else None."""
        cfg = self.cfg
        if hasattr(self, "yarn"):
            return self.yarn.tables(T, cfg.rope_bf16_tables)
        if cfg.rope_bf16_tables:
            freqs = rotary_frequencies(cfg.head_dim, cfg.rope_base, cfg.rope_half_truncated, device=self.windows.device)
            theta = torch.outer(torch.arange(T, dtype=torch.float32, device=freqs.device), freqs)
            return theta.cos().to(torch.bfloat16), theta.sin().to(torch.bfloat16)
        return None

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cu_seqlens: torch.Tensor | None = None,
                reduction: str = "mean") -> torch.Tensor:
        """idx: int64 [B, T] token ids. Returns the cross-entropy (nats) against `targets` [B, T] if given,
        its mean over tokens (reduction="mean") or sum ("sum": records 29-46 in training), else the logits
        [B, T, V] in fp32. cu_seqlens: int32 [n + 1] starts of the sequences packed in a flat row idx [1, T]
        (the last = T; records 29-46): attention stays within each, with the trainer's windows."""
        cfg = self.cfg
        T = idx.size(1)
        if T > cfg.block_size:
            raise ValueError(f"sequence length {T} exceeds model.block_size={cfg.block_size}")
        if cu_seqlens is not None and (idx.size(0) != 1 or not cfg.attn_windows_external):
            raise ValueError("cu_seqlens describes one flat packed row [1, T] and needs "
                             "model.attn_windows_external=true (the windows it is attended with)")
        x = self.wte(idx)
        if x.dtype != torch.float32 and not torch.is_autocast_enabled(idx.device.type):
            x = x.float()  # a bf16 table (model.embed_bf16) outside autocast: compute in fp32
        if cfg.pos_emb is PosEmb.learned:
            x = x + self.wpe(torch.arange(T, device=idx.device))
        if cfg.smear_gate_dim:
            x = self.smear(x)
        if cfg.embed_norm:
            x = self.ln_e(x)
        x0, v1 = x, None
        ves = self._value_embeddings(idx)
        # model.attn_windows_external: this step's windows in tokens, FA3's left (model/masks.py's Window)
        windows = tuple(Window(w) for w in self._external_windows) if cfg.attn_windows_external else self.windows
        masks = build_masks(cfg, idx, windows, cu_seqlens)
        rope = self._rope_tables(T)
        scale = self.yarn.attn_scale if hasattr(self, "yarn") else None
        skips: list[torch.Tensor] = []
        saved: dict[int, torch.Tensor] = {}  # skip_pairs' sources by layer
        y_backout = None
        half = cfg.n_layer // 2
        for i, block in enumerate(self.blocks):
            if cfg.unet_skips and i >= half:  # decoder: pair with the mirrored encoder layer
                x = x + self.skip_weights[i - half] * skips.pop()
            if cfg.skip_pairs:
                x = self.skip_gates.before_block(i, x, saved)
            x, v1 = block(x, masks, x0, v1, ves[i], rope, scale)
            if cfg.unet_skips and i < half:
                skips.append(x)
            if cfg.skip_pairs and i in self.skip_gates.ins:
                saved[i] = x
            if i == cfg.backout_layer:
                y_backout = x
        if y_backout is not None:
            x = self.backout(x, y_backout)
        x = self.ln_f(x)
        # the head and the loss (model/heads.py): the FP8 head in training (records 20-46), the softcap and the
        # cross-entropy's precision (fp32, or the bf16 logits of records 43 and 46) and reduction
        head = self.wte if cfg.tie_embeddings else self.lm_head
        logits = head_logits(x, head.weight, getattr(head, "bias", None), cfg, self.training)
        if targets is None:
            return capped_logits(logits, cfg, training=False)  # fp32 [B, T, V]
        return head_loss(logits, targets, cfg, self.training, reduction)
