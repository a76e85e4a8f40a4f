"""At the scale users train (issue 21): the bad-image scan once per data set (shared over processes, kept in the
run folder and the user's cache), samples as arrays that workers share, one trainer per run folder, files that
others can read, and a full disk said as it is."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import wait_for
from tricks_registry.data import FolderArrayReader, ImageFolderDataset, TarArrayReader, check_image, \
    image_folder_datasets, open_datasets
from tricks_registry.errors import CheckpointError
from tricks_registry.fsutil import ExclusiveLock, LockHeld, atomic_write_bytes, file_mode
from tricks_registry.recipe import resolve
from tricks_registry.data.scan import ScanPolicy, ScanTable, scan_cache_file, scan_files
from tricks_registry.train import plan_run_folder, slurm_run_name, train

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


@pytest.fixture()
def data(cifar_subset, tmp_path) -> Path:
    """A private copy of the CIFAR subset (tests here change files)."""
    return Path(shutil.copytree(cifar_subset, tmp_path / "data"))


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TIMM_TRICKS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def all_files(root: Path) -> list[str]:
    train, val, _ = image_folder_datasets(root, "train", "val", scan=False, progress=False)
    return [p for ds in (train, val) for p, _ in ds.samples]


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


# ---- the scan: once per data set, shared, kept
SCAN_WORKER = textwrap.dedent("""
    import json, os, sys, torch, torch.distributed as dist
    sys.path.insert(0, sys.argv[3])
    from test_scale import all_files
    from tricks_registry.data import check_image
    from tricks_registry.distributed import init_distributed
    from tricks_registry.data.scan import ScanPolicy, scan_files
    env = init_distributed("cpu")
    root = sys.argv[1]
    decoded = []
    def counting_check(path):
        decoded.append(path)
        return check_image(path)
    result = scan_files(all_files(__import__("pathlib").Path(root)), root, counting_check,
                        policy=ScanPolicy(env=env), progress=False)
    with open(os.path.join(sys.argv[2], f"rank{env.rank}.json"), "w") as f:
        json.dump({"decoded": decoded, "bad": result.bad, "per_rank": result.decoded}, f)
    dist.destroy_process_group()
