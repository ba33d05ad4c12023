"""Training and evaluation: the loss falls, resume is bit for bit (also after SIGKILL), metrics
are what a hand computation gives, a trained invariant model keeps its symmetries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ENERGY_INVARIANCE_TOL

from qff_core.cli import main
from qff_core.datagen import GenerateSettings, compute_pending, prepare_dataset
from qff_core.errors import InputError
from qff_core.evaluation import evaluate_run
from qff_core.store.checkpoint import latest_checkpoint, read_checkpoint
from qff_core.training import (
    TrainConfig,
    TrainingData,
    TrainingError,
    _exact_functions,
    _initial_opt_params,
    batch_indices,
    error_metrics,
    open_run,
    parameter_map,
    train,
)
from qff_core.units import EV_KCAL_PER_MOL


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    """40 H2O geometries at 800 K, HF/STO-3G (PySCF): seconds to make, real physics."""
    path = tmp_path_factory.mktemp("data") / "h2o.zarr"
    settings = GenerateSettings(molecule="h2o", engine="pyscf", method="hf", basis="sto-3g", samples=40,
                                temperature_k=800.0, seed=3, out=str(path))
    summary = compute_pending(prepare_dataset(settings), settings)
    assert summary["n_done"] == 40
    return str(path)


def config(dataset: str, **kw) -> TrainConfig:
    base = dict(dataset=dataset, model={"depth": 2}, steps=30, batch_size=16, eval_every=5, checkpoint_every=5,
                test_size=8, val_size=6, seed=11)
    return TrainConfig.model_validate({**base, **kw})


def full_training_loss(run_dir: Path, params_key: str) -> float:
    """The loss of the whole training split at the checkpoint's parameters (as the trainer defines it)."""
    run = open_run(run_dir)
    ckpt = read_checkpoint(latest_checkpoint(run.checkpoint_dir))
    data = TrainingData.take(run.dataset(), run.split.train)
    mult, shift = parameter_map(run.model, run.norm)
    theta = ckpt.arrays[params_key] if params_key != "init" else None
    sim, _, _ = _exact_functions(run, data)
    if theta is None:
        theta = _initial_opt_params(run, sim, data) * mult + shift
    e, f = sim.evaluate(theta, data.positions_a)
    cfg, norm = run.config, run.norm
    return float(cfg.energy_weight * np.mean(((e - data.energies_ev) / norm.energy_std_ev) ** 2)
                 + cfg.force_weight * np.mean(((f - data.forces_ev_per_a) / norm.force_rms_ev_per_a) ** 2))


def test_a_short_run_reduces_the_training_loss(dataset, tmp_path):
    cfg = config(dataset, steps=60, learning_rate=3e-2, final_learning_rate=3e-3)
    summary = train(tmp_path / "run", cfg)
    assert summary["stop_reason"] == "completed" and summary["step"] == 60
    before, after = full_training_loss(tmp_path / "run", "init"), full_training_loss(tmp_path / "run", "params")
    assert after < 0.98 * before, (before, after)
    run = open_run(tmp_path / "run")
    assert run.split.counts() == {"train": 26, "val": 6, "test": 8}
    parts = [set(run.split.train), set(run.split.val), set(run.split.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])  # disjoint
    history = read_checkpoint(latest_checkpoint(run.checkpoint_dir)).arrays
    assert history["history/step"].tolist() == list(range(1, 61))  # a loss per step
    assert np.all(np.isfinite(history["history/loss"])) and len(history["history/val_loss"]) == 12


def test_resume_in_pieces_is_bit_for_bit(dataset, tmp_path):
    cfg = config(dataset)
    whole = train(tmp_path / "whole", cfg)
    first = train(tmp_path / "pieces", cfg, stop_after=13)  # stops between checkpoints
    assert first["step"] == 13
    second = train(tmp_path / "pieces", cfg, resume=True)
    assert second["resumed_from"] == 13 and second["step"] == 30
    a = read_checkpoint(latest_checkpoint(tmp_path / "whole" / "checkpoints")).arrays
    b = read_checkpoint(latest_checkpoint(tmp_path / "pieces" / "checkpoints")).arrays
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key], equal_nan=True), key
    assert whole["best_step"] == second["best_step"]


def test_sigkill_then_resume_gives_identical_parameters(dataset, tmp_path):
    n = 40
    cmd = [sys.executable, "-m", "qff_core.cli", "train", "--dataset", dataset, "--depth", "2", "--steps", str(2 * n),
           "--batch-size", "16", "--test-size", "8", "--val-size", "6", "--seed", "5", "--checkpoint-every", "5",
           "--eval-every", "10", "--no-prefect"]
    env = {**os.environ}
    assert subprocess.run([*cmd, "--run-dir", str(tmp_path / "straight")], env=env,
                          capture_output=True).returncode == 0
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--run-dir", str(killed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline:
        latest = latest_checkpoint(killed / "checkpoints")
        if latest is not None and read_checkpoint(latest).step >= n:
            break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    step_at_kill = read_checkpoint(latest_checkpoint(killed / "checkpoints")).step
    assert n <= step_at_kill < 2 * n
    resumed = subprocess.run([*cmd, "--run-dir", str(killed), "--resume", "--json"], env=env, capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout[resumed.stdout.index("{"):])["resumed_from"] >= n
    a = read_checkpoint(latest_checkpoint(tmp_path / "straight" / "checkpoints")).arrays
    b = read_checkpoint(latest_checkpoint(killed / "checkpoints")).arrays
    for key in ("params", "opt_params", "best_params", "history/loss"):
        assert np.array_equal(a[key], b[key]), key


