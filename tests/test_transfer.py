"""Detection and segmentation transfer (paper section 6): the metrics against hand-computed answers, the VOC and
ADE20K readers on tiny data sets generated in the real layouts (shapes drawn, with their boxes and masks), the
transfer recipes, and `tricks-train` fine-tuning each recipe scaled down with --set: the loss goes down, the
saved and the exported model reload to identical outputs."""
from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import model_tweaks  # noqa: F401  (registers resnet*_v1a/b/c/d into timm)
import torch
from PIL import Image, ImageDraw

from tricks_registry.checkpoint import atomic_write_text, load_weights, save_weights
from tricks_registry.cli import train_main
from tricks_registry.errors import TimmTricksError
from tricks_registry.recipe import RecipeError, list_recipes, resolve
from tricks_registry.transfer import ade20k, voc
from tricks_registry.transfer.backbones import build_transfer_model, classifier_weights, create_body
from tricks_registry.export.transfer import export_transfer, load_exported
from tricks_registry.transfer.metrics import confusion_matrix, segmentation_scores, voc_ap, voc_detection_map

TRANSFER = sorted(name for name, _, _ in list_recipes() if name.startswith(("fasterrcnn", "fcn")))


# ---------------------------------------------------------------------------------------------------------
# tiny data sets in the real layouts
VOC_SHAPES = {"dog": ("rectangle", (200, 40, 40)), "cat": ("ellipse", (40, 60, 200)), "car": ("rectangle", (40, 180, 60))}


