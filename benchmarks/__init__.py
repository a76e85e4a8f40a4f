"""Benchmarks of timm-tricks against a plain PyTorch loop, timm's own ``train.py`` and the paper's figures.

Each module is a script, ``python -m benchmarks.NAME --help``; each writes ``benchmarks/results/NAME.json``
with the machine, the library versions and the command that made it. Nothing here is imported by the
package, shipped in the wheel or run by the tests: these are measurements to rerun on a quiet machine.

* ``step_overhead``     our training step against a hand-written loop (same model, batch, optimizer, loss,
                        mixup, AMP), interleaved A/B rounds; target ours/plain step time <= 1.03
* ``vs_timm``           ``tricks-train`` against timm's ``train.py`` (a path to a copy of it is required)
                        on the same data and the same recipe (``tricks recipe export --format timm-args``)
* ``efficient_speedup`` epoch time of ``resnet50d_efficient`` (bf16/fp16 + channels-last [+ compile])
                        against the fp32 baseline on the same model and data (paper Table 3: ~3x on V100)
* ``loader``            decoded and augmented images/s: our transform against timm's ``create_loader``
* ``distill_overhead``  step time with the distillation trick against without
* ``flops``             params and GMACs of every ``model_tweaks`` variant next to the paper's Table 5
"""