def test_minibatches_are_a_function_of_seed_and_step():
    seen = np.concatenate([batch_indices(4, s, 50, 16) for s in range(3)])
    assert len(set(seen.tolist())) == 48  # one epoch: no repeats
    assert np.array_equal(batch_indices(4, 7, 50, 16), batch_indices(4, 7, 50, 16))
    assert not np.array_equal(batch_indices(4, 3, 50, 16), batch_indices(4, 0, 50, 16))  # next epoch reshuffled
    assert batch_indices(4, 0, 10, 16).size == 10  # small sets train full-batch


def test_error_metrics_match_a_hand_computation():
    e_ref = np.array([1.0, 2.0])
    e_pred = np.array([1.1, 1.7])  # errors +0.1, -0.3 eV
    f_ref = np.zeros((2, 1, 3))
    f_pred = np.array([[[3.0, 4.0, 0.0]], [[0.0, 0.0, -1.0]]])  # error norms 5 and 1 eV/A
    m = error_metrics(e_pred, e_ref, f_pred, f_ref)
    k = EV_KCAL_PER_MOL
    assert m["energy_mae_kcal_mol"] == pytest.approx(0.2 * k, rel=1e-12)
    assert m["energy_rmse_kcal_mol"] == pytest.approx(np.sqrt(0.05) * k, rel=1e-12)
    assert m["energy_mae_mev"] == pytest.approx(200.0, rel=1e-12)
    assert m["forces_mae_kcal_mol_a"] == pytest.approx(8.0 / 6.0 * k, rel=1e-12)
    assert m["forces_rmse_kcal_mol_a"] == pytest.approx(np.sqrt(26.0 / 6.0) * k, rel=1e-12)
    assert m["forces_err_norm_kcal_mol_a"] == pytest.approx(3.0 * k, rel=1e-12)
    assert m["forces_mae_mev_a"] == pytest.approx(8000.0 / 6.0, rel=1e-12)


def test_evaluation_of_a_trained_invariant_model(dataset, tmp_path, capsys):
    train(tmp_path / "run", config(dataset))
    assert main(["evaluate", str(tmp_path / "run"), "--json", "--no-prefect"]) == 0
    summary = json.loads(capsys.readouterr().out)
    for part in ("test", "rotated", "translated", "permuted", "inverted"):
        for key in ("energy_mae_kcal_mol", "energy_rmse_kcal_mol", "forces_mae_kcal_mol_a",
                    "forces_rmse_kcal_mol_a", "forces_err_norm_kcal_mol_a"):
            assert np.isfinite(summary[part][key])
    for part, change in summary["invariance"].items():  # the invariant model scores the same on every set
        assert change["energy_mae_rel_change"] < 1e-8 and change["forces_err_norm_rel_change"] < 1e-8, part
    assert max(summary["audit"].values()) < ENERGY_INVARIANCE_TOL
    # The test metrics are those of the model's own predictions on the stored test split.
    run = open_run(tmp_path / "run")
    theta, _ = run.final_parameters()
    test = TrainingData.take(run.dataset(), run.split.test)
    from qff_core.execution.exact import compile_exact

    e, _ = compile_exact(run.model).evaluate(theta, test.positions_a)
    hand = np.mean(np.abs(e - test.energies_ev)) * EV_KCAL_PER_MOL
    assert summary["test"]["energy_mae_kcal_mol"] == pytest.approx(hand, rel=1e-10)
    base = summary["baselines"]["constant_energy_zero_forces"]
    assert base["forces_mae_kcal_mol_a"] == pytest.approx(np.mean(np.abs(test.forces_ev_per_a)) * EV_KCAL_PER_MOL)
    for name in ("parity", "learning_curve"):
        png = Path(summary["plots"][name])
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_generic_model_trains_and_is_not_invariant(dataset, tmp_path):
    train(tmp_path / "gen", config(dataset, model={"model": "generic", "depth": 1}, steps=10))
    summary = evaluate_run(tmp_path / "gen", plots=False)
    assert summary["rotated"]["forces_err_norm_kcal_mol_a"] != pytest.approx(
        summary["test"]["forces_err_norm_kcal_mol_a"], rel=1e-6)


def test_runs_refuse_to_be_overwritten_or_resumed_differently(dataset, tmp_path):
    cfg = config(dataset, steps=5)
    train(tmp_path / "run", cfg)
    with pytest.raises(TrainingError, match="--resume"):
        train(tmp_path / "run", cfg)
    with pytest.raises(TrainingError, match="force_weight"):
        train(tmp_path / "run", config(dataset, steps=5, force_weight=1.0), resume=True)
    with pytest.raises(TrainingError, match="--steps 5"):
        train(tmp_path / "run", config(dataset, steps=9), resume=True)
    with pytest.raises(InputError, match="n-train"):
        train(tmp_path / "other", config(dataset, n_train=500))
    with pytest.raises(InputError, match="no qff dataset"):
        train(tmp_path / "x", config(str(tmp_path / "missing.zarr")))
    assert main(["evaluate", str(tmp_path / "nothing"), "--no-prefect"]) == 2
