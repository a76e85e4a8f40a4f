"""Schedules, warmup and LR scaling against the paper's formulas and timm's / torch's own schedulers."""
from __future__ import annotations

import io
import math
import types

import pytest
import torch

import tricks_registry as tr
from tricks_registry.parts import LRScaling, Schedule, Warmup
from tricks_registry.tricks.schedules import lr_sequence

SCHEDULES = ["constant", "step", "multistep", "exponential", "inverse", "poly", "sigmoid", "cosine", "cyclic"]
ABSOLUTE = {"step", "multistep"}  # milestones are absolute epochs; the others start after warmup
# small-run parameters so every schedule changes within a few epochs
SMALL = {
    "step": {"step_epochs": 2}, "multistep": {"milestones": [3, 6, 9]}, "exponential": {"gamma": 0.5},
    "inverse": {"gamma": 0.5}, "sigmoid": {"step_epochs": 4.0, "gamma": -1.0},
    "cyclic": {"step_size_epochs": 1.5}, "poly": {}, "cosine": {}, "constant": {},
}
BASE = 0.4


def _opt(lr: float = BASE, groups: int = 1) -> torch.optim.Optimizer:
    params = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr * (i + 1)} for i in range(groups)]
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def _torch_lrs(opt: torch.optim.Optimizer, scheduler, steps: int) -> list[float]:
    """The LR a torch scheduler gives at each of ``steps`` iterations (the reference curve)."""
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return lrs


def _run(sched, opt, steps) -> list[list[float]]:
    out = []
    for t in steps:
        sched.step_update(t)
        out.append([g["lr"] for g in opt.param_groups])
    return out


def test_all_registered_with_their_kinds():
    for name in SCHEDULES:
        assert tr.get_trick(name).kind == "schedule"
        assert isinstance(tr.build_trick(name), Schedule)
    assert tr.get_trick("linear_warmup").kind == tr.get_trick("constant_warmup").kind == "warmup"
    assert isinstance(tr.build_trick("linear_scaling"), LRScaling)
    assert tr.get_trick("multistep").param("milestones").default == (30, 60, 90)
    assert tr.get_trick("cosine").section.startswith("5.1")


# ---- cosine: paper section 5.1, eq. (1)


