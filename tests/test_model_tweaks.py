"""ResNet-A/B/C/D against timm's own networks and the paper's Table 5."""
import pytest
import timm
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import model_tweaks
from model_tweaks import torchvision_resnet
from model_tweaks.resnet_tweaks import BottleneckA

ALL_NAMES = [f"resnet{d}_v1{v}" for d in (18, 34, 50, 101, 152) for v in "abcd"]


def test_twenty_names_registered_and_listed():
    assert sorted(model_tweaks.model_names()) == sorted(ALL_NAMES)
    assert set(timm.list_models("resnet*_v1d")) == {f"resnet{d}_v1d" for d in (18, 34, 50, 101, 152)}
    for name in ALL_NAMES:
        cfg = timm.models.get_pretrained_cfg(name)
        assert cfg is not None and cfg.input_size == (3, 224, 224) and cfg.crop_pct == 0.875
        assert cfg.mean == timm.data.IMAGENET_DEFAULT_MEAN and cfg.std == timm.data.IMAGENET_DEFAULT_STD


def test_no_timm_name_overwritten():
    # our names are new: none of them is one of timm's own resnet entrypoints
    for name in ALL_NAMES:
        assert timm.models.model_entrypoint(name).__module__ == "model_tweaks.resnet_tweaks"
    for timm_name in ("resnet50", "resnet50c", "resnet50d", "resnet18"):
        assert timm.models.model_entrypoint(timm_name).__module__ == "timm.models.resnet"


def test_each_entry_point_writes_out_the_variant_rule(monkeypatch):
    """The 20 explicit ``@register_model`` builders pass timm's ResNet what ``variant_args`` says (gamma 1 included)."""
    from model_tweaks import resnet_tweaks

    seen = {}
    monkeypatch.setattr(resnet_tweaks, "build_model_with_cfg",
                        lambda cls, name, pretrained, **kwargs: seen.setdefault(name, (cls, pretrained, kwargs)))
    for name in ALL_NAMES:
        depth, variant = int(name[len("resnet"):name.index("_")]), name[-1]
        timm.models.model_entrypoint(name)()
        assert seen[name] == (timm.models.resnet.ResNet, False, resnet_tweaks.variant_args(depth, variant)), name


@pytest.mark.parametrize("name", ALL_NAMES)
@torch.no_grad()
def test_builds_and_runs_forward(name):
    size = 224 if name.startswith("resnet50_") else 64
    model = timm.create_model(name, num_classes=7).eval()
    out = model(torch.randn(1, 3, size, size))
    assert out.shape == (1, 7) and torch.isfinite(out).all()


@pytest.mark.parametrize("ours,theirs", [
    ("resnet50_v1b", "resnet50"), ("resnet50_v1c", "resnet50c"), ("resnet50_v1d", "resnet50d"),
    ("resnet18_v1d", "resnet18d"), ("resnet101_v1c", "resnet101c"),
])
@torch.no_grad()
def test_strict_load_from_timm_gives_equal_outputs(ours, theirs):
    torch.manual_seed(0)
    ref = timm.create_model(theirs).eval()
    for p in ref.parameters():  # zero-init-last would hide differences in bn3: make every weight count
        p.add_(0.01 * torch.randn_like(p))
    model = timm.create_model(ours).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 96, 96)
    assert torch.equal(model(x), ref(x))


def test_v1a_has_resnet50_shapes_and_stride_in_first_1x1():
    a, b = timm.create_model("resnet50_v1a"), timm.create_model("resnet50_v1b")
    ref = timm.create_model("resnet50")
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    for stage in ("layer2", "layer3", "layer4"):
        block_a, block_b = getattr(a, stage)[0], getattr(b, stage)[0]
        assert isinstance(block_a, BottleneckA)
        assert block_a.conv1.stride == (2, 2) and block_a.conv2.stride == (1, 1)
        assert block_b.conv1.stride == (1, 1) and block_b.conv2.stride == (2, 2)
        for blk in list(getattr(a, stage))[1:]:
            assert blk.conv1.stride == (1, 1) and blk.conv2.stride == (1, 1)
    assert a.layer1[0].conv1.stride == (1, 1) and a.layer1[0].conv2.stride == (1, 1)
    # the strided 1x1 conv sees only one pixel in four: output at 224 is still 7x7
    assert a.forward_features(torch.zeros(1, 3, 224, 224)).shape[-2:] == (7, 7)


