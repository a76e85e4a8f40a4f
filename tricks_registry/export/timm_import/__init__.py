"""Import a run of timm's own ``train.py`` as a recipe: ``tricks recipe import ARGS.yaml --name NAME``.

timm's ``train.py`` writes every option of a run (its argparse *dests*) into ``args.yaml`` in the run's output
folder. :func:`import_timm_args` reads that file, a missing key taking ``train.py``'s default
(:data:`TIMM_TRAIN_DEFAULTS`), and gives a recipe made of our tricks:

* each group of flags maps to the trick that :mod:`..timm_args` exports it from, one small function per slot
  (:mod:`.slots`) (``sched cosine`` -> ``cosine``, ``warmup_epochs`` -> ``linear_warmup``, ``smoothing`` ->
  ``label_smoothing``, ``mixup``/``cutmix`` -> ``mixup``/``cutmix``, ``opt`` -> ``sgd_nesterov``/``sgd``/``adamw``,
  ``aa`` -> ``randaugment``/``autoaugment``, ``reprob`` -> ``random_erasing``, ``amp``, ``channels_last``,
  ``model_ema`` -> ``ema`` ...), the recipe's own keys from theirs (model, data, batch, LR, weight decay, epochs,
  seed), and the model arguments that have no trick (``drop_path`` ...) into ``model.kwargs``, by name;
* the LR: ``lr``, or where it is null, what ``train.py`` derives from ``lr_base``: ``lr_base * global batch /
  lr_base_size`` is the ``linear_scaling`` trick. The global batch is ``batch_size * world size *
  grad_accum_steps``; ``args.yaml`` does not record the world size, so it is the ``nproc`` given (default 1);
* every other flag set away from timm's default is *dropped*: listed with its value (:class:`DroppedFlag`), on
  the terminal and in a comment block at the top of the recipe.

A file written by ``tricks recipe export`` also holds the source recipe (``timm_tricks``, see
:data:`~tricks_registry.export.timm_args.CARRY_KEY`); ``train.py`` copies it into its ``args.yaml``. When the flags
are still what that recipe exports, the import gives back exactly its values: ``resolve`` of the imported recipe
equals the source's in every key but the bookkeeping ones
(:data:`~tricks_registry.export.timm_args.BOOKKEEPING_KEYS`: name, version, description, reference, lineage).
Where flags were changed since (by hand, or on ``train.py``'s command line, which ``args.yaml`` records), the flags
win where they changed and the rest is carried (the tricks ``train.py`` cannot express, the paper's form of a trick it
approximates): the rule of :mod:`.rule`, one export to check it, no search.

Bad input (not YAML, not a mapping, a value of the wrong type, an optimizer or schedule with no trick) is a
:class:`~tricks_registry.errors.RecipeError` naming the file, the line and the key. Nothing here imports torch or
timm.

The modules, one job each: :mod:`.defaults` (train.py's dests and defaults, the flags read), :mod:`.flags` (reading
``args.yaml``, typed reads), :mod:`.slots` (flags -> recipe, one function per slot), :mod:`.rule` (the carried recipe
or the flags), :mod:`.resolving` (resolving what is built), :mod:`.result` (the import and its recipe file) and
:mod:`.importer` (the four steps).
"""
from __future__ import annotations

from ..timm_args import BOOKKEEPING_KEYS
from .defaults import MAPPED_FLAGS, TIMM_TRAIN_DEFAULTS
from .flags import TimmFlags, read_timm_args, same_flag_value
from .importer import import_timm_args
from .result import RECIPE_NAME, DroppedFlag, TimmImport, write_imported_recipe

__all__ = ["TIMM_TRAIN_DEFAULTS", "MAPPED_FLAGS", "BOOKKEEPING_KEYS", "DroppedFlag", "TimmImport", "read_timm_args",
           "import_timm_args", "write_imported_recipe", "RECIPE_NAME", "same_flag_value", "TimmFlags"]
