"""Model configuration schema (Hydra group `model`).

Every architectural choice is a field, so speedrun variants are config changes,
not code forks. Defaults describe GPT-2 small exactly as nanoGPT/llm.c build it;
every speedrun switch below is off by default.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from common.tokens import EOT_TOKEN  # the shards' document separator (common/tokens.py)


class Norm(Enum):
    layernorm = "layernorm"
    rmsnorm = "rmsnorm"


class MlpAct(Enum):
    gelu = "gelu"    # GPT-2 (tanh approximation, as in the original)
    gelu_exact = "gelu_exact"  # erf GELU, torch's default F.gelu (records 2 and 4)
    relu2 = "relu2"  # ReLU squared (speedrun record 5 onwards)


class PosEmb(Enum):
    learned = "learned"  # GPT-2's absolute position table
    rotary = "rotary"    # rotary embeddings on q and k (model.rope_*)
    none = "none"


class QKNorm(Enum):
    none = "none"
    before_rope = "before_rope"  # rms-normalize q, k per head, then rotate (record 8 onwards)
    after_rope = "after_rope"    # rotate, then normalize (record 5)


class SoftCap(Enum):
    none = "none"
    tanh = "tanh"        # softcap_scale * tanh(z / softcap_div)      (record 9: 30, 30)
    sigmoid = "sigmoid"  # softcap_scale * sigmoid(z / softcap_div)   (record 20: 30, 7.5)
    algebraic = "algebraic"  # softcap_scale * z / sqrt(z^2 + softcap_div^2)  (track 3: 15, 15)


class Init(Enum):
    gpt2 = "gpt2"                      # N(0, init_std); residual projections / sqrt(2L) (scale_proj_init)
    pytorch = "pytorch"                # torch defaults: Linear U(+-1/sqrt(fan_in)), Embedding N(0, 1) (records 2-12)
    scaled_uniform = "scaled_uniform"  # Linear U(+-sqrt(3) * 0.5 / sqrt(fan_in)), Embedding N(0, 1) (record 20)
    scaled_normal = "scaled_normal"    # Linear N(0, init_fan_in_var / fan_in), biases 0, Embedding N(0, 1) (track 3)
    constructor = "constructor"        # what each module's PyTorch constructor drew, kept: torch's exact bounds,
                                       # one draw per tensor in construction order (track-3 result #46)


class AttnImpl(Enum):
    """model.attn_impl: the attention backend (model/attention_backends.py); every one computes the same mask."""
    auto = "auto"  # masked attention: fa3 when importable and applicable (Hopper, bf16/fp16, token windows),
                   # else FlexAttention on CUDA, else SDPA; plain causal: SDPA is_causal. Printed at start.
    sdpa = "sdpa"  # always scaled_dot_product_attention (an explicit boolean mask when masked)
    flex = "flex"  # FlexAttention wherever masked attention is needed (on CPU: unfused and forward-only, tests)
    fa3 = "fa3"    # FlashAttention-3's varlen kernel (flash_attn_interface; records 29-46): CUDA, bf16/fp16,
                   # token-exact windows only (refuses model.window_block > 1)


# --- the LM head's matmul and the records' loss (model/heads.py; issue 25) ---
class HeadMatmul(Enum):
    linear = "linear"  # F.linear in the ambient precision (bf16 under autocast): today's head, every eval
    bf16 = "bf16"      # training: x and w rounded to bf16, bf16 matmul, bf16 logits; allowed where a record
                       # trains in FP8 but warns once that it changes the ML
    fp8 = "fp8"        # training: scaled float8 matmul (records 20, 29-46; model/heads.py); eval stays linear


class Fp8Impl(Enum):
    auto = "auto"            # torch._scaled_mm on a CUDA GPU with FP8 (sm >= 8.9) and shapes it takes, else emulate
    scaled_mm = "scaled_mm"  # torch._scaled_mm or an error (needs an FP8 GPU, dims multiple of 16)
    emulate = "emulate"      # the same float8 casts, the matmul in fp32: any device, same quantization


class LossLogits(Enum):
    fp32 = "fp32"  # head output -> fp32, then softcap and cross-entropy in fp32 (records 20, 29; today)
    bf16 = "bf16"  # head output rounded to bf16, softcap in bf16; cross-entropy on the bf16 logits in training,
                   # on their fp32 copy at eval (records 43, 46)


@dataclass
class ModelConfig:
    """GPT shape and architecture switches. Sizes count elements, not bytes."""

    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    vocab_size: int = 50257      # tokenizer vocabulary (GPT-2: 50257)
    pad_vocab_to: int = 1        # round the head's rows up to a multiple (64/128 helps matmul kernels)
    pad_embeddings: bool = True  # pad the input tables too (false: embed 50257 rows, head 50304; needs untied)
    block_size: int = 1024       # longest sequence (size of the learned position table; a bound otherwise)
    mlp_ratio: int = 4           # hidden width of the MLP = mlp_ratio * n_embd
    norm: Norm = Norm.layernorm
    norm_affine: bool = True     # learnable norm gain (and bias, for LayerNorm with bias=true)
    norm_fp32_gain: bool = False  # rmsnorm: normalize in fp32, times the fp32 gain, rounded once to the input's
                                 # dtype (track-3 result #46); false: the gain is cast to the input's dtype
    norm_eps: Optional[float] = None  # epsilon of every norm (block, embedding, final, QK); null = the library's
                                 # default: rms_norm uses the input dtype's eps (1.19e-7 in fp32), LayerNorm 1e-5.
                                 # Records 2 and 4: 1e-6.
    bias: bool = True            # biases in Linear layers and LayerNorm
    mlp_act: MlpAct = MlpAct.gelu
    pos_emb: PosEmb = PosEmb.learned
    tie_embeddings: bool = True  # LM head shares the token embedding matrix (GPT-2)
    fused_qkv: bool = True       # one [3d, d] projection for Q, K, V (GPT-2, records 2/4/20) or three [d, d]
    init: Init = Init.gpt2
    init_std: float = 0.02       # init=gpt2 only
    scale_proj_init: bool = True  # init=gpt2: residual projections init std / sqrt(2 * n_layer)
    init_fan_in_var: float = 0.33  # init=scaled_normal: a Linear weight's variance times its fan-in (track 3)
    # after any init (model/init.py; track-3 result #46 sets 0.30, 0.125, 6, 0.5):
    init_fc_depth_scale: float = 0.0  # block l's mlp.fc weight times 1 - a l / (L - 1) (bias unscaled; 0 = off)
    init_cgi_alpha: float = 0.0       # CGI: block l's norm gains 1 -+ a s_l, s_l random signs (model/cgi.py; 0 = off)
    init_cgi_pair_from_layer: Optional[int] = None  # CGI: blocks from this one on come in antithetic pairs
                                      # (l, l + 1) with head-balanced signs (null = every block independent)
    init_cgi_head_shrink: float = 1.0  # CGI pairs: a head's count of + signs is pulled to head_dim / 2 by this
                                      # factor (1 = kept as drawn, 0 = exactly balanced)

    # --- speedrun switches (all off by default) ---
    rope_base: float = 10000.0     # rotary: frequency of pair i is rope_base^(-2i/head_dim)
    rope_half_truncated: bool = False  # rotary: head_dim/4 frequencies (1/rope_base)^linspace(0, 1) + head_dim/4 zeros
    qk_norm: QKNorm = QKNorm.none
    attn_scale: Optional[float] = None  # softmax scale; null = 1/sqrt(head_dim) (record 20: 0.12)
    scale_attn_residual: bool = False   # x + attn(.) / sqrt(2 * n_layer) (records 2 and 4)
    zero_init_proj: bool = False   # attention and MLP output projections start at zero (blocks = identity)
    zero_init_head: bool = False   # untied LM head (and its bias) starts at zero (uniform first prediction)
    head_bias: bool = False        # the untied LM head has a bias (track 3: every Linear has one)
    embed_bf16: bool = False       # store the token table in bf16 (track 3); under bf16 autocast the residual
                                   # stream then stays bf16, as in the script; without autocast it is cast to fp32
    softcap: SoftCap = SoftCap.none
    softcap_scale: float = 30.0
    softcap_div: float = 30.0
    embed_norm: bool = False       # normalize the token embedding before the first block (record 8 on)
    value_residual: bool = False   # v = (1 - l) v + l v1, v1 = first attention layer's v, l learnable (init 0.5)
    x0_mix: bool = False           # each block starts with x = a x + b x0 (x0 = embedding), a=1, b=0 at init
    unet_skips: bool = False       # decoder layer j adds w_j * output of encoder layer (L/2 - 1 - j), w init 1
    value_embed_tables: int = 0    # number of value-embedding tables ...
    value_embed_layers: list[int] = field(default_factory=list)  # ... the layers using them, the k-th listed
                                   # layer uses table k % value_embed_tables (record 20: 3, [0,1,2,9,10,11])
    no_attn_layers: list[int] = field(default_factory=list)  # blocks without attention (record 20: [7])
    # document-causal sliding-window attention over long packed sequences
    doc_causal: bool = False       # never attend across a document start (a bos_token in the input)
    bos_token: int = EOT_TOKEN
    window_size: int = 0           # sliding window in tokens (0 = none): query q sees keys k with q - k < window
    window_block: int = 0          # > 0: the window is whole blocks of this many tokens (FlexAttention blocks):
                                   # query block i sees key blocks > i - window/window_block (record 20: 128)
    window_grow: bool = False      # the window grows linearly from 0 to window_size over training, rounded up
                                   # to whole window_blocks (record 20: 1728, 128 -> 128 ... 1792 tokens)
    short_window_layers: list[int] = field(default_factory=list)  # layers with half the window (record 20)
    attn_impl: AttnImpl = AttnImpl.auto

    # --- records 29-46 (issue 25): off by default; see model/embeddings.py, model/residual.py, model/rotary.py ---
    attn_gate_dim: int = 0         # sparse attention gate: head h's output times sigmoid(W_g[h] . x[:k]), x the
                                   # attention input, W_g [H, k] zero at init (records 29-46: 12)
    smear_gate_dim: int = 0        # smear: e_t += l sigmoid(w . e_t[:k]) e_{t-1} on the token embedding, w [1, k]
                                   # and l zero at init (records 43, 46: 12)
    value_embed_table_ids: list[int] = field(default_factory=list)  # the table of each value_embed_layers entry
                                   # (empty: k % value_embed_tables; records 43, 46: layers [1,2,9,10,11] -> [1,2,0,1,2])
    no_mlp_layers: list[int] = field(default_factory=list)  # blocks without MLP (records 43, 46: [0]); a block
                                   # with neither attention nor MLP is skipped entirely (no x0 mix either)
    x0_mix_init: list[float] = field(default_factory=lambda: [1.0, 0.0])  # x0_mix's (a, b) at init (record 46: 1.1, 0)
    skip_pairs: list[list[int]] = field(default_factory=list)  # [in, out]: block `out` first adds g * (output of
                                   # block `in`) (record 43: [5,6],[4,7],[3,8],[2,9],[1,10]; record 46: [4,7])
    skip_sigmoid: bool = False     # skip_pairs' g = sigmoid(w) (records 43, 46), else g = w
    skip_init: float = 1.0         # skip_pairs' w at init (records 43, 46: -1.5)
    backout_layer: Optional[int] = None  # before the final norm, x -= l * (output of this block), l = backout_init
    backout_init: float = 0.5      # (records 43, 46: layer 8, 0.5)
    attn_windows_external: bool = False  # the trainer sets the (long, short) window each step with
                                   # GPT.set_attention_windows(long, short), token-exact with FlashAttention-3's
                                   # meaning (query i sees key j iff j <= i and i - j <= window); before the first
                                   # call: (window_size, window_size // 2) (records 29-46)
    yarn: bool = False             # YaRN: when the long window grows, rescale the rotary frequencies and the
                                   # attention scale (start: model.attn_scale) as records 43, 46's Yarn.apply
    yarn_alpha: float = 1.0        # YaRN's ramp over each frequency's rotations within the old window
    yarn_beta: float = 32.0
    rope_bf16_tables: bool = False  # rotary cos/sin rounded to bf16 and the rotation done in q's dtype (43, 46)
    packed_scalars: bool = False   # the record packs its scalars into one vector of 5 n_layer (+ smear, backout)
                                   # slots padded to the world size (records 29-46): tools.describe also reports
                                   # that count (model/residual.py: script_parameter_count)

    # --- the LM head's matmul and the records' loss (model/heads.py; issue 25) ---
    head_matmul: HeadMatmul = HeadMatmul.linear
    head_fp8_impl: Fp8Impl = Fp8Impl.auto
    head_fp8_x_scale: Optional[float] = None  # fp8: x_f8 = e4m3(x / x_scale); null = sqrt(n_embd) / 448 (record 29
                                   # on: an rms-normed row's largest entry, sqrt(n_embd), lands on e4m3's 448)
    head_fp8_w_scale: float = 2.0 ** -9  # fp8: w_f8 = e4m3(w / w_scale) (records 29-46; record 20: 1/32)
    head_fp8_grad_scale: float = 1 / 448  # fp8: g_f8 = e5m2(dlogits / grad_scale) (records 29-46; record 20: 2^-29)
    loss_logits: LossLogits = LossLogits.fp32

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_to
        return (self.vocab_size + m - 1) // m * m

    @property
    def embed_rows(self) -> int:
        """Rows of the input tables (token and value embeddings)."""
        return self.padded_vocab_size if self.pad_embeddings else self.vocab_size

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def masked_attention(self) -> bool:
        """True when attention needs more than the plain causal mask."""
        return self.doc_causal or self.window_size > 0

    def check(self) -> None:
        for key in ("n_layer", "n_head", "n_embd", "vocab_size", "pad_vocab_to", "block_size", "mlp_ratio"):
            if getattr(self, key) <= 0:
                raise ValueError(f"model.{key} must be > 0 (got {getattr(self, key)})")
        if self.n_embd % self.n_head:
            raise ValueError(f"model.n_embd={self.n_embd} must be divisible by model.n_head={self.n_head}")
        if self.norm_eps is not None and not self.norm_eps > 0:
            raise ValueError(f"model.norm_eps must be > 0 or null (got {self.norm_eps})")
        if self.init_std <= 0 or self.init_fan_in_var <= 0:
            raise ValueError(f"model.init_std and model.init_fan_in_var must be > 0 "
                             f"(got {self.init_std}, {self.init_fan_in_var})")
        self._check_init()
        self._check_head()
        if (self.head_bias or self.embed_bf16) and self.tie_embeddings:
            raise ValueError("model.head_bias / model.embed_bf16 need model.tie_embeddings=false (they describe "
                             "an untied head and a separate token table)")
        if self.tie_embeddings and not self.pad_embeddings:
            raise ValueError("model.pad_embeddings=false needs model.tie_embeddings=false (a tied table has one shape)")
        if self.zero_init_head and self.tie_embeddings:
            raise ValueError("model.zero_init_head=true needs model.tie_embeddings=false (a zero tied table "
                             "would zero the input embedding too)")
        if self.pos_emb is PosEmb.rotary:
            if self.head_dim % (4 if self.rope_half_truncated else 2):
                raise ValueError(f"rotary needs head_dim={self.head_dim} divisible by "
                                 f"{4 if self.rope_half_truncated else 2} (model.n_embd / model.n_head)")
            if self.rope_base <= 1:
                raise ValueError(f"model.rope_base must be > 1 (got {self.rope_base})")
        if self.attn_scale is not None and self.attn_scale <= 0:
            raise ValueError(f"model.attn_scale must be > 0 or null (got {self.attn_scale})")
        if self.softcap is not SoftCap.none and (self.softcap_scale <= 0 or self.softcap_div <= 0):
            raise ValueError(f"model.softcap_scale and model.softcap_div must be > 0 "
                             f"(got {self.softcap_scale}, {self.softcap_div})")
        if self.unet_skips and self.n_layer % 2:
            raise ValueError(f"model.unet_skips pairs encoder and decoder layers: model.n_layer={self.n_layer} must be even")
        bad = [f"model.{key}={list(layers)}" for key, layers in (("no_attn_layers", self.no_attn_layers),
               ("value_embed_layers", self.value_embed_layers), ("short_window_layers", self.short_window_layers))
               if any(not 0 <= i < self.n_layer for i in layers) or len(set(layers)) != len(layers)]
        if bad:  # every bad list at once: a smaller model.n_layer usually breaks several
            raise ValueError(f"{' and '.join(bad)} must list distinct layer indices in [0, {self.n_layer}) "
                             f"(model.n_layer={self.n_layer}); shrink=cpu keeps an experiment's layer count")
        if len(self.no_attn_layers) >= self.n_layer:
            raise ValueError("model.no_attn_layers removes attention from every layer; keep at least one")
        if (self.value_embed_tables > 0) != bool(self.value_embed_layers):
            raise ValueError(f"model.value_embed_tables={self.value_embed_tables} and model.value_embed_layers="
                             f"{list(self.value_embed_layers)} must both be set (or both empty/0)")
        if self.value_embed_tables < 0:
            raise ValueError(f"model.value_embed_tables must be >= 0 (got {self.value_embed_tables})")
        clash = set(self.value_embed_layers) & set(self.no_attn_layers)
        if clash:
            raise ValueError(f"model.value_embed_layers {sorted(clash)} have no attention (model.no_attn_layers)")
        if self.window_size < 0 or self.window_block < 0:
            raise ValueError(f"model.window_size and model.window_block must be >= 0 "
                             f"(got {self.window_size}, {self.window_block})")
        if (self.window_grow or self.short_window_layers) and self.window_size == 0:
            raise ValueError("model.window_grow / model.short_window_layers need a model.window_size > 0")
        if self.window_block and self.window_size and self.window_size % self.window_block and not self.window_grow:
            raise ValueError(f"model.window_size={self.window_size} must be a multiple of "
                             f"model.window_block={self.window_block}")

        self._check_records29_46()

    def _check_records29_46(self) -> None:
        for key in ("attn_gate_dim", "smear_gate_dim"):
            if not 0 <= getattr(self, key) <= self.n_embd:
                raise ValueError(f"model.{key} must be in [0, model.n_embd={self.n_embd}] (got {getattr(self, key)})")
        if any(not 0 <= i < self.n_layer for i in self.no_mlp_layers) or len(set(self.no_mlp_layers)) != len(self.no_mlp_layers):
            raise ValueError(f"model.no_mlp_layers={list(self.no_mlp_layers)} must list distinct layer indices in "
                             f"[0, {self.n_layer})")
        if self.value_embed_table_ids:
            if len(self.value_embed_table_ids) != len(self.value_embed_layers):
                raise ValueError(f"model.value_embed_table_ids={list(self.value_embed_table_ids)} needs one entry per "
                                 f"model.value_embed_layers entry ({list(self.value_embed_layers)})")
            if any(not 0 <= t < self.value_embed_tables for t in self.value_embed_table_ids):
                raise ValueError(f"model.value_embed_table_ids={list(self.value_embed_table_ids)} must be in "
                                 f"[0, model.value_embed_tables={self.value_embed_tables})")
        if len(self.x0_mix_init) != 2:
            raise ValueError(f"model.x0_mix_init must be two numbers (a, b) (got {list(self.x0_mix_init)})")
        skipped = set(self.no_attn_layers) & set(self.no_mlp_layers)
        ins = [p[0] for p in self.skip_pairs if len(p) == 2]
        if any(len(p) != 2 or not 0 <= p[0] < p[1] < self.n_layer or p[0] in skipped for p in self.skip_pairs) \
                or len(set(ins)) != len(ins):
            raise ValueError(f"model.skip_pairs={[list(p) for p in self.skip_pairs]} must be [in, out] pairs with "
                             f"0 <= in < out < model.n_layer={self.n_layer}, each in once, no in-layer skipped")
        if self.skip_pairs and self.unet_skips:
            raise ValueError("model.skip_pairs and model.unet_skips are two skip layouts: set one")
        if self.backout_layer is not None and not 0 <= self.backout_layer < self.n_layer:
            raise ValueError(f"model.backout_layer={self.backout_layer} must be in [0, {self.n_layer}) or null")
        if self.attn_windows_external and (self.window_size <= 0 or self.window_block or self.window_grow):
            raise ValueError("model.attn_windows_external=true needs model.window_size > 0 (the first window), "
                             "model.window_block=0 and model.window_grow=false (the trainer sets the window)")
        if self.yarn and not (self.attn_windows_external and self.pos_emb is PosEmb.rotary):
            raise ValueError("model.yarn=true needs model.pos_emb=rotary and model.attn_windows_external=true "
                             "(YaRN rescales the rotary when the trainer grows the long window)")
        if self.yarn and not 0 <= self.yarn_alpha < self.yarn_beta:
            raise ValueError(f"model.yarn_alpha={self.yarn_alpha} and model.yarn_beta={self.yarn_beta} must satisfy "
                             "0 <= alpha < beta")
        if self.rope_bf16_tables and self.pos_emb is not PosEmb.rotary:
            raise ValueError("model.rope_bf16_tables=true needs model.pos_emb=rotary")

    def _check_init(self) -> None:
        if not 0.0 <= self.init_fc_depth_scale <= 1.0:
            raise ValueError(f"model.init_fc_depth_scale must be in [0, 1] (got {self.init_fc_depth_scale})")
        if self.norm_fp32_gain and self.norm is not Norm.rmsnorm:
            raise ValueError("model.norm_fp32_gain=true needs model.norm=rmsnorm")
        if self.init_cgi_alpha == 0.0:
            return
        if not 0.0 < self.init_cgi_alpha < 1.0:
            raise ValueError(f"model.init_cgi_alpha must be in [0, 1) (got {self.init_cgi_alpha}; 0 = off)")
        if not self.norm_affine or self.no_attn_layers or self.no_mlp_layers:
            raise ValueError("model.init_cgi_alpha > 0 sets both norm gains of every block: it needs "
                             "model.norm_affine=true and no model.no_attn_layers / model.no_mlp_layers")
        if self.init_cgi_pair_from_layer is not None and self.init_cgi_pair_from_layer < 0:
            raise ValueError(f"model.init_cgi_pair_from_layer must be >= 0 or null "
                             f"(got {self.init_cgi_pair_from_layer})")
        if not 0.0 <= self.init_cgi_head_shrink <= 1.0:
            raise ValueError(f"model.init_cgi_head_shrink must be in [0, 1] (got {self.init_cgi_head_shrink})")

    def _check_head(self) -> None:
        for key in ("head_fp8_x_scale", "head_fp8_w_scale", "head_fp8_grad_scale"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise ValueError(f"model.{key} must be a finite number > 0{' or null' if key.endswith('x_scale') else ''}"
                                 f" (got {value!r})")
        if self.head_matmul is not HeadMatmul.linear and self.head_bias:
            raise ValueError(f"model.head_matmul={self.head_matmul.value} has no bias term: it needs model.head_bias=false")

    @property
    def head_fp8_scales(self) -> tuple[float, float, float]:
        """(x, w, grad) dequantization scales of the FP8 head, x's null resolved to sqrt(n_embd) / 448."""
        x = self.head_fp8_x_scale if self.head_fp8_x_scale is not None else self.n_embd ** 0.5 / 448
        return x, self.head_fp8_w_scale, self.head_fp8_grad_scale
