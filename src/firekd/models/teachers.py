"""Teachers: timm backbones with the spec's RGB+IR fusion.

Every teacher takes rgb (B,3,H,W) and ir (B,C,H,W), C in {1, 3}, and returns
(logits (B,num_classes), embedding (B,embed_dim)). An IR-specific stem (a copy of the RGB stem,
see `backbones.ir_input_conv`) feeds the shared trunk up to the fusion point, so the parameter
count stays near a single backbone. Both streams pass the shared trunk as one batch, so its
BatchNorm layers see the same mixed RGB+IR statistics in training and evaluation.
With modalities="rgb" a teacher is the plain RGB backbone and ignores ir.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from firekd.errors import ModelError
from firekd.models.backbones import (
    check_common,
    create_backbone,
    input_adapters,
    ir_input_conv,
    ir_patch_embed,
)
from firekd.models.fusion import ConvFusion, TokenFusion
from firekd.models.registry import register_teacher

MODALITIES = ("rgb+ir", "rgb")
IR_CHANNELS = (1, 3)
SPEC_PARAMS_M = {"resnet152": 60, "efficientnet_b7": 66, "swin_tiny": 28, "vit_b_16": 86}


class Teacher(nn.Module):
    """timm backbone + IR stem + fusion. Subclasses build and run the fused path.

    ir_channels: 1 (grayscale, 16-bit, radiometric) or 3 (colour-mapped IR).
    img_size: input side, a multiple of 32; fixes the token grid of Swin and ViT.
    modalities: "rgb+ir" (fused) or "rgb" (the plain backbone; ir is optional and ignored).
    pretrained: load timm's ImageNet weights (ModelError when they cannot be had).
    pretrained_file: load a local timm state dict of the backbone instead (implies pretrained).
    Either way the IR stem is then copied from the RGB stem.
    """

    fusion_kind = ""  # for tables: where and how the streams meet
    takes_img_size = False  # transformers fix their token grid at construction
    grad_checkpointing = False

    def __init__(self, name: str, timm_name: str, *, num_classes: int = 2, ir_channels: int = 1,
                 img_size: int = 224, modalities: str = "rgb+ir", pretrained: bool = False,
                 pretrained_file: str | Path | None = None, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        _check_args(num_classes=num_classes, ir_channels=ir_channels, img_size=img_size,
                    modalities=modalities)
        self.name, self.timm_name = name, timm_name
        self.num_classes, self.ir_channels = num_classes, ir_channels
        self.img_size, self.modalities, self.drop_path_rate = img_size, modalities, drop_path_rate
        size_kw = {"img_size": img_size} if self.takes_img_size else {}
        self.backbone = create_backbone(timm_name, pretrained=pretrained,
                                        pretrained_file=pretrained_file, num_classes=num_classes,
                                        drop_path_rate=drop_path_rate, **size_kw)
        self.rgb_adapter, ir_adapter = input_adapters(self.backbone)
        self.embed_dim: int = self.backbone.head_hidden_size
        if modalities == "rgb+ir":
            self.ir_adapter = ir_adapter
            self._build_fusion()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Keep only each trunk block's input in training and recompute the block in backward:
        much less activation memory for about one more forward pass. Same gradients and the same
        BatchNorm statistics (the recomputation does not update them a second time)."""
        self.grad_checkpointing = enable
        self.backbone.set_grad_checkpointing(enable)  # the plain path (modalities="rgb") is timm's

    def _blocks(self, blocks: Iterable[nn.Module], x: torch.Tensor) -> torch.Tensor:
        """Run trunk blocks in sequence: the units that activation checkpointing recomputes."""
        for block in blocks:
            x = self._run_block(block, x)
        return x

    def _run_block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if not (self.grad_checkpointing and torch.is_grad_enabled()):
            return block(x)
        if torch.compiler.is_compiling():  # traced once: the backward recomputes, nothing is re-run
            return checkpoint(block, x, use_reentrant=False)
        return checkpoint(block, x, use_reentrant=False,
                          context_fn=lambda: (contextlib.nullcontext(), _frozen_bn_stats(block)))

    def _build_fusion(self) -> None:
        raise NotImplementedError

    def _fused_features(self, rgb: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_features(self, rgb: torch.Tensor, ir: torch.Tensor | None = None) -> torch.Tensor:
        """Unpooled features of the last stage, in the backbone's own layout."""
        rgb = self.rgb_adapter(rgb)
        if self.modalities == "rgb":
            return self.backbone.forward_features(rgb)
        if ir is None:
            raise ValueError(f"teacher {self.name} fuses RGB and IR: "
                             f"pass ir (B,{self.ir_channels},H,W)")
        if ir.shape[1] != self.ir_channels:
            raise ValueError(f"teacher {self.name} was built for {self.ir_channels}-channel IR, "
                             f"got {ir.shape[1]} channels")
        return self._fused_features(rgb, self.ir_adapter(ir))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooled embedding (B,embed_dim) with pre_logits=True, else logits (B,num_classes)."""
        return self.backbone.forward_head(features, pre_logits=pre_logits)

    def forward(self, rgb: torch.Tensor,
                ir: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.forward_head(self.forward_features(rgb, ir), pre_logits=True)  # (B,D)
        return self.backbone.get_classifier()(embedding), embedding  # (B,num_classes), (B,D)

    def model_config(self) -> dict[str, Any]:
        """JSON-able; `create_teacher(**config)` rebuilds this architecture (random weights)."""
        return {"name": self.name, "num_classes": self.num_classes,
                "ir_channels": self.ir_channels, "img_size": self.img_size,
                "modalities": self.modalities, "drop_path_rate": self.drop_path_rate}


def _check_args(*, num_classes: int, ir_channels: int, img_size: int, modalities: str) -> None:
    check_common(num_classes=num_classes, img_size=img_size)
    if ir_channels not in IR_CHANNELS:
        raise ModelError(f"ir_channels must be 1 or 3, got {ir_channels}")
    if modalities not in MODALITIES:
        raise ModelError(f"modalities must be one of {', '.join(MODALITIES)}, got '{modalities}'")


@contextlib.contextmanager
def _frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers normalise with batch statistics in training as always, but the recomputation
    of a checkpointed block must not count the batch twice in their running statistics: momentum 0
    leaves them as they are, and the batch counter is put back. (Not tracking them would change
    which tensors batch_norm saves, which checkpoint forbids.)"""
    norms = [m for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved, strict=True):
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)


