"""Loss tricks against references: the paper's formulas (He et al. 2019, sections 5.2, 5.3), torch's
``cross_entropy(label_smoothing=)``, timm's ``SoftTargetCrossEntropy`` and ``LogitDistillationTask``."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tricks_registry
from tricks_registry import TrickError, build_trick, compose, get_trick
from tricks_registry.tricks.criterion import hard_to_soft
from tricks_registry.tricks.losses import distillation_loss, make_criterion

K = 7


def _onehot(labels, k=K):
    return F.one_hot(labels, k).float()


# ------------------------------------------------------------------ label smoothing


def test_registered_with_paper_defaults():
    spec = get_trick("label_smoothing")
    assert spec.kind == "loss"
    assert spec.param("epsilon").default == 0.1 and spec.param("form").default == "paper"
    assert get_trick("distillation").param("temperature").default == 20.0
    assert get_trick("distillation").param("teacher").default == "resnet152_v1d.gluon_in1k"
    assert get_trick("l1_regularization").kind == "loss"


def test_paper_form_puts_1_minus_eps_on_label_and_eps_over_k_minus_1_elsewhere():
    eps = 0.1
    part = build_trick("label_smoothing", epsilon=eps)
    labels = torch.tensor([0, 3, 6, 2])
    q = part.smooth(_onehot(labels))
    for i, y in enumerate(labels.tolist()):
        for c in range(K):
            expected = 1 - eps if c == y else eps / (K - 1)
            assert math.isclose(q[i, c].item(), expected, rel_tol=1e-6), (i, c)
    assert torch.allclose(q.sum(-1), torch.ones(len(labels)), atol=1e-6)


def test_uniform_form_with_soft_ce_equals_torch_cross_entropy_label_smoothing():
    torch.manual_seed(0)
    logits = torch.randn(16, K, dtype=torch.float64)
    labels = torch.randint(0, K, (16,))
    eps = 0.2
    part = build_trick("label_smoothing", epsilon=eps, form="uniform")
    pipe = compose([part])
    targets = pipe.label_smoothing.smooth(_onehot(labels).double())
    ours = make_criterion(pipe)(logits, targets)
    ref = F.cross_entropy(logits, labels, label_smoothing=eps)
    assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-12)
    # the paper's form is a different distribution, so a different loss
    paper = build_trick("label_smoothing", epsilon=eps).smooth(_onehot(labels).double())
    assert not torch.allclose(make_criterion(pipe)(logits, paper), ref)


@pytest.mark.parametrize("form", ["paper", "uniform"])
def test_smoothing_is_affine_so_it_commutes_with_mixing(form):
    part = build_trick("label_smoothing", epsilon=0.3, form=form)
    a, b = _onehot(torch.tensor([1, 2, 5])), _onehot(torch.tensor([4, 2, 0]))
    lam = 0.37
    assert torch.allclose(part.smooth(lam * a + (1 - lam) * b),
                          lam * part.smooth(a) + (1 - lam) * part.smooth(b), atol=1e-7)


@pytest.mark.parametrize("eps", [-0.1, 1.0, 1.5])
def test_bad_epsilon_raises(eps):
    with pytest.raises(TrickError) as err:
        build_trick("label_smoothing", epsilon=eps)
    assert err.value.trick == "label_smoothing" and err.value.param == "epsilon"


def test_bad_form_raises():
    with pytest.raises(TrickError) as err:
        build_trick("label_smoothing", form="timm")
    assert err.value.param == "form"


# ------------------------------------------------------------------ distillation


def _paper_distillation_by_hand(z, r, p, t):
    """sum_i -p_i log softmax(z)_i + T^2 sum_i -softmax(r/T)_i log softmax(z/T)_i, batch mean, by hand."""
    total = 0.0
    for zb, rb, pb in zip(z.tolist(), r.tolist(), p.tolist()):
        def softmax(v):
            m = max(v)
            e = [math.exp(x - m) for x in v]
            s = sum(e)
            return [x / s for x in e]
        q = softmax(zb)
        qt = softmax([x / t for x in zb])
        pt = softmax([x / t for x in rb])
        ce = -sum(pi * math.log(qi) for pi, qi in zip(pb, q))
        kd = -sum(pi * math.log(qi) for pi, qi in zip(pt, qt))
        total += ce + t * t * kd
    return total / len(z)


@pytest.mark.parametrize("t", [20.0, 3.0, 1.0])
def test_distillation_loss_equals_paper_formula(t):
    torch.manual_seed(1)
    z, r = torch.randn(5, K, dtype=torch.float64) * 4, torch.randn(5, K, dtype=torch.float64) * 4
    p = torch.softmax(torch.randn(5, K, dtype=torch.float64), -1)  # soft (e.g. mixed) targets
    part = build_trick("distillation", temperature=t)
    assert part.temperature == t and part.teacher == "resnet152_v1d.gluon_in1k"
    paper = _paper_distillation_by_hand(z, r, p, t)
    assert math.isclose(distillation_loss(z, r, p, t).item(), paper, rel_tol=1e-12)
    # the part logs the part that moves: the paper's value less T^2 times the teacher's softened entropy
    pt = torch.softmax(r / t, -1)
    entropy = -(pt * torch.log(pt)).sum(-1).mean().item()
    assert math.isclose(part.loss(z, r, p).item(), paper - t * t * entropy, rel_tol=1e-9)


@pytest.mark.parametrize("t", [20.0, 3.0])
def test_the_logged_distillation_loss_keeps_the_papers_gradient_exactly(t):
    torch.manual_seed(3)
    z, r = torch.randn(6, K) * 3, torch.randn(6, K) * 3
    p = torch.softmax(torch.randn(6, K), -1)
    za, zb = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    distillation_loss(za, r, p, t).backward()
    build_trick("distillation", temperature=t).loss(zb, r, p).backward()
    assert torch.equal(za.grad, zb.grad)


def test_the_logged_distillation_loss_starts_near_ln_c_not_t2_ln_c():
    torch.manual_seed(4)
    k, t = 10, 20.0
    z, r = torch.randn(64, k) * 0.01, torch.randn(64, k)  # an untrained student, a teacher of unit-scale logits
    p = torch.eye(k)[torch.randint(0, k, (64,))]
    logged = build_trick("distillation", temperature=t).loss(z, r, p).item()
    assert abs(logged - math.log(k)) < 1.0 and distillation_loss(z, r, p, t).item() > 0.9 * t * t * math.log(k)


class _FixedLogits(nn.Module):
    """A 'model' whose output is a parameter: lets timm's task run without a real network."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(logits.clone())
        self.num_classes, self.in_chans = logits.shape[-1], 3
        self.pretrained_cfg = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}

    def forward(self, x):
        return self.logits * 1.0


