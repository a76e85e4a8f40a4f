"""Export to the Hugging Face Hub, push, pull back (issue 6).

The download side runs for real: a Hub-compatible server (``olah``, offline mode) on 127.0.0.1 serves git repos
that the tests make, and fresh interpreters pull from it with the real ``huggingface_hub`` client and timm
(``HF_ENDPOINT`` pointing there, a new ``HF_HOME``; nothing else on the network). The upload side has no local
server that accepts writes, so it is checked at its boundary: what ``HfApi.create_repo`` / ``upload_folder``
receive. Runs are trained for two epochs on a tiny synthetic ImageFolder (3 classes, 32 px).
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file

import timm
from model_tweaks.resnet_tweaks import HUB_ORG_ENV, TIMM_EQUIVALENT, tricks_hub_id
from tricks_registry.cli import main
from tricks_registry.export.hub import EXPORT_FILES
from tricks_registry.models import build_model, portable_architecture
from tricks_registry.weights import PICKLE_SUFFIXES, TeacherUnavailable, load_teacher

OLAH = Path(shutil.which("olah-cli") or Path(sys.executable).with_name("olah-cli"))
CLASSES = ["cat", "dog", "fish"]
SIZE = 32
#: the issue's list: the GluonCV weights of the paper's authors, as timm hosts them
GLUON = {f"resnet{d}_v1b": f"timm/resnet{d}.gluon_in1k" for d in (18, 34, 50, 101, 152)} | {
    f"resnet{d}_v1{v}": f"timm/resnet{d}{v}.gluon_in1k" for d in (50, 101, 152) for v in "cd"}


# ---------------------------------------------------------------------------------------------------------
# fixtures: data, two trained runs, their exports, a local Hub
@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """3 classes x (4 train, 2 val) random 40x40 RGB PNGs in ImageFolder layout."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.RandomState(0)
    for split, n in (("train", 4), ("val", 2)):
        for cls in CLASSES:
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.randint(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    return root


def tiny_train_args(data: Path, out: Path, model: str) -> list[str]:
    """The paper's baseline recipe (Table 2), shrunk to 2 epochs of 2 steps at 32 px."""
    sets = [f"model.name={model}", f"data.input_size={SIZE}", "data.workers=0", "train.epochs=2",
            "train.global_batch_size=6", "train.lr=0.01", "tricks.multistep.milestones=[1]"]
    return ["train", "--recipe", "resnet50_baseline", "--data-dir", str(data), "--output", str(out), "--no-progress",
            "--device", "cpu", *[f"--set={s}" for s in sets]]


def only_run(out: Path) -> Path:
    runs = [p for p in out.iterdir() if (p / "summary.json").is_file()]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope="module")
def runs(image_folder, tmp_path_factory) -> dict[str, Path]:
    """A ResNet-18-D run (timm has it: ``resnet18d``) and a ResNet-50-A run (timm has no such network)."""
    found = {}
    for model in ("resnet18_v1d", "resnet50_v1a"):
        out = tmp_path_factory.mktemp(f"runs-{model}")
        assert main(tiny_train_args(image_folder, out, model)) == 0
        found[model] = only_run(out)
    return found


