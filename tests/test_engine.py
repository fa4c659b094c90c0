"""The epoch loop's pieces: schedule, early stopping, compile, checkpoint state."""

from __future__ import annotations

import math

import pytest
import torch

from firekd.engine.early_stopping import EarlyStopping
from firekd.engine.loop import FitConfig, make_optimizer, warmup_cosine
from firekd.engine.runtime import Runtime
from firekd.models import create_student


def test_warmup_then_cosine_to_zero():
    factors = [warmup_cosine(s, warmup=10, total=100) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:], strict=False))  # monotone decay
    assert factors[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert warmup_cosine(99, warmup=10, total=100) < 0.001


@pytest.mark.parametrize("epochs,steps", [(1, 1), (2, 5), (3, 7)])
def test_schedule_works_for_very_short_runs(epochs: int, steps: int):
    model = torch.nn.Linear(2, 2)
    cfg = FitConfig(kind="x", label="x", epochs=epochs, lr=0.1, weight_decay=0.0, patience=1, weights={}, seed=0)
    opt, sched = make_optimizer(model, cfg, steps)
    lrs = []
    for _ in range(epochs * steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(lrs) == pytest.approx(0.1) and all(lr > 0 for lr in lrs)
    state = sched.state_dict()  # resumable, and safe for weights_only loading
    assert all(not callable(v) for v in state.values())


def test_early_stopping_counts_epochs_without_improvement_and_restores_state():
    stop = EarlyStopping(patience=2)
    assert stop.step(0.5, 1) and not stop.step(0.4, 2) and not stop.should_stop
    assert not stop.step(0.5, 3) and stop.should_stop  # equal is not better
    again = EarlyStopping(patience=2)
    again.load_state_dict(stop.state_dict())
    assert (again.best_score, again.best_epoch, again.should_stop) == (0.5, 1, True)


@pytest.mark.slow
def test_compiled_model_keeps_plain_state_dict_keys_and_outputs():
    torch.manual_seed(0)
    model = create_student("firekd_student").eval()
    plain_keys = list(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)[0]
    compiled = Runtime(torch.device("cpu")).prepare_model(model, compile=True)
    assert list(compiled.state_dict()) == plain_keys
    assert torch.allclose(compiled(x)[0], expected, atol=1e-4)


def test_a_distributed_rank_keeps_its_lone_partial_batch():
    from torch.utils.data import DistributedSampler

    from firekd.data.dataset import make_loader

    samples = list(range(100))  # 50 per rank: less than a batch of 64, but not nothing
    sampler = DistributedSampler(samples, num_replicas=2, rank=0, shuffle=True, seed=0)
    loader = make_loader(samples, batch_size=64, train=True, transform=None, sampler=sampler)
    assert len(loader) == 1
    whole = make_loader(samples, batch_size=64, train=True, transform=None)
    assert len(whole) == 1  # one process: 100 samples, the partial batch of 36 is dropped


def test_evaluation_runs_outside_autocast():
    """bf16 logits tie in the threshold search and in AUROC/AP: evaluation is fp32 on every device."""
    from firekd.engine.loop import predict, validate

    class NoAutocast(Runtime):
        def autocast(self):
            raise AssertionError("evaluation entered autocast")

    model = create_student("firekd_student").eval()
    batches = [(torch.randn(4, 3, 32, 32), torch.zeros(4, 0, 32, 32), torch.tensor([[1.0, 0.0]] * 4),
                torch.arange(4))]
    rt = NoAutocast(torch.device("cpu"))
    assert predict(model, batches, rt).probs.dtype.name == "float32"
    from firekd.kd.distiller import Supervised

    cfg = FitConfig(kind="x", label="x", epochs=1, lr=0.1, weight_decay=0.0, patience=1, weights={"bce": 1.0},
                    seed=0)
    assert "val_f1_macro" in validate([Supervised(model)], [cfg], batches, rt)[0]


def test_a_diverging_lockstep_member_stops_alone():
    """A member whose loss becomes non-finite stops with its error; the others train on unchanged."""
    from firekd.engine.loop import Member, fit_many
    from firekd.errors import TrainingError
    from firekd.kd.distiller import Supervised

    torch.manual_seed(0)
    batches = [(torch.randn(8, 3, 32, 32), torch.zeros(8, 0, 32, 32), torch.randint(0, 2, (8, 2)).float(),
                torch.arange(8)) for _ in range(2)]
    rt = Runtime(torch.device("cpu"))

    def member(lr: float) -> Member:
        torch.manual_seed(0)
        cfg = FitConfig(kind="student", label=f"student lr={lr}", epochs=2, lr=lr, weight_decay=0.0, patience=5,
                        weights={"bce": 1.0}, seed=0, log_every=1)
        return Member(Supervised(create_student("firekd_student")), cfg)

    alone = fit_many([member(1e-3)], batches, batches, rt)[0]
    diverged, healthy = fit_many([member(1e30), member(1e-3)], batches, batches, rt)
    assert "the loss became" in diverged.error and healthy.error is None
    assert [r["train_loss"] for r in healthy.history] == [r["train_loss"] for r in alone.history]
    with pytest.raises(TrainingError, match="the loss became"):
        fit_many([member(1e30)], batches, batches, rt)
