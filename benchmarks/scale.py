"""How the costs before the first step grow with the data (issue 21): synthetic ImageFolder trees of small JPEGs
(10 k, 100 k and, with ``--sizes``, 1 M files), and for each size, 1 and 2 processes, three starts:

- ``fresh``: a new run on files never seen (empty cache),
- ``resume``: ``--resume`` of that run (it was stopped by SIGTERM right after its first step),
- ``second``: another new run on the same, unchanged files (the cache from the first),

the time from process start to the end of the first optimizer step, the image decodes before it (all processes),
the peak memory (VmHWM) of the main process, and each data-loader worker's memory at that moment (RSS, PSS and
USS: what it holds that no other process shares). Then, per size, each loader worker's USS after it has read the
name of every sample of its share (a full pass that decodes nothing: where a list of tuples is copied into the
worker page by page, PyTorch issue 13246), for timm's own reader (a list) and ours (arrays). And, once, a worker's
CPU time per image at 224 px with the paper's augmentation (decode, crop, flip, jitter, lighting, normalize) on
the CPU path and on the device path (uint8 out; the GPU finishes).

``--code DIR`` runs the same measurements against another checkout of the package (e.g. a ``git worktree`` of the
commit before the change): its numbers are the "before".

    python -m benchmarks.scale --sizes 10000,100000,1000000 --workdir /tmp/scale
    git worktree add /tmp/before a0baa1c && python -m benchmarks.scale --code /tmp/before --sizes 10000,100000 \\
        --out benchmarks/results/scale-before.json
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT, RESULTS_DIR, base_parser, write_result

CLASSES = 100

# Run inside each training process: time the first optimizer step, note the scan's decodes, measure memory,
# then stop the run the way a preemption does (SIGTERM: it saves a checkpoint, the next start resumes it).
DRIVER = textwrap.dedent(r"""
    import json, os, signal, sys, time
    started = float(os.environ["BENCH_STARTED"])
    out = sys.argv[1]
    import tricks_registry.data as data, tricks_registry.loop as loop
    data = getattr(data, "folders", data)  # where the scan is called (data/ is a package since issue 23)
    from tricks_registry.recipe import resolve
    from tricks_registry.train import train
    decodes = [0]
    if hasattr(data, "scan_files"):  # after: the shared, kept scan
        real_scan = data.scan_files
        def counted_scan(paths, root, check, **kw):
            def counting(path):
                decodes[0] += 1
                return check(path)
            return real_scan(paths, root, counting, **kw)
        data.scan_files = counted_scan
    else:  # before: every process decodes everything
        real_images = data.scan_images
        def counted_images(paths, *a, **kw):
            decodes[0] += len(paths)
            return real_images(paths, *a, **kw)
        data.scan_images = counted_images

    def memory(pid):
        fields = {}
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if v.strip().endswith("kB"):
                        fields[k] = int(v.split()[0]) * 1024
        except OSError:
            return None
        return {"rss": fields.get("Rss"), "pss": fields.get("Pss"),
                "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)}

    def hwm():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024

    real_step = loop.optimizer_step
    state = {"done": False}
    def first_step(**kw):
        result = real_step(**kw)
        if not state["done"]:
            state["done"] = True
            t = time.time() - started
            me = os.getpid()
            kids = []
            for task in os.listdir(f"/proc/{me}/task"):
                with open(f"/proc/{me}/task/{task}/children") as f:
                    kids += [int(p) for p in f.read().split()]
            rank = int(os.environ.get("RANK", "0"))
            with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
                json.dump({"first_step_s": t, "decodes": decodes[0], "main_peak_bytes": hwm(),
                           "workers": [memory(k) for k in kids]}, f)
            os.kill(me, signal.SIGTERM)  # a preemption: the loop saves, then stops
        return result
    loop.optimizer_step = first_step
    args = json.loads(sys.argv[2])
    recipe = resolve("resnet50d_cosine", args["overrides"])
    resume = args.get("resume")
    try:
        train(recipe, data_dir=args["data"], output=args["output"], device="cpu", progress=False,
              resume=resume)
    except Exception as err:
        if type(err).__name__ != "TrainingStopped":
            raise
""")

TOUCH = textwrap.dedent(r"""
    import json, os, sys
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Dataset
    root, which, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    from timm.data import create_dataset
    if which == "timm":
        reader = create_dataset("", root=root, search_split=False).reader
        name = lambda i: reader.samples[i][0]
    else:
        from tricks_registry.data import ImageFolderDataset
        ds = ImageFolderDataset(root)
        name = lambda i: ds.sample_name(int(ds.indices[i]))
        reader = ds
    class Names(Dataset):
        def __len__(self): return len(reader)
        def __getitem__(self, i): return len(name(i))
    def uss(pid):
        total = 0
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(("Private_Clean", "Private_Dirty")):
                    total += int(line.split()[1]) * 1024
        return total
    loader = DataLoader(Names(), batch_size=4096, num_workers=workers, persistent_workers=True)
    it = iter(loader)
    first = next(it)
    before = [uss(w.pid) for w in it._workers]
    for _ in it:
        pass
    after = [uss(w.pid) for w in it._workers]  # persistent workers: still there after the full pass
    print(json.dumps({"samples": len(reader), "worker_uss_after_first_batch": before,
                      "worker_uss_after_full_pass": after}))
""")

CPU_PER_IMAGE = textwrap.dedent(r"""
    import io, json, sys, time
    import numpy as np, torch
    from PIL import Image
    torch.set_num_threads(1)
    from tricks_registry.build import recipe_pipeline
    from tricks_registry.data import SeededDataset, decode_image, sample_seed
    from tricks_registry.recipe import resolve
    from tricks_registry.tasks.classification import train_transform
    recipe = resolve("resnet50d_all")
    full = train_transform(recipe, recipe_pipeline(recipe))
    split = None
    try:
        from tricks_registry.tricks.augmentations import split_for_device
        split = split_for_device(full)
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    jpegs = []
    for i in range(16):  # ImageNet-sized photos: smooth fields plus noise, 500 x 375
        base = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((500, 375), Image.BILINEAR)
        arr = np.clip(np.asarray(img, dtype=np.int16) + rng.integers(-20, 20, (375, 500, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO(); Image.fromarray(arr).save(buf, format="JPEG", quality=90); jpegs.append(buf.getvalue())
    def run(transform, n):
        t0 = time.process_time()
        for i in range(n):
            transform(decode_image(io.BytesIO(jpegs[i % len(jpegs)]), "x"))
        return (time.process_time() - t0) / n
    def decode_only(n):
        t0 = time.process_time()
        for i in range(n):
            decode_image(io.BytesIO(jpegs[i % len(jpegs)]), "x")
        return (time.process_time() - t0) / n
    n = int(sys.argv[1])
    arms = {"decode_ms": None, "cpu_path_ms": full, **({"device_path_ms": split[0]} if split is not None else {})}
    rounds = {k: [] for k in arms}
    for r in range(8):  # interleaved rounds: a slow minute of a shared machine hits every arm
        for name, transform in (arms.items() if r % 2 == 0 else reversed(list(arms.items()))):
            rounds[name].append(1e3 * (decode_only(n // 8) if transform is None else run(transform, n // 8)))
    out = {"images_per_round": n // 8, "rounds": 8, **{k: sorted(v)[len(v) // 2] for k, v in rounds.items()},
           "per_round": rounds,
           "bytes_to_device_per_image": {"cpu_path": 3 * 224 * 224 * 4, "device_path": 3 * 224 * 224 + 3 * 4}}
    print(json.dumps(out))
""")


def make_tree(root: Path, n: int) -> Path:
    """``n`` small JPEGs (90 % train, 10 % val) over :data:`CLASSES` classes; written from 64 encoded images,
    each file its own inode. Reused when the tree is already there."""
    import numpy as np
    from PIL import Image

    marker = root / ".complete"
    if marker.is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(64):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=85)
        blobs.append(buf.getvalue())
    n_val = n // 10
    for split, count in (("train", n - n_val), ("val", n_val)):
        per_class = count // CLASSES
        for c in range(CLASSES):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                (folder / f"n{c:08d}_{i:07d}.JPEG").write_bytes(blobs[(c * 7 + i) % len(blobs)])
    marker.write_text(f"{n}\n")
    return root


def start(code: Path, data: Path, output: Path, work: Path, procs: int, *, resume: str | None, cache: Path,
          port: int) -> dict[str, Any]:
    """One start of ``procs`` training processes; returns what each rank measured and the wall time."""
    work.mkdir(parents=True, exist_ok=True)
    overrides = ["model.name=resnet18_v1d", "data.input_size=32", "data.workers=2", "train.global_batch_size=64",
                 "train.epochs=1", "tricks.linear_warmup.epochs=0", "data.eval_crop_pct=1.0"]
    args = json.dumps({"overrides": overrides, "data": str(data), "output": str(output), "resume": resume})
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1", "TIMM_TRICKS_CACHE": str(cache),
           "BENCH_STARTED": repr(time.time())}
    if procs > 1:
        env.update(WORLD_SIZE=str(procs), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_WORLD_SIZE=str(procs))
    t0 = time.perf_counter()
    running = [subprocess.Popen([sys.executable, "-c", DRIVER, str(work), args], cwd=str(work),
                                env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for r in range(procs)]
    errors = [p.communicate(timeout=3600)[1] for p in running]
    wall = time.perf_counter() - t0
    ranks = []
    for r, p in enumerate(running):
        path = work / f"rank{r}.json"
        if not path.is_file():
            raise RuntimeError(f"rank {r} measured nothing (exit {p.returncode}): {errors[r][-3000:]}")
        ranks.append(json.loads(path.read_text()))
    return {"wall_s": wall, "first_step_s": max(x["first_step_s"] for x in ranks),
            "decodes": sum(x["decodes"] for x in ranks), "decodes_per_rank": [x["decodes"] for x in ranks],
            "main_peak_bytes": max(x["main_peak_bytes"] for x in ranks),
            "workers": [w for x in ranks for w in x["workers"] if w]}


def main() -> None:
    p = base_parser("scale", __doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000", help="files per tree, comma-separated")
    p.add_argument("--procs", default="1,2")
    p.add_argument("--workdir", default="/tmp/timm-tricks-scale", help="where the trees and runs go")
    p.add_argument("--code", default=str(REPO_ROOT), help="the checkout whose tricks_registry is measured")
    p.add_argument("--keep-trees", action="store_true", help="leave the JPEG trees (default: deleted at the end)")
    p.add_argument("--cpu-images", type=int, default=300)
    p.add_argument("--cpu-only", action="store_true",
                   help="measure only the worker CPU time per image, into the existing --out file")
    args = p.parse_args()
    started = time.perf_counter()
    code, work = Path(args.code).resolve(), Path(args.workdir)
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[str, Any] = {"code": str(code), "sizes": {}}
    port = 29700
    cpu = subprocess.run([sys.executable, "-c", CPU_PER_IMAGE, str(args.cpu_images)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(code)}, check=True)
    results["worker_cpu_per_image_224"] = json.loads(cpu.stdout.strip().splitlines()[-1])
    print("worker CPU per image:", results["worker_cpu_per_image_224"], flush=True)
    if args.cpu_only:
        previous = json.loads(Path(args.out).read_text())
        previous["worker_cpu_per_image_224"] = results["worker_cpu_per_image_224"]
        keep = {k: v for k, v in previous.items() if k not in ("benchmark", "created_utc", "command", "wall_s",
                                                                 "machine", "versions")}
        write_result("scale", keep, args.out, started=started)
        return
    for n in sizes:
        made = time.perf_counter()
        data = make_tree(work / f"tree-{n}", n)
        per_size: dict[str, Any] = {"tree_s": time.perf_counter() - made}
        for procs in [int(x) for x in args.procs.split(",")]:
            runs = work / f"runs-{n}-{procs}"
            cache = work / f"cache-{n}-{procs}"
            shutil.rmtree(runs, ignore_errors=True), shutil.rmtree(cache, ignore_errors=True)
            rows = {}
            port += 1
            rows["fresh"] = start(code, data, runs, work / f"m-{n}-{procs}-fresh", procs, resume=None, cache=cache,
                                  port=port)
            (run_dir,) = [d for d in runs.iterdir() if d.is_dir()]
            port += 1
            rows["resume"] = start(code, data, runs, work / f"m-{n}-{procs}-resume", procs, resume=str(run_dir),
                                   cache=work / f"cache-empty-{n}-{procs}", port=port)
            port += 1
            rows["second"] = start(code, data, runs, work / f"m-{n}-{procs}-second", procs, resume=None, cache=cache,
                                   port=port)
            per_size[f"{procs}_process"] = rows
            print(n, procs, {k: (round(v["first_step_s"], 1), v["decodes"]) for k, v in rows.items()}, flush=True)
        touch = {}
        for which in ("timm", "ours"):
            done = subprocess.run([sys.executable, "-c", TOUCH, str(data / "train"), which, "2"], capture_output=True,
                                  text=True, env={**os.environ, "PYTHONPATH": str(code)})
            touch[which] = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {
                "error": done.stderr[-500:]}
        per_size["worker_memory_full_pass"] = touch
        print(n, "worker USS after a full pass:", {k: v.get("worker_uss_after_full_pass") for k, v in touch.items()},
              flush=True)
        results["sizes"][str(n)] = per_size
        write_result("scale", results, args.out, started=started)
        if not args.keep_trees:
            shutil.rmtree(data, ignore_errors=True)
        for leftover in work.glob(f"*-{n}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
    write_result("scale", results, args.out, started=started)


if __name__ == "__main__":
    main()
