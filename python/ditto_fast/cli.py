"""The `ditto-fast` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _cmd_info(_args: argparse.Namespace) -> int:
    from ditto_fast.environment import describe_environment

    for line in describe_environment().lines():
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ditto-fast", description="Fast inference engine for the Ditto talking-head model."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = commands.add_parser(
        "info", help="print the version, CUDA build, visible GPUs and optional packages"
    )
    info.set_defaults(run=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
