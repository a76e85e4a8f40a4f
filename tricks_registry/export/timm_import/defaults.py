"""What timm's ``train.py`` takes: every dest with its default, the flags the importer reads, and why some
others are dropped. Data only."""
from __future__ import annotations

from typing import Any, Mapping

__all__ = ["TIMM_TRAIN_DEFAULTS", "MAPPED_FLAGS", "DROP_REASONS"]

#: Every dest of timm's ``train.py`` (at :data:`~tricks_registry.export.timm_args.TIMM_TRAIN_PY_REF`) and its
#: default, read off its parser: what a key missing from ``args.yaml`` means.
TIMM_TRAIN_DEFAULTS: Mapping[str, Any] = {
    "data": None, "data_dir": None, "dataset": "", "train_split": "train", "val_split": "validation",
    "train_num_samples": None, "val_num_samples": None, "dataset_download": False, "class_map": "",
    "input_img_mode": None, "input_key": None, "target_key": None, "dataset_trust_remote_code": False,
    "model": "resnet50", "pretrained": False, "pretrained_path": None, "initial_checkpoint": "", "resume": "",
    "no_resume_opt": False, "num_classes": None, "gp": None, "img_size": None, "in_chans": None,
    "input_size": None, "crop_pct": None, "mean": None, "std": None, "interpolation": "", "batch_size": 128,
    "validation_batch_size": None, "channels_last": False, "fuser": "", "grad_accum_steps": 1,
    "grad_checkpointing": False, "fast_norm": False, "model_kwargs": {}, "head_init_scale": None,
    "head_init_bias": None, "torchcompile_mode": None, "torchscript": False, "torchcompile": None,
    "device": "cuda", "amp": False, "amp_dtype": "float16", "model_dtype": None, "no_ddp_bb": False,
    "synchronize_step": False, "local_rank": 0, "device_modules": None, "opt": "sgd", "opt_eps": None,
    "opt_betas": None, "momentum": 0.9, "weight_decay": 2e-05, "clip_grad": None, "clip_mode": "norm",
    "layer_decay": None, "layer_decay_min_scale": 0, "layer_decay_no_opt_scale": None, "opt_kwargs": {},
    "sched": "cosine", "sched_on_updates": False, "lr": None, "lr_base": 0.1, "lr_base_size": 256,
    "lr_base_scale": "", "lr_noise": None, "lr_noise_pct": 0.67, "lr_noise_std": 1.0, "lr_cycle_mul": 1.0,
    "lr_cycle_decay": 0.5, "lr_cycle_limit": 1, "lr_k_decay": 1.0, "warmup_lr": 1e-05, "min_lr": 0,
    "epochs": 300, "epoch_repeats": 0.0, "start_epoch": None, "decay_milestones": [90, 180, 270],
    "decay_epochs": 90, "warmup_epochs": 5, "warmup_prefix": False, "cooldown_epochs": 0, "patience_epochs": 10,
    "decay_rate": 0.1, "no_aug": False, "train_crop_mode": None, "scale": [0.08, 1.0],
    "ratio": [0.75, 1.3333333333333333], "hflip": 0.5, "vflip": 0.0, "color_jitter": 0.4,
    "color_jitter_prob": None, "grayscale_prob": None, "gaussian_blur_prob": None, "aa": None, "aug_repeats": 0,
    "aug_splits": 0, "jsd_loss": False, "bce_loss": False, "bce_sum": False, "bce_target_thresh": None,
    "bce_pos_weight": None, "reprob": 0.0, "remode": "pixel", "recount": 1, "resplit": False, "mixup": 0.0,
    "cutmix": 0.0, "cutmix_minmax": None, "mixup_prob": 1.0, "mixup_switch_prob": 0.5, "mixup_mode": "batch",
    "mixup_off_epoch": 0, "smoothing": 0.1, "train_interpolation": "random", "drop": 0.0, "drop_connect": None,
    "drop_path": None, "drop_block": None, "bn_momentum": None, "bn_eps": None, "sync_bn": False,
    "dist_bn": "reduce", "split_bn": False, "model_ema": False, "model_ema_force_cpu": False,
    "model_ema_decay": 0.9998, "model_ema_warmup": False, "seed": 42, "worker_seeding": "all", "log_interval": 50,
    "val_interval": 1, "recovery_interval": 0, "checkpoint_hist": 10, "workers": 4, "save_images": False,
    "pin_mem": False, "no_prefetcher": False, "output": "", "experiment": "", "eval_metric": "top1", "tta": 0,
    "use_multi_epochs_loader": False, "log_wandb": False, "wandb_project": None, "wandb_tags": [],
    "wandb_resume_id": "", "train_img_sizes": None, "train_batch_sizes": None, "train_size_probs": None,
    "train_size_schedule": "constant", "train_size_schedule_spread": 0.65, "train_size_random_mix": 0.1,
    "train_batches_per_epoch": None, "variable_batch_loss_scale": "none", "naflex_loader": False,
    "naflex_train_seq_lens": [128, 256, 576, 784, 1024], "naflex_max_seq_len": 576, "naflex_patch_sizes": None,
    "naflex_patch_size_probs": None, "naflex_loss_scale": "linear", "naflex_patchify_channels_first": False,
    "kd_model_name": None, "kd_distill_type": "logit", "kd_loss_type": "kl", "distill_loss_weight": None,
    "task_loss_weight": None, "kd_temperature": 4.0, "kd_student_feature_dim": None,
    "kd_teacher_feature_dim": None, "kd_token_distill_type": "soft",
}