@pytest.fixture(scope="module")
def exports(runs, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    for model, run in runs.items():
        assert main(["export", str(run), "--out", str(root / model), "--repo-id", f"tricks-test/{model}"]) == 0
    return {model: root / model for model in runs}


def run_model(run: Path) -> torch.nn.Module:
    """The trained model as the run left it: the recipe's architecture with checkpoints/best.safetensors."""
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    model = build_model(recipe["model"], len(CLASSES))
    model.load_state_dict(load_file(str(run / "checkpoints" / "best.safetensors")))
    return model.eval()


def best_row(run: Path) -> dict[str, float]:
    """The metrics of the epoch best.safetensors was saved at: the first of the highest top-1."""
    with open(run / "metrics.csv") as f:
        rows = [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
    best = max(r["top1"] for r in rows)
    return next(r for r in rows if r["top1"] == best)


class LocalHub:
    """olah in offline mode: every git repo under ``mirrors/models/<org>/<name>`` is served as a Hub model repo."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.url = f"http://127.0.0.1:{port}"
        self.mirrors = root / "mirrors"

    def publish(self, repo_id: str, files: dict[str, Path | bytes], branch: str = "main") -> str:
        """Commit ``files`` (name -> path or bytes) to ``branch`` of ``repo_id``; returns the commit's sha."""
        repo = self.mirrors / "models" / repo_id
        if not (repo / ".git").is_dir():
            repo.mkdir(parents=True)
            self._git(repo, "init", "-q", "-b", "main")
        if branch != "main":
            self._git(repo, "checkout", "-q", "-B", branch)
        for name, content in files.items():
            target = repo / name
            target.write_bytes(content if isinstance(content, bytes) else Path(content).read_bytes())
        self._git(repo, "add", "-A")
        self._git(repo, "commit", "-q", "-m", f"publish {sorted(files)}")
        sha = self._git(repo, "rev-parse", "HEAD")
        if branch != "main":
            self._git(repo, "checkout", "-q", "main")
        return sha

    @staticmethod
    def _git(repo: Path, *args: str) -> str:
        cmd = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "-c", "core.compression=0",
               "-c", "commit.gpgsign=false", *args]
        return subprocess.run(cmd, cwd=repo, check=True, capture_output=True, text=True).stdout.strip()

    def client_env(self, home: Path, **extra: str) -> dict[str, str]:
        """Environment of a fresh client: this server as the Hub, an empty HF_HOME, no token, one thread."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE", "TIMM_TRICKS"))}
        env.update(HF_ENDPOINT=self.url, HF_HOME=str(home / "hf-home"), TIMM_TRICKS_CACHE=str(home / "tt-cache"),
                   HF_HUB_DISABLE_TELEMETRY="1", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
                   OMP_NUM_THREADS="1", **extra)
        return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def local_hub(tmp_path_factory):
    """olah on a free port of 127.0.0.1, offline, in a temporary folder; stopped (SIGTERM) after the module."""
    if not OLAH.is_file():
        pytest.skip("olah is not installed (pip install '.[test]')")
    root = tmp_path_factory.mktemp("hub")
    port = free_port()
    (root / "configs.toml").write_text(
        f'[basic]\nhost = "127.0.0.1"\nport = {port}\nrepos-path = "{root / "repos"}"\n'
        f'mirror-netloc = "127.0.0.1:{port}"\nmirror-lfs-netloc = "127.0.0.1:{port}"\n'
        f'mirrors-path = ["{root / "mirrors"}"]\n[accessibility]\noffline = true\n')
    (root / "mirrors" / "models").mkdir(parents=True)
    log = open(root / "olah.log", "w")
    proc = subprocess.Popen([str(OLAH), "-c", str(root / "configs.toml")], cwd=root, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/models/none/none/revision/main", timeout=2)
                break
            except urllib.error.HTTPError:
                break  # it answers
            except (urllib.error.URLError, ConnectionError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"olah did not start: {(root / 'olah.log').read_text()[-2000:]}")
                time.sleep(0.2)
        yield LocalHub(root, port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def run_client(script: str, env: dict[str, str], *args: str) -> str:
    """Run ``script`` in a fresh interpreter; its stdout, or the failure with its stderr."""
    proc = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def export_files(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in folder.iterdir()}


# ---------------------------------------------------------------------------------------------------------
# export
def test_export_folder_holds_weights_config_recipe_results(exports, runs):
    folder, run = exports["resnet18_v1d"], runs["resnet18_v1d"]
    names = {p.name for p in folder.iterdir()}
    assert names == set(EXPORT_FILES) | {"lr_schedule.png"}
    assert not [n for n in names if Path(n).suffix in PICKLE_SUFFIXES]
    config = json.loads((folder / "config.json").read_text())
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    # timm's own architecture of the same network, so that plain timm rebuilds it
    assert config["architecture"] == "resnet18d" and config["num_classes"] == 3 and config["num_features"] == 512
    assert config["label_names"] == CLASSES and config["model_args"]["num_classes"] == 3
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, SIZE, SIZE] and cfg["crop_pct"] == recipe["data"]["eval_crop_pct"] == 0.875
    assert cfg["mean"] == recipe["data"]["mean"] and cfg["std"] == recipe["data"]["std"]
    assert cfg["interpolation"] == recipe["data"]["interpolation"] and cfg["first_conv"] == "conv1.0"
    assert not {"hf_hub_id", "url", "file", "tag", "test_input_size"} & set(cfg)
    exported = load_file(str(folder / "model.safetensors"))
    trained = load_file(str(run / "checkpoints" / "best.safetensors"))
    assert exported.keys() == trained.keys() and all(torch.equal(exported[k], trained[k]) for k in trained)
    assert (folder / "recipe.yaml").read_bytes() == (run / "recipe.yaml").read_bytes()
    assert (folder / "recipe.sha256").read_text() == (run / "recipe.sha256").read_text()
    assert (folder / "curves.png").read_bytes() == (run / "curves.png").read_bytes()
    results = json.loads((folder / "results.json").read_text())
    row = best_row(run)
    assert results["recipe"] == "resnet50_baseline@1"
    assert results["recipe_sha256"] == (run / "recipe.sha256").read_text().strip()
    assert (results["top1"], results["top5"], results["weights"]["epoch"]) == (row["top1"], row["top5"], row["epoch"])
    assert results["needs_plugin"] is None and results["classes"] == CLASSES
    a = json.loads((exports["resnet50_v1a"] / "config.json").read_text())
    assert a["architecture"] == "resnet50_v1a"
    assert json.loads((exports["resnet50_v1a"] / "results.json").read_text())["needs_plugin"] == "model_tweaks"


def test_export_refuses_a_non_empty_folder_and_replaces_an_export_with_overwrite(runs, exports, capsys):
    run, folder = runs["resnet18_v1d"], exports["resnet18_v1d"]
    before = (folder / "model.safetensors").stat().st_mtime_ns
    assert main(["export", str(run), "--out", str(folder)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (folder / "model.safetensors").stat().st_mtime_ns == before
    assert main(["export", str(run), "--out", str(folder), "--repo-id", "tricks-test/resnet18_v1d", "--overwrite"]) == 0
    assert {p.name for p in folder.iterdir()} == set(EXPORT_FILES) | {"lr_schedule.png"}
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


@pytest.mark.parametrize("name", sorted(TIMM_EQUIVALENT))
def test_portable_architecture_rebuilds_the_same_parameters(name):
    """Each variant's exported architecture (timm's own where it has one) has our parameter names and shapes."""
    portable = portable_architecture(name)
    depth, variant = int(name[6:].split("_")[0]), name[-1]
    if variant == "a" and depth >= 50:
        assert portable.architecture == name and portable.plugin_module == "model_tweaks"
        return
    assert timm.models.model_entrypoint(portable.architecture).__module__ == "timm.models.resnet"
    assert portable.plugin_module is None
    if name in ("resnet18_v1c", "resnet34_v1c"):  # timm has no resnet18c: resnet18 with the deep stem
        assert portable.architecture == f"resnet{depth}"
        assert dict(portable.model_args) == {"stem_type": "deep", "stem_width": 32}
    ours = timm.create_model(name, device="meta").state_dict()
    theirs = timm.create_model(portable.architecture, device="meta", **portable.model_args).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_model_card_front_matter_parses_with_the_metrics(exports, runs):
    from huggingface_hub import ModelCard

    card = ModelCard.load(exports["resnet18_v1d"] / "README.md")
    row = best_row(runs["resnet18_v1d"])
    data = card.data
    assert data.library_name == "timm" and data.license == "apache-2.0" and data.pipeline_tag == "image-classification"
    assert {"timm", "image-classification", "timm-tricks"} <= set(data.tags)
    assert data.datasets == ["imagefolder"]
    results = {r.metric_type: r for r in data.eval_results}
    assert results["accuracy"].metric_value == pytest.approx(row["top1"], abs=1e-4)
    assert results["top_5_accuracy"].metric_value == pytest.approx(row["top5"], abs=1e-4)
    assert {r.task_type for r in data.eval_results} == {"image-classification"}
    assert {r.dataset_split for r in data.eval_results} == {"val"}
    assert data.model_name == "resnet18_v1d"
    sha = (runs["resnet18_v1d"] / "recipe.sha256").read_text().strip()
    assert "resnet50_baseline@1" in card.text and sha in card.text
    assert 'timm.create_model("hf-hub:tricks-test/resnet18_v1d", pretrained=True)' in card.text
    assert "import model_tweaks" not in card.text
    v1a = ModelCard.load(exports["resnet50_v1a"] / "README.md").text
    assert "pip install timm-tricks" in v1a and "import model_tweaks" in v1a


# ---------------------------------------------------------------------------------------------------------
# export --weights: raw or EMA (issue 14)
def with_ema(run: Path, dest: Path, ema_top1: float, ema_top5: float = 100.0) -> tuple[Path, dict]:
    """A copy of ``run`` holding EMA weights as the loop keeps them with the ``ema`` trick:
    ``checkpoints/best_ema.safetensors`` (the best weights, scaled, so that they differ) and its manifest with the
    EMA model's own top-1 / top-5."""
    from tricks_registry.checkpoint import save_weights

    copy = dest / run.name
    shutil.copytree(run, copy)
    raw = load_file(str(run / "checkpoints" / "best.safetensors"))
    ema = {k: (v * 0.5 if v.is_floating_point() else v).contiguous() for k, v in raw.items()}
    manifest = json.loads((run / "checkpoints" / "best.json").read_text())
    save_weights(copy / "checkpoints" / "best_ema.safetensors", ema,
                 {"epoch": manifest["epoch"], "top1": ema_top1, "top5": ema_top5,
                  "recipe_sha256": manifest.get("recipe_sha256")})
    return copy, ema


