"""Model cards: ``<artefact>.card.json`` and ``<artefact>.card.md`` beside every exported model.

A card records what a deployment needs to run the artefact alone (input size, normalisation,
channels, decision thresholds, runtime) and what it is worth (training data and split, test F1 with
its bootstrap 95% CI, latency on the CPU that measured it), with the artefact's SHA-256 so a card
left beside another file is caught. `firekd predict` reads its settings from the card.
"""

from __future__ import annotations

import datetime
import hashlib
import platform
from pathlib import Path

import numpy as np

from firekd import LABELS, __version__
from firekd.data.transforms import IR_MEAN, IR_STD, RGB_MEAN, RGB_STD
from firekd.errors import ModelError
from firekd.io import read_json, write_json, write_text

CARD_FORMAT = "firekd-model-card/1"
RUNTIMES = {"student": "torch", "student_pruned": "torch", "teacher": "torch",
            "student_quantized": "torch int8 (torchao PT2E; inductor-compiled for speed)",
            "student_onnx": "onnxruntime fp32", "student_onnx_int8": "onnxruntime int8 (QDQ)"}


def card_paths(artefact: str | Path) -> tuple[Path, Path]:
    """(json, markdown) card paths of an artefact: ``model.onnx`` -> ``model.onnx.card.json``."""
    artefact = Path(artefact)
    return (artefact.with_name(artefact.name + ".card.json"),
            artefact.with_name(artefact.name + ".card.md"))


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (else platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _num(metrics: dict, key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None or value != value else float(value)


def build_card(artefact: str | Path, *, kind: str, model_config: dict, modalities: str, img_size: int,
               thresholds, data: dict, metrics: dict | None = None, split_counts: dict | None = None,
               ir: dict | None = None, thresholds_from: str = "validation split, max F1 per label",
               latency: dict | None = None) -> dict:
    """The card of ``artefact`` (a file already written). ``metrics``: its test metrics and, when
    measured, efficiency numbers (f1_macro, f1_macro_boot_low/high, latency_ms_b1, cpu_threads...);
    ``latency``: a latency block measured at a deployment size and batch, instead of metrics'."""
    artefact = Path(artefact)
    metrics = metrics or {}
    thresholds = [float(t) for t in np.asarray(thresholds, dtype=float)]
    card = {
        "format": CARD_FORMAT,
        "artefact": {"file": artefact.name, "kind": kind, "runtime": RUNTIMES.get(kind, kind),
                     "sha256": file_digest(artefact), "size_mb": round(artefact.stat().st_size / 1e6, 4)},
        "model": {"architecture": model_config.get("name"), "config": model_config,
                  "modalities": modalities, "params": metrics.get("params"), "gflops": metrics.get("gflops")},
        "input": {"img_size": int(img_size), "channels": "RGB" if modalities == "rgb" else "RGB + IR",
                  "layout": "float32 (B,3,H,W), H = W = img_size",
                  "preprocessing": "decode as RGB, resize to img_size x img_size (bilinear), scale to "
                                   "[0, 1], subtract mean, divide by std",
                  "normalisation": {"rgb": {"mean": list(RGB_MEAN), "std": list(RGB_STD)},
                                    **({"ir": {"mean": IR_MEAN, "std": IR_STD}} if modalities != "rgb"
                                       else {})},
                  "ir": ir if modalities != "rgb" else None},
        "output": {"logits": list(LABELS), "probability": "sigmoid(logit), per label"},
        "thresholds": {**dict(zip(LABELS, thresholds, strict=True)), "source": thresholds_from},
        "training_data": {"csv": data.get("csv"), "split_digest": data.get("split_digest"),
                          "split_counts": split_counts},
        "test": ({"f1_macro": _num(metrics, "f1_macro"),
                  "f1_macro_ci95": [_num(metrics, "f1_macro_boot_low"), _num(metrics, "f1_macro_boot_high")],
                  "f1_fire": _num(metrics, "f1_fire"), "f1_smoke": _num(metrics, "f1_smoke"),
                  "ci": "bootstrap over test samples, decisions at the thresholds above"}
                 if "f1_macro" in metrics else None),
        "latency": ({"cpu": cpu_name(), "threads": metrics.get("cpu_threads"),
                     "runtime": metrics.get("latency_runtime"),
                     "batch1_ms": _num(metrics, "latency_ms_b1"),
                     "batch32_ms": _num(metrics, "latency_ms_b32")}
                    if "latency_ms_b1" in metrics else None),
        "firekd_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if latency is not None:
        card["latency"] = {"cpu": cpu_name(), **latency}
    return card


def write_card(artefact: str | Path, card: dict) -> tuple[Path, Path]:
    json_path, md_path = card_paths(artefact)
    write_json(json_path, card)
    write_text(md_path, card_markdown(card))
    return json_path, md_path


def read_card(artefact: str | Path, *, check_digest: bool = True) -> dict | None:
    """The card beside ``artefact`` (None when there is none); ModelError when it describes
    another file (the digest differs) or is not a firekd card."""
    json_path = card_paths(artefact)[0]
    if not json_path.is_file():
        return None
    card = read_json(json_path)
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise ModelError(f"{json_path}: not a firekd model card (format {CARD_FORMAT})")
    if check_digest and card["artefact"]["sha256"] != file_digest(artefact):
        raise ModelError(f"{json_path} describes another file than {artefact} (SHA-256 differs): the "
                         "model was replaced after its card was written; export it again, or delete "
                         "the stale card and pass --img_size/--thresholds")
    return card


def _fmt(value, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def card_markdown(card: dict) -> str:
    a, m, i, t = card["artefact"], card["model"], card["input"], card["thresholds"]
    lines = [f"# Model card: {a['file']}", "",
             f"- **Artefact**: {a['kind']} ({a['runtime']}), {a['size_mb']} MB, SHA-256 `{a['sha256']}`",
             f"- **Architecture**: {m['architecture']} ({m['modalities']} input)"
             + (f", {m['params']:,} parameters" if m.get("params") else "")
             + (f", {m['gflops']:.3f} GFLOPs" if m.get("gflops") else ""),
             f"- **Input**: {i['channels']}, {i['img_size']} x {i['img_size']} px; {i['preprocessing']}; "
             f"RGB mean {i['normalisation']['rgb']['mean']}, std {i['normalisation']['rgb']['std']}",
             f"- **Output**: logits for {', '.join(card['output']['logits'])}; "
             f"{card['output']['probability']}",
             f"- **Thresholds**: fire {t['fire']:.4f}, smoke {t['smoke']:.4f} ({t['source']})"]
    if i.get("ir"):
        lines.append(f"- **IR**: {i['ir']}")
    d = card["training_data"]
    counts = d.get("split_counts") or {}
    lines.append(f"- **Training data**: {d.get('csv')}; split "
                 + (", ".join(f"{k} {v}" for k, v in counts.items()) or "not recorded")
                 + (f" (digest {d['split_digest']})" if d.get("split_digest") else ""))
    test = card.get("test")
    if test:
        low, high = test["f1_macro_ci95"]
        lines.append(f"- **Test**: F1 macro {_fmt(test['f1_macro'])} (95% CI {_fmt(low)} to {_fmt(high)}), "
                     f"F1 fire {_fmt(test['f1_fire'])}, F1 smoke {_fmt(test['f1_smoke'])}")
    else:
        lines.append("- **Test**: not measured with this artefact")
    lat = card.get("latency")
    if lat and "ms_per_batch" in lat:
        lines.append(f"- **Latency**: {lat['ms_per_batch']:.2f} ms per batch of {lat['batch']} at "
                     f"{lat['img_size']} px ({lat['frames_per_s']:.0f} frames/s; {lat['runtime']}, "
                     f"{lat['threads']} thread(s), {lat['cpu']})")
    elif lat:
        lines.append(f"- **Latency**: {_fmt(lat['batch1_ms'], '.2f')} ms at batch 1, "
                     f"{_fmt(lat['batch32_ms'], '.2f')} ms at batch 32 ({lat['runtime']}, {lat['threads']} "
                     f"thread(s), {lat['cpu']})")
    else:
        lines.append("- **Latency**: not measured")
    lines += [f"- **firekd**: {card['firekd_version']}, card written {card['created']}", "",
              f"Run it: `firekd predict --model {a['file']} --input VIDEO_OR_FOLDER_OR_CSV` "
              "(this card beside the file supplies the settings).", ""]
    return "\n".join(lines)
