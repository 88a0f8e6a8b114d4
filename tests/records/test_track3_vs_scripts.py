"""Track 3's experiments (those with a track-3 reference: block) against the scripts their blocks name (skipped
without ../shared). A record whose script does not fit a test here names it, the reason and where it is compared
instead in tests/records/expected.py (skip_vs_scripts; #46: tests/records/test_track3_best46_vs_script.py).

At shrunk width (2 layers x 256, 2 heads of 128 as the script fixes, vocabulary 512), fp32, CPU:
the script's model with its weights copied into ours gives the same loss and gradients; its own
init section produces the same kinds of values per parameter; three optimizer steps from identical
gradients give the same parameters; the lr of every group at every step matches. At full size (meta
device): the parameter count and every group's hyperparameters. Largest differences are printed
(pytest -s). The scripts store the embedding in bf16 (the whole model then runs in bf16): here both
sides run in fp32 (the script's model via .float(), ours with model.embed_bf16=false).
"""
from __future__ import annotations

import pytest
import torch

from analysis.records import experiments_with_reference
from harness.loop.schedule import lr_factor
from model.gpt import GPT
from optim import build_optimizer
from tests.records.expected import EXPECTED
from tests.support.inprocess import compose_config
from tests.support.track3_reference import definitions, load_reference_weights, needs_reference, our_name, setup

pytestmark = [needs_reference, pytest.mark.e2e]  # integration: the reference scripts at shrunk size
EXPERIMENTS = experiments_with_reference(track=3)
SMALL = dict(vocab_size=512, num_layers=2, model_dim=256)
SMALL_OVERRIDES = ("model.n_layer=2", "model.n_embd=256", "model.n_head=2", "model.vocab_size=512",
                   "model.embed_bf16=false")


def _pair(experiment: str, seed: int = 0, heads: int = 2):
    """(script namespace after its setup section, its model in fp32, our config, our model with its weights).
    `heads` heads of the script's fixed 128 dims: width 128 * heads."""
    ns = definitions(experiment)
    torch.manual_seed(seed)
    ref = ns["GPT"](**{**SMALL, "model_dim": 128 * heads}).float()
    scope = setup(experiment, ns, ref)
    cfg = compose_config(f"experiment={experiment}", *SMALL_OVERRIDES, f"model.n_embd={128 * heads}",
                         f"model.n_head={heads}")
    ours = GPT(cfg.model)
    load_reference_weights(ours, ref)
    return scope, ref, cfg, ours


