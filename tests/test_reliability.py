"""What a user meets when things go wrong: bad input gets one clear line (exit 2) and writes nothing,
concurrent runs neither duplicate samples nor corrupt a run, Ctrl-C keeps what was done and exits 130,
a killed command leaves no Prefect server behind.

The bad-input cases are one table per command family: the next bad input found is one row to add.
"""

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
from prefect import flow, task

from qff_core.cli import main
from qff_core.interrupts import interruptible
from qff_core.processes import pid_alive
from qff_core.store.checkpoint import latest_checkpoint, read_checkpoint
from qff_core.store.dataset import Dataset

INTERRUPT_EXIT_S = 20.0  # Ctrl-C to exit, including a checkpoint and stopping the Prefect server
QFF = [sys.executable, "-m", "qff_core.cli"]


def run_qff(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*QFF, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def files(tmp_path_factory, lih) -> dict[str, Path]:
    """Things bad input points at: a plain file, a Zarr array, a folder that is not writable (under a file),
    a trained run."""
    import zarr

    from qff_core.run import TrainConfig
    from qff_core.training import train

    root = tmp_path_factory.mktemp("bad")
    plain = root / "plain.txt"
    plain.write_text("not a dataset\n")
    zarr.create_array(str(root / "array.zarr"), shape=(3,), dtype="f8")
    for name, text in {"list.yaml": "- 1\n- 2\n", "scalar.yaml": "7\n", "broken.yaml": "train: [1, 2\n",
                       "empty_section.yaml": "train:\n", "bad_train.yaml": "pipeline:\n  train: {steps: -5}\n",
                       "no_models.yaml": "pipeline:\n  models: {}\n",
                       "bad_molecule.yaml": "pipeline:\n  dataset: {molecule: xyzzy}\n",
                       "escape.yaml": "pipeline:\n  name: ../escape\n",
                       "empty.yaml": "# nothing yet\n",
                       "two_problems.yaml": "pipeline:\n  workers: 0\n  train: {learning_rate: fast}\n",
                       "cost_nothing.yaml": "executor: {name: aer, shots: 100}\n",
                       "lih_triplet.yaml": "name: lih\nsymbols: [Li, H]\npositions_a: [[0, 0, 0], [0, 0, 1.6]]\n"
                                           "multiplicity: 3\n",
                       "train_dataset.yaml": "pipeline:\n  train: {dataset: other.zarr}\n",
                       "bad_deploy.yaml": "deployments:\n  - name: retrain-nightly\n    entrypoint: "
                                          "flows/retrain.py:retrain_flow\n    parameters:\n"
                                          "      config: {name: h2o, stepz: 3}\n      bogus: 1\n"}.items():
        (root / name).write_text(text)
    run = root / "run"
    train(run, TrainConfig(dataset=lih, model={"depth": 1}, steps=2, batch_size=2, test_size=2, val_size=2,
                           eval_every=1, checkpoint_every=1))
    (root / "cost_typo.yaml").write_text(f"train: {{dataset: {lih}, steps: 10}}\nqpu_tme: {{per_job_s: 2.0}}\n")
    for name, executor in (("cost_fake", "{name: ibm, backend: fake_manla}"),
                           ("cost_narrow", "{name: ibm, backend: fake_armonk}")):
        (root / f"{name}.yaml").write_text(f"train: {{dataset: {lih}, steps: 10}}\nexecutor: {executor}\n")
    (root / "cost_qpu_twice.yaml").write_text(f"train: {{dataset: {lih}, steps: 10}}\nqpu_time: {{job_overhead_s: 2}}"
                                              "\nexecutor: {name: ibm, backend: fake_manila, qpu_time: "
                                              "{job_overhead_s: 5}}\n")
    (root / "cost_recal.yaml").write_text(f"evaluate: {{run_dir: {run}, recalibrate: 500}}\n"
                                          "executor: {name: aer, shots: 100}\n")
    foreign = root / "foreign"
    foreign.mkdir()
    (foreign / "notes.md").write_text("mine\n")
    return {"root": root, "plain": plain, "array": root / "array.zarr", "run": run, "unwritable": plain / "below",
            "foreign": foreign, "lih": Path(lih)}


# (family, argv with {placeholders}, expected message, path that must not exist afterwards)
BAD_INPUT = [
    ("config", "train --config {root}/missing.yaml --dataset {lih} --run-dir {root}/r1", "cannot read the config",
     "{root}/r1"),
    ("config", "train --config {root}/broken.yaml --dataset {lih} --run-dir {root}/r1", "not valid YAML", "{root}/r1"),
    ("config", "cost --config {root}/cost_nothing.yaml", "nothing to price in .*give a train: section", None),
    # seen in review: only the first layer's problem was reported (workers), the train: one after a rerun
    ("config", "pipeline --config {root}/two_problems.yaml --out-dir {root}/o2 --no-prefect",
     r"train: learning_rate: Input should be a valid number.*\n\s+workers: Input should be greater", "{root}/o2"),
    # seen in review: a candidate 101x worse than production would have been promoted
    ("config", "retrain --model lih --tolerance 100 --catalog {root}/cat", "tolerance.*less than or equal to 1",
     "{root}/cat"),
    # seen in review: an empty file ran the whole default pipeline (psi4, 120 samples, two trainings)
    ("config", "pipeline --config {root}/empty.yaml --out-dir {root}/o1 --no-prefect", "is empty .or only comments.",
     "{root}/o1"),
    ("config", "train --config {root}/list.yaml --dataset {lih} --run-dir {root}/r1", "must hold a mapping",
     "{root}/r1"),
    ("config", "train --config {root}/scalar.yaml --dataset {lih} --run-dir {root}/r1", "must hold a mapping",
     "{root}/r1"),
    ("config", "train --config {root}/empty_section.yaml --dataset {lih} --run-dir {root}/r1",
     "train: section .* must be a mapping", "{root}/r1"),
    ("model", "model audit --molecule lih --n-geometries 0", "--n-geometries must be at least 1", None),
    ("model", "model audit --molecule lih --n-geometries -3", "--n-geometries must be at least 1", None),
    ("model", "model audit --molecule lih --check --tolerance nan", "--tolerance must be a positive finite", None),
    ("model", "model show --molecule lih --optimization-level 3", "give a backend too", None),  # was ignored
    ("model", "model audit --molecule lih --check --tolerance -1", "--tolerance must be a positive finite", None),
    ("dataset", "dataset info {plain}", "is a file, not a qff dataset", None),
    ("dataset", "dataset info {array}", "is a Zarr array, not a qff dataset", None),
    ("dataset", "dataset info {root}/nothing.zarr", "holds no qff dataset", "{root}/nothing.zarr"),
    ("dataset", "dataset generate --engine pyscf --method hf --basis sto-3g --samples 2 --out {plain} --no-prefect",
     "names an existing file", None),
    ("dataset", "dataset generate --engine pyscf --method hf --basis sto-3g --samples 2 --out {root}/d.zarr "
                "--catalog {unwritable} --no-prefect", "cannot write --catalog", "{root}/d.zarr"),
    ("dataset", "dataset generate --engine pyscf --method hf --basis sto-3g --samples 2 --out {unwritable}/d.zarr "
                "--no-prefect", "cannot write --out", None),
    # seen in review: a triplet top-up was mixed into the singlet data (9-10 eV above it)
    ("dataset", "dataset generate --molecule {root}/lih_triplet.yaml --engine pyscf --method hf --basis sto-3g "
                "--samples 12 --out {lih} --no-prefect", r"holds lih with multiplicity 1 \(asked: 3\)", None),
    ("train", "train --dataset {plain} --run-dir {root}/r2 --no-prefect", "is a file, not a qff dataset", "{root}/r2"),
    ("train", "train --dataset {array} --run-dir {root}/r2 --no-prefect", "is a Zarr array", "{root}/r2"),
    ("train", "train --dataset {lih} --run-dir {unwritable}/r --no-prefect",
     "cannot write --run-dir .*plain.txt is a file, not a folder", None),
    ("train", "train --dataset {lih} --run-dir {root}/r2 --segment-steps 0", "--segment-steps must be at least 1",
     "{root}/r2"),
    ("train", "train --dataset {lih} --run-dir {root}/r2 --max-qpu-seconds -1 --no-prefect",
     "greater than or equal to 0", "{root}/r2"),
    ("train", "train --dataset {lih} --run-dir {root}/r2 --executor ibm --ibm-backend ibm_fez --no-prefect",
     "IBM Quantum account problem .*QISKIT_IBM_TOKEN.*FakeManilaV2", "{root}/r2"),
    ("evaluate", "evaluate {plain} --no-prefect", "not a qff run directory", None),
    ("evaluate", "evaluate {run} --sets rotated --no-prefect", "include 'test'", None),
    ("evaluate", "evaluate {run} --executor ibm --ibm-backend ibm_fez --no-prefect", "IBM Quantum account problem",
     "{run}/evaluation_ibm.json"),
    ("pipeline", "pipeline --config {root}/bad_train.yaml --out-dir {root}/p1 --no-prefect",
     "invalid pipeline settings", "{root}/p1"),
    ("pipeline", "demo --out-dir {foreign} --no-prefect", "holds no qff pipeline run.*--force",
     "{foreign}/pipeline.json"),
    ("pipeline", "pipeline --config {root}/no_models.yaml --out-dir {root}/p2 --no-prefect", "models: .*at least 1",
     "{root}/p2"),
    ("pipeline", "pipeline --config {root}/bad_molecule.yaml --out-dir {root}/p3 --no-prefect",
     "unknown built-in molecule 'xyzzy'", "{root}/p3"),
    ("pipeline", "pipeline --config {root}/escape.yaml --no-prefect", "name: String should match", None),
    ("pipeline", "pipeline --config {root}/train_dataset.yaml --out-dir {root}/p4 --no-prefect",
     "train: dataset are set by the pipeline", "{root}/p4"),
    ("train", "train --dataset {lih} --run-dir {root}/r3 --init-from {root}/nothing --no-prefect",
     "not a qff run directory", "{root}/r3"),
    ("train", "train --dataset {lih} --run-dir {root}/r3 --init-from {run} --depth 2 --no-prefect",
     "holds another model .* than this run's", "{root}/r3"),
    ("train", "train --dataset {lih} --run-dir {root}/r3 --test-size 2.5 --no-prefect", "must be a whole number",
     "{root}/r3"),
    ("train", "train --dataset {lih} --run-dir {root}/r3 --energy-weight 0 --force-weight 0 --no-prefect",
     "both 0", "{root}/r3"),
    ("train", "train --dataset {lih} --run-dir {lih}/run --no-prefect", "lies inside the Zarr store", "{lih}/run"),
    ("md", "md {run} --steps 2 --out {root}/o.traj", "ending in .extxyz", "{root}/o.traj"),
    ("cost", "cost --config {root}/cost_typo.yaml", "unknown top-level qpu_tme", None),
    ("cost", "cost --config {root}/cost_fake.yaml", "no fake backend 'fake_manla'", None),  # was priced
    ("cost", "cost --config {root}/cost_qpu_twice.yaml", "gives qpu_time: twice", None),  # one silently won
    ("evaluate", "evaluate {run} --executor ibm --ibm-backend fake_manila "
                 "--mitigation {{twirling:{{num_randomizations:4}}}} --no-prefect",
     "'num_randomizations:4' read as a key without a value", None),
    ("cost", "cost --config {root}/cost_narrow.yaml", "the model needs 2 qubits; fake_armonk has 1", None),
    ("cost", "cost --config {root}/cost_recal.yaml", "--recalibrate 500 asks for more calibration geometries",
     None),
    ("md", "md {run} --steps 2 --ensemble langevin --friction-per-fs 1000 --out {root}/f.extxyz",
     "needs this well below 1", "{root}/f.extxyz"),
    ("dataset", "dataset generate --engine pyscf --method hf --basis sto-3g --samples 2 --geometries {plain} "
                "--out {root}/d2.zarr --no-prefect", "file sampler only", "{root}/d2.zarr"),
    ("active", "active-learn --run {run} --work-dir {plain} --no-prefect", "--work-dir .*plain.txt is a file", None),
    ("active", "active-learn --run {root}/nothing --work-dir {root}/al1 --no-prefect", "not a qff run directory",
     "{root}/al1"),
    ("active", "active-learn --run {run} --temperature-k 1e6 --work-dir {root}/al2 --no-prefect",
     "temperature_k: Input should be less than or equal to 5000", "{root}/al2"),
    ("serve", "serve --prefect-file {root}/bad_deploy.yaml",  # a Prefect 422 dump once, after a server started
     r"invalid parameters:\n  bogus: not a parameter of the flow \(it takes config\)\n  config.stepz: Extra", None),
]


@pytest.mark.parametrize(("family", "argv", "message", "absent"), BAD_INPUT,
                         ids=[f"{row[0]}-{i}" for i, row in enumerate(BAD_INPUT)])
def test_bad_input_gets_one_clear_error_and_writes_nothing(family, argv, message, absent, files, capsys,
                                                             monkeypatch, tmp_path):
    import re

    for var in ("QISKIT_IBM_TOKEN", "QISKIT_IBM_INSTANCE", "QISKIT_IBM_CHANNEL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no saved IBM account
    names = {k: str(v) for k, v in files.items()}
    assert main([a.format(**names) for a in argv.split()]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qff: error:") and "Traceback" not in err, err
    assert re.search(message, err, re.S), err
    if absent is not None:
        assert not Path(absent.format(**names)).exists()


def test_a_read_command_writes_nothing(files):
    def listing() -> list:
        return sorted((str(p), p.stat().st_mtime_ns) for folder in (files["root"], files["lih"].parent)
                      for p in folder.rglob("*"))

    before = listing()
    assert main(["dataset", "info", str(files["root"] / "new.zarr")]) == 2
    assert main(["dataset", "info", str(files["lih"])]) == 0
    assert listing() == before


# ----------------------------------------------------------------------------- concurrent runs


GENERATE = ["dataset", "generate", "--molecule", "h2o", "--engine", "pyscf", "--method", "hf", "--basis", "sto-3g",
            "--chunk-size", "4", "--workers", "0", "--no-prefect", "--json"]


def _start(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen([*QFF, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ), **kw)


def test_two_generates_at_once_add_each_sample_once(tmp_path):
    out, catalog = tmp_path / "h2o.zarr", tmp_path / "catalog"
    both = [_start([*GENERATE, "--samples", "16", "--out", str(out), "--catalog", str(catalog)]) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in both]
    assert [p.returncode for p in both] == [0, 0], [r[1] for r in results]
    ds = Dataset.open(out)
    positions = ds.positions()
    assert ds.n_samples == 16 and len(np.unique(positions.round(12), axis=0)) == 16
    summaries = [json.loads(r[0][r[0].index("{"):]) for r in results]
    assert sum(s["computed"] for s in summaries) == 16  # every sample computed once, by one of the two
    # A top-up of a copy to 20, twice at once: 20 samples, not 24.
    import shutil

    copy = tmp_path / "copy.zarr"
    shutil.copytree(out, copy)
    both = [_start([*GENERATE, "--samples", "20", "--out", str(copy), "--catalog", str(catalog)]) for _ in range(2)]
    assert [p.wait(timeout=600) for p in both] == [0, 0]
    grown = Dataset.open(copy)
    assert grown.n_samples == 20 and grown.info()["n_done"] == 20
    assert np.array_equal(grown.positions()[:16], positions)


TRAIN = ["train", "--depth", "1", "--batch-size", "4", "--test-size", "2", "--val-size", "2", "--eval-every", "20",
         "--checkpoint-every", "20", "--no-prefect", "--json"]


def test_a_busy_run_directory_is_refused_or_waited_for(lih, tmp_path):
    run = tmp_path / "run"
    first = _start([*TRAIN, "--dataset", lih, "--steps", "400", "--run-dir", str(run)])
    deadline = time.time() + 120
    while not (run / "run.json").exists() and time.time() < deadline:
        assert first.poll() is None, first.communicate()
        time.sleep(0.05)
    busy = run_qff(*TRAIN, "--dataset", lih, "--steps", "400", "--run-dir", str(run))
    assert busy.returncode == 2 and "is busy" in busy.stderr and f"pid {first.pid}" in busy.stderr, busy.stderr
    waiting = run_qff(*TRAIN, "--dataset", lih, "--steps", "400", "--run-dir", str(run), "--resume", "--wait")
    assert first.wait(timeout=300) == 0
    assert waiting.returncode == 0 and "waiting" in waiting.stderr, waiting.stderr
    assert json.loads(waiting.stdout[waiting.stdout.index("{"):])["resumed_from"] == 400  # nothing left to do
    lock = run.with_name("run.lock")
    assert not lock.exists()  # released cleanly: no lock file is left beside the run
    # A lock record of a process that was killed is taken over, with a message.
    lock.write_text(json.dumps({"pid": 999999, "host": "elsewhere", "since": "then", "command": "qff train"}))
    again = run_qff(*TRAIN, "--dataset", lih, "--steps", "400", "--run-dir", str(run), "--resume")
    assert again.returncode == 0 and "took over the lock" in again.stderr and "999999" in again.stderr


# ----------------------------------------------------------------------------- interrupts


def _interrupt_when(proc: subprocess.Popen, ready, timeout: float = 300) -> float:
    """SIGINT to ``proc`` once ``ready()``; returns the seconds it took to exit."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.05)
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    return time.perf_counter() - t0


def _steps_done(run: Path) -> int:
    latest = latest_checkpoint(run / "checkpoints")
    return 0 if latest is None else read_checkpoint(latest).step


def test_ctrl_c_checkpoints_says_what_was_kept_and_resumes_bit_for_bit(lih, tmp_path):
    args = [*TRAIN[:-1], "--dataset", lih, "--steps", "600", "--seed", "4"]
    proc = _start([*args, "--run-dir", str(tmp_path / "run")])
    seconds = _interrupt_when(proc, lambda: _steps_done(tmp_path / "run") >= 20)
    _, err = proc.communicate()
    assert proc.returncode == 130 and seconds < INTERRUPT_EXIT_S, (proc.returncode, seconds, err)
    assert err.strip().startswith("qff: interrupted: kept") and "--resume" in err and "Traceback" not in err, err
    kept = _steps_done(tmp_path / "run")
    assert 20 <= kept < 600 and f"kept {kept} of 600 steps" in err  # the checkpoint written on Ctrl-C
    assert run_qff(*args, "--run-dir", str(tmp_path / "run"), "--resume", "--json").returncode == 0
    assert run_qff(*args, "--run-dir", str(tmp_path / "straight"), "--json").returncode == 0
    a = read_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints")).arrays
    b = read_checkpoint(latest_checkpoint(tmp_path / "straight" / "checkpoints")).arrays
    for key in ("opt_params", "best_params", "history/loss"):
        assert np.array_equal(a[key], b[key]), key


@pytest.mark.slow
def test_prefect_mode_ctrl_c_is_quick_and_a_killed_command_leaves_no_server(lih, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update({"PREFECT_HOME": str(tmp_path / "prefect")})
    args = [*QFF, *TRAIN[:-2], "--dataset", lih, "--steps", "100000", "--segment-steps", "50"]

    proc = subprocess.Popen([*args, "--run-dir", str(tmp_path / "int")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    seconds = _interrupt_when(proc, lambda: _steps_done(tmp_path / "int") >= 50)
    err = proc.stderr.read()
    assert proc.returncode == 130 and seconds < INTERRUPT_EXIT_S, (proc.returncode, seconds, err)
    assert "Traceback" not in err and "qff: interrupted: kept" in err, err
    assert not _servers_of(proc.pid)

    killed = subprocess.Popen([*args, "--run-dir", str(tmp_path / "kill")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while _steps_done(tmp_path / "kill") < 50 and time.time() < deadline:
        assert killed.poll() is None
        time.sleep(0.1)
    servers = _servers_of(killed.pid)
    assert servers, "the command's Prefect server was not found"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    deadline = time.time() + 20
    while any(pid_alive(p) for p in servers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(pid_alive(p) for p in servers), "a killed command left its Prefect server running"


class _SwallowsCtrlC:
    """Ctrl-C while a finaliser runs: Python raises the KeyboardInterrupt inside ``__del__`` and drops it."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the handler runs at the next bytecode, here, inside __del__
            pass


def test_a_ctrl_c_that_a_finaliser_swallowed_still_stops_training_with_a_checkpoint(lih, tmp_path):
    """Seen in Prefect mode: Ctrl-C landed in an asyncio transport's __del__ inside a zarr call and training went
    on for minutes (also seen in JAX's garbage-collection callback); the handler also records the request and the
    step loop acts on it."""
    from qff_core.errors import Interrupted
    from qff_core.interrupts import interrupt_handlers
    from qff_core.run import TrainConfig
    from qff_core.training import train

    reported = []  # what Python reports as "Exception ignored", through its real hook mechanism
    previous_hook, sys.unraisablehook = sys.unraisablehook, reported.append
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # earlier tests' libraries may leave theirs
    try:
        _SwallowsCtrlC()  # the premise, with Python's own handler: nothing is raised here, Python reports it
        signal.signal(signal.SIGINT, previous)
        assert [type(u.exc_value) for u in reported] == [KeyboardInterrupt]
        config = TrainConfig(dataset=lih, model={"depth": 1}, steps=400, batch_size=4, test_size=2, val_size=2,
                             eval_every=20, checkpoint_every=20)
        with interrupt_handlers():
            _SwallowsCtrlC()  # swallowed again, but remembered, and not reported as a traceback
            assert len(reported) == 1
            with pytest.raises(Interrupted, match="kept 0 of 400 steps"):
                train(tmp_path / "run", config)
    finally:
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGINT, previous)
    assert _steps_done(tmp_path / "run") == 0  # stopped before its first step, with its checkpoint written
    with interrupt_handlers():  # a new block starts with no request pending
        assert train(tmp_path / "run", config, resume=True, stop_after=20)["step"] == 20


class _SignalsWhenRead:
    """A step's loss that sends Ctrl-C to this process when first read as a float: the interrupt lands between
    the statements that record the step (after its parameters are kept, before its loss is)."""

    def __init__(self, loss) -> None:
        self.loss, self.sent = loss, False

    def __float__(self) -> float:
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)
        return float(self.loss)


def test_ctrl_c_while_a_step_is_recorded_resumes_bit_for_bit(lih, tmp_path):
    """Seen in CI: Ctrl-C between keeping a step's parameters and recording its loss; the checkpoint held step k
    with the history of k - 1 steps, and the resumed run's loss history lacked an entry. The run is given (through
    train's ``executor=``) the exact executor whose 6th step returns a loss that sends Ctrl-C when it is recorded."""
    from dataclasses import dataclass

    from qff_core.errors import Interrupted
    from qff_core.execution.exact.executor import ExactExecutor
    from qff_core.interrupts import interrupt_handlers
    from qff_core.models import build_model
    from qff_core.molecules import builtin_molecule
    from qff_core.run import TrainConfig
    from qff_core.training import train

    @dataclass(frozen=True)
    class InterruptedWhileRecording(ExactExecutor):
        at_step: int = 5

        def training_step(self, *args):
            step_fn = super().training_step(*args)

            def step(params, opt_state, idx, step: int):
                new_params, new_state, loss = step_fn(params, opt_state, idx, step)
                return new_params, new_state, _SignalsWhenRead(loss) if step == self.at_step else loss

            return step

    config = TrainConfig(dataset=lih, model={"depth": 1}, steps=12, batch_size=4, test_size=2, val_size=2,
                         eval_every=3, checkpoint_every=4, seed=2)
    train(tmp_path / "straight", config)
    executor = InterruptedWhileRecording.for_model(build_model(builtin_molecule("lih"), config.model))
    with interrupt_handlers(), pytest.raises(Interrupted, match="kept 6 of 12 steps"):
        train(tmp_path / "run", config, executor=executor)
    with interrupt_handlers():
        assert train(tmp_path / "run", config, resume=True)["resumed_from"] == 6
    a = read_checkpoint(latest_checkpoint(tmp_path / "straight" / "checkpoints")).arrays
    b = read_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints")).arrays
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key], equal_nan=True), key


