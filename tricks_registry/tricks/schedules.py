"""Learning-rate tricks: schedules (section 5.1 and the classic ones), warmup and LR scaling (section 3.1).

Every schedule is stepped per iteration through timm's scheduler interface: the loop calls
``scheduler.step_update(num_updates)`` with the number of optimizer steps done so far, starting with
``step_update(0)`` before the first step. :func:`build_scheduler` composes a warmup (the first
``W = round(warmup.epochs * steps_per_epoch)`` steps) with a *main* schedule:

* cosine, poly, exponential, inverse, sigmoid and cyclic run over the remaining ``T = total_steps - W``
  steps, their ``t`` counted from the end of warmup (the paper's cosine, section 5.1, "ignoring warmup");
* step and multistep milestones are absolute epochs of the run.

The curves come from timm (``CosineLRScheduler``, ``StepLRScheduler``, ``MultiStepLRScheduler``,
``PolyLRScheduler``, with ``t_in_epochs=False``) and torch (``CyclicLR``); only the warmup composition and
the Caffe curves that neither library has (exponential per fractional epoch, inverse, sigmoid) are written
here, as pure functions of ``t``. The base LR of each parameter group is its ``lr`` when the scheduler is
made, kept as ``initial_lr`` as timm and torch do.
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import Any, Callable, Literal, Sequence

from ..parts import TIMM_CONSTANT_SCHEDULE, LRScaling, Schedule, TimmArgs, Warmup
from ..registry import TrickError, build_trick, check_param, register_trick


__all__ = [
    # tricks
    "constant", "step", "multistep", "exponential", "inverse", "poly", "sigmoid", "cosine", "cyclic",
    "linear_warmup", "constant_warmup", "linear_scaling",
    # pure functions and the scheduler
    "warmup_factor", "exponential_factor", "inverse_factor", "sigmoid_factor",
    "warmup_steps", "build_scheduler", "WarmupScheduler", "lr_sequence", "default_schedule",
]


# --------------------------------------------------------------------------------------------
# pure functions (factors of the base LR)


def warmup_factor(k: int, warmup_steps: int, mode: str = "linear", start_factor: float = 0.0,
                  form: str = "timm") -> float:
    """LR factor at warmup step ``k`` (``0 <= k < warmup_steps``) of ``warmup_steps``.

    ``linear`` (Goyal et al. 2017, section 2.2; He et al. 2019, section 3.1) in one of two forms:

    * ``timm`` (timm's schedulers, and this package's default): ``start + (1 - start) k / W``, which is
      ``k / W`` for the paper's start of 0: the first batch runs at ``start`` (LR 0) and the base LR is reached
      at step ``W``, the first after warmup;
    * ``paper`` (He et al. 2019, section 3.1: "at batch i, 1 <= i <= m, the learning rate is i eta / m"):
      ``start + (1 - start) (k + 1) / W``: batch ``i = k + 1`` gets ``i / m`` of the base LR, the first
      ``1 / m``, the last batch of warmup the base LR itself.

    ``constant`` (Goyal et al. 2017; He et al. 2016): ``start_factor`` throughout (``form`` does not apply).
    """
    if mode == "linear":
        if form == "timm":
            i = k
        elif form == "paper":
            i = k + 1
        else:
            raise TrickError(f"unknown warmup form {form!r}; use 'paper' or 'timm'", trick="linear_warmup",
                             param="form")
        if start_factor == 0.0:
            return i / warmup_steps
        return start_factor + (1.0 - start_factor) * i / warmup_steps
    if mode == "constant":
        return start_factor
    raise TrickError(f"unknown warmup mode {mode!r}; use 'linear' or 'constant'", trick="warmup", param="mode")


def exponential_factor(epoch: float, gamma: float) -> float:
    """Caffe's ``exp`` policy with ``iter`` in (fractional) epochs: ``gamma ** epoch``."""
    return gamma ** epoch