def _batch(seed: int, B: int = 2, T: int = 128):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 512, (B, T), generator=g), torch.randint(0, 512, (B, T), generator=g)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest elementwise difference relative to the larger tensor's largest entry."""
    scale = max(a.abs().max().item(), b.abs().max().item(), 1e-30)
    return (a.double() - b.double()).abs().max().item() / scale


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_loss_and_every_gradient_match_the_script(experiment):
    _, ref, _, ours = _pair(experiment)
    # Random weights everywhere (the scripts zero every `proj`, which would hide the head and the
    # blocks' outputs from the comparison): same values on both sides.
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0.0, 0.05).add_(1.0 if p.ndim == 1 and p.numel() == 256 else 0.0)
    load_reference_weights(ours, ref)
    x, y = _batch(1)
    ref_loss = ref(x, y)  # summed over the B*T tokens
    ref_loss.backward()
    loss = ours(x, y)
    (loss * y.numel()).backward()  # train.loss_reduction=sum: the step's summed loss
    assert abs(loss.item() - ref_loss.item() / y.numel()) < 1e-5 * loss.item()
    mine = dict(ours.named_parameters())
    worst = max((_rel(mine[our_name(n)].grad, p.grad), n) for n, p in ref.named_parameters())
    print(f"\n{experiment}: loss {loss.item():.6f} vs {ref_loss.item() / y.numel():.6f}; "
          f"largest relative gradient difference {worst[0]:.2e} ({worst[1]})")
    assert worst[0] < 1e-4, worst


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_initialization_matches_the_scripts_kind_per_parameter(experiment):
    """The script's init (run on its model) and ours: same zeros, ones and standard deviations."""
    _, ref, cfg, _ = _pair(experiment)
    torch.manual_seed(1)
    fresh = GPT(cfg.model)
    mine = dict(fresh.named_parameters())
    for name, p in ref.named_parameters():
        q = mine[our_name(name)].detach()
        if (p == 0).all() or (p == 1).all():
            assert torch.equal(q, p.detach()), name
        else:
            ratio = q.std().item() / p.detach().std().item()
            mean_gap = abs(q.mean().item() - p.mean().item()) / (p.std().item() * (2 / p.numel()) ** 0.5)
            assert 0.85 < ratio < 1.15 and mean_gap < 4, (name, ratio, mean_gap)  # 4 sigma of the sample means


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_three_optimizer_steps_from_identical_gradients(experiment, monkeypatch):
    """Schedule steps chosen where the warmup / the cooldown are active. The script's Newton-Schulz
    runs in bf16 everywhere; ours in fp32 on CPU, so ours is switched to bf16 here for the comparison.
    One head (width 128: square attention and 4:1 MLP matrices, as at 256): bf16 Newton-Schulz on CPU is slow."""
    _skip_if_compared_elsewhere(experiment, "test_three_optimizer_steps_from_identical_gradients")
    import optim.newton_schulz as ns_module
    monkeypatch.setattr(ns_module, "default_dtype", lambda device: torch.bfloat16)
    scope, ref, cfg, ours = _pair(experiment, heads=1)
    steps = EXPECTED[experiment].optimizer_check_steps
    optimizer = build_optimizer(cfg.optim, list(ours.named_parameters()), ours.param_roles())
    tc, mine = cfg.train, dict(ours.named_parameters())
    worst = (0.0, "")
    for k, step in enumerate(steps):
        x, y = _batch(10 + k)
        ref.zero_grad(set_to_none=True)
        ref(x, y).backward()
        for name, p in ref.named_parameters():
            mine[our_name(name)].grad = p.grad.clone()
        scope["set_hparams"](step)
        for opt in scope["optimizers"]:
            opt.step()
        factor = lr_factor(step, tc.max_steps, tc.warmup_frac, tc.warmdown_frac, tc.final_lr_frac)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        optimizer.step()
        for name, p in ref.named_parameters():
            before = worst[0]
            worst = max(worst, (_rel(mine[our_name(name)].detach(), p.detach()), f"{name} after step {step}"))
            assert worst[0] == before or worst[0] < 2e-5, worst
    print(f"\n{experiment}: largest relative parameter difference after 3 steps {worst[0]:.2e} ({worst[1]})")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_groups_lr_at_every_step(experiment):
    _skip_if_compared_elsewhere(experiment, "test_every_groups_lr_at_every_step")
    scope, ref, cfg, ours = _pair(experiment)
    optimizer = build_optimizer(cfg.optim, list(ours.named_parameters()), ours.param_roles())
    ours_lr0 = {n: g["initial_lr"] for g in optimizer.param_groups for n in g["names"]}
    names = {id(p): n for n, p in ref.named_parameters()}
    ref_groups = []  # (the script's group, our base rate of every one of its parameters)
    for opt in scope["optimizers"]:
        for g in opt.param_groups:
            rates = {ours_lr0[our_name(names[id(p)])] for p in g["params"]}
            assert len(rates) == 1, rates  # the script's group is one rate in ours too
            ref_groups.append((g, rates.pop()))
    tc = cfg.train
    assert scope["train_steps"] == tc.max_steps
    worst = 0.0
    for step in range(tc.max_steps):
        scope["set_hparams"](step)
        factor = lr_factor(step, tc.max_steps, tc.warmup_frac, tc.warmdown_frac, tc.final_lr_frac)
        for g, base in ref_groups:
            worst = max(worst, abs(base * factor - g["lr"]) / g["initial_lr"])
    print(f"\n{experiment}: largest lr difference over {tc.max_steps} steps: {worst:.1e} of the group's base rate")
    assert worst < 1e-12


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_full_size_parameter_count_and_every_groups_hyperparameters(experiment):
    """The full model on the meta device: the count, and per parameter the script's update rule and
    its lr, betas, eps and weight decay (Muon: lr, decay, momentum; NS is compared below)."""
    _skip_if_compared_elsewhere(experiment, "test_full_size_parameter_count_and_every_groups_hyperparameters")
    describe = _describe()
    ns = definitions(experiment)
    with torch.device("meta"):
        ref = ns["GPT"](vocab_size=50304, num_layers=12, model_dim=768)
    scope = setup(experiment, ns, ref, fused=False)
    model, opt = describe.build_on_meta(describe.load([f"experiment={experiment}"]))
    mine = dict(model.named_parameters())
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters()) == \
        EXPECTED[experiment].params
    assert {our_name(n): tuple(p.shape) for n, p in ref.named_parameters()} == \
        {n: tuple(p.shape) for n, p in mine.items()}
    group_of = {n: g for g in opt.param_groups for n in g["names"]}
    names = {id(p): n for n, p in ref.named_parameters()}
    seen = set()
    for ref_opt in scope["optimizers"]:
        for g in ref_opt.param_groups:
            for p in g["params"]:
                name = our_name(names[id(p)])
                ours_g = group_of[name]
                seen.add(name)
                assert ours_g["initial_lr"] == g["lr"] and ours_g["weight_decay"] == g["weight_decay"], name
                if type(ref_opt).__name__ == "Muon":
                    assert ours_g["map"] == "linear" and opt.momentum == g["mu"] and opt.linear.nesterov, name
                    assert (opt.linear.ns_method, opt.linear.ns_steps, opt.linear.scale, opt.warmup[1]) == ("track3", 12, "muon", 0)
                else:
                    assert ours_g["map"] == "adam" and tuple(ours_g["betas"]) == tuple(g["betas"]), name
                    assert opt.adam.eps == g["eps"] and g["decoupled_weight_decay"], name
    assert seen == set(mine)


