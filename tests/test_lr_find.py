"""The LR range test (Smith 2017, section 3.3) against problems whose answer is known: the ramps are the formulas,
the smoothing is the bias-corrected average, and on least squares, where plain SGD is unstable above 2 / lambda_max
(lambda_max the top eigenvalue of the Hessian), Smith's max LR sits below that threshold and near it and the detected
divergence just above it."""
from __future__ import annotations

import math

import pytest
import torch

from tricks_registry.errors import TrainingError
from tricks_registry.lr_find import describe, lr_ramp, read_bounds, result_of, suggest_lr, sweep, write_outputs


def test_ramps_are_linear_and_geometric():
    lin, exp = lr_ramp("linear", 0.01, 1.0, 100), lr_ramp("exp", 1e-5, 10.0, 61)
    for k in range(100):
        assert math.isclose(lin(k), 0.01 + 0.99 * k / 99, rel_tol=1e-12)
    for k in range(61):
        assert math.isclose(exp(k), 1e-5 * 10 ** (k / 10), rel_tol=1e-9)
    assert math.isclose(lin(99), 1.0) and math.isclose(exp(60), 10.0)
    with pytest.raises(TrainingError):
        lr_ramp("cosine", 0.01, 1.0, 10)
    with pytest.raises(TrainingError):
        lr_ramp("linear", 1.0, 0.1, 10)


def test_sweep_smooths_with_the_bias_corrected_average_and_stops_on_divergence():
    values = [5.0, 4.0, 3.0, 2.5, 2.0, 2.2, 3.0, 9.0, 40.0, 100.0, 1.0]
    it = iter(values)
    lrs, losses, smoothed, diverged = sweep(lambda lr: next(it), lambda k: 0.1 * (k + 1), len(values), beta=0.8)
    avg, ref = 0.0, []
    for k, v in enumerate(losses):
        avg = 0.8 * avg + 0.2 * v
        ref.append(avg / (1 - 0.8 ** (k + 1)))
    assert smoothed == pytest.approx(ref, rel=1e-12)
    assert smoothed[0] == values[0]
    assert diverged and losses == values[:len(losses)] and len(losses) < len(values)
    assert smoothed[-1] > 4 * min(smoothed) >= smoothed[-2] * 0 and all(s <= 4 * min(smoothed) for s in smoothed[:-1])
    *_, ok = sweep(lambda lr: float("nan"), lambda k: 1.0, 5)
    assert ok


def test_suggestion_is_steepest_descent_on_the_ramps_axis():
    lrs = [0.1 * (k + 1) for k in range(9)]
    smoothed = [1.0, 0.99, 0.9, 0.6, 0.5, 0.45, 0.44, 0.5, 0.9]
    assert suggest_lr(lrs, smoothed, "linear") == lrs[3]  # central differences -0.5, -1.95, -2.0, -0.75 ... per LR
    base, max_lr, diverge = read_bounds(lrs, smoothed, smoothed, diverged=True)
    assert max_lr == lrs[6] and diverge == lrs[-1]
    assert base == lrs[2]  # the fall is 0.56: a tenth of it (0.056) is reached at index 2
    assert read_bounds(lrs, smoothed, smoothed, diverged=False)[2] is None


def _least_squares(seed: int, n: int = 2048, d: int = 32) -> tuple[torch.Tensor, torch.Tensor, float, torch.Generator]:
    """X with singular values sqrt(n) x 0.1 .. 2 (Hessian of 0.5 mean (Xw - y)^2 with eigenvalues 0.01 .. 4), noisy y."""
    g = torch.Generator().manual_seed(seed)
    q1, _ = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    x = math.sqrt(n) * q1 @ torch.diag(torch.linspace(0.1, 2.0, d, dtype=torch.float64)) @ q2.T
    y = x @ torch.randn(d, generator=g, dtype=torch.float64) + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    lam = torch.linalg.eigvalsh(x.T @ x / n).max().item()
    assert math.isclose(lam, 4.0, rel_tol=1e-9)
    return x, y, lam, g


@pytest.mark.parametrize("mode, span, above", [("linear", (1 / 50, 1.5), 1.25), ("exp", (1 / 100, 3.0), 1.5)])
@pytest.mark.parametrize("seed", [0, 1])
def test_least_squares_max_lr_sits_below_two_over_lambda_and_near_it(mode, span, above, seed):
    x, y, lam, g = _least_squares(seed)
    crit = 2 / lam  # plain SGD on this quadratic is unstable above it
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.0)

    def step(lr: float) -> float:  # one plain SGD step on a minibatch of 256
        idx = torch.randint(0, len(x), (256,), generator=g)
        for group in opt.param_groups:
            group["lr"] = lr
        loss = 0.5 * ((x[idx] @ w - y[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    lrs, losses, smoothed, diverged = sweep(step, lr_ramp(mode, span[0] * crit, span[1] * crit, 300), 300)
    r = result_of(lrs, losses, smoothed, diverged=diverged, mode=mode)
    assert diverged and r.diverge_lr == lrs[-1]
    assert 0.5 * crit < r.max_lr < crit                 # Smith's max: below the threshold, and near it
    assert crit < r.diverge_lr < above * crit           # seen diverging just after crossing it
    assert r.base_lr < r.max_lr and r.suggested_lr < crit
    assert r.base_lr < 0.1 * crit                       # the loss falls from the start of the ramp


def test_outputs_and_report(tmp_path):
    lrs = [0.1 * (k + 1) for k in range(9)]
    smoothed = [1.0, 0.99, 0.9, 0.6, 0.5, 0.45, 0.44, 0.5, 0.9]
    r = result_of(lrs, smoothed, smoothed, diverged=True, mode="linear")
    text = describe(r, 0.4)
    assert "suggested base LR: 0.4" in text and "Smith's bounds (linear ramp): base LR 0.3" in text
    assert "max LR 0.7" in text and "diverged at LR 0.9" in text and "recipe's LR: 0.4" in text
    csv, png = write_outputs(r, tmp_path, "t")
    assert csv.read_text().splitlines()[0] == "lr,loss,smoothed_loss" and png.stat().st_size > 1000