@task(name="reliability-note")
@interruptible
def _note(log: str, item: str) -> None:
    with open(log, "a") as f:
        f.write(item + "\n")


@flow(name="reliability-ctrl-c-between-tasks")
def _ctrl_c_between_tasks(log: str, then_fail: bool = False) -> None:
    _note(log, "first task")
    os.kill(os.getpid(), signal.SIGINT)  # lands outside our task bodies, as it may in Prefect's engine code
    for _ in range(1000):  # the handler runs at the next bytecode, here
        pass
    with open(log, "a") as f:
        f.write("flow body went on\n")
    if then_fail:  # what Prefect made of Ctrl-C while creating a task run: "ValueError: Task run is not set"
        raise ValueError("Task run is not set")
    _note(log, "second task")


@flow(name="reliability-fails")
def _fails_without_ctrl_c() -> None:
    raise ValueError("not Ctrl-C")


def test_under_run_flow_ctrl_c_outside_our_tasks_is_raised_in_the_next_one(prefect_server, tmp_path):
    """``run_flow`` records Ctrl-C while Prefect's engine runs and the next ``interruptible`` task raises it on entry,
    inside its own task run, which Prefect records as crashed; an error Prefect makes of an interrupt is the
    interrupt again. Without ``run_flow`` the same Ctrl-C raises where it lands."""
    from prefect.client.orchestration import get_client

    from qff_core.cli.prefect_api import run_flow
    from qff_core.interrupts import interrupt_handlers

    def lines(name: str, plain: bool = False, **kwargs) -> list[str]:
        log = tmp_path / name
        log.touch()
        with interrupt_handlers(), pytest.raises(KeyboardInterrupt):
            if plain:
                _ctrl_c_between_tasks(str(log), **kwargs)
            else:
                run_flow(_ctrl_c_between_tasks, str(log), **kwargs)
        return log.read_text().splitlines()

    assert lines("plain", plain=True) == ["first task"]  # the premise: called plainly, it raises in the flow body
    assert lines("run_flow") == ["first task", "flow body went on"]  # deferred there, raised in the second task
    with get_client(sync_client=True) as client:
        runs = sorted(client.read_task_runs(), key=lambda r: r.created)
    last = [r for r in runs if r.name.startswith("reliability-note")][-1]
    assert last.state is not None and last.state.is_crashed(), last.state  # the second task's run exists
    assert lines("failed", then_fail=True) == ["first task", "flow body went on"]  # the error became the interrupt
    with interrupt_handlers(), pytest.raises(ValueError, match="not Ctrl-C"):
        run_flow(_fails_without_ctrl_c)  # no interrupt: the error itself