def _voc_xml(image_id: str, width: int, height: int, objects: list[tuple[str, int, tuple[int, int, int, int]]]) -> str:
    parts = [f"<annotation><folder>VOC</folder><filename>{image_id}.jpg</filename>"
             f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size><segmented>0</segmented>"]
    for name, difficult, (xmin, ymin, xmax, ymax) in objects:
        parts.append(f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
                     f"<difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
                     f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>\n"


def make_voc(root: Path, counts: dict[tuple[str, str], int], size: tuple[int, int] = (128, 96), seed: int = 0) -> Path:
    """VOCdevkit/VOC{year}/{JPEGImages,Annotations,ImageSets/Main} with 1-2 shapes per image; every third image
    of each set has one more, 'difficult' object. Boxes are the shapes' pixel extents, 1-based inclusive."""
    rng = random.Random(seed)
    devkit = root / "VOCdevkit"
    width, height = size
    for (year, image_set), n in counts.items():
        folder = devkit / year
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        ids = [f"{year[-4:]}_{image_set}_{i:04d}" for i in range(n)]
        for k, image_id in enumerate(ids):
            image = Image.fromarray(np.random.default_rng(rng.randrange(1 << 30)).integers(
                90, 140, size=(height, width, 3), dtype=np.uint8))
            draw = ImageDraw.Draw(image)
            objects = []
            taken: list[tuple[int, int, int, int]] = []
            for j in range(rng.randint(1, 2) + (k % 3 == 0)):
                name = rng.choice(sorted(VOC_SHAPES))
                while True:  # shapes do not overlap: each box is its shape's exact pixel extent
                    w, h = rng.randint(16, 40), rng.randint(16, 32)
                    x0, y0 = rng.randint(0, width - w - 1), rng.randint(0, height - h - 1)
                    if all(x0 >= b[2] + 2 or b[0] >= x0 + w + 2 or y0 >= b[3] + 2 or b[1] >= y0 + h + 2
                           for b in taken):
                        break
                taken.append((x0, y0, x0 + w, y0 + h))
                shape, colour = VOC_SHAPES[name]
                getattr(draw, shape)([x0, y0, x0 + w - 1, y0 + h - 1], fill=colour)  # pixels x0..x0+w-1 inclusive
                objects.append((name, int(k % 3 == 0 and j == 0), (x0 + 1, y0 + 1, x0 + w, y0 + h)))
            image.save(folder / "JPEGImages" / f"{image_id}.jpg", quality=95, subsampling=0)  # sharp colour edges
            (folder / "Annotations" / f"{image_id}.xml").write_text(_voc_xml(image_id, width, height, objects))
        with open(folder / "ImageSets" / "Main" / f"{image_set}.txt", "a") as f:
            f.write("".join(f"{i}\n" for i in ids))
    return devkit


ADE_SHAPES = {5: (30, 160, 30), 13: (180, 40, 160)}  # benchmark labels (1..150) of the drawn shapes


def make_ade20k(root: Path, counts: dict[str, int], size: tuple[int, int] = (96, 72), seed: int = 0) -> Path:
    """ADEChallengeData2016/{images,annotations}/{training,validation}: a 'wall' (label 1) background, a rectangle
    (label 5) and an ellipse (label 13), and an unlabelled (0) strip along the top."""
    rng = random.Random(seed)
    root = root / "ADEChallengeData2016"
    width, height = size
    for split, n in counts.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        prefix = "ADE_train" if split == "training" else "ADE_val"
        for i in range(n):
            label = Image.new("L", size, 1)
            image = Image.new("RGB", size, (120, 110, 100))
            ldraw, idraw = ImageDraw.Draw(label), ImageDraw.Draw(image)
            for cls, shape in ((5, "rectangle"), (13, "ellipse")):
                w, h = rng.randint(20, 40), rng.randint(16, 32)
                x0, y0 = rng.randint(0, width - w - 1), rng.randint(4, height - h - 1)
                getattr(ldraw, shape)([x0, y0, x0 + w, y0 + h], fill=cls)
                getattr(idraw, shape)([x0, y0, x0 + w, y0 + h], fill=ADE_SHAPES[cls])
            ldraw.rectangle([0, 0, width - 1, 2], fill=0)
            noise = np.random.default_rng(rng.randrange(1 << 30)).integers(-12, 13, size=(height, width, 3))
            image = Image.fromarray(np.clip(np.asarray(image, dtype=np.int64) + noise, 0, 255).astype(np.uint8))
            image.save(root / "images" / split / f"{prefix}_{i + 1:08d}.jpg", quality=95)
            label.save(root / "annotations" / split / f"{prefix}_{i + 1:08d}.png")
    return root


@pytest.fixture(scope="module")
def voc_devkit(tmp_path_factory) -> Path:
    return make_voc(tmp_path_factory.mktemp("voc"), {("VOC2007", "trainval"): 6, ("VOC2012", "trainval"): 4,
                                                       ("VOC2007", "test"): 4})


@pytest.fixture(scope="module")
def ade_root(tmp_path_factory) -> Path:
    return make_ade20k(tmp_path_factory.mktemp("ade"), {"training": 8, "validation": 3})


def make_backbone_run(folder: Path) -> Path:
    """A run folder as `tricks-train --recipe resnet50d_all --set model.name=resnet18_v1d` leaves it: the resolved
    recipe and checkpoints/best.safetensors (with its manifest) of a 10-class ResNet-18-D."""
    import timm

    torch.manual_seed(0)
    recipe = resolve("resnet50d_all", ["model.name=resnet18_v1d"])
    run = folder / "resnet50d_all-v1-20260101-000000"
    model = timm.create_model("resnet18_v1d", num_classes=10)
    with torch.no_grad():  # not the constructor's BN statistics: loading them must be visible
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5)
    save_weights(run / "checkpoints" / "best.safetensors", model, {"epoch": 1})
    atomic_write_text(run / "recipe.yaml", recipe.to_yaml())
    atomic_write_text(run / "recipe.sha256", recipe.sha256 + "\n")
    atomic_write_text(run / "summary.json", json.dumps({"num_classes": 10, "model": "resnet18_v1d"}))
    return run


@pytest.fixture(scope="module")
def backbone_run(tmp_path_factory) -> Path:
    return make_backbone_run(tmp_path_factory.mktemp("classifier"))


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------------------
# metrics: hand-computed answers
def _det(boxes, scores, labels):
    return {"boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4), "scores": np.asarray(scores, dtype=np.float32),
            "labels": np.asarray(labels, dtype=np.int64)}


def _gt(boxes, labels, difficult):
    return {"boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4), "labels": np.asarray(labels, dtype=np.int64),
            "difficult": np.asarray(difficult, dtype=bool)}


# Class 1: image 0 holds A (easy) and B (difficult), image 1 holds C (easy): 2 positives.
# Detections by score: d1 on A (TP), d2 on B (difficult: ignored), d3 on A again, IoU 81/100 (duplicate: FP),
# d4 on nothing (FP), d5 on C, IoU 100/110 (TP). Recall .5 .5 .5 1, precision 1 1/2 1/3 1/2.
# VOC07 11-point: recall >= 0, .1, ..., .5 -> best precision 1 (6 points); .6, ..., 1 -> 1/2 (5 points): 8.5/11.
# Area: 0.5 x 1 + 0.5 x 1/2 = 0.75. Class 2: one easy box, no detection: AP 0. Class 3: a detection but no
# object: AP undefined, left out of the mean.
CASE_GT = [_gt([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], [1, 1, 2], [False, True, False]),
           _gt([[0, 0, 10, 10]], [1], [False])]
CASE_DET = [_det([[0, 0, 10, 10], [20, 20, 30, 30], [1, 1, 10, 10], [60, 60, 70, 70]], [.9, .8, .7, .3], [1, 1, 1, 3]),
            _det([[50, 50, 60, 60], [0, 0, 10, 11]], [.6, .5], [1, 1])]


def test_voc07_map_of_a_hand_computed_case_with_a_difficult_box_and_a_duplicate():
    result = voc_detection_map(CASE_DET, CASE_GT, num_classes=4, metric="voc07")
    assert result["ap"][1] == pytest.approx(8.5 / 11, abs=1e-12)
    assert result["ap"][2] == 0.0 and result["ap"][3] is None
    assert result["map"] == pytest.approx((8.5 / 11 + 0.0) / 2, abs=1e-12)
    area = voc_detection_map(CASE_DET, CASE_GT, num_classes=4, metric="area")
    assert area["ap"][1] == pytest.approx(0.75, abs=1e-12)


def test_difficult_boxes_neither_count_as_positives_nor_make_false_positives():
    # the same case without the difficult box: its detection d2 becomes a false positive at rank 2
    easy_gt = [_gt([[0, 0, 10, 10], [40, 40, 50, 50]], [1, 2], [False, False]), CASE_GT[1]]
    ap = voc_detection_map(CASE_DET, easy_gt, num_classes=3)["ap"][1]
    # recall .5 .5 .5 .5 1, precision 1 1/2 1/3 1/4 2/5: 6 points at 1, 5 at 2/5
    assert ap == pytest.approx((6 + 5 * 0.4) / 11, abs=1e-12)
    # a difficult box alone: no positives, AP undefined
    assert voc_detection_map([_det([[0, 0, 5, 5]], [1.0], [1])], [_gt([[0, 0, 5, 5]], [1], [True])], 2)["ap"][1] is None


def test_iou_threshold_is_strictly_above_one_half_on_voc_pixel_boxes():
    # VOC boxes (1-based, inclusive) 1..10 x 1..10 and 1..20 x 1..10: the devkit's IoU with its +1 widths is
    # 100/200 = 0.5, not > 0.5, so the detection is a false positive
    gt = [_gt([[0, 0, 20, 10]], [1], [False])]  # stored as [xmin - 1, ymin - 1, xmax, ymax]
    assert voc_detection_map([_det([[0, 0, 10, 10]], [1.0], [1])], gt, 2)["ap"][1] == 0.0
    assert voc_detection_map([_det([[0, 0, 11, 10]], [1.0], [1])], gt, 2)["ap"][1] == 1.0


def test_voc_ap_11_point_and_area_on_a_plain_curve():
    recall, precision = np.array([0.2, 0.4, 0.4, 0.8]), np.array([1.0, 1.0, 0.5, 0.8])
    # 11-point: t = 0..0.4 -> 1 (5 points); 0.5..0.8 -> 0.8 (4 points); 0.9, 1 -> 0
    assert voc_ap(recall, precision, "voc07") == pytest.approx((5 + 4 * 0.8) / 11, abs=1e-12)
    # area: 0.4 at precision 1, then 0.4 at the envelope 0.8
    assert voc_ap(recall, precision, "area") == pytest.approx(0.4 + 0.4 * 0.8, abs=1e-12)


def test_pixel_accuracy_and_miou_of_a_hand_computed_case():
    label = torch.tensor([[0, 0, 1], [1, 2, 255]])
    pred = torch.tensor([[0, 1, 1], [1, 0, 2]])
    conf = confusion_matrix(pred, label, num_classes=4)
    assert conf.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    scores = segmentation_scores(conf)
    # 3 of the 5 labelled pixels right; IoU 1/3 (class 0), 2/3 (class 1), 0 (class 2); class 3 absent: no IoU
    assert scores["pixel_acc"] == pytest.approx(3 / 5, abs=1e-12)
    assert scores["iou"][:3] == pytest.approx([1 / 3, 2 / 3, 0.0], abs=1e-12) and scores["iou"][3] is None
    assert scores["miou"] == pytest.approx(1 / 3, abs=1e-12)
    with pytest.raises(ValueError, match="labels must be in 0..3"):
        confusion_matrix(pred, torch.tensor([[0, 0, 1], [1, 7, 255]]), num_classes=4)


# ---------------------------------------------------------------------------------------------------------
# the data sets in their own layouts
def _shape_extent(image: np.ndarray, colour: tuple[int, int, int]) -> tuple[int, int, int, int]:
    near = np.abs(image.astype(int) - np.array(colour)).sum(-1) < 60
    ys, xs = np.nonzero(near)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def test_voc_reader_gives_the_drawn_boxes_and_handles_difficult(voc_devkit: Path):
    train = voc.VOCDetection(voc_devkit, "VOC2007/trainval+VOC2012/trainval", keep_difficult=False)
    test = voc.VOCDetection(voc_devkit, "VOC2007/test", keep_difficult=True)
    assert len(train) == 10 and len(test) == 4 and train.classes[0] == "__background__"
    image, target = test[0]  # image 0 of each set has a difficult object first
    assert target["difficult"].tolist()[0] is True and not any(train.target(0)["difficult"].tolist())
    assert len(train.target(0)["boxes"]) == len(voc.read_annotation(
        voc_devkit / "VOC2007" / "Annotations" / "2007_trainval_0000.xml")["boxes"]) - 1
    pixels = np.asarray(image)
    for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
        name = voc.VOC_CLASSES[label - 1]
        assert name in VOC_SHAPES
        if VOC_SHAPES[name][0] == "rectangle" and sum(1 for l in target["labels"].tolist() if l == label) == 1:
            assert _shape_extent(pixels, VOC_SHAPES[name][1]) == tuple(int(v) for v in box)


def test_voc_transforms_flip_the_boxes_with_the_image(voc_devkit: Path):
    ds = voc.VOCDetection(voc_devkit, "VOC2007/test")
    plain = voc.detection_transforms(train=False)
    image, target = plain(*[ds[1][0], ds.target(1)])
    assert image.dtype == torch.float32 and image.shape == (3, 96, 128) and 0 <= image.min() <= image.max() <= 1
    seen = set()
    flip = voc.detection_transforms(train=True)
    torch.manual_seed(0)
    for _ in range(8):
        out, t = flip(ds[1][0], ds.target(1))
        flipped = not torch.equal(out, image)
        seen.add(flipped)
        expected = target["boxes"].clone()
        if flipped:
            assert torch.equal(out, image.flip(-1))
            expected[:, [0, 2]] = 128 - target["boxes"][:, [2, 0]]
        assert torch.allclose(t["boxes"], expected) and torch.equal(t["labels"], target["labels"])
    assert seen == {True, False}


def test_ade20k_reader_shifts_labels_and_ignores_other(ade_root: Path):
    ds = ade20k.ADE20KSegmentation(ade_root, "training")
    assert len(ds) == 8 and len(ds.classes) == 150
    raw = np.asarray(Image.open(ds.labels[0]), dtype=np.int64)
    label = ds.label(0)
    assert set(np.unique(raw).tolist()) == {0, 1, 5, 13}
    assert torch.equal(label, torch.from_numpy(np.where(raw == 0, 255, raw - 1)))
    tf = ade20k.segmentation_transforms(True, base_size=64, crop_size=48, scale_range=[0.5, 2.0],
                                        mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    torch.manual_seed(0)
    for i in range(4):
        image, crop = tf(Image.open(ds.images[i]).convert("RGB"), ds.label(i))
        assert image.shape == (3, 48, 48) and crop.shape == (48, 48) and crop.dtype == torch.int64
        assert set(crop.unique().tolist()) <= {0, 4, 12, 255}  # nearest resizing: no new labels
    val = ade20k.ADE20KSegmentation(ade_root, "validation", transforms=ade20k.segmentation_transforms(
        False, base_size=48, crop_size=48, scale_range=[1, 1], mean=[0, 0, 0], std=[1, 1, 1]))
    image, label = val[0]
    assert image.shape == (3, 48, 64) and label.shape == (72, 96)  # short side 48; the label stays full size


# ---------------------------------------------------------------------------------------------------------
# recipes
def test_transfer_recipes_mirror_tables_8_and_9():
    assert len(TRANSFER) == 14
    det, seg = resolve("fasterrcnn_resnet50d_voc"), resolve("fcn_resnet50d_ade20k")
    assert det.mapping["task"] == "detection" and seg.mapping["task"] == "segmentation"
    assert "Table 8" in det.mapping["reference"] and "81.33" in det.mapping["reference"]
    assert "Table 9" in seg.mapping["reference"] and "39.05" in seg.mapping["reference"]
    # constant warmup (the seeds' advice for fine-tuning) composed with each task's schedule
    assert {"constant_warmup", "multistep", "sgd", "linear_scaling"} <= set(det.mapping["tricks"])
    assert {"constant_warmup", "poly", "sgd", "linear_scaling"} <= set(seg.mapping["tricks"])
    assert det.lr == pytest.approx(0.02) and seg.lr == pytest.approx(0.01)
    assert det.mapping["transfer"]["train_sizes"] == list(range(480, 801, 32)) and det.mapping["data"]["input_size"] == 800
    assert det.mapping["transfer"]["ap_metric"] == "voc07" and not det.mapping["transfer"]["use_difficult"]
    assert det.mapping["data"]["train_split"] == "VOC2007/trainval+VOC2012/trainval"
    assert det.mapping["data"]["val_split"] == "VOC2007/test"
    assert seg.mapping["transfer"]["output_stride"] == 8 and seg.mapping["transfer"]["crop_size"] == 480
    sources = {}
    for name in TRANSFER:
        r = resolve(name)
        base = det if name.startswith("fasterrcnn") else seg
        assert ("Table 8" if base is det else "Table 9") in r.mapping["reference"], name
        sources.setdefault(base.name, []).append(r.mapping["backbone"]["source"])
        same = {k: v for k, v in r.mapping.items() if k not in ("name", "description", "reference", "lineage", "backbone")}
        assert same == {k: v for k, v in base.mapping.items() if k in same}, name  # only the backbone differs
        assert r.mapping["backbone"]["model"] == ("resnet50_v1b" if "50b" in name else "resnet50_v1d"), name
    ladder = ["resnet50_baseline@1 --set model.name=resnet50_v1b", "resnet50d_cosine@1", "resnet50d_distill@1",
              "resnet50d_efficient@1", "resnet50d_label_smoothing@1", "resnet50d_mixup@1", "resnet50d_all@1"]
    assert sorted(sources["fasterrcnn_resnet50d_voc"]) == sorted(sources["fcn_resnet50d_ade20k"]) == sorted(ladder)


def test_classification_recipes_have_no_backbone_and_transfer_keys_are_validated():
    assert "backbone" not in resolve("resnet50d_all").mapping and resolve("resnet50d_all").mapping["transfer"] == {}
    with pytest.raises(RecipeError, match="only detection and segmentation recipes"):
        resolve("resnet50d_all", ["backbone.model=resnet50_v1d"])
    bad = {"transfer.dataset=coco": "must be voc", "transfer.output_stride=4": "must be 8, 16 or 32",
           "transfer.train_sizes=[]": "non-empty list", "backbone.trainable_stages=6": "0..5",
           "transfer.ap_metric=coco": "voc07", "transfer.scale_range=[2.0,0.5]": "low <= high",
           "transfer.fpn=1": "unknown key", "task=detect": "classification, detection or segmentation"}
    for override, message in bad.items():
        with pytest.raises(RecipeError, match=message):
            resolve("fasterrcnn_resnet50d_voc", [override])


# ---------------------------------------------------------------------------------------------------------
# backbones
def test_backbone_loads_the_run_weights_strictly_and_freezes_as_torchvision(backbone_run: Path):
    weights = load_weights(backbone_run / "checkpoints" / "best.safetensors")
    cfg = {"model": "resnet18_v1d", "weights": str(backbone_run), "trainable_stages": 3, "frozen_bn": True}
    body = create_body(cfg)
    state = body.state_dict()
    for key in ("conv1.0.weight", "layer3.1.conv2.weight", "layer4.0.downsample.2.running_var"):
        assert torch.equal(state[key], weights[key]), key
    assert "fc.weight" in weights and not any(k.startswith("fc.") for k in state)
    assert type(body.layer1[0].bn1).__name__ == "FrozenBatchNorm2d"
    assert not list(body.bn1.parameters())  # frozen BN: statistics and affine are buffers
    frozen = {n.split(".")[0] for n, p in body.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1", "layer1"}  # torchvision's trainable_layers=3: stem and stage 1 frozen
    assert all(p.requires_grad for n, p in body.named_parameters() if n.startswith(("layer2", "layer3", "layer4")))
    trained_bn = create_body(dict(cfg, frozen_bn=False))
    assert {n.split(".")[0] for n, p in trained_bn.named_parameters() if not p.requires_grad} == {"conv1", "bn1", "layer1"}
    # FCN's backbone: stages 3 and 4 dilated, output stride 8
    dilated = create_body(dict(cfg, trainable_stages=5, frozen_bn=False), output_stride=8)
    shapes = [f.shape[-1] for f in dilated(torch.zeros(1, 3, 64, 64))]
    assert shapes == [32, 16, 8, 8, 8] and dilated.layer4[0].conv1.dilation == (2, 2)
    assert all(p.requires_grad for p in dilated.parameters())
    # any timm model: MobileNetV3's levels are blocks.0, blocks.1, ...: trainable_stages=3 freezes up to blocks.1
    mobile = create_body({"model": "mobilenetv3_large_100", "weights": "scratch", "trainable_stages": 3})
    frozen = {".".join(n.split(".")[:2]) for n, p in mobile.named_parameters() if not p.requires_grad}
    assert frozen == {"conv_stem.weight", "blocks.0", "blocks.1"}


def test_backbone_weights_errors_say_what_to_do(backbone_run: Path, tmp_path: Path):
    with pytest.raises(TimmTricksError, match="that run trained resnet18_v1d.*--set backbone.model=resnet18_v1d"):
        classifier_weights(str(backbone_run), "resnet50_v1d")
    with pytest.raises(TimmTricksError, match="backbone.weights is not set.*tricks-train --recipe resnet50d_all@1"):
        create_body({"model": "resnet18_v1d", "weights": None, "source": "resnet50d_all@1"})
    with pytest.raises(TimmTricksError, match="no file"):
        classifier_weights(str(tmp_path / "missing.safetensors"), "resnet18_v1d")
    with pytest.raises(TimmTricksError, match="does not fit|do not fit"):
        create_body({"model": "resnet34_v1d", "weights": f"resnet34_v1d@{backbone_run}/checkpoints/best.safetensors"})
    assert classifier_weights("scratch", "resnet18_v1d") is None


def test_detector_and_segmenter_are_torchvision_models_on_the_timm_body():
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.segmentation.fcn import FCN

    det_cfg = resolve("fasterrcnn_resnet50d_voc", ["backbone.model=resnet18_v1d", "backbone.weights=scratch",
                                                   "data.input_size=64", "transfer.train_sizes=[48,56]"]).mapping
    det = build_transfer_model(det_cfg, 21)
    assert isinstance(det, FasterRCNN) and det.roi_heads.box_predictor.cls_score.out_features == 21
    features = det.backbone(torch.zeros(1, 3, 64, 64))
    assert list(features) == ["0", "1", "2", "3", "pool"] and [f.shape[-1] for f in features.values()] == [16, 8, 4, 2, 1]
    assert det.transform.min_size == (48, 56) and det.eval().transform.min_size == (64,)
    seg = build_transfer_model(resolve("fcn_resnet50d_ade20k", ["backbone.model=resnet18_v1d",
                                                                "backbone.weights=scratch"]).mapping, 150)
    out = seg.eval()(torch.zeros(1, 3, 40, 48))
    assert isinstance(seg, FCN) and out["out"].shape == (1, 150, 40, 48) and out["aux"].shape == (1, 150, 40, 48)


# ---------------------------------------------------------------------------------------------------------
# tricks-train: the documented command on the tiny data sets, scaled down with --set
SMALL_DETECTOR = ("model.kwargs={rpn_batch_size_per_image: 64, box_batch_size_per_image: 32, rpn_pre_nms_top_n_train: "
                  "200, rpn_post_nms_top_n_train: 100, rpn_pre_nms_top_n_test: 100, rpn_post_nms_top_n_test: 50, "
                  "box_score_thresh: 0.0}")  # every detection kept: the reload comparison sees real outputs
SCALED_DOWN = {
    "fasterrcnn_resnet50d_voc": ["backbone.model=resnet18_v1d", "data.input_size=96", "transfer.train_sizes=[80,96]",
                                 "transfer.max_size=160", "tricks.multistep.milestones=[3]", SMALL_DETECTOR],
    "fcn_resnet50d_ade20k": ["backbone.model=resnet18_v1d", "data.input_size=64", "transfer.crop_size=64"],
}
COMMON = ["data.workers=0", "train.epochs=4", "train.global_batch_size=4", "train.log_every=1",
          "tricks.constant_warmup.epochs=0.5", "train.keep_checkpoints=2"]


def tricks_train(recipe: str, data_dir: Path, weights: Path, output: Path) -> Path:
    """`tricks-train --recipe RECIPE --data-dir DIR --set backbone.weights=RUN_DIR` plus the scaled-down --set's."""
    sets = [a for s in SCALED_DOWN[recipe] + COMMON for a in ("--set", s)]
    assert train_main(["--recipe", recipe, "--data-dir", str(data_dir), "--set", f"backbone.weights={weights}", *sets,
                       "--output", str(output), "--device", "cpu", "--no-progress"]) == 0
    runs = [p for p in output.iterdir() if (p / "summary.json").is_file()]
    assert len(runs) == 1
    return runs[0]


def _reload_check(run: Path, tmp_path: Path, inputs: list[torch.Tensor]) -> None:
    """The network rebuilt from the run's recipe.yaml takes its saved weights strictly, and with the best ones it
    gives exactly the outputs of the exported folder (whose weights are those, bit for bit)."""
    import yaml

    cfg = yaml.safe_load((run / "recipe.yaml").read_text())
    summary = json.loads((run / "summary.json").read_text())
    rebuilt = build_transfer_model(cfg, summary["num_classes"], load_weights=False)
    rebuilt.load_state_dict(load_weights(run / "checkpoints" / "last.safetensors"))
    export_dir = export_transfer(run, tmp_path / "export")
    assert {p.name for p in export_dir.iterdir()} >= {"model.safetensors", "config.json", "README.md"}
    assert "load_exported" in (export_dir / "README.md").read_text()
    exported = load_exported(export_dir)
    best = load_weights(run / "checkpoints" / "best.safetensors")
    assert all(torch.equal(v, best[k]) for k, v in exported.state_dict().items())
    rebuilt.load_state_dict(best)
    rebuilt.eval()
    with torch.no_grad():
        a, b = rebuilt(inputs), exported(inputs)
    if isinstance(a, dict):
        assert torch.equal(a["out"], b["out"]) and a["out"].abs().sum() > 0
    else:
        assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in ("boxes", "scores", "labels"))
        assert sum(len(x["boxes"]) for x in a) > 0


@pytest.mark.slow
def test_tricks_train_fasterrcnn_voc_as_documented(voc_devkit: Path, backbone_run: Path, tmp_path: Path):
    run = tricks_train("fasterrcnn_resnet50d_voc", voc_devkit, backbone_run, tmp_path / "runs")
    rows = read_metrics(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < 0.6 * losses[0], losses  # the detector learns the shapes
    assert all(0.0 <= float(r["map"]) <= 100.0 for r in rows)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "detection" and summary["num_classes"] == 21 and summary["backbone"] == "resnet18_v1d"
    assert summary["backbone_weights"] == str(backbone_run) and summary["epochs_run"] == 4
    assert (run / "recipe.yaml").is_file() and (run / "curves.png").is_file()
    assert (run / "recipe.sha256").read_text().strip() == summary["recipe_sha256"]
    # the backbone started from the run's weights: the frozen stem is still exactly them
    last, start = load_weights(run / "checkpoints" / "last.safetensors"), load_weights(
        backbone_run / "checkpoints" / "best.safetensors")
    assert torch.equal(last["backbone.body.conv1.0.weight"], start["conv1.0.weight"])
    assert not torch.equal(last["backbone.body.layer4.0.conv1.weight"], start["layer4.0.conv1.weight"])
    image = voc.detection_transforms(False)(*voc.VOCDetection(voc_devkit, "VOC2007/test")[0])[0]
    _reload_check(run, tmp_path, [image])


@pytest.fixture(scope="module")
def fcn_run(ade_root: Path, backbone_run: Path, tmp_path_factory) -> Path:
    return tricks_train("fcn_resnet50d_ade20k", ade_root, backbone_run, tmp_path_factory.mktemp("fcn") / "runs")


@pytest.mark.slow
def test_tricks_train_fcn_ade20k_as_documented(fcn_run: Path, tmp_path: Path):
    run = fcn_run
    rows = read_metrics(run)
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < 0.7 * losses[0], losses
    assert all(0.0 <= float(r[k]) <= 100.0 for r in rows for k in ("pixel_acc", "miou"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "segmentation" and summary["num_classes"] == 150
    last = load_weights(run / "checkpoints" / "last.safetensors")
    assert "aux_classifier.4.weight" in last and last["classifier.4.weight"].shape[0] == 150
    _reload_check(run, tmp_path, torch.randn(2, 3, 40, 56))


@pytest.mark.slow
def test_resume_from_the_last_epoch_checkpoint_gives_the_same_weights(fcn_run: Path, ade_root: Path, tmp_path: Path):
    """A run stopped after epoch 3 of 4 (its epoch-4 checkpoint and row gone) resumes to the very same weights."""
    import shutil

    copy = tmp_path / fcn_run.name
    shutil.copytree(fcn_run, copy)
    steps = sorted(p.stem for p in (copy / "checkpoints").glob("step-*.json"))
    assert len(steps) == 2  # keep_checkpoints=2: the end of epochs 3 and 4
    for f in (copy / "checkpoints").glob(f"{steps[-1]}.*"):
        f.unlink()
    (copy / "summary.json").unlink()
    lines = (copy / "metrics.csv").read_text().splitlines()
    atomic_write_text(copy / "metrics.csv", "\n".join(lines[:-1]) + "\n")
    assert train_main(["--resume", str(copy), "--data-dir", str(ade_root), "--device", "cpu", "--no-progress"]) == 0
    assert [int(r["epoch"]) for r in read_metrics(copy)] == [1, 2, 3, 4]
    resumed, original = (load_weights(r / "checkpoints" / "last.safetensors") for r in (copy, fcn_run))
    assert resumed.keys() == original.keys() and all(torch.equal(resumed[k], original[k]) for k in original)


def test_transfer_recipe_refuses_classification_tricks_and_a_missing_backbone(ade_root: Path, tmp_path: Path, capsys):
    args = ["--recipe", "fcn_resnet50d_ade20k", "--data-dir", str(ade_root), "--output", str(tmp_path), "--device", "cpu"]
    assert train_main(args + ["--set", "backbone.model=resnet18_v1d"]) == 2
    assert "backbone.weights is not set" in capsys.readouterr().err
    assert train_main(args + ["--set", "backbone.weights=scratch", "--set", "tricks.mixup={}"]) == 2
    assert "tricks.mixup: the segmentation loop does not apply" in capsys.readouterr().err


@pytest.mark.slow
def test_two_process_gloo_ddp_fcn_same_weights_on_both_ranks(ade_root: Path, backbone_run: Path, tmp_path: Path):
    import os
    import subprocess
    import sys

    torchrun = Path(sys.executable).with_name("torchrun")
    sets = SCALED_DOWN["fcn_resnet50d_ade20k"] + [s for s in COMMON if not s.startswith("train.epochs")]
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_port", "29537", "-m", "tricks_registry.cli", "train",
           "--no-progress", "--device", "cpu", "--recipe", "fcn_resnet50d_ade20k", "--data-dir", str(ade_root),
           "--output", str(tmp_path), f"--set=backbone.weights={backbone_run}", "--set=train.epochs=2",
           *[f"--set={s}" for s in sets]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["per_device_batch_size"] == 2
    assert len(summary["rank_checksums"]) == 2 and summary["rank_checksums"][0] == summary["rank_checksums"][1]
    rows = read_metrics(run_dir)
    assert len(rows) == 2 and all(math.isfinite(float(r["train_loss"])) and r["miou"] for r in rows)
