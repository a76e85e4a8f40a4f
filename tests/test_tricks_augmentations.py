"""Augmentation tricks and the train/eval transform builders, checked against the paper and timm/torchvision."""
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

import tricks_registry as tr
from tricks_registry.tricks import augmentations as aug

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _image(w, h, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _train(*names, size=224, **params):
    parts = [tr.build_trick(n, **params.get(n, {})) for n in names]
    return aug.build_train_transform(parts, input_size=size, mean=MEAN, std=STD)


def _find(transform, cls):
    return [t for t in transform.transforms if isinstance(t, cls)]


# --- PCA lighting --------------------------------------------------------------------------------

def test_pca_lighting_adds_eigvec_times_alpha_eigval_to_each_channel():
    part = tr.build_trick("pca_lighting")
    assert part.stage == "tensor" and isinstance(part.transform, aug.PCALighting) and part.transform.std == 0.1
    img = torch.rand(3, 5, 7)
    light = aug.PCALighting(std=0.1, generator=torch.Generator().manual_seed(123))
    out = light(img)
    alpha = torch.normal(0.0, 0.1, size=(3,), generator=torch.Generator().manual_seed(123)).tolist()
    assert any(abs(a) > 1e-3 for a in alpha)
    eigval, eigvec = aug.IMAGENET_PCA_EIGVAL, aug.IMAGENET_PCA_EIGVEC
    # AlexNet: pixel += [p1 p2 p3] [a1*l1 a2*l2 a3*l3]^T, eigenvectors are the columns
    shift = [sum(eigvec[c][j] * alpha[j] * eigval[j] for j in range(3)) for c in range(3)]
    for c in range(3):
        expected = img[c] + shift[c]
        assert torch.allclose(out[c], expected, atol=1e-7, rtol=0), c
    assert not torch.equal(out, img)
    assert torch.equal(img, img.clone())  # input untouched (pure)


def test_pca_lighting_known_alpha_and_zero_std():
    img = torch.zeros(3, 2, 2)
    out = aug.apply_pca_lighting(img, torch.tensor([1.0, 0.0, 0.0]))
    # alpha = e1 gives eigval[0] * first eigenvector
    expected = torch.tensor([-0.5675, -0.5808, -0.5836]) * 0.2175
    assert torch.allclose(out[:, 0, 0], expected, atol=1e-7, rtol=0)
    assert torch.equal(aug.PCALighting(std=0.0)(img), img)


# --- Cutout -------------------------------------------------------------------------------------

@pytest.mark.parametrize("center,size,box", [
    ((16, 16), 16, (8, 24, 8, 24)),     # fully inside
    ((0, 0), 16, (0, 8, 0, 8)),          # top-left corner: clipped to a quarter
    ((31, 31), 16, (23, 32, 23, 32)),    # bottom-right corner: clipped
    ((0, 20), 16, (0, 8, 12, 28)),       # top edge
    ((10, 10), 5, (8, 13, 8, 13)),       # odd size: exactly 5 wide
])
def test_cutout_zeroes_exactly_one_clipped_square(center, size, box):
    img = torch.rand(3, 32, 32) + 1.0  # no zeros to start with
    out = aug.apply_cutout(img, center[0], center[1], size)
    y1, y2, x1, x2 = box
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[y1:y2, x1:x2] = True
    assert torch.equal(out == 0, mask.expand(3, -1, -1))
    assert torch.equal(out[:, ~mask], img[:, ~mask])
    assert (img > 0).all()  # pure


def test_cutout_transform_draws_centre_uniformly_and_cuts_one_square():
    part = tr.build_trick("cutout")
    assert part.stage == "normalized" and part.transform.size == 16
    img = torch.rand(3, 20, 24) + 1.0
    cut = aug.Cutout(16, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    seen = set()
    for _ in range(20):
        cy = int(torch.randint(0, 20, (1,), generator=g))
        cx = int(torch.randint(0, 24, (1,), generator=g))
        seen.add((cy, cx))
        out = cut(img)
        assert torch.equal(out, aug.apply_cutout(img, cy, cx, 16))
        y1, y2, x1, x2 = aug.cutout_box(cy, cx, 16, 20, 24)
        assert int((out[0] == 0).sum()) == (y2 - y1) * (x2 - x1)
    assert len(seen) > 10


# --- crop / flip / jitter -----------------------------------------------------------------------

def test_inception_crop_area_and_aspect_in_paper_range_on_a_pil_image():
    from timm.data.transforms import RandomResizedCropAndInterpolation

    t = _train("inception_crop")
    crop, = _find(t, RandomResizedCropAndInterpolation)
    assert crop.scale == (0.08, 1.0) and crop.ratio == (0.75, 1.3333333333333333)
    img = _image(400, 300)
    areas, aspects = [], []
    for _ in range(300):
        i, j, h, w = crop.get_params(img, crop.scale, crop.ratio)
        assert 0 <= i and i + h <= 300 and 0 <= j and j + w <= 400
        areas.append(h * w / (400 * 300))
        aspects.append(w / h)
    assert min(areas) >= 0.08 - 0.005 and max(areas) <= 1.0
    assert min(aspects) >= 0.75 - 0.02 and max(aspects) <= 4 / 3 + 0.02
    assert min(areas) < 0.2 and max(areas) > 0.8  # the range is really used
    assert t(img).shape == (3, 224, 224)


def test_no_tricks_is_deterministic_resize_and_centre_crop_only():
    t = _train()
    names = [type(x).__name__ for x in t.transforms]
    assert names == ["Resize", "CenterCrop", "MaybeToTensor", "Normalize"], names
    img = _image(300, 200)
    ref = T.Compose([T.Resize(224), T.CenterCrop(224), T.ToTensor(), T.Normalize(MEAN, STD)])(img)
    for _ in range(3):
        assert torch.equal(t(img), ref)
    square = _image(64, 64, seed=1)
    t32 = _train(size=32)
    expected = TF.normalize(TF.to_tensor(TF.resize(square, [32, 32])), MEAN, STD)
    assert torch.equal(t32(square), expected)


def test_hflip_and_color_jitter_reach_torchvision_with_paper_values():
    t = _train("hflip", "color_jitter")
    flip, = _find(t, T.RandomHorizontalFlip)
    assert flip.p == 0.5
    jitter, = _find(t, T.ColorJitter)
    assert jitter.brightness == (0.6, 1.4) and jitter.saturation == (0.6, 1.4)
    assert jitter.contrast == (0.6, 1.4) and jitter.hue is None
    t2 = _train("color_jitter", color_jitter={"contrast": 0.0, "hue": 0.1})
    j2, = _find(t2, T.ColorJitter)
    assert j2.contrast is None and j2.hue == (-0.1, 0.1)
    flip_always = _train("hflip", size=32, hflip={"prob": 1.0})
    img = _image(32, 32)
    assert torch.equal(flip_always(img), _train(size=32)(img.transpose(Image.FLIP_LEFT_RIGHT)))


def test_autoaugment_randaugment_and_stage_order():
    from timm.data.auto_augment import AutoAugment, RandAugment
    from timm.data.random_erasing import RandomErasing

    t = _train("autoaugment", "color_jitter", "pca_lighting", "cutout", "random_erasing", "random_rotation")
    names = [type(x).__name__ for x in t.transforms]
    assert names[0] == "RandomRotation"  # pil stage: before the crop
    assert _find(t, AutoAugment) and _find(t, T.ColorJitter)  # jitter kept although AA is on
    i = names.index
    assert i("MaybeToTensor") < i("PCALighting") < i("Normalize") < i("Cutout") < i("RandomErasing")  # recipe order
    rot, = _find(t, T.RandomRotation)
    assert rot.degrees == [-15.0, 15.0]
    assert t(_image(250, 230)).shape == (3, 224, 224)
    r = _train("randaugment")
    ra, = _find(r, RandAugment)
    assert ra.num_layers == 2 and all(op.magnitude == 9 and op.magnitude_std == 0.5 for op in ra.ops)
    with pytest.raises(tr.TrickError, match="auto_augment"):
        _train("autoaugment", "randaugment")
    assert isinstance(tr.build_trick("random_erasing").transform, RandomErasing)


def test_random_erasing_uses_timm_random_erasing_with_zhong_values():
    from timm.data.random_erasing import RandomErasing

    t = _train("random_erasing")
    er, = _find(t, RandomErasing)
    assert er.probability == 0.5 and er.min_area == 0.02 and er.max_area == 0.4
    assert er.log_aspect_ratio == (math.log(0.3), math.log(3.3))
    assert er.mode == "pixel" and er.min_count == er.max_count == 1
    # behaviour: with p = 1, one rectangle of 2%..40% of the image is replaced
    part = tr.build_trick("random_erasing", prob=1.0, mode="const")
    for seed in range(10):
        import random
        random.seed(seed)
        out = part.transform(torch.ones(3, 40, 40))
        frac = float((out[0] == 0).float().mean())
        assert 0.02 - 0.005 <= frac <= 0.4 + 0.01


# --- eval ---------------------------------------------------------------------------------------

def test_eval_transform_is_resize_256_centre_crop_224_like_timm():
    from timm.data import create_transform

    img = _image(300, 300)
    t = aug.build_eval_transform(input_size=224, mean=MEAN, std=STD)
    out = t(img)
    assert out.shape == (3, 224, 224)
    ref = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(MEAN, STD)])(img)
    assert torch.equal(out, ref)
    timm_t = create_transform(224, is_training=False, crop_pct=0.875, interpolation="bilinear", mean=MEAN, std=STD)
    assert torch.equal(out, timm_t(img))


