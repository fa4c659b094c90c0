"""The `firekd` command line: subcommands, one-line errors, logging."""

from __future__ import annotations

import argparse
import os
import sys

from firekd import __version__
from firekd.cli.args import Parser
from firekd.diskspace import is_no_space, no_space_error
from firekd.errors import FirekdError, one_line
from firekd.logs import setup_logging

COMMAND_MODULES = ("firekd.cli.data_cmds", "firekd.cli.convert_cmd", "firekd.cli.models_cmd",
                   "firekd.cli.train_cmds", "firekd.cli.eval_cmds", "firekd.cli.export_cmd",
                   "firekd.cli.predict_cmd")


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
    return _execute(args, f"firekd {args.command}")


def spec_script(teacher: str, variant: str, argv: list[str] | None = None) -> int:
    """Entry of the spec's `scripts/<teacher>/train_kd_<variant>.py`: `firekd train` with the
    teacher and variant fixed by the script (its --help says so), every spec flag passed through."""
    from firekd.cli.train_cmds import spec_parser

    parser = spec_parser(sys.argv[0] if argv is None else f"train_kd_{variant}.py", teacher, variant)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return _execute(parser.parse_args(sys.argv[1:] if argv is None else argv), parser.prog)


def _execute(args: argparse.Namespace, name: str) -> int:
    """Run a parsed command; a user-facing error ends in one line and a non-zero exit."""
    # only a torchrun rank needs torch here: a plain process imports it with the command that uses
    # it, so --help, a bad flag or a bad file (`firekd validate`) answer without its ~1.5 s import
    torchrun, rank = int(os.environ.get("WORLD_SIZE", "1")) > 1, 0
    if torchrun:
        from firekd.engine import distributed

        rank = distributed.setup().rank  # join the process group
    setup_logging(args.verbose, quiet=rank > 0)
    try:
        return int(args.func(args) or 0)
    except FirekdError as exc:
        print(f"{name}: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a full disk met outside the atomic writes (links, exporters' own files)
        if not is_no_space(exc):
            raise
        error = no_space_error(exc.filename or "?", exc)
        print(f"{name}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    finally:
        if torchrun:
            distributed.teardown()
