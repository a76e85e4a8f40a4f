"""The built-in tricks, one module per kind. Importing this package registers them all."""
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
