"""Correctness rules 1 and 6: the per-label binary KL and the relational distance term."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import expit, rel_entr

from firekd.errors import ConfigError
from firekd.kd import losses
from firekd.kd.variants import VARIANTS, check_loss_weights, parse_loss_weights, variant_weights


def _reference_binary_kl(s: np.ndarray, t: np.ndarray, T: float) -> float:
    p, q = expit(t / T), expit(s / T)
    kl = rel_entr(p, q) + rel_entr(1 - p, 1 - q)
    return float(kl.mean() * T**2)


def test_binary_kl_golden_value():
    # teacher p = 0.75 (logit ln 3), student p = 0.5, T = 1: 0.75 ln 1.5 + 0.25 ln 0.5
    value = losses.binary_kl(torch.tensor([[0.0]]), torch.tensor([[math.log(3)]]), 1.0)
    assert value.item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), abs=1e-6)
    assert value.item() == pytest.approx(0.130812, abs=1e-6)


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0, 8.0])
def test_binary_kl_matches_reference_at_temperature(T: float):
    rng = np.random.default_rng(int(T))
    s, t = rng.normal(0, 3, (16, 2)), rng.normal(0, 3, (16, 2))
    got = losses.binary_kl(torch.tensor(s), torch.tensor(t), T).item()
    assert got == pytest.approx(_reference_binary_kl(s, t, T), rel=1e-5)


def test_binary_kl_is_zero_for_equal_logits_and_positive_otherwise():
    t = torch.randn(8, 2) * 4
    assert losses.binary_kl(t.clone(), t, 4.0).item() == pytest.approx(0.0, abs=1e-7)
    assert losses.binary_kl(t + 1, t, 4.0).item() > 0


def test_binary_kl_t_squared_scaling():
    s, t = torch.randn(8, 2) * 3, torch.randn(8, 2) * 3
    T = 4.0
    tempered = losses.binary_kl(s / T, t / T, 1.0)  # KL of the softened distributions
    assert losses.binary_kl(s, t, T).item() == pytest.approx(T**2 * tempered.item(), rel=1e-6)


def test_binary_kl_is_not_a_softmax_over_labels():
    """Both labels on in the teacher: a softmax KL across labels sees no difference between
    (on, on) and (off, off); the per-label Bernoulli KL does."""
    teacher = torch.tensor([[5.0, 5.0]])
    student = torch.tensor([[-5.0, -5.0]])
    softmax_kl = torch.nn.functional.kl_div(torch.log_softmax(student, 1), torch.softmax(teacher, 1),
                                            reduction="batchmean")
    assert softmax_kl.item() == pytest.approx(0.0, abs=1e-7)
    assert losses.binary_kl(student, teacher, 1.0).item() > 4


def test_binary_kl_is_stable_for_extreme_logits():
    value = losses.binary_kl(torch.tensor([[-80.0, 90.0]]), torch.tensor([[90.0, -80.0]]), 1.0)
    assert torch.isfinite(value) and value.item() > 50


def test_relational_distance_invariant_to_global_rescaling():
    s, t = torch.randn(12, 32), torch.randn(12, 256)
    base = losses.relational_distance(s, t)
    assert base.item() > 0
    assert losses.relational_distance(3.7 * s, t).item() == pytest.approx(base.item(), rel=1e-5)
    assert losses.relational_distance(s, 0.02 * t).item() == pytest.approx(base.item(), rel=1e-5)


def test_relational_distance_zero_when_geometry_matches():
    t = torch.randn(10, 16)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16))
    assert losses.relational_distance(5 * t @ rotation, t).item() == pytest.approx(0.0, abs=1e-6)


def test_relational_distance_uses_mean_off_diagonal_normalisation():
    e = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 8.0]])
    d = losses.normalized_distances(e)
    raw = torch.cdist(e, e)
    mean_off = raw[~torch.eye(3, dtype=torch.bool)].mean()
    assert torch.allclose(d, raw / mean_off)
    assert torch.allclose(d.diagonal(), torch.zeros(3))


@pytest.mark.parametrize("n", [2, 7, 64])  # 64: cdist's matmul path, whose diagonal is not exactly 0
def test_normalized_distances_equal_the_boolean_mask_version(n):
    e = 40 + torch.randn(n, 96, generator=torch.Generator().manual_seed(n))  # large norms
    raw = torch.cdist(e, e)
    expect = raw / raw[~torch.eye(n, dtype=torch.bool)].mean()
    assert torch.allclose(losses.normalized_distances(e), expect, rtol=1e-5, atol=0)


def test_normalized_distances_read_nothing_back_to_the_host():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.__name__)
            return func(*args, **(kwargs or {}))

    with Ops() as ops:
        losses.relational_distance(torch.randn(8, 4), torch.randn(8, 6))
    # a boolean index reads the mask's count back (nonzero): a sync on CUDA
    assert not {"nonzero.default", "_local_scalar_dense.default", "index.Tensor"} & set(ops.names)


def test_feature_l2_and_bce_are_the_standard_ones():
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    assert losses.feature_l2(a, b).item() == pytest.approx(((a - b) ** 2).mean().item(), rel=1e-6)
    logits, labels = torch.randn(4, 2), torch.randint(0, 2, (4, 2)).float()
    ref = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    assert losses.bce(logits, labels).item() == pytest.approx(ref.item(), rel=1e-6)


def test_variant_weights_are_the_specs():
    assert VARIANTS["kl_bce"] == {"kl": 0.7, "bce": 0.3}
    assert VARIANTS["kl_l2_bce"] == {"kl": 0.5, "l2": 0.2, "bce": 0.3}
    assert VARIANTS["kl_contrastive_l2_bce"] == {"kl": 0.4, "contrastive": 0.2, "l2": 0.2, "bce": 0.2}
    assert VARIANTS["bce"] == {"bce": 1.0}


def test_loss_weight_overrides():
    override = parse_loss_weights(["kl=0.6", "bce=0.4"])
    assert variant_weights("kl_l2_bce", override) == {"kl": 0.6, "l2": 0.2, "bce": 0.4}
    with pytest.raises(ConfigError, match="no selected variant has the term 'l2'"):
        check_loss_weights(["kl_bce"], {"l2": 0.1})
    with pytest.raises(ConfigError, match="expected TERM=WEIGHT"):
        parse_loss_weights(["kl:0.5"])
    with pytest.raises(ConfigError, match="unknown loss variant 'kl_mse'"):
        variant_weights("kl_mse")
