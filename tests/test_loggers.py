"""Run loggers (``--log tensorboard|mlflow|wandb``): each tool's own files read back with the tool's own reader
(TensorBoard's EventAccumulator, MLflow's client on the local store, W&B's offline run folder and its
``.wandb`` record log parsed with W&B's protobuf classes); a failing tool warns once and the others go on;
other ranks write and import nothing; --resume continues the same runs. No network: W&B runs offline."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import pytest

from tricks_registry import loggers as loggers_module
from tricks_registry.errors import TimmTricksError, TrainingStopped
from tricks_registry.loggers import LOGGERS, LoggerWarning, RunLoggers, check_loggers

ROOT = Path(__file__).resolve().parents[1]
SHA = "0123456789abcdef" * 4
RESOLVED = {
    "name": "resnet50d_cosine", "version": 2, "description": "x" * 7000,  # longer than an MLflow param may be
    "model": {"name": "resnet50_v1d", "kwargs": {}, "pretrained": False},
    "data": {"input_size": 224, "mean": [0.485, 0.456, 0.406]},
    "train": {"epochs": 2, "global_batch_size": 256, "lr": None, "log_every": 5},
    "tricks": {"cosine": {}, "linear_warmup": {"epochs": 5, "form": "paper"}, "mixup": {"alpha": 0.2}},
}
EXTRA = {"world_size": 1, "per_device_batch_size": 256}
STEPS = {0: {"lr": 0.0125, "loss": 6.90625}, 5: {"lr": 0.05, "loss": 6.5}, 10: {"lr": 0.1, "loss": 6.25}}
ROWS = [{"epoch": 1, "train_loss": 6.5, "lr": 0.1, "val_loss": 6.75, "top1": 0.5, "top5": 2.5, "skipped_steps": 0},
        {"epoch": 2, "train_loss": 6.0, "lr": 0.05, "val_loss": None, "top1": 1.25, "top5": 4.0, "skipped_steps": 0}]


def f32(x: float) -> float:
    """``x`` as TensorBoard stores a scalar (float32)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


@pytest.fixture(autouse=True)
def offline(tmp_path_factory, monkeypatch) -> None:
    """W&B offline and quiet, its caches and settings in a temporary folder; no tracking server from outside."""
    home = tmp_path_factory.mktemp("wandb-home")
    for var, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
                       "WANDB_CACHE_DIR": str(home / "cache"), "WANDB_CONFIG_DIR": str(home / "config"),
                       "WANDB_DATA_DIR": str(home / "data"), "WANDB_DISABLE_GIT": "true"}.items():
        monkeypatch.setenv(var, value)
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "WANDB_PROJECT",
                "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> str:
    """One SQLite MLflow store for the tests that do not test the default store (a new store's migrations take
    seconds), with an experiment whose artifacts stay in the temporary folder."""
    from mlflow.tracking import MlflowClient
    folder = tmp_path_factory.mktemp("mlflow-store")
    uri = "sqlite:///" + (folder / "mlflow.db").as_posix()
    MlflowClient(uri).create_experiment("loggers-test", artifact_location=(folder / "artifacts").as_uri())
    return uri


@pytest.fixture
def shared_store(mlflow_store, monkeypatch) -> str:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "loggers-test")
    return mlflow_store


def png(path: Path, width: int = 40, height: int = 30) -> Path:
    from PIL import Image
    Image.new("RGB", (width, height), (200, 30, 30)).save(path)
    return path


def drive(lg: RunLoggers, run_dir: Path) -> None:
    """What the loop does: the recipe once, the LR and loss at log_every, a metrics row and the curves per epoch."""
    lg.log_config("resnet50d_cosine", 2, SHA, RESOLVED, EXTRA)
    for epoch, row in enumerate(ROWS, start=1):
        for step, values in STEPS.items():
            if step // 10 + 1 == epoch:  # steps 0 and 5 in the first epoch, 10 in the second
                lg.log_step(step, values)
        lg.log_epoch(epoch, row)
        lg.log_artifact(png(run_dir / "curves.png", 40 + epoch, 30))
    lg.log_artifact(png(run_dir / "lr_schedule.png", 24, 16))


