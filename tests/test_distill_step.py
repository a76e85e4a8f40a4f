"""The training step with distillation (section 5.3) and mixing (section 5.4): the teacher sees exactly the batch the
student sees, the mixed one (a teacher fed the unmixed images would grade the student on other pictures)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tricks_registry.parts import compose, parts_from_config
from tricks_registry.recipe import resolve
from tricks_registry.tasks.classification import forward_loss
from tricks_registry.tricks.losses import make_criterion
from tricks_registry.tricks.mixing import batch_transform


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def _inputs_of(model: nn.Module, seen: list[torch.Tensor]) -> None:
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))


def test_the_teacher_sees_the_students_mixed_batch():
    recipe = resolve("resnet50d_all")  # mixup (alpha 0.2, every batch), label smoothing, distillation
    pipeline = compose(parts_from_config(recipe.mapping["tricks"]))
    assert pipeline.distillation is not None and pipeline.batch_mixers
    torch.manual_seed(0)
    student, teacher = _net(), _net().eval()
    seen_s: list[torch.Tensor] = []
    seen_t: list[torch.Tensor] = []
    _inputs_of(student, seen_s)
    _inputs_of(teacher, seen_t)
    images, labels = torch.randn(8, 3, 16, 16), torch.arange(8) % 10
    original = images.clone()
    np.random.seed(0)
    mix = batch_transform(pipeline.batch_mixers, pipeline.label_smoothing, 10)
    loss = forward_loss(student, images, labels, mix=mix, criterion=make_criterion(pipeline, student),
                        runtime=pipeline.runtime, device_type="cpu", teacher_model=teacher)
    assert torch.isfinite(loss)
    assert len(seen_s) == len(seen_t) == 1
    assert not torch.equal(seen_s[0], original)   # the batch was mixed ...
    assert torch.equal(seen_t[0], seen_s[0])     # ... and the teacher saw that mixed batch
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())  # the teacher is not trained
    assert any(p.grad is not None for p in student.parameters())
