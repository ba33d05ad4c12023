"""Training details shared by every executor: frozen parameters stay frozen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qff_core.datagen import GenerateSettings, compute_pending, prepare_dataset
from qff_core.store.checkpoint import latest_checkpoint, read_checkpoint
from qff_core.training import TrainConfig, train


@pytest.fixture(scope="module")
def lih(tmp_path_factory) -> str:
    """10 LiH geometries, HF/STO-3G (PySCF): a 2-qubit model at depth 1, seconds to make."""
    path = tmp_path_factory.mktemp("data") / "lih.zarr"
    settings = GenerateSettings(molecule="lih", engine="pyscf", method="hf", basis="sto-3g", samples=10,
                                temperature_k=1000.0, seed=2, out=str(path))
    assert compute_pending(prepare_dataset(settings), settings)["n_done"] == 10
    return str(path)


def config(dataset: str, executor="exact", **kw) -> TrainConfig:
    """LiH, invariant D=1 (7 parameters), 2 geometries per step, energies and forces in the loss."""
    base = dict(dataset=dataset, model={"depth": 1}, steps=2, batch_size=2, test_size=2, val_size=2, seed=3,
                eval_every=1, checkpoint_every=1, learning_rate=5e-2, executor=executor)
    return TrainConfig.model_validate({**base, **kw})


def last(run_dir: Path) -> dict[str, np.ndarray]:
    return read_checkpoint(latest_checkpoint(run_dir / "checkpoints")).arrays


def test_frozen_parameters_stay_at_their_initial_values(lih, tmp_path):
    """The exact step masks frozen gradients as the executors do (it used to move them)."""
    from qff_core.models import init_parameters
    from qff_core.training import open_run

    cfg = config(lih, model={"depth": 1, "symmetry_breaking": "frozen"})
    train(tmp_path / "run", cfg)
    model = open_run(tmp_path / "run").model
    frozen = ~np.asarray(model.trainable_mask())
    assert frozen.sum() == 2
    theta = last(tmp_path / "run")["params"]
    assert np.array_equal(theta[frozen], init_parameters(model, seed=cfg.seed, strategy=cfg.init)[frozen])
