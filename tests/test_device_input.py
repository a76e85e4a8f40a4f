"""The device end of the loader (issue 21, part 7): on CUDA the workers hand out uint8 images (and the PCA
lighting offset they drew) and the device normalizes, as timm's PrefetchLoader does. The batch must be the one the
CPU path makes, bit for bit: checked here on the CPU, through the task, with the paper's augmentation."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from tricks_registry.build import recipe_pipeline
from tricks_registry.data import ResumableSampler, SeededDataset
from tricks_registry.recipe import resolve
from tricks_registry.tasks.classification import ClassificationTask
from tricks_registry.tricks.augmentations import DeviceInput, build_train_transform, split_for_device
from tricks_registry.parts import SampleTransform


def batches(recipe, data_dir, *, on_device: bool):
    task = ClassificationTask(recipe, normalize_on_device=on_device, scan_data=False)
    data = task.data(str(data_dir), recipe_pipeline(recipe), progress=False)
    out = []
    for split in (data.train, data.val):
        sampler = ResumableSampler(split, num_replicas=1, rank=0, seed=3)
        loader = DataLoader(SeededDataset(split), batch_size=16, sampler=sampler, num_workers=0)
        images, labels = next(iter(loader))
        out.append((images, task.to_device((images, labels), torch.device("cpu"))[0]))
    val_images = out[1][1] if not on_device else task.device_finish("val")(out[1][0])
    return out[0], val_images, task


@pytest.mark.parametrize("recipe_name", ["resnet50d_all", "resnet50_baseline"])
def test_uint8_batches_normalized_on_the_device_equal_the_cpu_path(cifar_subset, recipe_name):
    recipe = resolve(recipe_name, ["data.input_size=64"])
    (cpu_raw, cpu), cpu_val, _ = batches(recipe, cifar_subset, on_device=False)
    (raw, dev), dev_val, task = batches(recipe, cifar_subset, on_device=True)
    assert isinstance(raw, DeviceInput) and raw.pixels.dtype == torch.uint8  # what the workers hand out
    assert raw.pixels.element_size() * 4 == cpu_raw.element_size()  # a copy four times smaller
    lighting = "pca_lighting" in recipe.mapping["tricks"]
    assert raw.shift.shape == ((16, 3) if lighting else (16, 0))
    assert dev.dtype == cpu.dtype == torch.float32 and torch.equal(dev, cpu)
    assert torch.equal(dev_val, cpu_val)


def test_a_transform_with_anything_else_after_totensor_stays_whole_on_the_cpu():
    import torchvision.transforms as T

    erasing = SampleTransform(transform=T.RandomErasing(p=1.0), stage="normalized")
    whole = build_train_transform([erasing], input_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert split_for_device(whole) is None
    plain = build_train_transform([], input_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert split_for_device(plain) is not None
