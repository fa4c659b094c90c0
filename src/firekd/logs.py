"""Logging setup shared by the CLI and by grid jobs in their own processes."""

from __future__ import annotations

import logging
import sys
import warnings


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    handler.firekd = True
    if quiet:  # the terminal shows warnings only; run.log handlers still get every INFO record
        handler.setLevel(logging.WARNING)
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not getattr(h, "firekd", False)] + [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("matplotlib", "PIL", "numba", "timm", "urllib3", "torch"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for chatty in ("onnxscript", "onnx_ir"):  # the ONNX exporter's optimisation passes log at INFO
        logging.getLogger(chatty).setLevel(logging.WARNING)
    for chatty in ("torch.utils._pytree", "torch.utils.cpp_extension"):
        logging.getLogger(chatty).setLevel(logging.ERROR)  # deprecation/CUDA_HOME notices on import
    warnings.filterwarnings("ignore", category=UserWarning, module="torch.*")


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        return f"warning: {msg}" if record.levelno == logging.WARNING else msg
