"""``nanoldm COMMAND ...`` (also ``python -m nanoldm``). Each command group lives in its own file and
registers a sub-parser; bad input ends with a one-line reason on stderr and exit code 2."""
from __future__ import annotations

import argparse
import sys
import warnings

from nanoldm.cli import caption, convert, demo, eval, explain, generate, merge, sample, serve, shapes, train

COMMAND_GROUPS = (generate, sample, convert, demo, shapes, train, caption, eval, merge, serve, explain)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nanoldm", description="Latent diffusion (Stable Diffusion), readable.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():  # a library warning (e.g. "Lora not found") is one line on stderr
            warnings.showwarning = lambda message, *_, **__: print(
                f"nanoldm {args.command}: warning: {message}", file=sys.stderr)
            return args.run(args) or 0
    except (ValueError, OSError) as e:
        print(f"nanoldm {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nanoldm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
