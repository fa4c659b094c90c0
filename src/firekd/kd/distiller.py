"""Training tasks: each returns ``(logits, {term: raw_value})`` for a batch; the trainer applies
the weights, so a new loss term needs no trainer change (mdistiller's contract)."""

from __future__ import annotations

import torch
from torch import nn

from firekd.kd import losses

Terms = dict[str, torch.Tensor]


def model_outputs(model: nn.Module, rgb: torch.Tensor,
                  ir: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, embedding) of a teacher (RGB+IR or RGB) or of the RGB-only student."""
    if getattr(model, "modalities", "rgb") == "rgb+ir":
        return model(rgb, ir)
    return model(rgb)


class Supervised(nn.Module):
    """A model trained on labels alone: the teacher stage and the ``bce`` control."""

    def __init__(self, model: nn.Module, pos_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("pos_weight", pos_weight, persistent=False)

    def forward(self, rgb: torch.Tensor, ir: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        logits, _ = model_outputs(self.model, rgb, ir)
        return logits, {"bce": losses.bce(logits, labels, self.pos_weight)}


class Distiller(nn.Module):
    """Owns the frozen teacher; computes the raw terms ``terms`` for the student.

    The teacher stays in eval mode (BatchNorm statistics untouched) and runs without autograd.
    The L2 projector (student embedding -> teacher embedding size) is trained with the student
    and is not part of the deployed student.
    """

    TERMS = ("kl", "l2", "contrastive", "bce")

    def __init__(self, student: nn.Module, teacher: nn.Module, terms: set[str] | list[str], *,
                 temperature: float = 4.0, pos_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        unknown = set(terms) - set(self.TERMS)
        if unknown:
            raise ValueError(f"unknown loss terms {sorted(unknown)}")
        self.student, self.teacher = student, teacher
        self.terms, self.temperature = set(terms), temperature
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.projector = (nn.Linear(student.embed_dim, teacher.embed_dim)
                          if "l2" in self.terms else None)
        self.register_buffer("pos_weight", pos_weight, persistent=False)

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        self.teacher.eval()  # frozen: never let BatchNorm update its running statistics
        return self

    def forward(self, rgb: torch.Tensor, ir: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        logits, embedding = model_outputs(self.student, rgb, ir)  # (B, 2), (B, Ds)
        with torch.inference_mode():
            t_logits, t_embedding = model_outputs(self.teacher, rgb, ir)  # (B, 2), (B, Dt)
        t_logits, t_embedding = t_logits.clone(), t_embedding.clone()  # usable as loss targets
        raw: Terms = {}
        if "kl" in self.terms:
            raw["kl"] = losses.binary_kl(logits, t_logits, self.temperature)
        if "l2" in self.terms:
            raw["l2"] = losses.feature_l2(self.projector(embedding), t_embedding)
        if "contrastive" in self.terms:
            raw["contrastive"] = losses.relational_distance(embedding, t_embedding)
        if "bce" in self.terms:
            raw["bce"] = losses.bce(logits, labels, self.pos_weight)
        return logits, raw
