"""Batch mixers against references: mixup's and CutMix's definitions, timm's own ``Mixup`` (same numpy
RNG state), and RICAP's patch areas checked against the pixels actually taken from each image."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tricks_registry import TrickError, build_trick, get_trick
from tricks_registry.tricks.mixing import batch_transform, ricap_batch

K = 10


def _onehot(labels, k=K):
    return F.one_hot(labels, k).float()


def _batch(b=6, h=16, w=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, h, w, generator=g, dtype=torch.float64)
    labels = torch.randperm(K, generator=g)[:b]  # distinct labels: no accidental overlaps
    return x, labels


def test_registered_with_defaults():
    assert get_trick("mixup").param("alpha").default == 0.2
    assert get_trick("cutmix").param("alpha").default == 1.0
    assert get_trick("ricap").param("beta").default == 0.3
    for name in ("mixup", "cutmix", "ricap"):
        spec = get_trick(name)
        assert spec.kind == "loss" and spec.param("prob").default == 1.0
        part = build_trick(name)
        assert part.name == name and part.trick == name
    assert build_trick("mixup", alpha=0.4).timm_args["mixup"] == 0.4
    assert build_trick("cutmix").timm_args["cutmix"] == 1.0


@pytest.mark.parametrize("name,param", [("mixup", "alpha"), ("cutmix", "alpha"), ("ricap", "beta")])
@pytest.mark.parametrize("value", [0.0, -0.5])
def test_nonpositive_alpha_or_beta_raises(name, param, value):
    with pytest.raises(TrickError) as err:
        build_trick(name, **{param: value})
    assert err.value.trick == name and err.value.param == param


@pytest.mark.parametrize("kwargs,param", [({"prob": 1.5}, "prob"), ({"prob": -0.1}, "prob"),
                                          ({"weight": 0.0}, "weight")])
def test_bad_prob_or_weight_raises(kwargs, param):
    with pytest.raises(TrickError) as err:
        build_trick("mixup", **kwargs)
    assert err.value.param == param


def test_no_mixers_gives_onehot_and_smoothing():
    x, labels = _batch()
    out_x, t = batch_transform([], None, K)(x.clone(), labels)
    assert torch.equal(out_x, x) and torch.equal(t, _onehot(labels))
    ls = build_trick("label_smoothing", epsilon=0.1)
    _, t = batch_transform([], ls, K)(x.clone(), labels)
    assert torch.equal(t, ls.smooth(_onehot(labels)))
    with pytest.raises(TrickError, match="class indices"):
        batch_transform([], None, K)(x, _onehot(labels))


@pytest.mark.parametrize("b", [6, 5])
def test_mixup_targets_and_images_are_the_lam_combination(b):
    x, labels = _batch(b=b)
    alpha = 0.2
    fn = batch_transform([build_trick("mixup", alpha=alpha)], None, K)
    np.random.seed(123)
    out_x, t = fn(x.clone(), labels)
    np.random.seed(123)  # replay the draws: "mixed?" then lambda ~ Beta(alpha, alpha)
    assert np.random.rand() < 1.0
    lam = float(np.random.beta(alpha, alpha))
    assert 0.0 < lam < 1.0
    assert torch.allclose(t, (lam * _onehot(labels) + (1 - lam) * _onehot(labels.flip(0))).float(), atol=1e-6)
    assert torch.allclose(out_x, lam * x + (1 - lam) * x.flip(0), atol=1e-12)
    assert torch.allclose(t.sum(-1), torch.ones(b))


def test_uniform_smoothing_plus_mixup_equals_timm_mixup_label_smoothing():
    from timm.data import Mixup

    x, labels = _batch()
    eps = 0.1
    ls = build_trick("label_smoothing", epsilon=eps, form="uniform")
    ours = batch_transform([build_trick("mixup", alpha=0.4), build_trick("cutmix", alpha=1.0)], ls, K)
    ref = Mixup(mixup_alpha=0.4, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode="batch",
                label_smoothing=eps, num_classes=K)
    seen_cut = seen_mix = False
    for seed in range(8):
        np.random.seed(seed)
        ox, ot = ours(x.clone(), labels)
        np.random.seed(seed)
        rx, rt = ref(x.clone(), labels)
        assert torch.equal(ox, rx)
        assert torch.allclose(ot, rt, atol=1e-6)
        pasted = (ox == x.flip(0)).all(1) & (ox != x).all(1)
        seen_cut |= bool(pasted.any())
        seen_mix |= bool(((ox != x) & (ox != x.flip(0))).any())
    assert seen_cut and seen_mix  # both branches of timm's switch were exercised


def test_cutmix_target_weight_is_the_pasted_area():
    x, labels = _batch(b=4, h=20, w=16)
    fn = batch_transform([build_trick("cutmix", alpha=1.0)], None, K)
    checked = 0
    for seed in range(6):
        np.random.seed(seed)
        out_x, t = fn(x.clone(), labels)
        flipped, ylab = x.flip(0), labels.flip(0)
        for i in range(len(x)):
            from_other = (out_x[i] == flipped[i]).all(0) & (out_x[i] != x[i]).all(0)
            kept = (out_x[i] == x[i]).all(0)
            assert bool((from_other | kept).all())  # every pixel comes from one of the two
            frac = from_other.double().mean().item()
            assert math.isclose(t[i, ylab[i]].item(), frac, abs_tol=1e-6)
            assert math.isclose(t[i, labels[i]].item(), 1 - frac, abs_tol=1e-6)
            checked += frac > 0
    assert checked > 0


def _constant_images(b, h, w):
    """Image i is constant i (every channel): a pixel tells which image it came from."""
    return torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, h, w).clone()


@pytest.mark.parametrize("seed", range(5))
def test_ricap_label_weights_are_patch_areas_of_the_source_images(seed):
    b, h, w = 8, 12, 20
    x = _constant_images(b, h, w)
    labels = torch.arange(b)  # class = image index, so a pixel's value is its label
    np.random.seed(seed)
    out, t, info = ricap_batch(x, labels, K, beta=0.3)
    assert out.shape == x.shape
    assert math.isclose(sum(info["weights"]), 1.0, rel_tol=1e-12)
    assert torch.allclose(t.sum(-1), torch.ones(b), atol=1e-6)
    for i in range(b):
        counts = torch.bincount(out[i, 0].flatten().long(), minlength=K).double() / (h * w)
        assert torch.allclose(t[i].double(), counts, atol=1e-6), (i, t[i], counts)
    # the weights are the patch sizes: (h, w), (h, W-w), (H-h, w), (H-h, W-w)
    (ph, pw), *_ = info["sizes"]
    assert [hh * ww for hh, ww in info["sizes"]] == [ph * pw, ph * (w - pw), (h - ph) * pw, (h - ph) * (w - pw)]


def test_ricap_patches_are_crops_of_the_permuted_batch():
    x, labels = _batch(b=5, h=16, w=16, seed=7)
    np.random.seed(3)
    out, t, info = ricap_batch(x, labels, K, beta=0.3)
    ph, pw = info["sizes"][0]
    corners = [(0, 0), (0, pw), (ph, 0), (ph, pw)]
    expected = torch.zeros(5, K)
    for (hh, ww), (top, left), (r0, c0), perm, wt in zip(info["sizes"], info["offsets"], corners,
                                                         info["perms"], info["weights"]):
        crop = x[torch.as_tensor(perm), :, top:top + hh, left:left + ww]
        assert torch.equal(out[:, :, r0:r0 + hh, c0:c0 + ww], crop)
        assert math.isclose(wt, hh * ww / 256)
        expected += wt * _onehot(labels[torch.as_tensor(perm)])
    assert torch.allclose(t, expected, atol=1e-6)


def test_ricap_through_batch_transform_with_smoothing():
    b, h, w = 6, 8, 8
    x, labels = _constant_images(b, h, w), torch.arange(b)
    ls = build_trick("label_smoothing", epsilon=0.2)
    fn = batch_transform([build_trick("ricap")], ls, K)
    np.random.seed(11)
    out, t = fn(x, labels)
    np.random.seed(11)
    assert np.random.rand() < 1.0  # the "mixed?" draw
    out2, t2, _ = ricap_batch(x, labels, K, beta=0.3)
    assert torch.equal(out, out2) and torch.allclose(t, ls.smooth(t2), atol=1e-7)


def test_ricap_and_mixup_are_drawn_by_weight():
    b, h, w = 4, 8, 8
    x, labels = _constant_images(b, h, w), torch.arange(b)
    fn = batch_transform([build_trick("ricap", weight=3.0), build_trick("mixup", alpha=1.0)], None, K)
    np.random.seed(0)
    n, ricap_count = 400, 0
    for _ in range(n):
        out, t = fn(x.clone(), labels)
        # RICAP copies pixels (integers here); mixup blends image i with 3 - i (non-integers)
        is_ricap = bool((out == out.round()).all())
        assert is_ricap or bool((out != out.round()).all())
        ricap_count += is_ricap
    assert abs(ricap_count / n - 0.75) < 0.08, ricap_count


def test_prob_zero_never_mixes():
    x, labels = _batch()
    fn = batch_transform([build_trick("mixup", prob=0.0), build_trick("ricap", prob=0.0)], None, K)
    for _ in range(5):
        out, t = fn(x.clone(), labels)
        assert torch.equal(out, x) and torch.equal(t, _onehot(labels))


def test_mixup_cutmix_weights_set_timm_switch_prob():
    from timm.data import Mixup

    x, labels = _batch()
    fn = batch_transform([build_trick("mixup", weight=1.0), build_trick("cutmix", weight=3.0, alpha=1.0)],
                         None, K)
    ref = Mixup(mixup_alpha=0.2, cutmix_alpha=1.0, prob=1.0, switch_prob=0.75, label_smoothing=0.0,
                num_classes=K)
    for seed in range(4):
        np.random.seed(seed)
        ox, ot = fn(x.clone(), labels)
        np.random.seed(seed)
        rx, rt = ref(x.clone(), labels)
        assert torch.equal(ox, rx) and torch.equal(ot, rt)
