"""Plain configuration records. The CLI builds them from flags; recipes read them; checkpoints
store them as dicts so every artifact records the settings that made it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from firekd.data.csv import ColumnNames


@dataclass(frozen=True)
class DataConfig:
    csv: str
    base_path: str | None = None
    columns: ColumnNames = field(default_factory=ColumnNames)
    skip_missing: bool = False
    split: str = "auto"
    split_ratios: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_seed: int = 0
    block_size: int = 50
    split_file: str | None = None
    img_size: int = 224
    ir_channels: str = "auto"
    ir_range: tuple[float, float] | None = None
    require_ir: bool = True

    def to_dict(self) -> dict:
        return asdict(self)
