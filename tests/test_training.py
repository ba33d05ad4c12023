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
from conftest import BROKEN_SYMMETRY, ENERGY_INVARIANCE_TOL, FLOAT64_TOL, METRIC_INVARIANCE_TOL

from qff_core.cli import main
from qff_core.errors import InputError
from qff_core.evaluation import evaluate_run
from qff_core.execution.exact import compile_exact
from qff_core.metrics import error_metrics
from qff_core.run import TrainConfig, TrainingData, TrainingError, open_run
from qff_core.store.checkpoint import latest_checkpoint, read_checkpoint
from qff_core.training import batch_indices, initial_parameters, run_loss, train
from qff_core.units import EV_KCAL_PER_MOL


@pytest.fixture(scope="module")
def dataset(h2o) -> str:
    return h2o


def config(dataset: str, **kw) -> TrainConfig:
    base = dict(dataset=dataset, model={"depth": 2}, steps=30, batch_size=16, eval_every=5, checkpoint_every=5,
                test_size=8, val_size=6, seed=11)
    return TrainConfig.model_validate({**base, **kw})


def full_training_loss(run_dir: Path, params_key: str) -> float:
    """The loss of the whole training split at the checkpoint's parameters (as the trainer defines it)."""
    run = open_run(run_dir)
    ckpt = read_checkpoint(latest_checkpoint(run.checkpoint_dir))
    data = TrainingData.take(run.dataset(), run.split.train)
    sim = compile_exact(run.model)
    if params_key == "init":
        theta = run.parameter_map.theta(initial_parameters(run, sim, data))
    else:
        theta = ckpt.arrays[params_key]
    e, f = sim.evaluate(theta, data.positions_a)
    cfg, norm = run.config, run.norm  # the loss written out by hand, as the trainer defines it
    hand = float(cfg.energy_weight * np.mean(((e - data.energies_ev) / norm.energy_std_ev) ** 2)
                 + cfg.force_weight * np.mean(((f - data.forces_ev_per_a) / norm.force_rms_ev_per_a) ** 2))
    defined = float(run_loss(run).value(e, f, data.energies_ev, data.forces_ev_per_a))
    assert defined == pytest.approx(hand, rel=FLOAT64_TOL)
    return hand


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


def test_resume_needs_only_the_run_dir_and_takes_new_guards(dataset, tmp_path, capsys):
    """Seen in review: --eval-every and --patience given with --resume were dropped without a word (the run kept
    validating every 25 steps and ran 237 validations past its best), and a resume needed every original flag.
    The run's settings come from run.json now; the guards given are applied, said and recorded; other settings
    still have to match."""
    run = tmp_path / "run"
    first = train(run, config(dataset, steps=30, eval_every=3), stop_after=12)
    assert first["step"] == 12
    assert main(["train", "--resume", "--run-dir", str(run), "--eval-every", "5", "--patience", "1",
                 "--no-prefect", "--json"]) == 0
    out = capsys.readouterr()
    assert "with patience 1 (was None), eval_every 5 (was 3)" in out.err
    arrays = read_checkpoint(latest_checkpoint(run / "checkpoints")).arrays
    steps = arrays["history/val_step"].tolist()
    assert steps[:4] == [3, 6, 9, 12] and all(s % 5 == 0 for s in steps[4:]) and len(steps) > 4
    recorded = json.loads((run / "run.json").read_text())["config"]
    assert (recorded["eval_every"], recorded["patience"]) == (5, 1)
    assert main(["train", "--resume", "--run-dir", str(run), "--force-weight", "1", "--no-prefect"]) == 2
    assert "force_weight: 10.0 in the run, 1.0 now" in capsys.readouterr().err


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
    assert m["energy_mae_kcal_mol"] == pytest.approx(0.2 * k, rel=FLOAT64_TOL)
    assert m["energy_rmse_kcal_mol"] == pytest.approx(np.sqrt(0.05) * k, rel=FLOAT64_TOL)
    assert m["energy_mae_mev"] == pytest.approx(200.0, rel=FLOAT64_TOL)
    assert m["forces_mae_kcal_mol_a"] == pytest.approx(8.0 / 6.0 * k, rel=FLOAT64_TOL)
    assert m["forces_rmse_kcal_mol_a"] == pytest.approx(np.sqrt(26.0 / 6.0) * k, rel=FLOAT64_TOL)
    assert m["forces_err_norm_kcal_mol_a"] == pytest.approx(3.0 * k, rel=FLOAT64_TOL)
    assert m["forces_mae_mev_a"] == pytest.approx(8000.0 / 6.0, rel=FLOAT64_TOL)


