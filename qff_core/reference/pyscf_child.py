"""The child process of ``pyscf_process.PySCFProcess``: PySCF calculations answered line by line.

Run as ``python -m qff_core.reference.pyscf_child``: it says ``ready`` once PySCF is imported,
then answers each JSON request line on stdin with one result or error line on stdout, until EOF.
"""

from __future__ import annotations

import json
import os
import sys

from qff_core.reference.base import CalculationRequest
from qff_core.reference.pyscf import PySCFEngine


def main() -> int:
    """The child: answer request lines on stdin with result or error lines on stdout until EOF."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever PySCF or a C library prints goes to stderr, not into the replies
    sys.stdout = sys.stderr
    engine = PySCFEngine()
    out.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        request = CalculationRequest.from_json(json.loads(line)["request"])
        try:
            reply = {"result": engine.compute_here(request).to_json()}
        except Exception as exc:  # every failure goes back to the parent, which raises it there
            reply = {"error": {"type": type(exc).__name__, "message": str(exc)}}
        out.write(json.dumps(reply) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
