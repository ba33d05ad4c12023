"""Operating qff: the model registry, growing datasets and scheduled retraining with promotion, for real
(PySCF data, real training, real processes), and the faults a registry must survive."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from qff_core.cli import main
from qff_core.run import open_run
from qff_core.store.dataset import Dataset

QFF = [sys.executable, "-m", "qff_core.cli"]
# LiH at 5000 K: forces large enough that 400 steps learn them (rotated force MAE ~5 kcal/mol/A against ~11
# for zero forces and ~19 after one step from scratch): a candidate made worse on purpose is clearly worse.
GENERATE = ["dataset", "generate", "--molecule", "lih", "--engine", "pyscf", "--method", "hf", "--basis", "sto-3g",
            "--temperature-k", "5000", "--chunk-size", "8", "--workers", "0", "--no-prefect"]
SKIP_SECONDS = 15.0  # a retrain with nothing new: opens the record and the dataset, no training


def qff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*QFF, *args], capture_output=True, text=True, timeout=900, env=dict(os.environ))


def as_json(out: str) -> dict:
    return json.loads(out[out.index("{"):])


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict[str, Path]:
    """A dataset of 24 LiH geometries and a run trained on it (registered as lih version 1 by the first test)."""
    root = tmp_path_factory.mktemp("ops")
    data, catalog = root / "data" / "lih.zarr", root / "catalog"
    assert main([*GENERATE, "--samples", "24", "--out", str(data), "--catalog", str(catalog)]) == 0
    assert main(["train", "--dataset", str(data), "--depth", "2", "--steps", "400", "--batch-size", "8",
                 "--test-size", "6", "--val-size", "3", "--eval-every", "100", "--checkpoint-every", "100",
                 "--learning-rate", "3e-2", "--final-learning-rate", "1e-3", "--no-prefect",
                 "--run-dir", str(root / "runs" / "lih-v1")]) == 0
    return {"root": root, "data": data, "catalog": catalog, "run": root / "runs" / "lih-v1"}


def test_register_list_show_and_promote(project, capsys):
    c = ["--catalog", str(project["catalog"])]
    assert main(["models", "register", str(project["run"]), "--name", "lih", "--promote", *c, "--json"]) == 0
    v1 = json.loads(capsys.readouterr().out)
    run = open_run(project["run"])
    assert (v1["version"], v1["status"]) == (1, "production")
    assert v1["test_indices"] == run.split.test.tolist() and v1["dataset"]["checksum"] == run.dataset().checksum()
    assert set(v1["metrics"]) == {"test", "rotated"} and v1["metrics"]["rotated"]["forces_mae_kcal_mol_a"] > 0
    assert main(["models", "list", *c, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["lih"]
    assert [(s["version"], s["status"], s["run_exists"]) for s in listed] == [(1, "production", True)]
    assert main(["models", "show", "lih@1", *c]) == 0
    assert "registered with --promote" in capsys.readouterr().out
    record = yaml.safe_load((project["catalog"] / "models" / "lih.yaml").read_text())
    assert record["kind"] == "model" and [h["status"] for h in record["versions"][0]["history"]] == [
        "candidate", "production"]


def test_retrain_cycle(project, capsys):
    """Nothing new: skipped, quickly. New samples: a worse candidate is rejected, a real one judged."""
    c = ["--catalog", str(project["catalog"])]
    t0 = time.perf_counter()
    assert main(["retrain", "--model", "lih", *c, "--json"]) == 0
    skipped = as_json(capsys.readouterr().out)
    assert skipped["action"] == "skipped" and time.perf_counter() - t0 < SKIP_SECONDS

    before = Dataset.open(project["data"]).positions()
    assert main([*GENERATE, "--samples", "36", "--out", str(project["data"]), "--catalog", *c[1:]]) == 0
    assert np.array_equal(Dataset.open(project["data"]).positions()[:24], before)  # kept bit for bit

    # A candidate made worse on purpose (one step from scratch) is rejected and stays a candidate.
    assert main(["retrain", "--model", "lih", "--from-scratch", "--steps", "1", *c, "--json"]) == 0
    worse = as_json(capsys.readouterr().out)
    assert worse["action"] == "rejected" and "worse than production" in worse["reason"], worse
    assert (worse["version"], worse["production"], worse["new_samples"]) == (2, 1, 12)

    assert main(["retrain", "--model", "lih", *c, "--json"]) == 0  # a candidate was judged on these data
    assert as_json(capsys.readouterr().out)["action"] == "skipped"
    assert main(["retrain", "--model", "lih", "--force", *c, "--json"]) == 0
    judged = as_json(capsys.readouterr().out)
    assert judged["action"] in ("promoted", "rejected") and judged["reason"] and judged["version"] == 3
    old_test = set(open_run(project["run"]).split.test.tolist())
    candidate = open_run(judged["run_dir"])
    assert old_test <= set(candidate.split.test.tolist())  # the pinned test samples stay in the test set
    assert not old_test & (set(candidate.split.train.tolist()) | set(candidate.split.val.tolist()))
    assert candidate.split.used().size == 36 and candidate.config.init_from == str(project["run"])
    record = yaml.safe_load((project["catalog"] / "models" / "lih.yaml").read_text())
    statuses = [v["status"] for v in record["versions"]]
    assert statuses.count("production") == 1 and statuses[1] == "candidate"
    assert record["versions"][2]["notes"]["decision"] == judged["action"]
    # By hand: the rejected candidate into production (the current one archived, the reason recorded), and back.
    current = judged["production"]
    assert main(["models", "promote", "lih@2", "--reason", "rollback drill", *c, "--json"]) == 0
    promoted = json.loads(capsys.readouterr().out)
    assert (promoted["status"], promoted["history"][-1]["reason"]) == ("production", "rollback drill")
    record = yaml.safe_load((project["catalog"] / "models" / "lih.yaml").read_text())
    assert [v["status"] for v in record["versions"]][1] == "production"
    assert record["versions"][current - 1]["status"] == "archived"
    assert "replaced by version 2: rollback drill" in record["versions"][current - 1]["history"][-1]["reason"]
    assert main(["models", "promote", f"lih@{current}", "--reason", "drill over", *c]) == 0


def test_two_retrains_at_once_and_a_killed_one(project):
    c = ["--catalog", str(project["catalog"])]
    assert qff(*GENERATE, "--samples", "44", "--out", str(project["data"]), "--catalog",
               str(project["catalog"])).returncode == 0
    record_file = project["catalog"] / "models" / "lih.yaml"

    # Killed mid-way: the registry is unchanged; the rerun resumes the candidate's training.
    before = record_file.read_bytes()
    killed = subprocess.Popen([*QFF, "retrain", "--model", "lih", "--steps", "2000", *c], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=dict(os.environ))
    candidate = None
    deadline = time.time() + 300
    while time.time() < deadline:
        found = sorted(project["root"].glob("runs/lih-v*/checkpoints/latest"))
        found = [p for p in found if p.parent.parent.name not in ("lih-v1", "lih-v2", "lih-v3")]
        if found:
            candidate = found[0].parent.parent
            break
        assert killed.poll() is None
        time.sleep(0.1)
    assert candidate is not None
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert record_file.read_bytes() == before

    both = [subprocess.Popen([*QFF, "retrain", "--model", "lih", "--steps", "2000", *c, "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
            for _ in range(2)]
    outcomes = [p.communicate(timeout=900) for p in both]
    assert [p.returncode for p in both] == [0, 0], [o[1] for o in outcomes]
    results = sorted((as_json(o[0]) for o in outcomes), key=lambda r: r["action"] == "skipped")
    assert results[1]["action"] == "skipped" and results[0]["action"] in ("promoted", "rejected"), results
    assert Path(results[0]["run_dir"]) == candidate  # the killed retrain's candidate, resumed
    assert open_run(candidate).info["dataset"]["n_samples"] == 44


def test_registry_faults_are_clear_and_change_nothing(project, tmp_path, capsys):
    catalog = tmp_path / "catalog"
    shutil.copytree(project["catalog"], catalog)
    c = ["--catalog", str(catalog)]
    assert main(["models", "show", "nope", *c]) == 2
    assert "no model 'nope'" in capsys.readouterr().err
    assert main(["models", "promote", "lih@99", "--reason", "x", *c]) == 2
    assert "no version 99" in capsys.readouterr().err
    assert main(["models", "promote", "lih", "--reason", "x", *c]) == 2  # which version?
    record = catalog / "models" / "lih.yaml"
    broken = yaml.safe_load(record.read_text())
    broken["versions"][0]["status"] = "retired"
    record.write_text(yaml.safe_dump(broken))
    before = record.read_bytes()
    assert main(["retrain", "--model", "lih", *c]) == 2
    err = capsys.readouterr().err
    assert str(record) in err and "not valid" in err and record.read_bytes() == before
    # A record whose production run was deleted.
    fine = yaml.safe_load((project["catalog"] / "models" / "lih.yaml").read_text())
    production = next(v for v in fine["versions"] if v["status"] == "production")
    production["run_dir"] = str(tmp_path / "deleted-run")
    record.write_text(yaml.safe_dump(fine))
    assert main(["retrain", "--model", "lih", *c]) == 2
    assert "cannot be opened" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # the diverging run, on purpose
def test_only_finished_runs_are_registered_and_only_present_ones_promoted(project, tmp_path, capsys):
    """A run cut short or diverged is not the model its settings describe; a version whose run is gone cannot
    serve production."""
    from qff_core.run import TrainConfig
    from qff_core.training import train

    c = ["--catalog", str(tmp_path / "catalog")]
    cfg = TrainConfig(dataset=str(project["data"]), model={"depth": 1}, steps=10, batch_size=8, test_size=6,
                      val_size=3, eval_every=5, checkpoint_every=1)
    train(tmp_path / "cut", cfg, stop_after=2)  # what an interrupt leaves
    assert main(["models", "register", str(tmp_path / "cut"), "--name", "cut", *c]) == 2
    assert "stopped at step 2 of 10 (interrupted)" in capsys.readouterr().err
    wild = cfg.model_copy(update={"learning_rate": 1e300, "final_learning_rate": 1e300})
    assert train(tmp_path / "wild", wild)["stop_reason"] == "non-finite loss"
    assert main(["models", "register", str(tmp_path / "wild"), "--name", "wild", *c]) == 2
    assert "diverged" in capsys.readouterr().err
    assert not (tmp_path / "catalog" / "models" / "cut.yaml").exists()
    # Finished, registered twice, then the second run deleted: it cannot go to production.
    train(tmp_path / "cut", cfg, resume=True)
    shutil.copytree(tmp_path / "cut", tmp_path / "copy")
    for run in ("cut", "copy"):
        assert main(["models", "register", str(tmp_path / run), "--name", "cut", *c]) == 0
    shutil.rmtree(tmp_path / "copy")
    capsys.readouterr()
    assert main(["models", "promote", "cut@2", "--reason", "test", *c]) == 2
    assert "holds no run any more" in capsys.readouterr().err
    assert main(["models", "promote", "cut@1", "--reason", "test", *c]) == 0


def test_a_version_trained_on_productions_test_samples_is_not_promoted_unforced(project, tmp_path, capsys):
    """Seen in review: a run with another split (seed) was registered and promoted by hand over production,
    although it had trained on production's pinned test samples and was scored on another test set; the list
    did not say how many geometries each version was scored on."""
    from qff_core.run import TrainConfig
    from qff_core.training import train

    c = ["--catalog", str(tmp_path / "catalog")]
    assert main(["models", "register", str(project["run"]), "--name", "lih", "--promote", *c]) == 0
    cfg = TrainConfig(dataset=str(project["data"]), model={"depth": 1}, steps=5, batch_size=8, test_size=6,
                      val_size=3, eval_every=5, checkpoint_every=5, seed=99)
    train(tmp_path / "other", cfg)
    assert main(["models", "register", str(tmp_path / "other"), "--name", "lih", *c]) == 0
    capsys.readouterr()
    assert main(["models", "promote", "lih@2", "--reason", "looks better", *c]) == 2
    assert re.search(r"lih@2 was trained or validated on \d+ of the 6 test samples pinned by production lih@1",
                     capsys.readouterr().err)
    assert main(["models", "list", *c]) == 0
    assert re.search(r"n_test.*\n.*lih\s+1\s+production.*\s6\s", capsys.readouterr().out)
    assert main(["models", "promote", "lih@2", "--reason", "looks better", "--force", *c, "--json"]) == 0
    reason = json.loads(capsys.readouterr().out)["history"][-1]["reason"]
    assert reason.startswith("looks better (forced: trained on ") and "pinned test samples" in reason


def test_registry_input_that_used_to_end_in_tracebacks(project, tmp_path, capsys):
    """The same run twice, a name too long for a file, a catalog that is a file, a run whose split is gone or
    whose dataset was replaced by a shorter one: one clear error each, nothing written."""
    c = ["--catalog", str(tmp_path / "catalog")]
    assert main(["models", "register", str(project["run"]), "--name", "twice", *c]) == 0
    assert main(["models", "register", str(project["run"]), "--name", "twice", *c]) == 2
    assert "registered already, as twice@1" in capsys.readouterr().err
    assert main(["models", "register", str(project["run"]), "--name", "x" * 300, *c]) == 2
    assert "up to 100 letters" in capsys.readouterr().err
    assert main(["models", "show", "twice@", *c]) == 2
    assert "give the version after @" in capsys.readouterr().err
    # A hand-edited record with a version twice is invalid; it does not hide the other models from `list`.
    shutil.copy(tmp_path / "catalog" / "models" / "twice.yaml", tmp_path / "catalog" / "models" / "other.yaml")
    record = yaml.safe_load((tmp_path / "catalog" / "models" / "twice.yaml").read_text())
    record["versions"].append(record["versions"][0])
    (tmp_path / "catalog" / "models" / "twice.yaml").write_text(yaml.safe_dump(record))
    other = yaml.safe_load((tmp_path / "catalog" / "models" / "other.yaml").read_text())
    (tmp_path / "catalog" / "models" / "other.yaml").write_text(yaml.safe_dump({**other, "name": "other"}))
    capsys.readouterr()
    assert main(["models", "list", *c]) == 2
    out, err = capsys.readouterr()
    assert "other" in out and "version 1 appears more than once" in err
    (tmp_path / "afile").write_text("")
    assert main(["models", "list", "--catalog", str(tmp_path / "afile")]) == 2
    assert "is a file" in capsys.readouterr().err
    run = tmp_path / "run"
    shutil.copytree(project["run"], run, symlinks=True)
    shutil.rmtree(run / "split.zarr")
    assert main(["models", "register", str(run), "--name", "nosplit", *c]) == 2
    assert "split.zarr cannot be read" in capsys.readouterr().err
    # The run's dataset replaced by one holding only its first 10 samples.
    project_copy = tmp_path / "project"
    shutil.copytree(project["root"], project_copy, symlinks=True)
    data = project_copy / "data" / "lih.zarr"
    assert main(["dataset", "export", str(data), "--out", str(tmp_path / "all.extxyz")]) == 0
    from ase.io import read, write

    write(tmp_path / "first10.extxyz", read(tmp_path / "all.extxyz", ":10"), format="extxyz")
    shutil.rmtree(data)
    assert main(["dataset", "import", str(tmp_path / "first10.extxyz"), "--molecule", "lih", "--out", str(data),
                 "--catalog", str(tmp_path / "cat2")]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(project_copy / "runs" / "lih-v1"), "--no-prefect"]) == 2
    err = capsys.readouterr().err
    assert "now holds 10 samples" in err and "Traceback" not in err


def test_copies_of_used_geometries_do_not_enter_a_retrain(project, tmp_path):
    """A dataset that holds a rotated copy of a pinned test sample (written before copies were refused, or by
    another tool): the retrain's new samples leave it out, so it cannot land in the candidate's training split."""
    from scipy.spatial.transform import Rotation

    from qff_core.reference.base import CalculationResult
    from qff_core.retrain import fresh_samples
    from qff_core.run import open_run

    data = tmp_path / "lih.zarr"
    shutil.copytree(project["data"], data)
    dataset, run = Dataset.open(data), open_run(project["run"])
    used, test = run.split.used(), int(run.split.test[0])
    x, e, f = dataset.samples(np.array([test]))
    copy = x[0] @ Rotation.random(random_state=5).as_matrix().T + 1.5
    stretched = x[0] * 1.05
    indices = dataset.add_geometries(np.stack([copy, stretched]))
    result = CalculationResult(energy_ev=float(e[0]), forces_ev_per_a=f[0], energy_hartree=0.0,
                               gradient_hartree_per_bohr=np.zeros_like(f[0]), wall_time_s=0.0,
                               provenance={"engine": "test"})
    dataset.record([(int(i), result) for i in indices])
    said: list[str] = []
    fresh = fresh_samples(dataset, used, said.append).tolist()  # (earlier tests may have added samples too)
    assert int(indices[1]) in fresh and int(indices[0]) not in fresh
    assert "1 new samples are copies" in said[0]


def test_the_retrain_flow_runs_under_prefect(project, prefect_server):
    from flows.retrain import retrain_flow
    from qff_core.retrain import RetrainConfig

    summary = retrain_flow(RetrainConfig(name="lih", catalog=str(project["catalog"])))
    assert summary["action"] == "skipped"