def test_evaluation_of_a_trained_invariant_model(dataset, tmp_path, capsys):
    train(tmp_path / "run", config(dataset))
    assert main(["evaluate", str(tmp_path / "run"), "--json", "--no-prefect"]) == 0
    summary = json.loads(capsys.readouterr().out)
    for part in ("test", "rotated", "translated", "permuted", "inverted"):
        for key in ("energy_mae_kcal_mol", "energy_rmse_kcal_mol", "forces_mae_kcal_mol_a",
                    "forces_rmse_kcal_mol_a", "forces_err_norm_kcal_mol_a"):
            assert np.isfinite(summary[part][key])
    for part, change in summary["invariance"].items():  # the invariant model scores the same on every set
        assert change["energy_mae_rel_change"] < METRIC_INVARIANCE_TOL, part
        assert change["forces_err_norm_rel_change"] < METRIC_INVARIANCE_TOL, part
    assert max(summary["audit"].values()) < ENERGY_INVARIANCE_TOL
    # The test metrics are those of the model's own predictions on the stored test split.
    run = open_run(tmp_path / "run")
    theta, _ = run.final_parameters()
    test = TrainingData.take(run.dataset(), run.split.test)
    e, _ = compile_exact(run.model).evaluate(theta, test.positions_a)
    hand = np.mean(np.abs(e - test.energies_ev)) * EV_KCAL_PER_MOL
    assert summary["test"]["energy_mae_kcal_mol"] == pytest.approx(hand, rel=FLOAT64_TOL)
    base = summary["baselines"]["constant_energy_zero_forces"]
    assert base["forces_mae_kcal_mol_a"] == pytest.approx(np.mean(np.abs(test.forces_ev_per_a)) * EV_KCAL_PER_MOL)
    for name in ("parity", "learning_curve"):
        png = Path(summary["plots"][name])
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_generic_model_trains_and_is_not_invariant(dataset, tmp_path):
    # Through the command line: --model is ModelConfig.model, the nested config TrainConfig.model is not a flag.
    assert main(["train", "--dataset", dataset, "--model", "generic", "--depth", "1", "--steps", "10",
                 "--batch-size", "16", "--eval-every", "5", "--checkpoint-every", "5", "--test-size", "8",
                 "--val-size", "6", "--seed", "11", "--no-prefect", "--run-dir", str(tmp_path / "gen")]) == 0
    assert open_run(tmp_path / "gen").config.model.model == "generic"
    summary = evaluate_run(tmp_path / "gen", plots=False)
    assert summary["rotated"]["forces_err_norm_kcal_mol_a"] != pytest.approx(
        summary["test"]["forces_err_norm_kcal_mol_a"], rel=BROKEN_SYMMETRY)


def test_runs_refuse_to_be_overwritten_or_resumed_differently(dataset, tmp_path):
    cfg = config(dataset, steps=5)
    train(tmp_path / "run", cfg)
    with pytest.raises(TrainingError, match="--resume"):
        train(tmp_path / "run", cfg)
    with pytest.raises(TrainingError, match=r"force_weight: 10\.0 in the run, 1\.0 now"):
        train(tmp_path / "run", config(dataset, steps=5, force_weight=1.0), resume=True)
    with pytest.raises(TrainingError, match=r"model\.depth: 2 in the run, 3 now"):  # a nested setting, by name
        train(tmp_path / "run", config(dataset, steps=5, model={"depth": 3}), resume=True)
    with pytest.raises(TrainingError, match="--steps 5"):
        train(tmp_path / "run", config(dataset, steps=9), resume=True)
    with pytest.raises(InputError, match="n-train"):
        train(tmp_path / "other", config(dataset, n_train=500))
    with pytest.raises(InputError, match="no qff dataset"):
        train(tmp_path / "x", config(str(tmp_path / "missing.zarr")))
    assert main(["evaluate", str(tmp_path / "nothing"), "--no-prefect"]) == 2


