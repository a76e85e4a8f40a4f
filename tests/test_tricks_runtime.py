"""Efficiency (amp, channels_last, compile) and control (EMA, early stopping) tricks and their loop helpers."""
import copy
import math

import pytest
import torch
from torch import nn

import tricks_registry as tr
from tricks_registry.parts import (AmpSettings, CompileSettings, EarlyStoppingSettings, EmaSettings, RuntimePart,
                                   RuntimeSettings)
from tricks_registry.tricks import control, efficiency

OFF = RuntimeSettings()  # no runtime trick


def _runtime(*names, **params):
    return tr.compose([tr.build_trick(n, **params.get(n, {})) for n in names]).runtime


# --- amp ----------------------------------------------------------------------------------------

def test_autocast_on_cpu_gives_bfloat16_matmul_and_nothing_without_amp():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    rt = _runtime("amp")
    assert rt.amp == AmpSettings(dtype_cuda="float16", dtype_cpu="bfloat16")
    with efficiency.autocast(rt, "cpu"):
        out = a @ b
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, (a.bfloat16() @ b.bfloat16()))
    with efficiency.autocast(OFF, "cpu"):
        assert (a @ b).dtype == torch.float32
    assert efficiency.amp_dtype(rt, "cuda") == torch.float16
    assert efficiency.amp_dtype(rt, torch.device("cuda:0")) == torch.float16
    assert efficiency.amp_dtype(OFF, "cuda") is None


def test_grad_scaler_only_for_float16_on_cuda(monkeypatch):
    rt = _runtime("amp")
    assert not efficiency.grad_scaler(rt, "cpu").is_enabled()
    assert not efficiency.grad_scaler(OFF, "cpu").is_enabled()
    calls = []

    class Recorder:
        def __init__(self, device, enabled):
            calls.append((device, enabled))

    monkeypatch.setattr(torch.amp, "GradScaler", Recorder)
    efficiency.grad_scaler(rt, "cuda")
    efficiency.grad_scaler(_runtime("amp", amp={"dtype_cuda": "bfloat16"}), "cuda")
    efficiency.grad_scaler(OFF, "cuda")
    efficiency.grad_scaler(rt, "cpu")
    assert calls == [("cuda", True), ("cpu", False), ("cpu", False), ("cpu", False)]


def test_amp_rejects_unknown_dtype():
    with pytest.raises(tr.TrickError) as err:
        tr.build_trick("amp", dtype_cuda="float8")
    assert err.value.param == "dtype_cuda"


# --- channels_last / compile --------------------------------------------------------------------

def test_channels_last_model_and_input_strides_and_same_output():
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=5).eval()
    ref_model = copy.deepcopy(model)
    rt = _runtime("channels_last")
    x = torch.randn(2, 3, 32, 32)
    model = efficiency.prepare_model(model, rt)
    xi = efficiency.prepare_input(x, rt)
    w = model.conv1.weight
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    assert xi.is_contiguous(memory_format=torch.channels_last) and not xi.is_contiguous()
    assert xi.stride() == (3 * 32 * 32, 1, 32 * 3, 3)
    assert torch.equal(xi, x)
    with torch.no_grad():
        assert torch.allclose(model(xi), ref_model(x), atol=1e-5, rtol=1e-5)
    # off: untouched
    assert efficiency.prepare_input(x, OFF) is x
    assert efficiency.prepare_input(torch.randn(2, 3), rt).is_contiguous()
    plain = nn.Conv2d(3, 4, 3)
    assert efficiency.prepare_model(plain, OFF).weight.is_contiguous()


def test_compile_is_requested_last_with_mode(monkeypatch):
    seen = []

    def fake_compile(model, mode="default"):
        seen.append((mode, model.weight.is_contiguous(memory_format=torch.channels_last)))
        return "compiled"

    monkeypatch.setattr(torch, "compile", fake_compile)
    rt = _runtime("compile", "channels_last", compile={"mode": "max-autotune"})
    assert efficiency.prepare_model(nn.Conv2d(3, 4, 3), rt) == "compiled"
    assert seen == [("max-autotune", True)]  # compiled after the memory-format change
    assert efficiency.prepare_model(nn.Conv2d(3, 4, 3), OFF) != "compiled"
    assert len(seen) == 1


# --- EMA ----------------------------------------------------------------------------------------

def _set_weights(model, value_seed):
    g = torch.Generator().manual_seed(value_seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_matches_hand_computed_decay_formula(warmup):
    from timm.utils import ModelEmaV3

    decay = 0.9
    rt = _runtime("ema", ema={"decay": decay, "warmup": warmup})
    model = nn.Linear(3, 2)
    _set_weights(model, 0)
    ema = control.make_ema(model, rt)
    assert isinstance(ema, ModelEmaV3) and ema.decay == decay and ema.use_warmup is warmup
    expected = [p.detach().clone() for p in model.parameters()]
    for step in range(1, 7):
        _set_weights(model, step)
        ema.update(model, step=step)
        # timm: no decay at the first step (copy); afterwards decay, or with warmup
        # min(decay, 1 - (1 + t) ** -2/3) where t = step - 1 (gamma 1, power 2/3)
        t = step - 1
        if t <= 0:
            d = 0.0
        elif warmup:
            d = min(decay, 1 - (1 + t) ** (-2 / 3))
        else:
            d = decay
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, model.parameters())]
        for e, q in zip(expected, ema.module.parameters()):
            assert torch.allclose(q, e, atol=1e-6, rtol=1e-6), step
    assert not torch.allclose(ema.module.weight, model.weight)