def test_distillation_gradient_matches_timm_logit_distillation_task():
    from timm.loss import SoftTargetCrossEntropy
    from timm.task import LogitDistillationTask
    from timm.task.distillation import DistillationTeacher

    torch.manual_seed(2)
    t = 20.0
    z, r = torch.randn(4, K) * 3, torch.randn(4, K) * 3
    p = torch.softmax(torch.randn(4, K), -1)
    student = _FixedLogits(z)
    task = LogitDistillationTask(student, DistillationTeacher(_FixedLogits(r)),
                                 criterion=SoftTargetCrossEntropy(), temperature=t, verbose=False)
    out = task(torch.zeros(4, 3, 2, 2), p)
    out["loss"].backward()
    timm_grad = student.logits.grad.clone()

    zz = z.clone().requires_grad_(True)
    ours = build_trick("distillation", temperature=t).loss(zz, r, p)
    ours.backward()
    assert torch.allclose(zz.grad, timm_grad, rtol=1e-5, atol=1e-7)
    # the logged value is timm's (CE + T^2 KL); the paper's CE form is larger by T^2 times the teacher's entropy
    assert torch.allclose(ours.detach(), out["loss"].detach(), rtol=1e-4)
    pt = torch.softmax(r / t, -1)
    entropy = -(pt * torch.log(pt)).sum(-1).mean()
    assert torch.allclose(distillation_loss(z, r, p, t) - out["loss"].detach(), t * t * entropy, rtol=1e-4)
    assert entropy > 0.1  # so the two values really differ