def no_logger_warnings(record: list[warnings.WarningMessage]) -> None:
    assert [str(w.message) for w in record if issubclass(w.category, LoggerWarning)] == []


def drive_without_warnings(names: list[str], run_dir: Path, run_name: str) -> RunLoggers:
    """A whole run through :func:`drive`, closed as finished; no tool may warn."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with RunLoggers(names, run_dir, run_name=run_name) as lg:
            drive(lg, run_dir)
    no_logger_warnings(record)
    return lg


# ---------------------------------------------------------------------------------------------------------
def test_check_loggers_names_the_unknown_logger_and_the_missing_package(monkeypatch):
    check_loggers(LOGGERS)  # all three installed (the test extra)
    with pytest.raises(TimmTricksError, match=r"--log tensorbord: unknown logger \(did you mean 'tensorboard'\?\); "
                                              r"choose from tensorboard, mlflow, wandb"):
        check_loggers(["mlflow", "tensorbord"])
    with pytest.raises(TimmTricksError, match="did you mean 'wandb'"):
        check_loggers(["WandB"])
    with pytest.raises(TimmTricksError, match="unknown logger; choose from"):
        check_loggers(["comet"])

    real = loggers_module.importlib.util.find_spec
    missing = {"wandb", "sqlalchemy"}
    monkeypatch.setattr(loggers_module.importlib.util, "find_spec", lambda n, *a: None if n in missing else real(n, *a))
    with pytest.raises(TimmTricksError) as err:
        check_loggers(["tensorboard", "wandb"])
    assert str(err.value) == ("--log wandb needs the wandb package, which is not installed: "
                              "pip install 'timm-tricks[wandb]'")
    with pytest.raises(TimmTricksError, match=r"needs the sqlalchemy package.*pip install 'timm-tricks\[mlflow\]' "
                                              r"\(a local MLflow store is an SQLite database"):
        check_loggers(["mlflow"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    check_loggers(["mlflow"])  # a tracking server: the local store's packages are not needed
    with pytest.raises(TimmTricksError, match="unknown logger"):  # RunLoggers checks too (before any tool starts)
        RunLoggers(["tensorboard", "tb"], Path("unused"), run_name="x")


def test_tensorboard_events_read_back_with_tensorboards_reader(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    lg = drive_without_warnings(["tensorboard"], tmp_path, "tb-run")
    assert lg.active == ()  # closed
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    for name in ("lr", "loss"):
        assert [(e.step, e.value) for e in acc.Scalars(f"step/{name}")] == \
               [(s, f32(v[name])) for s, v in STEPS.items()]
    for field in ("train_loss", "lr", "top1", "top5", "skipped_steps"):
        assert [(e.step, e.value) for e in acc.Scalars(f"epoch/{field}")] == [(r["epoch"], f32(r[field])) for r in ROWS]
    assert [(e.step, e.value) for e in acc.Scalars("epoch/val_loss")] == [(1, 6.75)]  # None left out
    assert "epoch/epoch" not in acc.Tags()["scalars"]

    text = acc.Tensors("recipe/text_summary")[0].tensor_proto.string_val[0].decode()
    assert text.startswith(f"**resnet50d_cosine@2**  sha256 `{SHA}`") and "    tricks:\n      cosine: {}\n" in text
    hp = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info.hparams
    assert hp["recipe"].string_value == "resnet50d_cosine@2" and hp["recipe_sha256"].string_value == SHA
    assert hp["tricks.mixup.alpha"].number_value == 0.2 and hp["tricks.cosine"].string_value == "{}"
    assert hp["data.mean"].string_value == "[0.485, 0.456, 0.406]" and hp["world_size"].number_value == 1
    assert [(i.step, i.width, i.height) for i in acc.Images("curves")] == [(1, 41, 30), (2, 42, 30)]
    assert [(i.step, i.width, i.height) for i in acc.Images("lr_schedule")] == [(2, 24, 16)]


def test_mlflow_local_store_in_the_run_folder_read_back_with_mlflows_client(tmp_path):
    from mlflow.tracking import MlflowClient

    drive_without_warnings(["mlflow"], tmp_path, "resnet50d_cosine-v2-20260101-000000")
    run_id = json.loads((tmp_path / "loggers.json").read_text())["mlflow_run_id"]
    client = MlflowClient("sqlite:///" + (tmp_path / "mlruns" / "mlflow.db").as_posix())
    run = client.get_run(run_id)
    assert run.info.run_name == "resnet50d_cosine-v2-20260101-000000" and run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "timm-tricks"
    assert run.info.artifact_uri.startswith((tmp_path / "mlruns" / "artifacts").resolve().as_uri())
    tags, params = run.data.tags, run.data.params
    assert tags["recipe"] == "resnet50d_cosine@2" and tags["recipe_sha256"] == SHA
    assert tags["run_dir"] == str(tmp_path.resolve())
    assert params["tricks.mixup.alpha"] == "0.2" and params["tricks.cosine"] == "{}"
    assert params["train.lr"] == "null" and params["model.pretrained"] == "false" and params["model.kwargs"] == "{}"
    assert params["data.mean"] == "[0.485, 0.456, 0.406]" and params["name"] == "resnet50d_cosine"
    assert params["world_size"] == "1" and params["per_device_batch_size"] == "256"
    assert params["description"] == "x" * 6000  # cut to MLflow's limit
    for name in ("lr", "loss"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, f"step/{name}"))
        assert history == [(s, v[name]) for s, v in STEPS.items()]
    for field in ("train_loss", "lr", "top1", "top5", "skipped_steps"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, f"epoch/{field}"))
        assert history == [(r["epoch"], r[field]) for r in ROWS]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "epoch/val_loss")] == [(1, 6.75)]
    assert "epoch/epoch" not in run.data.metrics
    assert sorted(a.path for a in client.list_artifacts(run_id)) == ["curves.png", "lr_schedule.png"]
    local = Path(client.download_artifacts(run_id, "curves.png", str(tmp_path / "down")))
    assert local.read_bytes() == (tmp_path / "curves.png").read_bytes()  # the last version


def wandb_records(path: Path) -> Iterator[Any]:
    """The records of a ``.wandb`` file: W&B's LevelDB-style log (a 7-byte file header, 32 KiB blocks, each
    chunk with a 7-byte header: CRC-32, length, type full/first/middle/last), each record one of W&B's
    protobuf ``Record`` messages."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:8]
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def wandb_offline_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[str], Path]:
    """The config, the history rows and the saved file names of the newest offline run under ``run_dir``."""
    # a resumed run is a second folder (same id; "-1" added when it starts within the same second)
    log = max((run_dir / "wandb").glob("offline-run-*/run-*.wandb"), key=lambda p: p.parent.name)  # by time
    folder = log.parent
    # run.finish() can return before W&B's service process has written the log out: wait for its exit record
    deadline = time.monotonic() + 30
    while True:
        try:
            records = list(wandb_records(log))
        except Exception:  # noqa: BLE001 - a record cut in the middle of being written
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    config: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    files: list[str] = []
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind in ("config", "run"):  # updates, and the whole config in the run record (W&B may batch them)
            updates = record.config.update if kind == "config" else record.run.config.update
            config.update({u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in updates})
        elif kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
        elif kind == "files":
            files += [f.path for f in record.files.files]
    return config, history, files, folder