def _servers_of(pid: int) -> list[int]:
    """Prefect API server processes whose parent is ``pid``."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and "prefect.server.api.server:create_app" in cmdline:
            out.append(int(proc.name))
    return out


def test_a_killed_process_that_was_not_reaped_is_not_alive():
    """A zombie (killed, its parent has not waited for it yet) holds no lock, claim or scratch folder."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert pid_alive(child.pid) and pid_alive(os.getpid())
    child.kill()
    deadline = time.time() + 10
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":  # not waited for yet
        assert time.time() < deadline
        time.sleep(0.01)
    assert not pid_alive(child.pid)
    child.wait()
    assert not pid_alive(child.pid)


def test_evaluating_some_sets_prints_their_table(files, capsys):
    assert main(["evaluate", str(files["run"]), "--sets", "test", "rotated", "--no-prefect", "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "rotated     energy_mae_kcal_mol" in out and "translated" not in out


def test_training_on_unfinished_data_says_so(lih, tmp_path, capsys):
    import shutil

    import zarr

    data = tmp_path / "part.zarr"
    shutil.copytree(lih, data)
    zarr.open_array(str(data / "status"), mode="r+")[6:] = 0  # 4 of 10 samples pending
    assert main(["train", "--dataset", str(data), "--depth", "1", "--steps", "2", "--batch-size", "2", "--test-size",
                 "1", "--val-size", "1", "--no-prefect", "--run-dir", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "qff: warning:" in err and "4 of 10 samples not done" in err and "uses the 6 done" in err, err


def test_a_checkpoint_written_again_after_an_interrupted_write_of_the_same_step(tmp_path):
    """Ctrl-C inside a checkpoint write can leave zarr's I/O thread still filling that staging folder while the
    interrupt handler writes the same step again: the second write never meets it, and the leftover goes."""
    import zarr

    from qff_core.store.checkpoint import Checkpoint, write_checkpoint

    stale = tmp_path / f"step_00000040.zarr.partial-{os.getpid()}-0badc0de"  # what the cut-short write left
    zarr.open_group(str(stale), mode="w", zarr_format=3).create_array("params", shape=(3,), dtype="f8")
    final = write_checkpoint(tmp_path, Checkpoint(step=40, arrays={"params": np.arange(3.0)}))
    np.testing.assert_array_equal(read_checkpoint(final).arrays["params"], np.arange(3.0))
    assert read_checkpoint(latest_checkpoint(tmp_path)).step == 40
    assert not list(tmp_path.glob("*.partial-*"))


def _lose_chunk(path):
    next((path / "best_params" / "c").rglob("*")).unlink()


def _flip_a_byte(path):
    chunk = next((path / "best_params" / "c").rglob("*"))
    data = bytearray(chunk.read_bytes())
    data[3] ^= 0x10
    chunk.write_bytes(bytes(data))


def _truncate(path):
    chunk = next((path / "params" / "c").rglob("*"))
    chunk.write_bytes(chunk.read_bytes()[:5])


def _break_metadata(path):
    (path / "zarr.json").write_text("{")


@pytest.mark.parametrize(("damage", "message"), [
    (_lose_chunk, "'best_params' lost a chunk file"),
    (_flip_a_byte, "best_params differ from what was written"),
    (_truncate, "is damaged: "),
    (_break_metadata, "is damaged: "),
])
def test_a_damaged_checkpoint_is_refused_not_read_as_zeros(tmp_path, damage, message):
    """Zarr reads a missing chunk as its fill value (zeros): evaluating such a checkpoint once scored all-zero
    parameters and overwrote a good evaluation.json."""
    from qff_core.errors import CheckpointDamagedError
    from qff_core.store.checkpoint import Checkpoint, write_checkpoint

    arrays = {"params": np.linspace(0.1, 1.0, 34), "best_params": np.linspace(-1.0, 1.0, 34)}
    final = write_checkpoint(tmp_path, Checkpoint(step=40, arrays=arrays))
    assert all(np.array_equal(read_checkpoint(final).arrays[k], v) for k, v in arrays.items())
    damage(final)
    with pytest.raises(CheckpointDamagedError, match=message) as caught:
        read_checkpoint(final)
    assert "--checkpoint STEP" in str(caught.value)


def test_a_latest_link_to_a_lost_checkpoint_names_the_kept_ones(tmp_path):
    import shutil

    from qff_core.errors import CheckpointDamagedError
    from qff_core.store.checkpoint import Checkpoint, write_checkpoint

    for step in (10, 20):
        write_checkpoint(tmp_path, Checkpoint(step=step, arrays={"params": np.arange(3.0) + step}))
    shutil.rmtree(tmp_path / "step_00000020.zarr")
    with pytest.raises(CheckpointDamagedError, match=r"step_00000020\.zarr, which is gone; kept: step_00000010\.zarr"):
        latest_checkpoint(tmp_path)
    (tmp_path / "latest").unlink()  # what the message suggests
    assert read_checkpoint(latest_checkpoint(tmp_path)).step == 10


@pytest.mark.parametrize(("text", "flags", "message"), [
    ("", [], "declares no deployments"),
    ("deployments: []\n", [], "declares no deployments"),
    ("deployments:\n- name: a\n", [], "deployment 1 of .* needs a name and an entrypoint"),
    ("deployments:\n- {name: a, entrypoint: flows/nothing.py:f}\n", [], "entrypoint 'flows/nothing.py:f' is no"),
    (None, ["--limit", "0"], "must be at least 1"),
    ("cron", [], "a schedule is not valid"),
])
def test_qff_serve_refuses_a_bad_deployment_file_before_starting(tmp_path, capsys, text, flags, message):
    """One line each, and no server started (the file is read first)."""
    import re

    from qff_core.cli.serve import DEFAULT_PREFECT_FILE

    path = tmp_path / "prefect.yaml"
    shipped = DEFAULT_PREFECT_FILE.read_text()
    path.write_text(shipped if text is None else
                    re.sub(r"cron: .*", 'cron: "not a cron"', shipped) if text == "cron" else text)
    assert main(["serve", "--prefect-file", str(path), *flags]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err, err
