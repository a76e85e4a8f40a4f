"""The other libraries' private names we rely on (:mod:`tricks_registry.compat`), each on the library's real objects:
a timm or torch upgrade that moves one fails here, by name. And no other module of the package reads one."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tricks_registry import compat

PACKAGE = Path(__file__).resolve().parents[1] / "tricks_registry"


def test_grad_scale_tensor_is_the_scalers_device_tensor_that_falls_on_a_skipped_step():
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, enabled=True)
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler.scale(model(torch.ones(1, 2)).sum()).backward()
    scale = compat.grad_scale_tensor(scaler)
    assert isinstance(scale, torch.Tensor) and float(scale) == scaler.get_scale() == 1024.0
    model.weight.grad.fill_(float("inf"))  # a non-finite gradient: the step is skipped and the scale halves
    scaler.step(optimizer)
    scaler.update()
    assert float(compat.grad_scale_tensor(scaler)) == scaler.get_scale() == 512.0


def test_summary_file_writer_writes_into_the_writers_own_event_file(tmp_path):
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams
    writer = SummaryWriter(log_dir=str(tmp_path))
    file_writer = compat.summary_file_writer(writer)
    assert file_writer is writer.file_writer and file_writer.get_logdir() == str(tmp_path)
    _, session_start, _ = hparams({"lr": 0.1}, {})
    file_writer.add_summary(session_start)
    writer.close()
    assert [p.parent for p in tmp_path.rglob("events.out.tfevents.*")] == [tmp_path]   # no sub-folder


@pytest.mark.parametrize("batch", [3, 4])
def test_mixup_batch_mixes_any_batch_size_in_place_and_returns_lambda(batch):
    from timm.data import Mixup
    torch.manual_seed(0)
    mixer = Mixup(mixup_alpha=1.0, cutmix_alpha=0.0, prob=1.0, mode="batch", label_smoothing=0.0, num_classes=3)
    x = torch.arange(batch, dtype=torch.float32).reshape(batch, 1, 1, 1).repeat(1, 1, 2, 2)
    flipped = x.flip(0).clone()
    original = x.clone()
    lam = compat.mixup_batch(mixer, x)
    assert isinstance(lam, float) and 0.0 <= lam <= 1.0
    assert torch.allclose(x, lam * original + (1 - lam) * flipped)


def test_forward_pre_hooks_lists_the_registered_hooks_in_order():
    module = nn.Linear(2, 2)

    def first(mod, args):
        return None

    def second(mod, args):
        return None

    assert compat.forward_pre_hooks(module) == ()
    module.register_forward_pre_hook(first)
    handle = module.register_forward_pre_hook(second)
    assert compat.forward_pre_hooks(module) == (first, second)
    handle.remove()
    assert compat.forward_pre_hooks(module) == (first,)


def test_timm_model_card_body_is_timms_card():
    card = compat.timm_model_card_body({"description": "A test model.", "details": {"Params (M)": "1.00"},
                                        "citation": "@article{x}"}, "org/resnet_test")
    assert card.startswith("---\n") and card.count("---\n") >= 2
    assert "# Model card for org/resnet_test" in card and "A test model." in card and "Params (M)" in card


def test_layer_types_are_torchs_bases():
    conv, norm, bn = compat.conv_layer_types(), compat.norm_layer_types(), compat.batchnorm_layer_types()
    for layer in (nn.Conv1d(1, 1, 1), nn.Conv2d(1, 1, 1), nn.Conv3d(1, 1, 1), nn.ConvTranspose2d(1, 1, 1),
                  nn.LazyConv2d(1, 1)):
        assert isinstance(layer, conv), type(layer)
    assert not isinstance(nn.Linear(1, 1), conv)
    for layer in (nn.BatchNorm1d(1), nn.BatchNorm2d(1), nn.SyncBatchNorm(1), nn.InstanceNorm2d(1, affine=True)):
        assert isinstance(layer, norm), type(layer)
    for layer in (nn.BatchNorm1d(1), nn.BatchNorm2d(1), nn.BatchNorm3d(1), nn.SyncBatchNorm(1)):
        assert isinstance(layer, bn), type(layer)
    assert not isinstance(nn.InstanceNorm2d(1), bn) and not isinstance(nn.GroupNorm(1, 1), norm)


def test_uncompiled_is_the_module_torch_compile_wrapped():
    model = nn.Linear(2, 2)
    compiled = torch.compile(model)   # wrapping only: nothing is compiled until it is called
    assert compiled is not model and compat.uncompiled(compiled) is model
    assert compat.uncompiled(model) is model


def test_compat_imports_no_library_at_import():
    code = ("import sys, tricks_registry.compat; "
            "print(sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent).stdout.strip()
    assert out == "[]"


def _private_reads(tree: ast.AST) -> list[str]:
    """``x._name`` attribute reads, ``getattr(x, "_name")`` and ``from lib._module import`` of another object than
    ``self``/``cls``/``super()``, and not of a name the module defines itself."""
    own = {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            if isinstance(base, ast.Name) and base.id in ("self", "cls", "os"):   # os._exit is public
                continue
            if isinstance(base, ast.Call) and getattr(base.func, "id", "") == "super":
                continue
            if node.attr in own:
                continue
            found.append(node.attr)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("getattr", "hasattr") and \
                len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and \
                str(node.args[1].value).startswith("_") and not str(node.args[1].value).startswith("__"):
            found.append(str(node.args[1].value))
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and \
                any(part.startswith("_") and not part.startswith("__") for part in node.module.split(".")):
            found.append(node.module)
    return found


def test_no_module_but_compat_reads_another_librarys_private_name():
    reads = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "compat.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # our own private names: attributes the package's classes define (self._x read through another object)
        found = [name for name in _private_reads(tree) if name not in _OUR_PRIVATE_ATTRIBUTES]
        if found:
            reads[str(path.relative_to(PACKAGE))] = found
    assert not reads


#: private attributes of our own objects, read by the module that defines them
_OUR_PRIVATE_ATTRIBUTES = {"_typed", "_forget_in_child", "_model", "_loader"}
