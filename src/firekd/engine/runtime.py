"""Device placement and numerics: mixed precision and channels_last on CUDA, plain fp32 on CPU.

bf16 autocast where the GPU has native bf16 (compute capability >= 8.0: A100, H100, RTX 30xx+);
fp16 autocast with a GradScaler before (V100, T4, RTX 20xx), where bf16 is emulated and slow.
``amp=False`` means fp32 with TF32 tensor cores and the default (NCHW) memory format.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from firekd.data.dataset import Batch, apply_transform
from firekd.data.transforms import PairedTransform
from firekd.engine import distributed
from firekd.errors import ConfigError

log = logging.getLogger(__name__)
PRECISION_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return torch.device(name)


def amp_dtype_for(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast dtype: bf16 where native (compute capability >= 8.0), else fp16; None (fp32)
    without amp or off CUDA."""
    if not amp or device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def _new_tf32_flags() -> bool:
    return hasattr(torch.backends, "fp32_precision")  # PyTorch >= 2.9: mixing in the old flags warns


def tf32_flags() -> tuple:
    """The current TF32 settings, to restore with `set_tf32_flags`."""
    if _new_tf32_flags():
        return torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def set_tf32_flags(flags: tuple) -> None:
    if _new_tf32_flags():
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = flags
    else:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def enable_tf32() -> None:
    """fp32 matmuls and convolutions on TF32 tensor cores (Ampere and later; no effect before)."""
    set_tf32_flags(("tf32", "tf32") if _new_tf32_flags() else (True, True))


@dataclass
class Runtime:
    device: torch.device
    amp: bool = True  # mixed precision (bf16 or fp16, see amp_dtype_for) and channels_last; CUDA only
    channels_last: bool = True  # CUDA with amp only: amp=False turns both off
    # (train, eval) batch transforms when they run on the device; None when the loader applies them
    device_transforms: tuple[PairedTransform, PairedTransform] | None = None
    seed: int = 0
    amp_dtype: torch.dtype | None = field(init=False)

    def __post_init__(self) -> None:
        self.amp_dtype = amp_dtype_for(self.device, self.amp)
        if self.cuda and not self.amp:
            enable_tf32()

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def precision(self) -> str:
        """What the run computes in, for the run's record: "bf16", "fp16" or "fp32"."""
        return PRECISION_NAMES[self.amp_dtype]

    @property
    def use_channels_last(self) -> bool:
        return self.cuda and self.amp and self.channels_last

    def autocast(self):
        if self.amp_dtype is not None:
            return torch.autocast("cuda", dtype=self.amp_dtype)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def eval_numerics(self):
        """Validation and prediction: fp32 activations and logits (no autocast: bf16 logits tie in
        the threshold search), with TF32 matmuls and convolutions on CUDA for tensor-core speed;
        the settings are restored after. Plain fp32 on the CPU."""
        if not self.cuda:
            yield
            return
        saved = tf32_flags()
        enable_tf32()
        try:
            yield
        finally:
            set_tf32_flags(saved)

    def prepare_model(self, model: torch.nn.Module, *, compile: bool = False,
                      sync_bn: bool = False) -> torch.nn.Module:
        if sync_bn and self.cuda and distributed.info().enabled:
            model = sync_batchnorm(model)
        elif sync_bn:
            log.warning("--sync_bn applies to torchrun runs on CUDA; ignored here")
        model = model.to(self.device)
        if self.use_channels_last:
            model = model.to(memory_format=torch.channels_last)
        if compile:
            model.compile()  # in place: state_dict keys stay those of the plain model
        return model

    def to_device(self, batch: Batch | tuple, *, train: bool = False) -> Batch:
        """A loader's batch on the device, transformed there when the transform runs there."""
        return self._finish(self._copy(batch), train)

    def batches(self, loader: Iterable, *, train: bool = False) -> Iterator[Batch]:
        """``to_device`` of every batch of ``loader``. On CUDA the copy of batch k+1 is issued on
        a side stream before batch k is handed over, so it overlaps batch k's compute instead of
        queueing on the compute stream; on the CPU a plain loop."""
        if not self.cuda:
            for batch in loader:
                yield self.to_device(batch, train=train)
            return
        side, main = torch.cuda.Stream(self.device), torch.cuda.current_stream(self.device)

        def copy(batch):
            if batch is None:
                return None
            with torch.cuda.stream(side):
                return self._copy(batch)

        batches = iter(loader)
        ahead = copy(next(batches, None))
        while ahead is not None:
            main.wait_stream(side)
            for t in ahead:
                if t.is_cuda:  # made on the side stream, used on the main one: keep until done there
                    t.record_stream(main)
            current, ahead = ahead, copy(next(batches, None))
            yield self._finish(current, train)

    def _copy(self, batch: Batch | tuple) -> tuple:
        """Host -> device copies (non-blocking from the loader's pinned memory); ``index`` stays
        on the host (no device sync to seed the transform). A fifth element, the augmentation
        parameters drawn by the loader worker, travels along."""
        rgb, ir, labels, index = batch[:4]
        moved = [t.to(self.device, non_blocking=True) for t in (rgb, ir, labels, *batch[4:])]
        return (*moved[:3], index, *moved[3:])

    def _finish(self, batch: tuple, train: bool) -> Batch:
        if self.device_transforms is not None:
            batch = apply_transform(self.device_transforms[0 if train else 1], batch, self.seed)
        rgb, ir, labels, index = batch[:4]
        if self.use_channels_last:
            rgb = rgb.contiguous(memory_format=torch.channels_last)
            if ir.shape[1]:
                ir = ir.contiguous(memory_format=torch.channels_last)
        return rgb, ir, labels, index


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """Every BatchNorm synchronised across ranks, keeping timm's fused norm-activation layers:
    torch's converter turns a ``BatchNormAct2d`` into a plain ``SyncBatchNorm`` that never calls
    its activation (EfficientNet would train without activations); timm's keeps it."""
    from timm.layers import convert_sync_batchnorm

    return convert_sync_batchnorm(model)


def make_grad_scaler(rt: Runtime) -> torch.amp.GradScaler:
    """A loss scaler for fp16 autocast; disabled (every call a pass-through) in bf16 and fp32.
    One per optimizer: each student keeps its own scale."""
    return torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)


def load_scaler_state(scaler: torch.amp.GradScaler, state: dict | None) -> None:
    """Resume a loss scaler. A state saved in bf16, fp32 or on the CPU is empty (its scaler was
    disabled): an fp16 scaler then starts from its initial scale instead of raising."""
    if state:
        scaler.load_state_dict(state)
    elif scaler.is_enabled():
        log.info("the resumed state has no fp16 loss scale (saved in bf16/fp32): the initial one is used")


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   params: Iterable[nn.Parameter], grad_clip: float = 0.0) -> None:
    """zero_grad, backward, clip (on unscaled gradients), step, scaler update for one optimizer.

    No host sync in bf16/fp32 (clip_grad_norm_ stays on the device). In fp16 the scaler's inf/NaN
    check reads one value per step (a sync), unless the optimizer unscales itself (fused AdamW);
    a step with inf/NaN gradients is skipped and the scale lowered.
    """
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)
    scaler.update()
