"""Efficient-training tricks (kind ``efficiency``): mixed precision, channels-last memory, compilation.

He et al. 2019, section 3.2 trains in FP16 (with FP32 master weights and loss scaling); here
``torch.amp`` does that. The tricks only return runtime settings; the training loop applies them with
the helpers below: :func:`autocast` around the forward pass and loss, :func:`grad_scaler` for the
backward/step, :func:`prepare_model` once after the model is built (and before the optimizer is
made) and :func:`prepare_input` on every batch.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, ContextManager, Literal

from ..parts import AmpSettings, CompileSettings, RuntimePart, RuntimeSettings
from ..registry import register_trick

if TYPE_CHECKING:  # annotations only: the functions import torch, torchvision and timm where they run
    import torch
    from torch import nn

__all__ = ["autocast", "grad_scaler", "prepare_model", "prepare_input", "amp_dtype"]


@register_trick("amp", kind="efficiency", section="3.2",
                implemented_by="torch.amp.autocast + torch.amp.GradScaler")
def amp(*, dtype_cuda: Literal["float16", "bfloat16"] = "float16",
        dtype_cpu: Literal["bfloat16", "float16"] = "bfloat16") -> RuntimePart:
    """Automatic mixed precision: low-precision forward/backward, FP32 weights, loss scaling for FP16.

    He et al. 2019, section 3.2 (FP16 training with FP32 master weights and loss scaling,
    Micikevicius et al. 2018). ``torch.amp.autocast`` with ``dtype_cuda`` on CUDA (float16 plus a
    ``torch.amp.GradScaler``) and ``dtype_cpu`` elsewhere (bfloat16, which needs no loss scaling).
    """
    return RuntimePart(RuntimeSettings(amp=AmpSettings(dtype_cuda=dtype_cuda, dtype_cpu=dtype_cpu)))


@register_trick("channels_last", kind="efficiency", section="not in the paper; complements 3.2",
                implemented_by="torch.channels_last memory format")
def channels_last() -> RuntimePart:
    """Keep the model's weights and the input batches in channels-last (NHWC) memory format.

    Not in He et al. 2019; the PyTorch memory format that lets tensor-core convolutions of mixed
    precision training (section 3.2) skip layout transposes. ``Tensor.to(memory_format=torch.channels_last)``.
    """
    return RuntimePart(RuntimeSettings(channels_last=True))


@register_trick("compile", kind="efficiency", section="not in the paper",
                implemented_by="torch.compile")
def compile_model(*, mode: Literal["default", "reduce-overhead", "max-autotune",
                                   "max-autotune-no-cudagraphs"] = "default") -> RuntimePart:
    """Compile the model with ``torch.compile`` (graph capture and kernel fusion) for faster steps.

    Not in He et al. 2019; PyTorch 2's ``torch.compile(model, mode=mode)``, applied last, after
    every other model change.
    """
    return RuntimePart(RuntimeSettings(compile=CompileSettings(mode=mode)))


# ---------------------------------------------------------------------------------------------
# Helpers for the training loop
# ---------------------------------------------------------------------------------------------

def _device_type(device_type: str | torch.device) -> str:
    import torch

    return torch.device(device_type).type


def amp_dtype(runtime: RuntimeSettings, device_type: str | torch.device) -> torch.dtype | None:
    """The autocast dtype the runtime asks for on ``device_type``, or None when amp is off."""
    import torch

    settings = runtime.amp
    if settings is None:
        return None
    return getattr(torch, settings.dtype_cuda if _device_type(device_type) == "cuda" else settings.dtype_cpu)


def autocast(runtime: RuntimeSettings, device_type: str | torch.device) -> ContextManager:
    """A context for the forward pass and loss: ``torch.amp.autocast`` when amp is on, else a null context."""
    import torch

    dtype = amp_dtype(runtime, device_type)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.amp.autocast(device_type=_device_type(device_type), dtype=dtype)


def grad_scaler(runtime: RuntimeSettings, device_type: str | torch.device) -> torch.amp.GradScaler:
    """A ``torch.amp.GradScaler``, enabled only for float16 autocast on CUDA (a no-op otherwise).

    Use it unconditionally: ``scaler.scale(loss).backward(); scaler.step(opt); scaler.update()``.
    """
    import torch

    dev = _device_type(device_type)
    enabled = dev == "cuda" and amp_dtype(runtime, dev) == torch.float16
    return torch.amp.GradScaler(dev if enabled else "cpu", enabled=enabled)


def prepare_model(model: nn.Module, runtime: RuntimeSettings) -> nn.Module:
    """Apply the runtime's model settings: channels-last memory format, then ``torch.compile`` last.

    Moves the model in place for channels-last; returns the compiled wrapper when ``compile`` is on
    (build the optimizer from the original module's parameters, which the wrapper shares).
    """
    import torch

    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if runtime.compile is not None:
        model = torch.compile(model, mode=runtime.compile.mode)
    return model


def prepare_input(x: torch.Tensor, runtime: RuntimeSettings) -> torch.Tensor:
    """Put an input batch into the runtime's memory format (channels-last for 4-D tensors when on)."""
    import torch

    if runtime.channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x
