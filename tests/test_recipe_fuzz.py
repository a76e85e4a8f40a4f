"""Bad recipes from other people (issue 5): hypothesis generates many malformed recipes and overrides; every one
ends in exit code 2 with one line naming the file (the ``--set``), the line where known and the key, never a
traceback. Plus the cases that once went wrong: a false cycle, an override on an absent trick, an emptied
section, and errors from ``--set`` that pointed at the recipe file."""
from __future__ import annotations

import string
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tricks_registry.cli import main, train_main
from tricks_registry.recipe import SCHEMA, RecipeError, resolve
from tricks_registry.registry import list_tricks

BASE = {"name": "fuzzed", "version": 1, "extends": "resnet50d_mixup@1", "train": {"epochs": 2}}
TRICKS = {s.name for s in list_tricks()}
identifiers = st.text(string.ascii_lowercase + "_", min_size=1, max_size=12)

# values of each kind, to put where another kind belongs (never None: an optional key may be null)
KINDS = {
    "str": st.text(string.ascii_letters, min_size=1, max_size=8).filter(lambda t: t.lower() not in (
        "true", "false", "yes", "no", "on", "off", "null", "y", "n")),
    "int": st.integers(-5, 10**6),
    "float": st.floats(allow_nan=False, allow_infinity=False, width=32).filter(lambda f: f != int(f)),
    "bool": st.booleans(),
    "list": st.lists(st.integers(0, 9), max_size=3),
    "dict": st.dictionaries(identifiers, st.integers(0, 9), min_size=1, max_size=2),
}
ACCEPTS = {str: {"str"}, int: {"int"}, bool: {"bool"}, list: {"list"}, dict: {"dict"}, float: {"int", "float"},
           (int, float): {"int", "float"}, (bool, str): {"bool", "str"}}
TYPED_KEYS = [((section, key), types) for section, spec in SCHEMA.items() if isinstance(spec, dict)
              and section in ("model", "data", "train") for key, (types, _) in spec.items()]
TYPED_KEYS += [((key,), spec[0]) for key, spec in SCHEMA.items()
               if not isinstance(spec, dict) and key not in ("name", "version", "extends", "tricks", "demo")]

OUT_OF_RANGE = [
    ("train", "lr", st.floats(-10, 0)), ("train", "epochs", st.integers(-5, 0)),
    ("train", "global_batch_size", st.integers(-5, 0)), ("train", "weight_decay", st.floats(-1, -1e-9)),
    ("data", "eval_crop_pct", st.one_of(st.floats(1.0001, 5), st.floats(-1, 0))),
    ("data", "input_size", st.integers(-3, 7)), ("data", "std", st.just([0.2, 0.0, 0.2])),
    ("data", "mean", st.lists(st.floats(0, 1), min_size=4, max_size=5)),
]
TRICK_OUT_OF_RANGE = [
    ("label_smoothing", "epsilon", st.one_of(st.floats(1.0, 3.0), st.floats(-2, -1e-6))),
    ("mixup", "alpha", st.floats(-2, 0)),
]


def with_path(doc: dict, path: tuple[str, ...], value) -> dict:
    out = yaml.safe_load(yaml.safe_dump(doc))
    node = out
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return out