#: The flags the importer reads. Any other flag that differs from timm's default is dropped (and listed); one of
#: these is dropped too where the value has no equivalent (``mixup_mode: pair``, ``clip_mode: agc`` ...). Flags of
#: a part that is off (``decay_milestones`` with cosine, ``mixup_prob`` without mixing) are ignored, as train.py
#: ignores them.
MAPPED_FLAGS = frozenset({
    # model
    "model", "pretrained", "model_kwargs", "device_modules", "num_classes", "in_chans", "gp", "drop", "drop_path",
    "drop_block", "bn_momentum", "bn_eps",
    # data
    "dataset", "train_split", "val_split", "img_size", "input_size", "crop_pct", "interpolation", "train_interpolation", "mean",
    "std", "workers",
    # augmentation
    "no_aug", "scale", "ratio", "hflip", "color_jitter", "aa", "reprob", "remode", "recount",
    # optimisation
    "batch_size", "grad_accum_steps", "lr", "lr_base", "lr_base_size", "lr_base_scale", "weight_decay", "opt",
    "momentum", "opt_eps", "opt_betas", "opt_kwargs", "clip_grad", "clip_mode",
    # schedule
    "sched", "epochs", "warmup_epochs", "warmup_lr", "warmup_prefix", "sched_on_updates", "min_lr", "decay_epochs",
    "decay_milestones", "decay_rate", "cooldown_epochs", "patience_epochs",
    # loss
    "smoothing", "mixup", "cutmix", "cutmix_minmax", "mixup_prob", "mixup_switch_prob", "mixup_mode",
    "kd_model_name", "kd_distill_type", "kd_loss_type", "kd_temperature", "task_loss_weight", "distill_loss_weight",
    # runtime
    "amp", "amp_dtype", "channels_last", "torchcompile", "torchcompile_mode", "model_ema", "model_ema_decay",
    "model_ema_warmup", "seed", "log_interval",
})

#: why some flags that have no recipe key are dropped (the rest: no trick or recipe key says it)
DROP_REASONS = {
    "data_dir": "the data: tricks-train --data-dir DIR", "data": "the data: tricks-train --data-dir DIR",
    "output": "where timm writes the run",
    "experiment": "the run's folder name", "resume": "resuming: tricks-train --resume RUN_DIR",
    "no_resume_opt": "resuming", "start_epoch": "resuming: tricks-train --resume RUN_DIR",
    "recovery_interval": "tricks-train --recovery-interval N", "local_rank": "set by torchrun",
    "device": "tricks-train picks the device", "initial_checkpoint": "weights to start from: model.pretrained takes "
    "a weights spec (ARCH@file.safetensors ...)", "pretrained_path": "weights to start from: model.pretrained takes "
    "a weights spec (ARCH@file.safetensors ...)",
}
