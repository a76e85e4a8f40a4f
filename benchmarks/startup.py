"""Start-up of the command line: how long a command that only prints takes, and what it imports.

For each command (``tricks --help``, ``tricks --version``, ``tricks recipe list``, ``tricks recipe show
resnet50d_all``, ``tricks list``, ``tricks-train --help`` ...) this runs the installed console script of this
interpreter's environment as a fresh process:

* wall time: ``--repeats`` runs (default 3), the median and the fastest (a shared machine makes single runs noisy);
* ``python -X importtime`` (``PYTHONPROFILEIMPORTTIME=1``): how many modules the process imported, and whether
  ``torch`` / ``timm`` / ``torchvision`` were among them.

The commands run with their own cache folder (``TIMM_TRICKS_CACHE``, a temporary one), first once *cold* (empty
cache: resolving a distillation recipe then imports timm once to check the teacher's name and remembers timm's
model names), then measured *warm* as a user's second call is. The cold figures are reported too.

    python -m benchmarks.startup [--repeats 3] [--out benchmarks/results/startup.json]

It imports neither torch nor the package; the JSON goes to ``benchmarks/results/startup.json``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results" / "startup.json"
BIN = Path(sys.executable).parent

#: (label, console script, arguments)
COMMANDS: list[tuple[str, str, list[str]]] = [
    ("tricks --help", "tricks", ["--help"]),
    ("tricks --version", "tricks", ["--version"]),
    ("tricks recipe list", "tricks", ["recipe", "list"]),
    ("tricks recipe show resnet50d_all", "tricks", ["recipe", "show", "resnet50d_all"]),
    ("tricks recipe show resnet50d_all --resolved", "tricks", ["recipe", "show", "resnet50d_all", "--resolved"]),
    ("tricks recipe diff resnet50d_cosine resnet50d_all", "tricks", ["recipe", "diff", "resnet50d_cosine",
                                                                      "resnet50d_all"]),
    ("tricks recipe export resnet50d_all", "tricks", ["recipe", "export", "resnet50d_all"]),
    ("tricks list", "tricks", ["list"]),
    ("tricks show cosine", "tricks", ["show", "cosine"]),
    ("tricks-train --help", "tricks-train", ["--help"]),
]
HEAVY = ("torch", "timm", "torchvision")


def _run(argv: Sequence[str], env: dict[str, str], importtime: bool) -> tuple[float, int, str]:
    env = dict(env)
    if importtime:
        env["PYTHONPROFILEIMPORTTIME"] = "1"
    start = time.perf_counter()
    proc = subprocess.run(list(argv), env=env, capture_output=True, text=True)
    return time.perf_counter() - start, proc.returncode, proc.stderr


def _imports(stderr: str) -> list[str]:
    """The module names of ``-X importtime``'s lines (``import time: self | cumulative | name``)."""
    names = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                names.append(name)
    return names


def measure(label: str, script: str, args: list[str], env: dict[str, str], repeats: int) -> dict[str, Any]:
    argv = [str(BIN / script), *args]
    _, rc, stderr = _run(argv, env, importtime=True)
    modules = _imports(stderr)
    top = {m.strip() for m in modules}
    times = []
    for _ in range(repeats):
        wall, rc_timed, _ = _run(argv, env, importtime=False)
        times.append(wall)
    return {"command": label, "exit_code": rc, "wall_s_median": round(statistics.median(times), 3),
            "wall_s_min": round(min(times), 3), "wall_s_runs": [round(t, 3) for t in times],
            "modules_imported": len(modules), **{f"imports_{h}": h in top for h in HEAVY}}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--label", default="", help="a note stored with the results (e.g. 'before' / 'after')")
    args = p.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TIMM_TRICKS_CACHE": cache}
        cold = [measure(label, script, cmd_args, env, 1) for label, script, cmd_args in COMMANDS
                if label.startswith("tricks recipe show")][:1]
        warm = []
        for label, script, cmd_args in COMMANDS:
            row = measure(label, script, cmd_args, env, args.repeats)
            print(f"{label:<52} {row['wall_s_median']:6.2f} s  {row['modules_imported']:5d} modules  "
                  f"torch={row['imports_torch']} timm={row['imports_timm']} rc={row['exit_code']}", flush=True)
            warm.append(row)
    doc = {
        "benchmark": "startup", "label": args.label,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, "-m", "benchmarks.startup", *(argv or sys.argv[1:])]),
        "wall_s": round(time.perf_counter() - started, 1),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                    "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "how": "each command a fresh process of the installed console script; wall time over --repeats runs with a "
               "warm cache folder; module count and heavy imports from one PYTHONPROFILEIMPORTTIME=1 run",
        "warm": warm,
        "cold_cache": cold,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
