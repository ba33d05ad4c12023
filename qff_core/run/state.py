"""What a training checkpoint holds, and its encoding as a ``Checkpoint`` (Zarr arrays + JSON attributes).

The whole state is in each checkpoint (optimiser parameters and state, best-so-far, metrics
history, where the minibatch sequence stands), so a resumed run continues exactly as an
uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qff_core.run.directory import Run
from qff_core.store.checkpoint import Checkpoint

HISTORY_KEYS = ("step", "loss", "learning_rate")
VAL_KEYS = ("val_step", "val_loss", "val_energy_mae_kcal_mol", "val_forces_mae_kcal_mol_a")


@dataclass
class TrainState:
    """The trainer's state between steps."""

    step: int
    opt_params: np.ndarray
    opt_state_leaves: list[np.ndarray]
    best_params: np.ndarray
    best_val_loss: float
    best_step: int
    evals_since_best: int
    history: dict[str, list]
    stop_reason: str | None = None


def state_to_checkpoint(state: TrainState, run: Run) -> Checkpoint:
    """The checkpoint of ``state``: model and optimiser parameters, optimiser state, history, RNG position."""
    arrays = {
        "params": run.parameter_map.theta(state.opt_params),
        "opt_params": state.opt_params,
        "best_params": state.best_params,
        **{f"opt_state/{i:03d}": np.asarray(leaf) for i, leaf in enumerate(state.opt_state_leaves)},
        **{f"history/{k}": np.asarray(v) for k, v in state.history.items()},
    }
    b = min(run.config.batch_size, run.split.train.size)
    per_epoch = run.split.train.size // b
    attrs = {
        "rng": {"kind": "numpy-pcg64-per-epoch", "seed": run.config.seed, "epoch": state.step // per_epoch,
                "position_in_epoch": state.step % per_epoch},
        "best": {"val_loss": state.best_val_loss, "step": state.best_step,
                 "evals_since_best": state.evals_since_best},
        "stop_reason": state.stop_reason,
        "config_steps": run.config.steps,
    }
    return Checkpoint(step=state.step, arrays=arrays, attrs=attrs)


def state_from_checkpoint(ckpt: Checkpoint) -> TrainState:
    """The state a checkpoint holds."""
    a = ckpt.arrays
    leaves = [a[k] for k in sorted(k for k in a if k.startswith("opt_state/"))]
    history = {k.split("/", 1)[1]: a[k].tolist() for k in a if k.startswith("history/")}
    for k in (*HISTORY_KEYS, *VAL_KEYS):
        history.setdefault(k, [])
    best = ckpt.attrs["best"]
    return TrainState(step=ckpt.step, opt_params=a["opt_params"], opt_state_leaves=leaves,
                      best_params=a["best_params"], best_val_loss=float(best["val_loss"]),
                      best_step=int(best["step"]), evals_since_best=int(best["evals_since_best"]),
                      history=history, stop_reason=ckpt.attrs.get("stop_reason"))


__all__ = ["HISTORY_KEYS", "VAL_KEYS", "TrainState", "state_from_checkpoint", "state_to_checkpoint"]
