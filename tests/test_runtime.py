"""Runtime numerics (the precision each GPU gets), the optimizer step with a loss scaler, and the
process-group setup, on CPU: the CUDA queries are mocked."""

from __future__ import annotations

import copy
import dataclasses
import datetime

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from firekd.engine import distributed
from firekd.engine.runtime import Runtime, amp_dtype_for, make_grad_scaler, optimizer_step

CUDA = torch.device("cuda", 0)


@pytest.fixture
def gpu(monkeypatch):
    """Pretend a GPU of a given compute capability is there; restore the TF32 settings after."""
    saved = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    capability = {"value": (9, 0)}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability["value"])
    yield capability
    torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = saved


@pytest.mark.parametrize("capability,expect", [((9, 0), "bf16"), ((8, 0), "bf16"), ((8, 6), "bf16"),
                                               ((7, 5), "fp16"), ((7, 0), "fp16"), ((6, 1), "fp16")])
def test_bf16_only_where_native(gpu, capability, expect):
    gpu["value"] = capability
    rt = Runtime(CUDA)
    assert rt.precision == expect
    assert rt.amp_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[expect]
    assert make_grad_scaler(rt).is_enabled() == (expect == "fp16")


def test_no_amp_is_fp32_without_channels_last_with_tf32(gpu):
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    rt = Runtime(CUDA, amp=False)
    assert rt.precision == "fp32" and rt.amp_dtype is None
    assert not rt.use_channels_last  # --no_amp turns both off, as its help says
    assert not make_grad_scaler(rt).is_enabled()
    assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    assert torch.backends.cudnn.conv.fp32_precision == "tf32"


def test_amp_keeps_channels_last_and_leaves_tf32_alone(gpu):
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    rt = Runtime(CUDA)
    assert rt.use_channels_last and not Runtime(CUDA, channels_last=False).use_channels_last
    assert torch.backends.cuda.matmul.fp32_precision == "ieee"


def test_cpu_is_fp32():
    rt = Runtime(torch.device("cpu"))
    assert rt.precision == "fp32" and not rt.use_channels_last and not make_grad_scaler(rt).is_enabled()
    assert amp_dtype_for(torch.device("cpu"), True) is None
    moved = dataclasses.replace(Runtime(torch.device("cpu")), amp=False)  # recipes copy runtimes
    assert moved.precision == "fp32"


# --- optimizer_step ---------------------------------------------------------------------------

def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    x, y = torch.randn(32, 8), torch.randn(32, 2)
    return model, x, y


def _plain_step(model, opt, x, y, grad_clip):
    opt.zero_grad(set_to_none=True)
    nn.functional.mse_loss(model(x), y).backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()


