"""``qff models register|list|show|promote`` and ``qff retrain``: the model registry and scheduled retraining."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from qff_core.cli.common import add_config_flags, emit, given_values, logger, token, validated


def _catalog(p: argparse.ArgumentParser) -> None:
    p.add_argument("--catalog", type=Path, default=None, help="catalog folder (default $QFF_CATALOG, else "
                                                              "data_catalog)")
    p.add_argument("--json", action="store_true")


def cmd_register(args: argparse.Namespace) -> int:
    """Register a trained run as the next version of a model (scored on its test split, pinned)."""
    from qff_core.registry import register

    v = register(args.run_dir, args.name, catalog=args.catalog, promote=args.promote,
                 reason=args.reason)
    rot = v.metrics["rotated"]
    emit(args, v.model_dump(mode="json"),
         f"{args.name}@{v.version}: {v.status}, {v.model.get('model')} model of {v.molecule} "
         f"({v.n_parameters} parameters) from {v.run_dir}; {len(v.test_indices)} pinned test geometries, rotated "
         f"energy MAE {rot['energy_mae_kcal_mol']:.4f} kcal/mol, force MAE {rot['forces_mae_kcal_mol_a']:.4f} "
         "kcal/mol/A")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Every registered model and version, production first."""
    from qff_core.errors import QffError
    from qff_core.registry import load, names, summary

    rows, broken = {}, []
    for name in names(args.catalog):
        try:
            rows[name] = [summary(v) for v in load(name, args.catalog).versions]
        except QffError as exc:  # one unreadable record does not hide the others
            broken.append(str(exc))
    lines = [f"{'model':<16}{'ver':>4}  {'status':<11}{'params':>7}  {'E MAE rot':>10}  {'F MAE rot':>10}  "
             f"{'n_test':>6}  updated"]
    for name, versions in rows.items():
        for s in sorted(versions, key=lambda s: (s["status"] != "production", -s["version"])):
            missing = "" if s["run_exists"] else "  (run missing)"
            lines.append(f"{name:<16}{s['version']:>4}  {s['status']:<11}{s['n_parameters']:>7}  "
                         f"{s['energy_mae_rot_kcal_mol']:>10.4f}  {s['forces_mae_rot_kcal_mol_a']:>10.4f}  "
                         f"{s['n_test']:>6}  {s['updated']}{missing}")
    if not rows and not broken:
        lines = ["no models registered; register one with `qff models register RUN --name NAME`"]
    emit(args, rows, "\n".join(lines))
    for message in broken:
        print(f"qff: error: {message}", file=sys.stderr)
    return 2 if broken else 0


def cmd_show(args: argparse.Namespace) -> int:
    """One version in full (``NAME`` is the production version, else the newest)."""
    from qff_core.registry import load, parse_ref

    name, version = parse_ref(args.ref)
    v = load(name, args.catalog).get(version)
    text = [f"{name}@{v.version} ({v.status}): {v.model.get('model')} model of {v.molecule}, "
            f"{v.n_parameters} parameters", f"run: {v.run_dir}",
            f"dataset: {v.dataset['path']} ({v.dataset['n_samples']} samples, {v.dataset['checksum'][:19]}...)",
            f"pinned test set: {len(v.test_indices)} geometries"]
    for set_name, m in v.metrics.items():
        text.append(f"  {set_name:<8} energy MAE {m['energy_mae_kcal_mol']:.4f} kcal/mol, force MAE "
                    f"{m['forces_mae_kcal_mol_a']:.4f} kcal/mol/A")
    text += [f"  {h.at} {h.status}: {h.reason}" for h in v.history]
    emit(args, v.model_dump(mode="json"), "\n".join(text))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Put a version in production (the previous one is archived), with the reason recorded."""
    from qff_core.errors import InputError
    from qff_core.registry import parse_ref, promote

    name, version = parse_ref(args.ref)
    if version is None:
        raise InputError("say which version: NAME@VERSION (see `qff models list`)")
    v = promote(name, version, args.reason, catalog=args.catalog, force=args.force)
    emit(args, v.model_dump(mode="json"), f"{name}@{v.version} is in production: {args.reason}")
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    """Retrain a registered model on the new samples of its dataset; promote only if it is not worse."""
    from qff_core.registry import load
    from qff_core.retrain import RetrainConfig, retrain

    values = {**given_values(args, RetrainConfig), "name": args.model}
    if args.catalog is not None:
        values["catalog"] = str(args.catalog)
    config = validated(RetrainConfig, values, "retraining settings")
    log = logger(args)
    production = load(config.name, config.catalog).production()
    summary = retrain(config, log=log, token=token(_executor(production)) if production else None,
                      progress=None if args.json else lambda p: log("  " + _line(p), flush=True))
    log(f"{summary['action']}: {summary['reason']}")
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0


def _executor(version):
    from qff_core.execution import ExecutorConfig

    return ExecutorConfig.model_validate(version.train.get("executor", {}))


def _line(p: dict) -> str:
    from qff_core.training import format_progress

    return format_progress(p)


def register(sub: argparse._SubParsersAction) -> None:
    """``qff models ...`` and ``qff retrain``."""
    from qff_core.retrain import RetrainConfig

    models = sub.add_parser("models", help="the model registry").add_subparsers(dest="action", required=True)
    reg = models.add_parser("register", help="register a trained run as a new version of a model")
    reg.add_argument("run_dir", type=Path)
    reg.add_argument("--name", required=True, help="the model's name (letters, digits, _ . -)")
    reg.add_argument("--promote", action="store_true", help="put it in production at once")
    reg.add_argument("--reason", default=None, help="recorded with the status")
    _catalog(reg)
    reg.set_defaults(func=cmd_register)
    ls = models.add_parser("list", help="registered models and their versions")
    _catalog(ls)
    ls.set_defaults(func=cmd_list)
    show = models.add_parser("show", help="one version in full: NAME (production) or NAME@VERSION")
    show.add_argument("ref")
    _catalog(show)
    show.set_defaults(func=cmd_show)
    pro = models.add_parser("promote", help="put NAME@VERSION in production (the previous one is archived)")
    pro.add_argument("ref")
    pro.add_argument("--reason", required=True, help="why: recorded with the status change")
    pro.add_argument("--force", action="store_true",
                     help="promote a version that trained on production's pinned test samples (said in the record)")
    _catalog(pro)
    pro.set_defaults(func=cmd_promote)

    re = sub.add_parser("retrain", help="retrain a registered model on new samples; promote if not worse")
    re.add_argument("--model", required=True, help="the registered model's name")
    add_config_flags(re, RetrainConfig, skip=("name", "catalog", "wait"))
    re.add_argument("--no-wait", dest="wait", action="store_false", default=None,
                    help="when the model is being retrained elsewhere, stop (exit 2) instead of waiting")
    _catalog(re)
    re.set_defaults(func=cmd_retrain)
