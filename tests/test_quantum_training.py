"""Training on quantum executors with the trainer of the exact path: the same step on exact Aer,
Dask fan-out, shots reproducible on resume, IBM Runtime Sessions (local testing mode), job ids kept
with the checkpoint and re-attached after a kill, retries, permanent failures, cost before submission."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scripted import ScriptedJobs

from qff_core.cli import main
from qff_core.distributed import ClusterConfig, LocalClusterConfig
from qff_core.run import TrainConfig
from qff_core.store.checkpoint import latest_checkpoint, read_checkpoint
from qff_core.training import train

PARAM_TOL = 1e-8  # one Adam step on exact Aer (parameter shift) vs the fused JAX step


def config(dataset: str, executor="exact", **kw) -> TrainConfig:
    """LiH, invariant D=1 (7 parameters), 2 geometries per step, energies and forces in the loss."""
    base = dict(dataset=dataset, model={"depth": 1}, steps=2, batch_size=2, test_size=2, val_size=2, seed=3,
                eval_every=1, checkpoint_every=1, learning_rate=5e-2, executor=executor)
    return TrainConfig.model_validate({**base, **kw})


def last(run_dir: Path) -> dict[str, np.ndarray]:
    return read_checkpoint(latest_checkpoint(run_dir / "checkpoints")).arrays


def test_a_step_on_exact_aer_fanned_out_on_dask_equals_the_exact_step(lih, tmp_path):
    exact = train(tmp_path / "exact", config(lih))
    cluster = ClusterConfig(local=LocalClusterConfig(n_workers=2, processes=False))
    aer = train(tmp_path / "aer", config(lih, "aer"), cluster=cluster)
    assert aer["executor"]["name"] == "aer" and aer["step"] == exact["step"] == 2
    a, b = last(tmp_path / "exact"), last(tmp_path / "aer")
    assert np.abs(a["opt_params"] - b["opt_params"]).max() < PARAM_TOL
    assert np.abs(a["history/loss"] - b["history/loss"]).max() < PARAM_TOL
    assert np.any(a["opt_params"] != read_checkpoint(tmp_path / "exact" / "checkpoints" / "step_00000001.zarr")
                  .arrays["opt_params"])  # the second step moved the parameters


def test_frozen_parameters_stay_at_their_initial_values(lih, tmp_path):
    """The exact step masks frozen gradients as the executors do (it used to move them)."""
    from qff_core.models import init_parameters
    from qff_core.run import open_run

    cfg = config(lih, model={"depth": 1, "symmetry_breaking": "frozen"})
    train(tmp_path / "run", cfg)
    model = open_run(tmp_path / "run").model
    frozen = ~np.asarray(model.trainable_mask())
    assert frozen.sum() == 2
    theta = last(tmp_path / "run")["params"]
    assert np.array_equal(theta[frozen], init_parameters(model, seed=cfg.seed, strategy=cfg.init)[frozen])


def test_shots_are_sampled_and_a_resumed_run_draws_the_same_shots(lih, tmp_path):
    cfg = config(lih, {"name": "aer", "shots": 200}, steps=3, force_weight=0.0)  # energy loss: 22 bindings a step
    straight = train(tmp_path / "straight", cfg)
    train(tmp_path / "pieces", cfg, stop_after=1)
    resumed = train(tmp_path / "pieces", cfg, resume=True)
    assert resumed["resumed_from"] == 1 and straight["step"] == 3
    a, b = last(tmp_path / "straight"), last(tmp_path / "pieces")
    assert np.array_equal(a["opt_params"], b["opt_params"]) and np.array_equal(a["history/loss"], b["history/loss"])
    assert len(set(a["history/loss"].tolist())) == 3
    train(tmp_path / "exact", config(lih, steps=3, force_weight=0.0))
    exact_loss = last(tmp_path / "exact")["history/loss"][0]
    assert 1e-6 < abs(a["history/loss"][0] - exact_loss) < 0.5 * exact_loss  # sampled, near the exact loss


# ----------------------------------------------------------------------------- remote jobs


class KilledError(BaseException):
    """The process dies (not an Exception: nothing in the trainer may catch it)."""


def remote_aer(server: dict, failures: dict[int, BaseException] | None = None) -> ScriptedJobs:
    """IBM Runtime's job interface over exact Aer."""
    from qff_core.execution.qiskit.aer import AerEvaluator

    return ScriptedJobs(failures, server=server, inner=AerEvaluator())


