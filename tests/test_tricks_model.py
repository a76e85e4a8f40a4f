"""Tests for the init tricks (xavier_init, kaiming_init, zero_gamma) and the model tricks (dropout, ic_layer),
on timm's and torchvision's ResNets."""
from __future__ import annotations

import copy
import math
import re

import pytest
import timm
import model_tweaks  # noqa: F401  (registers resnet*_v1a/b/c/d into timm)
import torch
import torchvision
from torch import nn

import tricks_registry
from tricks_registry import TrickError, build_trick, compose
from tricks_registry.parts import ModelTransform
from tricks_registry.tricks.layers import ICLayer

# timm's ResNets zero-initialise the last BNs by default; build them at the paper's baseline (gamma = 1)
# so that zero_gamma has something to change.
MODELS = {
    "timm_resnet18": lambda: timm.create_model("resnet18", zero_init_last=False),
    "timm_resnet50": lambda: timm.create_model("resnet50", zero_init_last=False),
    "timm_resnet50d": lambda: timm.create_model("resnet50d", zero_init_last=False),
    "tv_resnet18": lambda: torchvision.models.resnet18(weights=None),
    "tv_resnet50": lambda: torchvision.models.resnet50(weights=None),
}
BOTTLENECK = {"timm_resnet18": False, "timm_resnet50": True, "timm_resnet50d": True,
              "tv_resnet18": False, "tv_resnet50": True}
N_BLOCKS = {False: 8, True: 16}  # resnet18: 2+2+2+2 basic blocks, resnet50: 3+4+6+3 bottlenecks


def make(name: str) -> nn.Module:
    torch.manual_seed(0)
    return MODELS[name]()


# ---------------------------------------------------------------------------------------------- parts

@pytest.mark.parametrize("trick, stage, exclusive", [
    ("xavier_init", "init", "init"), ("kaiming_init", "init", "init"), ("zero_gamma", "zero_gamma", ""),
    ("dropout", "structure", ""), ("ic_layer", "structure", ""),
])
def test_parts(trick, stage, exclusive):
    spec = tricks_registry.get_trick(trick)
    assert spec.kind == ("model" if trick in ("dropout", "ic_layer") else "init")
    part = build_trick(trick)
    assert isinstance(part, ModelTransform)
    assert (part.stage, part.exclusive, part.trick) == (stage, exclusive, trick)


def test_init_tricks_are_exclusive():
    with pytest.raises(TrickError, match="conflicts with 'xavier_init'"):
        compose([build_trick("xavier_init"), build_trick("kaiming_init")])


def test_compose_orders_structure_then_init_then_zero_gamma():
    pipe = compose([build_trick("zero_gamma"), build_trick("xavier_init"), build_trick("ic_layer", placement="added")])
    assert [t.trick for t in pipe.model_transforms] == ["ic_layer", "xavier_init", "zero_gamma"]
    model = make("timm_resnet18")
    for t in pipe.model_transforms:
        model = t.apply(model)
    # zero gamma survived the init that ran before it; the init reset every other BN to gamma 1
    for name, p in model.named_parameters():
        if re.fullmatch(r"layer\d\.\d+\.bn2\.weight", name):
            assert torch.count_nonzero(p) == 0, name
        elif name.endswith(("bn1.weight", "ic.bn.weight", "downsample.1.weight")):
            assert torch.equal(p, torch.ones_like(p)), name


# -------------------------------------------------------------------------------------------- xavier

def _fans(w: torch.Tensor) -> tuple[int, int]:
    """fan-in, fan-out computed here from the shape: channels times kernel area."""
    area = math.prod(w.shape[2:]) if w.dim() > 2 else 1
    return w.shape[1] * area, w.shape[0] * area


