"""Students: RGB only. `firekd_student` is the spec's light CNN; any timm model can stand in.

Both return (logits (B,num_classes), embedding (B,embed_dim)) from forward(rgb).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from firekd.errors import ModelError
from firekd.models.backbones import STUDENT_HINT, check_common, create_backbone, input_adapters
from firekd.models.registry import register_student, register_student_fallback

DEFAULT_WIDTHS = (32, 64, 128, 256)


def conv_bn_relu(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def conv_block(cin: int, cout: int, *, first: bool) -> nn.Sequential:
    """Two 3x3 conv-BN-ReLU; the first block downsamples 4x (two stride-2 convs), the others 2x.

    Downsampling early keeps the 224 px cost near 0.34 GFLOPs: a stride-1 stem at full
    resolution would cost more than the whole network.
    """
    return nn.Sequential(*conv_bn_relu(cin, cout, 2), *conv_bn_relu(cout, cout, 2 if first else 1))


class FireKDStudent(nn.Module):
    """4 conv blocks + FC, ~1.17M parameters with the default widths, BN + ReLU, GAP embedding."""

    modalities = "rgb"

    def __init__(self, num_classes: int = 2, widths: Sequence[int] = DEFAULT_WIDTHS,
                 dropout: float = 0.2) -> None:
        super().__init__()
        check_common(num_classes=num_classes)
        if len(widths) != 4 or min(widths) < 1:
            raise ModelError(f"firekd_student needs 4 positive block widths, got {list(widths)}")
        if not 0 <= dropout < 1:
            raise ModelError(f"dropout must be in [0, 1), got {dropout}")
        self.num_classes, self.widths, self.dropout = num_classes, tuple(widths), dropout
        ins = (3, *self.widths[:-1])
        pairs = zip(ins, self.widths, strict=True)
        self.blocks = nn.Sequential(*(conv_block(cin, cout, first=k == 0)
                                      for k, (cin, cout) in enumerate(pairs)))
        self.embed_dim: int = self.widths[-1]
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(self.embed_dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, rgb: torch.Tensor) -> torch.Tensor:
        # (B,3,H,W) -> (B,w0,H/4,W/4) -> (B,w1,H/8,W/8) -> (B,w2,H/16,W/16) -> (B,w3,H/32,W/32)
        return self.blocks(rgb)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        embedding = features.mean(dim=(2, 3))  # global average pool: (B,w3)
        return embedding if pre_logits else self.fc(self.drop(embedding))  # (B,num_classes)

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.forward_head(self.forward_features(rgb), pre_logits=True)  # (B,D)
        return self.fc(self.drop(embedding)), embedding

    def model_config(self) -> dict[str, Any]:
        """JSON-able; `create_student(**config)` rebuilds this architecture."""
        return {"name": "firekd_student", "num_classes": self.num_classes,
                "widths": list(self.widths), "dropout": self.dropout}


@register_student("firekd_student", aliases=("firekd-student", "student"))
def firekd_student(pretrained: bool = False, **kwargs) -> FireKDStudent:
    if pretrained:
        raise ModelError("firekd_student has no pretrained weights: it is trained from scratch")
    return FireKDStudent(**kwargs)


class TimmStudent(nn.Module):
    """Any timm classifier as an RGB student: logits and the pre-logits embedding.

    Dropout before the classifier is applied here (`drop_rate`), since timm models place theirs
    inconsistently around the pre-logits output.
    """

    modalities = "rgb"

    def __init__(self, name: str, *, num_classes: int = 2, pretrained: bool = False,
                 pretrained_file: str | Path | None = None, img_size: int | None = None,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        check_common(num_classes=num_classes, img_size=img_size)
        self.name, self.num_classes, self.img_size, self.drop_rate = (
            name, num_classes, img_size, drop_rate)
        size_kw = {"img_size": img_size} if img_size is not None else {}
        self.backbone = create_backbone(name, pretrained=pretrained,
                                        pretrained_file=pretrained_file, hint=STUDENT_HINT,
                                        num_classes=num_classes, **size_kw)
        self.rgb_adapter = input_adapters(self.backbone)[0]
        self.embed_dim: int = self.backbone.head_hidden_size

    def forward_features(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(self.rgb_adapter(rgb))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        embedding = self.backbone.forward_head(features, pre_logits=True)  # (B,D)
        return embedding if pre_logits else self._classify(embedding)

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.forward_head(self.forward_features(rgb), pre_logits=True)  # (B,D)
        return self._classify(embedding), embedding  # (B,num_classes), (B,D)

    def _classify(self, embedding: torch.Tensor) -> torch.Tensor:
        dropped = F.dropout(embedding, p=self.drop_rate, training=self.training)
        return self.backbone.get_classifier()(dropped)

    def model_config(self) -> dict[str, Any]:
        """JSON-able; `create_student(**config)` rebuilds this architecture."""
        config = {"name": self.name, "num_classes": self.num_classes, "drop_rate": self.drop_rate}
        return config | ({"img_size": self.img_size} if self.img_size is not None else {})


def _timm_student(name: str, **kwargs) -> TimmStudent | None:
    import timm

    return TimmStudent(name, **kwargs) if timm.is_model(name) else None


register_student_fallback(_timm_student)