def test_wandb_offline_run_folder_holds_config_and_history(tmp_path):
    lg = drive_without_warnings(["wandb"], tmp_path, "wb-run")
    config, history, files, folder = wandb_offline_run(tmp_path)
    run_id = json.loads((tmp_path / "loggers.json").read_text())["wandb_run_id"]
    assert folder.name.endswith(f"-{run_id}")
    assert config["recipe"] == "resnet50d_cosine@2" and config["recipe_sha256"] == SHA
    assert config["tricks"] == RESOLVED["tricks"] and config["train"] == RESOLVED["train"]
    assert config["description"] == RESOLVED["description"] and config["world_size"] == 1
    steps = [h for h in history if "global_step" in h]
    assert [(h["global_step"], h["step/lr"], h["step/loss"]) for h in steps] == \
           [(s, v["lr"], v["loss"]) for s, v in STEPS.items()]
    epochs = [h for h in history if "epoch" in h]
    assert [h["epoch"] for h in epochs] == [1, 2]
    for h, row in zip(epochs, ROWS):
        assert {k: v for k, v in h.items() if k.startswith("epoch/")} == \
               {f"epoch/{k}": v for k, v in row.items() if k != "epoch" and v is not None}
    assert sorted(set(files) & {"curves.png", "lr_schedule.png"}) == ["curves.png", "lr_schedule.png"]
    assert (folder / "files" / "curves.png").read_bytes() == (tmp_path / "curves.png").read_bytes()


