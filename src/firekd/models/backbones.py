"""timm backbones: creation with one-line errors, input stems for IR, input re-normalisation."""

from __future__ import annotations

import copy
from pathlib import Path

import timm
import torch
from torch import nn

from firekd.errors import ModelError
from firekd.normalization import IR_MEAN, IR_STD, RGB_MEAN, RGB_STD

TEACHER_HINT = ("use --no_pretrained to start from random weights, or --teacher_weights PATH "
                "for a local weights file")
STUDENT_HINT = "build it with pretrained=False, or pretrained_file=PATH for a local weights file"


def create_backbone(timm_name: str, *, pretrained: bool = False,
                    pretrained_file: str | Path | None = None, hint: str = TEACHER_HINT,
                    **kwargs) -> nn.Module:
    """timm.create_model, where asking for weights either loads them or raises ModelError.

    `pretrained_file` (a timm-compatible state dict) implies pretrained and never touches the
    network; `pretrained=True` alone downloads timm's ImageNet weights. No silent random init.
    """
    if pretrained_file is not None:
        return _from_file(timm_name, Path(pretrained_file), **kwargs)
    if not pretrained:
        return timm.create_model(timm_name, pretrained=False, **kwargs)
    try:
        return timm.create_model(timm_name, pretrained=True, **kwargs)
    except Exception as exc:  # network, hub, cache and format errors all end the same way
        raise ModelError(f"cannot load the ImageNet weights of {timm_name} "
                         f"({_brief(exc)}); {hint}") from exc


def _from_file(timm_name: str, path: Path, **kwargs) -> nn.Module:
    if not path.is_file():
        raise ModelError(f"pretrained weights file not found: {path}")
    try:
        model = timm.create_model(timm_name, pretrained=True,
                                  pretrained_cfg_overlay={"file": str(path)}, **kwargs)
        held = set(timm.models.load_state_dict(str(path)))  # weights_only=True
    except Exception as exc:
        raise ModelError(f"{path} does not hold {timm_name} weights ({_brief(exc)})") from exc
    missing = _missing_keys(model, held)
    if missing:
        # timm loads non-strictly when the class count changes: check the file really had weights
        raise ModelError(f"{path} does not hold {timm_name} weights: {len(missing)} tensors "
                         f"missing, e.g. {missing[0]} (expected a timm state_dict of {timm_name})")
    return model


def _missing_keys(model: nn.Module, held: set[str]) -> list[str]:
    """Keys of the model's state (classifier excepted: it is replaced) absent from a file."""
    classifier = (model.pretrained_cfg or {}).get("classifier") or ()
    prefixes = tuple(f"{name}." for name in ((classifier,) if isinstance(classifier, str)
                                            else classifier))
    return [key for key in model.state_dict() if key not in held
            and not key.startswith(prefixes) and not key.endswith("num_batches_tracked")]


def _brief(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def ir_input_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of an RGB input conv for `in_channels` IR channels.

    Each IR kernel is the RGB kernels' mean over channels times 3/C: for C=3 the mean repeated,
    for C=1 their sum (timm's adapt_input_conv rule), so a gray image gives the RGB stem's
    activation scale and the copied normalisation statistics still fit.
    """
    ir = copy.deepcopy(conv)
    mean = conv.weight.detach().mean(dim=1, keepdim=True)  # (O,1,k,k)
    weight = (mean * (3.0 / in_channels)).repeat(1, in_channels, 1, 1)  # (O,C,k,k)
    ir.weight = nn.Parameter(weight.clone())
    ir.in_channels = in_channels
    return ir


def ir_patch_embed(patch_embed: nn.Module, in_channels: int) -> nn.Module:
    """A copy of a timm PatchEmbed (ViT, Swin) whose projection takes IR channels."""
    ir = copy.deepcopy(patch_embed)
    ir.proj = ir_input_conv(patch_embed.proj, in_channels)
    return ir


class Renormalize(nn.Module):
    """Maps inputs normalised with firekd's data statistics to the normalisation a backbone's
    pretrained weights were trained with (e.g. mean=std=0.5 for timm's ViT-B/16): a fixed
    per-channel affine map, exact, not saved in checkpoints."""

    def __init__(self, src: tuple[tuple[float, ...], tuple[float, ...]],
                 dst: tuple[tuple[float, ...], tuple[float, ...]]) -> None:
        super().__init__()
        (src_mean, src_std), (dst_mean, dst_std) = (map(torch.tensor, src), map(torch.tensor, dst))
        self.register_buffer("gain", (src_std / dst_std).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("bias", ((src_mean - dst_mean) / dst_std).view(1, -1, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain + self.bias


def input_adapters(backbone: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(rgb, ir) adapters from the data normalisation to the one the backbone expects.

    Identity when they agree. IR, one or three channels, goes to the channel-averaged RGB
    normalisation, which is what the IR stem copied from the RGB stem was trained on.
    """
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    mean = tuple(float(v) for v in cfg.get("mean", RGB_MEAN))
    std = tuple(float(v) for v in cfg.get("std", RGB_STD))
    gray = ((sum(mean) / 3,), (sum(std) / 3,))
    return (_adapter((RGB_MEAN, RGB_STD), (mean, std)),
            _adapter(((IR_MEAN,), (IR_STD,)), gray))


def _adapter(src: tuple[tuple[float, ...], tuple[float, ...]],
             dst: tuple[tuple[float, ...], tuple[float, ...]]) -> nn.Module:
    flat_src, flat_dst = src[0] + src[1], dst[0] + dst[1]
    same = all(abs(a - b) < 1e-6 for a, b in zip(flat_src, flat_dst, strict=True))
    return nn.Identity() if same else Renormalize(src, dst)


def check_common(*, num_classes: int, img_size: int | None = None) -> None:
    """ModelError for argument values no model can be built with."""
    if num_classes < 1:
        raise ModelError(f"num_classes must be >= 1, got {num_classes}")
    if img_size is not None and (img_size < 32 or img_size % 32):
        raise ModelError(f"img_size must be a multiple of 32 (>= 32), got {img_size}")