def inverse_factor(epoch: float, gamma: float, power: float) -> float:
    """Caffe's ``inv`` policy with ``iter`` in (fractional) epochs: ``(1 + gamma * epoch) ** -power``."""
    return (1.0 + gamma * epoch) ** (-power)


def sigmoid_factor(epoch: float, gamma: float, step_epochs: float) -> float:
    """Caffe's ``sigmoid`` policy with ``iter`` in (fractional) epochs: ``1 / (1 + exp(-gamma (epoch - step)))``."""
    z = -gamma * (epoch - step_epochs)
    if z > 700.0:  # exp overflows; the factor is 0 to double precision
        return 0.0
    return 1.0 / (1.0 + math.exp(z))


# --------------------------------------------------------------------------------------------
# the scheduler: warmup, then a main schedule


def _set_lrs(optimizer: Any, values: Sequence[float]) -> None:
    """Set each group's ``lr``, honouring timm's ``lr_scale`` (layer decay) as timm's schedulers do."""
    for group, value in zip(optimizer.param_groups, values):
        group["lr"] = value * group["lr_scale"] if "lr_scale" in group else value


class WarmupScheduler:
    """timm's per-iteration scheduler interface over ``warmup`` steps followed by ``main``.

    For ``num_updates < warmup_steps`` the LR is ``base * warmup_factor(...)``; after that ``main``
    (any object with ``step_update``/``state_dict``/``load_state_dict``) is stepped with
    ``num_updates - warmup_steps`` (``relative``) or ``num_updates`` (absolute milestones).
    ``step(epoch)``, timm's per-epoch call, is a no-op: everything here is per iteration.
    """

    def __init__(self, optimizer: Any, main: Any, *, warmup_steps: int = 0, mode: str = "linear",
                 start_factor: float = 0.0, relative: bool = True, form: str = "timm") -> None:
        self.optimizer = optimizer
        self.main = main
        self.warmup_steps = int(warmup_steps)
        self.mode = mode
        self.form = form
        self.start_factor = float(start_factor)
        self.relative = relative
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.num_updates = 0
        self.step_update(0)

    def step_update(self, num_updates: int, metric: Any = None) -> None:
        self.num_updates = int(num_updates)
        if num_updates < self.warmup_steps:
            f = warmup_factor(num_updates, self.warmup_steps, self.mode, self.start_factor, self.form)
            _set_lrs(self.optimizer, [b * f for b in self.base_lrs])
        else:
            self.main.step_update(num_updates - self.warmup_steps if self.relative else num_updates)

    def step(self, epoch: int, metric: Any = None) -> None:
        """timm's per-epoch hook; a no-op (the schedule is stepped per iteration)."""

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"num_updates": self.num_updates, "base_lrs": list(self.base_lrs),
                "warmup_steps": self.warmup_steps, "main": self.main.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base_lrs = list(state_dict["base_lrs"])
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["initial_lr"] = base
        self.warmup_steps = int(state_dict["warmup_steps"])
        self.main.load_state_dict(state_dict["main"])
        self.step_update(state_dict["num_updates"])


def _timm_scheduler(cls_name: str, optimizer: Any, **kwargs: Any) -> Any:
    import timm.scheduler as ts

    return getattr(ts, cls_name)(optimizer, t_in_epochs=False, **kwargs)


def _curve_scheduler(optimizer: Any, curve: Callable[[int], float]) -> Any:
    """A timm ``Scheduler`` whose LR is ``base * curve(t)`` (for the curves timm lacks)."""
    from timm.scheduler.scheduler import Scheduler

    class CurveScheduler(Scheduler):
        def __init__(self) -> None:
            self._curve = curve
            super().__init__(optimizer, param_group_field="lr", t_in_epochs=False)

        def _get_lr(self, t: int) -> list[float]:
            f = self._curve(t)
            return [v * f for v in self.base_values]

        def state_dict(self) -> dict[str, Any]:
            return {k: v for k, v in super().state_dict().items() if k != "_curve"}

    return CurveScheduler()


