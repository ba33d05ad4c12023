"""The ``qff`` command: the application layer above the library and the Prefect flows.

One module per subcommand group (``model``, ``dataset``, ``train`` with ``cost``, ``evaluate``,
``use`` with ``md``, ``vibrations``, ``active-learn``; ``pipeline`` with ``demo``, ``models``
with ``retrain``); flags are generated from the pydantic configs (``common.py``).
Every subcommand prints a human summary; with ``--json`` it prints one JSON document instead
(last, on stdout), for scripts and CI. Exit statuses: 0 done, 2 bad input (one line saying what
to fix, nothing written), 3 some samples failed, 130 interrupted (Ctrl-C or SIGTERM: what was kept
is saved and one line says how to continue). This package is the only part of ``qff_core`` that
may import ``flows`` or Prefect.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from qff_core.cli import dataset, evaluate, model, models, pipeline, serve, submit, train, use
from qff_core.cli.common import setup_compilation_cache
from qff_core.errors import QffError
from qff_core.interrupts import interrupt_handlers, interrupted

GROUPS = (model, dataset, train, evaluate, use, pipeline, models, serve, submit)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``qff``."""
    parser = argparse.ArgumentParser(prog="qff", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


INTERRUPTED = 130


class _Notices(logging.Handler):
    """The library's warnings as ``qff: warning: ...`` lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"qff: {record.levelname.lower()}: {record.getMessage()}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``qff``; returns the exit status."""
    args = build_parser().parse_args(argv)
    library = logging.getLogger("qff_core")
    handler = _Notices(logging.WARNING)
    library.addHandler(handler)
    try:
        with interrupt_handlers():  # SIGTERM (a scheduler or deployment stopping the job) ends it like Ctrl-C
            setup_compilation_cache()
            try:
                return args.func(args)
            except Exception as exc:
                if interrupted() and not isinstance(exc, QffError):  # a library turned the interrupt into its own error
                    raise KeyboardInterrupt from None
                raise
    except QffError as exc:
        print(f"qff: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"qff: interrupted: {str(exc) or 'work already saved is kept; run the same command again to continue'}",
              file=sys.stderr)
        return INTERRUPTED
    finally:
        library.removeHandler(handler)


__all__ = ["build_parser", "main"]