def exported(folder: Path) -> tuple[dict, str, dict]:
    return (json.loads((folder / "results.json").read_text()), (folder / "README.md").read_text(),
            load_file(str(folder / "model.safetensors")))


def test_export_without_ema_weights_exports_the_best_as_before(exports):
    results, card, _ = exported(exports["resnet18_v1d"])
    assert results["weights"]["checkpoint"] == "best" and results["weights"]["ema"] is False
    assert results["weights"]["chosen"] == "" and "the trained (raw) weights" in card


def test_export_defaults_to_the_better_of_raw_and_ema_and_the_card_says_which(runs, tmp_path, capsys):
    run = runs["resnet18_v1d"]
    raw_top1 = json.loads((run / "checkpoints" / "best.json").read_text())["top1"]
    better, ema = with_ema(run, tmp_path / "better", raw_top1 + 10, 99.0)
    capsys.readouterr()
    assert main(["export", str(better), "--out", str(tmp_path / "out-better")]) == 0
    assert "best_ema" in capsys.readouterr().out
    results, card, weights = exported(tmp_path / "out-better")
    assert all(torch.equal(weights[k], ema[k]) for k in ema)
    assert results["weights"]["checkpoint"] == "best_ema" and results["weights"]["ema"] is True
    assert (results["top1"], results["top5"]) == (raw_top1 + 10, 99.0)  # the EMA model's scores
    assert "chosen by default" in results["weights"]["chosen"] and f"{raw_top1 + 10:.2f}" in results["weights"]["chosen"]
    assert "`best_ema`: the exponential moving average (EMA) of the trained weights" in card
    assert "best_ema.safetensors of epoch" in card and "chosen by default" in card
    from huggingface_hub import ModelCard

    evals = {r.metric_type: r.metric_value for r in ModelCard.load(tmp_path / "out-better" / "README.md").data.eval_results}
    assert evals == {"accuracy": pytest.approx(raw_top1 + 10), "top_5_accuracy": pytest.approx(99.0)}

    worse, _ = with_ema(run, tmp_path / "worse", raw_top1 / 2)  # a tie (top-1 0) keeps the raw weights too
    assert main(["export", str(worse), "--out", str(tmp_path / "out-worse")]) == 0
    results, card, weights = exported(tmp_path / "out-worse")
    raw = load_file(str(run / "checkpoints" / "best.safetensors"))
    assert all(torch.equal(weights[k], raw[k]) for k in raw)
    assert results["weights"]["checkpoint"] == "best" and results["weights"]["ema"] is False
    assert results["top1"] == pytest.approx(raw_top1, abs=1e-3)  # metrics.csv's row, rounded
    assert "scored at least as well as the EMA weights" in card
    assert "`best`: the trained (raw) weights" in card