def _shared(trunk: Callable[[torch.Tensor], torch.Tensor], rgb: torch.Tensor,
            ir: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run both streams through shared weights as one batch (one pass, one set of BN stats)."""
    return trunk(torch.cat([rgb, ir], dim=0)).chunk(2, dim=0)


class ResNetTeacher(Teacher):
    """Late fusion at layer3: IR stem; layer1-3 shared; fuse; layer4 on the fused map."""

    fusion_kind = "late (layer3)"

    def _build_fusion(self) -> None:
        b = self.backbone
        self.ir_stem = nn.Sequential(_ir_stem_conv(b.conv1, self.ir_channels), copy.deepcopy(b.bn1),
                                     copy.deepcopy(b.act1), copy.deepcopy(b.maxpool))
        self.fusion = ConvFusion(_out_channels(b.layer3), act=True)

    def _fused_features(self, rgb: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        rgb = b.maxpool(b.act1(b.bn1(b.conv1(rgb))))  # (B,64,H/4,W/4)
        ir = self.ir_stem(ir)  # (B,64,H/4,W/4)
        rgb, ir = _shared(self._trunk, rgb, ir)  # (B,C3,H/16,W/16) each
        return self._blocks(b.layer4, self.fusion(rgb, ir))  # (B,C4,H/32,W/32)

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        # not a registered submodule: that would list the backbone's weights twice in state_dict
        b = self.backbone
        return self._blocks([*b.layer1, *b.layer2, *b.layer3], x)


def _ir_stem_conv(conv1: nn.Module, ir_channels: int) -> nn.Module:
    """The IR copy of a ResNet's input conv: one conv, or a deep stem (timm's `t`/`d` variants,
    three convs in a Sequential) whose first conv takes the IR channels."""
    if not isinstance(conv1, nn.Sequential):
        return ir_input_conv(conv1, ir_channels)
    stem = copy.deepcopy(conv1)
    stem[0] = ir_input_conv(conv1[0], ir_channels)
    return stem


class EfficientNetTeacher(Teacher):
    """Late fusion at block 6: IR stem; blocks 0-5 shared; fuse; block 6 and the head conv."""

    fusion_kind = "late (block6)"

    def _build_fusion(self) -> None:
        b = self.backbone
        self.ir_stem = nn.Sequential(ir_input_conv(b.conv_stem, self.ir_channels),
                                     copy.deepcopy(b.bn1))
        self.fusion = ConvFusion(_out_channels(b.blocks[5]), act=False)

    def _fused_features(self, rgb: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        rgb = b.bn1(b.conv_stem(rgb))  # (B,64,H/2,W/2) for B7
        ir = self.ir_stem(ir)
        rgb, ir = _shared(self._trunk, rgb, ir)  # (B,384,H/32,W/32) each for B7
        x = self._blocks(b.blocks[6], self.fusion(rgb, ir))  # (B,640,H/32,W/32)
        return b.bn2(b.conv_head(x))  # (B,2560,H/32,W/32)

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self._blocks([block for stage in self.backbone.blocks[:6] for block in stage], x)


class SwinTeacher(Teacher):
    """Hierarchical fusion: IR patch embed; stages 1-2 shared by both streams, IR merged into the
    RGB stream after stage 1 and fused after stage 2; stages 3-4 on the fused stream.

    Window rule: the pretrained 7x7 window at every size. timm clips a stage's window to its map
    when the map is smaller (no shift there) and pads maps that are not a multiple of 7: none at
    224 px (56, 28, 14, 7); at 64 px stages 1-2 (16, 8) are padded, stages 3-4 use 4x4 and 2x2.
    """

    fusion_kind = "hierarchical (stage2)"
    takes_img_size = True

    def _build_fusion(self) -> None:
        b = self.backbone
        self.ir_patch_embed = ir_patch_embed(b.patch_embed, self.ir_channels)
        self.stage1_merge = TokenFusion(b.feature_info[0]["num_chs"])
        self.stage2_fusion = TokenFusion(b.feature_info[1]["num_chs"])

    def _fused_features(self, rgb: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        rgb = b.patch_embed(rgb)  # (B,H/4,W/4,96), channels last
        ir = self.ir_patch_embed(ir)  # (B,H/4,W/4,96)
        rgb, ir = _shared(functools.partial(self._stage, 0), rgb, ir)  # stage 1: (B,H/4,W/4,96) each
        rgb = self.stage1_merge(rgb, ir)
        rgb, ir = _shared(functools.partial(self._stage, 1), rgb, ir)  # stage 2: (B,H/8,W/8,192) each
        x = self.stage2_fusion(rgb, ir)
        for k in range(2, len(b.layers)):
            x = self._stage(k, x)  # stages 3-4: (B,H/32,W/32,768)
        return b.norm(x)

    def _stage(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """timm's SwinTransformerStage.forward (patch merging, then the blocks) with our blocks."""
        stage = self.backbone.layers[k]
        return self._blocks(stage.blocks, stage.downsample(x))


