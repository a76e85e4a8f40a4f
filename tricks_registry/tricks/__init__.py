"""The built-in tricks, one module per kind. Importing this package registers them all (``import tricks_registry``
does); it imports neither torch nor timm, which the functions of these modules import where they run.
:mod:`.criterion` and :mod:`.layers`, the ``nn.Module`` classes, import torch and are imported where they are used."""
from . import (  # noqa: F401  (imported for their registrations)
    augmentations,
    control,
    efficiency,
    finetune,
    initialisation,
    losses,
    mixing,
    model_surgery,
    optimizers,
    schedules,
)