def test_export_weights_flag_chooses_and_refuses_what_the_run_lacks(runs, tmp_path, capsys):
    run = runs["resnet18_v1d"]
    raw_top1 = json.loads((run / "checkpoints" / "best.json").read_text())["top1"]
    folder, ema = with_ema(run, tmp_path / "run", raw_top1 / 2)
    assert main(["export", str(folder), "--out", str(tmp_path / "ema"), "--weights", "ema_best"]) == 0
    results, card, weights = exported(tmp_path / "ema")
    assert results["weights"]["checkpoint"] == "best_ema" and all(torch.equal(weights[k], ema[k]) for k in ema)
    assert results["weights"]["chosen"] == "chosen with --weights ema_best" and results["top1"] == raw_top1 / 2
    assert main(["export", str(folder), "--out", str(tmp_path / "last"), "--weights", "last"]) == 0
    results, _, weights = exported(tmp_path / "last")
    last = load_file(str(run / "checkpoints" / "last.safetensors"))
    assert results["weights"]["checkpoint"] == "last" and all(torch.equal(weights[k], last[k]) for k in last)
    capsys.readouterr()
    assert main(["export", str(folder), "--out", str(tmp_path / "none"), "--weights", "ema_last"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "last_ema.safetensors" in err and "ema trick" in err
    assert "--weights best, last, ema_best" in err and not (tmp_path / "none").exists()
    assert main(["export", str(run), "--out", str(tmp_path / "none"), "--weights", "ema_best"]) == 2
    assert "best_ema.safetensors" in capsys.readouterr().err and not (tmp_path / "none").exists()


# ---------------------------------------------------------------------------------------------------------
# push, at the boundary
class FakeHub:
    """Records what HfApi.create_repo / create_branch / upload_folder receive (no server takes uploads here)."""

    def __init__(self, monkeypatch) -> None:
        from huggingface_hub import HfApi, RepoUrl

        self.calls: list[tuple[str, dict]] = []
        hub = self

        def create_repo(self, repo_id, **kw):
            hub.calls.append(("create_repo", dict(kw, repo_id=repo_id)))
            return RepoUrl(f"https://huggingface.co/{repo_id}")

        def create_branch(self, repo_id, **kw):
            hub.calls.append(("create_branch", dict(kw, repo_id=repo_id)))

        def upload_folder(self, **kw):
            folder = Path(kw["folder_path"])
            hub.calls.append(("upload_folder", dict(kw, files=sorted(p.name for p in folder.iterdir()))))
            return f"https://huggingface.co/{kw['repo_id']}/commit/0"

        for name, fn in (("create_repo", create_repo), ("create_branch", create_branch),
                         ("upload_folder", upload_folder)):
            monkeypatch.setattr(HfApi, name, fn)

    def only(self, name: str) -> dict:
        found = [kw for n, kw in self.calls if n == name]
        assert len(found) == 1, self.calls
        return found[0]


def test_push_uploads_exactly_the_exported_folder(exports, runs, monkeypatch, capsys):
    hub = FakeHub(monkeypatch)
    folder = exports["resnet18_v1d"]
    assert main(["push", str(folder), "--repo-id", "tricks-test/r18", "--private", "--revision", "dev"]) == 0
    assert [n for n, _ in hub.calls] == ["create_repo", "create_branch", "upload_folder"]
    repo = hub.only("create_repo")
    assert repo["repo_id"] == "tricks-test/r18" and repo["private"] is True and repo["exist_ok"] is True
    assert hub.only("create_branch")["branch"] == "dev"
    up = hub.only("upload_folder")
    assert Path(up["folder_path"]) == folder.resolve() and up["files"] == sorted(p.name for p in folder.iterdir())
    assert up["repo_id"] == "tricks-test/r18" and up["revision"] == "dev"
    sha = (runs["resnet18_v1d"] / "recipe.sha256").read_text().strip()
    assert "resnet50_baseline@1" in up["commit_message"] and sha in up["commit_message"]
    assert (folder / "recipe.yaml").read_text() in up["commit_description"]
    assert "tricks-test/r18@dev" in capsys.readouterr().out

    hub.calls.clear()
    assert main(["push", str(folder), "--repo-id", "tricks-test/r18"]) == 0
    assert [n for n, _ in hub.calls] == ["create_repo", "upload_folder"]
    assert hub.only("upload_folder")["revision"] is None and hub.only("create_repo")["private"] is False


def test_push_refuses_what_is_not_an_export_and_pickles(tmp_path, exports, monkeypatch, capsys):
    hub = FakeHub(monkeypatch)
    assert main(["push", str(tmp_path), "--repo-id", "tricks-test/r18"]) == 2
    assert "tricks export" in capsys.readouterr().err
    folder = tmp_path / "export"
    shutil.copytree(exports["resnet18_v1d"], folder)
    torch.save({"w": torch.zeros(1)}, folder / "pytorch_model.bin")
    assert main(["push", str(folder), "--repo-id", "tricks-test/r18"]) == 2
    assert "pytorch_model.bin" in capsys.readouterr().err
    assert hub.calls == []


def test_train_push_to_hub_exports_then_uploads(image_folder, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    args = tiny_train_args(image_folder, tmp_path / "runs", "resnet18_v1d") + ["--push-to-hub", "tricks-test/pushed"]
    assert main(args) == 2  # no token: refused before training, not after
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    hub = FakeHub(monkeypatch)
    assert main(args) == 0
    run = only_run(tmp_path / "runs")
    up = hub.only("upload_folder")
    assert Path(up["folder_path"]) == (run / "hub").resolve() and up["repo_id"] == "tricks-test/pushed"
    assert up["files"] == sorted(set(EXPORT_FILES) | {"lr_schedule.png"})
    assert (run / "recipe.sha256").read_text().strip() in up["commit_message"]
    assert json.loads((run / "hub" / "config.json").read_text())["architecture"] == "resnet18d"
    assert 'hf-hub:tricks-test/pushed"' in (run / "hub" / "README.md").read_text()


# ---------------------------------------------------------------------------------------------------------
# pretrained tags: the GluonCV weights through timm's Hub copies, and our own tricks_in1k
def test_gluon_tags_point_at_timm_hub_copies():
    ours = {n.split(".")[0]: timm.models.get_pretrained_cfg(n).hf_hub_id
            for n in timm.list_pretrained("resnet*_v1*.gluon_in1k")}
    assert ours == GLUON
    for name, hub_id in ours.items():  # the very repos timm's own gluon tags use, with our parameter names
        native = hub_id.split("/")[1]
        assert timm.models.get_pretrained_cfg(native).hf_hub_id == hub_id
        assert TIMM_EQUIVALENT[name] == native.split(".")[0]
    from tricks_registry.recipe import resolve

    teacher = resolve("resnet50d_distill").mapping["tricks"]["distillation"]["teacher"]
    assert timm.models.get_pretrained_cfg(teacher).hf_hub_id == "timm/resnet152d.gluon_in1k"


def test_tricks_in1k_hub_id_is_configurable():
    assert tricks_hub_id("resnet50_v1d", org="my-lab") == "my-lab/resnet50_v1d.tricks_in1k"
    assert tricks_hub_id("resnet50_v1d", org="") is None
    if os.environ.get(HUB_ORG_ENV):
        pytest.skip(f"{HUB_ORG_ENV} is set in this environment")
    assert timm.models.get_pretrained_cfg("resnet50_v1d.tricks_in1k").hf_hub_id is None
    with pytest.raises(TeacherUnavailable, match=HUB_ORG_ENV):
        load_teacher("resnet50_v1d.tricks_in1k", 1000, torch.device("cpu"))


# ---------------------------------------------------------------------------------------------------------
# safetensors only, unless --trust-pickle; pinned revisions; recipes from a repo
def test_pickle_teacher_weights_need_trust_pickle(exports, runs, tmp_path):
    trained = load_file(str(runs["resnet18_v1d"] / "checkpoints" / "best.safetensors"))
    torch.save(trained, tmp_path / "teacher.pth")
    cpu = torch.device("cpu")
    with pytest.raises(TeacherUnavailable, match="--trust-pickle"):
        load_teacher(f"resnet18_v1d@{tmp_path / 'teacher.pth'}", 3, cpu)
    for spec, trust in ((f"resnet18_v1d@{tmp_path / 'teacher.pth'}", True),
                        (f"resnet18_v1d@{runs['resnet18_v1d'] / 'checkpoints' / 'best.safetensors'}", False)):
        teacher = load_teacher(spec, 3, cpu, trust_pickle=trust)
        assert all(torch.equal(teacher.state_dict()[k], v) for k, v in trained.items())
    folder = tmp_path / "pickled-export"  # an exported folder whose weights are a pickle
    folder.mkdir()
    shutil.copyfile(exports["resnet18_v1d"] / "config.json", folder / "config.json")
    torch.save(trained, folder / "pytorch_model.bin")
    with pytest.raises(TeacherUnavailable, match="pytorch_model.bin.*--trust-pickle"):
        load_teacher(f"local-dir:{folder}", 3, cpu)
    teacher = load_teacher(f"local-dir:{folder}", 3, cpu, trust_pickle=True)
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in trained.items())
    teacher = load_teacher(f"local-dir:{exports['resnet18_v1d']}", 3, cpu)
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in trained.items())


def test_train_refuses_a_pickle_teacher_before_training(image_folder, runs, tmp_path, capsys):
    torch.save(load_file(str(runs["resnet18_v1d"] / "checkpoints" / "best.safetensors")), tmp_path / "t.pth")
    sets = ["model.name=resnet18_v1d", f"data.input_size={SIZE}", "data.workers=0", "train.epochs=2",
            "train.global_batch_size=6", "tricks.linear_warmup.epochs=1",
            f"tricks.distillation.teacher=resnet18_v1d@{tmp_path / 't.pth'}"]
    args = ["train", "--recipe", "resnet50d_distill", "--data-dir", str(image_folder), "--output",
            str(tmp_path / "runs"), "--no-progress", "--device", "cpu", *[f"--set={s}" for s in sets]]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "t.pth" in err and "--trust-pickle" in err
    assert not list((tmp_path / "runs").glob("*/checkpoints/*.safetensors"))


# ---------------------------------------------------------------------------------------------------------
# pull back through the local Hub: one fresh interpreter pulls every repo the tests publish
CLIENT = """
import json, sys, traceback
sys.modules["model_tweaks"] = sys.modules["tricks_registry"] = None  # timm alone: our packages cannot be imported
import torch
import timm
from safetensors.torch import load_file, save_file
torch.set_num_threads(1)
args, out = json.loads(sys.argv[1]), {}
x = load_file(args["x"])["x"]

def part(name, fn):
    try:
        out[name] = fn()
    except Exception:
        out[name] = {"error": traceback.format_exc()}

def pull(repo, logits):
    model = timm.create_model(f"hf-hub:{repo}", pretrained=True).eval()
    with torch.no_grad():
        save_file({"logits": model(x)}, logits)
    return {"architecture": model.pretrained_cfg["architecture"], "labels": model.pretrained_cfg["label_names"],
            "data": timm.data.resolve_model_data_config(model),
            "plugin_loaded": [m for m in ("model_tweaks", "tricks_registry") if sys.modules.get(m) is not None]}

def without_plugin():
    try:
        timm.create_model(f"hf-hub:{args['v1a']}", pretrained=True)
        return "loaded"
    except RuntimeError as err:
        return str(err)

part("plain", lambda: pull(args["plain"], args["plain_logits"]))
part("without_plugin", without_plugin)
del sys.modules["model_tweaks"], sys.modules["tricks_registry"]
import model_tweaks
part("v1a", lambda: pull(args["v1a"], args["v1a_logits"]))

from tricks_registry.weights import TeacherUnavailable, load_teacher
from tricks_registry.export.hub import recipe_from_hub
cpu = torch.device("cpu")
gluon = load_file(args["gluon"])
def same(model):
    state = model.state_dict()
    return state.keys() == gluon.keys() and all(torch.equal(state[k], v) for k, v in gluon.items())


def refused(spec, num_classes):
    try:
        load_teacher(spec, num_classes, cpu)
        return "loaded"
    except TeacherUnavailable as err:
        return str(err)

part("tags", lambda: {
    "tag": same(timm.create_model("resnet18_v1b.gluon_in1k", pretrained=True)),
    "teacher": same(load_teacher("resnet18_v1b.gluon_in1k", 1000, cpu)),
    "ten_classes": refused("resnet18_v1b.gluon_in1k", 10),
    "tricks_in1k": timm.models.get_pretrained_cfg("resnet50_v1d.tricks_in1k").hf_hub_id,
    "listed": "resnet50_v1d.tricks_in1k" in timm.list_pretrained("resnet50_v1d.*")})
bias = lambda m: m.fc.bias.tolist()
repo, sha1 = args["pinned"], args["sha1"]
part("pinned", lambda: {
    "in_spec": bias(load_teacher(f"hf-hub:{repo}@{sha1}", 3, cpu)),
    "revision": bias(load_teacher(f"hf-hub:{repo}", 3, cpu, revision=sha1)),
    "main": bias(load_teacher(f"hf-hub:{repo}", 3, cpu)),
    "pickle_only": refused(f"hf-hub:{args['pickle_only']}", 3),
    "recipe_at_sha1": recipe_from_hub(f"hf-hub:{repo}@{sha1}").sha256,
    "recipe_override": recipe_from_hub(f"hf-hub:{repo}", ["train.epochs=1"], revision=sha1).mapping["train"]})

def retrain():  # tricks-train --recipe hf-hub:ORG/NAME --revision REV
    from tricks_registry.cli import main
    return main(["train", "--recipe", f"hf-hub:{args['plain']}", "--revision", "main", "--data-dir", args["data"],
                 "--output", args["retrain"], "--no-progress", "--device", "cpu"])

part("retrain", retrain)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def pulled(local_hub, exports, image_folder, tmp_path_factory) -> dict:
    """Publish the exports (and a few repos made here), then pull them all in one fresh interpreter with the real
    huggingface_hub client over HTTP: ``HF_ENDPOINT`` is the local server, ``HF_HOME`` is new."""
    tmp = tmp_path_factory.mktemp("client")
    x = torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    save_file({"x": x}, tmp / "x.safetensors")
    local_hub.publish("tricks-test/resnet18_v1d", export_files(exports["resnet18_v1d"]))
    local_hub.publish("tricks-test/resnet50_v1a", export_files(exports["resnet50_v1a"]))
    # timm's repo of the GluonCV ResNet-18-B weights, holding random weights
    torch.manual_seed(0)
    timm.models.save_for_hf(timm.create_model("resnet18"), str(tmp / "gluon"), safe_serialization=True)
    local_hub.publish("timm/resnet18.gluon_in1k", export_files(tmp / "gluon"))
    # two commits of one export, told apart by fc.bias (+1 in the second)
    folder = exports["resnet18_v1d"]
    trained = load_file(str(folder / "model.safetensors"))
    sha1 = local_hub.publish("tricks-test/pinned", export_files(folder))
    save_file({k: v + 1.0 if k == "fc.bias" else v for k, v in trained.items()}, tmp / "shifted.safetensors")
    local_hub.publish("tricks-test/pinned", {"model.safetensors": tmp / "shifted.safetensors"})
    torch.save(trained, tmp / "pytorch_model.bin")
    local_hub.publish("tricks-test/pickle-only", {"config.json": folder / "config.json",
                                                  "pytorch_model.bin": tmp / "pytorch_model.bin"})
    args = {"x": str(tmp / "x.safetensors"), "plain": "tricks-test/resnet18_v1d", "v1a": "tricks-test/resnet50_v1a",
            "plain_logits": str(tmp / "plain.safetensors"), "v1a_logits": str(tmp / "v1a.safetensors"),
            "gluon": str(tmp / "gluon" / "model.safetensors"), "pinned": "tricks-test/pinned", "sha1": sha1,
            "pickle_only": "tricks-test/pickle-only", "data": str(image_folder), "retrain": str(tmp / "retrain")}
    env = local_hub.client_env(tmp, **{HUB_ORG_ENV: "my-lab"})
    out = json.loads(run_client(CLIENT, env, json.dumps(args)).strip().splitlines()[-1])
    return {"out": out, "x": x, "logits": {k: load_file(args[f"{k}_logits"])["logits"] for k in ("plain", "v1a")
                                           if Path(args[f"{k}_logits"]).is_file()}, "fc_bias": trained["fc.bias"],
            "retrain": tmp / "retrain"}


def pulled_part(pulled: dict, name: str) -> dict:
    found = pulled["out"][name]
    assert not (isinstance(found, dict) and "error" in found), found.get("error")
    return found


def check_pull(pulled: dict, name: str, run: Path) -> dict:
    """The pulled model's logits are the trained model's, bit for bit, and its data config is the recipe's."""
    found = pulled_part(pulled, name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            expected = run_model(run)(pulled["x"])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(pulled["logits"][name], expected)
    data = yaml.safe_load((run / "recipe.yaml").read_text())["data"]
    assert found["data"] == {"input_size": [3, SIZE, SIZE], "interpolation": data["interpolation"],
                             "mean": data["mean"], "std": data["std"], "crop_pct": data["eval_crop_pct"],
                             "crop_mode": "center"}
    assert found["labels"] == CLASSES
    return found


def test_plain_timm_pulls_the_export_with_the_same_logits(pulled, runs):
    found = check_pull(pulled, "plain", runs["resnet18_v1d"])
    assert found["architecture"] == "resnet18d" and found["plugin_loaded"] == []


def test_resnet50_v1a_pulls_with_the_plugin_imported(pulled, runs):
    assert "resnet50_v1a" in pulled["out"]["without_plugin"]  # timm alone does not know it: the card says so
    found = check_pull(pulled, "v1a", runs["resnet50_v1a"])
    assert found["architecture"] == "resnet50_v1a" and found["plugin_loaded"] == ["model_tweaks"]


def test_gluon_tag_loads_from_the_repo_of_that_name(pulled):
    """``resnet18_v1b.gluon_in1k`` downloads ``timm/resnet18.gluon_in1k``: the test serves a repo of that name
    holding random weights, and the tag (and a teacher named by it) loads exactly those; with
    TIMM_TRICKS_HUB_ORG set, the tricks_in1k tags point at that organisation."""
    found = pulled_part(pulled, "tags")
    assert found["tag"] is True and found["teacher"] is True
    assert "1000 classes and the data has 10" in found["ten_classes"]
    assert found["tricks_in1k"] == "my-lab/resnet50_v1d.tricks_in1k" and found["listed"]


def test_hub_teacher_is_pinned_by_revision_and_pickle_needs_trust(pulled, runs):
    found = pulled_part(pulled, "pinned")
    bias = pulled["fc_bias"]
    assert found["in_spec"] == found["revision"] == bias.tolist()
    assert found["main"] == (bias + 1.0).tolist()  # unpinned: the newest commit
    # (with --trust-pickle, timm asks for model.safetensors first and falls back on the Hub's 404; olah answers
    # a missing file with 401, so the trusted pickle path is checked with local-dir: above, not here)
    assert "no model.safetensors (only pytorch_model.bin" in found["pickle_only"]
    assert "--trust-pickle" in found["pickle_only"]
    assert found["recipe_at_sha1"] == (runs["resnet18_v1d"] / "recipe.sha256").read_text().strip()
    assert found["recipe_override"]["epochs"] == 1


def test_train_retrains_from_the_recipe_in_a_repo(pulled, runs):
    assert pulled_part(pulled, "retrain") == 0
    run = only_run(pulled["retrain"])
    original = runs["resnet18_v1d"]
    assert (run / "recipe.sha256").read_text() == (original / "recipe.sha256").read_text()
    assert (run / "recipe.yaml").read_text() == (original / "recipe.yaml").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model"] == "resnet18_v1d" and summary["recipe"] == "resnet50_baseline@1"
