"""Optimizers and parameter policies against torch's optimizers, timm's factory and the paper's rule."""
from __future__ import annotations

import copy
import types
import warnings

import pytest
import timm
import torch
import torchvision
from torch import nn

import tricks_registry as tr
from tricks_registry.parts import OptimizerPart, ParamPolicy
from tricks_registry.tricks.optimizers import decay_all_params

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
WD = 5e-4


def _models():
    return {"timm_resnet18": timm.create_model("resnet18", num_classes=10),
            "torchvision_resnet18": torchvision.models.resnet18(weights=None, num_classes=10)}


def _wd_by_param(groups) -> dict[int, list[float]]:
    seen: dict[int, list[float]] = {}
    for g in groups:
        for p in g["params"]:
            seen.setdefault(id(p), []).append(g["weight_decay"])
    return seen


@pytest.mark.parametrize("model_name", ["timm_resnet18", "torchvision_resnet18"])
def test_no_bias_decay_decays_only_conv_and_fc_weights(model_name):
    model = _models()[model_name]
    policy = tr.build_trick("no_bias_decay")
    assert isinstance(policy, ParamPolicy)
    wd = _wd_by_param(policy.groups(model, WD))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(wd) == len(trainable) and all(len(v) == 1 for v in wd.values())  # each exactly once
    counts = {"conv_fc_weight": 0, "bias": 0, "norm": 0}
    for module in model.modules():  # classify by module type, not by ndim
        for pname, p in module.named_parameters(recurse=False):
            if isinstance(module, NORM_TYPES):
                kind = "norm"
            elif pname == "bias":
                kind = "bias"
            elif isinstance(module, (nn.Conv2d, nn.Linear)) and pname == "weight":
                kind = "conv_fc_weight"
            else:
                pytest.fail(f"unexpected parameter {pname} of {type(module).__name__}")
            counts[kind] += 1
            assert wd[id(p)] == [WD if kind == "conv_fc_weight" else 0.0], (type(module).__name__, pname)
    assert counts["conv_fc_weight"] == 21 and counts["norm"] == 40 and counts["bias"] == 1


def test_decay_all_params_is_the_baseline():
    model = _models()["torchvision_resnet18"]
    wd = _wd_by_param(decay_all_params(model, WD))
    assert len(wd) == len(list(model.parameters()))
    assert all(v == [WD] for v in wd.values())
    model.fc.weight.requires_grad_(False)
    assert id(model.fc.weight) not in _wd_by_param(decay_all_params(model, WD))


def _train(make_opt, steps: int = 3):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    opt = make_opt(model)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return opt, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name,reference", [
    ("sgd_nesterov", lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=WD)),
    ("sgd", lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=False, weight_decay=WD)),
    ("adamw", lambda ps: torch.optim.AdamW(ps, lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=WD)),
])
def test_optimizers_equal_torch_after_three_steps(name, reference):
    part = tr.build_trick(name)
    assert isinstance(part, OptimizerPart)
    ours_opt, ours = _train(lambda m: part.make(decay_all_params(m, WD), 0.1, WD))
    _, ref = _train(lambda m: reference(m.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(ours, ref))
    _, start = _train(lambda m: reference(m.parameters()), steps=0)
    assert not any(torch.equal(a, b) for a, b in zip(ours, start))  # it did move


def test_sgd_nesterov_vs_plain_momentum_differ():
    _, nag = _train(lambda m: tr.build_trick("sgd_nesterov").make(decay_all_params(m, WD), 0.1, WD))
    _, mom = _train(lambda m: tr.build_trick("sgd").make(decay_all_params(m, WD), 0.1, WD))
    assert not all(torch.equal(a, b) for a, b in zip(nag, mom))


def test_group_weight_decay_wins_over_the_default():
    model = _models()["timm_resnet18"]
    groups = tr.build_trick("no_bias_decay").groups(model, WD)
    opt = tr.build_trick("sgd_nesterov").make(groups, 0.1, WD)
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, WD]
    assert all(g["nesterov"] and g["momentum"] == 0.9 and g["lr"] == 0.1 for g in opt.param_groups)


def test_adabound_runs_and_reduces_a_quadratic():
    import torch_optimizer

    torch.manual_seed(0)
    target = torch.randn(10)
    x = nn.Parameter(torch.zeros(10))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated torch signatures (the old `adabound` package has them)
        opt = tr.build_trick("adabound").make([{"params": [x]}], 0.1, 0.0)
        assert isinstance(opt, torch_optimizer.AdaBound)
        losses = []
        for _ in range(100):
            opt.zero_grad()
            loss = ((x - target) ** 2).sum()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert losses[-1] < 1e-3 * losses[0]
    assert opt.param_groups[0]["final_lr"] == 0.1 and opt.param_groups[0]["gamma"] == 1e-3


