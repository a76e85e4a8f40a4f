"""Per-sample data augmentation tricks (kind ``augmentation``) and the train/eval transform builders.

The paper's baseline training pipeline (He et al. 2019, section 2.1) is: inception-style random
resized crop, horizontal flip, colour jitter, AlexNet PCA lighting noise, normalisation; evaluation
resizes the shorter side to 256 and takes the centre 224x224 crop. Each step is a trick here, so a
recipe lists exactly the augmentations it uses; the rest (AutoAugment, RandAugment, random erasing,
cutout, rotation) are common extras used when comparing tricks.

Everything that timm already does is passed to ``timm.data.create_transform`` as keyword arguments
(``SampleTransform.timm_kwargs``); only PCA lighting and cutout are hand-written (a pure function plus
a thin callable class), and they are inserted at their ``stage`` of timm's pipeline.
"""
from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any, Callable, Literal, NamedTuple, Sequence

from ..parts import SampleTransform, TimmArgs, merge_timm_kwargs
from ..registry import TrickError, check_param, register_trick

if TYPE_CHECKING:  # annotations only: the functions import torch, torchvision and timm where they run
    import torch

__all__ = [
    "merge_timm_kwargs", "IMAGENET_PCA_EIGVAL", "IMAGENET_PCA_EIGVEC",
    "pca_lighting_shift", "apply_pca_lighting", "PCALighting",
    "cutout_box", "apply_cutout", "Cutout",
    "build_train_transform", "build_eval_transform",
    "DeviceInput", "ToDeviceInput", "DeviceNormalize", "split_for_device",
]

#: Eigenvalues of the ImageNet RGB pixel covariance (pixels in [0, 1]), as in AlexNet
#: (Krizhevsky et al. 2012), fb.resnet.torch and GluonCV (which uses 255x these on 0..255 pixels).
IMAGENET_PCA_EIGVAL: tuple[float, float, float] = (0.2175, 0.0188, 0.0045)
#: The matching eigenvectors, one per *column* (rows are R, G, B).
IMAGENET_PCA_EIGVEC: tuple[tuple[float, float, float], ...] = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


# ---------------------------------------------------------------------------------------------
# PCA lighting (hand-written: neither timm nor torchvision has it)
# ---------------------------------------------------------------------------------------------

def pca_lighting_shift(alpha: torch.Tensor, eigval: torch.Tensor, eigvec: torch.Tensor) -> torch.Tensor:
    """The per-channel RGB offset of AlexNet's PCA lighting noise: ``eigvec @ (alpha * eigval)``."""
    return eigvec @ (alpha * eigval)


def apply_pca_lighting(img: torch.Tensor, alpha: torch.Tensor,
                       eigval: torch.Tensor | None = None, eigvec: torch.Tensor | None = None) -> torch.Tensor:
    """Add the PCA lighting offset for coefficients ``alpha`` (shape 3) to a ``(3, H, W)`` image.

    Pure: returns a new tensor. ``eigval``/``eigvec`` default to the ImageNet values.
    """
    import torch

    if img.dim() < 3 or img.shape[-3] != 3:
        raise ValueError(f"PCA lighting needs an RGB image (..., 3, H, W), got shape {tuple(img.shape)}")
    eigval = torch.as_tensor(IMAGENET_PCA_EIGVAL if eigval is None else eigval, dtype=img.dtype,
                             device=img.device)
    eigvec = torch.as_tensor(IMAGENET_PCA_EIGVEC if eigvec is None else eigvec, dtype=img.dtype,
                             device=img.device)
    shift = pca_lighting_shift(alpha.to(img), eigval, eigvec)
    return img + shift.view(3, 1, 1)


