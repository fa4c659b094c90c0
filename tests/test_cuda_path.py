"""The CUDA path's costs, checked on the CPU: the frozen teacher runs once per student stage on
validation, validation and prediction keep fp32 logits (TF32 on CUDA), prediction copies to the
host once per array, the teacher's throughput runs as training does."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from firekd.engine.loop import FitConfig, Member, fit_many, predict, validate
from firekd.engine.runtime import Runtime
from firekd.kd.distiller import Distiller

CPU = Runtime(torch.device("cpu"))


class TinyNet(nn.Module):
    """A student or (modalities="rgb+ir") a teacher: (logits (B,2), embedding (B,4)); counts its
    forward passes."""

    embed_dim = 4

    def __init__(self, modalities: str = "rgb") -> None:
        super().__init__()
        self.modalities, self.calls = modalities, 0
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4), nn.ReLU())
        self.head = nn.Linear(4, 2)

    def forward(self, rgb, ir=None):
        self.calls += 1
        embedding = self.body(rgb if ir is None else rgb + ir.mean(1, keepdim=True))
        return self.head(embedding), embedding


def batches(n: int, size: int = 8, seed: int = 0) -> list[tuple]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        rgb, ir = torch.randn(8, 3, size, size, generator=g), torch.randn(8, 1, size, size, generator=g)
        labels = torch.randint(0, 2, (8, 2), generator=g).float()
        out.append((rgb, ir, labels, torch.arange(8 * i, 8 * i + 8)))
    return out


def cfg(epochs: int = 3, weights=None) -> FitConfig:
    return FitConfig(kind="student", label="s", epochs=epochs, lr=1e-2, weight_decay=0.0, patience=100,
                     weights=weights or {"kl": 1.0, "contrastive": 1.0, "bce": 1.0}, seed=0)


def distiller(teacher: nn.Module) -> Distiller:
    torch.manual_seed(0)
    return Distiller(TinyNet(), teacher, {"kl", "contrastive", "bce"})


def test_the_teacher_runs_once_on_validation_per_stage():
    torch.manual_seed(1)
    teacher = TinyNet("rgb+ir")
    train, val = batches(4), batches(3, seed=1)
    fit_many([Member(distiller(teacher), cfg(epochs=3))], train, val, CPU)
    assert teacher.calls == 3 * len(train) + len(val)  # before: 3 * (len(train) + len(val))


def test_cached_validation_gives_the_uncached_results():
    torch.manual_seed(1)
    teacher = TinyNet("rgb+ir")
    tasks, val = [distiller(teacher), distiller(teacher)], batches(3, seed=1)
    plain = validate(tasks, [cfg()] * 2, val, CPU)
    cache: dict = {}
    first = validate(tasks, [cfg()] * 2, val, CPU, teacher_cache=cache)
    calls = teacher.calls
    again = validate(tasks, [cfg()] * 2, val, CPU, teacher_cache=cache)
    assert teacher.calls == calls  # read from the cache
    assert first == plain and again == plain


def test_evaluation_keeps_fp32_logits_and_enters_tf32_on_cuda_only(monkeypatch):
    """CPU: plain fp32, results those of a direct forward; CUDA (mocked): TF32 inside the block,
    the previous settings restored after."""
    from firekd.engine import runtime

    model = TinyNet().eval()
    val = batches(2)
    probs = predict(model, val, CPU).probs
    with torch.no_grad():
        direct = torch.cat([torch.sigmoid(model(b[0])[0]) for b in val]).numpy()
    assert probs.dtype.name == "float32" and (probs == direct).all()
    saved = runtime.tf32_flags()
    try:
        runtime.set_tf32_flags(("ieee", "ieee") if runtime._new_tf32_flags() else (False, False))
        before = runtime.tf32_flags()
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
        gpu = Runtime(torch.device("cuda", 0), amp=True)
        with gpu.eval_numerics():
            assert runtime.tf32_flags() == (("tf32", "tf32") if runtime._new_tf32_flags() else (True, True))
        assert runtime.tf32_flags() == before
        with CPU.eval_numerics():
            assert runtime.tf32_flags() == before
    finally:
        runtime.set_tf32_flags(saved)


def test_predict_copies_to_the_host_once_per_array(monkeypatch):
    copies = []
    cpu = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: copies.append(1) or cpu(self, *a, **k))
    pred = predict(TinyNet(), batches(6), CPU)
    assert len(pred.probs) == 48 and len(copies) <= 4  # before: 4 per batch


def test_teacher_throughput_runs_as_training_does(monkeypatch):
    """channels_last inputs only when the model was converted (Runtime.use_channels_last), and
    cuDNN autotuning on during the measurement, restored after."""
    from firekd.recipes import efficiency

    seen = {}

    def fake_throughput(run, batch):
        seen["benchmark"] = torch.backends.cudnn.benchmark
        seen["outputs"] = run()
        return 1.0

    calls = []
    model = TinyNet("rgb+ir")
    model.forward = lambda rgb, ir: calls.append(rgb.is_contiguous()) or (rgb[:, :2, 0, 0], rgb[:, :4, 0, 0])
    monkeypatch.setattr(efficiency, "cuda_throughput", fake_throughput)
    monkeypatch.setattr(efficiency, "CUDA_BATCH", 2)
    benchmark = torch.backends.cudnn.benchmark
    rt = Runtime(torch.device("cpu"), amp=True, channels_last=True)  # not converted: use_channels_last False
    assert efficiency.throughput(model, 8, 1, rt) == 1.0
    assert seen["benchmark"] is True and torch.backends.cudnn.benchmark == benchmark
    assert calls == [True]  # plain NCHW inputs for an NCHW model


@pytest.mark.parametrize("rank_free", [(10, 1), (1, 10)])
def test_grad_checkpointing_auto_is_rank_0s_decision(monkeypatch, rank_free):
    """Every rank follows rank 0's --grad_checkpointing auto (ranks that disagree under --sync_bn
    issue collectives on some ranks only and hang)."""
    from types import SimpleNamespace

    from firekd.recipes import teacher as stage

    decided, sent = [], []

    def from_main(value, rank):  # a broadcast from rank 0: ranks run one after the other here
        if rank == 0:
            sent.append(value)
        return sent[-1]

    for rank, free in enumerate(rank_free):
        monkeypatch.setattr(stage.distributed, "from_main", lambda value, rank=rank: from_main(value, rank))
        monkeypatch.setattr(stage, "free_device_bytes", lambda device, free=free: free)
        monkeypatch.setattr(stage, "should_checkpoint", lambda name, batch, size, free, **kw: free < 5)
        run = SimpleNamespace(cfg=SimpleNamespace(teacher=SimpleNamespace(grad_checkpointing="auto"),
                                                  optim=SimpleNamespace(batch_size=8)),
                              data=SimpleNamespace(config=SimpleNamespace(img_size=32),
                                                   ir_spec=SimpleNamespace(channels=1)),
                              rt=CPU)
        decided.append(stage.grad_checkpointing(run, "resnet18"))
    assert decided == [rank_free[0] < 5] * 2


class MemoryCheckpointer:
    """The loop's Checkpointer in memory; counts the resume states written."""

    def __init__(self) -> None:
        self.last, self.best, self.saves = None, None, []

    def load_last(self):
        return self.last

    def save_last(self, state):
        import copy

        self.last = copy.deepcopy(state)
        self.saves.append(state["epoch"])

    def save_best(self, state, epoch, score):
        import copy

        self.best = copy.deepcopy(state)

    def load_best(self):
        return self.best


