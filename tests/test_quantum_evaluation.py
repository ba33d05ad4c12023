"""Evaluation on quantum executors: exact Aer scores what the exact simulator scores, the ibm executor
runs in an IBM Runtime Batch with real shots, and the price announced before submission is what ran."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qff_core.cli import main
from qff_core.distributed import ClusterConfig, LocalClusterConfig
from qff_core.evaluation import TRANSFORMS, evaluate_run
from qff_core.execution.config import ExecutorConfig
from qff_core.execution.qiskit.compiler import compile_qiskit
from qff_core.execution.shift.planner import Request, plan_shifts
from qff_core.metrics import METRIC_KEYS
from qff_core.run import TrainConfig, TrainingData, open_run
from qff_core.training import train
from qff_core.units import EV_KCAL_PER_MOL

EXACT_AER_TOL = 1e-8  # parameter shift on exact Aer vs JAX autodiff (observed ~1e-13)


@pytest.fixture(scope="module")
def trained(lih, tmp_path_factory) -> Path:
    """A LiH invariant D=1 run (7 parameters), 3 steps, 3 test geometries."""
    run_dir = tmp_path_factory.mktemp("runs") / "lih"
    train(run_dir, TrainConfig.model_validate(dict(dataset=lih, model={"depth": 1}, steps=3, batch_size=2,
                                                   test_size=3, val_size=2, seed=3, eval_every=1,
                                                   checkpoint_every=1, learning_rate=5e-2)))
    return run_dir


def test_exact_aer_evaluation_on_dask_equals_the_exact_evaluation(trained):
    exact = evaluate_run(trained, plots=False, audit=False)
    aer = evaluate_run(trained, executor=ExecutorConfig(name="aer"), plots=False, audit=False,
                       cluster=ClusterConfig(local=LocalClusterConfig(n_workers=2, processes=False)))
    for name in ("test", *TRANSFORMS):
        for key in METRIC_KEYS:
            assert aer[name][key] == pytest.approx(exact[name][key], rel=EXACT_AER_TOL, abs=1e-10), (name, key)
    deviation = aer["deviation_from_exact"]
    assert deviation["energy_mae_kcal_mol"] < EXACT_AER_TOL and deviation["forces_mae_kcal_mol_a"] < EXACT_AER_TOL
    assert "deviation_from_exact" not in exact and exact["executor"] == {"name": "exact"}
    # The quantum evaluation has its own file: the exact one is not overwritten.
    assert json.loads((trained / "evaluation.json").read_text())["executor"] == {"name": "exact"}
    assert json.loads((trained / "evaluation_aer.json").read_text())["executor"]["name"] == "aer"


def test_an_interrupted_circuit_evaluation_resumes_from_its_finished_chunks(trained):
    """A long device evaluation killed halfway keeps what finished: the rerun with the same settings runs only the
    rest, scores exactly what an uninterrupted run scores (the same shots), and tidies up after itself."""
    from dataclasses import replace

    from scripted import ScriptedEvaluator

    from qff_core.evaluation import EVALUATION_CHUNKS, EvaluateConfig, evaluation_chunks
    from qff_core.execution import open_executor

    settings = ExecutorConfig(name="aer", shots=500, seed=11, rows_per_pub=8)
    kwargs = dict(executor=settings, sets=("test",), max_test=2, plots=False, audit=False)
    uninterrupted = evaluate_run(trained, **kwargs)
    assert not (trained / EVALUATION_CHUNKS).exists()
    assert uninterrupted["executor"]["chunks_reused"] == 0

    # The same evaluation, killed in its third job: what _predict would run, with the same seeds.
    run = open_run(trained)
    config = EvaluateConfig(run_dir=str(trained), executor=settings, sets=("test",), max_test=2)
    X = TrainingData.take(run.dataset(), run.split.test[:2]).positions_a
    chunks = evaluation_chunks(config, run)

    class KilledError(Exception):
        pass

    with open_executor(settings, run.model, seed=config.seed, runtime_mode="batch") as executor:
        killed = replace(executor, evaluator=ScriptedEvaluator({3: KilledError()}, inner=executor.evaluator))
        with pytest.raises(KilledError):
            killed.with_results(chunks).energies_forces(run.final_parameters()[0], X)
    assert chunks.stats["saved"] == 2

    resumed = evaluate_run(trained, **kwargs)
    assert resumed["executor"]["chunks_reused"] == 2
    for key in METRIC_KEYS:
        assert resumed["test"][key] == uninterrupted["test"][key], key
    assert not (trained / EVALUATION_CHUNKS).exists()  # recorded in the evaluation file, then removed


def test_ctrl_c_in_a_circuit_evaluation_says_how_many_chunks_were_kept(trained, tmp_path):
    """Seen in review: Ctrl-C said "work already saved is kept" whether or not a chunk had finished. A real
    `qff evaluate` in small jobs, sent SIGINT once a chunk is on disk, now counts them; the rerun reuses them."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from qff_core.evaluation import EVALUATION_CHUNKS

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    # Device noise (a density matrix per binding): shots drawn from probabilities are so cheap that a noiseless
    # evaluation could end before the signal arrives.
    cfg = write_eval_config(tmp_path / "eval.yaml", run, {"name": "aer", "shots": 20000, "seed": 5, "rows_per_pub": 2,
                                                          "noise_backend": "FakeManilaV2"},
                            sets=["test", "rotated"])
    cmd = [sys.executable, "-m", "qff_core.cli", "evaluate", "--config", str(cfg), "--workers", "0", "--no-prefect",
           "--no-plots", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    deadline = time.time() + 300
    while not any((run / EVALUATION_CHUNKS).rglob("*.npz")):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    kept = len(list((run / EVALUATION_CHUNKS).rglob("*.npz")))
    assert proc.returncode == 130 and f"kept {kept} finished chunks of circuits" in err, err
    assert "run the same qff evaluate again: it reuses them" in err
    again = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout[again.stdout.index("{"):])
    assert summary["executor"]["chunks_reused"] == kept and not any((run / EVALUATION_CHUNKS).rglob("*.npz"))