def test_basic_block_depths_a_equals_b():
    torch.manual_seed(0)
    a, b = timm.create_model("resnet18_v1a").eval(), timm.create_model("resnet18_v1b").eval()
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_gamma_starts_at_one_unless_zero_init_last():
    model = timm.create_model("resnet50_v1d")
    assert all(torch.all(blk.bn3.weight == 1) for blk in model.layer1)
    model = timm.create_model("resnet50_v1d", zero_init_last=True)
    assert all(torch.all(blk.bn3.weight == 0) for blk in model.layer1)


@pytest.mark.parametrize("variant,paper_gflops", [("a", 3.9), ("b", 4.1), ("c", 4.3), ("d", 4.3)])
@torch.no_grad()
def test_gmacs_match_paper_table5(variant, paper_gflops):
    model = timm.create_model(f"resnet50_v1{variant}").eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 224, 224))
    gmacs = counter.get_total_flops() / 2e9  # the paper's "FLOPs" are multiply-adds
    assert abs(gmacs - paper_gflops) / paper_gflops < 0.02, gmacs


@pytest.mark.parametrize("variant", "abcd")
@torch.no_grad()
def test_features_only_gives_four_stages(variant):
    model = timm.create_model(f"resnet50_v1{variant}", features_only=True, out_indices=(1, 2, 3, 4)).eval()
    feats = model(torch.zeros(1, 3, 128, 128))
    assert [f.shape[1] for f in feats] == [256, 512, 1024, 2048]
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4]
    assert model.feature_info.channels() == [256, 512, 1024, 2048]


@pytest.mark.parametrize("variant", "abcd")
@torch.no_grad()
def test_torchvision_builder_matches_timm_variant(variant):
    tv = torchvision_resnet(50, variant, num_classes=10).eval()
    assert isinstance(tv, torchvision.models.ResNet)
    ours = timm.create_model(f"resnet50_v1{variant}", num_classes=10).eval()
    with FlopCounterMode(display=False) as c1:
        tv(torch.zeros(1, 3, 224, 224))
    with FlopCounterMode(display=False) as c2:
        ours(torch.zeros(1, 3, 224, 224))
    assert c1.get_total_flops() == c2.get_total_flops()
    assert sum(p.numel() for p in tv.parameters()) == sum(p.numel() for p in ours.parameters())


def _tv_keys_after_tweak(ref_keys, variant):
    keys = set(ref_keys)
    if variant in "cd":
        keys.discard("conv1.weight")
        keys |= {"conv1.0.weight", "conv1.3.weight", "conv1.6.weight"}
        keys |= {f"conv1.{i}.{s}" for i in (1, 4)
                 for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    if variant == "d":
        def shift(k):
            if ".downsample." not in k or k.startswith("layer1."):
                return k
            prefix, rest = k.split(".downsample.")
            idx, tail = rest.split(".", 1)
            return f"{prefix}.downsample.{int(idx) + 1}.{tail}"
        keys = {shift(k) for k in keys}
    return keys


@pytest.mark.parametrize("variant", "abcd")
def test_torchvision_builder_keys_are_torchvisions(variant):
    ref = torchvision.models.resnet50(weights=None).state_dict().keys()
    model = torchvision_resnet(50, variant)
    assert set(model.state_dict().keys()) == _tv_keys_after_tweak(ref, variant)
    if variant == "d":
        assert isinstance(model.layer2[0].downsample[0], nn.AvgPool2d)
        assert model.layer2[0].downsample[1].stride == (1, 1)
        assert isinstance(model.layer1[0].downsample[0], nn.Conv2d)  # stride 1: no pool
    out = model(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 1000)


def test_torchvision_builder_dilation_for_segmentation():
    model = torchvision_resnet(50, "d", replace_stride_with_dilation=[False, True, True]).eval()
    feats = nn.Sequential(*list(model.children())[:-2])
    with torch.no_grad():
        assert feats(torch.zeros(1, 3, 64, 64)).shape[-1] == 8  # output stride 8, as FCN expects


def test_bad_depth_or_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="depth 42"):
        torchvision_resnet(42, "d")
    with pytest.raises(ValueError, match="variant 'e'"):
        torchvision_resnet(50, "e")
