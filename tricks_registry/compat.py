"""Every private name of another library (torch, timm, TensorBoard) that timm-tricks relies on, in one place.

Each is wrapped in a small public function here, and each function has a test (``tests/test_compat.py``) that
calls it on the library's real objects, so that an upgrade of timm or torch that moves or renames one fails there,
loudly and by name, rather than deep inside a training run. No other module of the package reads another
library's ``_name``: it calls the function here.

Torch-free at import (the library is imported inside each function, or the function only reads an attribute of the
object it is given), so any floor of the house may use it.

=================================  ==============================================================================
function                           what it reads, and why there is no public name
=================================  ==============================================================================
:func:`grad_scale_tensor`          ``torch.amp.GradScaler._scale``: the scale as a device tensor; the public
                                   ``get_scale()`` returns a Python float (a host sync on every step)
:func:`summary_file_writer`        ``SummaryWriter._get_file_writer()``: the run's own event file; the public
                                   ``add_hparams`` writes into a new sub-folder (a second run in TensorBoard)
:func:`mixup_batch`                ``timm.data.Mixup._mix_batch``: one batch mixed in place in ``mode='batch'``;
                                   the public ``__call__`` asserts an even batch size, which only the
                                   ``pair``/``elem`` modes need
:func:`forward_pre_hooks`          ``nn.Module._forward_pre_hooks``: the hooks a module has; torch registers them
                                   publicly but lists them only through the private dict
:func:`timm_model_card_body`       ``timm.models._hub.generate_readme``: the model card body timm's own
                                   ``push_to_hf_hub`` writes; not exported by ``timm.models``
:func:`conv_layer_types`           ``nn.modules.conv._ConvNd``: the base of every convolution (and transposed one)
:func:`norm_layer_types`           ``nn.modules.batchnorm._NormBase``: the base of batch and instance norms
:func:`batchnorm_layer_types`      ``nn.modules.batchnorm._BatchNorm``: the base of BatchNorm1d/2d/3d, SyncBatchNorm
:func:`uncompiled`                 ``torch.compile``'s ``OptimizedModule._orig_mod``: the module it compiled
=================================  ==============================================================================
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # importable without torch
    import torch
    from torch import nn

__all__ = ["grad_scale_tensor", "summary_file_writer", "mixup_batch", "forward_pre_hooks", "timm_model_card_body",
           "conv_layer_types", "norm_layer_types", "batchnorm_layer_types", "uncompiled"]


def grad_scale_tensor(scaler: "torch.amp.GradScaler") -> "torch.Tensor | None":
    """The loss scale of an enabled ``torch.amp.GradScaler`` as the tensor on the device that it updates in place
    (``None`` before its first ``scale()``). Reading it does not sync with the device, unlike ``get_scale()``."""
    return scaler._scale


def summary_file_writer(writer: Any) -> Any:
    """The ``FileWriter`` of a ``torch.utils.tensorboard.SummaryWriter``'s own log folder (made again if the writer
    was closed): ``add_summary`` on it puts a summary, e.g. an HParams session, in the run's event file."""
    return writer._get_file_writer()


def mixup_batch(mixer: Any, x: "torch.Tensor") -> float:
    """Mix the batch ``x`` in place as a ``timm.data.Mixup`` in ``mode='batch'`` does (each sample with the one at
    the mirrored position, mixup or cutmix as its switch draws) and return the lambda (the label weight of the
    unflipped batch), for any batch size: the step that ``Mixup.__call__`` takes after asserting an even batch."""
    return mixer._mix_batch(x)


def forward_pre_hooks(module: "nn.Module") -> tuple[Any, ...]:
    """The forward pre-hooks registered on ``module`` (by ``register_forward_pre_hook``), in registration order."""
    return tuple(module._forward_pre_hooks.values())


def timm_model_card_body(model_card: Mapping[str, Any], model_name: str) -> str:
    """timm's model card (``README.md``) for ``model_name`` from its card fields (``description``, ``details``,
    ``usage``, ``citation`` ...), front matter included: what ``timm.models.push_to_hf_hub`` writes."""
    from timm.models._hub import generate_readme
    return generate_readme(dict(model_card), model_name)


def conv_layer_types() -> tuple[type, ...]:
    """The classes every torch convolution derives from (``Conv1d/2d/3d``, ``ConvTranspose*``, their lazy forms)."""
    from torch import nn
    return (nn.modules.conv._ConvNd,)


def norm_layer_types() -> tuple[type, ...]:
    """The classes torch's batch and instance norms derive from (``BatchNorm*``, ``SyncBatchNorm``,
    ``InstanceNorm*``)."""
    from torch import nn
    return (nn.modules.batchnorm._NormBase,)


def batchnorm_layer_types() -> tuple[type, ...]:
    """The classes torch's batch norms derive from (``BatchNorm1d/2d/3d``, ``SyncBatchNorm``, the lazy ones), which
    keep running statistics in training mode."""
    from torch import nn
    return (nn.modules.batchnorm._BatchNorm,)


def uncompiled(module: "nn.Module") -> "nn.Module":
    """The module that ``torch.compile`` wrapped (its ``OptimizedModule`` keeps it as ``_orig_mod``); any other
    module as it is."""
    return getattr(module, "_orig_mod", module)