@pytest.mark.parametrize("name", ["timm_resnet50", "tv_resnet18"])
def test_xavier_init(name):
    model = make(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    build_trick("xavier_init").apply(model)
    n_weights = 0
    for mname, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in, fan_out = _fans(m.weight)
            a = math.sqrt(6.0 / (fan_in + fan_out))
            a32 = torch.tensor(a, dtype=torch.float32).item()  # the bound as float32 draws see it
            assert m.weight.abs().max().item() <= a32, mname
            assert not torch.equal(m.weight, before[f"{mname}.weight"]), mname
            if m.bias is not None:
                assert torch.count_nonzero(m.bias) == 0, mname
            n_weights += 1
        elif isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)), mname
            assert torch.count_nonzero(m.bias) == 0, mname
    assert n_weights > 10
    # the variance of U(-a, a) is a^2 / 3; check it on the biggest layers (millions of draws)
    big = [model.fc, model.layer4[-1].conv2] if name == "timm_resnet50" else [model.layer4[-1].conv2]
    for m in big:
        fan_in, fan_out = _fans(m.weight)
        a2 = 6.0 / (fan_in + fan_out)
        assert m.weight.var().item() == pytest.approx(a2 / 3, rel=0.01)
        assert m.weight.abs().max().item() == pytest.approx(math.sqrt(a2), rel=0.01)  # uniform reaches its bound


def test_xavier_resets_zeroed_gammas():
    model = timm.create_model("resnet18")  # timm default: last BNs at gamma 0
    assert torch.count_nonzero(model.layer1[0].bn2.weight) == 0
    build_trick("xavier_init").apply(model)
    assert torch.equal(model.layer1[0].bn2.weight, torch.ones(64))


# ------------------------------------------------------------------------------------------- kaiming

@pytest.mark.parametrize("name", ["timm_resnet50", "tv_resnet50"])
def test_kaiming_init(name):
    model = make(name)
    model.fc.bias.data.fill_(3.0)
    build_trick("kaiming_init").apply(model)
    fc = model.fc  # 1000 x 2048: 2M draws
    assert fc.weight.std().item() == pytest.approx(0.01, rel=0.01)
    assert abs(fc.weight.mean().item()) < 1e-4
    assert torch.count_nonzero(fc.bias) == 0
    for conv in (model.layer4[-1].conv2, model.layer4[-1].conv3):  # 512x512x3x3; 2048x512x1x1 (fan_out != fan_in)
        _, fan_out = _fans(conv.weight)
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.01)
        assert abs(conv.weight.mean().item()) < 1e-4
    for mname, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):  # timm's zeroed last BNs included (zero_init_last=False or not)
            assert torch.equal(m.weight, torch.ones_like(m.weight)), mname
            assert torch.count_nonzero(m.bias) == 0, mname


def test_kaiming_conv_std_differs_from_xavier():
    """The two inits are different distributions on the same layer (so the tests above can tell them apart)."""
    model = make("timm_resnet50")
    conv = model.layer4[-1].conv2
    build_trick("xavier_init").apply(model)
    std_x = conv.weight.std().item()
    build_trick("kaiming_init").apply(model)
    std_k = conv.weight.std().item()
    assert std_k / std_x == pytest.approx(math.sqrt(2.0 / 4608) / math.sqrt(6.0 / 9216 / 3), rel=0.02)


# ---------------------------------------------------------------------------------------- zero gamma

