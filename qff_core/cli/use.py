"""``qff md``, ``qff vibrations`` and ``qff active-learn``: using a trained model.

``md`` and ``vibrations`` run in this process (seconds to minutes; the ``md`` flow wraps the same
function for deployments); ``active-learn`` runs as a Prefect flow unless ``--no-prefect``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from qff_core.cli.common import add_config_flags, emit, given_values, logger, validated


def cmd_md(args: argparse.Namespace) -> int:
    """Molecular dynamics with a trained model; a trajectory (extxyz), a PNG of the traces and a summary."""
    from qff_core.md import MDConfig, run_md
    from qff_core.progress import ProgressReporter

    config = validated(MDConfig, {**given_values(args, MDConfig), "run_dir": str(args.run_dir)}, "MD settings")
    report = ProgressReporter("qff md", unit="steps", echo=not args.quiet)
    summary = run_md(config, progress=lambda done, total: report(done, total))
    drift = f", total-energy drift {summary['energy_drift_ev']:+.2e} eV" if config.ensemble == "nve" else ""
    emit(args, summary, f"{summary['n_frames']} frames in {summary['trajectory']}{drift}, mean temperature "
                        f"{summary['mean_temperature_k']:.1f} K, {summary['wall_time_s']:.1f} s "
                        f"({summary['ns_per_day']:.2f} ns/day); traces: {summary['plot']}"
                        + (f"; {summary['steps_outside_training_domain']} steps outside the training domain "
                           f"(first: step {summary['first_step_outside_training_domain']})"
                           if summary["steps_outside_training_domain"] else ""))
    return 0


def cmd_vibrations(args: argparse.Namespace) -> int:
    """Harmonic wavenumbers at the model's minimum, against the reference engine's."""
    from qff_core.vibrations import VibrationsConfig, vibrations, vibrations_table

    config = validated(VibrationsConfig, {**given_values(args, VibrationsConfig), "run_dir": str(args.run_dir)},
                       "vibrations settings")
    summary = vibrations(config)
    emit(args, summary, vibrations_table(summary))
    return 0


def cmd_active_learn(args: argparse.Namespace) -> int:
    """Rounds of MD, committee selection, reference labelling and retraining."""
    from qff_core.active import ActiveLearningConfig

    config = validated(ActiveLearningConfig, given_values(args, ActiveLearningConfig), "active-learning settings")
    log = logger(args)
    if args.no_prefect:
        from qff_core.active import active_learn

        summary = active_learn(config, log=log)
    else:
        from qff_core.cli.prefect_api import prefect_api, run_flow

        with prefect_api():
            from flows.use import active_learning

            summary = run_flow(active_learning, config)
    lines = []
    if summary["initial_test"]:
        lines.append(f"test set before: force MAE {summary['initial_test']['forces_mae_kcal_mol_a']:.3f} kcal/mol/A")
    for r in summary["rounds"]:
        after = r.get("test_after")
        lines.append(f"round {r['round']}: {r['reference_calls']} reference calls ({r['failed']} failed); picked "
                     f"frames' force MAE {r['errors_before'].get('forces_mae_kcal_mol_a', float('nan')):.3f} -> "
                     f"{r['errors_after'].get('forces_mae_kcal_mol_a', float('nan')):.3f} kcal/mol/A"
                     + (f"; test force MAE {after['forces_mae_kcal_mol_a']:.3f}" if after else ""))
    lines.append(f"final model: {summary['final_run']}")
    emit(args, summary, "\n".join(lines))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """``qff md``, ``qff vibrations``, ``qff active-learn``."""
    from qff_core.active import ActiveLearningConfig
    from qff_core.md import MDConfig
    from qff_core.vibrations import VibrationsConfig

    md = sub.add_parser("md", help="molecular dynamics with a trained model (ASE integrators)")
    md.add_argument("run_dir", type=Path, help="the trained run")
    add_config_flags(md, MDConfig, skip=("run_dir",))
    md.add_argument("--quiet", action="store_true", help="no progress lines")
    md.add_argument("--json", action="store_true")
    md.set_defaults(func=cmd_md)

    vib = sub.add_parser("vibrations", help="harmonic wavenumbers of the learned surface vs the reference")
    vib.add_argument("run_dir", type=Path, help="the trained run")
    add_config_flags(vib, VibrationsConfig, skip=("run_dir",))
    vib.add_argument("--json", action="store_true")
    vib.set_defaults(func=cmd_vibrations)

    al = sub.add_parser("active-learn", help="grow the dataset where MD of the model is uncertain, and retrain")
    add_config_flags(al, ActiveLearningConfig)
    al.add_argument("--no-prefect", action="store_true", help="run the plain function instead of the Prefect flow")
    al.add_argument("--json", action="store_true")
    al.set_defaults(func=cmd_active_learn)


__all__ = ["register"]
