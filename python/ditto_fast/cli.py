"""The `ditto-fast` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pickle import UnpicklingError

# Errors that describe bad input or a missing resource: shown as one line, without a
# traceback. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, ImportError, UnpicklingError, RuntimeError)


def _cmd_info(_args: argparse.Namespace) -> int:
    from ditto_fast.environment import describe_environment

    for line in describe_environment().lines():
        print(line)
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from ditto_fast.download import download_checkpoints

    out = download_checkpoints(args.out, parts=args.parts, repo=args.repo, revision=args.revision)
    print(f"checkpoints ({', '.join(args.parts)}) are in {out}")
    return 0


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    from ditto_fast.export import export_tree

    reports = export_tree(args.pytorch, args.out, on_done=lambda r: print(r.line(), flush=True))
    print(f"exported {len(reports)} networks to {args.out}")
    return 0


def _add_export_onnx(commands) -> None:
    parser = commands.add_parser(
        "export-onnx",
        help="export the core networks of a ditto_pytorch/ tree to ONNX, checked against torch",
    )
    parser.add_argument("--pytorch", required=True,
                        help="the ditto_pytorch/ folder, or a checkpoint tree containing it")
    parser.add_argument("--out", required=True, help="folder for the ONNX files")
    parser.set_defaults(run=_cmd_export_onnx)


def _cmd_synth(args: argparse.Namespace) -> int:
    from ditto_fast.synthetic.tree import write_synthetic_tree

    report = write_synthetic_tree(args.out, args.size, args.seed, args.overwrite,
                                  progress=lambda message: print(message, flush=True))
    total = sum(report.parameters.values())
    print(f"synthetic {args.size} tree in {args.out}: {report.total_bytes() / 2**20:.1f} MiB, "
          f"{total:,} parameters in the core networks (weights are synthetic)")
    return 0


def _add_synth(commands) -> None:
    parser = commands.add_parser(
        "synth", help="write a checkpoint tree with the official layout and synthetic weights"
    )
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny",
                        help="tiny: constructed small models (tests, demo); full: real sizes, "
                             "random weights (benchmarks)")
    parser.add_argument("--out", required=True, help="folder to write the tree into")
    parser.add_argument("--seed", type=int, default=0, help="the same seed writes the same bytes")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing synthetic tree at --out")
    parser.set_defaults(run=_cmd_synth)


def _add_download(commands) -> None:
    from ditto_fast.download import DEFAULT_PARTS, OFFICIAL_REPO, PARTS

    parser = commands.add_parser(
        "download", help="fetch the official checkpoint tree (resumable, with progress bars)"
    )
    parser.add_argument("--out", required=True, help="folder to write the tree into")
    parser.add_argument("--parts", nargs="+", choices=sorted(PARTS), default=list(DEFAULT_PARTS),
                        help=f"parts of the tree to fetch (default: {' '.join(DEFAULT_PARTS)})")
    parser.add_argument("--repo", default=OFFICIAL_REPO, help="model repository to fetch from")
    parser.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    parser.set_defaults(run=_cmd_download)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ditto-fast", description="Fast inference engine for the Ditto talking-head model."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = commands.add_parser(
        "info", help="print the version, CUDA build, visible GPUs and optional packages"
    )
    info.set_defaults(run=_cmd_info)
    _add_synth(commands)
    _add_download(commands)
    _add_export_onnx(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("ditto-fast: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        print(f"ditto-fast {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
