"""One name mapping (ours -> timm's) and one weights grammar (issue 13).

The Hub export (``config.json``) and the timm ``train.py`` export (``tricks recipe export``) name every
model_tweaks variant the same way, so a timm user without this package gets the same network from either; the
weights grammar reads every spec form into one typed value, and a bad spec is a :class:`TimmTricksError`.
"""
from __future__ import annotations

import pytest
import timm
import torch
import yaml
from model_tweaks.resnet_tweaks import TIMM_EQUIVALENT

from tricks_registry import TimmTricksError
from tricks_registry.export.timm_args import export_timm_args
from tricks_registry.models import portable_architecture
from tricks_registry.recipe import resolve
from tricks_registry.weights import (
    TeacherUnavailable, WeightsSpecError, load_model, load_state_dict, load_teacher, parse_weights_spec,
)

VARIANTS = sorted(TIMM_EQUIVALENT)


def _timm_args_model(name: str) -> tuple[str, dict, list[str]]:
    """(model, model_kwargs without the zero-gamma switch, device_modules) of the timm-args export."""
    cfg = yaml.safe_load(export_timm_args(resolve("resnet50_baseline", [f"model.name={name}"]), world_size=1))
    kwargs = {k: v for k, v in (cfg.get("model_kwargs") or {}).items() if k != "zero_init_last"}
    return cfg["model"], kwargs, list(cfg.get("device_modules") or [])


def test_every_variant_has_the_full_list():
    assert VARIANTS == sorted(f"resnet{d}_v1{v}" for d in (18, 34, 50, 101, 152) for v in "abcd")


@pytest.mark.parametrize("name", VARIANTS)
def test_hub_export_and_timm_args_export_name_the_same_network(name):
    portable = portable_architecture(name)
    model, kwargs, modules = _timm_args_model(name)
    assert (model, kwargs) == (portable.architecture, dict(portable.model_args))
    assert modules == ([portable.plugin_module] if portable.needs_plugin else [])
    # the network timm builds from either export is ours, parameter for parameter
    ours = timm.create_model(name, device="meta").state_dict()
    theirs = timm.create_model(model, device="meta", **kwargs).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


@pytest.mark.parametrize("depth", [18, 34])
def test_resnet_c_below_50_is_timms_resnet_with_the_deep_stem_without_the_plugin(depth):
    """timm has no resnet18c / resnet34c: both exports say resnet{depth} + the deep stem, no plugin needed."""
    portable = portable_architecture(f"resnet{depth}_v1c")
    assert portable.architecture == f"resnet{depth}" and not portable.needs_plugin
    assert dict(portable.model_args) == {"stem_type": "deep", "stem_width": 32}
    assert _timm_args_model(f"resnet{depth}_v1c") == (f"resnet{depth}", {"stem_type": "deep", "stem_width": 32}, [])


def test_tags_are_carried_over_only_where_timm_hosts_them():
    assert portable_architecture("resnet50_v1d.gluon_in1k").name == "resnet50d.gluon_in1k"
    tricks = portable_architecture("resnet50_v1d.tricks_in1k")  # only our name knows these weights
    assert tricks.name == "resnet50_v1d.tricks_in1k" and tricks.plugin_module == "model_tweaks"
    assert portable_architecture("resnet50d").name == "resnet50d" and not portable_architecture("resnet50d").needs_plugin
    for bad in ("torchvision:resnet50", "resnet50_nosuch"):
        with pytest.raises(TimmTricksError):
            portable_architecture(bad)


# ---------------------------------------------------------------------------------------------------------
# the weights grammar
def test_parse_every_form(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("name: x\n")
    cases = {
        "resnet50_v1d.gluon_in1k": ("tag", {"arch": "resnet50_v1d", "tag": "gluon_in1k"}),
        "hf-hub:org/name": ("hf-hub", {"repo": "org/name", "revision": None}),
        "hf-hub:org/name@v2": ("hf-hub", {"repo": "org/name", "revision": "v2"}),
        f"local-dir:{tmp_path}": ("local-dir", {"path": tmp_path}),
        str(run): ("run", {"path": run}),
        f"resnet18_v1d@{tmp_path / 'w.safetensors'}": ("file", {"arch": "resnet18_v1d", "path": tmp_path / "w.safetensors"}),
        str(tmp_path / "w.safetensors"): ("file", {"arch": None, "path": tmp_path / "w.safetensors"}),
        f"resnet18_v1d@{tmp_path / 'w.pth'}": ("file", {"arch": "resnet18_v1d", "path": tmp_path / "w.pth"}),
    }
    for spec, (kind, fields) in cases.items():
        parsed = parse_weights_spec(spec)
        assert parsed.kind == kind, spec
        assert {k: getattr(parsed, k) for k in fields} == fields, spec
    assert parse_weights_spec("hf-hub:org/name", revision="abc").timm_name == "hf-hub:org/name@abc"
    assert parse_weights_spec("hf-hub:org/name@v2", revision="abc").revision == "v2"  # the spec's pin wins
    assert parse_weights_spec("resnet50_v1d.gluon_in1k").timm_name == "resnet50_v1d.gluon_in1k"


@pytest.mark.parametrize("spec, why", [("resnet50_v1d", "names no pretrained weights"),
                                       ("/no/such/folder", "no such file or folder"),
                                       ("hf-hub:", "no repo")])
def test_bad_specs_are_weights_errors(spec, why):
    with pytest.raises(WeightsSpecError, match=why) as err:
        parse_weights_spec(spec)
    assert isinstance(err.value, TimmTricksError)


def test_a_folder_that_is_no_run_is_refused(tmp_path):
    with pytest.raises(WeightsSpecError, match="not a tricks-train run folder"):
        parse_weights_spec(str(tmp_path))


def test_loading_through_the_grammar_and_its_errors(tmp_path):
    from safetensors.torch import save_file

    model = timm.create_model("resnet18_v1d", num_classes=3)
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    torch.save(model.state_dict(), tmp_path / "w.pth")
    state = load_state_dict(str(tmp_path / "w.safetensors"))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    loaded = load_model(f"resnet18_v1d@{tmp_path / 'w.safetensors'}", 3)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    with pytest.raises(TimmTricksError, match="--trust-pickle"):
        load_state_dict(f"resnet18_v1d@{tmp_path / 'w.pth'}")
    assert load_state_dict(f"resnet18_v1d@{tmp_path / 'w.pth'}", trust_pickle=True).keys() == state.keys()
    with pytest.raises(TimmTricksError, match="needs its architecture"):
        load_model(str(tmp_path / "w.safetensors"), 3)
    with pytest.raises(TimmTricksError, match="no file"):
        load_state_dict(str(tmp_path / "missing.safetensors"))
    with pytest.raises(TeacherUnavailable, match="names no pretrained weights") as err:
        load_teacher("resnet18_v1d", 3, torch.device("cpu"))
    assert isinstance(err.value, TimmTricksError) and "A teacher can be" in str(err.value)