def test_timm_args_build_the_same_optimizer_in_timm():
    from timm.optim import create_optimizer_v2, optimizer_kwargs

    expected = {
        "sgd": {"opt": "momentum", "momentum": 0.9},
        "sgd_nesterov": {"opt": "sgd", "momentum": 0.9},
        "adamw": {"opt": "adamw", "opt_betas": [0.9, 0.999], "opt_eps": 1e-8},
        "adabound": {},
    }
    for name, args in expected.items():
        part = tr.build_trick(name)
        assert dict(part.timm_args) == args
        if not args:
            continue
        cfg = types.SimpleNamespace(**{"lr": 0.1, "weight_decay": WD, "momentum": 0.9, **args})
        params = [nn.Parameter(torch.zeros(2))]
        theirs = create_optimizer_v2(params, **optimizer_kwargs(cfg))
        ours = part.make([{"params": params}], 0.1, WD)
        assert type(theirs) is type(ours)
        drop = {"params"}
        assert {k: v for k, v in theirs.param_groups[0].items() if k not in drop} == \
            {k: v for k, v in ours.param_groups[0].items() if k not in drop}


@pytest.mark.parametrize("name,params,param", [
    ("sgd", {"momentum": 1.0}, "momentum"),
    ("sgd_nesterov", {"momentum": 0.0}, "momentum"),
    ("adamw", {"betas": [0.9, 1.0]}, "betas"),
    ("adamw", {"eps": 0.0}, "eps"),
    ("adabound", {"final_lr": 0.0}, "final_lr"),
    ("adabound", {"gamma": 1.0}, "gamma"),
])
def test_bad_params_raise_trick_error(name, params, param):
    with pytest.raises(tr.TrickError) as err:
        tr.build_trick(name, **params)
    assert err.value.trick == name and err.value.param == param


def test_policy_is_pure():
    model = _models()["timm_resnet18"]
    before = copy.deepcopy(model.state_dict())
    tr.build_trick("no_bias_decay").groups(model, WD)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _adabound_reference(x0, grads, lrs, *, weight_decay, amsbound, betas=(0.9, 0.999), final_lr=0.1, gamma=1e-3,
                        eps=1e-8):
    """Luo et al. 2019's AdaBound / AMSBound update as the authors' code (github.com/Luolc/AdaBound) writes it, in
    plain Python floats per coordinate: L2 weight decay added to the gradient, Adam's moments with bias correction,
    the step size clipped into [final_lr (1 - 1 / (gamma t + 1)), final_lr (1 + 1 / (gamma t))], final_lr following
    the scheduled LR in proportion (final_lr * lr / initial lr); AMSBound normalises by the running max of v."""
    b1, b2 = betas
    x = list(x0)
    m, v, vmax = [0.0] * len(x), [0.0] * len(x), [0.0] * len(x)
    out = []
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        fl = final_lr * lr / lrs[0]
        lower, upper = fl * (1 - 1 / (gamma * t + 1)), fl * (1 + 1 / (gamma * t))
        for i in range(len(x)):
            gi = g[i] + weight_decay * x[i]
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            vmax[i] = max(vmax[i], v[i])
            denom = (vmax[i] if amsbound else v[i]) ** 0.5 + eps
            step = lr * (1 - b2 ** t) ** 0.5 / (1 - b1 ** t)
            x[i] -= min(max(step / denom, lower), upper) * m[i]
        out.append(list(x))
    return out


@pytest.mark.parametrize("amsbound", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_adabound_matches_the_authors_update_step_by_step(amsbound, weight_decay):
    """Each step of the trick's optimizer against the update written out above, with weight decay and either mode;
    the gradients shrink (so AMSBound's max of v differs from v) and the LR is decayed mid-run (final_lr follows)."""
    gen = torch.Generator().manual_seed(0)
    n, steps = 6, 40
    x0 = torch.randn(n, generator=gen, dtype=torch.float64)
    grads = [(torch.randn(n, generator=gen, dtype=torch.float64) * (3.0 if t < 5 else 0.2)).tolist()
             for t in range(steps)]
    lrs = [0.01 if t < 20 else 0.001 for t in range(steps)]
    x = nn.Parameter(x0.clone())
    opt = tr.build_trick("adabound", amsbound=amsbound).make([{"params": [x]}], lrs[0], weight_decay)
    ref = _adabound_reference(x0.tolist(), grads, lrs, weight_decay=weight_decay, amsbound=amsbound)
    for t in range(steps):
        for group in opt.param_groups:
            group["lr"] = lrs[t]
        x.grad = torch.tensor(grads[t], dtype=torch.float64)
        opt.step()
        assert x.detach().tolist() == pytest.approx(ref[t], rel=1e-12, abs=1e-15), t
    # the modes and the decay matter on this sequence: a wrong one would not match
    other = _adabound_reference(x0.tolist(), grads, lrs, weight_decay=weight_decay, amsbound=not amsbound)
    no_wd = _adabound_reference(x0.tolist(), grads, lrs, weight_decay=0.05 - weight_decay, amsbound=amsbound)
    assert other[-1] != pytest.approx(ref[-1], rel=1e-6) and no_wd[-1] != pytest.approx(ref[-1], rel=1e-6)