def remote_executor(lih_model_config: TrainConfig, evaluator: ScriptedJobs):
    from qff_core.execution.qiskit.compiler import compile_qiskit
    from qff_core.execution.shift.executor import ShiftExecutor
    from qff_core.execution.shift.fanout import RetryPolicy
    from qff_core.models import build_model
    from qff_core.molecules import load_molecule

    qmodel = compile_qiskit(build_model(load_molecule("lih"), lih_model_config.model))
    return ShiftExecutor(name="ibm", qmodel=qmodel, evaluator=evaluator, program=evaluator.inner.prepare(qmodel),
                         retry=RetryPolicy(attempts=3, delays_s=(0.0,)))


REMOTE = dict(steps=5, checkpoint_every=2, eval_every=5)


@pytest.fixture(scope="module")
def uninterrupted(lih, tmp_path_factory) -> dict[str, np.ndarray]:
    """Five steps with remote jobs that never fail: one job per step."""
    run_dir = tmp_path_factory.mktemp("remote") / "run"
    cfg = config(lih, **REMOTE)
    evaluator = remote_aer({})
    summary = train(run_dir, cfg, executor=remote_executor(cfg, evaluator))
    assert len(evaluator.submitted) == 5 and summary["executor"]["job_journal"]["jobs"] == 5
    return last(run_dir)


def test_a_killed_run_resumes_and_reattaches_to_the_jobs_it_submitted(lih, tmp_path, uninterrupted):
    cfg = config(lih, **REMOTE)
    server: dict = {}
    dying = remote_aer(server, {4: KilledError()})  # killed while waiting for step 4's job
    with pytest.raises(KilledError):
        train(tmp_path / "run", cfg, executor=remote_executor(cfg, dying))
    assert read_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints")).step == 2
    journal = json.loads((tmp_path / "run" / "checkpoints" / "jobs.json").read_text())
    assert sorted(journal.values()) == dying.submitted == ["job-0", "job-1", "job-2", "job-3"]

    again = remote_aer(server)
    summary = train(tmp_path / "run", cfg, resume=True, executor=remote_executor(cfg, again))
    assert again.attached == ["job-2", "job-3"]  # steps 3 and 4: paid once, re-attached
    assert again.submitted == ["job-4"]  # step 5, new
    assert summary["step"] == 5 and summary["resumed_from"] == 2
    for key in ("opt_params", "best_params", "history/loss"):
        assert np.array_equal(last(tmp_path / "run")[key], uninterrupted[key]), key
    ckpt = read_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"))
    assert ckpt.attrs["executor"]["job_journal"] == {"file": "jobs.json", "jobs": 5}


def test_a_transient_failure_is_retried_with_the_same_result(lih, tmp_path, uninterrupted):
    from qff_core.errors import TransientError

    cfg = config(lih, **REMOTE)
    flaky = remote_aer({}, {2: TransientError("queue timeout")})
    train(tmp_path / "run", cfg, executor=remote_executor(cfg, flaky))
    assert len(flaky.submitted) == 6  # step 2's chunk was submitted again
    assert np.array_equal(last(tmp_path / "run")["opt_params"], uninterrupted["opt_params"])


