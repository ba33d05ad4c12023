"""Training on noisy labels: the noise is a pure function of (seed, dataset index) with the standard deviation asked
for; it reaches the training labels (and normalisation, KRR) only, never validation or test; it is part of the run's
fingerprint and recorded in run.json; zero noise changes nothing, and runs written before it existed still open."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FLOAT64_TOL

from qff_core.baselines import fit_kernel_ridge
from qff_core.cli import main
from qff_core.evaluation import evaluate_run
from qff_core.execution.exact import compile_exact
from qff_core.metrics import error_metrics
from qff_core.run import Normalisation, TrainConfig, TrainingData, create_run, open_run
from qff_core.run.label_noise import NOISE_SEED_OFFSET, noisy_labels, standard_normal_labels
from qff_core.store.checkpoint import latest_checkpoint, read_checkpoint
from qff_core.training import train

ENERGY_NOISE_EV = 0.05  # ~1.2 kcal/mol: far above float noise, small beside the data's spread
FORCE_NOISE_EV_PER_A = 0.1
SEED = 11
TRAIN_ARGS = ["--depth", "1", "--steps", "6", "--batch-size", "16", "--eval-every", "3", "--checkpoint-every", "3",
              "--test-size", "8", "--val-size", "6", "--seed", str(SEED), "--no-prefect"]


def config(dataset: str, **kw) -> TrainConfig:
    """The settings of TRAIN_ARGS as a TrainConfig (the noise on top)."""
    base = dict(dataset=dataset, model={"depth": 1}, steps=6, batch_size=16, eval_every=3, checkpoint_every=3,
                test_size=8, val_size=6, seed=SEED)
    return TrainConfig.model_validate({**base, **kw})


@pytest.fixture(scope="module")
def noisy_run(h2o, tmp_path_factory) -> Path:
    """A short real `qff train` with both noise flags."""
    run_dir = tmp_path_factory.mktemp("runs") / "noisy"
    assert main(["train", "--dataset", h2o, *TRAIN_ARGS, "--label-noise-energy-ev", str(ENERGY_NOISE_EV),
                 "--label-noise-forces-ev-per-a", str(FORCE_NOISE_EV_PER_A), "--run-dir", str(run_dir)]) == 0
    return run_dir


def test_the_noise_is_deterministic_given_the_seed_and_scales_with_the_setting():
    idx = np.array([0, 3, 17, 40])
    E, F = np.linspace(-2080.0, -2079.0, 4), np.zeros((4, 3, 3))
    first = noisy_labels(E, F, idx, energy_std_ev=0.1, forces_std_ev_per_a=0.2, seed=5)
    again = noisy_labels(E.copy(), F.copy(), idx, energy_std_ev=0.1, forces_std_ev_per_a=0.2, seed=5)
    other = noisy_labels(E, F, idx, energy_std_ev=0.1, forces_std_ev_per_a=0.2, seed=6)
    for a, b, c in zip(first, again, other, strict=True):
        assert np.array_equal(a, b)
        assert not np.any(a == c)
    # One standard normal draw per label, scaled: twice the setting, twice the noise (the same pattern).
    double = noisy_labels(E, F, idx, energy_std_ev=0.2, forces_std_ev_per_a=0.4, seed=5)
    assert np.allclose(double[0] - E, 2 * (first[0] - E), rtol=1e-9, atol=0)
    assert np.allclose(double[1], 2 * first[1], rtol=FLOAT64_TOL, atol=0)
    # The energy noise does not depend on whether forces get noise, nor the force noise on the energy's.
    assert np.array_equal(noisy_labels(E, F, idx, energy_std_ev=0.1, forces_std_ev_per_a=0.0, seed=5)[0], first[0])
    assert np.array_equal(noisy_labels(E, F, idx, energy_std_ev=0.0, forces_std_ev_per_a=0.2, seed=5)[1], first[1])


def test_the_sample_standard_deviation_matches_the_setting():
    n = 20000
    idx = np.arange(n) * 7 + 3
    e, f = noisy_labels(np.zeros(n), np.zeros((n, 3, 3)), idx, energy_std_ev=0.02, forces_std_ev_per_a=0.3, seed=1)
    # Relative standard errors of a sample std: 1/sqrt(2n) = 0.5% (energies), 0.17% (9n force components); the
    # tolerances are over 10 of them, and the draw is deterministic: this cannot fail by chance.
    assert np.std(e) == pytest.approx(0.02, rel=0.05)
    assert np.std(f) == pytest.approx(0.3, rel=0.02)
    assert abs(np.mean(e)) < 8 * 0.02 / np.sqrt(n) and abs(np.mean(f)) < 8 * 0.3 / np.sqrt(9 * n)
    # Uncorrelated between the energy and a force component, and between neighbouring samples.
    assert abs(np.corrcoef(e, f[:, 0, 0])[0, 1]) < 8 / np.sqrt(n)
    assert abs(np.corrcoef(e[:-1], e[1:])[0, 1]) < 8 / np.sqrt(n)
    # Gaussian: about 4.55% of the deviates beyond two standard deviations.
    z = standard_normal_labels(2, idx, 10).ravel()
    assert np.mean(np.abs(z) > 2) == pytest.approx(0.0455, abs=0.003)


def test_the_noise_of_a_sample_depends_on_its_index_only():
    big = standard_normal_labels(9, np.arange(1000), 7)
    picked = np.array([512, 3, 999, 40])
    assert np.array_equal(standard_normal_labels(9, picked, 7), big[picked])  # any subset, any order
    assert np.array_equal(standard_normal_labels(9, np.array([40]), 7), big[[40]])


def test_nested_splits_give_shared_samples_the_same_noise(h2o, tmp_path):
    noise = dict(label_noise_energy_ev=ENERGY_NOISE_EV, label_noise_forces_ev_per_a=FORCE_NOISE_EV_PER_A)
    small = create_run(tmp_path / "small", config(h2o, n_train=10, **noise))
    large = create_run(tmp_path / "large", config(h2o, n_train=20, **noise))
    assert set(small.split.train) < set(large.split.train)
    a, b = small.training_data(), large.training_data()
    shared = np.isin(large.split.train, small.split.train)
    assert np.array_equal(a.energies_ev, b.energies_ev[shared])
    assert np.array_equal(a.forces_ev_per_a, b.forces_ev_per_a[shared])
    clean = TrainingData.take(small.dataset(), small.split.train)
    assert not np.any(a.energies_ev == clean.energies_ev)


def test_zero_noise_changes_nothing_and_old_runs_still_open_and_resume(h2o, tmp_path):
    cfg = config(h2o, steps=2, eval_every=1, checkpoint_every=1)
    train(tmp_path / "old", cfg)
    run = open_run(tmp_path / "old")
    clean = TrainingData.take(run.dataset(), run.split.train)
    for a, b in zip(run.training_data().__dict__.values(), clean.__dict__.values(), strict=True):
        assert a.tobytes() == b.tobytes()
    E, F = clean.energies_ev, clean.forces_ev_per_a
    assert all(a is b for a, b in zip(noisy_labels(E, F, run.split.train, energy_std_ev=0.0, forces_std_ev_per_a=0.0,
                                                   seed=3), (E, F), strict=True))
    # A run.json written before the noise settings existed: they take their defaults, the run resumes.
    info = json.loads((tmp_path / "old" / "run.json").read_text())
    for key in ("label_noise_energy_ev", "label_noise_forces_ev_per_a", "label_noise_seed"):
        del info["config"][key]
    (tmp_path / "old" / "run.json").write_text(json.dumps(info))
    old = open_run(tmp_path / "old")
    assert (old.config.label_noise_energy_ev, old.config.label_noise_forces_ev_per_a) == (0.0, 0.0)
    assert old.config.label_noise_seed is None and old.norm == run.norm
    assert train(tmp_path / "old", cfg, resume=True)["step"] == 2


def test_cli_records_the_noise_and_refuses_to_resume_with_other_noise(noisy_run, h2o, capsys):
    recorded = json.loads((noisy_run / "run.json").read_text())["config"]
    assert recorded["label_noise_energy_ev"] == ENERGY_NOISE_EV
    assert recorded["label_noise_forces_ev_per_a"] == FORCE_NOISE_EV_PER_A
    assert recorded["label_noise_seed"] is None
    resume = ["train", "--dataset", h2o, *TRAIN_ARGS, "--run-dir", str(noisy_run), "--resume",
              "--label-noise-forces-ev-per-a", str(FORCE_NOISE_EV_PER_A)]
    capsys.readouterr()
    assert main([*resume, "--label-noise-energy-ev", str(2 * ENERGY_NOISE_EV)]) == 2
    err = capsys.readouterr().err
    assert (f"--resume with different settings than the run in {noisy_run} (label_noise_energy_ev: "
            f"{ENERGY_NOISE_EV!r} in the run, {2 * ENERGY_NOISE_EV!r} now)") in err and "new --run-dir" in err
    assert main([*resume, "--label-noise-energy-ev", str(ENERGY_NOISE_EV), "--label-noise-seed", "12"]) == 2
    assert "(label_noise_seed: " in capsys.readouterr().err
    # The default seed spelled out is the same noise: accepted (the run is complete, nothing more to do).
    assert main([*resume, "--label-noise-energy-ev", str(ENERGY_NOISE_EV),
                 "--label-noise-seed", str(SEED + NOISE_SEED_OFFSET)]) == 0


def test_only_training_labels_are_noisy_and_evaluation_scores_clean_labels(noisy_run):
    run = open_run(noisy_run)
    dataset = run.dataset()
    clean = TrainingData.take(dataset, run.split.train)
    noisy = run.training_data()
    assert np.array_equal(noisy.positions_a, clean.positions_a)
    expected = noisy_labels(clean.energies_ev, clean.forces_ev_per_a, run.split.train, energy_std_ev=ENERGY_NOISE_EV,
                            forces_std_ev_per_a=FORCE_NOISE_EV_PER_A, seed=SEED + NOISE_SEED_OFFSET)
    assert np.array_equal(noisy.energies_ev, expected[0]) and np.array_equal(noisy.forces_ev_per_a, expected[1])
    assert not np.any(noisy.energies_ev == clean.energies_ev)
    # The normalisation statistics are those of the noisy training labels (all a user with noisy data has).
    assert run.norm == Normalisation.from_data(noisy.energies_ev, noisy.forces_ev_per_a)

    # Validation chose the best parameters on clean labels: its recorded MAE at the best step is the clean one.
    ckpt = read_checkpoint(latest_checkpoint(run.checkpoint_dir))
    sim = compile_exact(run.model)
    val = TrainingData.take(dataset, run.split.val)
    e, f = sim.evaluate(ckpt.arrays["best_params"], val.positions_a)
    at_best = list(ckpt.arrays["history/val_step"]).index(ckpt.attrs["best"]["step"])
    recorded = float(ckpt.arrays["history/val_energy_mae_kcal_mol"][at_best])
    assert recorded == pytest.approx(error_metrics(e, val.energies_ev, f, val.forces_ev_per_a)["energy_mae_kcal_mol"],
                                     rel=1e-9)
    noisy_val = noisy_labels(val.energies_ev, val.forces_ev_per_a, run.split.val, energy_std_ev=ENERGY_NOISE_EV,
                             forces_std_ev_per_a=FORCE_NOISE_EV_PER_A, seed=SEED + NOISE_SEED_OFFSET)
    assert recorded != pytest.approx(error_metrics(e, noisy_val[0], f, noisy_val[1])["energy_mae_kcal_mol"], rel=1e-3)

    # qff evaluate scores the clean test labels; KRR is fitted on the same noisy training labels as the model.
    summary = evaluate_run(noisy_run, plots=False, audit=False, krr=True, sets=("test", "rotated"))
    assert summary["run"]["label_noise"] == {"energy_ev": ENERGY_NOISE_EV, "forces_ev_per_a": FORCE_NOISE_EV_PER_A}
    test = TrainingData.take(dataset, run.split.test)
    theta, _ = run.final_parameters()
    e, f = sim.evaluate(theta, test.positions_a)
    hand = error_metrics(e, test.energies_ev, f, test.forces_ev_per_a)
    for key in ("energy_mae_kcal_mol", "forces_mae_kcal_mol_a"):
        assert summary["test"][key] == pytest.approx(hand[key], rel=1e-9)
    krr = fit_kernel_ridge(run.model.molecule, noisy.positions_a, noisy.energies_ev)
    ke, kf = krr.energies_forces(test.positions_a)
    scored = summary["baselines"]["krr_inverse_distances"]["test"]
    assert scored["energy_mae_kcal_mol"] == pytest.approx(
        error_metrics(ke, test.energies_ev, kf, test.forces_ev_per_a)["energy_mae_kcal_mol"], rel=1e-9)
    on_clean = fit_kernel_ridge(run.model.molecule, clean.positions_a, clean.energies_ev).energies_forces(
        test.positions_a)
    assert scored["energy_mae_kcal_mol"] != pytest.approx(
        error_metrics(on_clean[0], test.energies_ev, on_clean[1], test.forces_ev_per_a)["energy_mae_kcal_mol"],
        rel=1e-6)

