"""Parameters and GMACs of every ``model_tweaks`` variant (ResNet-A/B/C/D, depths 18-152) next to the paper's
Table 5 (section 4: ResNet-50 and its B, C, D tweaks).

Counted with ``torch.utils.flop_counter.FlopCounterMode`` on a meta-device model (no compute, a second for
all 20): one forward pass at ``--input-size`` (224), FLOPs / 2 = multiply-adds. The counter counts
convolutions and matrix products, not pooling or element-wise ops, so ResNet-D's extra average pool adds
nothing, as in the paper. Also the training step (forward + backward) per image, which the throughput
benchmarks use for GFLOP/s.

    python -m benchmarks.flops
"""
from __future__ import annotations

import time
from typing import Any

import torch

from .common import base_parser, count_flops, setup, write_result

NAME = "flops"

#: He et al. 2019, Table 5: ResNet-50 variants (params, GFLOPs as the paper counts them: multiply-adds), top-1
PAPER_TABLE5 = {
    "a": {"params_m": 25, "gflops": 3.9, "top1": 76.21},
    "b": {"params_m": 25, "gflops": 4.1, "top1": 76.66},
    "c": {"params_m": 25, "gflops": 4.3, "top1": 76.87},
    "d": {"params_m": 25, "gflops": 4.3, "top1": 77.16},
}


def count(name: str, input_size: int, num_classes: int = 1000) -> dict[str, Any]:
    """Params, forward GMACs and training-step GFLOPs (forward + backward) of one timm model, on meta."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(name, num_classes=num_classes)
        x = torch.empty(1, 3, input_size, input_size)
    params = sum(p.numel() for p in model.parameters())
    forward = count_flops(lambda: model(x))
    train_step = count_flops(lambda: model(x).sum().backward())
    return {"params": params, "params_m": params / 1e6, "gmacs": forward / 2e9, "train_step_gflops": train_step / 1e9}


def run(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--input-size", type=int, default=224, help="default: %(default)s")
    args = p.parse_args(argv)
    started = time.perf_counter()
    dev = setup(args)

    import model_tweaks

    rows = []
    for name in model_tweaks.model_names():
        depth, variant = name.removeprefix("resnet").split("_v1")
        row = {"model": name, "depth": int(depth), "variant": variant, **count(name, args.input_size)}
        if depth == "50":
            paper = PAPER_TABLE5[variant]
            row["paper_table5"] = paper
            row["gmacs_vs_paper"] = row["gmacs"] / paper["gflops"]
        rows.append(row)
    rows.sort(key=lambda r: (r["depth"], r["variant"]))
    payload = {"what": "params and GMACs (forward, multiply-adds) of every model_tweaks variant; paper Table 5 beside",
               "config": {"input_size": args.input_size, "num_classes": 1000, "counter": "torch.utils.flop_counter"},
               "models": rows}
    write_result(NAME, payload, args.out, device=dev, started=started)
    print("| model | params (M) | GMACs | train step GFLOPs | paper Table 5 |")
    print("|---|---|---|---|---|")
    for r in rows:
        paper = r.get("paper_table5")
        beside = f"{paper['params_m']}M / {paper['gflops']} GFLOPs / {paper['top1']}" if paper else ""
        print(f"| {r['model']} | {r['params_m']:.2f} | {r['gmacs']:.2f} | {r['train_step_gflops']:.2f} | {beside} |")
    return payload


if __name__ == "__main__":
    run()