def test_a_permanent_failure_stops_with_the_checkpoint_intact(lih, tmp_path, uninterrupted):
    from qff_core.errors import EngineError, ExecutionError

    cfg = config(lih, **{**REMOTE, "checkpoint_every": 4})
    server: dict = {}
    broken = remote_aer(server, {3: EngineError("job failed on the backend: bad circuit")})
    with pytest.raises(ExecutionError, match=r"step 3 failed .*bad circuit.*checkpointed at step 2.*--resume"):
        train(tmp_path / "run", cfg, executor=remote_executor(cfg, broken))
    assert len(broken.submitted) == 3 and broken.collects == 3  # no retry of a permanent failure
    assert read_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints")).step == 2  # the steps done
    assert "job-2" not in json.loads((tmp_path / "run" / "checkpoints" / "jobs.json").read_text()).values()

    fixed = remote_aer(server)
    train(tmp_path / "run", cfg, resume=True, executor=remote_executor(cfg, fixed))
    assert fixed.attached == [] and fixed.submitted == ["job-3", "job-4", "job-5"]  # the failed job is resubmitted
    assert np.array_equal(last(tmp_path / "run")["opt_params"], uninterrupted["opt_params"])


# ----------------------------------------------------------------------------- IBM Runtime, local testing mode


def train_args(dataset: str, run_dir: Path, *extra: str) -> list[str]:
    return ["train", "--dataset", dataset, "--depth", "1", "--steps", "1", "--batch-size", "2", "--test-size", "2",
            "--val-size", "2", "--seed", "3", "--run-dir", str(run_dir), "--no-prefect", "--json", *extra]


def test_a_training_step_runs_in_an_ibm_runtime_session_and_stores_no_token(lih, tmp_path, monkeypatch, capsys):
    token = "qff-test-token-7f3a9c"  # local testing mode never uses it; it must not be written anywhere
    monkeypatch.setenv("QISKIT_IBM_TOKEN", token)
    run_dir = tmp_path / "run"
    assert main(train_args(lih, run_dir, "--executor", "ibm", "--ibm-backend", "aer", "--shots", "500",
                           "--force-weight", "0")) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{"):])
    assert summary["executor"] == {"name": "ibm", "min_chunks": 1, "runtime_mode": "Session", "jobs_submitted": 1}
    assert summary["step"] == 1 and np.isfinite(summary["final_loss"])
    assert not (run_dir / "checkpoints" / "jobs.json").exists()  # local jobs cannot be re-attached: none kept
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.name == "run.json" for p in files) and len(files) > 5
    assert not [p for p in files if token.encode() in p.read_bytes()]
    stored = json.loads((run_dir / "run.json").read_text())["config"]["executor"]
    assert stored["backend"] == "aer" and stored["shots"] == 500 and stored["token_secret"] is None


def test_executor_settings_are_checked_and_old_runs_still_read():
    from pydantic import ValidationError

    from qff_core.execution.config import ExecutorConfig

    old = TrainConfig.model_validate({"dataset": "d.zarr", "executor": "exact"})  # run.json before executor options
    assert old.executor == ExecutorConfig() and old.fingerprint() == TrainConfig(dataset="d.zarr").fingerprint()
    for bad, message in (({"name": "exact", "shots": 10}, "does not take shots"),
                         ({"name": "aer", "precision": 0.01}, "give shots instead"),
                         ({"name": "ibm"}, "needs a backend"),
                         ({"name": "ibm", "backend": "aer", "shots": 10, "precision": 0.1}, "not both")):
        with pytest.raises(ValidationError, match=message):
            ExecutorConfig.model_validate(bad)
    a = ExecutorConfig(name="ibm", backend="ibm_fez", instance="crn:a", retry_attempts=5)
    assert a.fingerprint() == ExecutorConfig(name="ibm", backend="ibm_fez").fingerprint()  # operational only
    assert a.fingerprint() != ExecutorConfig(name="ibm", backend="ibm_torino").fingerprint()


# ----------------------------------------------------------------------------- cost before submission


def write_config(path: Path, dataset: str, executor: dict, **train_kw) -> Path:
    train_section = {"dataset": dataset, "model": {"depth": 1}, "steps": 10, "batch_size": 2, "test_size": 2,
                     "val_size": 2, **train_kw}
    path.write_text(json.dumps({"train": train_section, "executor": executor}))  # JSON is YAML
    return path


