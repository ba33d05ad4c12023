"""The ``qff`` command: the application layer above the library and the Prefect flows.

One module per subcommand group (``model``, ``dataset``, ``train`` with ``cost``, ``evaluate``,
``pipeline`` with ``demo``); flags are generated from the pydantic configs (``common.py``).
Every subcommand prints a human summary; with ``--json`` it prints one JSON document instead
(last, on stdout), for scripts and CI. Errors exit with status 2 and a message saying what to
fix. This package is the only part of ``qff_core`` that may import ``flows`` or Prefect.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from qff_core.cli import dataset, evaluate, model, pipeline, train
from qff_core.cli.common import setup_compilation_cache
from qff_core.errors import QffError

GROUPS = (model, dataset, train, evaluate, pipeline)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``qff``."""
    parser = argparse.ArgumentParser(prog="qff", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``qff``; returns the exit status."""
    args = build_parser().parse_args(argv)
    setup_compilation_cache()
    try:
        return args.func(args)
    except QffError as exc:
        print(f"qff: error: {exc}", file=sys.stderr)
        return 2


__all__ = ["build_parser", "main"]
