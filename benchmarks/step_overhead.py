"""Our training step against a plain PyTorch loop written by hand: same model, batch, optimizer, loss, mixup
and AMP setting, the same batch already in memory. Target: ours/plain step time <= 1.03.

Both arms start from the same weights; their first step is checked to give the same loss (the plain loop is
the same computation, not a cheaper one). Then the arms alternate in rounds (ours, plain / plain, ours ...)
of ``--steps`` steps each, after ``--warmup`` steps; the result is the per-round ratio of step times.

    python -m benchmarks.step_overhead                                  # ResNet-50-D, mixup rung, 64 px, CPU
    python -m benchmarks.step_overhead --device cuda --batch 256 --input-size 224 --rounds 20 --steps 20
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from .common import add_ab_args, base_parser, peak_for, ratio_summary, setup, step_rounds, throughput, \
    train_flops_per_image, write_result
from .steps import OurStep, PlainStep, step_source, synthetic_batch

NAME = "step_overhead"


def run(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="resnet50d_mixup", help="default: %(default)s (mixup + label smoothing + amp)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override, as tricks-train's --set (repeatable)")
    p.add_argument("--batch", type=int, default=32, help="images per step (default: %(default)s)")
    p.add_argument("--input-size", type=int, default=64, help="default: %(default)s px")
    p.add_argument("--num-classes", type=int, default=10)
    add_ab_args(p, rounds=10, steps=5, warmup=3)
    p.add_argument("--target", type=float, default=1.03, help="the ratio to stay under (default: %(default)s)")
    args = p.parse_args(argv)
    started = time.perf_counter()
    dev = setup(args)

    from tricks_registry.recipe import resolve

    recipe = resolve(args.recipe, [*args.overrides, f"data.input_size={args.input_size}",
                                   f"train.global_batch_size={args.batch}"])
    images, labels = synthetic_batch(args.batch, args.input_size, args.num_classes, dev, seed=args.seed)
    ours = OurStep.build(recipe, args.num_classes, dev)
    plain = PlainStep(recipe, args.num_classes, dev, init_from=ours.model)

    # the first step of each, from the same weights and the same mixup draw, must give the same loss
    np.random.seed(args.seed)
    loss_ours = float(ours.step(images.clone(), labels))
    np.random.seed(args.seed)
    loss_plain = float(plain.step(images.clone(), labels))
    same = abs(loss_ours - loss_plain) <= 1e-3 * max(1.0, abs(loss_plain))
    if not same:
        print(f"warning: first-step losses differ (ours {loss_ours:.6f}, plain {loss_plain:.6f}): "
              "the plain loop is not the same computation")

    seconds = step_rounds({"ours": ours, "plain": plain}, images, labels, args, dev, "ours/plain rounds")
    per_image = train_flops_per_image(ours.model, args.input_size)["train_step"]
    dtype = plain.amp_dtype or torch.float32
    peak = peak_for(dev, dtype, measure_cpu=not args.no_peak)
    n = args.steps * args.batch
    ratio = ratio_summary(seconds["ours"], seconds["plain"])
    tricks = recipe.tricks
    payload = {
        "what": "training-step time of tricks-train's step against a hand-written PyTorch loop, same work",
        "config": {"recipe": f"{recipe.name}@{recipe.version}", "recipe_sha256": recipe.sha256,
                   "overrides": args.overrides, "model": recipe.model.name, "batch": args.batch,
                   "input_size": args.input_size, "num_classes": args.num_classes,
                   "amp_dtype": str(dtype).replace("torch.", "") if plain.amp_dtype else None,
                   "channels_last": plain.channels_last, "compile": "compile" in tricks,
                   "mixup": tricks.get("mixup"), "label_smoothing": tricks.get("label_smoothing"),
                   "rounds": args.rounds, "steps_per_round": args.steps, "warmup_steps": args.warmup},
        "step_source": step_source(),
        "first_step_loss": {"ours": loss_ours, "plain": loss_plain, "same": same},
        "ours": throughput([n / s for s in seconds["ours"]], per_image, peak),
        "plain": throughput([n / s for s in seconds["plain"]], per_image, peak),
        "seconds_per_round": seconds,
        "step_time_ratio_ours_over_plain": ratio,
        "target": {"max_ratio": args.target, "met": ratio["median"] <= args.target},
    }
    write_result(NAME, payload, args.out, device=dev, started=started)
    print(f"step time ours/plain: median {ratio['median']:.3f} (min {ratio['min']:.3f}, max {ratio['max']:.3f}, "
          f"{ratio['n']} rounds); target <= {args.target}: {'met' if payload['target']['met'] else 'NOT met'}")
    return payload


if __name__ == "__main__":
    run()
