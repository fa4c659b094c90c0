"""The masked BCE of unlabelled pairs: an unlabelled sample has NaN labels; BCE is averaged over
the labelled entries only, equals the plain BCE when all are labelled (value and gradient, with and
without pos_weight), ignores unlabelled samples, and is 0 with zero gradient when none is labelled."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import expit

from firekd.kd import losses

NAN = float("nan")


def _reference(logits: np.ndarray, labels: np.ndarray, pos_weight=None) -> tuple[float, np.ndarray]:
    """Loss and gradient in numpy: mean over the finite labels of
    -(w y log p + (1 - y) log(1 - p)); d/dx = (-(w y (1 - p)) + (1 - y) p) / count."""
    w = np.ones(logits.shape[1]) if pos_weight is None else np.asarray(pos_weight, float)
    mask = np.isfinite(labels)
    y, p = np.where(mask, labels, 0.0), expit(logits)
    per = -(w * y * np.log(p) + (1 - y) * np.log1p(-p))
    count = max(int(mask.sum()), 1)
    grad = np.where(mask, -w * y * (1 - p) + (1 - y) * p, 0.0) / count
    return float(np.where(mask, per, 0.0).sum() / count), grad


def _value_and_grad(fn, logits: np.ndarray, labels: np.ndarray, **kwargs) -> tuple[float, np.ndarray]:
    x = torch.tensor(logits, dtype=torch.float32, requires_grad=True)
    value = fn(x, torch.tensor(labels, dtype=torch.float32), **kwargs)
    value.backward()
    return value.item(), x.grad.numpy()


def _seeded(seed: int, n: int = 16, unlabelled: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (n, 2))
    labels = rng.integers(0, 2, (n, 2)).astype(float)
    labels[rng.choice(n, unlabelled, replace=False)] = NAN
    return logits, labels


def test_golden_values_by_hand():
    # labelled (x=0, y=1): ln 2; (x=ln 3, y=0): -ln(1 - 0.75) = ln 4; the NaN row adds nothing
    logits = np.array([[0.0, math.log(3)], [2.0, -1.0]])
    labels = np.array([[1.0, 0.0], [NAN, NAN]])
    value, grad = _value_and_grad(losses.masked_bce, logits, labels)
    assert value == pytest.approx(1.5 * math.log(2), abs=1e-6)
    # d/dx = (p - y) / 2 on the labelled entries: (0.5 - 1) / 2, 0.75 / 2; zero on the unlabelled row
    assert grad == pytest.approx(np.array([[-0.25, 0.375], [0.0, 0.0]]), abs=1e-6)
    # pos_weight (2, 3) doubles the positive entry only: (2 ln 2 + ln 4) / 2 = 2 ln 2
    value, grad = _value_and_grad(losses.masked_bce, logits, labels, pos_weight=torch.tensor([2.0, 3.0]))
    assert value == pytest.approx(2 * math.log(2), abs=1e-6)
    assert grad == pytest.approx(np.array([[-0.5, 0.375], [0.0, 0.0]]), abs=1e-6)


@pytest.mark.parametrize("pos_weight", [None, (2.5, 0.7)])
def test_equals_plain_bce_when_every_sample_is_labelled(pos_weight):
    logits, labels = _seeded(0)
    weight = None if pos_weight is None else torch.tensor(pos_weight)
    masked = _value_and_grad(losses.masked_bce, logits, labels, pos_weight=weight)
    plain = _value_and_grad(lambda x, y, pos_weight: losses.bce(x, y, pos_weight), logits, labels,
                            pos_weight=weight)
    assert masked[0] == pytest.approx(plain[0], rel=1e-6)
    assert masked[1] == pytest.approx(plain[1], rel=1e-5, abs=1e-9)
    ref_value, ref_grad = _reference(logits, labels, pos_weight)
    assert masked[0] == pytest.approx(ref_value, rel=1e-6)
    assert masked[1] == pytest.approx(ref_grad, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("pos_weight", [None, (2.5, 0.7)])
def test_ignores_unlabelled_samples(pos_weight):
    logits, labels = _seeded(1, n=16, unlabelled=6)
    weight = None if pos_weight is None else torch.tensor(pos_weight)
    value, grad = _value_and_grad(losses.masked_bce, logits, labels, pos_weight=weight)
    ref_value, ref_grad = _reference(logits, labels, pos_weight)
    assert value == pytest.approx(ref_value, rel=1e-6)
    assert grad == pytest.approx(ref_grad, rel=1e-5, abs=1e-9)
    unlabelled = np.isnan(labels).all(axis=1)
    assert (grad[unlabelled] == 0).all() and (grad[~unlabelled] != 0).all()
    # = plain BCE on the labelled rows alone: averaged over labelled samples, not the whole batch
    subset = losses.bce(torch.tensor(logits[~unlabelled]), torch.tensor(labels[~unlabelled]), weight)
    assert value == pytest.approx(subset.item(), rel=1e-6)
    # whatever the unlabelled samples' logits are, nothing changes
    moved = logits.copy()
    moved[unlabelled] = np.random.default_rng(9).normal(0, 50, (int(unlabelled.sum()), 2))
    assert _value_and_grad(losses.masked_bce, moved, labels, pos_weight=weight)[0] == pytest.approx(value)


@pytest.mark.parametrize("pos_weight", [None, torch.tensor([2.5, 0.7])])
def test_a_batch_without_labelled_sample_gives_zero_and_zero_gradient(pos_weight):
    logits, labels = _seeded(2, n=8, unlabelled=8)
    value, grad = _value_and_grad(losses.masked_bce, logits, labels, pos_weight=pos_weight)
    assert value == 0.0 and (grad == 0).all()


def test_a_partly_labelled_sample_counts_its_finite_labels():
    logits = np.array([[0.0, 0.0], [0.0, 0.0]])
    labels = np.array([[1.0, NAN], [0.0, 1.0]])  # 3 labelled entries of ln 2 each
    value, _ = _value_and_grad(losses.masked_bce, logits, labels)
    assert value == pytest.approx(math.log(2), abs=1e-6)


def test_extreme_logits_of_unlabelled_samples_stay_out():
    logits = torch.tensor([[0.0, 0.0], [1e4, -1e4]], requires_grad=True)
    labels = torch.tensor([[1.0, 1.0], [NAN, NAN]])
    value = losses.masked_bce(logits, labels)
    value.backward()
    assert value.item() == pytest.approx(math.log(2), abs=1e-6)
    assert torch.equal(logits.grad[1], torch.zeros(2))


def test_no_data_dependent_shapes_or_host_reads():
    """vmap refuses boolean indexing and .item(); the per-batch results match the unbatched ones.
    bf16 logits (autocast) are computed in float32."""
    batches = [_seeded(seed, n=8, unlabelled=k) for seed, k in ((3, 0), (4, 3), (5, 8))]
    logits = torch.tensor(np.stack([b[0] for b in batches]), dtype=torch.float32)
    labels = torch.tensor(np.stack([b[1] for b in batches]), dtype=torch.float32)
    batched = torch.vmap(losses.masked_bce)(logits, labels)
    single = torch.stack([losses.masked_bce(x, y) for x, y in zip(logits, labels, strict=True)])
    assert torch.allclose(batched, single) and batched[2].item() == 0.0
    low = losses.masked_bce(logits[1].bfloat16(), labels[1])
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(single[1].item(), rel=2e-2)
