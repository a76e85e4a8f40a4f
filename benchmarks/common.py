"""What every benchmark shares: the machine and versions, the command line, JSON results written atomically,
interleaved A/B timing with its statistics, FLOP counting (``torch.utils.flop_counter``) and peak FLOP/s.

Ratios, not absolute times, are the figures to quote: each benchmark runs its arms in alternating rounds
(A B, B A, A B ...) so that a slow minute of a shared machine hits both, and reports the per-round ratio's
median and spread.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
#: the CIFAR-10 JPEG copy beside the project (see ../shared/data/README.md)
CIFAR_TAR = Path(os.environ.get("TIMM_TRICKS_CIFAR", REPO_ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz"))

# Dense (no sparsity) peak FLOP/s of accelerators, from the vendors' data sheets; matched on the device name.
# fp32 convolutions run as TF32 on Ampere and later (torch's cudnn.allow_tf32 defaults to True).
_GPU_PEAKS: list[tuple[tuple[str, ...], dict[str, float], str]] = [
    (("H200",), {"float32": 494.7e12, "bfloat16": 989.4e12, "float16": 989.4e12}, "NVIDIA H200 data sheet (TF32/BF16/FP16 dense)"),
    (("H100", "PCIe"), {"float32": 378e12, "bfloat16": 756e12, "float16": 756e12}, "NVIDIA H100 PCIe data sheet (TF32/BF16/FP16 dense)"),
    (("H100",), {"float32": 494.7e12, "bfloat16": 989.4e12, "float16": 989.4e12}, "NVIDIA H100 SXM data sheet (TF32/BF16/FP16 dense)"),
    (("A100",), {"float32": 156e12, "bfloat16": 312e12, "float16": 312e12}, "NVIDIA A100 data sheet (TF32/BF16/FP16 dense)"),
    (("V100",), {"float32": 15.7e12, "float16": 125e12}, "NVIDIA V100 SXM2 data sheet (FP32/FP16 tensor core)"),
]


# ---------------------------------------------------------------------------------------------------------
# command line, machine, versions, results
def base_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The options every benchmark has: where the JSON goes, the device, the torch threads, the seed."""
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=description)
    p.add_argument("--out", default=str(RESULTS_DIR / f"{name}.json"),
                   help="the JSON result file (default: %(default)s)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="default: %(default)s")
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads (default 0: torch's own choice, the number of cores)")
    p.add_argument("--seed", type=int, default=0)
    return p


def add_ab_args(p: argparse.ArgumentParser, *, rounds: int, steps: int, warmup: int) -> None:
    """The options of an interleaved A/B step benchmark: rounds, timed and untimed steps per arm, the peak."""
    p.add_argument("--rounds", type=int, default=rounds, help="A/B rounds (default: %(default)s)")
    p.add_argument("--steps", type=int, default=steps, help="timed steps per arm per round (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=warmup, help="untimed steps per arm first (default: %(default)s)")
    p.add_argument("--no-peak", action="store_true", help="skip measuring the CPU's GEMM ceiling")
    p.add_argument("--no-progress", action="store_true")


def setup(args: argparse.Namespace) -> torch.device:
    """Apply ``--threads`` and ``--seed``; check ``--device``; return it."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    import numpy as np
    import random
    np.random.seed(args.seed), random.seed(args.seed)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(args.device)


def command_line() -> str:
    """The command that made this result, as one would type it from the repository root."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    prog = f"python -m {spec.name}" if spec is not None and spec.name else f"python {sys.argv[0]}"
    return " ".join([prog, *map(shlex.quote, sys.argv[1:])])


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """CPU model and cores, torch threads, load average (a busy machine shows here), GPU if used."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
                      if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        cpu, flags = fields.get("model name", cpu), set(fields.get("flags", "").split())
    except OSError:
        pass
    info: dict[str, Any] = {
        "platform": platform.platform(), "cpu": cpu, "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_features": sorted(f for f in flags if f in {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16",
                                                        "amx_tile", "avx512_vnni", "avx_vnni"}),
        "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        info["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                       "memory_gib": round(props.total_memory / 2**30, 1), "count": torch.cuda.device_count(),
                       "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    return info


def versions() -> dict[str, Any]:
    """Python and library versions, and the repository's commit (with a flag when the tree has edits)."""
    import numpy
    import timm
    import torchvision

    try:
        from tricks_registry import __version__ as ours
    except ImportError:  # pragma: no cover - the package is installed for every benchmark
        ours = None
    out: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "torchvision": torchvision.__version__, "timm": timm.__version__,
                           "numpy": numpy.__version__, "timm-tricks": ours}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        out["git_commit"] = commit or None
        out["git_dirty"] = bool(dirty) if commit else None
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = None
    return out


def _finite(obj: Any) -> Any:
    """NaN/inf become None (JSON has no NaN); tuples become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_result(name: str, payload: Mapping[str, Any], path: str | os.PathLike | None = None, *,
                 device: torch.device | str = "cpu", started: float | None = None) -> Path:
    """Write ``payload`` with the benchmark's name, date, command, machine and versions as strict JSON,
    atomically; returns the path."""
    from tricks_registry.checkpoint import atomic_write_text

    path = Path(path) if path else RESULTS_DIR / f"{name}.json"
    doc = {"benchmark": name, "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "command": command_line(), "wall_s": round(time.perf_counter() - started, 1) if started else None,
           "machine": machine_info(device), "versions": versions(), **payload}
    text = json.dumps(_finite(doc), indent=2, allow_nan=False) + "\n"
    json.loads(text)  # strict JSON, or fail here rather than leave a broken file
    atomic_write_text(path, text)
    print(f"wrote {path}")
    return path


# ---------------------------------------------------------------------------------------------------------
# statistics and interleaved timing
def summary(values: Sequence[float]) -> dict[str, Any]:
    """n, mean, median, sample standard deviation, min, max."""
    vals = [float(v) for v in values]
    if not vals:
        return {"n": 0, "mean": None, "median": None, "stdev": None, "min": None, "max": None}
    return {"n": len(vals), "mean": statistics.fmean(vals), "median": statistics.median(vals),
            "stdev": statistics.stdev(vals) if len(vals) > 1 else None, "min": min(vals), "max": max(vals)}


def ratio_summary(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, Any]:
    """Per-round ratios ``numerator[i] / denominator[i]`` (paired rounds) and their summary."""
    if len(numerator) != len(denominator):
        raise ValueError("paired rounds need the same number of measurements")
    ratios = [a / b for a, b in zip(numerator, denominator)]
    return {"per_round": ratios, **summary(ratios)}


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work (no-op on CPU) so that wall time measures the work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved(arms: Mapping[str, Callable[[], float]], rounds: int, *, progress: bool = True,
                desc: str = "rounds") -> dict[str, list[float]]:
    """Call every arm once per round, the order reversed every other round (A B, B A, ...).

    Each arm runs its own batch of work and returns the seconds it took (measured by the arm, after its
    warm-up and with the device synchronised). Returns ``{arm: [seconds per round]}``.
    """
    from tqdm import tqdm

    names = list(arms)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in tqdm(range(rounds), desc=desc, disable=not progress, leave=False):
        for n in (names if r % 2 == 0 else names[::-1]):
            out[n].append(float(arms[n]()))
    return out


@contextlib.contextmanager
def timer(device: torch.device | str) -> Iterator[list[float]]:
    """``with timer(dev) as t: ...`` then ``t[0]`` is the elapsed seconds (device synchronised)."""
    sync(device)
    box: list[float] = []
    start = time.perf_counter()
    try:
        yield box
    finally:
        sync(device)
        box.append(time.perf_counter() - start)


def step_rounds(runners: Mapping[str, Any], images: torch.Tensor, labels: torch.Tensor, args: argparse.Namespace,
                device: torch.device | str, desc: str) -> dict[str, list[float]]:
    """The A/B step benchmark (options of :func:`add_ab_args`): ``args.warmup`` untimed steps of every runner,
    then :func:`interleaved` rounds of ``args.steps`` calls of ``runner.step`` on the same in-memory batch each,
    timed with the device synchronised. Returns ``{arm: [seconds per round]}``."""
    for runner in runners.values():
        for _ in range(args.warmup):
            runner.step(images.clone(), labels)

    def timed(runner: Any) -> Callable[[], float]:
        def go() -> float:
            with timer(device) as t:
                for _ in range(args.steps):
                    runner.step(images.clone(), labels)
            return t[0]
        return go

    return interleaved({name: timed(r) for name, r in runners.items()}, args.rounds,
                       progress=not args.no_progress, desc=desc)


# ---------------------------------------------------------------------------------------------------------
# FLOPs and peaks
def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs (multiply-add = 2) that ``torch.utils.flop_counter.FlopCounterMode`` counts while ``fn`` runs
    (convolutions and matmuls, forward and backward; element-wise ops and pooling are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _on_meta(model: torch.nn.Module) -> torch.nn.Module:
    from tricks_registry.distributed import unwrap_model

    return copy.deepcopy(unwrap_model(model)).to("meta")


def train_flops_per_image(model: torch.nn.Module, input_size: int, *, teacher: torch.nn.Module | None = None,
                          batch: int = 2) -> dict[str, float]:
    """FLOPs per image of one training step (forward + backward of ``model``; forward of ``teacher``),
    counted on a meta-device copy, so it costs no compute."""
    student = _on_meta(model).train()
    x = torch.empty(batch, 3, input_size, input_size, device="meta")

    def step() -> None:
        student(x).float().sum().backward()

    out = {"train_step": count_flops(step) / batch}
    out["forward"] = count_flops(lambda: student(x)) / batch
    if teacher is not None:
        t = _on_meta(teacher).eval()
        with torch.no_grad():
            out["teacher_forward"] = count_flops(lambda: t(x)) / batch
    return out


def gpu_peak(device: torch.device | str, dtype: str) -> tuple[float | None, str | None]:
    """The data-sheet peak FLOP/s of this GPU for ``dtype`` (float32 = TF32 on Ampere+), if known."""
    name = torch.cuda.get_device_name(torch.device(device))
    for keys, peaks, source in _GPU_PEAKS:
        if all(k in name for k in keys):
            return peaks.get(dtype), f"{source}; device '{name}'"
    return None, f"no data-sheet peak known for '{name}'"


def measured_gemm_peak(device: torch.device | str, dtype: torch.dtype, *, n: int = 2048,
                       seconds: float = 1.0) -> float:
    """Achieved FLOP/s of a large square ``torch.mm`` on this machine: the practical ceiling for dense
    compute (on a CPU the data-sheet peak depends on clocks and vector units a VM does not report)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(2):
        torch.mm(a, b)
    reps = 0
    sync(device)
    start = time.perf_counter()
    while True:
        torch.mm(a, b)
        reps += 1
        sync(device)
        if time.perf_counter() - start >= seconds:
            break
    return 2 * n**3 * reps / (time.perf_counter() - start)


def peak_for(device: torch.device | str, dtype: torch.dtype, *, measure_cpu: bool = True) -> dict[str, Any]:
    """The peak to compare achieved FLOP/s with: a GPU's data-sheet figure, or the measured GEMM rate on a CPU."""
    name = str(dtype).replace("torch.", "")
    if torch.device(device).type == "cuda":
        value, source = gpu_peak(device, name)
        return {"flops_per_s": value, "source": source, "dtype": name}
    if not measure_cpu:
        return {"flops_per_s": None, "source": "not measured (--no-peak)", "dtype": name}
    value = measured_gemm_peak(device, dtype)
    return {"flops_per_s": value, "dtype": name,
            "source": f"measured here: torch.mm 2048x2048 {name} with {torch.get_num_threads()} thread(s) "
                      "(a practical ceiling, not a data-sheet peak)"}


def throughput(images_per_s: Sequence[float], flops_per_image: float | None,
               peak: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Images/s statistics with the achieved GFLOP/s and, where a peak is known, the fraction of it."""
    stats = summary(images_per_s)
    out: dict[str, Any] = {"images_per_s": stats}
    if flops_per_image and stats["median"] is not None:
        achieved = stats["median"] * flops_per_image
        out["gflop_per_image"] = flops_per_image / 1e9
        out["achieved_gflop_per_s"] = achieved / 1e9
        if peak and peak.get("flops_per_s"):
            out["fraction_of_peak"] = achieved / peak["flops_per_s"]
            out["peak"] = dict(peak)
    return out


# ---------------------------------------------------------------------------------------------------------
# data
def cifar_dir(arg: str | None) -> Path:
    """An ImageFolder root (``train/`` and ``test/`` or ``val/``): ``arg`` when it is a folder, else the CIFAR-10
    archive (``arg`` or ``$TIMM_TRICKS_CIFAR``) unpacked once into ``~/.cache/timm-tricks/cifar10-jpg``."""
    if arg and Path(arg).is_dir():
        return Path(arg)
    tar = Path(arg) if arg else CIFAR_TAR
    if not tar.is_file():
        raise SystemExit(f"no data: {tar} is neither a folder nor the CIFAR-10 archive; give --data-dir DIR "
                         "(an ImageFolder tree) or the path of cifar10-jpg.tar.gz")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "timm-tricks" / "cifar10-jpg"
    done = cache / ".complete"
    if not done.is_file():
        from tqdm import tqdm

        cache.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tar, "r:gz") as archive:
            members = [m for m in archive.getmembers() if m.isfile() and m.name.endswith(".jpg")]
            for m in tqdm(members, desc=f"unpacking {tar.name}", leave=False):
                parts = Path(m.name).parts[-3:]  # split/class/file, whatever the archive's top folder
                target = cache.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.extractfile(m).read())
        done.write_text(str(tar) + "\n")
    return cache


def data_root(arg: str | None, scratch: Path, per_class: int = 64) -> Path:
    """``--data-dir``: ``synthetic`` makes random JPEGs under ``scratch`` (``per_class`` training and a quarter
    of it validation images per class; for a machine without the data), anything else goes to :func:`cifar_dir`."""
    if arg == "synthetic":
        return synthetic_image_folder(scratch / "synthetic",
                                      per_class={"train": per_class, "val": max(1, per_class // 4)})
    return cifar_dir(arg)


def synthetic_image_folder(dest: Path, per_class: Mapping[str, int], *, classes: int = 10, size: int = 32,
                           seed: int = 0) -> Path:
    """An ImageFolder of random-noise JPEGs (``size`` px, like CIFAR-10's): timing data, not learnable."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for c in range(classes):
            folder = dest / split / f"class{c:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:04d}.jpg")
    return dest


def subset_folder(root: Path, dest: Path, per_class: Mapping[str, int]) -> Path:
    """An ImageFolder at ``dest`` holding the first N files (by name) of every class of each split of
    ``root``, as symlinks: the same small, fixed, class-balanced data for every trainer compared."""
    from tricks_registry.data import find_split

    for split, n in per_class.items():
        src = find_split(root, split)
        for cls in sorted(p for p in src.iterdir() if p.is_dir()):
            out = dest / split / cls.name
            out.mkdir(parents=True, exist_ok=True)
            for f in sorted(cls.iterdir())[:n]:
                link = out / f.name
                if not link.exists():
                    link.symlink_to(f.resolve())
    return dest


def run_logged(cmd: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
               timeout: float | None = None) -> float:
    """Run ``cmd``, its stdout and stderr to ``log``; returns the wall seconds; fails with the log's tail."""
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(list(cmd), stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                              cwd=cwd, timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise SystemExit(f"command failed ({proc.returncode}): {shlex.join(cmd)}\n--- {log} (tail) ---\n{tail}")
    return wall