# --- parameter checks ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,params,param", [
    ("hflip", {"prob": 1.5}, "prob"),
    ("inception_crop", {"scale": [0.5, 0.1]}, "scale"),
    ("inception_crop", {"scale": [0.0, 1.0]}, "scale"),
    ("inception_crop", {"ratio": [1.5, 0.5]}, "ratio"),
    ("color_jitter", {"hue": 0.6}, "hue"),
    ("color_jitter", {"brightness": -0.1}, "brightness"),
    ("pca_lighting", {"std": -1.0}, "std"),
    ("cutout", {"size": 0}, "size"),
    ("random_rotation", {"degrees": -5.0}, "degrees"),
    ("random_erasing", {"prob": -0.1}, "prob"),
    ("random_erasing", {"min_area": 0.5, "max_area": 0.2}, "max_area"),
    ("random_erasing", {"mode": "noise"}, "mode"),
    ("randaugment", {"config": "original"}, "config"),
    ("randaugment", {"config": "rand-x9"}, "config"),
    ("autoaugment", {"policy": "nonsense"}, "policy"),
    ("autoaugment", {"policy": "rand-m9"}, "policy"),
])
def test_bad_params_raise_trick_error(name, params, param):
    with pytest.raises(tr.TrickError) as err:
        tr.build_trick(name, **params)
    assert err.value.trick == name and err.value.param == param


def test_all_augmentations_registered_with_paper_defaults():
    specs = {s.name: s for s in tr.list_tricks("augmentation")}
    for name in ("inception_crop", "hflip", "color_jitter", "pca_lighting", "autoaugment", "randaugment",
                 "random_erasing", "cutout", "random_rotation"):
        assert name in specs
        assert specs[name].module == aug.__name__
    assert specs["inception_crop"].param("scale").default == (0.08, 1.0)
    assert specs["pca_lighting"].param("std").default == 0.1
    assert specs["color_jitter"].param("brightness").default == 0.4
    assert specs["color_jitter"].param("saturation").default == 0.4
