"""``qff train`` and ``qff cost``: train a model (checkpointed, resumable), price a run before it starts."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from qff_core.cli.common import (
    add_config_flags,
    add_executor_args,
    config_section,
    emit,
    executor_cluster,
    executor_values,
    given_values,
    load_config,
    logger,
    token,
    validated,
)
from qff_core.cli.model import add_model_flags
from qff_core.errors import InputError, Interrupted
from qff_core.models import ModelConfig
from qff_core.run import TrainConfig
from qff_core.run.directory import stored_config

CONFIG_SECTIONS = frozenset({"dataset", "evaluate", "executor", "model", "pipeline", "qpu_time", "retrain", "train"})
"""Top-level keys of a sectioned config file (one file may hold the settings of several commands)."""


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from ``--config`` (its ``train:`` section, or the whole file; executor settings also from a
    top-level ``executor:`` and ``qpu_time:``) with flags on top."""
    loaded = load_config(args.config)
    values = {**config_section(args.config, "train"), **given_values(args, TrainConfig)}
    executor = executor_values(args, values, loaded, top_level="train" in loaded)
    model = {**dict(values.get("model") or {}), **given_values(args, ModelConfig)}
    stored = stored_config(args.run_dir) if getattr(args, "resume", False) else None
    if stored is not None:  # --resume starts from the run's own settings; what is given changes them (or is refused)
        executor = {**(stored.get("executor") or {}), **executor}
        model = {**(stored.get("model") or {}), **model}
        values = {**stored, **values}
    values["executor"], values["model"] = executor, model
    if "dataset" not in values:
        raise InputError("say which data to train on: --dataset PATH (or `dataset:` in --config)")
    return validated(TrainConfig, values, "training settings")


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model on a dataset; checkpoints into --run-dir; --resume continues."""
    from qff_core.training import format_progress, train

    config = train_config_from_args(args)
    if args.segment_steps < 1:
        raise InputError(f"--segment-steps must be at least 1; got {args.segment_steps}")
    log = logger(args)
    cluster = executor_cluster(args, config.executor)

    def progress(p: dict) -> None:
        log("  " + format_progress(p), flush=True)

    if args.resume and not (Path(args.run_dir) / "run.json").exists():
        print(f"qff: warning: --resume, but {args.run_dir} holds no run yet: starting a new one there",
              file=sys.stderr)
    log(f"training {config.model.model} model (D={config.model.depth}) on {config.dataset} with the "
        f"{config.executor.name} executor -> {args.run_dir}")
    if args.no_prefect:
        summary = train(args.run_dir, config, resume=args.resume, progress=progress, cluster=cluster,
                        token=token(config.executor), wait=args.wait)
    else:
        from qff_core.cli.prefect_api import prefect_api, run_flow

        try:
            with prefect_api():
                from flows.training import train_model

                summary = run_flow(train_model, config.model_dump(), str(args.run_dir), resume=args.resume,
                                   segment_steps=args.segment_steps, wait=args.wait,
                                   cluster=None if cluster is None else cluster.model_dump())
        except KeyboardInterrupt:  # between two segments: the last one's checkpoint is what was kept
            raise Interrupted(_kept(args.run_dir, config.steps)) from None
    log(f"{summary['stop_reason']} at step {summary['step']}; best validation at step {summary['best_step']} "
        f"({summary['wall_time_s']:.1f} s)")
    if args.json:
        print(json.dumps(summary, indent=2))
    if summary["stop_reason"] == "non-finite loss":
        print(f"qff: error: training diverged (a non-finite loss at step {summary['step']}); the best parameters "
              f"(step {summary['best_step']}) are kept. Lower --learning-rate, or check the dataset with "
              "`qff dataset info`", file=sys.stderr)
        return 1
    return 0


def _kept(run_dir: Path, steps: int) -> str:
    from qff_core.store.checkpoint import latest_checkpoint, read_checkpoint

    latest = latest_checkpoint(Path(run_dir) / "checkpoints")
    done = 0 if latest is None else read_checkpoint(latest).step
    return (f"kept {done} of {steps} steps in {run_dir}; continue with `qff train --resume --run-dir "
            f"{shlex.quote(str(run_dir))}`")


def cmd_cost(args: argparse.Namespace) -> int:
    """Circuits, parameter bindings, shots and QPU seconds a training or evaluation configuration would use
    (nothing runs): a ``train:`` section (or a flat file) prices ``qff train``, an ``evaluate:`` section
    ``qff evaluate``; a file with both prices each and their sum."""
    from qff_core.cost import training_cost

    loaded = load_config(args.config)
    unknown = sorted(set(loaded) - CONFIG_SECTIONS) if loaded.keys() & {"train", "evaluate"} else []
    if unknown:  # a misspelt qpu_time: would be priced with the default QPU-time model, silently
        raise InputError(f"{args.config}: unknown top-level {', '.join(unknown)}; the sections qff reads are "
                         f"{', '.join(sorted(CONFIG_SECTIONS))}")
    if not loaded.keys() & {"train", "evaluate", "dataset"} and getattr(args, "dataset", None) is None:
        raise InputError(f"nothing to price in {args.config}: give a train: section (or a flat file with dataset:) for "
                         "qff train, or an evaluate: section (run_dir:) for qff evaluate")
    priced: dict = {}
    lines = []
    if "train" in loaded or "evaluate" not in loaded:
        config = train_config_from_args(args)
        priced["train"] = training_cost(config)
        lines.append(f"training {config.model.model} model (D={config.model.depth}) with the "
                     f"{priced['train'].describe()}")
    if "evaluate" in loaded:
        from qff_core.cli.evaluate import evaluate_config_from_args
        from qff_core.evaluation import evaluation_cost

        ev = evaluate_config_from_args(args)
        priced["evaluate"] = evaluation_cost(ev)
        lines.append(f"evaluating {ev.run_dir} ({', '.join(ev.sets)}) with the {priced['evaluate'].describe()}")
    if len(priced) == 1:
        emit(args, next(iter(priced.values())).to_dict(), lines[0])
        return 0
    total = sum(c.qpu_seconds_total for c in priced.values())
    emit(args, {**{k: c.to_dict() for k, c in priced.items()}, "qpu_seconds_total": total},
         "\n".join(lines) + f"\ntogether: {total:,.1f} QPU s ({total / 3600:.2f} h)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """``qff train`` and ``qff cost``."""
    tr = sub.add_parser("train", help="train a model on a dataset (checkpointed, resumable)")
    tr.add_argument("--config", type=Path, help="YAML file with training settings; flags override it")
    add_config_flags(tr, TrainConfig, skip=("max_qpu_seconds",))
    add_model_flags(tr)
    group = add_executor_args(tr, "quantum executors (also under executor: in --config)")
    add_config_flags(group, TrainConfig, only=("max_qpu_seconds",))
    tr.add_argument("--run-dir", type=Path, required=True, help="where the run's split and checkpoints go")
    tr.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    tr.add_argument("--wait", action="store_true", help="when another process trains in --run-dir, wait for it "
                                                         "instead of stopping (exit 2)")
    tr.add_argument("--segment-steps", type=int, default=1000, help="steps per Prefect task (flow mode)")
    tr.add_argument("--no-prefect", action="store_true", help="run the plain trainer instead of the Prefect flow")
    tr.add_argument("--json", action="store_true")
    tr.set_defaults(func=cmd_train)
    cost = sub.add_parser("cost", help="circuits, bindings, shots and QPU seconds of a training or evaluation "
                                       "configuration")
    cost.add_argument("--config", type=Path, required=True,
                      help="YAML with a train: section (as qff train --config) or an evaluate: section (as qff "
                           "evaluate --config), executor: and optional qpu_time:")
    cost.add_argument("--json", action="store_true")
    cost.set_defaults(func=cmd_cost)