@pytest.mark.parametrize("name", list(MODELS))
def test_zero_gamma_changes_exactly_the_last_bn_gammas(name):
    model = make(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    build_trick("zero_gamma").apply(model)
    after = model.state_dict()
    assert after.keys() == before.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    last = "bn3" if BOTTLENECK[name] else "bn2"
    expected = {k for k in before if re.fullmatch(rf"layer[1-4]\.\d+\.{last}\.weight", k)}
    assert len(expected) == N_BLOCKS[BOTTLENECK[name]]
    assert changed == expected
    for k in expected:
        assert torch.count_nonzero(after[k]) == 0, k


def test_zero_gamma_on_torchvision_resnet_d():
    from model_tweaks.torchvision_tweaks import torchvision_resnet

    model = torchvision_resnet(50, "d")
    build_trick("zero_gamma").apply(model)
    zeroed = {k for k, v in model.state_dict().items() if k.endswith("weight") and v.dim() == 1
              and torch.count_nonzero(v) == 0}
    assert zeroed == {f"layer{i}.{j}.bn3.weight" for i, n in enumerate((3, 4, 6, 3), 1) for j in range(n)}


def test_zero_gamma_matches_torchvision_zero_init_residual():
    torch.manual_seed(0)
    ours = torchvision.models.resnet50(weights=None)
    torch.manual_seed(0)
    ref = torchvision.models.resnet50(weights=None, zero_init_residual=True)
    build_trick("zero_gamma").apply(ours)
    for (k, a), (_, b) in zip(ours.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a, b), k


def test_zero_gamma_needs_residual_blocks():
    plain = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
    with pytest.raises(TrickError, match="found no residual block"):
        build_trick("zero_gamma").apply(plain)


# ------------------------------------------------------------------------------------------- dropout

@pytest.mark.parametrize("name", ["timm_resnet18", "tv_resnet18"])
def test_dropout_keeps_state_dict_and_eval_output(name):
    base = make(name).eval()
    model = build_trick("dropout", p=0.5).apply(copy.deepcopy(base))
    assert list(model.state_dict()) == list(base.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), base(x))


@pytest.mark.parametrize("name", ["timm_resnet18", "tv_resnet18"])
@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_drops_classifier_input_in_training(name, p):
    model = make(name)
    seen: dict[str, torch.Tensor] = {}
    fc = model.fc  # timm's and torchvision's ResNets both call the classifier fc
    fc.register_forward_pre_hook(lambda m, args: seen.__setitem__("before", args[0].detach().clone()))
    build_trick("dropout", p=p).apply(model)
    fc.register_forward_pre_hook(lambda m, args: seen.__setitem__("after", args[0].detach().clone()))
    model.train()
    torch.manual_seed(1)
    out = model(torch.randn(16, 3, 64, 64))
    assert out.shape == (16, 1000)
    before, after = seen["before"], seen["after"]
    alive = before != 0
    assert alive.sum() > 4000
    dropped = after[alive] == 0
    # inverted dropout: survivors scaled by 1 / (1 - p), the rest zero
    kept = ~dropped
    torch.testing.assert_close(after[alive][kept], before[alive][kept] / (1 - p))
    assert dropped.float().mean().item() == pytest.approx(p, abs=0.03)


def test_dropout_refuses_double_dropout_and_bad_p():
    with pytest.raises(TrickError, match="drop_rate"):
        build_trick("dropout").apply(timm.create_model("resnet18", drop_rate=0.3))
    model = torchvision.models.resnet18(weights=None)
    build_trick("dropout").apply(model)
    with pytest.raises(TrickError, match="already applied"):
        build_trick("dropout").apply(model)
    with pytest.raises(TrickError, match="no classifier"):
        build_trick("dropout").apply(timm.create_model("resnet18", num_classes=0))


@pytest.mark.parametrize("trick", ["dropout", "ic_layer"])
@pytest.mark.parametrize("p", [1.0, -0.1, 1.5])
def test_p_out_of_range(trick, p):
    with pytest.raises(TrickError) as err:
        build_trick(trick, p=p)
    assert err.value.trick == trick and err.value.param == "p"


@pytest.mark.parametrize("trick", ["dropout", "ic_layer"])
def test_p_zero_is_allowed(trick):
    assert isinstance(build_trick(trick, p=0.0), ModelTransform)


# ------------------------------------------------------------------------------------------ ic layer

def _leaf_execution_order(model: nn.Module, x: torch.Tensor) -> list[nn.Module]:
    order: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda mod, i, o: order.append(mod))
               for m in model.modules() if not list(m.children())]
    model(x)
    for h in handles:
        h.remove()
    return order


