"""Correctness rules 2, 4 and 5 on real models: one loader feeds teacher and student the same
view; the teacher stays frozen; the L2 projector is trained but never deployed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from firekd.data.dataset import PairedDataset, make_loader
from firekd.data.transforms import PairedTransform
from firekd.engine.loop import FitConfig, fit
from firekd.engine.runtime import Runtime
from firekd.kd.distiller import Distiller
from firekd.models import create_student, create_teacher
from firekd.normalization import IR_MEAN, IR_STD, RGB_MEAN, RGB_STD

SIZE = 32


class IndexImages:
    """Sample i is a constant image of value i in RGB and IR: the pixels say which sample it is."""

    def __call__(self, position: int):
        return np.full((3, SIZE, SIZE), position, np.uint8), np.full((1, SIZE, SIZE), position, np.uint8)


class Recorder(torch.nn.Module):
    """Wraps a model and records the inputs of every call."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, []
        self.embed_dim, self.modalities = model.embed_dim, model.modalities

    def forward(self, rgb, ir=None):
        self.calls.append((rgb.detach().clone(), None if ir is None else ir.detach().clone()))
        return self.model(rgb, ir) if ir is not None else self.model(rgb)


def _loader(n: int = 48, jitter: bool = True):
    records = pd.DataFrame({"row": np.arange(n) + 2, "fire": np.arange(n) % 2,
                            "smoke": (np.arange(n) // 2) % 2, "rgb_path": "", "ir_path": ""})
    dataset = PairedDataset(records, np.arange(n), IndexImages())
    tf = PairedTransform(SIZE, train=True, rgb_jitter=0.3 * jitter, ir_jitter=0.1 * jitter)
    return make_loader(dataset, batch_size=16, train=True, transform=tf, seed=0,
                       generator=torch.Generator().manual_seed(0))


def _models():
    torch.manual_seed(0)
    teacher = create_teacher("resnet18", img_size=SIZE, pretrained=False)
    student = create_student("firekd_student")
    return teacher, student


def _epoch(task, loader, terms):
    """One epoch of the loop: training on ``loader``, then validation on one more batch."""
    cfg = FitConfig(kind="student", label="student", epochs=1, lr=1e-2, weight_decay=0.0, patience=1,
                    weights=dict.fromkeys(terms, 1.0), seed=0)
    return fit(task, loader, _loader(n=16, jitter=False), cfg, Runtime(torch.device("cpu")))


def test_teacher_and_student_see_the_same_samples_in_the_same_view():
    teacher, student = _models()
    rec_t, rec_s = Recorder(teacher), Recorder(student)
    task = Distiller(rec_s, rec_t, {"kl", "bce"})
    loader = _loader(jitter=False)
    _epoch(task, loader, {"kl", "bce"})
    assert len(rec_t.calls) == len(rec_s.calls) == len(loader) + 1  # training, then one validation batch
    seen = []
    for (t_rgb, t_ir), (s_rgb, _) in zip(rec_t.calls[:-1], rec_s.calls[:-1], strict=True):
        assert torch.equal(t_rgb, s_rgb)  # the very same augmented view
        c = SIZE // 2  # the centre pixel survives crop/rotation: it names the sample
        rgb_id = (t_rgb[:, 0, c, c] * RGB_STD[0] + RGB_MEAN[0]) * 255
        ir_id = (t_ir[:, 0, c, c] * IR_STD + IR_MEAN) * 255
        assert torch.allclose(rgb_id, ir_id, atol=0.5)  # IR of the same sample as RGB
        seen += rgb_id.round().int().tolist()
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 48  # each sample once, shuffled
    assert seen != sorted(seen)


def test_teacher_stays_frozen_in_eval_mode_with_untouched_batchnorm():
    teacher, student = _models()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    task = Distiller(student, teacher, {"kl", "l2", "contrastive", "bce"})
    task.train()
    assert not teacher.training and student.training
    student_before = [p.clone() for p in student.parameters()]
    _epoch(task, _loader(), {"kl", "l2", "contrastive", "bce"})
    assert not teacher.training
    after = teacher.state_dict()
    assert any("running_mean" in k for k in before)
    for key, value in before.items():  # weights and BatchNorm running stats / counters
        assert torch.equal(value, after[key]), key
    assert all(p.grad is None for p in teacher.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(student_before, student.parameters(), strict=True))


def test_projector_is_trained_and_not_part_of_the_student():
    teacher, student = _models()
    task = Distiller(student, teacher, {"kl", "l2", "bce"})
    assert task.projector.in_features == student.embed_dim
    assert task.projector.out_features == teacher.embed_dim
    w0 = task.projector.weight.clone()
    _epoch(task, _loader(), {"kl", "l2", "bce"})
    assert not torch.equal(w0, task.projector.weight)  # trained with the student
    assert not any("projector" in k for k in student.state_dict())
    fresh = create_student("firekd_student")
    fresh.load_state_dict(student.state_dict(), strict=True)  # the deployed student is complete


@pytest.mark.parametrize("terms", [{"kl", "bce"}, {"contrastive", "bce"}])
def test_no_projector_without_the_l2_term(terms):
    teacher, student = _models()
    assert Distiller(student, teacher, terms).projector is None


def test_unlabelled_pairs_reach_the_kd_terms_and_never_the_bce():
    """A batch mixing labelled and unlabelled pairs (labels NaN): the distiller's `bce` is the BCE of
    the labelled rows alone, and an unlabelled row's logits get gradient from the KD term only."""
    from firekd.kd import losses

    teacher, student = _models()
    task = Distiller(student.eval(), teacher, {"kl", "bce"})  # eval: BatchNorm does not mix the rows
    g = torch.Generator().manual_seed(0)
    rgb, ir = torch.randn(6, 3, SIZE, SIZE, generator=g), torch.randn(6, 1, SIZE, SIZE, generator=g)
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]] + [[float("nan")] * 2] * 2)
    logits, raw = task(rgb, ir, labels)
    torch.testing.assert_close(raw["bce"], losses.bce(logits[:4], labels[:4], None))
    (bce_grad,) = torch.autograd.grad(raw["bce"], logits, retain_graph=True)
    (kl_grad,) = torch.autograd.grad(raw["kl"], logits)
    assert (bce_grad[4:] == 0).all() and (bce_grad[:4] != 0).all()
    assert (kl_grad[4:] != 0).all()
