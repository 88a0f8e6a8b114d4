"""Describe a configuration before spending GPU hours on it: the model and optimizer it builds.

    python -m tools.describe experiment=record08_untie
    python -m tools.describe experiment=record20_sub3min model.n_layer=16 optim.lr=0.04

Composes the config exactly as train.py does (same overrides), builds the model and the
optimizer on the meta device (no memory, no data, no training) and prints: `parameters: N`,
elements per optimizer role, every param group's update rule, learning rate, betas/momentum and
weight decay, and the batch/schedule figures (tokens per step, steps, warmup/warmdown, validation).
"""
from __future__ import annotations

import sys
from collections import Counter

import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from common.paths import REPO
from harness.config.schema import Config, ConfigError, load_config, register_configs
from data.config import LoaderMode
from harness.loop.schedule import powercool_constants, powercool_lr
from harness.loop.stages import StageSchedule
from model.gpt import GPT
from model.masks import attention_path, window_units
from model.residual import packed_scalar_slots, script_parameter_count
from optim import build_optimizer
from optim.newton_schulz import schedule
from optim.settings import group_settings
from optim.stages import STAGES


def load(overrides: list[str]) -> Config:
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return load_config(compose(config_name="config", overrides=overrides))


def build_on_meta(cfg: Config) -> tuple[GPT, torch.optim.Optimizer]:
    with torch.device("meta"):
        model = GPT(cfg.model)
    optimizer = build_optimizer(cfg.optim, list(model.named_parameters()), model.param_roles())
    return model, optimizer


def _num(x) -> str:
    if isinstance(x, (tuple, list)):
        return "(" + ", ".join(_num(v) for v in x) + ")"
    return f"{x:g}" if isinstance(x, float) else str(x)


def group_rule(opt: torch.optim.Optimizer, group: dict) -> tuple[str, str]:
    """(update rule, its momentum/betas) of one param group, for AdamW and the role-routed optimizers."""
    rule = group.get("map")
    if rule is None:  # a torch optimizer: the class is the rule
        betas = group.get("betas")
        return type(opt).__name__, f"betas {_num(betas)} eps {_num(group.get('eps'))}" if betas else ""
    if rule == "adam":
        uncorrected = "" if group.get("bias_correction", True) else " no bias correction"
        return "adam", f"betas {_num(group.get('betas'))} eps {_num(opt.adam.eps)}{uncorrected}"
    start, warm = opt.warmup
    mom = f"momentum {_num(opt.momentum)}" + (" nesterov" if opt.linear.nesterov else "")
    if warm:
        mom += f" (from {_num(start)} over {warm} steps)"
    if rule == "linear":
        lin = opt.linear
        rule = f"linear/NS {lin.ns_method}x{len(schedule(lin.ns_method, lin.ns_steps))} scale={lin.scale}"
    return rule, mom