def test_newton_schulz_matches_the_scripts():
    """The script's (2, -1.5, 0.5) x 12 in bf16 against ours in bf16 (bitwise up to bf16 rounding)."""
    from optim.newton_schulz import orthogonalize
    ns = definitions("track3_muon")
    g = torch.Generator().manual_seed(3)
    worst = 0.0
    for shape in ((128, 512), (512, 128), (192, 192)):
        G = torch.randn(*shape, generator=g)
        ref = ns["zeropower_via_newtonschulz5"](G).float()
        mine = orthogonalize(G, "track3", dtype=torch.bfloat16)
        worst = max(worst, (ref - mine).abs().max().item())
    print(f"\nNewton-Schulz (2, -1.5, 0.5) x 12, bf16: largest difference {worst:.2e}")
    assert worst <= 2 ** -8  # at most one bf16 ulp of a value < 1


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_bf16_table_runs_the_model_in_bf16_like_the_script(experiment):
    """model.embed_bf16 under bf16 autocast vs the script's own bf16 model: the same loss up to bf16."""
    ns = definitions(experiment)
    torch.manual_seed(0)
    ref = ns["GPT"](**SMALL)  # embedding in bf16, as the script builds it
    setup(experiment, ns, ref)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p), alpha=0.02)
    cfg = compose_config(f"experiment={experiment}", *SMALL_OVERRIDES[:-1])
    ours = GPT(cfg.model)
    assert ours.wte.weight.dtype == torch.bfloat16
    load_reference_weights(ours, ref)
    x, y = _batch(2)
    with torch.no_grad():
        ref_loss = ref(x, y).item() / y.numel()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = ours(x, y).item()
        fp32_loss = ours(x, y).item()  # outside autocast the bf16 rows are cast to fp32
    print(f"\n{experiment} bf16: loss {loss:.5f} vs script {ref_loss:.5f} (ours in fp32: {fp32_loss:.5f})")
    assert abs(loss - ref_loss) < 2e-2 * ref_loss


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_the_skipped_tests_exist(experiment):
    assert all(callable(globals().get(name)) for name in EXPECTED[experiment].skip_vs_scripts), experiment


def _skip_if_compared_elsewhere(experiment: str, test: str) -> None:
    """A record whose script does not fit this generic comparison names the reason in tests/records/expected.py."""
    why = EXPECTED[experiment].skip_vs_scripts.get(test)
    if why:
        pytest.skip(f"{experiment}: {why}")


def _describe():
    import tools.describe as describe
    return describe
