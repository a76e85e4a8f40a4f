"""Iterable sources (``wds/``, ``hfids/``) resumed by count: the training split as a resumable stream
(:class:`StreamingSource`, read through :class:`StreamLoader`) and the validation split (:class:`EvalStream`);
a sample timm's webdataset reader could not read stops the stream, or with ``skip_bad`` is left out."""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset

from ..errors import DataError
from .images import DECODE_ERRORS, BadImageError, to_rgb
from .sampling import sample_seed, seeded
from .spec import first_line

__all__ = ["StreamingSource", "StreamLoader", "EvalStream"]


class _StreamErrors(logging.Filter):
    """Notes the samples timm's webdataset reader could not read (it logs them and goes on)."""

    def __init__(self, show: bool) -> None:
        super().__init__()
        self.show = show
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "webdataset error" not in message:
            return True
        self.messages.append(message)
        return self.show  # timm's warning, when the stream goes on without the sample (--skip-bad-images)


@contextlib.contextmanager
def _noting_stream_errors(show: bool) -> Iterator[_StreamErrors]:
    logger = logging.getLogger("timm.data.readers.reader_wds")
    errors = _StreamErrors(show)
    logger.addFilter(errors)
    try:
        yield errors
    finally:
        logger.removeFilter(errors)


class StreamingSource(IterableDataset):
    """The training split of an iterable source (``wds/``, ``hfids/``): timm's ``IterableImageDataset`` in
    training mode (shards shuffled and split over processes and data-loader workers, a shuffle buffer), made
    resumable. It has the loop's sampler interface: :meth:`set_epoch`, :meth:`start_at`, ``len()``.

    What a resume guarantees: an epoch's order is a function of (seed, epoch, processes, data-loader workers,
    batch size) alone: each epoch builds a fresh timm data set seeded from (seed, epoch), and :class:`StreamLoader`
    seeds the workers from (seed, epoch). A resume that starts after the first ``k`` samples of this process's
    epoch skips exactly those ``k`` by count (each worker drops the whole batches it had delivered, before any
    augmentation; :class:`StreamLoader` drops the rest, at most ``workers - 1`` batches), so the first sample after
    a resume is the ``(k+1)``-th of that epoch's order for this process and the rest of the epoch is what the run
    would have read, each sample augmented under the same seed: with the same processes and workers, a resumed run
    ends with the weights of one never stopped. The skipped samples are still read and decoded (a stream cannot
    seek).

    ``make(seed, batch_size)`` builds the timm data set (it must be picklable: the workers get a copy)."""

    def __init__(self, make: Callable[..., Any], *, source: str, classes: Sequence[str], num_samples: int,
                 skip_bad: bool = False) -> None:
        self.make = make
        self.source = source
        self.classes = list(classes)
        self.num_samples = num_samples  # the whole split
        self.skip_bad = skip_bad
        self.transform: Callable[[Image.Image], Any] | None = None
        self.batch_size, self.workers, self.rank, self.world_size, self.seed = 1, 0, 0, 1, 0
        self.epoch = 0
        self._length = num_samples
        self._skip_batches = 0
        self._epoch_data: Any = None
        self._epoch_fresh = False

    def configure(self, *, batch_size: int, workers: int, rank: int, world_size: int, seed: int) -> None:
        """Set the loader's batch size and workers and the run's seed and processes (before the first epoch):
        timm rounds each worker's share up to whole batches, which gives ``len()``."""
        self.batch_size, self.workers, self.rank, self.world_size, self.seed = batch_size, workers, rank, world_size, seed
        data = self._build(0)
        shards = getattr(getattr(data.reader, "split_info", None), "filenames", None)  # wds: timm's split info
        readers = world_size * max(1, workers)
        if shards is not None and len(shards) < readers:
            raise DataError(f"data: {self.source} has {len(shards)} shard(s) for {world_size} process(es) x "
                            f"{max(1, workers)} data-loader worker(s): each needs a shard of its own; lower "
                            "data.workers or write more, smaller shards")
        self._length = len(data)

    def _build(self, epoch: int) -> Any:
        data = self.make(seed=sample_seed(self.seed, epoch, -1) % 2**31, batch_size=self.batch_size)
        data.set_epoch(epoch)
        data.set_loader_cfg(num_workers=self.workers)
        return data

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``: a fresh timm data set seeded from (seed, epoch) (the workers get a copy)."""
        self.epoch = epoch
        self._epoch_data, self._epoch_fresh = self._build(epoch), True

    def start_at(self, samples: int) -> None:
        """The next iteration starts after this process's first ``samples`` samples of the epoch (whole
        batches: the loop resumes at an optimizer step)."""
        if samples % self.batch_size:
            raise ValueError(f"start_at({samples}): not a whole number of batches of {self.batch_size}")
        self._skip_batches = samples // self.batch_size

    @property
    def skip_batches(self) -> int:
        """Batches of this epoch already trained (set by :meth:`start_at`; :class:`StreamLoader` reads it)."""
        return self._skip_batches

    def __len__(self) -> int:
        """Samples per epoch for this process (timm's count: the split over processes and workers, each
        worker's share rounded up to whole batches)."""
        return self._length

    def __iter__(self) -> Iterator[tuple[Any, int]]:
        # everything the stream needs is read now: in the main process (workers=0) the generator below runs
        # later, after StreamLoader has reset the skip
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        data = self._epoch_data
        if data is None or (info is None and not self._epoch_fresh):  # iterated again in the main process
            data = self._build(self.epoch)
        if info is None:
            self._epoch_fresh = False
        skip = (self._skip_batches // workers) * self.batch_size
        return self._stream(data, worker, workers, skip, self.epoch, self.transform)

    def _stream(self, data: Any, worker: int, workers: int, skip: int, epoch: int,
                transform: Callable[[Image.Image], Any] | None) -> Iterator[tuple[Any, int]]:
        with _noting_stream_errors(show=self.skip_bad) as errors:
            samples = iter(data)
            position = 0
            while True:
                try:
                    img, target = next(samples)
                except StopIteration:
                    break
                except RuntimeError as err:  # timm: e.g. more workers than the stream has shards
                    raise DataError(f"data: {self.source}: {first_line(err)}") from None
                except DECODE_ERRORS as err:  # hfids: the datasets library decodes, and a stream cannot skip
                    raise BadImageError(f"{self.source}: sample {position} of worker {worker}'s stream is unreadable "
                                        f"({first_line(err)}); the stream cannot go on without it: fix the data, "
                                        "or read it by index (hfds/) where --skip-bad-images can leave it out") from None
                if errors.messages and not self.skip_bad:
                    raise BadImageError(f"{self.source}: a sample of worker {worker}'s stream is unreadable "
                                        f"({errors.messages[0]})")
                if position >= skip:
                    # the same seed for the same place in the epoch's order, resumed or not
                    index = (position * workers + worker) * self.world_size + self.rank
                    img = to_rgb(img) if isinstance(img, Image.Image) else img
                    if transform is not None:
                        with seeded(sample_seed(self.seed, epoch, index)):
                            img = transform(img)
                    yield img, int(target)
                position += 1


class StreamLoader:
    """The training loader of a :class:`StreamingSource`: a ``DataLoader`` (no persistent workers: each epoch's
    fresh data set must reach them) whose workers are seeded from (seed, epoch), and which drops the batches of a
    resumed epoch that the workers' own skip leaves (fewer than ``workers``). ``sampler`` is the source (the loop
    calls its ``set_epoch`` and ``start_at``); ``len()`` is the micro-batches of an epoch."""

    def __init__(self, source: StreamingSource, *, batch_size: int, num_workers: int, rank: int, world_size: int,
                 seed: int, **loader_args: Any) -> None:
        source.configure(batch_size=batch_size, workers=num_workers, rank=rank, world_size=world_size, seed=seed)
        self.sampler = source
        self.generator = torch.Generator()
        self.loader = DataLoader(source, batch_size=batch_size, num_workers=num_workers, drop_last=True,
                                 generator=self.generator, persistent_workers=False, **loader_args)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        source = self.sampler
        self.generator.manual_seed(sample_seed(source.seed, source.epoch, -2))  # the workers' seeds, per epoch
        left = source.skip_batches % max(1, self.loader.num_workers)
        batches = iter(self.loader)  # the workers start here, with this epoch's data set and skip
        source.start_at(0)
        try:
            for _ in range(left):  # whole rounds over the workers were skipped inside them; the rest here
                next(batches, None)
            yield from batches
        except DataError as err:  # from a worker it carries the worker's traceback: its last line is the message
            last = str(err).strip().splitlines()[-1]
            raise type(err)(last.split(f"{type(err).__name__}: ", 1)[-1]) from None


class EvalStream(IterableDataset):
    """The validation split of an iterable source: timm's ``IterableImageDataset`` (no shuffling; its shards split
    over processes and workers) with images converted by :func:`to_rgb` and this data set's ``transform``."""

    def __init__(self, data: Any, *, source: str) -> None:
        self.data = data
        self.source = source
        self.transform: Callable[[Image.Image], Any] | None = None

    def configure(self, *, workers: int) -> None:
        self.data.set_loader_cfg(num_workers=workers)

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[tuple[Any, int]]:
        for img, target in self.data:
            img = to_rgb(img) if isinstance(img, Image.Image) else img
            yield (self.transform(img) if self.transform is not None else img), int(target)