@pytest.mark.parametrize("warmup_epochs", [0.0, 2.0])
def test_cosine_is_eq1_after_warmup(warmup_epochs):
    spe, epochs = 8, 12
    total = spe * epochs
    w = round(warmup_epochs * spe)
    big_t = total - w  # T: total batches ignoring warmup
    lrs = lr_sequence(tr.build_trick("cosine"), base_lr=BASE, total_steps=total, steps_per_epoch=spe,
                      warmup=tr.build_trick("linear_warmup", epochs=warmup_epochs) if w else None)
    assert lrs[w + big_t // 2] == BASE / 2  # exactly half at t = T/2
    for t in [0, 1, 7, 13, big_t // 3, big_t - 1]:
        assert math.isclose(lrs[w + t], 0.5 * (1 + math.cos(t * math.pi / big_t)) * BASE, rel_tol=1e-12)
    assert lrs[w] == BASE  # starts from the base LR right after warmup


def test_cosine_decays_to_lr_min_and_stays():
    opt = _opt()
    sched = tr.build_trick("cosine", lr_min=0.01).make(opt, total_steps=20, steps_per_epoch=4, warmup=None)
    lrs = _run(sched, opt, range(25))
    assert lrs[10][0] == pytest.approx(0.01 + 0.5 * (BASE - 0.01), rel=1e-12)
    assert all(v[0] == 0.01 for v in lrs[20:])


# ---- warmup: paper section 3.1 / Goyal et al. 2017


def test_linear_warmup_is_k_over_m():
    spe, m = 10, 30
    lrs = lr_sequence(tr.build_trick("constant"), base_lr=BASE, total_steps=100, steps_per_epoch=spe,
                      warmup=tr.build_trick("linear_warmup", epochs=3.0))
    assert lrs[0] == 0.0
    for k in range(m):
        assert math.isclose(lrs[k], BASE * k / m, rel_tol=1e-12)
    assert lrs[m:] == [BASE] * (100 - m)


def test_linear_warmup_paper_form_is_i_eta_over_m():
    """He et al. 2019, section 3.1: "at batch i, 1 <= i <= m, the learning rate is i eta / m" (batch i is step
    k = i - 1 here); then the schedule starts from eta."""
    spe, m, total = 10, 30, 100
    w = tr.build_trick("linear_warmup", epochs=3.0, form="paper")
    assert w == Warmup(epochs=3.0, mode="linear", start_factor=0.0, trick="linear_warmup", form="paper")
    lrs = lr_sequence(tr.build_trick("constant"), base_lr=BASE, total_steps=total, steps_per_epoch=spe, warmup=w)
    for i in range(1, m + 1):
        assert math.isclose(lrs[i - 1], i * BASE / m, rel_tol=1e-12), i
    assert lrs[0] == BASE / m and lrs[m - 1] == BASE   # eta reached at batch m, not m + 1
    assert lrs[m:] == [BASE] * (total - m)
    # the cosine after it is eq. (1) over the T = total - m batches after warmup, as with timm's form
    cos = tr.build_trick("cosine")
    paper = lr_sequence(cos, base_lr=BASE, total_steps=total, steps_per_epoch=spe, warmup=w)
    timm_form = lr_sequence(cos, base_lr=BASE, total_steps=total, steps_per_epoch=spe,
                            warmup=tr.build_trick("linear_warmup", epochs=3.0))
    assert paper[m:] == timm_form[m:]
    assert paper[:m] == pytest.approx([timm_form[k + 1] if k + 1 < m else BASE for k in range(m)], rel=1e-12)


@pytest.mark.parametrize("form", ["timm", "paper"])
def test_linear_warmup_forms_against_timms_scheduler(form):
    """timm's form is timm's own warmup (CosineLRScheduler, warmup_lr_init 0, warmup_prefix, per update), step for
    step; the paper's is timm's shifted one step earlier (timm at k + 1), the same schedule after warmup."""
    from timm.scheduler import CosineLRScheduler

    spe, epochs, w_epochs = 4, 12, 2
    m, total = spe * w_epochs, spe * epochs
    ours = lr_sequence(tr.build_trick("cosine"), base_lr=BASE, total_steps=total, steps_per_epoch=spe,
                       warmup=tr.build_trick("linear_warmup", epochs=float(w_epochs), form=form))
    opt = _opt()
    sched = CosineLRScheduler(opt, t_initial=total - m, lr_min=0.0, warmup_t=m, warmup_lr_init=0.0,
                              warmup_prefix=True, t_in_epochs=False, cycle_limit=1)
    theirs = []
    for t in range(total + 1):
        sched.step_update(t)
        theirs.append(opt.param_groups[0]["lr"])
    if form == "timm":
        assert ours == pytest.approx(theirs[:total], rel=1e-12, abs=1e-15)
    else:
        assert ours[:m] == pytest.approx(theirs[1:m + 1], rel=1e-12)
        assert ours[m:] == pytest.approx(theirs[m:total], rel=1e-12, abs=1e-15)


def test_linear_warmup_paper_form_with_a_start_factor_and_a_bad_form():
    w = tr.build_trick("linear_warmup", epochs=1.0, start_factor=0.25, form="paper")
    lrs = lr_sequence(tr.build_trick("constant"), base_lr=BASE, total_steps=12, steps_per_epoch=4, warmup=w)
    assert [round(v / BASE, 12) for v in lrs[:5]] == [0.4375, 0.625, 0.8125, 1.0, 1.0]
    with pytest.raises(tr.TrickError) as err:
        tr.build_trick("linear_warmup", form="goyal")
    assert err.value.param == "form"


def test_a_bare_linear_warmup_keeps_timms_form():
    """``linear_warmup: {}`` in a version-1 recipe means what it meant before the form existed."""
    assert tr.build_trick("linear_warmup").form == "timm"
    assert tr.get_trick("linear_warmup").param("form").default == "timm"


def test_linear_warmup_start_factor_and_constant_warmup():
    w = tr.build_trick("linear_warmup", epochs=1.0, start_factor=0.25)
    lrs = lr_sequence(tr.build_trick("constant"), base_lr=BASE, total_steps=12, steps_per_epoch=4, warmup=w)
    assert [round(v / BASE, 12) for v in lrs[:5]] == [0.25, 0.4375, 0.625, 0.8125, 1.0]
    c = tr.build_trick("constant_warmup", epochs=1.5, factor=0.1)
    assert c == Warmup(epochs=1.5, mode="constant", start_factor=0.1, trick="constant_warmup")
    lrs = lr_sequence(tr.build_trick("constant"), base_lr=BASE, total_steps=12, steps_per_epoch=4, warmup=c)
    assert lrs[:6] == [BASE * 0.1] * 6 and lrs[6:] == [BASE] * 6


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("mode", ["linear_warmup", "constant_warmup"])
def test_warmup_composes_with_each_schedule(name, mode):
    spe, total = 4, 48
    warmup = tr.build_trick(mode, epochs=2.0)
    w = 8
    sched = tr.build_trick(name, **SMALL[name])
    with_w = lr_sequence(sched, base_lr=BASE, total_steps=total, steps_per_epoch=spe, warmup=warmup)
    factor = [k / w for k in range(w)] if mode == "linear_warmup" else [0.1] * w
    assert with_w[:w] == pytest.approx([BASE * f for f in factor], rel=1e-12)
    if name in ABSOLUTE:  # same run without warmup, from step W on
        ref = lr_sequence(sched, base_lr=BASE, total_steps=total, steps_per_epoch=spe)[w:]
    else:  # the same schedule over the T = total - W steps after warmup
        ref = lr_sequence(sched, base_lr=BASE, total_steps=total - w, steps_per_epoch=spe)
    assert with_w[w:] == ref
    assert len(set(ref)) > 1 or name == "constant"


def test_warmup_too_long_is_an_error():
    with pytest.raises(tr.TrickError) as err:
        tr.build_trick("cosine").make(_opt(), total_steps=20, steps_per_epoch=4,
                                      warmup=tr.build_trick("linear_warmup", epochs=5.0))
    assert err.value.trick == "linear_warmup" and err.value.param == "epochs"


# ---- the other curves against their references


def test_multistep_drops_10x_at_milestones_like_torch():
    spe, epochs = 4, 12
    lrs = lr_sequence(tr.build_trick("multistep", milestones=[3, 6, 9]), base_lr=BASE,
                      total_steps=spe * epochs, steps_per_epoch=spe)
    for m, k in [(3, 1), (6, 2), (9, 3)]:  # epoch m (0-based) starts at base / 10^k
        assert lrs[m * spe] == pytest.approx(BASE * 0.1 ** k, rel=1e-12)
        assert lrs[m * spe - 1] == pytest.approx(BASE * 0.1 ** (k - 1), rel=1e-12)
    opt = _opt()
    ref = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[3 * spe, 6 * spe, 9 * spe], gamma=0.1)
    ref_lrs = _torch_lrs(opt, ref, spe * epochs)
    assert lrs == pytest.approx(ref_lrs, rel=1e-12)


def test_step_equals_torch_steplr():
    spe, total = 3, 30
    lrs = lr_sequence(tr.build_trick("step", step_epochs=2, gamma=0.5), base_lr=BASE, total_steps=total,
                      steps_per_epoch=spe)
    opt = _opt()
    ref = torch.optim.lr_scheduler.StepLR(opt, step_size=2 * spe, gamma=0.5)
    ref_lrs = _torch_lrs(opt, ref, total)
    assert lrs == pytest.approx(ref_lrs, rel=1e-12)


def test_cyclic_equals_torch_cycliclr():
    spe, total = 5, 80
    lrs = lr_sequence(tr.build_trick("cyclic", base_lr_factor=0.25, step_size_epochs=1.6, mode="triangular2"),
                      base_lr=BASE, total_steps=total, steps_per_epoch=spe)
    opt = _opt()
    ref = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=0.25 * BASE, max_lr=BASE, step_size_up=8,
                                            mode="triangular2", cycle_momentum=False)
    ref_lrs = _torch_lrs(opt, ref, total)
    assert lrs == ref_lrs
    assert max(lrs) == BASE and min(lrs) == 0.25 * BASE


