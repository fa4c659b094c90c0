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

    def trained_modules(self) -> dict[str, nn.Module]:
        """What training changes, by name; ``model`` is the one that is deployed."""
        return {"model": self.model}

    def forward(self, rgb: torch.Tensor, ir: torch.Tensor, labels: torch.Tensor,
                targets: None = None) -> tuple[torch.Tensor, Terms]:
        logits, _ = model_outputs(self.model, rgb, ir)
        return logits, {"bce": losses.bce(logits, labels, self.pos_weight)}


class RgbTeacher(nn.Module):
    """An RGB-only model (the ``bce`` control, for ``self_kd``) as a frozen teacher: it takes the
    teacher's (rgb, ir) and ignores ir; its embedding size is the model's."""

    modalities = "rgb"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.requires_grad_(False).eval()
        self.embed_dim: int = model.embed_dim

    def forward(self, rgb: torch.Tensor, ir: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(rgb)  # (B, 2), (B, D)


class Distiller(nn.Module):
    """Owns the frozen teacher; computes the raw terms ``terms`` for the student.

    The teacher stays in eval mode (BatchNorm statistics untouched) and runs without autograd.
    It is held outside the module tree: the task's parameters, state dict and DDP wrapper hold
    only what is trained. The L2 projector (student embedding -> teacher embedding size) is
    trained with the student and is not part of the deployed student; pass ``projector`` to go
    on training one (fine-tuning after pruning).
    """

    TERMS = ("kl", "l2", "contrastive", "bce")

    def __init__(self, student: nn.Module, teacher: nn.Module, terms: set[str] | list[str], *,
                 temperature: float = 4.0, pos_weight: torch.Tensor | None = None,
                 projector: nn.Module | None = None) -> None:
        super().__init__()
        unknown = set(terms) - set(self.TERMS)
        if unknown:
            raise ValueError(f"unknown loss terms {sorted(unknown)}")
        self.student = student
        self._frozen = (teacher.requires_grad_(False).eval(),)  # a tuple: not a registered submodule
        self.terms, self.temperature = set(terms), temperature
        if "l2" in self.terms:
            self.projector = projector or nn.Linear(student.embed_dim, teacher.embed_dim)
        else:
            self.projector = None
        self.register_buffer("pos_weight", pos_weight, persistent=False)

    @property
    def teacher(self) -> nn.Module:
        return self._frozen[0]

    def trained_modules(self) -> dict[str, nn.Module]:
        """What training changes, by name; ``model`` is the one that is deployed."""
        return {"model": self.student, **({"projector": self.projector} if self.projector else {})}

    def teacher_targets(self, rgb: torch.Tensor, ir: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen teacher's (logits (B, 2), embedding (B, Dt)), usable as loss targets."""
        self.teacher.eval()  # frozen: never let BatchNorm update its running statistics
        with torch.inference_mode():
            t_logits, t_embedding = model_outputs(self.teacher, rgb, ir)
        return t_logits.clone(), t_embedding.clone()  # clones leave inference mode

    def forward(self, rgb: torch.Tensor, ir: torch.Tensor, labels: torch.Tensor,
                targets: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, Terms]:
        logits, embedding = model_outputs(self.student, rgb, ir)  # (B, 2), (B, Ds)
        t_logits, t_embedding = targets if targets is not None else self.teacher_targets(rgb, ir)
        raw: Terms = {}
        if "kl" in self.terms:
            raw["kl"] = losses.binary_kl(logits, t_logits, self.temperature)
        if "l2" in self.terms:
            raw["l2"] = losses.feature_l2(self.projector(embedding), t_embedding)
        if "contrastive" in self.terms:
            raw["contrastive"] = losses.relational_distance(embedding, t_embedding)
        if "bce" in self.terms:  # unlabelled pairs (labels NaN) count in the KD terms only
            raw["bce"] = losses.masked_bce(logits, labels, pos_weight=self.pos_weight)
        return logits, raw