class ViTTeacher(Teacher):
    """Token-level fusion: RGB and IR patch tokens, each with the position embedding and a learned
    modality embedding, form one sequence [cls, rgb tokens, ir tokens] for the shared transformer;
    the embedding is the class token."""

    fusion_kind = "token-level"
    takes_img_size = True

    def _build_fusion(self) -> None:
        b = self.backbone
        if b.no_embed_class or b.num_prefix_tokens != 1:
            raise ModelError(f"{self.timm_name}: token fusion needs a ViT with one class token")
        self.ir_patch_embed = ir_patch_embed(b.patch_embed, self.ir_channels)
        self.modality_embed = nn.Parameter(torch.zeros(1, 2, b.embed_dim))  # [rgb, ir]
        nn.init.trunc_normal_(self.modality_embed, std=0.02)

    def _fused_features(self, rgb: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        pos = b.pos_embed  # (1,1+N,D): class token first
        cls = (b.cls_token + pos[:, :1]).expand(rgb.shape[0], -1, -1)  # (B,1,D)
        rgb = b.patch_embed(rgb) + pos[:, 1:] + self.modality_embed[:, :1]  # (B,N,D)
        ir = self.ir_patch_embed(ir) + pos[:, 1:] + self.modality_embed[:, 1:]  # (B,N,D)
        x = b.pos_drop(torch.cat([cls, rgb, ir], dim=1))  # (B,1+2N,D)
        x = self._blocks(b.blocks, b.norm_pre(b.patch_drop(x)))
        return b.norm(x)  # (B,1+2N,D); forward_head pools the class token


def _out_channels(stages: nn.Module) -> int:
    """Channels of the last conv's output in a stack of timm blocks (BN after it has them)."""
    return [m for m in stages.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features


@register_teacher("resnet152", aliases=("resnet-152",))
def resnet152(**kwargs) -> Teacher:
    return ResNetTeacher("resnet152", "resnet152", **kwargs)


@register_teacher("efficientnet_b7", aliases=("efficientnet-b7",))
def efficientnet_b7(**kwargs) -> Teacher:
    # tf_ variant: the B7 timm has ImageNet weights for (same architecture, TF "same" padding)
    return EfficientNetTeacher("efficientnet_b7", "tf_efficientnet_b7.ra_in1k", **kwargs)


@register_teacher("swin_tiny", aliases=("swin-tiny", "swin_t", "swin-t"))
def swin_tiny(**kwargs) -> Teacher:
    return SwinTeacher("swin_tiny", "swin_tiny_patch4_window7_224", **kwargs)


@register_teacher("vit_b_16", aliases=("vit-b-16", "vit_b16", "vit-b/16"))
def vit_b_16(**kwargs) -> Teacher:
    return ViTTeacher("vit_b_16", "vit_base_patch16_224", **kwargs)


@register_teacher("resnet18", aliases=("resnet-18",))
def resnet18(**kwargs) -> Teacher:
    """Light extra teacher for demos and tests, same late fusion as ResNet-152."""
    return ResNetTeacher("resnet18", "resnet18", **kwargs)


@register_teacher("resnet10t", aliases=("resnet-10t",))
def resnet10t(**kwargs) -> Teacher:
    """The lightest extra teacher (deep stem, one block per stage: about 0.73x ResNet-18's time
    per training step at 32 px): for demos on CPU; same late fusion as ResNet-152."""
    return ResNetTeacher("resnet10t", "resnet10t", **kwargs)


@register_teacher("resnet50", aliases=("resnet-50",))
def resnet50(**kwargs) -> Teacher:
    """Mid-size extra teacher, same late fusion as ResNet-152."""
    return ResNetTeacher("resnet50", "resnet50", **kwargs)