def test_ema_without_step_uses_plain_decay_and_off_gives_none():
    model = nn.Linear(2, 2)
    _set_weights(model, 0)
    w0 = model.weight.detach().clone()
    ema = control.make_ema(model, _runtime("ema"))
    assert ema.decay == 0.9998
    _set_weights(model, 1)
    ema.update(model)
    expected = 0.9998 * w0.double() + 0.0002 * model.weight.detach().double()
    assert torch.allclose(ema.module.weight.double(), expected, atol=1e-6, rtol=0)
    assert not torch.allclose(ema.module.weight, w0, atol=1e-5, rtol=0)  # it moved
    assert control.make_ema(model, OFF) is None
    with pytest.raises(tr.TrickError) as err:
        tr.build_trick("ema", decay=1.0)
    assert err.value.param == "decay"


# --- early stopping -----------------------------------------------------------------------------

def test_early_stopping_stops_exactly_after_patience_non_improving_steps():
    rt = _runtime("early_stopping", early_stopping={"patience": 3})
    stopper = control.make_early_stopping(rt)
    assert stopper.metric == "top1" and stopper.patience == 3
    results = [stopper.step(v) for v in [50.0, 60.0, 59.0, 60.0, 55.0]]
    assert results == [False, False, False, False, True]
    assert stopper.best == 60.0
    # an improvement resets the count
    s = control.EarlyStopping(patience=2)
    assert [s.step(v) for v in [1.0, 0.5, 2.0, 1.0, 1.0]] == [False, False, False, False, True]
    assert control.make_early_stopping(OFF) is None


def test_early_stopping_min_mode_min_delta_and_nan():
    s = control.EarlyStopping(patience=2, mode="min", min_delta=0.1)
    assert s.step(1.0) is False
    assert s.step(0.95) is False  # better, but not by more than min_delta: counts as bad
    assert s.best == 1.0 and s.num_bad == 1
    assert s.step(0.8) is False and s.best == 0.8 and s.num_bad == 0
    assert s.step(float("nan")) is False
    assert s.step(0.85) is True


def test_early_stopping_state_round_trips():
    a = control.EarlyStopping(patience=3, mode="max", min_delta=0.5, metric="top5")
    for v in [1.0, 3.0, 2.0]:
        a.step(v)
    b = control.EarlyStopping(patience=10)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    assert b.state_dict() == a.state_dict()
    tail = [3.2, 2.0, 5.0, 1.0, 1.0, 1.0]
    assert [a.step(v) for v in tail] == [b.step(v) for v in tail] == [False, True, False, False, False, True]


@pytest.mark.parametrize("params,param", [
    ({"patience": 0}, "patience"), ({"min_delta": -1.0}, "min_delta"), ({"mode": "up"}, "mode"),
    ({"metric": ""}, "metric"),
])
def test_early_stopping_bad_params(params, param):
    with pytest.raises(tr.TrickError) as err:
        tr.build_trick("early_stopping", **params)
    assert err.value.trick == "early_stopping" and err.value.param == param


def test_runtime_tricks_registered_and_compose():
    kinds = {s.name: s.kind for s in tr.list_tricks()}
    for name in ("amp", "channels_last", "compile"):
        assert kinds[name] == "efficiency"
    for name in ("ema", "early_stopping"):
        assert kinds[name] == "control"
    rt = _runtime("amp", "channels_last", "compile", "ema", "early_stopping")
    assert rt.set_names() == ("amp", "channels_last", "compile", "ema", "early_stopping")
    assert rt.compile == CompileSettings(mode="default") and math.isclose(rt.ema.decay, 0.9998)
    assert rt.early_stopping == EarlyStoppingSettings(patience=10, metric="top1", mode="max", min_delta=0.0)
    assert _runtime("ema", "amp").set_names() == ("amp", "ema") and OFF.set_names() == ()


def test_runtime_settings_are_typed_and_frozen_and_set_once():
    import dataclasses

    rt = _runtime("ema", "channels_last")
    assert isinstance(rt, RuntimeSettings) and rt.ema == EmaSettings(decay=0.9998, warmup=False)
    assert rt.amp is None and rt.compile is None and rt.early_stopping is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        rt.ema = None
    assert dataclasses.replace(rt, ema=None).set_names() == ("channels_last",)
    with pytest.raises(tr.TrickError, match="sets runtime 'ema', which 'ema' sets already") as err:
        tr.compose([tr.build_trick("ema"), RuntimePart(RuntimeSettings(ema=EmaSettings()), trick="my_ema")])
    assert err.value.trick == "my_ema"
    with pytest.raises(tr.TrickError, match="not RuntimeSettings"):
        tr.compose([RuntimePart({"amp": True}, trick="untyped")])