""")


def scan_with_two_processes(root: Path, out: Path, port: int) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    base = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    procs = [subprocess.Popen([sys.executable, "-c", SCAN_WORKER, str(root), str(out), str(Path(__file__).parent)],
                              env={**base, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for e in errs]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_two_processes_decode_each_file_once_agree_on_the_bad_list_and_keep_it(data, cache, tmp_path):
    files = all_files(data)
    bad_file = Path(files[5])
    truncate(bad_file)
    first = scan_with_two_processes(data, tmp_path / "first", 29611)
    decoded = [set(r["decoded"]) for r in first]
    assert decoded[0].isdisjoint(decoded[1]) and decoded[0] | decoded[1] == set(files)  # each file once in all
    assert [len(d) for d in decoded] == first[0]["per_rank"] == [len(files) // 2, len(files) // 2]
    assert first[0]["bad"] == first[1]["bad"] and [p for p, _ in first[0]["bad"]] == [str(bad_file)]
    assert scan_cache_file(data).is_file()

    again = scan_with_two_processes(data, tmp_path / "again", 29612)  # the same, unchanged files: nothing decoded
    assert [r["decoded"] for r in again] == [[], []] and again[0]["bad"] == again[1]["bad"] == first[0]["bad"]

    touched = Path(files[17])
    os.utime(touched, ns=(time.time_ns(), touched.stat().st_mtime_ns + 10**9))  # modified: scanned again
    third = scan_with_two_processes(data, tmp_path / "third", 29613)
    assert sorted(p for r in third for p in r["decoded"]) == [str(touched)]
    assert third[1]["bad"] == first[0]["bad"]


def test_added_removed_and_replaced_files_are_scanned_the_rest_is_not(data, cache):
    root = data
    files = all_files(root)
    counted: list[str] = []

    def counting(path: str):
        counted.append(path)
        return check_image(path)

    scan_files(files, root, counting, progress=False)
    assert len(counted) == len(files)
    counted.clear()
    new = root / "train" / files[0].split(os.sep)[-2] / "zz_added.jpg"
    shutil.copy(files[1], new)
    Path(files[2]).unlink()
    replaced = Path(files[3])
    replaced.write_bytes(Path(files[4]).read_bytes())  # another image under the same name: size and time differ
    now = [f for f in all_files(root)]
    result = scan_files(now, root, counting, progress=False)
    assert sorted(counted) == sorted([str(new), str(replaced)])
    assert result.reused == len(now) - 2 and result.known_from == "the cache"
    counted.clear()
    scan_files(now, root, counting, policy=ScanPolicy(rescan=True), progress=False)
    assert len(counted) == len(now)  # --rescan: every file


def test_the_scan_table_round_trips_and_a_damaged_one_is_ignored(tmp_path):
    table = ScanTable(["a/1.jpg", "b/ü 2.jpg"], np.array([10, 20]), np.array([5, 6]), {1: "truncated"})
    table.save(tmp_path / "t.npz")
    back = ScanTable.load(tmp_path / "t.npz")
    assert back.paths == table.paths and back.bad == {1: "truncated"}
    assert back.sizes.tolist() == [10, 20] and back.mtimes.tolist() == [5, 6]
    (tmp_path / "t.npz").write_bytes(b"not a table")
    assert ScanTable.load(tmp_path / "t.npz") is None and ScanTable.load(tmp_path / "missing.npz") is None


def small_recipe(*extra: str):
    return resolve("resnet50d_mixup", ["model.name=resnet18_v1d", "data.input_size=32", "data.eval_crop_pct=1.0",
                                       "data.workers=0", "train.epochs=1", "train.global_batch_size=40",
                                       "tricks.linear_warmup.epochs=0", *extra])


def test_resume_reads_the_run_folders_record_and_a_second_run_the_cache(data, cache, tmp_path, monkeypatch,
                                                                      one_torch_thread):
    run_dir = train(small_recipe(), data_dir=str(data), output=tmp_path / "runs", device="cpu", progress=False)
    first = json.loads((run_dir / "summary.json").read_text())["scan"]
    assert first["decoded_per_rank"] == [180] and first["reused"] == 0 and (run_dir / "scan.npz").is_file()
    monkeypatch.setenv("TIMM_TRICKS_CACHE", str(tmp_path / "another-cache"))  # only the run folder knows now
    resumed = train(small_recipe(), data_dir=str(data), output=tmp_path / "runs", device="cpu", progress=False,
                    resume=run_dir)
    scan = json.loads((resumed / "summary.json").read_text())["scan"]
    assert scan == {"files": 180, "decoded_per_rank": [0], "reused": 180, "known_from": "the run folder", "bad": 0}
    monkeypatch.setenv("TIMM_TRICKS_CACHE", str(cache))
    second = train(small_recipe(), data_dir=str(data), output=tmp_path / "runs2", device="cpu", progress=False)
    assert json.loads((second / "summary.json").read_text())["scan"]["known_from"] == "the cache"
    rescanned = train(small_recipe(), data_dir=str(data), output=tmp_path / "runs3", device="cpu", progress=False,
                      rescan=True)
    assert json.loads((rescanned / "summary.json").read_text())["scan"]["decoded_per_rank"] == [180]


def test_a_known_bad_image_still_stops_the_run(data, cache):
    files = all_files(data)
    truncate(Path(files[0]))
    with pytest.raises(Exception, match="unreadable image"):
        image_folder_datasets(data, "train", "val", progress=False)
    with pytest.raises(Exception, match="unreadable image"):  # known from the cache now, and still an error
        image_folder_datasets(data, "train", "val", progress=False)
    train_set, _, bad = image_folder_datasets(data, "train", "val", skip_bad=True, progress=False)
    assert [p for p, _ in bad] == [files[0]] and len(train_set) == 119


# ---- memory: the samples as arrays
def test_the_array_readers_hold_timms_samples_in_timms_order(cifar_subset, tmp_path):
    from timm.data import create_dataset

    timm_folder = create_dataset("", root=str(cifar_subset / "train"), search_split=False).reader
    ours = ImageFolderDataset(cifar_subset / "train").dataset.reader
    assert isinstance(ours, FolderArrayReader) and isinstance(ours.targets, np.ndarray)
    assert ours.filenames(absolute=True) == [p for p, _ in timm_folder.samples]
    assert ours.targets.tolist() == [t for _, t in timm_folder.samples] and ours.class_to_idx == timm_folder.class_to_idx
    assert ours.filenames() == timm_folder.filenames()
    fp, target = ours[7]
    assert fp.read() == Path(timm_folder.samples[7][0]).read_bytes() and target == timm_folder.samples[7][1]

    tar = tmp_path / "train.tar"
    subprocess.run(["tar", "-cf", str(tar), "-C", str(cifar_subset / "train"), "."], check=True)
    timm_tar = create_dataset("", root=str(tar), search_split=False, cache_tarfiles=False).reader
    subprocess.run(["tar", "-cf", str(tmp_path / "val.tar"), "-C", str(cifar_subset / "val"), "."], check=True)
    train_set, _, _ = open_datasets(None, tmp_path, "train", "val", progress=False)
    reader = train_set.dataset.reader
    assert isinstance(reader, TarArrayReader) and len(reader) == len(timm_tar)
    assert reader.filenames() == timm_tar.filenames() and reader.targets.tolist() == list(timm_tar.targets)
    for i in (0, 33, len(reader) - 1):
        assert reader[i][0].read() == timm_tar[i][0].read() and reader[i][1] == timm_tar[i][1]
    assert isinstance(train_set.indices, np.ndarray) and train_set.indices.dtype == np.int64


# ---- one trainer per run folder
def test_a_lock_refuses_a_second_holder_and_dies_with_its_process(tmp_path):
    path = tmp_path / "trainer.lock"
    held = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from tricks_registry.fsutil import ExclusiveLock
        lock = ExclusiveLock({str(path)!r}).acquire()
        print("held", flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True, env=ENV)
    assert held.stdout.readline().strip() == "held"
    with pytest.raises(LockHeld) as err:
        ExclusiveLock(path).acquire()
    assert err.value.holder.endswith(f" {held.pid}")
    held.kill()
    held.wait()
    with ExclusiveLock(path) as lock:  # kill -9 left no lock behind
        assert lock.held



def test_a_lock_is_not_kept_by_the_forked_children_of_a_killed_holder(tmp_path):
    """Data-loader workers are forked; a flock they inherited would outlive a kill -9 of the trainer until they
    notice (seconds): the next --resume was refused (seen in CI)."""
    path = tmp_path / "trainer.lock"
    held = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import multiprocessing, os, time
        from tricks_registry.fsutil import ExclusiveLock
        lock = ExclusiveLock({str(path)!r}).acquire()
        child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(600,), daemon=True)
        child.start()
        print("held", child.pid, flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True, env=ENV)
    line = held.stdout.readline().split()
    assert line[0] == "held"
    child_pid = int(line[1])
    try:
        with pytest.raises(LockHeld):
            ExclusiveLock(path).acquire()
        held.kill()
        held.wait()
        os.kill(child_pid, 0)  # the forked child lives on ...
        with ExclusiveLock(path) as lock:  # ... and holds no lock
            assert lock.held
    finally:
        try:
            os.kill(child_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

def train_command(data: Path, out: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "tricks_registry.cli", "train", "--no-progress", "--device", "cpu",
           "--data-dir", str(data), "--output", str(out), *extra]
    return cmd if "--resume" in extra else cmd + [
        "--recipe", "resnet50d_mixup", "--set=model.name=resnet18_v1d", "--set=data.input_size=32",
        "--set=data.workers=0", "--set=train.epochs=6", "--set=train.global_batch_size=20",
        "--set=tricks.linear_warmup.epochs=0"]


def test_a_second_trainer_on_a_run_folder_is_refused_and_a_killed_one_does_not_block_resume(data, cache, tmp_path):
    env = {**ENV, "TIMM_TRICKS_CACHE": str(cache)}
    umask_022 = lambda: os.umask(0o022)  # noqa: E731
    first = subprocess.Popen(train_command(data, tmp_path / "runs", "--recovery-interval", "1"), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=umask_022)
    manifest = wait_for("*/checkpoints/step-00000001.json", tmp_path / "runs", first)
    run_dir = manifest.parent.parent
    second = subprocess.run(train_command(data, tmp_path / "runs", "--resume", str(run_dir)), env=env,
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 2, second.stderr[-2000:]
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and str(run_dir) in lines[0] and f"process {first.pid} on " in lines[0]
    assert first.poll() is None  # the first goes on untouched
    first.kill()
    first.wait()
    resumed = subprocess.run(train_command(data, tmp_path / "runs", "--resume", str(run_dir)), env=env,
                             capture_output=True, text=True, timeout=600, preexec_fn=umask_022)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout + resumed.stderr and (run_dir / "summary.json").is_file()
    # files that others can read: what a plain open() makes under umask 022, nothing half-written left
    for path in run_dir.rglob("*"):
        assert (path.stat().st_mode & 0o777) == (0o755 if path.is_dir() else 0o644), path
        assert not path.name.endswith(".tmp"), path


def test_atomic_writes_take_the_umask_mode(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
        assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640 == file_mode()
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


# ---- requeued jobs: where the run goes
def test_the_run_folder_plan_for_requeued_jobs(tmp_path):
    recipe = small_recipe()
    assert slurm_run_name(recipe, {"SLURM_JOB_ID": "77"}) == f"{recipe.name}-v{recipe.version}-job77"
    assert slurm_run_name(recipe, {"SLURM_JOB_ID": "80", "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "3"}) \
        == f"{recipe.name}-v{recipe.version}-job77_3"
    assert plan_run_folder(recipe, tmp_path, resume_if_exists=True, environ={"SLURM_JOB_ID": "77"}).path == \
        tmp_path / f"{recipe.name}-v{recipe.version}-job77"
    with pytest.raises(Exception, match="--resume-if-exists needs --experiment"):
        plan_run_folder(recipe, tmp_path, resume_if_exists=True, environ={})
    with pytest.raises(Exception, match="no '/'"):
        plan_run_folder(recipe, tmp_path, experiment="a/b")
    other = tmp_path / "x"
    other.mkdir()
    (other / "recipe.yaml").write_text("name: other\n")
    (other / "recipe.sha256").write_text("0" * 64 + "\n")
    with pytest.raises(CheckpointError, match="holds a run of another recipe"):
        plan_run_folder(recipe, tmp_path, experiment="x", resume_if_exists=True)
    plan = plan_run_folder(recipe, tmp_path, experiment="new", resume_if_exists=True)
    assert plan.path == tmp_path / "new" and not plan.resume and not plan.finished


# ---- a full disk, said as it is (a small tmpfs: needs root, as CI and the sessions have)
@pytest.fixture()
def small_disk(tmp_path):
    def mount(size_mb: int) -> Path:
        where = tmp_path / f"disk{size_mb}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()})")
        mounted.append(where)
        return where

    mounted: list[Path] = []
    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], check=False)


def test_a_full_disk_before_the_first_checkpoint_says_there_is_none_and_weights_are_written_once(
        data, cache, small_disk, one_torch_thread):
    disk = small_disk(70)  # room for one copy of ResNet-18's 45 MB weights, not for the optimizer state beside it
    recipe = small_recipe("tricks.ema=null")
    with pytest.raises(CheckpointError, match="no resumable checkpoint was saved yet, so --resume cannot continue "
                                              "this run: free space and start it again"):
        train(recipe, data_dir=str(data), output=disk, device="cpu", progress=False)
    (run_dir,) = disk.iterdir()
    ckpts = run_dir / "checkpoints"
    last, best = ckpts / "last.safetensors", ckpts / "best.safetensors"
    assert last.stat().st_ino == best.stat().st_ino  # the same weights, once on disk (linked when saved)
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.json", "best.safetensors", "last.json",
                                                       "last.safetensors"]  # no half checkpoint holds space


def test_a_full_disk_later_names_the_checkpoint_to_resume(data, cache, small_disk, one_torch_thread):
    disk = small_disk(120)  # epoch 1 (weights + optimizer state) fits; epoch 2's new weights do not
    recipe = small_recipe("tricks.ema=null", "train.epochs=2")
    with pytest.raises(CheckpointError, match=r"the newest resumable checkpoint, step-00000003 \(the end of epoch "
                                              r"1\), is intact: free space and continue with --resume"):
        train(recipe, data_dir=str(data), output=disk, device="cpu", progress=False)