class _CountItems(TorchDispatchMode):
    """Counts device-to-host reads (.item(), bool(tensor)): each one a host sync on CUDA."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default):
            self.reads += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("grad_clip", [0.0, 0.05])
@pytest.mark.parametrize("optim", [torch.optim.AdamW, torch.optim.SGD])
def test_optimizer_step_equals_a_plain_step_and_adds_no_host_read(grad_clip, optim):
    model, x, y = _setup()
    twin = copy.deepcopy(model)
    opt, twin_opt = (optim(m.parameters(), lr=1e-2) for m in (model, twin))
    scaler = make_grad_scaler(Runtime(torch.device("cpu")))
    for _ in range(3):
        with _CountItems() as ours:
            optimizer_step(nn.functional.mse_loss(model(x), y), opt, scaler, model.parameters(), grad_clip)
        with _CountItems() as plain:  # AdamW reads its step count, kept on the host, by itself
            _plain_step(twin, twin_opt, x, y, grad_clip)
        assert ours.reads == plain.reads and (optim is not torch.optim.SGD or ours.reads == 0)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)


def test_fp16_scaler_unscales_before_clipping_and_skips_overflow():
    """The fp16 path on CPU: scaling by 2^16 and unscaling is exact, so the update equals the plain
    step, clipping included; an inf gradient skips the step and halves the scale."""
    model, x, y = _setup()
    twin = copy.deepcopy(model)
    opt, twin_opt = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, twin))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    optimizer_step(nn.functional.mse_loss(model(x), y), opt, scaler, model.parameters(), grad_clip=0.05)
    _plain_step(twin, twin_opt, x, y, 0.05)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=1e-6, atol=1e-7)
    before = [p.detach().clone() for p in model.parameters()]
    loss = nn.functional.mse_loss(model(x), y) * torch.tensor(float("inf"))
    optimizer_step(loss, opt, scaler, model.parameters(), grad_clip=0.05)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    assert scaler.get_scale() == 2.0**15


def test_each_optimizer_keeps_its_own_scaler():
    models = [_setup(seed)[0] for seed in (0, 1)]
    _, x, y = _setup()
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    scalers = [torch.amp.GradScaler("cpu", init_scale=2.0**16) for _ in models]
    optimizer_step(nn.functional.mse_loss(models[0](x), y) * float("inf"), opts[0], scalers[0],
                   models[0].parameters())
    optimizer_step(nn.functional.mse_loss(models[1](x), y), opts[1], scalers[1], models[1].parameters())
    assert scalers[0].get_scale() == 2.0**15 and scalers[1].get_scale() == 2.0**16


# --- process group ----------------------------------------------------------------------------

@pytest.fixture
def torchrun_env(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.delenv("FIREKD_DDP_BACKEND", raising=False)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(distributed, "_INFO", distributed.DistInfo())
    calls = []
    yield calls


def test_nccl_group_is_bound_to_the_local_gpu(monkeypatch, torchrun_env):
    def init_process_group(backend=None, init_method=None, timeout=None, world_size=-1, rank=-1,
                           store=None, group_name="", pg_options=None, device_id=None):
        torchrun_env.append({"backend": backend, "device_id": device_id})

    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    info = distributed.setup()
    assert torchrun_env == [{"backend": "nccl", "device_id": torch.device("cuda", 1)}]
    assert info.rank == 1 and info.world_size == 2 and info.local_rank == 1


def test_older_pytorch_without_device_id(monkeypatch, torchrun_env):
    def init_process_group(backend=None, init_method=None, timeout=None):
        torchrun_env.append(backend)

    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    distributed.setup()
    assert torchrun_env == ["nccl"]


def test_teardown_leaves_the_group(monkeypatch):
    monkeypatch.setattr(distributed, "_INFO", distributed.DistInfo(0, 1, 0))
    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=30))
    distributed.teardown()
    assert not dist.is_initialized() and not distributed.info().enabled
    distributed.teardown()  # a second call is harmless


@pytest.mark.parametrize("saved", [{}, None])
def test_an_fp16_scaler_resumes_from_a_bf16_or_cpu_state(saved):
    """A bf16/fp32/CPU run saves an empty scaler state; resumed on an fp16 GPU it must not raise."""
    from firekd.engine.runtime import load_scaler_state

    fp16 = torch.amp.GradScaler("cpu", enabled=True, init_scale=2.0**10)
    with pytest.raises(RuntimeError, match="empty"):
        fp16.load_state_dict({})  # what the loop did before
    load_scaler_state(fp16, saved)
    assert fp16.get_scale() == 2.0**10
    other = torch.amp.GradScaler("cpu", enabled=True, init_scale=2.0**4)
    load_scaler_state(other, fp16.state_dict())
    assert other.get_scale() == 2.0**10
    disabled = torch.amp.GradScaler("cpu", enabled=False)
    load_scaler_state(disabled, fp16.state_dict())  # an fp16 state on a bf16/CPU run: ignored
    assert not disabled.is_enabled()


def test_a_pytest_xdist_worker_runs_one_torch_thread():
    """`make test` runs two workers on two cores: two threads each would oversubscribe them."""
    import os

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.skip("not under pytest-xdist (make test runs it there)")
    import torch

    assert torch.get_num_threads() == 1