class Killed(Exception):
    pass


def _supervised(seed: int = 0):
    from firekd.kd.distiller import Supervised

    torch.manual_seed(seed)
    return Supervised(TinyNet())


def test_save_every_n_epochs_resumes_exactly():
    """--save_every 2: the state is written after epochs 2, 4 and the last (5); a run killed after
    epoch 3 resumes from epoch 2 and ends with the uninterrupted run's weights and history."""
    import dataclasses

    train, val = batches(4), batches(2, seed=1)
    fit_cfg = dataclasses.replace(cfg(epochs=5, weights={"bce": 1.0}), save_every=2)
    strip = lambda h: [{k: v for k, v in r.items() if k != "time_s"} for r in h]  # noqa: E731

    reference_task, ckpt = _supervised(), MemoryCheckpointer()
    reference = fit_many([Member(reference_task, fit_cfg, ckpt)], train, val, CPU)[0]
    assert ckpt.saves == [2, 4, 5]

    def kill_after_3(record):
        if record["epoch"] == 3:
            raise Killed

    ckpt = MemoryCheckpointer()
    with pytest.raises(Killed):
        fit_many([Member(_supervised(), fit_cfg, ckpt, kill_after_3)], train, val, CPU)
    assert ckpt.saves == [2] and ckpt.last["epoch"] == 2
    task = _supervised(seed=7)  # other initial weights: the resume state replaces them
    resumed = fit_many([Member(task, fit_cfg, ckpt)], train, val, CPU)[0]
    assert resumed.resumed_from == 2
    assert strip(resumed.history) == strip(reference.history)
    for a, b in zip(task.state_dict().values(), reference_task.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
