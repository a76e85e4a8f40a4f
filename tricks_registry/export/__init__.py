"""Exports of a trained run: the Hub folder and card (:mod:`.hub`), timm ``train.py`` arguments (:mod:`.timm_args`),
and detection/segmentation models (:mod:`.transfer`)."""