def test_cost_of_a_small_model_matches_a_hand_count(lih, tmp_path, capsys):
    """LiH invariant D=1: 2 qubits, units: 4 encodings x 5 angles + 1 exchange; the weight-dependent ones
    are the 4 encodings' phi angles and the exchange angle, each with a two-term shift rule."""
    cfg = write_config(tmp_path / "c.yaml", lih, {"name": "ibm", "backend": "FakeFez", "shots": 1000},
                       force_weight=0.0)  # energy loss: weight gradient only
    assert main(["cost", "--config", str(cfg), "--json"]) == 0
    cost = json.loads(capsys.readouterr().out)
    bindings = 2 * (1 + 2 * 5)  # 2 geometries x (unshifted + 2 shifts x 5 weight-dependent angles) = 22
    bases = 3  # XX, YY, ZZ: the singlet observable's qubit-wise commuting groups
    shots = bindings * bases * 1000  # 66,000
    seconds = 1 * 3.0 + shots * (250e-6 + 10e-6)  # one job: 3 s overhead + 17.16 s of shots = 20.16 s
    assert cost["circuits_per_step"] == bases and cost["bindings_per_step"] == bindings
    assert cost["shots_per_step"] == shots and cost["jobs_per_step"] == 1
    assert cost["qpu_seconds_per_step"] == pytest.approx(seconds, rel=1e-12)
    assert cost["qpu_seconds_total"] == pytest.approx(10 * seconds, rel=1e-12)

    # Twirling (level 1) rounds 1000 shots up to 16 randomizations x 64; overrides of the time model apply.
    cfg = write_config(tmp_path / "c1.yaml", lih, {"name": "ibm", "backend": "FakeFez", "shots": 1000,
                                                   "resilience_level": 1}, force_weight=0.0)
    text = cfg.read_text()
    cfg.write_text(text[:-1] + ', "qpu_time": {"job_overhead_s": 1.0, "circuit_duration_s": 0.0}}')
    assert main(["cost", "--config", str(cfg), "--json"]) == 0
    cost = json.loads(capsys.readouterr().out)
    assert cost["shots_per_step"] == bindings * bases * 1024
    assert cost["qpu_seconds_per_step"] == pytest.approx(1.0 + bindings * bases * 1024 * 250e-6, rel=1e-12)

    # Forces in the loss: the planner's own count; local executors cost no QPU time.
    cfg = write_config(tmp_path / "c2.yaml", lih, {"name": "aer"})
    assert main(["cost", "--config", str(cfg), "--json"]) == 0
    cost = json.loads(capsys.readouterr().out)
    assert (cost["bindings_per_step"], cost["shots_per_step"], cost["qpu_seconds_total"]) == (470, 0, 0.0)
    assert cost["circuits_per_step"] == 1  # exact expectation values: the template itself


def test_train_refuses_to_start_beyond_its_qpu_budget(lih, tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = train_args(lih, run_dir, "--executor", "ibm", "--ibm-backend", "FakeFez", "--precision", "0.01")
    assert main([*args, "--max-qpu-seconds", "60"]) == 2
    err = capsys.readouterr().err
    assert "--max-qpu-seconds 60" in err and "nothing was started" in err and "QPU s" in err
    assert not run_dir.exists()
    assert main([*train_args(lih, run_dir), "--workers", "2"]) == 2  # exact: no Dask cluster to fan out to
    assert "aer" in capsys.readouterr().err and not run_dir.exists()


def test_the_api_key_can_come_from_a_prefect_secret_block(prefect_server):
    from prefect.blocks.system import Secret

    from flows.credentials import ibm_token
    from qff_core.errors import InputError

    Secret(value="qff-secret-key-31d2").save("qff-test-ibm-token", overwrite=True)
    assert ibm_token("qff-test-ibm-token") == "qff-secret-key-31d2"
    with pytest.raises(InputError, match="no Prefect Secret block 'qff-missing'"):
        ibm_token("qff-missing")
