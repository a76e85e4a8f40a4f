"""Transfer metrics (He et al. 2019, section 6): Pascal VOC detection mAP (Table 8) and segmentation pixel
accuracy / mIoU (Table 9).

Detection follows the VOC devkit (``VOCevaldet.m``; py-faster-rcnn's ``voc_eval.py``), per class:

* detections of all test images are sorted by score (a stable sort: ties keep image order);
* each one is matched to the ground-truth box of its image with the highest IoU; IoU > 0.5 (strictly) and a
  box not matched before is a true positive, an already matched one a false positive (a duplicate);
* a detection matched to a ``difficult`` box counts neither way, and difficult boxes are not in the recall's
  denominator;
* AP is the 11-point interpolated average precision of VOC2007, the metric of the paper's Table 8
  (``voc07``: the mean over recall thresholds 0, 0.1, ..., 1 of the best precision at recall >= t), or the
  area under the precision envelope used from VOC2010 on (``area``).

Boxes are ``[x1, y1, x2, y2]`` in continuous pixel coordinates. The VOC readers store the annotations'
1-based inclusive pixel boxes as ``[xmin - 1, ymin - 1, xmax, ymax]``, so the plain continuous IoU here is
exactly the devkit's IoU with its ``+ 1`` widths.

Segmentation (GluonCV's ``SegmentationMetric``, ``ignore_index`` pixels left out): pixel accuracy is correct
labelled pixels over labelled pixels; IoU of a class is ``TP / (TP + FP + FN)`` over the whole data set;
mIoU is the mean over the classes present in the labels or the predictions (a class absent from both has no
IoU; on the full ADE20K validation set all 150 are present).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torchvision

__all__ = ["box_iou", "voc_ap", "voc_detection_map", "confusion_matrix", "segmentation_scores"]


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box ``[4]`` with each of ``boxes`` ``[N, 4]`` (continuous coordinates): torchvision's
    ``box_iou``, in float64; two empty boxes (no union) have IoU 0."""
    iou = torchvision.ops.box_iou(torch.as_tensor(np.asarray(box, dtype=np.float64)).reshape(1, 4),
                                  torch.as_tensor(np.asarray(boxes, dtype=np.float64)).reshape(-1, 4))[0]
    return torch.nan_to_num(iou, nan=0.0).numpy()


def voc_ap(recall: np.ndarray, precision: np.ndarray, metric: str = "voc07") -> float:
    """Average precision from a precision/recall curve (ordered by decreasing score)."""
    recall, precision = np.asarray(recall, dtype=np.float64), np.asarray(precision, dtype=np.float64)
    if metric == "voc07":
        points = [precision[recall >= t].max() if np.any(recall >= t) else 0.0 for t in np.linspace(0, 1, 11)]
        return float(np.mean(points))
    if metric != "area":
        raise ValueError(f"unknown AP metric {metric!r}; use 'voc07' or 'area'")
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # the precision envelope
    changes = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def _np(x: torch.Tensor | np.ndarray | Sequence) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def voc_detection_map(detections: Sequence[Mapping], ground_truths: Sequence[Mapping], num_classes: int, *,
                      iou_threshold: float = 0.5, metric: str = "voc07") -> dict:
    """VOC mAP over images. ``detections[i]``: ``boxes [N, 4]``, ``scores [N]``, ``labels [N]`` of image ``i``;
    ``ground_truths[i]``: ``boxes``, ``labels`` and ``difficult`` (bool) of the same image. Labels run from 1
    to ``num_classes - 1`` (0 is the background, as in torchvision's detectors).

    Returns ``{"map": mean AP over the classes with at least one non-difficult box, "ap": {label: AP or None}}``.
    """
    if len(detections) != len(ground_truths):
        raise ValueError(f"{len(detections)} images of detections for {len(ground_truths)} of ground truth")
    gts = [{k: _np(g[k]) for k in ("boxes", "labels", "difficult")} for g in ground_truths]
    dets = [{k: _np(d[k]) for k in ("boxes", "scores", "labels")} for d in detections]
    ap: dict[int, float | None] = {}
    for c in range(1, num_classes):
        gt_boxes = [g["boxes"][g["labels"] == c].reshape(-1, 4).astype(np.float64) for g in gts]
        gt_difficult = [g["difficult"][g["labels"] == c].astype(bool) for g in gts]
        npos = int(sum((~d).sum() for d in gt_difficult))
        if npos == 0:
            ap[c] = None  # no non-difficult object of this class: AP is undefined (VOC reports none)
            continue
        image_idx, scores, boxes = [], [], []
        for i, d in enumerate(dets):
            keep = d["labels"] == c
            image_idx += [i] * int(keep.sum())
            scores.append(d["scores"][keep].reshape(-1))
            boxes.append(d["boxes"][keep].reshape(-1, 4))
        scores_all = np.concatenate(scores) if scores else np.zeros(0)
        boxes_all = np.concatenate(boxes).astype(np.float64) if boxes else np.zeros((0, 4))
        order = np.argsort(-scores_all, kind="stable")
        matched = [np.zeros(len(b), dtype=bool) for b in gt_boxes]
        tp, fp = np.zeros(len(order)), np.zeros(len(order))
        for rank, j in enumerate(order):
            i = image_idx[j]
            if len(gt_boxes[i]) == 0:
                fp[rank] = 1
                continue
            overlaps = box_iou(boxes_all[j], gt_boxes[i])
            best = int(np.argmax(overlaps))
            if overlaps[best] > iou_threshold:
                if gt_difficult[i][best]:
                    continue  # matched a difficult box: neither a true nor a false positive
                if not matched[i][best]:
                    tp[rank], matched[i][best] = 1, True
                else:
                    fp[rank] = 1  # a duplicate detection
            else:
                fp[rank] = 1
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        recall = tp / npos
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        ap[c] = voc_ap(recall, precision, metric)
    defined = [v for v in ap.values() if v is not None]
    return {"map": float(np.mean(defined)) if defined else 0.0, "ap": ap}


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = 255) -> torch.Tensor:
    """``[num_classes, num_classes]`` counts (rows: label, columns: prediction) over the labelled pixels."""
    keep = target != ignore_index
    t, p = target[keep].long(), pred[keep].long()
    if t.numel() and (int(t.max()) >= num_classes or int(t.min()) < 0):
        raise ValueError(f"labels must be in 0..{num_classes - 1} or {ignore_index} (ignored), "
                         f"got {int(t.min())}..{int(t.max())}")
    return torch.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def segmentation_scores(confusion: torch.Tensor) -> dict:
    """Pixel accuracy, per-class IoU and mIoU (fractions in [0, 1]) from a confusion matrix."""
    conf = confusion.double()
    inter = conf.diag()
    union = conf.sum(0) + conf.sum(1) - inter
    labelled = conf.sum()
    present = union > 0
    iou = torch.where(present, inter / union.clamp(min=1), torch.full_like(inter, float("nan")))
    return {"pixel_acc": float(inter.sum() / labelled) if labelled > 0 else 0.0,
            "miou": float(iou[present].mean()) if present.any() else 0.0,
            "iou": [None if v != v else float(v) for v in iou.tolist()]}
