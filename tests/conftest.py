"""Shared fixtures: a small, fixed, class-balanced CIFAR-10 subset from ../shared/data (real JPEGs)."""
from __future__ import annotations

import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CIFAR_TAR = Path(os.environ.get("TIMM_TRICKS_CIFAR", ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz"))


def _extract_subset(dest: Path, per_class: dict[str, int]) -> Path:
    """Extract the first N images (by name) of every class of each split, reading the archive once."""
    wanted: dict[tuple[str, str], list[str]] = {}
    with tarfile.open(CIFAR_TAR, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")]
        by_key: dict[tuple[str, str], list[tarfile.TarInfo]] = {}
        for m in members:
            parts = Path(m.name).parts
            split, cls = parts[-3], parts[-2]
            by_key.setdefault((split, cls), []).append(m)
        for (split, cls), items in sorted(by_key.items()):
            n = per_class.get(split, 0)
            for m in sorted(items, key=lambda m: m.name)[:n]:
                m2 = tarfile.TarInfo(f"{'val' if split == 'test' else split}/{cls}/{Path(m.name).name}")
                m2.size = m.size
                target = dest / m2.name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(m).read())
                wanted.setdefault((split, cls), []).append(m2.name)
    return dest


@pytest.fixture(scope="session")
def cifar_subset(tmp_path_factory) -> Path:
    """10 classes x 12 train and 6 val real CIFAR-10 JPEGs (train/ and val/ ImageFolder splits)."""
    if not CIFAR_TAR.is_file():
        pytest.skip(f"no CIFAR-10 archive at {CIFAR_TAR}")
    return _extract_subset(tmp_path_factory.mktemp("cifar10"), {"train": 12, "test": 6})


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module's tests: on 2 shared cores, torch's default threads are 10-20 times
    slower for these small data-loading runs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def wait_for(pattern: str, root: Path, proc: subprocess.Popen, timeout: float = 300) -> Path:
    """The first path under ``root`` matching ``pattern`` once a running ``proc`` (a training run) writes it; fails
    with the run's stderr when the run ends first, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {pattern} appeared: {proc.stderr.read()[-3000:]}")
        time.sleep(0.02)
    raise AssertionError(f"{pattern} never appeared")


def nan_loss_at(monkeypatch, update: int) -> None:
    """Make the recipe's training loss NaN at its ``update``-th call (one call per optimizer step without
    accumulation): for the tests of the non-finite check."""
    import tricks_registry.build as build

    real = build.make_criterion

    def poisoned(pipeline, model):
        criterion, calls = real(pipeline, model), [0]

        def loss(logits, targets, teacher_logits=None):
            calls[0] += 1
            value = criterion(logits, targets, teacher_logits)
            return value * float("nan") if calls[0] == update else value

        return loss

    monkeypatch.setattr(build, "make_criterion", poisoned)