def test_a_failing_logger_warns_once_and_the_others_keep_logging(tmp_path, shared_store, monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def broken(self, *args):
        raise RuntimeError("disk on fire\nsecond line of the tool's message")

    monkeypatch.setattr(loggers_module._MLflow, "step", broken)
    with pytest.warns(LoggerWarning) as record:
        lg = RunLoggers(["tensorboard", "mlflow", "wandb"], tmp_path, run_name="one-fails")
        drive(lg, tmp_path)
        assert lg.active == ("tensorboard", "wandb")
        lg.close()
    messages = [str(w.message) for w in record if issubclass(w.category, LoggerWarning)]
    assert messages == ["MLflow logging failed and is off for the rest of this run (training goes on): "
                        "RuntimeError: disk on fire"]
    run_id = json.loads((tmp_path / "loggers.json").read_text())["mlflow_run_id"]
    run = MlflowClient(shared_store).get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["recipe"] == "resnet50d_cosine@2"  # config came first
    assert "epoch/top1" not in run.data.metrics  # off after the failure
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("step/loss")] == list(STEPS) and len(acc.Scalars("epoch/top1")) == 2
    _, history, _, _ = wandb_offline_run(tmp_path)
    assert [h["epoch"] for h in history if "epoch" in h] == [1, 2]


