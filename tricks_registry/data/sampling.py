"""Exact resume: per-sample seeds and a sampler that can start mid-epoch.

:class:`ResumableSampler` hands out ``(index, seed)`` pairs and can start mid-epoch; :class:`SeededDataset` seeds
Python, NumPy and torch from that seed around each sample's augmentation (:func:`seeded`). A sample's random
crop, flip and colour jitter are then a function of (run seed, epoch, index) alone (:func:`sample_seed`): the same
whichever data-loader worker draws it and whether the run was interrupted or not."""
from __future__ import annotations

import contextlib
import hashlib
import random
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

__all__ = ["sample_seed", "seeded", "SeededDataset", "ResumableSampler"]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample's augmentation, from the run's seed, the epoch and the sample index."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)  # the CPU generator only: augmentation runs on the CPU (~1 us)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed Python, NumPy and torch's CPU generator for the block. In the main process (``workers=0``) the
    RNG states are given back afterwards (the training loop draws from them); a data-loader worker's RNGs
    serve nothing else, so there the ~100 us of saving NumPy's state is skipped."""
    if torch.utils.data.get_worker_info() is not None:
        _seed_all(seed)
        yield
        return
    py, npy, pt = random.getstate(), np.random.get_state(), torch.get_rng_state()
    _seed_all(seed)
    try:
        yield
    finally:
        random.setstate(py), np.random.set_state(npy), torch.set_rng_state(pt)


class SeededDataset(Dataset):
    """Wraps a data set so that item ``(index, seed)`` is ``dataset[index]`` drawn under ``seed``."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        with seeded(seed):
            return self.dataset[index]


class ResumableSampler(DistributedSampler):
    """torch's ``DistributedSampler`` (the same shuffle for a given seed and epoch on every process) that
    yields ``(index, per-sample seed)`` and can skip the samples of the batches already trained this epoch."""

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self._skip = 0

    def start_at(self, samples: int) -> None:
        """The next iteration starts after this process's first ``samples`` samples of the epoch."""
        self._skip = samples

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())[self._skip:]
        self._skip = 0
        return iter([(i, sample_seed(self.seed, self.epoch, i)) for i in indices])

    def __len__(self) -> int:
        return self.num_samples - self._skip