def test_a_run_is_portable_across_working_directories_and_moves(h2o, tmp_path, monkeypatch, capsys):
    """Trained with a relative --dataset; evaluated and resumed from elsewhere, and after the project moved."""
    import shutil

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    shutil.copytree(h2o, project / "data" / "h2o.zarr")
    monkeypatch.chdir(project)
    args = ["train", "--depth", "1", "--steps", "6", "--batch-size", "16", "--test-size", "8", "--val-size", "6",
            "--checkpoint-every", "3", "--eval-every", "3", "--no-prefect", "--run-dir", "runs/r"]
    assert main([*args, "--dataset", "./data/h2o.zarr"]) == 0
    assert json.loads((project / "runs" / "r" / "run.json").read_text())["dataset"]["path"] == "../../data/h2o.zarr"
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)  # another working directory
    assert main(["evaluate", "project/runs/r", "--no-prefect", "--no-plots", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)["test"]
    moved = tmp_path / "elsewhere" / "moved"
    shutil.move(project, moved)  # the run and its data, moved together
    monkeypatch.chdir(moved / "runs")
    assert main(["evaluate", "r", "--no-prefect", "--no-plots", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test"] == first
    # --resume with the dataset path typed differently (relative to here) continues the same run.
    assert main([*args[:-1], "r", "--dataset", "../data/h2o.zarr", "--resume", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["resumed_from"] == 6


def test_a_run_refuses_a_dataset_whose_samples_changed(h2o, tmp_path):
    import shutil

    import zarr

    from qff_core.run import DatasetChangedError

    data = tmp_path / "h2o.zarr"
    shutil.copytree(h2o, data)
    train(tmp_path / "run", config(str(data), steps=3, checkpoint_every=3, eval_every=3))
    run = open_run(tmp_path / "run")
    energies = zarr.open_array(str(data / "energies"), mode="r+")
    energies[int(run.split.test[0])] += 0.01  # one test energy changed under the run
    with pytest.raises(DatasetChangedError, match="changed"):
        open_run(tmp_path / "run")
    assert main(["evaluate", str(tmp_path / "run"), "--no-prefect"]) == 2


def test_an_interrupt_between_the_history_updates_leaves_it_aligned():
    """Ctrl-C can land after a step's number is recorded and before its loss is: the roll-back before the
    interrupt checkpoint drops that partial record from every list (a 12-qubit run resumed about twenty times
    ended with 15 000 steps and 14 999 losses, and its evaluation's loss plot failed)."""
    from qff_core.run.state import TrainState
    from qff_core.training import _roll_back

    history = {"step": [1, 2, 3], "loss": [0.5, 0.4], "learning_rate": [0.1, 0.1],
               "val_step": [2, 3], "val_loss": [0.3], "val_energy_mae_kcal_mol": [1.0],
               "val_forces_mae_kcal_mol_a": [2.0]}
    state = TrainState(step=3, opt_params=np.zeros(1), opt_state_leaves=[], best_params=np.zeros(1),
                       best_val_loss=0.3, best_step=2, evals_since_best=0, history=history)
    _roll_back(state, 3)
    assert state.history == {"step": [1, 2], "loss": [0.5, 0.4], "learning_rate": [0.1, 0.1], "val_step": [2],
                             "val_loss": [0.3], "val_energy_mae_kcal_mol": [1.0], "val_forces_mae_kcal_mol_a": [2.0]}
