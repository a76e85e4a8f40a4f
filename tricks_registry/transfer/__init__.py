"""Transfer learning (He et al. 2019, section 6): Faster R-CNN on Pascal VOC (Table 8) and FCN on ADE20K
(Table 9) with the tweaked, trick-trained classifiers as backbones.

``tricks-train --recipe fasterrcnn_resnet50d_voc --data-dir VOCdevkit --set backbone.weights=RUN_DIR`` runs
the one training loop with the task the recipe's ``task`` names (:mod:`tricks_registry.tasks.detection`,
:mod:`tricks_registry.tasks.segmentation`); ``tricks export-transfer RUN_DIR OUT_DIR``
(:mod:`tricks_registry.export.transfer`) writes a trained model as a folder that rebuilds it. Modules:
:mod:`.backbones` (timm body -> torchvision detector / segmenter), :mod:`.voc` and :mod:`.ade20k` (the data sets
in their own layouts), :mod:`.metrics` (VOC07 mAP, pixel accuracy, mIoU).
"""
from .backbones import WEIGHT_FORMS, build_transfer_model
from .metrics import segmentation_scores, voc_ap, voc_detection_map

__all__ = ["WEIGHT_FORMS", "build_transfer_model", "segmentation_scores", "voc_ap", "voc_detection_map"]