def test_caffe_curves_match_their_formulas():
    spe, total = 4, 40
    cases = {
        "poly": ({"power": 0.9}, lambda t: BASE * (1 - t / total) ** 0.9),
        "exponential": ({"gamma": 0.9}, lambda t: BASE * 0.9 ** (t / spe)),
        "inverse": ({"gamma": 0.5, "power": 0.75}, lambda t: BASE * (1 + 0.5 * t / spe) ** -0.75),
        "sigmoid": ({"gamma": -1.0, "step_epochs": 5.0},
                    lambda t: BASE / (1 + math.exp(1.0 * (t / spe - 5.0)))),
    }
    for name, (params, ref) in cases.items():
        lrs = lr_sequence(tr.build_trick(name, **params), base_lr=BASE, total_steps=total, steps_per_epoch=spe)
        for t in range(total):
            assert math.isclose(lrs[t], ref(t), rel_tol=1e-12, abs_tol=1e-15), (name, t)
    assert lr_sequence(tr.build_trick("sigmoid", gamma=-1.0, step_epochs=5.0), base_lr=BASE, total_steps=total,
                       steps_per_epoch=spe)[20] == BASE / 2


def test_each_group_keeps_its_own_base_lr():
    opt = _opt(groups=2)
    sched = tr.build_trick("cosine").make(opt, total_steps=20, steps_per_epoch=2,
                                          warmup=tr.build_trick("linear_warmup", epochs=2.0))
    assert [g["initial_lr"] for g in opt.param_groups] == [BASE, 2 * BASE]
    lrs = _run(sched, opt, range(20))
    assert lrs[2] == pytest.approx([BASE / 2, BASE], rel=1e-12)
    assert lrs[4 + 8] == [BASE / 2, BASE]