def _n_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("placement", ["paper", "added"])
@pytest.mark.parametrize("name", ["timm_resnet18", "timm_resnet50d", "tv_resnet50"])
def test_ic_layer_puts_bn_then_dropout_before_every_branch_conv(name, placement):
    base = make(name)
    branch_convs = [m for mname, m in base.named_modules()
                    if re.fullmatch(r"layer[1-4]\.\d+\.conv\d", mname)]
    other_convs = [m for m in base.modules() if isinstance(m, nn.Conv2d) and
                   not any(m is c for c in branch_convs)]
    assert len(branch_convs) == N_BLOCKS[BOTTLENECK[name]] * (3 if BOTTLENECK[name] else 2)
    n_bn = _n_bn(base)
    model = build_trick("ic_layer", p=0.1, placement=placement).apply(base)
    model.train()
    order = _leaf_execution_order(model, torch.randn(2, 3, 32, 32))
    for conv in branch_convs:
        i = next(k for k, m in enumerate(order) if m is conv)
        bn, drop = order[i - 2], order[i - 1]
        assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == conv.in_channels
        assert isinstance(drop, nn.Dropout) and drop.p == 0.1
        after = next(m for m in order[i + 1:] if not isinstance(m, nn.Identity))
        if placement == "paper":  # the BN moved: the conv feeds the ReLU (or the sum) directly
            assert not isinstance(after, nn.BatchNorm2d)
        else:  # the block keeps its own conv-BN
            assert isinstance(after, nn.BatchNorm2d) and after.num_features == conv.out_channels
    for conv in other_convs:  # stem and shortcut convs: no IC layer in front, their BN after them
        i = next(k for k, m in enumerate(order) if m is conv)
        assert i == 0 or not isinstance(order[i - 1], nn.Dropout)
        assert isinstance(order[i + 1], nn.BatchNorm2d)
    n_ic = sum(isinstance(m, ICLayer) for m in model.modules())
    assert n_ic == len(branch_convs)
    # paper: every branch BN moved in front of its conv, none added; added: one more BN per branch conv
    assert _n_bn(model) == n_bn + (0 if placement == "paper" else len(branch_convs))


def test_ic_layer_bn_count_on_resnet50d():
    """ResNet-50-D has 55 BN layers (3 deep-stem, 48 branch, 4 shortcut); the paper's placement keeps them,
    the 'added' one adds 48."""
    counts = {}
    for placement in ("paper", "added"):
        model = make("timm_resnet50d")
        assert _n_bn(model) == 55
        counts[placement] = _n_bn(build_trick("ic_layer", placement=placement).apply(model))
    assert counts == {"paper": 55, "added": 103}


def test_tricks_show_ic_layer_says_what_changes_in_a_block(capsys):
    from tricks_registry.cli import main

    assert main(["show", "ic_layer"]) == 0
    out = capsys.readouterr().out
    assert "placement: " in out and "'paper'" in out
    assert "BN-Drop-conv1-ReLU-BN-Drop-conv2-ReLU-BN-Drop-conv3 (+ shortcut) ReLU" in out
    assert "55 BN layers" in out and "55 -> 103" in out


def test_ic_layer_paper_placement_refuses_a_block_without_its_bn():
    model = make("tv_resnet18")
    model.layer1[0].bn1 = nn.Identity()
    with pytest.raises(TrickError, match="use placement 'added'") as err:
        build_trick("ic_layer").apply(model)
    assert err.value.param == "placement"
    build_trick("ic_layer", placement="added").apply(model)  # the added placement needs no BN there
    with pytest.raises(TrickError):
        build_trick("ic_layer", placement="moved")


def _cifar_batch(folder, n: int = 64) -> torch.Tensor:
    from PIL import Image

    files = sorted(folder.glob("train/*/*.jpg"))[:n]
    x = torch.stack([torch.from_numpy(__import__("numpy").asarray(Image.open(f).convert("RGB"), dtype="float32"))
                     for f in files]).permute(0, 3, 1, 2) / 255.0
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    return (x - mean[:, None, None]) / std[:, None, None]