@st.composite
def malformed(draw) -> tuple[str, str | None]:
    """(YAML text, a key the error must name or None)."""
    kind = draw(st.sampled_from(["not_mapping", "unknown_key", "unknown_section_key", "wrong_type", "out_of_range",
                                 "trick_out_of_range", "unknown_trick", "trick_params", "bad_extends", "yaml_tag",
                                 "duplicate_key", "broken_yaml", "missing_name", "empty_section"]))
    if kind == "not_mapping":
        value = draw(st.one_of(st.lists(st.integers(), max_size=3), st.integers(), KINDS["str"], st.none()))
        return yaml.safe_dump(value), None
    if kind == "unknown_key":
        key = draw(identifiers.filter(lambda k: k not in SCHEMA))
        return yaml.safe_dump(with_path(BASE, (key,), 1)), key
    if kind == "unknown_section_key":
        section = draw(st.sampled_from(["model", "data", "train"]))
        key = draw(identifiers.filter(lambda k: k not in SCHEMA[section]))
        return yaml.safe_dump(with_path(BASE, (section, key), 1)), f"{section}.{key}"
    if kind == "wrong_type":
        path, types = draw(st.sampled_from(TYPED_KEYS))
        wrong = sorted(set(KINDS) - ACCEPTS.get(types, {"dict"}))
        value = draw(KINDS[draw(st.sampled_from(wrong))])
        return yaml.safe_dump(with_path(BASE, path, value)), ".".join(path)
    if kind == "out_of_range":
        section, key, values = draw(st.sampled_from(OUT_OF_RANGE))
        return yaml.safe_dump(with_path(BASE, (section, key), draw(values))), f"{section}.{key}"
    if kind == "trick_out_of_range":
        trick, param, values = draw(st.sampled_from(TRICK_OUT_OF_RANGE))
        return yaml.safe_dump(with_path(BASE, ("tricks", trick), {param: draw(values)})), f"tricks.{trick}"
    if kind == "unknown_trick":
        name = draw(identifiers.filter(lambda n: n not in TRICKS))
        return yaml.safe_dump(with_path(BASE, ("tricks", name), {})), f"tricks.{name}"
    if kind == "trick_params":
        name = draw(st.sampled_from(sorted(TRICKS)))
        value = draw(st.one_of(KINDS["int"], KINDS["str"], KINDS["list"]))
        return yaml.safe_dump(with_path(BASE, ("tricks", name), value)), f"tricks.{name}"
    if kind == "bad_extends":
        parent = draw(st.one_of(identifiers.map(lambda n: f"no_such_{n}@1"), st.just("resnet50d_mixup@99"),
                                KINDS["int"], identifiers.map(lambda n: f"./missing_{n}.yaml")))
        return yaml.safe_dump(with_path(BASE, ("extends",), parent)), "extends"
    if kind == "yaml_tag":
        tag = draw(st.sampled_from(["!!python/object/apply:os.system ['echo pwned']", "!!python/name:os.system",
                                    "!!python/object:argparse.Namespace {a: 1}", "!custom 3"]))
        key = draw(st.sampled_from(["description", "train:\n  lr"]))
        return yaml.safe_dump(BASE) + f"{key}: {tag}\n", None
    if kind == "duplicate_key":
        return yaml.safe_dump(BASE) + "name: again\n", "name"
    if kind == "broken_yaml":
        junk = draw(st.sampled_from(["train: {epochs: [1, 2\n", "model:\n  name: [\n", ": :\n  - - :\n\t x",
                                     "data: {input_size: 3\n  mean: }"]))
        return yaml.safe_dump(BASE) + junk, None
    if kind == "missing_name":
        doc = dict(BASE)
        doc.pop(draw(st.sampled_from(["name", "version"])))
        return yaml.safe_dump(doc), None
    section = draw(st.sampled_from(["model", "data", "train"]))
    return yaml.safe_dump(BASE) + f"{section}:\n", section  # empty_section: a section set to null


def assert_one_line_error(capsys, rc: int, file_hint: str | None = None, key: str | None = None) -> str:
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert rc == 2, out
    assert len(lines) == 1 and lines[0].startswith("error: "), out.err
    assert "Traceback" not in out.err + out.out
    if file_hint:
        assert file_hint in lines[0], lines[0]
    if key:
        assert key in lines[0], lines[0]
    return lines[0]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=malformed())
def test_every_malformed_recipe_is_exit_2_and_one_line(case, tmp_path, capsys):
    text, key = case
    path = tmp_path / "fuzzed.v1.yaml"
    path.write_text(text)
    rc = main(["recipe", "show", str(path), "--resolved"])
    assert_one_line_error(capsys, rc, str(path), key)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=malformed())
def test_tricks_train_stops_on_a_malformed_recipe_before_any_data(case, tmp_path, capsys):
    text, key = case
    path = tmp_path / "fuzzed.v1.yaml"
    path.write_text(text)
    rc = train_main(["--recipe", str(path), "--data-dir", str(tmp_path / "no-data"), "--no-progress"])
    assert_one_line_error(capsys, rc, str(path), key)


@st.composite
def bad_override(draw) -> tuple[str, str]:
    kind = draw(st.sampled_from(["no_equals", "unknown", "wrong_type", "out_of_range", "absent_trick", "null_section"]))
    if kind == "no_equals":
        return draw(identifiers), "must look like key.path=value"
    if kind == "unknown":
        key = draw(identifiers.filter(lambda k: k not in SCHEMA["train"]))
        return f"train.{key}=1", f"train.{key}"
    if kind == "wrong_type":
        return f"train.epochs={draw(KINDS['str'])}", "train.epochs"
    if kind == "out_of_range":
        return f"train.lr={draw(st.floats(-5, 0))}", "train.lr"
    if kind == "absent_trick":
        name = draw(st.sampled_from(sorted(TRICKS - set(resolve("resnet50d_mixup").mapping["tricks"]))))
        return f"tricks.{name}.p={draw(st.floats(0.1, 2))}", f"no trick '{name}'"
    return f"{draw(st.sampled_from(['data', 'model', 'train']))}=null", "must be a mapping"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=bad_override())
