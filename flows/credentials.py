"""Credentials from Prefect Secret blocks (qff_core never imports Prefect, so the lookup lives here).

The value is returned to the caller, which hands it to IBM Runtime; it is never a flow or task
parameter (Prefect stores those), never logged and never written to a run directory.
"""

from __future__ import annotations

from qff_core.errors import InputError
from qff_core.execution.config import ExecutorConfig


def ibm_token(block: str) -> str:
    """The IBM Quantum API key held by the Prefect Secret block ``block``."""
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(block).get()
    except ValueError as exc:  # Prefect: "Unable to find block document named ..."
        raise InputError(f"no Prefect Secret block {block!r} ({exc}); create it with `Secret(value=...)"
                         f".save({block!r})`, or unset token_secret to use $QISKIT_IBM_TOKEN") from None
    if not isinstance(value, str) or not value:
        raise InputError(f"the Prefect Secret block {block!r} holds no API key string")
    return value


def token_for(executor: ExecutorConfig) -> str | None:
    """The API key of ``executor``'s ``token_secret`` block, or None (the backend then reads its own account)."""
    return ibm_token(executor.token_secret) if executor.token_secret else None