# ---- timm_args: timm's own factory builds the same curve


@pytest.mark.parametrize("name", ["constant", "step", "multistep", "poly", "cosine"])
def test_timm_args_rebuild_the_same_schedule_in_timm(name):
    from timm.scheduler import create_scheduler_v2, scheduler_kwargs

    spe, epochs = 4, 12
    part = tr.build_trick(name, **SMALL[name])
    ours = lr_sequence(part, base_lr=BASE, total_steps=spe * epochs, steps_per_epoch=spe)
    cfg = types.SimpleNamespace(epochs=epochs, warmup_epochs=0, **part.timm_args)
    opt = _opt()
    sched, _ = create_scheduler_v2(opt, **scheduler_kwargs(cfg), updates_per_epoch=spe)
    theirs = []
    for t in range(spe * epochs):
        if part.timm_args["sched_on_updates"]:
            sched.step_update(t)
        else:
            sched.step(t // spe)
        theirs.append(opt.param_groups[0]["lr"])
    assert ours == pytest.approx(theirs, rel=1e-12)


def test_timm_args_values():
    assert tr.build_trick("cosine").timm_args == {"sched": "cosine", "min_lr": 0.0, "warmup_prefix": True,
                                                  "sched_on_updates": True}
    assert tr.build_trick("multistep").timm_args["decay_milestones"] == [31, 61, 91]  # timm's t+1 convention
    assert tr.build_trick("poly").timm_args["decay_rate"] == 0.9
    for name in ["exponential", "inverse", "sigmoid", "cyclic"]:
        assert tr.build_trick(name).timm_args == {}


# ---- LR scaling: section 3.1


def test_linear_scaling():
    scale = tr.build_trick("linear_scaling").scale
    assert scale(1024) == 0.4
    assert scale(256) == 0.1
    assert math.isclose(tr.build_trick("linear_scaling", base_lr=0.2, base_batch=128).scale(32), 0.05)
    with pytest.raises(tr.TrickError):
        scale(0)


# ---- resume


@pytest.mark.parametrize("name", SCHEDULES)
def test_state_dict_round_trip_resumes_identically(name):
    spe, total, cut = 4, 40, 13
    part = tr.build_trick(name, **SMALL[name])
    warmup = tr.build_trick("linear_warmup", epochs=1.0)
    opt = _opt(groups=2)
    sched = part.make(opt, total_steps=total, steps_per_epoch=spe, warmup=warmup)
    full = _run(sched, opt, range(total))

    opt = _opt(groups=2)
    sched = part.make(opt, total_steps=total, steps_per_epoch=spe, warmup=warmup)
    _run(sched, opt, range(cut))
    buf = io.BytesIO()
    torch.save({"sched": sched.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)

    opt2 = _opt(groups=2)
    opt2.load_state_dict(ckpt["opt"])  # as a resumed run does: optimizer state first (lr is mid-run)
    sched2 = part.make(opt2, total_steps=total, steps_per_epoch=spe, warmup=warmup)
    sched2.load_state_dict(ckpt["sched"])
    assert [g["lr"] for g in opt2.param_groups] == full[cut - 1]
    assert _run(sched2, opt2, range(cut, total)) == full[cut:]


# ---- parameter checks


@pytest.mark.parametrize("name,params,param", [
    ("step", {"gamma": 0.0}, "gamma"),
    ("step", {"step_epochs": 0}, "step_epochs"),
    ("multistep", {"milestones": [60, 30]}, "milestones"),
    ("multistep", {"gamma": -0.1}, "gamma"),
    ("exponential", {"gamma": 1.5}, "gamma"),
    ("inverse", {"power": 0.0}, "power"),
    ("poly", {"power": -1.0}, "power"),
    ("sigmoid", {"gamma": 0.5}, "gamma"),
    ("cosine", {"lr_min": -1e-3}, "lr_min"),
    ("cyclic", {"base_lr_factor": 1.5}, "base_lr_factor"),
    ("cyclic", {"mode": "sawtooth"}, "mode"),
    ("linear_warmup", {"epochs": -1.0}, "epochs"),
    ("constant_warmup", {"factor": 0.0}, "factor"),
    ("linear_scaling", {"base_batch": 0}, "base_batch"),
])
def test_bad_params_raise_trick_error(name, params, param):
    with pytest.raises(tr.TrickError) as err:
        tr.build_trick(name, **params)
    assert err.value.trick == name and err.value.param == param
    assert name in str(err.value) and param in str(err.value)