class PCALighting:
    """Callable: AlexNet-style PCA lighting noise on a ``[0, 1]`` RGB tensor, ``alpha ~ N(0, std)``.

    ``generator`` (optional) makes the draws reproducible.
    """

    def __init__(self, std: float = 0.1, eigval: Sequence[float] = IMAGENET_PCA_EIGVAL,
                 eigvec: Sequence[Sequence[float]] = IMAGENET_PCA_EIGVEC,
                 generator: torch.Generator | None = None):
        self.std = float(std)
        self._eig = (tuple(eigval), tuple(tuple(row) for row in eigvec))
        self.generator = generator

    @functools.cached_property
    def eigval(self) -> torch.Tensor:
        import torch

        return torch.tensor(self._eig[0], dtype=torch.float32)

    @functools.cached_property
    def eigvec(self) -> torch.Tensor:
        import torch

        return torch.tensor(self._eig[1], dtype=torch.float32)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        shift = self.draw_shift()
        return img if shift is None else img + shift.view(3, 1, 1)

    def draw_shift(self) -> torch.Tensor | None:
        """The RGB offset (float32, shape 3) that :meth:`__call__` adds, drawn from the same RNG in the same way
        (None when ``std`` is 0): a data-loader worker draws it, the device adds it (:class:`DeviceNormalize`)."""
        import torch

        if self.std == 0:
            return None
        alpha = torch.normal(0.0, self.std, size=(3,), generator=self.generator)
        return pca_lighting_shift(alpha.to(torch.float32), self.eigval, self.eigvec)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(std={self.std})"


# ---------------------------------------------------------------------------------------------
# Cutout (hand-written: timm's RandomErasing draws random rectangles, not Cutout's fixed square)
# ---------------------------------------------------------------------------------------------

def cutout_box(center_y: int, center_x: int, size: int, height: int, width: int) -> tuple[int, int, int, int]:
    """The ``(y1, y2, x1, x2)`` of a ``size`` square centred at ``(center_y, center_x)``, clipped to the image.

    The square spans ``[c - size // 2, c - size // 2 + size)`` on each axis (DeVries & Taylor's
    ``c +- size // 2`` for even sizes, and exactly ``size`` wide for odd ones too).
    """
    y1 = center_y - size // 2
    x1 = center_x - size // 2
    y2, x2 = y1 + size, x1 + size
    return max(y1, 0), min(y2, height), max(x1, 0), min(x2, width)