def test_a_logger_that_cannot_start_warns_once_and_training_goes_on(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://nowhere")  # MLflow has no store for it
    with pytest.warns(LoggerWarning) as record:
        lg = RunLoggers(["mlflow", "tensorboard"], tmp_path, run_name="no-mlflow")
        assert lg.active == ("tensorboard",)
        drive(lg, tmp_path)
        lg.close()
    messages = [str(w.message) for w in record if issubclass(w.category, LoggerWarning)]
    assert len(messages) == 1 and messages[0].startswith("MLflow logging failed and is off for the rest of this run")
    assert "\n" not in messages[0]
    assert not (tmp_path / "loggers.json").exists()  # no run id to keep
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    assert len(acc.Scalars("epoch/top1")) == 2


def test_other_ranks_write_nothing_and_import_no_tool(tmp_path):
    """``enabled=False`` in a fresh interpreter: every call is a no-op, the run folder stays empty, and neither
    the tools nor torch are imported (the module is cheap to import for the command line, too)."""
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from tricks_registry.loggers import LOGGERS, RunLoggers, check_loggers
        check_loggers(LOGGERS)
        run = Path({str(tmp_path)!r})
        with RunLoggers(LOGGERS, run, run_name="rank1", enabled=False, resume=True) as lg:
            lg.log_config("r", 1, "00", {{"a": {{"b": 1}}}}, {{"world_size": 2}})
            lg.log_step(0, {{"lr": 0.1, "loss": 1.0}})
            lg.log_epoch(1, {{"epoch": 1, "train_loss": 1.0}})
            lg.log_artifact(run / "curves.png")
        heavy = [m for m in ("torch", "tensorboard", "mlflow", "wandb", "PIL") if m in sys.modules]
        print("HEAVY=" + ",".join(heavy))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY="
    assert list(tmp_path.iterdir()) == []


def test_resume_continues_the_same_runs(tmp_path, shared_store):
    """A run stopped by a signal, then resumed from its checkpoint at step 5: the same MLflow run (KILLED, then
    RUNNING, then FINISHED), the same W&B run id, and TensorBoard hiding the first attempt's steps from 5 on."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    client = MlflowClient(shared_store)
    names = ["tensorboard", "mlflow", "wandb"]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with pytest.raises(TrainingStopped):
            with RunLoggers(names, tmp_path, run_name="stopped") as first:
                first.log_config("resnet50d_cosine", 2, SHA, RESOLVED, EXTRA)
                for step in range(8):
                    first.log_step(step, {"loss": 10.0 + step})
                raise TrainingStopped("SIGTERM: saved step 5", signum=15)
        ids = json.loads((tmp_path / "loggers.json").read_text())
        assert client.get_run(ids["mlflow_run_id"]).info.status == "KILLED"

        second = RunLoggers(names, tmp_path, run_name="stopped", resume=True, start_step=5)
        assert json.loads((tmp_path / "loggers.json").read_text()) == ids
        assert client.get_run(ids["mlflow_run_id"]).info.status == "RUNNING"
        second.log_config("resnet50d_cosine", 2, SHA, RESOLVED, {**EXTRA, "resumed_from": 5})  # params kept
        for step in range(5, 10):
            second.log_step(step, {"loss": 20.0 + step})
        second.log_epoch(1, ROWS[0])
        second.close()
    no_logger_warnings(record)

    run = client.get_run(ids["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.params["resumed_from"] == "5"
    assert run.data.params["world_size"] == "1"
    history = sorted((m.step, m.value) for m in client.get_metric_history(ids["mlflow_run_id"], "step/loss"))
    assert [s for s, _ in history] == [0, 1, 2, 3, 4, 5, 5, 6, 6, 7, 7, 8, 9]  # MLflow keeps both attempts
    assert len(client.search_runs([run.info.experiment_id], f"tags.run_dir = '{tmp_path.resolve()}'")) == 1

    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("step/loss")] == \
           [(s, 10.0 + s) for s in range(5)] + [(s, 20.0 + s) for s in range(5, 10)]

    folders = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and all((f / f"run-{ids['wandb_run_id']}.wandb").is_file() for f in folders)
    _, history_wb, _, _ = wandb_offline_run(tmp_path)
    assert [h["global_step"] for h in history_wb if "global_step" in h] == [5, 6, 7, 8, 9]


def test_close_statuses_and_values_that_are_no_numbers(tmp_path, shared_store):
    from mlflow.tracking import MlflowClient

    lg = RunLoggers(["mlflow", "mlflow"], tmp_path, run_name="odd-values")  # named twice: one logger
    assert lg.active == ("mlflow",)
    lg.log_step(3, {"lr": 0.5, "note": "warmup", "nothing": None, "flag": True, "obj": object()})
    lg.log_epoch(1, {"epoch": 1, "top1": 12.5, "phase": "head"})
    lg.log_step(4, {"note": "text only"})  # nothing numeric: no call
    with pytest.raises(ValueError, match="status must be one of finished, failed, killed"):
        lg.close("crashed")
    lg.close("failed")
    lg.close()  # a second close does nothing
    lg.log_epoch(2, {"top1": 99.0})  # nor does logging after it
    run = MlflowClient(shared_store).get_run(json.loads((tmp_path / "loggers.json").read_text())["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert run.data.metrics == {"step/lr": 0.5, "step/flag": 1.0, "epoch/top1": 12.5}
