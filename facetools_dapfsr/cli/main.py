"""Entry point of the ``dapfsr`` console script.

Every subcommand is a module in this package with ``register(subparsers)`` which adds its parser
and sets ``func`` (a callable taking the parsed namespace and returning an exit code).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import traceback
from collections.abc import Sequence

from facetools_dapfsr import __version__

# Subcommand modules, in the order ``--help`` lists them.
SUBCOMMAND_MODULES: list[str] = ["weights", "upscale", "sample", "synthesize", "adapt", "evaluate", "bench", "export"]


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="dapfsr",
        description="DAP-FSR: super-resolve tiny, unaligned faces; adapt to a new domain from one exemplar.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="print the full traceback of an error (give it before the command)"
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(f"facetools_dapfsr.cli.{module_name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    # Reports record the command that made them, so a figure can be reproduced.
    args.command_line = "dapfsr " + shlex.join(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, RuntimeError) as error:
        # Expected failures (bad input, missing or unwritable files) get one clear line, not a traceback.
        if args.debug:
            traceback.print_exc()
        print(f"dapfsr: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # a bug: say so, and how to see where
        if args.debug:
            traceback.print_exc()
            print(f"dapfsr: internal error: {type(error).__name__}: {error}", file=sys.stderr)
        else:
            print(
                f"dapfsr: internal error: {type(error).__name__}: {error} (rerun with `dapfsr --debug ...` for the "
                "traceback, and please report it)",
                file=sys.stderr,
            )
        return 3


if __name__ == "__main__":
    sys.exit(main())
