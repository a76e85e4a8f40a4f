"""Bad data (issue 5): unreadable and truncated images are named before training starts (or left out and counted
with --skip-bad-images); grayscale, palette, RGBA, CMYK and 16-bit images become RGB; an empty class folder or a
class missing from the validation split is a clear error. In sources whose images are not files (a .tar split, a
webdataset stream) a bad image is named when training reads it (``tar:member``, or the stream and timm's reason),
and --skip-bad-images goes on without it."""
from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tricks_registry.cli import main
from tricks_registry.errors import DataError
from tricks_registry.data import BadImageError, ImageFolderDataset, image_folder_datasets, open_datasets, scan_images, \
    to_rgb

pytestmark = pytest.mark.slow

TINY = ["--set=model.name=resnet18_v1d", "--set=data.input_size=32", "--set=data.eval_crop_pct=1.0",
        "--set=data.workers=0", "--set=train.epochs=1", "--set=train.global_batch_size=20"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test here on one intra-op thread (conftest's ``one_torch_thread``)."""


@pytest.fixture
def data(cifar_subset, tmp_path) -> Path:
    """A private copy of the CIFAR-10 subset that a test may spoil."""
    return Path(shutil.copytree(cifar_subset, tmp_path / "data"))


def spoil(data: Path) -> tuple[Path, Path]:
    """One truncated JPEG (the first half of a real one) and one file that is no image at all."""
    real = sorted((data / "train" / "cat").iterdir())[0]
    truncated = data / "train" / "cat" / "truncated.jpg"
    truncated.write_bytes(real.read_bytes()[: real.stat().st_size // 2])
    garbage = data / "val" / "dog" / "garbage.jpg"
    garbage.write_bytes(b"this is not a JPEG" * 20)
    return truncated, garbage


def test_modes_are_converted_to_rgb_like_pil_does():
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    gray = rgb.convert("L")
    cases = {
        "L": (gray, np.repeat(np.asarray(gray)[..., None], 3, axis=2)),
        "P": (rgb.convert("P"), np.asarray(rgb.convert("P").convert("RGB"))),
        "RGBA": (rgb.convert("RGBA"), np.asarray(rgb)),  # alpha dropped, colour kept
        "CMYK": (rgb.convert("CMYK"), np.asarray(rgb.convert("CMYK").convert("RGB"))),
        "1": (gray.convert("1"), np.asarray(gray.convert("1").convert("RGB"))),
    }
    for mode, (img, expected) in cases.items():
        out = to_rgb(img)
        assert out.mode == "RGB" and out.size == (8, 8), mode
        np.testing.assert_array_equal(np.asarray(out), expected, err_msg=mode)
    # palette with a transparent index goes through RGBA (PIL warns otherwise)
    pal = rgb.convert("P")
    pal.info["transparency"] = 0
    np.testing.assert_array_equal(np.asarray(to_rgb(pal)), np.asarray(pal.convert("RGBA").convert("RGB")))
    # 16-bit grayscale is scaled to 8 bits, not clipped to white
    deep = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    assert deep.mode.startswith("I")
    np.testing.assert_array_equal(np.asarray(to_rgb(deep))[0, :, 0], [0, 128, 255])


def test_odd_modes_in_the_data_train_fine(data, tmp_path):
    for i, (mode, ext) in enumerate((("L", "jpg"), ("P", "png"), ("RGBA", "png"), ("CMYK", "jpg"))):
        src = sorted((data / "train" / "bird").iterdir())[i]
        Image.open(src).convert(mode).save(src.with_suffix(f".{mode}.{ext}"))
        src.unlink()
    ds = ImageFolderDataset(data / "train")
    modes = {Path(p).name.split(".")[-2]: ds[i][0] for i, (p, _) in enumerate(ds.samples) if "bird" in p
             and Path(p).name.split(".")[-2] in ("L", "P", "RGBA", "CMYK")}
    assert sorted(modes) == ["CMYK", "L", "P", "RGBA"] and all(img.mode == "RGB" for img in modes.values())
    assert main(["train", "--recipe", "resnet50_baseline", "--data-dir", str(data), "--output", str(tmp_path / "o"),
                 "--device", "cpu", "--no-progress", "--set=train.lr=0.01", *TINY]) == 0


def test_a_bad_image_stops_the_run_before_it_starts_naming_it(data, tmp_path, capsys):
    truncated, garbage = spoil(data)
    rc = main(["train", "--recipe", "resnet50_baseline", "--data-dir", str(data), "--output", str(tmp_path / "o"),
               "--device", "cpu", "--no-progress", "--set=train.lr=0.01", *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert "2 unreadable image(s)" in err and str(truncated) in err and str(garbage) in err
    assert "truncated" in err and "--skip-bad-images" in err
    assert not (tmp_path / "o").exists()  # nothing was started


def test_skip_bad_images_leaves_them_out_and_counts_them(data, tmp_path):
    truncated, garbage = spoil(data)
    assert main(["train", "--recipe", "resnet50_baseline", "--data-dir", str(data), "--output", str(tmp_path / "o"),
                 "--device", "cpu", "--no-progress", "--skip-bad-images", "--set=train.lr=0.01", *TINY]) == 0
    (run_dir,) = (tmp_path / "o").iterdir()
    listed = [line.split("\t")[0] for line in (run_dir / "bad_images.txt").read_text().splitlines()]
    assert sorted(listed) == sorted([str(truncated), str(garbage)])
    assert json.loads((run_dir / "summary.json").read_text())["bad_images_left_out"] == 2


def test_without_the_scan_a_bad_image_read_in_training_names_its_path(data, tmp_path, capsys):
    truncated, _ = spoil(data)
    (data / "val" / "dog" / "garbage.jpg").unlink()
    for workers in (0, 2):
        rc = main(["train", "--recipe", "resnet50_baseline", "--data-dir", str(data), "--output",
                   str(tmp_path / f"o{workers}"), "--device", "cpu", "--no-progress", "--no-scan",
                   "--set=train.lr=0.01", *TINY, f"--set=data.workers={workers}"])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1, err
        assert err.startswith(f"error: data: {truncated}: unreadable image") and "--skip-bad-images" in err, err


def test_scan_images_reports_each_bad_file(data):
    truncated, garbage = spoil(data)
    paths = sorted(str(p) for p in data.rglob("*.jpg"))
    bad = dict(scan_images(paths, workers=2, progress=False))
    assert sorted(bad) == sorted([str(truncated), str(garbage)])
    with pytest.raises(BadImageError, match=str(truncated)):
        ImageFolderDataset(data / "train")[[p for p, _ in ImageFolderDataset(data / "train").samples].index(
            str(truncated))]


def test_an_empty_class_folder_is_an_error(data):
    (data / "train" / "zebra").mkdir()
    (data / "val" / "zebra").mkdir()
    with pytest.raises(DataError, match=r"class folder\(s\) zebra in .*train hold no images"):
        image_folder_datasets(data, "train", "val")


def test_a_class_missing_from_val_is_an_error(data):
    shutil.rmtree(data / "val" / "frog")
    with pytest.raises(DataError, match=r"different classes \(missing from .*val: frog\)"):
        image_folder_datasets(data, "train", "val")
    (data / "val" / "frog").mkdir()
    with pytest.raises(DataError, match=r"frog in .*val hold no images"):
        image_folder_datasets(data, "train", "val")


def test_a_missing_split_names_each_folder_looked_for_once(tmp_path: Path):
    from tricks_registry.data import find_split

    (tmp_path / "val").mkdir()
    with pytest.raises(DataError, match=r"no 'train' folder in .* \(looked for train, training\);"):
        find_split(tmp_path, "train")
    assert find_split(tmp_path, "val") == tmp_path / "val"


def as_tars(data: Path, out: Path) -> Path:
    """Each split of the folder tree as ``<split>.tar`` of ``<class>/<image>`` members."""
    out.mkdir()
    for split in ("train", "val"):
        with tarfile.open(out / f"{split}.tar", "w") as tar:
            for path in sorted((data / split).rglob("*.jpg")):
                tar.add(path, arcname=f"{path.parent.name}/{path.name}")
    return out


def test_in_a_tar_split_a_bad_image_read_in_training_names_its_member(data, tmp_path, capsys):
    truncated, garbage = spoil(data)
    garbage.unlink()
    sorted((data / "train" / "cat").iterdir())[1].unlink()  # 120 training images: every one is read in epoch 1
    tars = as_tars(data, tmp_path / "tars")
    args = ["train", "--recipe", "resnet50_baseline", "--data-dir", str(tars), "--device", "cpu", "--no-progress",
            "--set=train.lr=0.01", *TINY]
    rc = main([*args, "--output", str(tmp_path / "o1")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: data: {tars / 'train.tar'}:cat/truncated.jpg: unreadable image"), err
    assert "--skip-bad-images" in err
    assert main([*args, "--output", str(tmp_path / "o2"), "--skip-bad-images"]) == 0  # the next good image instead


def test_in_a_webdataset_stream_a_bad_image_stops_it_or_is_skipped(data, tmp_path):
    import webdataset as wds

    truncated, garbage = spoil(data)
    root = tmp_path / "wds"
    root.mkdir()
    splits = {}
    for split in ("train", "val"):
        files = sorted((data / split).rglob("*.jpg"))
        classes = sorted({p.parent.name for p in files})
        with wds.TarWriter(str(root / f"{split}.tar")) as sink:
            for i, path in enumerate(files):
                sink.write({"__key__": f"{i:06d}", "jpg": path.read_bytes(), "cls": str(classes.index(path.parent.name))})
        splits[split] = {"name": split, "num_samples": len(files), "filenames": [f"{split}.tar"],
                         "shard_lengths": [len(files)]}
    (root / "_info.json").write_text(json.dumps({"classes": classes, "splits": splits}))
    train, _, _ = open_datasets("wds/bad", root, "train", "val", progress=False)
    train.configure(batch_size=1, workers=0, rank=0, world_size=1, seed=0)
    train.set_epoch(0)
    with pytest.raises(BadImageError, match=r"wds/bad:train: a sample of worker 0's stream is unreadable "
                                            r"\(Handling webdataset error"):
        list(train)
    train, _, _ = open_datasets("wds/bad", root, "train", "val", skip_bad=True, progress=False)
    train.configure(batch_size=1, workers=0, rank=0, world_size=1, seed=0)
    train.set_epoch(0)
    assert len(list(train)) == len(train) == 121  # timm fills the epoch's count (the bad one skipped)
