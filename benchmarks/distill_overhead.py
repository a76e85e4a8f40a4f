"""Step time with the distillation trick (paper section 5.3) against the same recipe without it.

Both arms are our step, built as ``train.py`` builds it: ``resnet50d_distill`` and ``resnet50d_distill`` with
``--set tricks.distillation=null``. The teacher (``--teacher``, ResNet-152-D as in the paper) gets random
weights saved to a temporary safetensors file and is loaded through ``load_teacher`` as
``ARCH@weights.safetensors``: the speed is the architecture's, no download. A forward hook on the teacher
records how it ran (inference mode, autocast, output dtype, eval mode, frozen); the JSON holds those checks.

The expected overhead is the teacher's forward FLOPs over the student's training-step FLOPs; the
measured one is the per-round ratio of step times minus 1.

    python -m benchmarks.distill_overhead                        # ResNet-50-D student, ResNet-152-D teacher, 64 px
    python -m benchmarks.distill_overhead --device cuda --batch 256 --input-size 224 --rounds 10 --steps 10
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .common import add_ab_args, base_parser, peak_for, ratio_summary, setup, step_rounds, throughput, \
    train_flops_per_image, write_result
from .steps import OurStep, step_source, synthetic_batch

NAME = "distill_overhead"


def _record_teacher_mode(teacher: torch.nn.Module, device_type: str) -> tuple[dict[str, Any], Any]:
    """A forward hook that notes how the teacher ran on its last call; returns the notes and the hook's handle."""
    seen: dict[str, Any] = {}

    def hook(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
        seen.update({"inference_mode": torch.is_inference_mode_enabled(),
                     "grad_enabled": torch.is_grad_enabled(),
                     "autocast": torch.is_autocast_enabled(device_type),
                     "autocast_dtype": str(torch.get_autocast_dtype(device_type)).replace("torch.", ""),
                     "output_dtype": str(output.dtype).replace("torch.", ""),
                     "eval_mode": not module.training,
                     "frozen": not any(p.requires_grad for p in module.parameters())})

    return seen, teacher.register_forward_hook(hook)


def run(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="resnet50d_distill", help="a recipe with distillation (default: %(default)s)")
    p.add_argument("--teacher", default="resnet152_v1d", help="teacher architecture (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override for both arms (repeatable)")
    p.add_argument("--batch", type=int, default=32, help="default: %(default)s")
    p.add_argument("--input-size", type=int, default=64, help="default: %(default)s px")
    add_ab_args(p, rounds=6, steps=3, warmup=2)
    args = p.parse_args(argv)
    started = time.perf_counter()
    dev = setup(args)

    import timm
    from safetensors.torch import save_file

    from tricks_registry.recipe import resolve
    from tricks_registry.tricks.efficiency import amp_dtype

    sets = [*args.overrides, f"data.input_size={args.input_size}", f"train.global_batch_size={args.batch}"]
    with_kd = resolve(args.recipe, sets)
    if "distillation" not in with_kd.tricks:
        raise SystemExit(f"{args.recipe} has no distillation trick; use resnet50d_distill or resnet50d_all")
    without_kd = resolve(args.recipe, sets + ["tricks.distillation=null"])
    num_classes = 10
    images, labels = synthetic_batch(args.batch, args.input_size, num_classes, dev, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="distill_overhead-") as tmp:
        weights = Path(tmp) / "teacher.safetensors"
        save_file({k: v.contiguous() for k, v in timm.create_model(args.teacher, num_classes=num_classes)
                   .state_dict().items()}, str(weights))
        arms = {"distill": OurStep.build(with_kd, num_classes, dev, teacher=f"{args.teacher}@{weights}"),
                "no_distill": OurStep.build(without_kd, num_classes, dev)}
    teacher_mode, hook = _record_teacher_mode(arms["distill"].teacher_model, dev.type)
    seconds = step_rounds(arms, images, labels, args, dev, "distill/no-distill rounds")
    hook.remove()  # the FLOP count below runs a copy of the teacher outside the step
    flops = train_flops_per_image(arms["distill"].model, args.input_size, teacher=arms["distill"].teacher_model)
    dtype = amp_dtype(arms["distill"].pipeline.runtime, dev) or torch.float32
    peak = peak_for(dev, dtype, measure_cpu=not args.no_peak)
    n = args.batch * args.steps
    ratio = ratio_summary(seconds["distill"], seconds["no_distill"])
    expected = 1 + flops["teacher_forward"] / flops["train_step"]
    payload = {
        "what": "step time with knowledge distillation / without (teacher forward in inference mode, same autocast)",
        "config": {"recipe": f"{with_kd.name}@{with_kd.version}", "overrides": args.overrides,
                   "student": with_kd.model.name, "teacher": args.teacher, "batch": args.batch,
                   "input_size": args.input_size, "autocast_dtype": str(dtype).replace("torch.", ""),
                   "temperature": with_kd.tricks["distillation"].get("temperature"),
                   "rounds": args.rounds, "steps": args.steps, "warmup": args.warmup},
        "step_source": step_source(),
        "teacher_checks": teacher_mode,
        "gflop_per_image": {k: v / 1e9 for k, v in flops.items()},
        "distill": throughput([n / s for s in seconds["distill"]], flops["train_step"] + flops["teacher_forward"],
                              peak),
        "no_distill": throughput([n / s for s in seconds["no_distill"]], flops["train_step"], peak),
        "seconds_per_round": seconds,
        "step_time_ratio_distill_over_without": ratio,
        "expected_ratio_from_flops": expected,
    }
    write_result(NAME, payload, args.out, device=dev, started=started)
    print(f"distillation step time ratio: median {ratio['median']:.2f} (min {ratio['min']:.2f}, max {ratio['max']:.2f}); "
          f"FLOPs predict {expected:.2f}; teacher ran with {teacher_mode}")
    return payload


if __name__ == "__main__":
    run()