def _mean_abs_offdiag_corr(a: torch.Tensor) -> float:
    """Mean |Pearson correlation| over every pair of channels; the samples are the (image, position) pairs."""
    flat = a.detach().permute(1, 0, 2, 3).reshape(a.shape[1], -1).double()
    c = torch.corrcoef(flat)
    off = c[~torch.eye(len(c), dtype=torch.bool)]
    return off.abs().mean().item()


@pytest.mark.parametrize("name", ["timm_resnet18", "timm_resnet50d"])
def test_ic_layer_dropout_cuts_the_correlation_of_its_outputs_by_1_minus_p(name, cifar_subset):
    """Chen et al. 2019, section 3: after BN (zero mean), Dropout(p) multiplies the correlation of any pair of
    outputs by (1 - p). Measured on real images, at the first IC layer (its input does not depend on p) and at
    one deep in the network (its input carries the dropout of every IC layer before it)."""
    x = _cifar_batch(cifar_subset)
    first, deep = "layer1.0.conv1.ic", "layer3.0.conv2.ic"
    measured: dict[str, list[float]] = {first: [], deep: []}
    ps = [0.0, 0.1, 0.3, 0.5]
    for p in ps:
        model = build_trick("ic_layer", p=p).apply(make(name)).train()
        outs = {}
        for key in measured:
            model.get_submodule(key).register_forward_hook(lambda m, i, o, key=key: outs.__setitem__(key, o))
        torch.manual_seed(0)
        with torch.no_grad():
            model(x)
        for key in measured:
            measured[key].append(_mean_abs_offdiag_corr(outs[key]))
    base = measured[first][0]
    assert base > 0.05  # real activations are correlated to begin with
    for p, corr in zip(ps[1:], measured[first][1:]):
        assert corr == pytest.approx((1 - p) * base, rel=0.03), (p, corr, base)
    for key in measured:  # and it falls as p grows, deep in the network too
        assert all(a > b for a, b in zip(measured[key], measured[key][1:])), (key, measured[key])


@pytest.mark.parametrize("name", ["timm_resnet18", "tv_resnet18"])
def test_ic_layer_forward_train_and_eval(name):
    model = build_trick("ic_layer").apply(make(name))
    x = torch.randn(4, 3, 32, 32)
    model.train()
    torch.manual_seed(0)
    y1 = model(x)
    torch.manual_seed(1)
    y2 = model(x)
    assert y1.shape == (4, 1000)
    assert not torch.equal(y1, y2)  # dropout on in training
    model.eval()
    with torch.no_grad():
        torch.manual_seed(0)
        e1 = model(x)
        torch.manual_seed(1)
        e2 = model(x)
    assert e1.shape == (4, 1000)
    assert torch.equal(e1, e2)  # dropout off in eval


def test_ic_layer_needs_resnet_and_applies_once():
    with pytest.raises(TrickError, match="found no ResNet residual block"):
        build_trick("ic_layer").apply(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()))
    model = build_trick("ic_layer").apply(make("tv_resnet18"))
    with pytest.raises(TrickError, match="already applied"):
        build_trick("ic_layer").apply(model)


def test_zero_gamma_after_the_papers_ic_layer_is_refused_not_silently_skipped():
    import timm

    from tricks_registry import compose
    from tricks_registry.build import apply_model_transforms

    pipeline = compose([build_trick("ic_layer"), build_trick("zero_gamma")])
    with pytest.raises(TrickError, match="trick 'zero_gamma': the residual branches end in a conv"):
        apply_model_transforms(timm.create_model("resnet18_v1d", num_classes=10), pipeline)
    added = compose([build_trick("ic_layer", placement="added"), build_trick("zero_gamma")])
    model = apply_model_transforms(timm.create_model("resnet18_v1d", num_classes=10), added)
    assert torch.count_nonzero(model.layer1[0].bn2.weight) == 0
