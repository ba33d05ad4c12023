"""The end-to-end pipeline as a real Prefect flow: data, two models trained in parallel on Dask,
evaluation and comparison, every file under one output folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import BROKEN_SYMMETRY, FLOAT64_TOL, METRIC_INVARIANCE_TOL

from qff_core.cli import main
from qff_core.pipeline import choose_engine

TINY = {
    "name": "tiny",
    "dataset": {"molecule": "h2o", "engine": "pyscf", "method": "hf", "basis": "sto-3g", "samples": 24,
                "chunk_size": 8, "temperature_k": 800.0},
    "models": {"invariant": {"model": "invariant", "depth": 1}, "generic": {"model": "generic", "depth": 1}},
    "train": {"steps": 20, "batch_size": 16, "test_size": 6, "val_size": 4, "eval_every": 10,
              "checkpoint_every": 10},
}


@pytest.fixture(scope="module")
def flow_output(tmp_path_factory, prefect_server) -> Path:
    """The tiny pipeline run as the Prefect flow (its output folder)."""
    config = tmp_path_factory.mktemp("pipeline") / "tiny.yaml"
    config.write_text(yaml.safe_dump({"pipeline": TINY}))
    out = config.parent / "out"
    assert main(["pipeline", "--config", str(config), "--out-dir", str(out)]) == 0
    return out


def test_pipeline_flow_trains_and_compares_both_models(flow_output):
    out = flow_output
    result = json.loads((out / "summary.json").read_text())
    assert set(result) == {"invariant", "generic", "output_dir"} and result["output_dir"] == str(out)
    for name in ("invariant", "generic"):
        summary = result[name]
        for part in ("test", "rotated", "translated", "permuted", "inverted"):
            assert np.isfinite(summary[part]["forces_err_norm_kcal_mol_a"])
        assert summary["run"]["step"] == 20 and summary["run"]["split"] == {"train": 14, "val": 4, "test": 6}
        for path in summary["plots"].values():
            assert Path(path).is_relative_to(out) and Path(path).exists()
    changes = result["invariant"]["invariance"].values()
    assert max(v["forces_err_norm_rel_change"] for v in changes) < METRIC_INVARIANCE_TOL
    assert result["generic"]["invariance"]["rotated"]["forces_err_norm_rel_change"] > BROKEN_SYMMETRY
    assert (out / "comparison.md").exists() and (out / "data_catalog" / "tiny.yaml").exists()


def test_the_comparison_shows_the_classical_baselines_beside_the_models(flow_output):
    """KRR (fitted on the same training split) and the constant predictor are columns of comparison.md."""
    result = json.loads((flow_output / "summary.json").read_text())
    krr = result["invariant"]["baselines"]["krr_inverse_distances"]
    assert krr["n_train"] == 14 and krr == result["generic"]["baselines"]["krr_inverse_distances"] | {
        "fit_seconds": krr["fit_seconds"]}
    for part in ("rotated", "translated", "permuted", "inverted"):  # an invariant energy on invariant features
        assert krr[part]["energy_mae_kcal_mol"] == pytest.approx(krr["test"]["energy_mae_kcal_mol"], rel=1e-10)
    table = (flow_output / "comparison.md").read_text().splitlines()
    header = next(line for line in table if line.startswith("set "))
    models = [name for name in result if name != "output_dir"]  # in the order of the configuration
    assert header.split()[2:] == [*models, "KRR", "constant"]
    row = next(line for line in table if line.startswith("test ") and "forces_mae_kcal_mol_a" in line).split()
    expected = [*(result[name]["test"] for name in models), krr["test"],
                result["invariant"]["baselines"]["constant_energy_zero_forces"]]
    assert [float(v) for v in row[2:]] == [pytest.approx(e["forces_mae_kcal_mol_a"], abs=1e-4) for e in expected]
    constant = result["invariant"]["baselines"]
    for part in ("translated", "permuted", "inverted"):  # the labels' transforms leave its errors as they were
        assert constant[f"constant_energy_zero_forces_{part}"] == pytest.approx(constant["constant_energy_zero_forces"],
                                                                                rel=1e-12)


def test_the_plain_pipeline_gives_what_the_flow_gives(flow_output, tmp_path, capsys):
    """--no-prefect runs the same chain with plain functions: same data, same models, same numbers."""
    config = flow_output.parent / "tiny.yaml"
    assert main(["pipeline", "--config", str(config), "--out-dir", str(tmp_path), "--no-prefect", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    flow = json.loads((flow_output / "summary.json").read_text())
    for name in ("invariant", "generic"):
        for part in ("test", "rotated"):
            for key, value in flow[name][part].items():
                expected = pytest.approx(value, rel=FLOAT64_TOL, abs=FLOAT64_TOL)
                assert plain[name][part][key] == expected, (name, part, key)


def test_single_thread_flags_join_the_users_xla_flags(monkeypatch):
    from qff_core.pipeline import SINGLE_THREAD_XLA, single_thread_xla

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    single_thread_xla()
    assert os.environ["XLA_FLAGS"] == SINGLE_THREAD_XLA
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")  # kept, and the threads still set
    single_thread_xla()
    assert os.environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {SINGLE_THREAD_XLA}"
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")  # the user's own threading choice wins
    single_thread_xla()
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads=1"


def test_missing_psi4_falls_back_to_pyscf_and_says_so(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    said: list[str] = []
    assert choose_engine("psi4", log=said.append) == "pyscf"
    assert "psi4 is not available" in said[0] and "PySCF" in said[0]
    assert choose_engine("pyscf", log=said.append) == "pyscf" and len(said) == 1


def test_train_flow_in_segments_equals_one_plain_run(tmp_path, prefect_server, h2o):
    from flows.training import train_model
    from qff_core.run import TrainConfig
    from qff_core.store.checkpoint import latest_checkpoint, read_checkpoint
    from qff_core.training import train

    cfg = TrainConfig(dataset=h2o, model={"depth": 1}, steps=10, batch_size=8, test_size=3, val_size=3,
                      eval_every=5, checkpoint_every=5)
    flow_summary = train_model(cfg.model_dump(), str(tmp_path / "flow"), segment_steps=4)  # segments 4, 4, 2
    train(tmp_path / "plain", cfg)
    assert flow_summary["step"] == 10 and flow_summary["resumed_from"] == 0  # the flow's, not its last segment's
    a = read_checkpoint(latest_checkpoint(tmp_path / "flow" / "checkpoints")).arrays
    b = read_checkpoint(latest_checkpoint(tmp_path / "plain" / "checkpoints")).arrays
    assert all(np.array_equal(a[k], b[k]) for k in ("params", "opt_params", "history/loss"))
