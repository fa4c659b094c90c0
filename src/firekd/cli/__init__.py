"""The `firekd` command line: subcommands, one-line errors, logging."""

from __future__ import annotations

import logging
import sys
import warnings

from firekd import __version__
from firekd.cli.args import Parser
from firekd.errors import FirekdError, one_line

COMMAND_MODULES = ("firekd.cli.data_cmds", "firekd.cli.convert_cmd", "firekd.cli.models_cmd",
                   "firekd.cli.train_cmds", "firekd.cli.eval_cmds", "firekd.cli.export_cmd")


def _join_distributed() -> int:
    """Under torchrun: join the process group; only rank 0 writes files and logs progress."""
    from firekd.engine import distributed
    from firekd.io import set_writer

    info = distributed.setup()
    set_writer(info.is_main)
    return info.rank


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
    rank = _join_distributed()
    setup_logging(args.verbose, quiet=rank > 0)
    try:
        return int(args.func(args) or 0)
    except FirekdError as exc:
        print(f"firekd {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"firekd {args.command}: interrupted", file=sys.stderr)
        return 130


def spec_script(teacher: str, variant: str, argv: list[str] | None = None) -> int:
    """Entry of the spec's `scripts/<teacher>/train_kd_<variant>.py`: `firekd train` with the
    teacher and variant fixed by the script's location, every spec flag passed through."""
    args = sys.argv[1:] if argv is None else argv
    return main(["train", "--teacher", teacher, "--variant", variant, *args])
