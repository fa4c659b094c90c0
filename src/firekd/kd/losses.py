"""Loss terms as pure functions of tensors. Weights are applied elsewhere, in one place."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def binary_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
              temperature: float) -> torch.Tensor:
    """Per-label Bernoulli KL(teacher || student) at temperature T, mean over labels and batch, x T^2.

    Fire and smoke are independent sigmoid outputs, so each label is its own two-outcome
    distribution; a softmax across the labels would make them compete. The T^2 factor keeps the
    gradient scale independent of T (Hinton et al.).
    """
    t = teacher_logits.float() / temperature  # (B, L)
    s = student_logits.float() / temperature
    p_t = torch.sigmoid(t)
    # log p = logsigmoid(x), log(1 - p) = logsigmoid(-x): stable for large |x|
    kl = p_t * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p_t) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    return kl.mean() * temperature**2


def bce(logits: torch.Tensor, labels: torch.Tensor,
        pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-label binary cross-entropy on logits (B, L) and 0/1 labels (B, L)."""
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float(), pos_weight=pos_weight)


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, *,
               pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """`bce` over the labelled entries only: an entry counts when its label is finite, so an
    unlabelled sample (labels NaN, both of them) adds nothing, its logits get zero gradient from this
    term, and the mean is over labelled entries (the loss weights keep their meaning in a batch that
    mixes labelled and unlabelled pairs). Equals `bce` when every label is finite; 0 with zero
    gradient when none is. No host sync: masks and sums stay on the device.
    """
    logits, labels = logits.float(), labels.float()
    labelled = torch.isfinite(labels)
    safe = torch.where(labelled, labels, torch.zeros_like(labels))  # NaN targets would poison the sum
    per_entry = F.binary_cross_entropy_with_logits(logits, safe, pos_weight=pos_weight, reduction="none")
    # where (not a product): a masked entry passes exactly zero gradient, even if its loss is inf
    total = torch.where(labelled, per_entry, torch.zeros_like(per_entry)).sum()
    return total / labelled.sum().clamp_min(1)


def feature_l2(student_projected: torch.Tensor, teacher_embedding: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the projected student embedding and the teacher's (B, D)."""
    return F.mse_loss(student_projected.float(), teacher_embedding.float())


def normalized_distances(embedding: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances (B, B) divided by their mean off-diagonal value."""
    e = embedding.float()
    d = torch.cdist(e, e)  # (B, B)
    b = len(e)
    # sum minus trace, not a boolean index (a host sync); cdist's matmul path (B > 25) can leave
    # the diagonal slightly above 0, so it is subtracted rather than assumed 0
    mean_off = (d.sum() - d.diagonal().sum()) / (b * (b - 1))
    return d / mean_off.clamp_min(1e-8)


def relational_distance(student_embedding: torch.Tensor,
                        teacher_embedding: torch.Tensor) -> torch.Tensor:
    """The spec's "contrastive" term: MSE between normalised pairwise distance matrices (RKD-D).

    Invariant to a global rescaling of either embedding, and needs no projector since only
    distances within each space are compared.
    """
    if len(student_embedding) < 2:
        return student_embedding.new_zeros(())
    return F.mse_loss(normalized_distances(student_embedding), normalized_distances(teacher_embedding))