class _TorchPerIteration:
    """Adapter: a torch ``LRScheduler`` whose LR is a function of ``last_epoch`` (``CyclicLR``) driven by
    ``step_update(t)``: sets ``last_epoch = t - 1`` and calls ``step()``, so LR = the torch scheduler's after
    ``t`` steps."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def step_update(self, num_updates: int) -> None:
        self.scheduler.last_epoch = num_updates - 1
        with warnings.catch_warnings():  # torch warns about scheduler.step() before optimizer.step()
            warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*optimizer.step.*", category=UserWarning)
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state_dict)


def warmup_steps(warmup: Warmup | None, steps_per_epoch: int) -> int:
    """``W = round(warmup.epochs * steps_per_epoch)`` (0 without warmup)."""
    return 0 if warmup is None else int(round(warmup.epochs * steps_per_epoch))


#: builds the main schedule: (optimizer, T: steps it covers, steps_per_epoch) -> scheduler
MainBuilder = Callable[[Any, int, int], Any]


def build_scheduler(optimizer: Any, main: MainBuilder, *, relative: bool, total_steps: int,
                    steps_per_epoch: int, warmup: Warmup | None = None,
                    trick: str = "schedule") -> WarmupScheduler:
    """Warmup composed with the main schedule built by ``main(optimizer, T, steps_per_epoch)``.

    ``T = total_steps - W`` when ``relative`` (t counted from the end of warmup), else ``total_steps``.
    """
    if not isinstance(total_steps, int) or total_steps < 1:
        raise TrickError(f"total_steps must be a positive integer, got {total_steps!r}", trick=trick,
                         param="total_steps")
    if not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
        raise TrickError(f"steps_per_epoch must be a positive integer, got {steps_per_epoch!r}", trick=trick,
                         param="steps_per_epoch")
    w = warmup_steps(warmup, steps_per_epoch)
    if w >= total_steps:
        raise TrickError(f"{warmup.epochs} warmup epochs ({w} steps) leave none of the {total_steps} steps "
                         f"for the schedule; shorten the warmup", trick=(warmup.trick or "warmup"),
                         param="epochs")
    for group in optimizer.param_groups:  # the base LR, kept as timm and torch keep it
        group.setdefault("initial_lr", group["lr"])
    sched = main(optimizer, total_steps - w if relative else total_steps, steps_per_epoch)
    return WarmupScheduler(optimizer, sched, warmup_steps=w,
                           mode=warmup.mode if warmup is not None else "linear",
                           start_factor=warmup.start_factor if warmup is not None else 0.0,
                           relative=relative, form=warmup.form if warmup is not None else "timm")


def _schedule(name: str, main: MainBuilder, *, relative: bool, timm_args: dict[str, Any],
              timm_per_update: TimmArgs | None = None) -> Schedule:
    def make(optimizer: Any, *, total_steps: int, steps_per_epoch: int,
             warmup: Warmup | None = None) -> WarmupScheduler:
        return build_scheduler(optimizer, main, relative=relative, total_steps=total_steps,
                               steps_per_epoch=steps_per_epoch, warmup=warmup, trick=name)

    return Schedule(make=make, timm_args=timm_args, timm_per_update=timm_per_update)


def lr_sequence(schedule: Schedule, *, base_lr: float = 1.0, total_steps: int, steps_per_epoch: int,
                warmup: Warmup | None = None) -> list[float]:
    """The LR at every step ``0 .. total_steps - 1`` of ``schedule`` (e.g. to plot it); uses a dummy optimizer."""
    import torch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    sched = schedule.make(opt, total_steps=total_steps, steps_per_epoch=steps_per_epoch, warmup=warmup)
    lrs = []
    for t in range(total_steps):
        sched.step_update(t)
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


# --------------------------------------------------------------------------------------------
# schedules


def _check_gamma(trick: str, gamma: float) -> None:
    check_param(gamma > 0, trick, "gamma", f"must be > 0, got {gamma}")


@register_trick("constant", kind="schedule", section="no decay (the reference schedule)",
                implemented_by="timm.scheduler.StepLRScheduler (timm's 'constant')")
def constant() -> Schedule:
    """Constant learning rate (after any warmup).

    The base LR throughout; timm's ``--sched constant`` (a ``StepLRScheduler`` that never decays).
    """
    def main(opt: Any, total: int, spe: int) -> Any:
        return _timm_scheduler("StepLRScheduler", opt, decay_t=1, decay_rate=1.0)

    return _schedule("constant", main, relative=True, timm_args=dict(TIMM_CONSTANT_SCHEDULE))


@register_trick("step", kind="schedule", section="Caffe solver.proto lr_policy 'step'",
                implemented_by="timm.scheduler.StepLRScheduler")
def step(*, step_epochs: int = 30, gamma: float = 0.1) -> Schedule:
    """Step decay: multiply the LR by ``gamma`` every ``step_epochs`` epochs.

    Caffe's ``step`` policy (solver.proto lr_policy), the decay of He et al. 2016 (ResNet: /10 every 30
    epochs). Epochs are absolute epochs of the run (warmup included): the LR at step ``t`` is
    ``base * gamma ** floor(t / (step_epochs * steps_per_epoch))``, as torch's ``StepLR``.
    timm's ``StepLRScheduler`` computes it.
    """
    check_param(step_epochs > 0, "step", "step_epochs", f"must be > 0, got {step_epochs}")
    _check_gamma("step", gamma)

    def main(opt: Any, total: int, spe: int) -> Any:
        return _timm_scheduler("StepLRScheduler", opt, decay_t=step_epochs * spe, decay_rate=gamma)

    return _schedule("step", main, relative=False, timm_args={
        "sched": "step", "decay_epochs": step_epochs, "decay_rate": gamma,
        "warmup_prefix": False, "sched_on_updates": True})


@register_trick("multistep", kind="schedule", section="2.1, Table 2 (baseline: /10 at epochs 30, 60, 90)",
                implemented_by="timm.scheduler.MultiStepLRScheduler")
def multistep(*, milestones: tuple[int, ...] = (30, 60, 90), gamma: float = 0.1) -> Schedule:
    """Multi-step decay: multiply the LR by ``gamma`` at each milestone epoch.

    He et al. 2019, section 2.1 (the baseline: LR divided by 10 at epochs 30, 60 and 90); Caffe's
    ``multistep`` policy. Milestones are absolute epochs of the run: epochs ``0 .. m-1`` (0-based) train
    at the old LR and epoch ``m`` starts at the new one, as torch's ``MultiStepLR``. timm's
    ``MultiStepLRScheduler`` computes it; as timm applies a milestone ``d`` when ``t + 1 >= d`` (timm
    #2745), it gets ``m * steps_per_epoch + 1``, and ``timm_args`` give timm's per-epoch milestones ``m + 1``.
    """
    check_param(len(milestones) > 0, "multistep", "milestones", "give at least one milestone epoch")
    check_param(all(m > 0 for m in milestones), "multistep", "milestones",
                f"milestone epochs must be > 0, got {list(milestones)}")
    check_param(list(milestones) == sorted(set(milestones)), "multistep", "milestones",
                f"milestones must be strictly increasing, got {list(milestones)}")
    _check_gamma("multistep", gamma)

    def main(opt: Any, total: int, spe: int) -> Any:
        return _timm_scheduler("MultiStepLRScheduler", opt, decay_t=[m * spe + 1 for m in milestones],
                               decay_rate=gamma)

    # with a warmup, timm must step it every update (per epoch it would hold warmup_lr for the whole first epoch
    # and rise in stairs); per update, milestone m * steps applies when t + 1 >= m * steps: one iteration early
    per_update = TimmArgs(values={"decay_milestones": list(milestones), "sched_on_updates": True}, notes=(
        f"multistep with warmup: stepped every iteration so that the warmup is the recipe's; timm then decays at "
        f"milestone epochs {list(milestones)} one iteration early (the last one of the epoch before)",))
    return _schedule("multistep", main, relative=False, timm_args={
        "sched": "multistep", "decay_milestones": [m + 1 for m in milestones], "decay_rate": gamma,
        "warmup_prefix": False, "sched_on_updates": False}, timm_per_update=per_update)


@register_trick("exponential", kind="schedule", section="Caffe solver.proto lr_policy 'exp'",
                implemented_by="tricks_registry (exponential_factor) on timm.scheduler.scheduler.Scheduler")
def exponential(*, gamma: float = 0.94) -> Schedule:
    """Exponential decay: the LR shrinks by ``gamma`` per epoch, smoothly per iteration.

    Caffe's ``exp`` policy (``base * gamma ** iter``) with ``iter`` the fractional epoch since the end of
    warmup: ``base * gamma ** (t / steps_per_epoch)``. Default 0.94, the rate of Szegedy et al. 2016
    (Inception-v3, there every two epochs). timm has no such schedule, so ``timm_args`` is empty.
    """
    check_param(0 < gamma <= 1, "exponential", "gamma", f"must be in (0, 1], got {gamma}")

    def main(opt: Any, total: int, spe: int) -> Any:
        return _curve_scheduler(opt, lambda t: exponential_factor(t / spe, gamma))

    return _schedule("exponential", main, relative=True, timm_args={})


@register_trick("inverse", kind="schedule", section="Caffe solver.proto lr_policy 'inv'",
                implemented_by="tricks_registry (inverse_factor) on timm.scheduler.scheduler.Scheduler")
def inverse(*, gamma: float = 0.1, power: float = 0.75) -> Schedule:
    """Inverse decay: ``base * (1 + gamma * epoch) ** -power``.

    Caffe's ``inv`` policy with ``iter`` the fractional epoch since the end of warmup (a Caffe gamma
    ``g`` per iteration is ``g * steps_per_epoch`` here). Defaults: Caffe's LeNet example (gamma 1e-4 per
    iteration at ~1000 iterations per epoch, power 0.75). Not in timm: ``timm_args`` is empty.
    """
    _check_gamma("inverse", gamma)
    check_param(power > 0, "inverse", "power", f"must be > 0, got {power}")

    def main(opt: Any, total: int, spe: int) -> Any:
        return _curve_scheduler(opt, lambda t: inverse_factor(t / spe, gamma, power))

    return _schedule("inverse", main, relative=True, timm_args={})


@register_trick("poly", kind="schedule", section="Chen et al. 2017 (DeepLab), section 4.1; Caffe 'poly'",
                implemented_by="timm.scheduler.PolyLRScheduler")
def poly(*, power: float = 0.9, lr_min: float = 0.0) -> Schedule:
    """Polynomial decay: ``base * (1 - t / T) ** power`` over the ``T`` steps after warmup.

    Caffe's ``poly`` policy; power 0.9 as ParseNet (Liu et al. 2015) and DeepLab (Chen et al. 2017,
    section 4.1) use. timm's ``PolyLRScheduler`` computes it (``--sched poly --decay-rate power``).
    """
    check_param(power > 0, "poly", "power", f"must be > 0, got {power}")
    check_param(lr_min >= 0, "poly", "lr_min", f"must be >= 0, got {lr_min}")

    def main(opt: Any, total: int, spe: int) -> Any:
        return _timm_scheduler("PolyLRScheduler", opt, t_initial=total, power=power, lr_min=lr_min)

    return _schedule("poly", main, relative=True, timm_args={
        "sched": "poly", "decay_rate": power, "min_lr": lr_min, "warmup_prefix": True,
        "sched_on_updates": True})


@register_trick("sigmoid", kind="schedule", section="Caffe solver.proto lr_policy 'sigmoid'",
                implemented_by="tricks_registry (sigmoid_factor) on timm.scheduler.scheduler.Scheduler")
def sigmoid(*, gamma: float = -0.1, step_epochs: float = 60.0) -> Schedule:
    """Sigmoid decay: ``base / (1 + exp(-gamma * (epoch - step_epochs)))``, half the base LR at ``step_epochs``.

    Caffe's ``sigmoid`` policy with ``iter`` the fractional epoch since the end of warmup; gamma < 0
    decays. Not in timm: ``timm_args`` is empty.
    """
    check_param(gamma < 0, "sigmoid", "gamma", f"must be < 0 for the LR to decay, got {gamma}")
    check_param(step_epochs >= 0, "sigmoid", "step_epochs", f"must be >= 0, got {step_epochs}")

    def main(opt: Any, total: int, spe: int) -> Any:
        return _curve_scheduler(opt, lambda t: sigmoid_factor(t / spe, gamma, step_epochs))

    return _schedule("sigmoid", main, relative=True, timm_args={})


@register_trick("cosine", kind="schedule", section="5.1, eq. (1)",
                implemented_by="timm.scheduler.CosineLRScheduler")
def cosine(*, lr_min: float = 0.0) -> Schedule:
    """Cosine decay: ``eta_t = 1/2 (1 + cos(t pi / T)) eta`` over the ``T`` steps after warmup.

    He et al. 2019, section 5.1, eq. (1) (Loshchilov & Hutter 2017 without restarts): ``T`` is the number
    of batches ignoring warmup and the LR decays to ``lr_min`` (0 in the paper). timm's
    ``CosineLRScheduler`` computes it (``--sched cosine --warmup-prefix --sched-on-updates``).
    """
    check_param(lr_min >= 0, "cosine", "lr_min", f"must be >= 0, got {lr_min}")

    def main(opt: Any, total: int, spe: int) -> Any:
        return _timm_scheduler("CosineLRScheduler", opt, t_initial=total, lr_min=lr_min)

    return _schedule("cosine", main, relative=True, timm_args={
        "sched": "cosine", "min_lr": lr_min, "warmup_prefix": True, "sched_on_updates": True})


@register_trick("cyclic", kind="schedule", section="Smith 2017 (cyclical learning rates), sections 3.2-3.3",
                implemented_by="torch.optim.lr_scheduler.CyclicLR")
def cyclic(*, base_lr_factor: float = 0.25, step_size_epochs: float = 4.0,
           mode: Literal["triangular", "triangular2", "exp_range"] = "triangular",
           gamma: float = 1.0) -> Schedule:
    """Cyclical LR: triangular cycles between ``base * base_lr_factor`` and the base LR.

    Smith 2017, "Cyclical Learning Rates for Training Neural Networks", sections 3.2-3.3: half-cycle
    (``stepsize``) of 2-10 epochs and a lower bound of 1/3 to 1/4 of the upper one. torch's ``CyclicLR``
    computes it (``cycle_momentum=False``), after warmup; ``gamma`` is for ``exp_range``. Not in timm.
    """
    check_param(0 <= base_lr_factor < 1, "cyclic", "base_lr_factor", f"must be in [0, 1), got {base_lr_factor}")
    check_param(step_size_epochs > 0, "cyclic", "step_size_epochs", f"must be > 0, got {step_size_epochs}")
    check_param(0 < gamma <= 1, "cyclic", "gamma", f"must be in (0, 1], got {gamma}")

    def main(opt: Any, total: int, spe: int) -> Any:
        from torch.optim.lr_scheduler import CyclicLR

        bases = [g["initial_lr"] for g in opt.param_groups]
        sched = CyclicLR(opt, base_lr=[b * base_lr_factor for b in bases], max_lr=bases,
                         step_size_up=max(1, round(step_size_epochs * spe)), mode=mode, gamma=gamma,
                         cycle_momentum=False)
        return _TorchPerIteration(sched)

    return _schedule("cyclic", main, relative=True, timm_args={})


# --------------------------------------------------------------------------------------------
# warmup


@register_trick("linear_warmup", kind="warmup", section="3.1 (Goyal et al. 2017, gradual warmup)",
                implemented_by="tricks_registry.tricks.schedules.WarmupScheduler")
def linear_warmup(*, epochs: float = 5.0, start_factor: float = 0.0,
                  form: Literal["timm", "paper"] = "timm") -> Warmup:
    """Linear warmup from 0 (or ``start_factor * base``) up to the base LR over the first ``epochs`` epochs.

    He et al. 2019, section 3.1 (Goyal et al. 2017, gradual warmup); composes with any schedule. With ``m``
    warmup batches:

    * ``form='paper'``: batch ``i``, ``1 <= i <= m``, gets ``i eta / m`` (the paper's words): the first batch
      ``eta / m``, batch ``m`` the base LR ``eta``. The published recipes' version 2 use it.
    * ``form='timm'`` (the default, so that version-1 recipes keep their meaning): timm's convention, step
      ``k = 0 .. m-1`` gets ``k eta / m``: the first batch runs at LR 0 and ``eta`` is reached one batch later,
      at batch ``m + 1``. timm's ``train.py`` (``--warmup-epochs``, ``--warmup-lr 0``) ramps this way.
    """
    check_param(epochs >= 0, "linear_warmup", "epochs", f"must be >= 0, got {epochs}")
    check_param(0 <= start_factor <= 1, "linear_warmup", "start_factor",
                f"must be in [0, 1], got {start_factor}")
    check_param(form in ("timm", "paper"), "linear_warmup", "form", f"must be 'paper' or 'timm', got {form!r}")
    return Warmup(epochs=epochs, mode="linear", start_factor=start_factor, form=form)


@register_trick("constant_warmup", kind="warmup", section="Goyal et al. 2017, section 2.2; He et al. 2016",
                implemented_by="tricks_registry.tricks.schedules.WarmupScheduler")
def constant_warmup(*, epochs: float = 5.0, factor: float = 0.1) -> Warmup:
    """Constant warmup: a small constant LR ``base * factor`` for ``epochs`` epochs, then the base LR.

    Goyal et al. 2017, section 2.2 ("constant warmup"), as He et al. 2016 did for ResNet-110 (LR 0.01,
    a tenth of the base, until training error falls below 80%).
    """
    check_param(epochs >= 0, "constant_warmup", "epochs", f"must be >= 0, got {epochs}")
    check_param(0 < factor <= 1, "constant_warmup", "factor", f"must be in (0, 1], got {factor}")
    return Warmup(epochs=epochs, mode="constant", start_factor=factor)


# --------------------------------------------------------------------------------------------
# LR scaling


def _linear_scale(global_batch: int, *, base_lr: float, base_batch: int) -> float:
    if isinstance(global_batch, bool) or not isinstance(global_batch, int) or global_batch < 1:
        raise TrickError(f"global batch must be a positive integer, got {global_batch!r}",
                         trick="linear_scaling", param="global_batch")
    return base_lr * global_batch / base_batch


@register_trick("linear_scaling", kind="lr_scaling", section="3.1 (Goyal et al. 2017)",
                implemented_by="tricks_registry (pure Python)")
def linear_scaling(*, base_lr: float = 0.1, base_batch: int = 256) -> LRScaling:
    """Linear scaling rule: LR = ``base_lr * global_batch / base_batch``.

    He et al. 2019, section 3.1 (Goyal et al. 2017): 0.1 for batch 256, so 0.4 for batch 1024.
    """
    check_param(base_lr > 0, "linear_scaling", "base_lr", f"must be > 0, got {base_lr}")
    check_param(base_batch > 0, "linear_scaling", "base_batch", f"must be > 0, got {base_batch}")
    return LRScaling(scale=functools.partial(_linear_scale, base_lr=base_lr, base_batch=base_batch))


def default_schedule() -> Schedule:
    """The schedule of a recipe that lists none: ``constant`` (the base LR after any warmup)."""
    return build_trick("constant")
