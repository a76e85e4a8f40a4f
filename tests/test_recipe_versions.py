"""Version 2 of the paper's ladders: the paper's warmup form (section 3.1) and nothing else; version 1 keeps its
meaning (a bare ``linear_warmup`` is timm's form) and its locked hash."""
from __future__ import annotations

import json

import pytest

from tricks_registry.parts import compose, parts_from_config
from tricks_registry.recipe import LOCK_FILE, list_recipes, recipe_dir, resolve

V2 = sorted(name for name, version, _ in list_recipes() if version == 2 and (recipe_dir() / f"{name}.v2.yaml").is_file())


def _warmup(recipe):
    return compose(parts_from_config(recipe.mapping["tricks"])).warmup


def test_the_ladders_from_efficient_training_on_have_a_version_2():
    for net in ("resnet50d", "mobilenet", "inception_v3"):
        for rung in ("efficient", "cosine", "label_smoothing", "mixup", "distill", "all"):
            assert f"{net}_{rung}" in V2
    assert {"resnet50_efficient", "resnet50b_efficient", "resnet50c_efficient"} <= set(V2)


@pytest.mark.parametrize("name", V2)
def test_version_2_is_version_1_with_the_papers_warmup(name):
    v1, v2 = resolve(f"{name}@1"), resolve(f"{name}@2")
    assert resolve(name).sha256 == v2.sha256  # the bare name is the latest
    text = (recipe_dir() / f"{name}.v2.yaml").read_text()
    assert sum(line.startswith("# Changelog: v2 - ") for line in text.splitlines()) == 1
    a, b = dict(v1.mapping), dict(v2.mapping)
    assert (a.pop("version"), b.pop("version")) == (1, 2)
    assert [x.split("@")[0] for x in a.pop("lineage")] == [x.split("@")[0] for x in b.pop("lineage")]
    ta, tb = a.pop("tricks"), b.pop("tricks")
    assert a == b
    assert list(ta) == list(tb)  # same tricks, same order
    assert {k: v for k, v in tb.items() if k != "linear_warmup"} == {k: v for k, v in ta.items() if k != "linear_warmup"}
    assert "form" not in ta["linear_warmup"] and tb["linear_warmup"] == {**ta["linear_warmup"], "form": "paper"}
    assert (_warmup(v1).form, _warmup(v2).form) == ("timm", "paper")
    demo1, demo2 = resolve(f"{name}@1", demo=True), resolve(f"{name}@2", demo=True)
    assert (_warmup(demo1).form, _warmup(demo2).form) == ("timm", "paper")
    assert _warmup(demo1).epochs == _warmup(demo2).epochs


def test_version_1_hashes_are_the_locked_ones():
    locked = json.loads((recipe_dir() / LOCK_FILE).read_text())
    for name in V2:
        assert resolve(f"{name}@1").sha256 == locked[f"{name}@1"]
        assert resolve(f"{name}@2").sha256 == locked[f"{name}@2"]
