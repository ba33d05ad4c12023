"""Active learning from MD, for real: committee training, Langevin exploration, selection, PySCF labelling,
warm-start retraining; a round killed mid-labelling resumes without relabelling or re-appending."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from qff_core.active import ActiveLearningConfig, active_learn, disagreement, pick_frames
from qff_core.store.dataset import DONE, Dataset


def test_disagreement_and_distinct_picks(rng):
    forces = rng.normal(size=(3, 5, 3, 3))
    same = np.repeat(forces[:1], 3, axis=0)
    assert np.all(disagreement(same) < 1e-15)
    spread = disagreement(forces)
    assert spread.shape == (5,) and np.all(spread > 0)
    base = rng.normal(size=(3, 3))
    positions = np.stack([base, base + 1e-4, base * 1.2, base * 1.4])  # frames 0 and 1 are the same geometry
    picked = pick_frames(positions, np.array([4.0, 3.0, 2.0, 1.0]), 3, min_separation_a=0.01)
    assert picked.tolist() == [0, 2, 3]


@pytest.fixture
def small_run(h2o, tmp_path):
    """A copy of the H2O data (it grows) and a quickly trained model on it."""
    from qff_core.run import TrainConfig
    from qff_core.training import train

    data = tmp_path / "h2o.zarr"
    shutil.copytree(h2o, data)
    run = tmp_path / "run"
    train(run, TrainConfig(dataset=str(data), model={"depth": 2}, steps=60, batch_size=16, test_size=8, val_size=4,
                           eval_every=30, checkpoint_every=30, learning_rate=2e-2, final_learning_rate=2e-3))
    return run, data


SMALL = dict(per_round=6, committee=2, committee_steps=30, retrain_steps=30, md_steps=120, sample_every=4,
             temperature_k=600.0, chunk_size=1)


def test_a_round_killed_while_labelling_resumes_without_relabelling(small_run, tmp_path):
    run, data = small_run
    n0 = Dataset.open(data).n_samples
    argv = [sys.executable, "-m", "qff_core.cli", "active-learn", "--no-prefect", "--run", str(run), "--rounds", "1",
            *[f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    done_at_kill = None
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            status = Dataset.open(data).status()
        except Exception:  # read while the writer resizes: look again
            continue
        new_done = int((status[n0:] == DONE).sum())
        if 0 < new_done < status.size - n0:
            proc.send_signal(signal.SIGKILL)
            done_at_kill = new_done
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert done_at_kill is not None, f"the job ended before it could be killed mid-labelling: {proc.stderr.read()}"
    ds = Dataset.open(data)
    n1 = ds.n_samples  # up to per_round frames (fewer when the exploration offers fewer distinct ones)
    assert n0 < n1 <= n0 + SMALL["per_round"]
    labelled = np.flatnonzero(ds.status() == DONE)
    labelled = labelled[labelled >= n0]
    wall_before = ds._array("wall_time_s")[labelled].copy()

    config = ActiveLearningConfig(run=str(run), rounds=1, **SMALL)
    summary = active_learn(config, log=lambda _: None)
    ds = Dataset.open(data)
    assert ds.n_samples == n1  # not appended again
    assert np.array_equal(ds._array("wall_time_s")[labelled], wall_before)  # not relabelled
    assert np.all(ds.status() == DONE)
    (record,) = summary["rounds"]
    assert record["stage"] == "done" and record["dataset_indices"] == list(range(n0, n1))
    assert record["labelling"]["computed"] == n1 - n0 - len(labelled)
    # the picked frames are in the new model's training split, the test split is untouched
    from qff_core.run import open_run

    before, after = open_run(run), open_run(record["model"])
    assert set(record["dataset_indices"]) <= set(after.split.train.tolist())
    assert np.array_equal(before.split.test, after.split.test)
    # the retrained model fits its new frames better than the model that picked them
    assert record["errors_after"]["forces_mae_kcal_mol_a"] < record["errors_before"]["forces_mae_kcal_mol_a"]
    # a second round continues the same job (only --rounds grew)
    summary = active_learn(config.model_copy(update={"rounds": 2}), log=lambda _: None)
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    assert json.loads((tmp_path / "run_active" / "state.json").read_text())["rounds"][1]["stage"] == "done"


def test_labelling_uses_the_molecule_file_of_a_dataset_made_from_one(tmp_path):
    """A dataset of a molecule given as a file records its name, which is no built-in: labelling by that name
    failed. The run's molecule spec is used, and its charge and multiplicity must be the dataset's."""
    from qff_core.active import label
    from qff_core.datagen import GenerateConfig, compute_pending, prepare_dataset
    from qff_core.errors import InputError
    from qff_core.molecules import builtin_molecule

    water = builtin_molecule("h2o")
    spec = tmp_path / "wasser.xyz"
    spec.write_text("3\nwater under another name\n" + "".join(
        f"{s} {x:.6f} {y:.6f} {z:.6f}\n" for s, (x, y, z) in zip(water.symbols, water.positions_a, strict=True)))
    settings = GenerateConfig(molecule=str(spec), engine="pyscf", method="hf", basis="sto-3g", samples=2,
                              sampler="rotations", out=str(tmp_path / "w.zarr"), timeout_s=None)
    dataset = prepare_dataset(settings)
    compute_pending(dataset, settings)
    dataset.add_geometries(water.positions_a * 1.02)  # a pending frame, as a round appends
    with pytest.raises(InputError, match="wasser"):
        label(dataset, 4, print)  # by the stored name alone there is no such molecule
    cation = tmp_path / "cation.yaml"
    cation.write_text(f"name: wasser\ncharge: 1\nmultiplicity: 2\nxyz: {spec}\n")
    with pytest.raises(InputError, match=r"charge 1 and multiplicity 2, but .* was computed with 0 and 1"):
        label(dataset, 4, print, str(cation))
    assert label(dataset, 4, print, str(spec))["computed"] == 1
    assert (dataset.status() == DONE).all()


def test_candidates_leave_out_the_start_the_blow_up_and_frames_far_outside_the_training_data():
    """Seen in review: a round labelled and trained on the frames of a trajectory that came apart (atoms 0.5 A
    apart, energies 400-17 000 kcal/mol above the data): the committee ranks those highest."""
    from qff_core.active import usable_candidates
    from qff_core.domain import TrainingDomain
    from qff_core.molecules import builtin_molecule

    water = builtin_molecule("h2o").positions_a
    domain = TrainingDomain.of_positions(("O", "H", "H"),
                                         water + np.random.default_rng(0).normal(0, 0.03, (50, 3, 3)))
    near, nearer = water + np.array([0.0, 0.01, 0.0]), water * 1.01
    collapsed = water.copy()
    collapsed[2] = collapsed[1] + np.array([0.0, 0.0, 0.6])  # H-H 0.6 A
    trajectory = np.stack([water, near, collapsed, nearer, collapsed])
    kept, dropped = usable_candidates(trajectory, True, domain, 0.25)  # the last frame stopped the MD
    assert np.array_equal(kept, np.stack([near, nearer])) and dropped == 1
    kept, dropped = usable_candidates(trajectory, False, domain, 0.25)
    assert len(kept) == 2 and dropped == 2
    assert len(usable_candidates(trajectory, False, domain, 10.0)[0]) == 4  # a wide margin keeps them
    assert usable_candidates(trajectory[:1], False, domain, 0.25)[0].shape == (0, 3, 3)


def test_a_job_that_cannot_label_or_be_scored_fairly_is_refused_before_any_work(small_run, h2o, tmp_path):
    """Seen in review: an imported dataset had committee members trained and frames appended before labelling
    was refused (they stayed pending for good); a test set at another level of theory, or the run's own growing
    dataset, gave numbers that meant nothing."""
    import zarr

    from qff_core.cli import main
    from qff_core.errors import InputError
    from qff_core.run import TrainConfig
    from qff_core.training import train

    run, data = small_run
    assert main(["dataset", "export", str(data), "--out", str(tmp_path / "x.extxyz")]) == 0
    assert main(["dataset", "import", str(tmp_path / "x.extxyz"), "--molecule", "h2o",
                 "--out", str(tmp_path / "imp.zarr")]) == 0
    train(tmp_path / "imp_run", TrainConfig(dataset=str(tmp_path / "imp.zarr"), model={"depth": 1}, steps=2,
                                            batch_size=4, test_size=4, val_size=2))
    other = tmp_path / "other_level.zarr"
    shutil.copytree(h2o, other)
    group = zarr.open_group(str(other), mode="r+")
    group.attrs["level_of_theory"] = {**group.attrs["level_of_theory"], "basis": "6-31g"}
    cases = [({"run": str(tmp_path / "imp_run")}, "was imported: qff cannot label"),
             ({"test_set": str(data)}, "is the run's own dataset"),
             ({"test_set": str(other)}, "was computed at .*6-31g.* errors against it would mix two surfaces"),
             ({"md_steps": 5, "sample_every": 10}, "keeps only the start frame")]
    n = Dataset.open(data).n_samples
    for k, (change, message) in enumerate(cases):
        config = ActiveLearningConfig(**{"run": str(run), **SMALL, **change, "work_dir": str(tmp_path / f"w{k}")})
        with pytest.raises(InputError, match=message):
            active_learn(config, log=lambda _: None)
        assert not (tmp_path / f"w{k}").exists()
    assert Dataset.open(data).n_samples == n and Dataset.open(tmp_path / "imp.zarr").n_samples == n
    # A job's settings are compared as paths, not strings, and a difference is named.
    work = tmp_path / "job"
    work.mkdir()
    (work / "state.json").write_text(json.dumps({"rounds": [], "config": {
        **ActiveLearningConfig(run=str(run), **SMALL).model_dump(exclude={"rounds", "max_extrapolation"}),
        "work_dir": str(work), "run": os.path.relpath(run), "temperature_k": 700.0}}))
    with pytest.raises(InputError, match=r"other settings \(temperature_k: 700.0 then, 600.0 now\)"):
        active_learn(ActiveLearningConfig(run=str(run), **SMALL, work_dir=str(work)), log=lambda _: None)
    (work / "state.json").write_text("{bad")
    with pytest.raises(InputError, match=r"state.json cannot be read"):
        active_learn(ActiveLearningConfig(run=str(run), **SMALL, work_dir=str(work)), log=lambda _: None)
