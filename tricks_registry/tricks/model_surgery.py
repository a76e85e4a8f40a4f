"""Model tricks (kind ``model``): structural changes made to a built network.

* ``dropout``: dropout on the classifier's input, done with a forward pre-hook so that the state-dict
  keys (and hence pretrained checkpoints) stay as they are;
* ``ic_layer``: Chen et al. 2019's Independent-Component layer (BatchNorm then Dropout) in front of the
  weight layers of every residual branch, the branch BNs moved there (the paper's placement) or added.

Both work on timm's and torchvision's ResNets (and the ResNet-A/B/C/D variants of :mod:`model_tweaks`).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Literal

from ..compat import forward_pre_hooks
from ..parts import ModelTransform, TimmArgs
from ..registry import TrickError, check_param, register_trick

if TYPE_CHECKING:  # annotations only: the functions import torch, torchvision and timm where they run
    from torch import nn

__all__ = ["IC_PLACEMENTS", "ClassifierInputDropout", "find_classifier", "residual_blocks", "dropout", "ic_layer"]


# --------------------------------------------------------------------------------------------- helpers

def find_classifier(model: nn.Module) -> nn.Module | None:
    """The final classification layer of ``model``, or ``None`` if it has none.

    timm models name it themselves (``model.get_classifier()``, else ``pretrained_cfg['classifier']``);
    for other models (torchvision's) it is ``model.fc`` if that is a module, else the last
    :class:`nn.Linear`. A timm model built with ``num_classes=0`` has no classifier (``nn.Identity``).
    """
    from torch import nn

    head: object = None
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        head = get_classifier()
        if isinstance(head, (tuple, list)):  # e.g. distilled ViTs: (head, head_dist); the first is the classifier
            head = head[0] if head else None
    if not isinstance(head, nn.Module):
        name = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
        if isinstance(name, str):
            try:
                head = model.get_submodule(name)
            except AttributeError:
                head = None
    if not isinstance(head, nn.Module):
        fc = getattr(model, "fc", None)
        head = fc if isinstance(fc, nn.Module) else None
    if head is None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        head = linears[-1] if linears else None
    if isinstance(head, nn.Identity):
        return None
    return head


def residual_blocks(model: nn.Module) -> list[nn.Module]:
    """The ResNet residual blocks of ``model``: timm's and torchvision's ``BasicBlock``/``Bottleneck``
    (and subclasses, e.g. :class:`model_tweaks.resnet_tweaks.BottleneckA`), in module order."""
    from timm.models import resnet as timm_resnet
    from torchvision.models import resnet as tv_resnet

    kinds = (timm_resnet.BasicBlock, timm_resnet.Bottleneck, tv_resnet.BasicBlock, tv_resnet.Bottleneck)
    return [m for m in model.modules() if isinstance(m, kinds)]


def _branch_conv_names(block: nn.Module) -> list[str]:
    """Names of the convolutions on the residual branch of a ResNet block, in order (``conv1``, ``conv2``
    and, for a bottleneck, ``conv3``); the shortcut's conv lives in ``downsample`` and is not one of them."""
    from torch import nn

    names = []
    for i in (1, 2, 3):
        conv = getattr(block, f"conv{i}", None)
        if isinstance(conv, nn.Conv2d):
            names.append(f"conv{i}")
    return names


class ClassifierInputDropout:
    """Forward pre-hook: ``F.dropout`` on the hooked module's input while the module is training.

    A plain callable object (not a closure) so that models carrying it can be deep-copied (EMA) and pickled.
    """

    def __init__(self, p: float) -> None:
        self.p = float(p)

    def __call__(self, module: nn.Module, args: tuple) -> tuple | None:
        import torch.nn.functional as F

        if not module.training or self.p == 0.0:
            return None
        return (F.dropout(args[0], p=self.p, training=True),) + tuple(args[1:])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


def _check_p(trick: str, p: float) -> None:
    check_param(0.0 <= p < 1.0, trick, "p", f"must be in [0, 1), got {p}")


# ---------------------------------------------------------------------------------------------- tricks

@register_trick("dropout", kind="model", section="not in He et al. 2019; Srivastava et al. 2014",
                implemented_by="torch.nn.functional.dropout in a forward pre-hook on the classifier")
def dropout(*, p: float = 0.2) -> ModelTransform:
    """Dropout with rate ``p`` on the classifier's input, active only in training.

    Srivastava et al. 2014 (dropout); the default 0.2 is the rate before the classifier of EfficientNet-B0
    (Tan & Le 2019) and Inception-v4 (keep probability 0.8, Szegedy et al. 2017); He et al. 2019's ResNets
    use none. ``torch.nn.functional.dropout`` does the work, in a forward pre-hook on the classifier
    (timm's ``get_classifier()``, torchvision's ``fc``), so no module is added and the state-dict keys
    do not change. A timm model built with ``drop_rate > 0`` already drops there: the trick refuses it
    rather than dropping twice.
    """
    _check_p("dropout", p)

    def apply(model: nn.Module) -> nn.Module:
        head = find_classifier(model)
        if head is None:
            raise TrickError(f"found no classifier in {type(model).__name__} (built with num_classes=0?)",
                             trick="dropout")
        drop_rate = getattr(model, "drop_rate", 0.0)
        if isinstance(drop_rate, (int, float)) and drop_rate > 0:
            raise TrickError(
                f"the model already applies dropout before its classifier (drop_rate={drop_rate}); "
                f"build it with drop_rate=0 or drop this trick", trick="dropout")
        if any(isinstance(h, ClassifierInputDropout) for h in forward_pre_hooks(head)):
            raise TrickError("already applied to this model", trick="dropout")
        head.register_forward_pre_hook(ClassifierInputDropout(p))
        return model

    return ModelTransform(apply=apply, stage="structure", timm_export=TimmArgs(
        values={"drop": float(p)},
        comments={"drop": "dropout trick: timm's drop_rate is dropout on the classifier's input, as the trick's"}))


#: the IC-layer placements: ``paper`` moves each branch BN in front of its conv (Chen et al. 2019), ``added`` adds an
#: IC layer in front of each branch conv and keeps the block's own BNs (this package's earlier placement)
IC_PLACEMENTS = ("paper", "added")


def _branch_bn(block: nn.Module, conv_name: str) -> tuple[str, nn.Module | None]:
    """The BN that follows branch conv ``convN`` in a ResNet block (``bnN``), by name."""
    name = "bn" + conv_name[len("conv"):]
    return name, getattr(block, name, None)


@register_trick("ic_layer", kind="model", section="not in He et al. 2019; Chen et al. 2019 (arXiv 1905.05928)",
                implemented_by="torch.nn.BatchNorm2d + torch.nn.Dropout (ICLayer) wrapped before convs")
def ic_layer(*, p: float = 0.05, placement: Literal["paper", "added"] = "paper") -> ModelTransform:
    """Independent-Component layers (BatchNorm, then Dropout ``p``) in front of the weight layers of every residual branch.

    Chen et al. 2019, "Rethinking the Usage of Batch Normalization and Dropout in the Training of Deep
    Neural Networks" (arXiv 1905.05928): an IC layer, ``-BatchNorm-Dropout-``, goes in front of each weight
    layer, so a layer reads ``ReLU -> IC -> weight``; BN belongs before the weight layer, not before ReLU
    (BN whitens, dropout then cuts the correlation of any pair of its outputs by the factor ``1 - p``).

    What changes in a ResNet block (timm's and torchvision's BasicBlock/Bottleneck; the stem, the
    shortcut's conv+BN and the classifier are left alone):

    * ``placement='paper'`` (default; the paper's placement, the BN *moved*): each branch conv ``convN``
      (``conv1``, ``conv2`` and, in a bottleneck, ``conv3``) becomes ``nn.Sequential(ic=ICLayer, conv=convN)``
      and the BN that followed it, ``bnN``, becomes ``nn.Identity``. A bottleneck's branch
      ``conv1-BN-ReLU-conv2-BN-ReLU-conv3-BN (+ shortcut) ReLU`` becomes
      ``BN-Drop-conv1-ReLU-BN-Drop-conv2-ReLU-BN-Drop-conv3 (+ shortcut) ReLU``: no BN is added (ResNet-50-D
      keeps its 55 BN layers), each branch BN now normalises the conv's input (``conv.in_channels`` features)
      instead of its output. The branch ends in a conv, so ``zero_gamma`` has no last BN to zero there.
    * ``placement='added'``: an IC layer is *added* in front of each branch conv and the block keeps its own
      conv-BN-ReLU, so the branch reads ``... ReLU -> BN -> Drop -> conv -> BN -> ReLU ...`` (ResNet-50-D:
      55 -> 103 BN layers). This was the only placement before the paper's became the default.

    Parameter names of the wrapped convs gain ``.conv`` (``layer1.0.conv1.weight`` ->
    ``layer1.0.conv1.conv.weight``) and the IC layer's BN is ``layer1.0.conv1.ic.bn``, so apply it before
    loading a checkpoint trained with it, not to load one trained without. The default ``p = 0.05`` is a small
    rate as Chen et al. advise (the layer is meant to decorrelate, not to regularise heavily).
    ``torch.nn.BatchNorm2d`` and ``torch.nn.Dropout`` do the work.
    """
    _check_p("ic_layer", p)
    check_param(placement in IC_PLACEMENTS, "ic_layer", "placement",
                f"must be one of {', '.join(IC_PLACEMENTS)}, got {placement!r}")

    def apply(model: nn.Module) -> nn.Module:
        from torch import nn

        from .layers import ICLayer

        blocks = residual_blocks(model)
        if not blocks:
            raise TrickError(
                f"found no ResNet residual block (timm or torchvision BasicBlock/Bottleneck) in "
                f"{type(model).__name__}; the IC-layer placement is defined for ResNets only", trick="ic_layer")
        for block in blocks:
            if any(isinstance(m, ICLayer) for m in block.modules()):
                raise TrickError("already applied to this model", trick="ic_layer")
            if placement == "paper":
                for name in _branch_conv_names(block):
                    bn_name, bn = _branch_bn(block, name)
                    if not isinstance(bn, nn.BatchNorm2d):
                        raise TrickError(
                            f"placement 'paper' moves the BN after each branch conv, but {type(block).__name__}."
                            f"{bn_name} is {type(bn).__name__}, not BatchNorm2d; use placement 'added'",
                            trick="ic_layer", param="placement")
        for block in blocks:
            for name in _branch_conv_names(block):
                conv = getattr(block, name)
                ref = next(conv.parameters())
                ic = ICLayer(conv.in_channels, p).to(device=ref.device, dtype=ref.dtype)
                ic.train(conv.training)
                setattr(block, name, nn.Sequential(OrderedDict(ic=ic, conv=conv)))
                if placement == "paper":
                    setattr(block, _branch_bn(block, name)[0], nn.Identity())
        return model

    return ModelTransform(apply=apply, stage="structure", timm_export=TimmArgs(
        notes=("ic_layer (IC layers of Chen et al. 2019): not in timm; not exported",)))
