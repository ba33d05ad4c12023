"""``qff evaluate``: test errors, symmetry checks, baselines and plots of a trained run, on any executor."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from qff_core.cli.common import (
    add_config_flags,
    add_executor_args,
    executor_cluster,
    executor_values,
    given_values,
    load_config,
    token,
    validated,
)
from qff_core.errors import InputError
from qff_core.evaluation import TRANSFORMS, EvaluateConfig


def evaluate_config_from_args(args: argparse.Namespace) -> EvaluateConfig:
    """EvaluateConfig from ``--config`` (its ``evaluate:`` section; executor settings also from a top-level
    ``executor:`` and ``qpu_time:``) with flags on top."""
    loaded = load_config(args.config)
    section = loaded.get("evaluate") or {}
    if not isinstance(section, dict):
        raise InputError(f"the evaluate: section of {args.config} must be a mapping of settings")
    values = {**section, **given_values(args, EvaluateConfig)}
    if getattr(args, "sets", None) is not None:
        values["sets"] = args.sets
    if getattr(args, "run_dir", None) is not None:
        values["run_dir"] = str(args.run_dir)
    values["executor"] = executor_values(args, values, loaded, top_level=True)
    if "run_dir" not in values:
        raise InputError("say which run to evaluate: qff evaluate RUN_DIR (or run_dir: in the evaluate: section)")
    return validated(EvaluateConfig, values, "evaluation settings")


def _print_summary(summary: dict) -> None:
    from qff_core.evaluation import summary_table

    run = summary["run"]
    print(f"{run['run_dir']}: {run['model']} model of {run['molecule']}, {run['n_parameters']} parameters, "
          f"best step {run['best_step']}, {run['n_test_scored']} test geometries")
    print(summary_table({run["model"]: summary}))
    if "deviation_from_exact" in summary:
        d = summary["deviation_from_exact"]
        f_mae = d["forces_mae_kcal_mol_a"]
        forces = "not computed" if f_mae is None else f"{f_mae:.2e} kcal/mol/A"
        print(f"{summary['executor']['name']} executor against the exact simulator: energy MAE "
              f"{d['energy_mae_kcal_mol']:.2e} kcal/mol, force MAE {forces}")
    if "recalibration" in summary:
        r = summary["recalibration"]
        print(f"recalibrated on {r['n_geometries']} training/validation geometries: scale {r['trained']['scale']:.5g}"
              f" -> {r['fitted']['scale']:.5g}, offset {r['trained']['offset_ev']:.6f} -> "
              f"{r['fitted']['offset_ev']:.6f} eV")
    if "audit" in summary:
        print("symmetry audit (relative change): " + ", ".join(f"{k} {v:.1e}" for k, v in summary["audit"].items()))
    for name, path in summary.get("plots", {}).items():
        print(f"{name}: {path}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Test-set errors of a trained run (and on transformed copies), baselines, plots; on any executor."""
    from qff_core.evaluation import evaluate_run

    config = evaluate_config_from_args(args)
    cluster = executor_cluster(args, config.executor)
    options = dict(seed=config.seed, plots=not args.no_plots, krr=args.krr, sets=config.sets,
                   max_test=config.max_test, max_qpu_seconds=config.max_qpu_seconds, recalibrate=config.recalibrate,
                   energies_only=config.energies_only)
    if args.no_prefect:
        summary = evaluate_run(config.run_dir, executor=config.executor, cluster=cluster, token=token(config.executor),
                               **options)
    else:
        from qff_core.cli.prefect_api import prefect_api, run_flow

        with prefect_api():
            from flows.training import evaluate_model

            summary = run_flow(evaluate_model, config.run_dir, executor=config.executor.model_dump(),
                               cluster=None if cluster is None else cluster.model_dump(), **options)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """``qff evaluate``."""
    ev = sub.add_parser("evaluate", help="test errors, symmetry checks, plots of a trained run")
    ev.add_argument("run_dir", type=Path, nargs="?", help="the run (or run_dir: in the evaluate: section of --config)")
    ev.add_argument("--config", type=Path, help="YAML with an evaluate: section (run_dir, sets, max_test, seed, "
                                                "executor); flags override it")
    add_config_flags(ev, EvaluateConfig, only=("seed", "max_test"),
                     help={"seed": "seed of the random symmetry operations"})
    ev.add_argument("--sets", nargs="+", choices=["test", *TRANSFORMS], default=None,
                    help="sets to score (default: test and all four transformed copies)")
    group = add_executor_args(ev, "quantum executors (also under executor: in --config); remote ones run in a Batch")
    add_config_flags(group, EvaluateConfig, only=("max_qpu_seconds", "recalibrate", "energies_only"))
    ev.add_argument("--no-plots", action="store_true")
    ev.add_argument("--krr", action="store_true", help="also fit and score a kernel ridge regression baseline")
    ev.add_argument("--no-prefect", action="store_true", help="run the plain function instead of the Prefect flow")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=cmd_evaluate)
