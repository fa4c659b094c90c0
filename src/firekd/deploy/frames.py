"""What `firekd predict` reads: an image folder, a CSV of images (RGB, or RGB/IR pairs; labels
optional) or a video file, streamed as frames resized the way training resized images.

Every source yields ``Frame``s, or ``Skipped`` for an image or a video packet that cannot be decoded
(the caller warns and counts), one at a time: nothing holds more than one decoded frame, so memory
stays flat for an hour of footage. Video is decoded with PyAV (FFmpeg), packet by packet, so a
damaged packet costs its frame only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from firekd.data.csv import COLUMN_ALIASES, ColumnNames, read_records, read_unlabeled
from firekd.data.images import IRSpec, decode_ir, decode_rgb
from firekd.errors import DataError, first_line

log = logging.getLogger(__name__)

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
NO_COLUMNS = ColumnNames()  # every column found by its aliases
VIDEO_EXT = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv")


@dataclass
class Frame:
    position: int  # order of arrival among the kept frames
    name: str  # file path, or the video frame index as text
    rgb: np.ndarray  # uint8 (3,S,S)
    ir: np.ndarray | None = None  # (C,S,S) for an RGB+IR model
    index: int | None = None  # video frame index (from the presentation time)
    time_s: float | None = None  # video presentation time
    labels: np.ndarray = field(default_factory=lambda: np.full(2, np.nan))  # (2,) 0/1 or NaN
    thumb: np.ndarray | None = None  # uint8 (h,w,3) small copy for the contact sheet


@dataclass
class Skipped:
    name: str
    reason: str


def resize_rgb(image: Image.Image, size: int) -> np.ndarray:
    """uint8 (3,S,S), bilinear as `firekd.data.images.decode_rgb` resizes training images."""
    arr = np.array(image.convert("RGB").resize((size, size), Image.BILINEAR))
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def thumbnail(rgb: np.ndarray, size: int = 96) -> np.ndarray:
    """(h,w,3) uint8 no larger than ``size`` from a (3,S,S) frame."""
    image = Image.fromarray(rgb.transpose(1, 2, 0))
    image.thumbnail((size, size))
    return np.asarray(image)


class InputSource:
    """Base of the sources: ``frames()`` yields Frame/Skipped; ``kind`` and ``total`` (if known)."""

    kind = "images"
    total: int | None = None
    labelled = False

    def frames(self) -> Iterator[Frame | Skipped]:
        raise NotImplementedError


class ImageFolder(InputSource):
    """Every image file under a folder (recursively), in sorted path order."""

    def __init__(self, folder: Path, size: int) -> None:
        self.paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXT and p.is_file())
        if not self.paths:
            raise DataError(f"{folder}: no image files ({', '.join(IMAGE_EXT)}) in this folder")
        self.size, self.total = size, len(self.paths)

    def frames(self) -> Iterator[Frame | Skipped]:
        position = 0
        for path in self.paths:
            try:
                rgb = decode_rgb(str(path), self.size)
            except DataError as exc:
                yield Skipped(str(path), str(exc))
                continue
            yield Frame(position, str(path), rgb)
            position += 1


def _has_labels(csv_path: Path, columns: ColumnNames) -> bool:
    """The CSV has fire/smoke columns with at least one value (else it is a list of images)."""
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{csv_path}: cannot read the CSV ({first_line(exc)})") from None
    lower = {c.strip().lower(): c for c in table.columns}
    names = [columns.fire or "", *COLUMN_ALIASES["fire"]]
    found = next((lower[n.lower()] for n in names if n and n.lower() in lower), None)
    return found is not None and (table[found].str.strip() != "").any()


class CsvImages(InputSource):
    """Rows of a firekd CSV: RGB paths (and IR paths for an RGB+IR model), labels when it has them."""

    def __init__(self, csv_path: Path, size: int, *, needs_ir: bool, ir: IRSpec | None,
                 base_path: str | None = None, columns: ColumnNames = NO_COLUMNS) -> None:
        self.labelled = _has_labels(csv_path, columns)
        reader = read_records if self.labelled else read_unlabeled
        try:
            self.records = reader(csv_path, base_path=base_path, columns=columns, require_ir=needs_ir)
        except DataError as exc:
            if needs_ir and "no IR column" in str(exc):
                raise DataError(f"{csv_path}: no IR column (ir_path, ir, thermal, ...; or --ir_col), and "
                                "the model is an RGB+IR teacher that needs RGB/IR pairs") from None
            raise
        self.size, self.needs_ir, self.ir = size, needs_ir, ir
        self.total = len(self.records)

    def frames(self) -> Iterator[Frame | Skipped]:
        position = 0
        for row in self.records.itertuples(index=False):
            name = f"{row.rgb_path}"
            try:
                rgb = decode_rgb(row.rgb_path, self.size)
                ir = decode_ir(row.ir_path, self.size, self.ir) if self.needs_ir else None
            except DataError as exc:
                yield Skipped(f"line {row.row}: {name}", str(exc))
                continue
            labels = np.array([row.fire, row.smoke], dtype=float)
            yield Frame(position, name, rgb, ir, labels=labels)
            position += 1


class VideoFile(InputSource):
    """A video decoded with PyAV, optionally subsampled to ``fps`` frames per second of video time."""

    kind = "video"

    def __init__(self, path: Path, size: int, fps: float | None = None) -> None:
        import av

        self.path, self.size, self.fps = path, size, fps
        try:
            self.container = av.open(str(path))
            self.stream = self.container.streams.video[0]
        except (av.FFmpegError, IndexError, OSError, UnicodeDecodeError) as exc:
            reason = "no video stream" if isinstance(exc, IndexError) else first_line(exc)
            raise DataError(f"{path}: cannot read the video ({reason})") from None
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.rate = float(rate) if rate else 25.0
        frames = self.stream.frames or 0
        if not frames and self.stream.duration and self.stream.time_base:
            frames = int(self.stream.duration * self.stream.time_base * self.rate)
        kept = frames if not fps or fps >= self.rate else math.ceil(frames * fps / self.rate)
        self.total = kept or None

    def frames(self) -> Iterator[Frame | Skipped]:
        import av

        position, last_bucket, start = 0, -1, None
        try:
            for packet in self.container.demux(self.stream):
                try:
                    decoded = packet.decode()
                except av.FFmpegError as exc:  # a damaged packet: its frame is lost, the video goes on
                    time = float(packet.pts * packet.time_base) if packet.pts is not None else None
                    yield Skipped(f"frame at {time:.3f}s" if time is not None else "a frame", first_line(exc))
                    continue
                for frame in decoded:
                    time = float(frame.time) if frame.time is not None else position / self.rate
                    start = time if start is None else start
                    if self.fps:  # keep the first frame of every 1/fps interval of video time
                        bucket = math.floor((time - start) * self.fps + 1e-6)
                        if bucket <= last_bucket:
                            continue
                        last_bucket = bucket
                    index = int(round((time - start) * self.rate))
                    rgb = resize_rgb(frame.to_image(), self.size)
                    yield Frame(position, str(index), rgb, index=index, time_s=time - start)
                    position += 1
        finally:
            self.container.close()


def open_source(path: str | Path, size: int, *, needs_ir: bool, ir: IRSpec | None, fps: float | None,
                base_path: str | None = None, columns: ColumnNames = NO_COLUMNS) -> InputSource:
    """The source for ``--input``: a folder, a .csv or a video file (by extension)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"--input {path}: no such file or folder")
    is_csv = path.is_file() and path.suffix.lower() == ".csv"
    if needs_ir and not is_csv:
        raise DataError(f"--input {path}: the model is an RGB+IR teacher; give a CSV of RGB/IR pairs "
                        "(rgb_path,ir_path[,fire,smoke]), or predict with an RGB student")
    if path.is_dir():
        return ImageFolder(path, size)
    if is_csv:
        return CsvImages(path, size, needs_ir=needs_ir, ir=ir, base_path=base_path, columns=columns)
    if path.suffix.lower() in IMAGE_EXT:
        raise DataError(f"--input {path}: a single image; put it in a folder or list it in a CSV")
    if path.suffix.lower() not in VIDEO_EXT:
        log.info("--input %s: unknown extension, trying it as a video", path)
    return VideoFile(path, size, fps)
