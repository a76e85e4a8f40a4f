"""Parts export themselves: each part says its own timm ``train.py`` flags (or why it has none), and the timm-args
exporter asks the parts and renders, knowing no trick name."""
from __future__ import annotations

import ast
import inspect

import pytest
import yaml

import tricks_registry as tr
from tricks_registry.export import timm_args as exporter
from tricks_registry.export.timm_parts import part_timm_args
from tricks_registry.parts import ModelTransform, Penalty, TimmArgs, TimmContext, compose
from tricks_registry.recipe import resolve
from tricks_registry.registry import _TRICKS, list_tricks, register_trick

CTX = TimmContext(model="resnet50d", timm_resnet=True, lr=0.1, epochs=120)


def test_the_exporter_holds_no_trick_name():
    names = {spec.name for spec in list_tricks()}
    tree = ast.parse(inspect.getsource(exporter))
    literals = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    assert not literals & names


@pytest.mark.parametrize("name", sorted(spec.name for spec in list_tricks()))
def test_every_registered_trick_says_its_timm_flags_or_why_not(name):
    if name == "distillation":
        part = tr.build_trick(name, teacher="resnet152_v1d.gluon_in1k")
    else:
        part = tr.build_trick(name)
    said = part_timm_args(part, CTX)
    assert isinstance(said, TimmArgs), f"{name} gives no timm export"


def test_a_parts_own_flags_reach_the_export_and_a_part_without_gets_the_closing_note():
    @register_trick("test_only_drop_path", kind="model", section="test", implemented_by="nothing")
    def test_only_drop_path(*, rate: float = 0.1) -> ModelTransform:
        """A test trick with a train.py flag."""
        return ModelTransform(apply=lambda m: m, timm_export=TimmArgs(
            values={"drop_path": rate}, comments={"drop_path": "stochastic depth"}, notes=("a note",)))

    @register_trick("test_only_penalty_free", kind="model", section="test", implemented_by="nothing")
    def test_only_silent() -> ModelTransform:
        """A test trick with no train.py equivalent."""
        return ModelTransform(apply=lambda m: m)

    try:
        recipe = resolve("resnet50d_all", ["tricks.test_only_drop_path={rate: 0.2}", "tricks.test_only_penalty_free={}"])
        text = exporter.export_timm_args(recipe)
    finally:
        _TRICKS.pop("test_only_drop_path", None)
        _TRICKS.pop("test_only_penalty_free", None)
    cfg = yaml.safe_load(text)
    assert cfg["drop_path"] == 0.2 and "# stochastic depth\ndrop_path: 0.2" in text
    assert "# - a note" in text
    assert text.index("# - test_only_penalty_free: no timm train.py equivalent; not exported") > text.index("# - a note")


def test_penalty_and_runtime_parts_say_their_flags():
    assert part_timm_args(Penalty(penalty=lambda m: 0, trick="l1"), CTX).notes == (
        "l1: train.py has no loss penalty term; not exported",)
    runtime = compose([tr.build_trick("amp"), tr.build_trick("ema", decay=0.999)]).runtime
    said = part_timm_args(runtime)
    assert said.values == {"amp": True, "amp_dtype": "float16", "channels_last": False, "model_ema": True,
                           "model_ema_decay": 0.999, "model_ema_warmup": False}


def test_zero_gamma_says_zero_init_last_on_timm_resnets_only():
    part = tr.build_trick("zero_gamma")
    assert part_timm_args(part, CTX).model_kwargs == {"zero_init_last": True}
    other = TimmContext(model="mobilenetv1_100", timm_resnet=False, lr=0.1, epochs=120)
    said = part_timm_args(part, other)
    assert not said.model_kwargs and "no flag for it on mobilenetv1_100" in said.notes[0]