def test_distillation_bad_params():
    with pytest.raises(TrickError) as err:
        build_trick("distillation", temperature=0.0)
    assert err.value.param == "temperature"
    with pytest.raises(TrickError) as err:
        build_trick("distillation", teacher="no_such_net_xyz")
    assert err.value.param == "teacher"


# ------------------------------------------------------------------ L1 penalty


def _tiny_model():
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 2 * 2, 5), nn.Conv1d(1, 2, 1, bias=False))


def test_l1_penalty_equals_hand_sum_over_conv_and_linear_weights():
    model = _tiny_model()
    with torch.no_grad():
        model[1].weight.fill_(3.0)  # BN weight: must not count
    hand = 0.0
    for layer in (model[0], model[4], model[5]):
        hand += sum(abs(v) for v in layer.weight.detach().flatten().tolist())
    part = build_trick("l1_regularization", weight=1e-3)
    assert math.isclose(part.penalty(model).item(), 1e-3 * hand, rel_tol=1e-5)
    assert get_trick("l1_regularization").param("weight").default == 1e-5


def test_l1_bad_weight():
    with pytest.raises(TrickError) as err:
        build_trick("l1_regularization", weight=-1.0)
    assert err.value.param == "weight"


# ------------------------------------------------------------------ make_criterion


def test_plain_criterion_is_timm_soft_target_ce_and_takes_hard_labels():
    from timm.loss import SoftTargetCrossEntropy

    torch.manual_seed(4)
    logits, labels = torch.randn(6, K), torch.randint(0, K, (6,))
    crit = make_criterion(compose([]))
    soft = torch.softmax(torch.randn(6, K), -1)
    assert torch.equal(crit(logits, soft), SoftTargetCrossEntropy()(logits, soft))
    assert torch.allclose(crit(logits, labels), F.cross_entropy(logits, labels), atol=1e-6)
    assert torch.equal(hard_to_soft(labels, K), _onehot(labels))


def test_criterion_with_distillation_and_penalty():
    torch.manual_seed(5)
    model = _tiny_model()
    logits, teacher = torch.randn(6, K), torch.randn(6, K)
    soft = torch.softmax(torch.randn(6, K), -1)
    dist = build_trick("distillation", temperature=4.0)
    l1 = build_trick("l1_regularization", weight=0.01)
    crit = make_criterion(compose([dist, l1]), model)
    expected = dist.loss(logits, teacher, soft) + l1.penalty(model)
    assert torch.allclose(crit(logits, soft, teacher), expected, atol=1e-6)
    with pytest.raises(TrickError, match="teacher_logits"):
        crit(logits, soft)


def test_criterion_penalty_needs_model_and_shapes_must_match():
    with pytest.raises(TrickError, match="model"):
        make_criterion(compose([build_trick("l1_regularization")]))
    crit = make_criterion(compose([]))
    with pytest.raises(TrickError, match="shape"):
        crit(torch.randn(2, K), torch.rand(2, K + 1))


def test_criterion_does_not_register_the_model():
    model = _tiny_model()
    crit = make_criterion(compose([build_trick("l1_regularization")]), model)
    assert list(crit.parameters()) == [] and crit.state_dict() == {}


def test_registered_through_package():
    names = {t.name for t in tricks_registry.list_tricks("loss")}
    assert {"label_smoothing", "distillation", "l1_regularization"} <= names