def test_every_bad_override_is_exit_2_naming_the_set(case, capsys):
    text, expected = case
    rc = main(["recipe", "show", "resnet50d_mixup", "--resolved", "--set", text])
    line = assert_one_line_error(capsys, rc, key=expected)
    if "=" in text:
        assert f"--set {text}" in line  # the error names the override, not a line of the recipe file


def test_the_console_script_prints_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nversion: 1\nextends: resnet50d_mixup@1\ntrain: {lr: -0.1}\n")
    tag = tmp_path / "tag.yaml"
    tag.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    exe = Path(sys.executable).with_name("tricks-train")
    for recipe, expected in ((bad, f"{bad}:4: train.lr: must be positive"), (tag, "YAML tag not allowed"),
                             ("resnet50d_mixpu", "did you mean resnet50d_mixup")):
        proc = subprocess.run([str(exe), "--recipe", str(recipe), "--data-dir", str(tmp_path)], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1 and expected in proc.stderr, proc.stderr
        assert "pwned" not in proc.stdout


# ---------------------------------------------------------------------------------------------------------
def test_a_local_copy_named_like_the_recipe_it_extends_is_no_cycle(tmp_path):
    local = tmp_path / "resnet50d_mixup.v1.yaml"
    local.write_text("name: resnet50d_mixup\nversion: 1\nextends: resnet50d_mixup@1\ntrain: {epochs: 3}\n")
    recipe = resolve(local)
    assert recipe.mapping["train"]["epochs"] == 3
    assert recipe.lineage == ("resnet50d_mixup@1",) * 2 + tuple(resolve("resnet50d_mixup@1").lineage[1:])


def test_a_real_cycle_names_every_step(tmp_path):
    (tmp_path / "a.v1.yaml").write_text("name: a\nversion: 1\nextends: b.v1.yaml\n")
    (tmp_path / "b.v1.yaml").write_text("name: b\nversion: 1\nextends: a.v1.yaml\n")
    with pytest.raises(RecipeError, match=r"a\.v1\.yaml:3: extends: 'extends' makes a cycle: a@1 -> b@1 -> a@1"):
        resolve(tmp_path / "a.v1.yaml")


def test_override_errors_name_the_override_not_the_recipe_line():
    with pytest.raises(RecipeError) as info:
        resolve("resnet50d_mixup", ["tricks.mixup.alpha=-1"])
    assert str(info.value).startswith("--set tricks.mixup.alpha=-1: tricks.mixup.alpha:")
    with pytest.raises(RecipeError, match=r"^--set train=\{epochs: x\}: train.epochs: expected an integer"):
        resolve("resnet50d_mixup", ["train={epochs: x}"])
    with pytest.raises(RecipeError, match=r"^--set train.lr=0.1: train.lr: both train.lr and the linear_scaling"):
        resolve("resnet50d_efficient", ["train.lr=0.1"])


def test_recipe_file_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "mine.v1.yaml"
    path.write_text("name: mine\nversion: 1\nextends: resnet50d_mixup@1\ntricks:\n  mixup: {alpha: -1}\n")
    with pytest.raises(RecipeError, match=rf"^{path}:5: tricks.mixup.alpha: "):
        resolve(path)
    path.write_text("name: mine\nversion: 1\nextends: resnet50d_efficient@1\ntrain:\n  lr: 0.1\n")
    with pytest.raises(RecipeError, match=rf"^{path}:5: train.lr: both train.lr and the linear_scaling"):
        resolve(path)


def test_an_override_on_an_absent_trick_says_how_to_add_it():
    with pytest.raises(RecipeError, match=r"^--set tricks.mixpu.alpha=0.4: the recipe has no trick 'mixpu' \(did you mean mixup.*\); add it first with "
                                          r"--set tricks.mixpu=\{\}"):
        resolve("resnet50d_mixup", ["tricks.mixpu.alpha=0.4"])
    assert resolve("resnet50d_cosine", ["tricks.mixup={}", "tricks.mixup.alpha=0.4"]).mapping["tricks"]["mixup"][
        "alpha"] == 0.4