def write_eval_config(path: Path, run_dir: Path, executor: dict, **evaluate) -> Path:
    path.write_text(json.dumps({"evaluate": {"run_dir": str(run_dir), **evaluate}, "executor": executor}))
    return path


def test_ibm_evaluation_runs_in_a_batch_and_submits_what_was_priced(trained, tmp_path, capsys):
    shots = 4000
    cfg = write_eval_config(tmp_path / "eval.yaml", trained, {"name": "ibm", "backend": "aer", "shots": shots},
                            sets=["test", "rotated"], max_test=2, seed=5)
    assert main(["cost", "--config", str(cfg), "--json"]) == 0
    cost = json.loads(capsys.readouterr().out)
    assert (cost["kind"], cost["steps"], cost["geometries_per_step"]) == ("evaluation", 1, 4)

    # The price counts the rows of the plan the evaluation will run: 2 test geometries, each also rotated.
    run = open_run(trained)
    theta, _ = run.final_parameters()
    test = TrainingData.take(run.dataset(), run.split.test[:2])
    plan = plan_shifts(compile_qiskit(run.model), theta, np.concatenate([test.positions_a] * 2),
                       Request(forces=True), ExecutorConfig(name="ibm", backend="aer").batching())
    bases = 3  # XX, YY, ZZ of the singlet observable
    assert cost["bindings_per_step"] == plan.values.shape[0]
    assert cost["shots_per_step"] == plan.values.shape[0] * bases * shots
    assert cost["jobs_per_step"] == len(plan.chunks) and cost["qpu_seconds_total"] > 0

    assert main(["evaluate", "--config", str(cfg), "--no-prefect", "--no-plots", "--json"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{"):])
    assert summary["executor"]["runtime_mode"] == "Batch"
    assert summary["executor"]["jobs_submitted"] == cost["jobs_per_step"]
    assert {"test", "rotated"} <= set(summary) and "translated" not in summary
    assert summary["run"]["n_test_scored"] == 2
    # Real shots: the predictions differ from the exact ones, by about the shot noise. Per energy the
    # standard error is at most |s| sqrt(3 / shots) (three measured bases, each of variance <= 1).
    deviation = summary["deviation_from_exact"]["energy_mae_kcal_mol"]
    s = abs(theta[run.model.scale]) * EV_KCAL_PER_MOL
    assert 0 < deviation < 5 * s * np.sqrt(bases / shots)
    # Two of the three test geometries: a partial score, in its own file (it never replaces a full evaluation).
    assert json.loads((trained / "evaluation_ibm_first2.json").read_text())["run"]["n_test_scored"] == 2


def test_an_energies_only_evaluation_costs_one_binding_per_geometry(trained, tmp_path, capsys):
    """--energies-only: the energies of the full evaluation, no force metrics, one row per geometry (priced so),
    its own file; a recalibration fits energies alone."""
    cfg = write_eval_config(tmp_path / "eval.yaml", trained, {"name": "aer"}, sets=["test", "rotated"],
                            energies_only=True)
    assert main(["cost", "--config", str(cfg), "--json"]) == 0
    n_test = len(open_run(trained).split.test)
    evaluation = json.loads(capsys.readouterr().out)
    assert evaluation["bindings_per_step"] == 2 * n_test
    # With a train: section too, each is priced as it would be alone, and the sum given (it used to price only one).
    original = cfg.read_text()
    both = json.loads(original)
    both["train"] = {"dataset": str(open_run(trained).dataset().path), "model": {"depth": 1}, "steps": 3,
                     "batch_size": 2}
    cfg.write_text(json.dumps(both))
    assert main(["cost", "--config", str(cfg), "--json"]) == 0
    priced = json.loads(capsys.readouterr().out)
    assert priced["evaluate"] == evaluation and priced["train"]["kind"] == "training" and priced["train"]["steps"] == 3
    assert priced["qpu_seconds_total"] == evaluation["qpu_seconds_total"] + priced["train"]["qpu_seconds_total"]
    del both["evaluate"]
    cfg.write_text(json.dumps(both))
    assert main(["cost", "--config", str(cfg), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == priced["train"]
    cfg.write_text(original)
    full = evaluate_run(trained, executor=ExecutorConfig(name="aer"), sets=("test", "rotated"), plots=False,
                        audit=False)
    assert main(["evaluate", "--config", str(cfg), "--no-prefect", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    for name in ("test", "rotated"):
        assert summary[name]["energy_mae_kcal_mol"] == pytest.approx(full[name]["energy_mae_kcal_mol"],
                                                                     rel=EXACT_AER_TOL)
        assert all(v is None for k, v in summary[name].items() if k.startswith("forces_"))
    assert summary["invariance"]["rotated"]["forces_err_norm_rel_change"] is None
    assert Path(summary["plots"]["parity"]).name == "parity_aer_energies.png"
    assert json.loads((trained / "evaluation_aer_energies.json").read_text())["test"]["forces_mae_kcal_mol_a"] is None
    # The affine distortion test of recalibration, on energies alone.
    from qff_core.recalibration import Readout, apply_readout, fit_readout

    o = np.linspace(-1.5, 0.5, 5)
    fitted = fit_readout(Readout(2.0, -3.0), 2.0 * (0.6 * o + 0.1) - 3.0, None, 2.0 * o - 3.0, None)
    assert fitted.scale == pytest.approx(2.0 / 0.6, rel=1e-12)
    e, f = apply_readout(Readout(2.0, -3.0), fitted, 2.0 * (0.6 * o + 0.1) - 3.0, None)
    assert f is None and np.abs(e - (2.0 * o - 3.0)).max() < 1e-12


def test_evaluation_beyond_its_qpu_budget_submits_nothing(trained, tmp_path, capsys):
    cfg = write_eval_config(tmp_path / "eval.yaml", trained, {"name": "ibm", "backend": "FakeFez"})
    result = trained / "evaluation_ibm.json"
    before = result.read_bytes() if result.exists() else None
    assert main(["evaluate", "--config", str(cfg), "--no-prefect", "--max-qpu-seconds", "10"]) == 2
    err = capsys.readouterr().err
    assert "nothing was started" in err and "--max-test" in err
    assert (result.read_bytes() if result.exists() else None) == before
    with pytest.raises(SystemExit):  # an unknown set name is refused by the parser
        main(["evaluate", str(trained), "--sets", "mirrored"])
    assert main(["evaluate", str(trained), "--sets", "rotated", "--no-prefect"]) == 2
    assert "include 'test'" in capsys.readouterr().err


@pytest.mark.slow
def test_a_noise_model_file_runs_from_the_command_line(trained, tmp_path, capsys):
    """--noise FILE.json: a depolarizing two-qubit noise model written by NoiseModel.to_dict, read back."""
    import json

    from qiskit_aer.noise import NoiseModel, depolarizing_error

    from qff_core.cli import main

    noise = NoiseModel(basis_gates=["cx", "rz", "sx", "x"])
    noise.add_all_qubit_quantum_error(depolarizing_error(0.02, 2), ["cx"])
    path = tmp_path / "depolarizing.json"
    path.write_text(json.dumps(noise.to_dict(serializable=True)))
    assert main(["evaluate", str(trained), "--executor", "aer", "--noise", str(path), "--max-test", "2",
                 "--sets", "test", "--no-plots", "--no-prefect", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["executor"]["noise_backend"] == str(path)
    assert summary["deviation_from_exact"]["energy_mae_kcal_mol"] > 1e-6  # the noise moved the energies


def test_deviation_from_exact_is_the_executors_own_not_the_refits(trained, tmp_path):
    """Seen in review: with --recalibrate, deviation_from_exact scored the refitted predictions, so it reported the
    refit's move (1.14 kcal/mol on exact Aer) as what shots cost. It is scored before the refit now; and exact Aer,
    which has nothing to recalibrate, is refused."""
    shots = 100_000
    summary = evaluate_run(trained, executor=ExecutorConfig(name="aer", shots=shots), sets=("test",), plots=False,
                           audit=False, recalibrate=3, energies_only=True, seed=4)
    run = open_run(trained)
    s = abs(run.final_parameters()[0][run.model.scale]) * EV_KCAL_PER_MOL
    fitted, trained_readout = summary["recalibration"]["fitted"], summary["recalibration"]["trained"]
    moved = abs(fitted["scale"] - trained_readout["scale"]) + abs(fitted["offset_ev"] - trained_readout["offset_ev"])
    assert moved * EV_KCAL_PER_MOL > 50 * s * np.sqrt(3 / shots)  # the refit moves the predictions a lot...
    assert summary["deviation_from_exact"]["energy_mae_kcal_mol"] < 5 * s * np.sqrt(3 / shots)  # ...shots do not
    with pytest.raises(ValueError, match=r"an exact one .* needs none"):
        evaluate_run(trained, executor=ExecutorConfig(name="aer"), recalibrate=3, plots=False, audit=False)


def test_recalibration_undoes_a_known_affine_distortion(rng):
    """A 'device' that is the exact simulator with <O> -> a <O> + b: the refit s and e0 are s / a and
    e0 - s b / a, and the corrected predictions are the exact ones."""
    from conftest import simulator_for

    from qff_core.audit import random_geometries
    from qff_core.models import init_parameters
    from qff_core.recalibration import Readout, apply_readout, fit_readout

    sim = simulator_for("h2o", model="invariant", depth=1)
    theta = init_parameters(sim.model, seed=5, strategy="random")
    s, e0 = float(theta[sim.model.scale]), float(theta[sim.model.offset])
    X = random_geometries(sim.model, 6, rng)
    E, F = sim.evaluate(theta, X)
    a, b = 0.62, -0.03  # shrink and shift of <O>
    o = (E - e0) / s
    E_dev, F_dev = s * (a * o + b) + e0, a * F
    fitted = fit_readout(Readout(s, e0), E_dev[:4], F_dev[:4], E[:4], F[:4])
    assert fitted.scale == pytest.approx(s / a, rel=1e-12)
    assert fitted.offset_ev == pytest.approx(e0 - s * b / a, rel=1e-12, abs=1e-12)
    E2, F2 = apply_readout(Readout(s, e0), fitted, E_dev[4:], F_dev[4:])
    assert np.abs(E2 - E[4:]).max() < 1e-10 and np.abs(F2 - F[4:]).max() < 1e-10
    # A device that shrinks the signal gives a plausible refit; one that inverts it (a fit to shot noise: seen in
    # review at 100 shots on 3 geometries, the scale's sign flipped and the test error doubled) is called out.
    from qff_core.evaluation import implausible_readout

    assert implausible_readout(Readout(s, e0), fitted, 4) is None
    inverted = fit_readout(Readout(s, e0), s * (-0.5 * o) + e0, None, E, None)
    assert "the other sign" in implausible_readout(Readout(s, e0), inverted, 6)


@pytest.mark.slow
def test_recalibrate_on_a_noisy_executor(trained, capsys):
    from qff_core.cli import main

    assert main(["evaluate", str(trained), "--executor", "aer", "--noise", "fake_manila", "--recalibrate", "3",
                 "--max-test", "2", "--sets", "test", "--no-plots", "--no-prefect", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    r = summary["recalibration"]
    run = open_run(trained)
    assert r["n_geometries"] == 3 and not set(r["dataset_indices"]) & set(run.split.test.tolist())
    assert r["fitted"]["scale"] != r["trained"]["scale"]
    assert main(["evaluate", str(trained), "--executor", "aer", "--shots", "100", "--recalibrate", "99",
                 "--no-prefect"]) == 2
    assert "more calibration geometries than the run has outside its test split" in capsys.readouterr().err
    assert main(["evaluate", str(trained), "--recalibrate", "3", "--no-prefect"]) == 2
    assert "an exact one (the exact simulator, aer without shots or noise) needs none" in capsys.readouterr().err