def describe(cfg: Config, overrides: list[str]) -> list[str]:
    model, opt = build_on_meta(cfg)
    roles = model.param_roles()
    n_params = sum(p.numel() for p in model.parameters())
    lines = [f"config: {' '.join(overrides) or '(defaults)'}", f"parameters: {n_params} ({n_params / 1e6:.2f}M)"]
    if cfg.model.packed_scalars:  # records 29-46 pack their scalars in one vector padded to the world size
        c = script_parameter_count(model, 8)
        lines.append(f"parameters as the script counts them at world size 8: {c['script']} (its {packed_scalar_slots(cfg.model, 8)} "
                     f"packed scalar slots, some unread; ours: {c['scalars']} scalars, one parameter each)")
    lines.append("elements per optimizer role:")
    elems, tensors = Counter(), Counter()
    for name, p in model.named_parameters():
        elems[roles[name]] += p.numel()
        tensors[roles[name]] += 1
    for role, n in sorted(elems.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {role:<13} {tensors[role]:>4} tensors {n:>14,}")
    lines.append(f"optimizer: {cfg.optim.name} ({type(opt).__name__}); lr below = initial_lr, scaled by the schedule")
    lines.append(f"  {'group':<13} {'rule':<38} {'tensors':>7} {'elements':>13} {'lr':>9} {'wd':>6}  momentum / betas")
    settings = group_settings(cfg.optim, opt) if hasattr(cfg.optim, "adam_every") else [{}] * len(opt.param_groups)
    for i, (g, st) in enumerate(zip(opt.param_groups, settings)):
        rule, mom = group_rule(opt, g)
        n = sum(p.numel() for p in g["params"])
        lines.append(f"  {str(g.get('role', i)):<13} {rule:<38} {len(g['params']):>7} {n:>13,} "
                     f"{_num(g.get('initial_lr', g['lr'])):>9} {_num(g.get('weight_decay', 0.0)):>6}  {mom}"
                     + _details(st))
    tc = cfg.train
    stages = StageSchedule(tc)
    warmup, warmdown = round(tc.warmup_frac * tc.max_steps), tc.warmdown_frac * tc.max_steps  # as harness/loop/schedule.py
    per_gpu = tc.micro_batch_seqs * tc.seq_len
    packed = cfg.data.mode is LoaderMode.varlen
    lines += [
        f"batch: {tc.global_batch_tokens:,} tokens/step = seq_len {tc.seq_len} x {tc.micro_batch_seqs} seqs x ranks x "
        f"accumulation (1 GPU: accum {tc.global_batch_tokens / per_gpu:g}; 8 GPUs: {tc.global_batch_tokens / per_gpu / 8:g})",
        f"schedule: {tc.max_steps} steps = {stages.tokens_before(tc.max_steps) / 1e9:.3f}B tokens; " + (
            f"staged lr: flat x {[1.0] + [st.mult for st in tc.lr_stages]}, the last {_num(tc.warmdown_frac)} of "
            f"{stages.scheduled} scheduled steps down to {_num(tc.final_lr_frac)}x, {tc.extension_steps} extension steps"
            if tc.lr_schedule.value == "staged" else
            f"warmup {warmup}, warmdown {warmdown:.10g} steps to {_num(tc.final_lr_frac)}x")
        + f"; validation {tc.val_tokens:,} tokens every "
        f"{tc.val_every} steps" + (f", every {tc.val_tail_every} in the last {_num(tc.val_tail_frac)}"
                                   if tc.val_tail_every else "")
        + (f"; stop at val_loss <= {tc.stop_at_val_loss}" if tc.stop_at_val_loss else ""),
        "loss: sum over each packed row's tokens (records 29-46), ranks averaged" if packed else
        f"loss: {tc.loss_reduction.value} over the step's tokens"
        + (f" (gradient {tc.global_batch_tokens:,}x the mean's)" if tc.loss_reduction.value == "sum" else ""),
    ]
    if tc.batch_stages:
        lines.append("batch stages: " + " -> ".join(f"{b.global_batch_tokens:,}" for b in tc.batch_stages)
                     + f" tokens/step from steps {[0] + [c.step for c in stages.batch_changes()]}")
    cuda_dtype = torch.float32 if tc.precision.value == "fp32" else torch.bfloat16  # train.py's autocast on CUDA
    lines.append(f"attention: on CUDA {attention_path(cfg.model, torch.device('cuda'), cuda_dtype, packed=packed)}; on CPU "
                 f"{attention_path(cfg.model, torch.device('cpu'), packed=packed)} | compile: {'on' if tc.compile else 'off'}")
    if cfg.model.embed_bf16:
        lines.append("token table stored in bf16 (model.embed_bf16)")
    m = cfg.model
    if stages.has_windows:
        unit, changes = tc.window_unit_tokens, stages.window_changes()
        lines.append(f"attention windows (FA3's left, tokens): long {stages.windows(0).long * unit}, changing at steps "
                     f"{[c.step for c in changes]} to {[c.new * unit for c in changes]}"
                     + (f" (YaRN rescales at each)" if m.yarn else "") + f"; short = long // 2 blocks; the last "
                     f"validation's long {stages.val_windows(tc.max_steps).long * unit}; short on layers "
                     f"{list(m.short_window_layers)}")
    elif m.window_size:
        unit = m.window_block or 1
        (l0, s0), (l1, s1) = window_units(m, 0, tc.max_steps), window_units(m, tc.max_steps, tc.max_steps)
        grow = f"grows {l0 * unit} -> {l1 * unit} tokens" if m.window_grow else f"{l1 * unit} tokens"
        short = f"; layers {list(m.short_window_layers)}: half ({s0 * unit} -> {s1 * unit})" if m.short_window_layers else ""
        lines.append(f"attention: {'document-causal, ' if m.doc_causal else ''}sliding window {grow}" +
                     (f" in blocks of {unit}" if unit > 1 else "") + short)
    return lines + policy_lines(cfg, opt)


def _details(st: dict) -> str:
    """optim.settings' effective settings of a role-routed group beyond the table's columns (records 29-46)."""
    out = []
    if st.get("decay") not in (None, "none", "plain"):
        out.append(f"decay {st['decay']}")
    if st.get("map") == "adam":
        if st.get("correction") not in (None, "torch"):
            out.append(f"correction {st['correction']}")
        if st.get("every", 1) != 1:
            out.append(f"steps every {st['every']} (gradients summed)")
        if st.get("state") not in (None, "fp32"):
            out.append(f"moments {st['state']}")
    if st.get("lr_mul", 1.0) != 1.0:
        out.append(f"lr_mul {_num(st['lr_mul'])}")
    return ("; " + "; ".join(out)) if out else ""


def policy_lines(cfg: Config, opt: torch.optim.Optimizer) -> list[str]:
    """The optimizer's stages with their settings (registry order), the momentum and lr schedules, the
    lookahead, the tail-EMA readout and the validation cadence, where they differ from plain training."""
    o, tc, lines = cfg.optim, cfg.train, []
    if hasattr(o, "ns_norm"):  # the role-routed optimizers (muon, dual): their stages and Newton-Schulz input
        on = [s for s in STAGES if getattr(o, s.name)]
        ns = [f"NS input / {o.ns_norm} norm"] if o.ns_norm != "fro" else []
        ns += ["update kept in bf16"] if o.update_bf16 else []
        if on or ns:
            lines.append("stages: " + "; ".join(ns + [s.name + (" (" + ", ".join(
                f"{k.name}={_num(getattr(o, k.name))}" for k in s.keys) + ")" if s.keys else "") for s in on]))
        if o.momentum_cooldown_steps:
            lines.append(f"momentum: {_num(o.momentum_warmup_start)} -> {_num(o.momentum)} over "
                         f"{o.momentum_warmup_steps} steps, -> {_num(o.momentum_cooldown_end)} over the last "
                         f"{o.momentum_cooldown_steps} of {o.momentum_horizon} ({o.momentum_ramp})")
        if o.lookahead:
            ratio = f" x the {o.lookahead_lr_role} group's lr ratio" if o.lookahead_lr_role else ""
            lines.append(f"lookahead (EMA-Nesterov): w += {_num(o.lookahead)}{ratio} x EMA_{_num(o.lookahead_ema)}"
                         f"(displacement) before steps {o.lookahead_start}..{o.lookahead_end - 1}")
    if tc.lr_schedule.value == "powercool":
        end = tc.max_steps if tc.powercool_end is None else tc.powercool_end
        for g, c in zip(opt.param_groups, powercool_constants(opt.param_groups, tc)):
            lr0 = g["initial_lr"]
            first = next((s for s in range(end + 1) if powercool_lr(s, lr0, c, end, tc.powercool_power) < lr0), end)
            lines.append(f"lr {str(g.get('role')):<13} min({_num(lr0)}, {c:.10g} ({end} - t)^"
                         f"{_num(tc.powercool_power)}): below lr0 from step {first}")
    if tc.tail_ema:
        lines.append(f"readout: val_ema_loss on {_num(1 - tc.tail_ema_lambda)} w + {_num(tc.tail_ema_lambda)} ema, "
                     f"ema of every weight but the token table, 1/{_num(tc.tail_ema_tau)} per step over "
                     f"[{tc.tail_ema_start}, {tc.tail_ema_end}); the score")
    if not tc.val_at_start or tc.val_extra_steps or tc.stop_after_step is not None:
        extra = ", ".join(f"{r.first}..{r.last}" + (f" every {r.every}" if r.every != 1 and r.first != r.last else "")
                          for r in tc.val_extra_steps)
        lines.append("validation: " + ("no step 0; " if not tc.val_at_start else "") + (f"also {extra}; " if extra else "")
                     + (f"the run stops after step {tc.stop_after_step} of the {tc.max_steps}-step schedule"
                        if tc.stop_after_step is not None else ""))
    return lines


def usage() -> str:
    """--help: the module docstring's usage and what it prints, and where the options are listed."""
    return (__doc__.strip() + "\n\nOverrides are train.py's: `python train.py --help` lists the groups,\n"
            "`python train.py --cfg job` every key. Exit codes: 0 printed, 2 a bad override (one `error:` line).")


def main(argv: list[str] | None = None) -> int:
    overrides = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(overrides):
        print(usage())
        return 0
    try:
        cfg = load(overrides)
        print("\n".join(describe(cfg, overrides)))
    except (ConfigError, ValueError, OmegaConfBaseException, HydraException) as e:
        print(f"error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