def apply_cutout(img: torch.Tensor, center_y: int, center_x: int, size: int) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square of ``img`` (``(..., H, W)``) centred at the given pixel; pure."""
    out = img.clone()
    y1, y2, x1, x2 = cutout_box(center_y, center_x, size, img.shape[-2], img.shape[-1])
    out[..., y1:y2, x1:x2] = 0
    return out


class Cutout:
    """Callable: Cutout (DeVries & Taylor 2017) on a normalised ``(C, H, W)`` tensor.

    The centre is uniform over all pixels, so the square may be clipped at the borders.
    """

    def __init__(self, size: int = 16, generator: torch.Generator | None = None):
        self.size = int(size)
        self.generator = generator

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        import torch

        h, w = img.shape[-2], img.shape[-1]
        cy = int(torch.randint(0, h, (1,), generator=self.generator))
        cx = int(torch.randint(0, w, (1,), generator=self.generator))
        return apply_cutout(img, cy, cx, self.size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


# ---------------------------------------------------------------------------------------------
# Tricks
# ---------------------------------------------------------------------------------------------

def _prob(trick: str, param: str, value: float) -> None:
    check_param(0.0 <= value <= 1.0, trick, param, f"must be a probability in [0, 1], got {value}")


@register_trick("inception_crop", kind="augmentation", section="2.1 (step 2); Szegedy et al. 2015",
                implemented_by="timm.data.create_transform(scale=, ratio=) -> RandomResizedCropAndInterpolation")
def inception_crop(*, scale: tuple[float, float] = (0.08, 1.0),
                   ratio: tuple[float, float] = (0.75, 1.3333333333333333)) -> SampleTransform:
    """Inception-style random resized crop: random area fraction and aspect ratio, resized to the input size.

    He et al. 2019, section 2.1, step 2 (area uniform in [8%, 100%], aspect ratio in [3/4, 4/3],
    from Szegedy et al. 2015). timm's ``RandomResizedCropAndInterpolation`` (through
    ``create_transform(scale=, ratio=)``) does the work. Without this trick the train transform
    only resizes and centre-crops.
    """
    check_param(0.0 < scale[0] <= scale[1] <= 1.0, "inception_crop", "scale",
                f"must be an ordered area range (min, max) with 0 < min <= max <= 1, got {list(scale)}")
    check_param(0.0 < ratio[0] <= ratio[1], "inception_crop", "ratio",
                f"must be an ordered aspect range (min, max) with 0 < min <= max, got {list(ratio)}")
    return SampleTransform(timm_kwargs={"scale": tuple(scale), "ratio": tuple(ratio)}, timm_export=TimmArgs())


@register_trick("hflip", kind="augmentation", section="2.1 (step 3)",
                implemented_by="timm.data.create_transform(hflip=) -> torchvision RandomHorizontalFlip")
def hflip(*, prob: float = 0.5) -> SampleTransform:
    """Random horizontal flip with probability ``prob``.

    He et al. 2019, section 2.1, step 3 (flip with probability 0.5). torchvision's
    ``RandomHorizontalFlip`` via ``timm.data.create_transform(hflip=prob)``.
    """
    _prob("hflip", "prob", prob)
    return SampleTransform(timm_kwargs={"hflip": float(prob)}, timm_export=TimmArgs())


@register_trick("color_jitter", kind="augmentation", section="2.1 (step 4)",
                implemented_by="timm.data.create_transform(color_jitter=) -> torchvision ColorJitter")
def color_jitter(*, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                 hue: float = 0.0) -> SampleTransform:
    """Colour jitter: brightness, contrast and saturation factors drawn uniformly from [1 - x, 1 + x].

    He et al. 2019, section 2.1, step 4: "scale hue, saturation, and brightness with coefficients
    uniformly drawn from [0.6, 1.4]", i.e. 0.4. The defaults follow the authors' reference code
    (GluonCV ``train_imagenet.py``: ``RandomColorJitter(brightness=0.4, contrast=0.4, saturation=0.4)``,
    also fb.resnet.torch and timm's default ``color_jitter=0.4``): torchvision's ``hue`` is an additive
    shift of the hue angle in [-hue, hue] (at most 0.5 of the circle), not a scale, so ``hue=0.4``
    would rotate colours by up to 144 degrees; it is off by default. Set ``contrast=0`` for the
    literal reading of the text. torchvision ``ColorJitter`` via ``timm.data.create_transform``.
    """
    for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        check_param(0.0 <= value <= 1.0, "color_jitter", name,
                    f"must be in [0, 1] (factor drawn from [1 - x, 1 + x]), got {value}")
    check_param(0.0 <= hue <= 0.5, "color_jitter", "hue",
                f"must be in [0, 0.5] (a hue shift in [-hue, hue]), got {hue}")
    return SampleTransform(timm_kwargs={
        "color_jitter": (float(brightness), float(contrast), float(saturation), float(hue))}, timm_export=TimmArgs())


@register_trick("pca_lighting", kind="augmentation", section="2.1 (step 5); Krizhevsky et al. 2012",
                implemented_by="hand-written PCALighting (AlexNet PCA noise, ImageNet eigen-decomposition)")
def pca_lighting(*, std: float = 0.1) -> SampleTransform:
    """AlexNet PCA lighting noise: add ``eigvec @ (alpha * eigval)`` to every pixel, ``alpha ~ N(0, std)``.

    He et al. 2019, section 2.1, step 5 ("add PCA noise with a coefficient sampled from a normal
    distribution N(0, 0.1)"), from Krizhevsky et al. 2012; the ImageNet eigenvalues/eigenvectors of
    fb.resnet.torch / GluonCV. Hand-written (:class:`PCALighting`); applied to the ``[0, 1]`` tensor
    after ToTensor and before Normalize.
    """
    check_param(std >= 0.0 and math.isfinite(std), "pca_lighting", "std", f"must be >= 0, got {std}")
    return SampleTransform(transform=PCALighting(std), stage="tensor", timm_export=TimmArgs(
        notes=(f"pca_lighting (AlexNet PCA noise, std {std}): not in timm; not exported",)))


@register_trick("autoaugment", kind="augmentation", section="not in the paper; Cubuk et al. 2019 (AutoAugment)",
                implemented_by="timm.data.create_transform(auto_augment=) -> timm AutoAugment")
def autoaugment(*, policy: str = "original") -> SampleTransform:
    """AutoAugment with a learned ImageNet policy (timm policy string, default the paper's 'original').

    Cubuk et al. 2019; timm's ``auto_augment_transform`` via ``create_transform(auto_augment=policy)``.
    Policies: 'original', 'originalr', 'v0', 'v0r', optionally with '-mstd<x>'.
    """
    _check_aa("autoaugment", "policy", policy, rand=False)
    return SampleTransform(timm_kwargs={"auto_augment": policy}, timm_export=TimmArgs())


@register_trick("randaugment", kind="augmentation", section="not in the paper; Cubuk et al. 2020 (RandAugment)",
                implemented_by="timm.data.create_transform(auto_augment='rand-...') -> timm RandAugment")
def randaugment(*, config: str = "rand-m9-mstd0.5") -> SampleTransform:
    """RandAugment, configured by a timm string (default magnitude 9 with noise std 0.5, 2 ops).

    Cubuk et al. 2020; timm's ``rand_augment_transform`` via ``create_transform(auto_augment=config)``.
    """
    _check_aa("randaugment", "config", config, rand=True)
    return SampleTransform(timm_kwargs={"auto_augment": config}, timm_export=TimmArgs())


def _check_aa(trick: str, param: str, value: str, *, rand: bool) -> None:
    if rand:
        check_param(value.startswith("rand"), trick, param,
                    f"must be a RandAugment string starting with 'rand' (e.g. 'rand-m9-mstd0.5'), got {value!r}")
    else:
        check_param(not value.startswith(("rand", "augmix")), trick, param,
                    f"must be an AutoAugment policy ('original', 'v0', ...); use 'randaugment' for {value!r}")
    try:
        from timm.data.auto_augment import auto_augment_transform, rand_augment_transform

        (rand_augment_transform if rand else auto_augment_transform)(value, None)
    except Exception as err:  # timm reports a bad string by assert / KeyError / ValueError
        raise TrickError(f"timm cannot parse {value!r} ({type(err).__name__}: {err})",
                         trick=trick, param=param) from None


@register_trick("random_erasing", kind="augmentation", section="not in the paper; Zhong et al. 2017",
                implemented_by="timm.data.random_erasing.RandomErasing")
def random_erasing(*, prob: float = 0.5, min_area: float = 0.02, max_area: float = 0.4,
                   min_aspect: float = 0.3, max_aspect: float = 3.3,
                   mode: Literal["const", "rand", "pixel"] = "pixel") -> SampleTransform:
    """Random erasing: with probability ``prob`` replace a random rectangle of the normalised image.

    Zhong et al. 2017 (p = 0.5, area 2%-40%, aspect 0.3-3.3, random fill). timm's ``RandomErasing``
    does the work; it is built here rather than through ``create_transform(re_prob=...)`` because
    create_transform cannot pass the area/aspect range (its default area is 2%-33%). ``mode='pixel'``
    fills per-pixel N(0, 1) noise (random values in normalised space), 'rand' one random colour, 'const' zeros.
    """
    _prob("random_erasing", "prob", prob)
    check_param(0.0 < min_area <= max_area <= 1.0, "random_erasing", "max_area",
                f"need 0 < min_area <= max_area <= 1, got ({min_area}, {max_area})")
    check_param(0.0 < min_aspect <= max_aspect, "random_erasing", "max_aspect",
                f"need 0 < min_aspect <= max_aspect, got ({min_aspect}, {max_aspect})")
    from timm.data.random_erasing import RandomErasing

    eraser = RandomErasing(probability=prob, min_area=min_area, max_area=max_area, min_aspect=min_aspect,
                           max_aspect=max_aspect, mode=mode, max_count=1, device="cpu")
    notes = ()
    if (min_area, max_area, min_aspect, max_aspect) != (0.02, 1 / 3, 0.3, 3.3):
        notes = (f"random_erasing area {min_area}-{max_area}, aspect {min_aspect}-{max_aspect}: train.py uses "
                 f"timm's 0.02-1/3 and 0.3-3.3",)
    return SampleTransform(transform=eraser, stage="normalized", timm_export=TimmArgs(
        values={"reprob": float(prob), "remode": mode, "recount": 1}, notes=notes))


@register_trick("cutout", kind="augmentation", section="not in the paper; DeVries & Taylor 2017",
                implemented_by="hand-written Cutout")
def cutout(*, size: int = 16) -> SampleTransform:
    """Cutout: zero one ``size`` x ``size`` square of the normalised image, centred at a uniform pixel.

    DeVries & Taylor 2017 (one hole; the square is clipped at the borders). Hand-written
    (:class:`Cutout`), applied after Normalize as in their code.
    """
    check_param(size >= 1, "cutout", "size", f"must be >= 1 pixel, got {size}")
    return SampleTransform(transform=Cutout(size), stage="normalized", timm_export=TimmArgs(
        notes=("cutout: not in timm (the nearest is random erasing, --reprob); not exported",)))


@register_trick("random_rotation", kind="augmentation", section="not in the paper; common augmentation",
                implemented_by="torchvision.transforms.RandomRotation")
def random_rotation(*, degrees: float = 15.0) -> SampleTransform:
    """Random rotation by an angle uniform in [-degrees, degrees], before the crop.

    Not one of the paper's tricks; torchvision's ``RandomRotation`` (bilinear, zero fill) on the PIL image.
    """
    from torchvision import transforms as T

    check_param(0.0 <= degrees <= 180.0, "random_rotation", "degrees", f"must be in [0, 180], got {degrees}")
    return SampleTransform(
        transform=T.RandomRotation(degrees, interpolation=T.InterpolationMode.BILINEAR), stage="pil",
        timm_export=TimmArgs(notes=("random_rotation: train.py has no rotation flag; not exported",)))


# ---------------------------------------------------------------------------------------------
# Transform builders for the trainer
# ---------------------------------------------------------------------------------------------

def build_train_transform(sample_transforms: Sequence[SampleTransform], *, input_size: int,
                          mean: Sequence[float], std: Sequence[float],
                          interpolation: str = "bilinear") -> Callable[[Any], torch.Tensor]:
    """The training transform (PIL image -> normalised tensor) for a recipe's augmentation parts.

    Built on ``timm.data.create_transform(is_training=True, separate=True)`` with the parts'
    ``timm_kwargs`` merged (two parts setting the same key is a :class:`TrickError`) and each part's
    ``transform`` inserted at its stage: ``pil`` before the crop, ``tensor`` between ToTensor and
    Normalize, ``normalized`` at the end. Nothing is on unless a trick asks for it: without
    ``inception_crop`` the crop is a deterministic resize of the shorter side plus centre crop,
    without ``hflip`` there is no flip and without ``color_jitter`` no jitter (timm's defaults would
    add both). With AutoAugment/RandAugment timm drops colour jitter unless forced, so it is forced
    when ``color_jitter`` is listed.
    """
    from torchvision import transforms as T
    import timm.data as timm_data

    from timm.data.transforms import RandomResizedCropAndInterpolation, str_to_interp_mode
    from timm.data.transforms_factory import transforms_imagenet_train

    kwargs = merge_timm_kwargs(sample_transforms)
    inception = "scale" in kwargs or "ratio" in kwargs
    kwargs.setdefault("hflip", 0.0)
    kwargs.setdefault("color_jitter", None)
    kwargs.setdefault("scale", (1.0, 1.0))
    kwargs.setdefault("ratio", (1.0, 1.0))
    common = dict(input_size=input_size, mean=tuple(mean), std=tuple(std), interpolation=interpolation,
                  separate=True)
    if kwargs.get("auto_augment") and kwargs["color_jitter"] is not None:
        # create_transform has no force_color_jitter; it is a thin dispatch to transforms_imagenet_train
        common["img_size"] = common.pop("input_size")
        primary, secondary, final = transforms_imagenet_train(**common, **kwargs, force_color_jitter=True)
    else:
        primary, secondary, final = timm_data.create_transform(is_training=True, **common, **kwargs)

    primary_tfl = list(primary.transforms)
    if not inception:
        interp = str_to_interp_mode(interpolation if interpolation != "random" else "bilinear")
        primary_tfl = [
            t for tf in primary_tfl for t in (
                [T.Resize(input_size, interpolation=interp), T.CenterCrop(input_size)]
                if isinstance(tf, RandomResizedCropAndInterpolation) else [tf])]

    by_stage: dict[str, list[Callable]] = {"pil": [], "tensor": [], "normalized": []}
    for st in sample_transforms:
        if st.transform is not None:
            if st.stage not in by_stage:
                raise TrickError(f"unknown sample-transform stage '{st.stage}'", trick=st.trick)
            by_stage[st.stage].append(st.transform)

    final_tfl = list(final.transforms)
    norm_at = next((i for i, t in enumerate(final_tfl) if isinstance(t, T.Normalize)), None)
    if norm_at is None:  # pragma: no cover - timm always normalises with normalize=True
        raise TrickError("timm's train transform has no Normalize step to insert tensor-stage transforms")
    final_tfl = (final_tfl[:norm_at] + by_stage["tensor"] + [final_tfl[norm_at]] + by_stage["normalized"]
                 + final_tfl[norm_at + 1:])
    return T.Compose(by_stage["pil"] + primary_tfl + list(secondary.transforms) + final_tfl)


def build_eval_transform(*, input_size: int, mean: Sequence[float], std: Sequence[float],
                         crop_pct: float = 0.875, interpolation: str = "bilinear") -> Callable[[Any], torch.Tensor]:
    """The evaluation transform: resize the shorter side to ``input_size / crop_pct``, centre crop, normalise.

    He et al. 2019, section 2.1 (resize to 256, centre crop 224: ``crop_pct = 224 / 256 = 0.875``);
    ``timm.data.create_transform(is_training=False)`` does the work.
    """
    import timm.data as timm_data

    check_param(0.0 < crop_pct <= 1.0, "build_eval_transform", "crop_pct", f"must be in (0, 1], got {crop_pct}")
    return timm_data.create_transform(input_size=input_size, is_training=False, crop_pct=crop_pct,
                            interpolation=interpolation, mean=tuple(mean), std=tuple(std))


# ---------------------------------------------------------------------------------------------
# The device end of the loader (timm's PrefetchLoader): uint8 from the workers, floats on the GPU
# ---------------------------------------------------------------------------------------------

class DeviceInput(NamedTuple):
    """What a data-loader worker hands out on the device path: the augmented image as ``uint8`` (3, H, W) and the
    PCA lighting offset it drew (float32, shape 3; shape 0 without lighting). A batch of them is collated field
    by field and finished on the device by :class:`DeviceNormalize`."""

    pixels: torch.Tensor
    shift: torch.Tensor


class ToDeviceInput:
    """The worker's end of a split transform: the PIL steps (crop, flip, colour jitter...), then the image as a
    ``uint8`` tensor, and the lighting offset drawn where the full transform would have drawn it. No float
    conversion in the worker, and a host-to-device copy four times smaller."""

    def __init__(self, pil_steps: Sequence[Callable], lighting: "PCALighting | None" = None):
        from torchvision import transforms as T

        self.pil_steps, self.lighting = T.Compose(list(pil_steps)), lighting

    def __call__(self, img: Any) -> DeviceInput:
        import torch

        import numpy as np

        img = self.pil_steps(img)
        pixels = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
        shift = self.lighting.draw_shift() if self.lighting is not None else None
        return DeviceInput(pixels, shift if shift is not None else torch.zeros(0))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pil_steps}, lighting={self.lighting})"


class DeviceNormalize:
    """The device's end: ``pixels / 255``, plus each image's lighting offset, then ``(x - mean) / std``: the same
    float operations, in the same order, as ToTensor, :class:`PCALighting` and ``Normalize`` on one image, so the
    batch equals the CPU path's."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self._on: dict[tuple[Any, Any], tuple[torch.Tensor, torch.Tensor]] = {}  # (device, dtype) -> mean, std

    def __call__(self, batch: DeviceInput) -> torch.Tensor:
        import torch

        x = batch.pixels.to(torch.get_default_dtype()).div(255)
        if batch.shift.numel():
            x = x + batch.shift.view(-1, 3, 1, 1).to(x)
        key = (x.device, x.dtype)
        if key not in self._on:  # made once per device, not every step
            self._on[key] = tuple(torch.as_tensor(v, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
                                  for v in (self.mean, self.std))
        mean, std = self._on[key]
        return x.sub_(mean).div_(std)


def split_for_device(transform: Any) -> tuple[ToDeviceInput, DeviceNormalize] | None:
    """A train or eval transform (a ``Compose`` ending ``ToTensor, [PCALighting], Normalize``) split at ToTensor
    into the worker's part and the device's part; None when anything else follows ToTensor (random erasing,
    cutout, another tensor-stage transform): that transform stays whole, on the CPU."""
    import torch
    from torchvision import transforms as T

    steps = list(getattr(transform, "transforms", ()))
    at = next((i for i, t in enumerate(steps) if type(t).__name__ in ("ToTensor", "MaybeToTensor")), None)
    if at is None:
        return None
    tail = steps[at + 1:]
    lighting = tail.pop(0) if tail and isinstance(tail[0], PCALighting) else None
    if len(tail) != 1 or not isinstance(tail[0], T.Normalize):
        return None
    norm = tail[0]
    return ToDeviceInput(steps[:at], lighting), DeviceNormalize(
        [float(m) for m in torch.as_tensor(norm.mean).tolist()], [float(v) for v in torch.as_tensor(norm.std).tolist()])
