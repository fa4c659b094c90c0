"""The `firekd` command line: subcommands, one-line errors, logging."""

from __future__ import annotations

import logging
import sys
import warnings

from firekd import __version__
from firekd.cli.args import Parser
from firekd.errors import FirekdError, one_line

COMMAND_MODULES = ("firekd.cli.data_cmds", "firekd.cli.models_cmd", "firekd.cli.train_cmds",
                   "firekd.cli.export_cmd")


def setup_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
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


def build_parser() -> Parser:
    import importlib

    parser = Parser(prog="firekd", description=(
        "Distil multimodal (RGB + IR) fire/smoke teachers into a small RGB-only student, run the "
        "loss ablation over teachers and seeds, compress the student for CPU deployment."))
    parser.add_argument("--version", action="version", version=f"firekd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except FirekdError as exc:
        print(f"firekd {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"firekd {args.command}: interrupted", file=sys.stderr)
        return 130
