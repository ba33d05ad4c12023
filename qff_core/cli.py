"""The ``qff`` command: the user's entry point.

Every subcommand prints a human summary; with ``--json`` it prints one JSON document instead
(last, on stdout), for scripts and CI. Errors exit with status 2 and a message saying what to fix.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from qff_core.errors import InputError, QffError
from qff_core.models import AnyModel, ModelConfig, build_model
from qff_core.molecules import BUILTIN_NAMES, load_molecule

if TYPE_CHECKING:
    from qff_core.distributed import ClusterConfig

TRANSFORM_NAMES = ("rotated", "translated", "permuted", "inverted")  # qff_core.evaluation.TRANSFORMS, unimported

_MODEL_FLAGS = {
    "model": dict(choices=["invariant", "generic", "fragment"],
                  help="invariant siVQLM, generic baseline, or fragment model (monomer + pair siVQLMs)"),
    "depth": dict(type=int, help="trainable layers D (default 6)"),
    "blocks": dict(type=int, help="repetitions B of each trainable block (default 1)"),
    "rep": dict(type=int, help="qubits per encoded atom (default 2)"),
    "pattern": dict(choices=["ring", "all-to-all"], help="exchange pair pattern (default ring)"),
    "observable": dict(choices=["singlet", "all-pairs"], help="observable pairs (default singlet)"),
    "symmetry_breaking": dict(choices=["off", "trainable", "frozen"], help="RZ(eps) layers (default off)"),
    "pair_depth": dict(type=int, help="fragment model: depth of the pair model (default --depth)"),
    "pair_rep": dict(type=int, help="fragment model: qubits per atom of the pair model (default 1)"),
}


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--molecule", default="h2o",
                   help=f"built-in ({', '.join(BUILTIN_NAMES)}) or an .xyz/.yaml file (default h2o)")
    p.add_argument("--config", type=Path, help="YAML file with model settings; flags override it")
    for name, kw in _MODEL_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, default=None, **kw)
    p.add_argument("--symmetrize-inversion", action="store_true", default=None,
                   help="average E over X and -X (exact inversion invariance)")
    p.add_argument("--json", action="store_true", help="print one JSON document")


def _validated(cls, values: dict, what: str):
    """``cls.model_validate(values)``, a validation error turned into an InputError naming ``what``."""
    try:
        return cls.model_validate(values)
    except ValueError as exc:
        raise InputError(f"invalid {what}:\n{exc}") from exc


def _load_config(path: Path | None) -> dict:
    """A YAML config file as a mapping; {} without a file."""
    from qff_core.yamlfile import load_mapping

    return {} if path is None else load_mapping(path, "config file")


def _config_section(path: Path | None, section: str) -> dict:
    """The ``section:`` of a YAML config file (or the whole file when it has no such key); {} without a file."""
    loaded = _load_config(path)
    return dict(loaded.get(section, loaded))


def model_config_from_args(args: argparse.Namespace) -> ModelConfig:
    """ModelConfig from ``--config`` (if any) with explicitly given flags on top."""
    values = _config_section(args.config, "model")
    for name in [*_MODEL_FLAGS, "symmetrize_inversion"]:
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    return _validated(ModelConfig, values, "model settings")


def _model_from_args(args: argparse.Namespace) -> AnyModel:
    return build_model(load_molecule(args.molecule), model_config_from_args(args))


def _emit(args: argparse.Namespace, payload: dict, text: str) -> None:
    print(json.dumps(payload, indent=2) if args.json else text)


def _circuit_lines(s: dict) -> list[str]:
    """What ``qff model show`` prints about one circuit model, from its ``summary()``."""
    lines = [
        f"{s['model']} model of {s['molecule']}: {s['n_qubits']} qubits "
        f"({s['n_data_qubits']} data, {s['n_ancillas']} ancilla), origin {s['origin']}, "
        f"permutation group of order {s['permutation_group_order']}",
        f"parameters: {s['n_parameters']} ({', '.join(f'{k} {v}' for k, v in s['parameters_by_kind'].items())})",
        f"depth {s['depth']}; prelude gates {s['gates_per_layer'][0]['gates']}",
    ]
    if s["depth"]:
        lines.append(f"each layer: {s['gates_per_layer'][1]['gates']}")
    if s["model"] == "invariant":
        hp = s["hyperparameters"]
        lines += [f"singlets: {hp['singlet_pairs']} ({hp['singlet_rule']})",
                  f"exchange orbits: {hp['exchange_orbits']} ({hp['orbit_summed_generators']} orbit-summed)"]
    lines.append(f"observable: {s['observable']['type']} over {s['observable']['terms']}")
    return lines


def cmd_model_show(args: argparse.Namespace) -> int:
    """Print qubits, parameter counts and gates per layer of a model (of each sub-model of a fragment model)."""
    s = _model_from_args(args).summary()
    if s["model"] != "fragment":
        _emit(args, s, "\n".join(_circuit_lines(s)))
        return 0
    blocks = s["parameter_blocks"]
    lines = [
        f"fragment model of {s['molecule']}: {s['n_monomer_terms']} monomer terms over fragments {s['fragments']}, "
        f"{s['n_pair_terms']} pair terms; permutation group of order {s['permutation_group_order']}",
        f"parameters: {s['n_parameters']} ({s['n_trainable_parameters']} trainable): monomer {blocks['monomer']}, "
        f"pair {blocks['pair']}, global e0 [{blocks['offset']}]; widest circuit {s['n_qubits']} qubits",
    ]
    for part in ("monomer", "pair"):
        lines += [f"{part}:"] + ["  " + line for line in _circuit_lines(s[part])]
    _emit(args, s, "\n".join(lines))
    return 0


def cmd_model_audit(args: argparse.Namespace) -> int:
    """Audit a model's symmetries at random parameters; with ``--check``, exit 1 if one is broken."""
    from qff_core.audit import OPERATIONS, audit_model

    model = _model_from_args(args)
    report = audit_model(model, seed=args.seed, n_geometries=args.n_geometries)
    d = report.to_dict()
    lines = [f"symmetry audit of the {model.kind} model of {model.molecule.name} "
             f"({report.n_geometries} random geometries, seed {report.seed}); relative change:"]
    for op in OPERATIONS:
        lines.append(f"  {op:12s} energy {d['energy_rel_error'][op]:.2e}  forces {d['forces_rel_error'][op]:.2e}")
    # What the model promises: rotation, translation, permutation; inversion where guaranteed.
    promised = [*OPERATIONS[:3], *(["inversion"] if report.inversion_guaranteed else [])]
    broken = [op for op in promised if report.max_rel_error[op] >= args.tolerance]
    d["checked"] = {"operations": promised, "tolerance": args.tolerance, "broken": broken}
    if args.check:
        lines.append(f"check ({', '.join(promised)} < {args.tolerance:g}): "
                     + ("passed" if not broken else f"FAILED for {', '.join(broken)}"))
    _emit(args, d, "\n".join(lines))
    return 1 if args.check and broken else 0


def _prefect_defaults() -> None:
    """Environment for Prefect's temporary server, unless the user set it: no telemetry (it locks
    SQLite), and a startup timeout that survives a busy 2-core machine (the default 20 s does not)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    # Dask's own logging config (applied when distributed is imported) would print every
    # scheduler and nanny INFO line; warnings and errors still show.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")


def _run_pipeline(config, args: argparse.Namespace) -> int:
    """Run the pipeline flow for ``config`` and print the comparison (or JSON)."""
    from qff_core.evaluation import summary_table

    out = Path(args.out_dir) if args.out_dir else config.resolved_output_dir()
    out.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("PREFECT_API_URL") and not os.environ.get("PREFECT_HOME"):
        os.environ["PREFECT_HOME"] = str((out / "prefect").resolve())  # the temporary server's database too
    _prefect_defaults()
    log = (lambda *a, **k: None) if args.json else print
    log(f"qff {args.command}: {config.name}, models {', '.join(config.models)}; everything goes under {out}",
        flush=True)
    t0 = time.perf_counter()
    from flows.pipeline import pipeline

    result = pipeline(config.model_dump(), str(out))
    evaluations = {k: result[k] for k in config.models}
    log(f"\n{config.name}: {result['engine']} reference data, {time.perf_counter() - t0:.0f} s in total")
    log(summary_table(evaluations))
    for name, summary in evaluations.items():
        for kind, path in summary.get("plots", {}).items():
            log(f"{name} {kind}: {path}")
    log(f"comparison: {out / 'comparison.md'}; summary: {out / 'summary.json'}")
    if args.json:
        print(json.dumps({**evaluations, "output_dir": str(out)}, indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job: H2O reference data (psi4), invariant and generic models trained, evaluated, compared."""
    from qff_core.pipeline import PipelineConfig

    return _run_pipeline(PipelineConfig(), args)


def cmd_pipeline(args: argparse.Namespace) -> int:
    """The whole chain from one YAML file (sections: name, dataset, models, train, workers, output_dir)."""
    from qff_core.pipeline import PipelineConfig

    values = _config_section(args.config, "pipeline")
    config = _validated(PipelineConfig, values, f"pipeline settings in {args.config}")
    return _run_pipeline(config, args)


_GENERATE_FLAGS = {
    "molecule": dict(help="built-in or .xyz/.yaml file"),
    "engine": dict(help="psi4 or pyscf"),
    "method": dict(help="hf, mp2, or a DFT functional (b3lyp, pbe, ...)"),
    "basis": dict(help="basis set, e.g. 6-31g*"),
    "samples": dict(type=int, help="number of geometries in the dataset"),
    "sampler": dict(choices=["normal_modes", "bond_scan", "rotations"]),
    "temperature_k": dict(type=float, help="normal-mode sampling temperature (K)"),
    "max_distance_change": dict(type=float, help="normal modes: redraw samples that change an interatomic distance "
                                                 "by more than this fraction of the minimum's (default 0.25)"),
    "seed": dict(type=int),
    "chunk_size": dict(type=int, help="samples per Dask task"),
    "max_iterations": dict(type=int, help="SCF iteration limit"),
    "timeout_s": dict(type=float, help="per calculation"),
    "out": dict(help="Zarr dataset path (created, or resumed when it exists)"),
}


def add_cluster_args(p: argparse.ArgumentParser) -> None:
    """``--cluster FILE.yaml`` plus the ``--workers``/``--scheduler`` overrides, for any command
    that fans work out to Dask."""
    p.add_argument("--cluster", type=Path, default=None,
                   help="Dask cluster YAML (kind local|address|slurm|pbs; see deploy/dask/); "
                        "default $QFF_CLUSTER, else 2 local workers")
    p.add_argument("--workers", type=int, default=None,
                   help="local Dask workers, or jobs for slurm/pbs (0: compute in this process)")
    p.add_argument("--scheduler", default=None, help="address of a running Dask scheduler (overrides --cluster)")


def cluster_config_from_args(args: argparse.Namespace) -> ClusterConfig | None:
    """The ClusterConfig of ``add_cluster_args`` flags; None means compute in this process.
    A bad file or a missing ``sbatch``/``qsub`` fails here, before any work."""
    from qff_core.distributed import check_submit_command, load_cluster_config

    if args.workers is not None and args.workers < 0:
        raise InputError(f"--workers must be 0 or more; got {args.workers}")
    config = load_cluster_config(args.cluster, workers=args.workers, scheduler=args.scheduler)
    if config is not None:
        check_submit_command(config)
    return config


def cmd_dataset_generate(args: argparse.Namespace) -> int:
    """Sample geometries and compute reference energies and forces into a Zarr dataset."""
    from qff_core.datagen import GenerateSettings, compute_pending, prepare_dataset

    values: dict = {}
    if args.config is not None:
        loaded = yaml.safe_load(args.config.read_text()) or {}
        values.update(loaded.get("dataset", loaded))
    values.update({k: getattr(args, k) for k in _GENERATE_FLAGS if getattr(args, k) is not None})
    settings = _validated(GenerateSettings, values, "dataset settings")
    log = (lambda *a, **k: None) if args.json else print
    cluster = cluster_config_from_args(args)  # a bad cluster file fails before any work
    t0 = time.perf_counter()
    if not args.no_prefect:
        _prefect_defaults()
        from flows.reference_data import reference_data

        summary = reference_data(settings.model_dump(), workers=0 if cluster is None else None,
                                 cluster=None if cluster is None else cluster.model_dump(),
                                 catalog_dir=str(args.catalog))
    else:
        from qff_core.progress import ProgressReporter
        from qff_core.store.catalog import catalog_record, write_record

        dataset = prepare_dataset(settings)
        log(f"dataset {dataset.path}: {dataset.n_samples} geometries, {len(dataset.todo())} to compute "
            f"({settings.engine} {settings.method}/{settings.basis})")
        progress = ProgressReporter("qff dataset generate")
        if cluster is None:
            summary = compute_pending(dataset, settings, progress=progress)
        else:
            from qff_core.distributed import dask_client

            with dask_client(cluster.for_engine(settings.engine, settings.timeout_s)) as client:
                summary = compute_pending(dataset, settings, client=client, progress=progress)
        summary["path"] = str(dataset.path)
        summary["catalog_record"] = str(write_record(catalog_record(dataset), args.catalog))
    summary["seconds"] = time.perf_counter() - t0
    log(f"done: {summary['n_done']} computed, {summary['n_failed']} failed, {summary['n_pending']} pending "
        f"in {summary['seconds']:.1f} s")
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0 if summary["n_failed"] == 0 else 3


def cmd_dataset_info(args: argparse.Namespace) -> int:
    """Counts, units, provenance and failures of a dataset."""
    from qff_core.store.dataset import Dataset

    info = Dataset.open(args.path).info()
    text = "\n".join([
        f"{info['path']}: {info['molecule']['name']} ({' '.join(info['molecule']['symbols'])}), "
        f"schema {info['schema_version']}",
        f"samples {info['n_samples']}: done {info['n_done']}, failed {info['n_failed']}, pending {info['n_pending']}",
        f"level of theory: {info['level_of_theory']}; engines: {', '.join(info['engine_versions']) or '-'}",
        f"units: {info['units']}",
        *[f"  failed sample {i}: {msg}" for i, msg in info["failures"].items()],
    ])
    _emit(args, info, text)
    return 0


_TRAIN_FLAGS = {
    "dataset": dict(help="Zarr dataset (from `qff dataset generate`)"),
    "molecule": dict(help="molecule spec (built-in or file); default: the dataset's built-in molecule"),
    "steps": dict(type=int, help="Adam steps in total (default 2000)"),
    "batch_size": dict(type=int, help="geometries per minibatch (default 128)"),
    "learning_rate": dict(type=float, help="initial learning rate (default 1e-2)"),
    "final_learning_rate": dict(type=float, help="learning rate at the last step (default 1e-4)"),
    "schedule": dict(choices=["exponential", "cosine", "constant"]),
    "energy_weight": dict(type=float, help="w_E of the loss (default 1)"),
    "force_weight": dict(type=float, help="w_F of the loss (default 10)"),
    "test_size": dict(type=float, help="test samples: a fraction (< 1) or a count (default 0.2)"),
    "val_size": dict(type=float, help="validation samples from the rest: fraction or count (default 0.1)"),
    "n_train": dict(type=int, help="train on the first N of the training split only (learning curves)"),
    "seed": dict(type=int),
    "init": dict(choices=["near_identity", "random"]),
    "eval_every": dict(type=int, help="steps between validations (default 250)"),
    "checkpoint_every": dict(type=int, help="steps between checkpoints (default 250)"),
    "patience": dict(type=int, help="stop after this many validations without improvement"),
}


# flag -> ExecutorSettings field, argparse keywords
_EXECUTOR_FLAGS = {
    "executor": ("name", dict(choices=["exact", "aer", "ibm"], help="where circuits run (default exact)")),
    "shots": ("shots", dict(type=int, help="shots per parameter binding and measured basis "
                                           "(aer: omit for exact expectation values)")),
    "precision": ("precision", dict(type=float, help="ibm: target standard error per expectation value, "
                                                     "instead of --shots (default 1/64)")),
    "shot_seed": ("seed", dict(type=int, help="seed of the shot noise (default: --seed)")),
    "noise_backend": ("noise_backend", dict(help="aer: simulate this fake backend's noise (FakeManilaV2, ...)")),
    "ibm_backend": ("backend", dict(help="ibm: a device of your account (ibm_fez, ...), or aer / FakeManilaV2 ... "
                                         "for qiskit-ibm-runtime's local testing mode")),
    "ibm_instance": ("instance", dict(help="ibm: instance CRN (default $QISKIT_IBM_INSTANCE or the saved account)")),
    "ibm_channel": ("channel", dict(choices=["ibm_quantum_platform", "ibm_cloud"], help="ibm: account channel")),
    "ibm_token_secret": ("token_secret", dict(help="ibm: Prefect Secret block holding the API key "
                                                   "(default $QISKIT_IBM_TOKEN or the saved account)")),
    "resilience_level": ("resilience_level", dict(type=int, choices=[0, 1, 2],
                                                  help="ibm: 0 none (default), 1 measurement mitigation, 2 ZNE")),
}


def _executor_values(args: argparse.Namespace, values: dict, section: str = "train") -> dict:
    """Executor settings: ``executor:`` of the section, the file's top-level ``executor:``, then flags."""
    loaded = _load_config(getattr(args, "config", None))
    merged: dict = {}
    for source in (values.get("executor"), loaded.get("executor") if section in loaded else None):
        merged.update({"name": source} if isinstance(source, str) else dict(source or {}))
    for flag, (name, _) in _EXECUTOR_FLAGS.items():
        if getattr(args, flag, None) is not None:
            merged[name] = getattr(args, flag)
    return merged


def train_config_from_args(args: argparse.Namespace):
    """TrainConfig from ``--config`` (its ``train:`` section, or the whole file; executor settings also
    from a top-level ``executor:`` section) with flags on top."""
    from qff_core.training import TrainConfig

    values = _config_section(args.config, "train")
    values.update({k: getattr(args, k) for k in _TRAIN_FLAGS if getattr(args, k, None) is not None})
    values["executor"] = _executor_values(args, values)
    model = dict(values.get("model") or {})
    model.update({k: getattr(args, k) for k in [*_MODEL_FLAGS, "symmetrize_inversion"]
                  if getattr(args, k, None) is not None})
    values["model"] = model
    if "dataset" not in values:
        raise InputError("say which data to train on: --dataset PATH (or `dataset:` in --config)")
    return _validated(TrainConfig, values, "training settings")


def _qpu_time_model(args: argparse.Namespace):
    """The QPU-time model: defaults, with the config file's ``qpu_time:`` section on top."""
    from qff_core.cost import QpuTimeModel

    values = _load_config(args.config).get("qpu_time") or {}
    return _validated(QpuTimeModel, values, f"qpu_time settings in {args.config}")


def _aer_cluster(args: argparse.Namespace, executor: str) -> ClusterConfig | None:
    """The Dask cluster of aer's fan-out (``--cluster``...); other executors take none."""
    if executor == "aer":
        return cluster_config_from_args(args)
    if args.cluster is not None or args.scheduler or args.workers:
        raise InputError(f"--cluster/--workers/--scheduler fan aer simulations out to Dask; the {executor} executor "
                         "does not use them")
    return None


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model on a dataset; checkpoints into --run-dir; --resume continues."""
    from qff_core.training import format_progress, train

    config = train_config_from_args(args)
    log = (lambda *a, **k: None) if args.json else print
    cluster = _aer_cluster(args, config.executor.name)
    if args.max_qpu_seconds is not None:  # before anything is written
        from qff_core.cost import check_qpu_budget

        cost = check_qpu_budget(config, args.max_qpu_seconds, qpu_time=_qpu_time_model(args),
                                run_dir=args.run_dir if args.resume else None)
        log(f"estimated {cost.qpu_seconds_total:,.1f} QPU s for {cost.steps} steps "
            f"(--max-qpu-seconds {args.max_qpu_seconds:g})")

    def progress(p: dict) -> None:
        log("  " + format_progress(p), flush=True)

    log(f"training {config.model.model} model (D={config.model.depth}) on {config.dataset} with the "
        f"{config.executor.name} executor -> {args.run_dir}")
    if args.no_prefect:
        token = None
        if config.executor.token_secret:
            from flows.credentials import ibm_token

            token = ibm_token(config.executor.token_secret)
        summary = train(args.run_dir, config, resume=args.resume, progress=progress, cluster=cluster,
                        ibm_token=token)
    else:
        _prefect_defaults()
        from flows.training import train_model

        summary = train_model(config.model_dump(), str(args.run_dir), resume=args.resume,
                              segment_steps=args.segment_steps,
                              cluster=None if cluster is None else cluster.model_dump())
    log(f"{summary['stop_reason']} at step {summary['step']}; best validation at step {summary['best_step']} "
        f"({summary['wall_time_s']:.1f} s)")
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0


def cmd_cost(args: argparse.Namespace) -> int:
    """Circuits, parameter bindings, shots and QPU seconds a training or evaluation configuration would use
    (nothing runs): an ``evaluate:`` section prices ``qff evaluate``, else the ``train:`` settings are priced."""
    from qff_core.cost import evaluation_cost, training_cost

    if "evaluate" in _load_config(args.config):
        ev = evaluate_config_from_args(args)
        cost = evaluation_cost(ev, qpu_time=_qpu_time_model(args))
        _emit(args, cost.to_dict(), f"evaluating {ev.run_dir} ({', '.join(ev.sets)}) with the {cost.describe()}")
        return 0
    config = train_config_from_args(args)
    cost = training_cost(config, qpu_time=_qpu_time_model(args))
    _emit(args, cost.to_dict(), f"training {config.model.model} model (D={config.model.depth}) with the "
                                f"{cost.describe()}")
    return 0


def evaluate_config_from_args(args: argparse.Namespace):
    """EvaluateConfig from ``--config`` (its ``evaluate:`` section; executor settings also from a top-level
    ``executor:``) with flags on top."""
    from qff_core.evaluation import EvaluateConfig

    loaded = _load_config(args.config)
    values = dict(loaded.get("evaluate") or {})
    for flag in ("run_dir", "seed", "max_test", "sets"):
        if getattr(args, flag, None) is not None:
            value = getattr(args, flag)
            values[flag] = str(value) if flag == "run_dir" else value
    values["executor"] = _executor_values(args, values, section="evaluate")
    if "run_dir" not in values:
        raise InputError("say which run to evaluate: qff evaluate RUN_DIR (or run_dir: in the evaluate: section)")
    return _validated(EvaluateConfig, values, "evaluation settings")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Test-set errors of a trained run (and on transformed copies), baselines, plots; on any executor."""
    from qff_core.evaluation import evaluate_run, summary_table

    config = evaluate_config_from_args(args)
    cluster = _aer_cluster(args, config.executor.name)
    if args.max_qpu_seconds is not None:  # before anything is submitted
        from qff_core.cost import check_evaluation_budget

        check_evaluation_budget(config, args.max_qpu_seconds, qpu_time=_qpu_time_model(args))
    options = dict(seed=config.seed, plots=not args.no_plots, krr=args.krr, sets=config.sets,
                   max_test=config.max_test)
    if args.no_prefect:
        token = None
        if config.executor.token_secret:
            from flows.credentials import ibm_token

            token = ibm_token(config.executor.token_secret)
        summary = evaluate_run(config.run_dir, executor=config.executor, cluster=cluster, ibm_token=token, **options)
    else:
        _prefect_defaults()
        from flows.training import evaluate_model

        summary = evaluate_model(config.run_dir, executor=config.executor.model_dump(),
                                 cluster=None if cluster is None else cluster.model_dump(), **options)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    run = summary["run"]
    print(f"{run['run_dir']}: {run['model']} model of {run['molecule']}, {run['n_parameters']} parameters, "
          f"best step {run['best_step']}, {run['split']['test']} test geometries")
    print(summary_table({run["model"]: summary}))
    if "deviation_from_exact" in summary:
        d = summary["deviation_from_exact"]
        print(f"{summary['executor']['name']} executor against the exact simulator: energy MAE "
              f"{d['energy_mae_kcal_mol']:.2e} kcal/mol, force MAE {d['forces_mae_kcal_mol_a']:.2e} kcal/mol/A")
    if "krr_inverse_distances" in summary["baselines"]:
        k = summary["baselines"]["krr_inverse_distances"]
        print(f"KRR on inverse distances (classical baseline): test energy MAE {k['test']['energy_mae_kcal_mol']:.4f} "
              f"kcal/mol, rotated force MAE {k['rotated']['forces_mae_kcal_mol_a']:.4f} kcal/mol/A")
    if "audit" in summary:
        print("symmetry audit (relative change): " + ", ".join(f"{k} {v:.1e}" for k, v in summary["audit"].items()))
    for name, path in summary.get("plots", {}).items():
        print(f"{name}: {path}")
    return 0


def _add_executor_args(parser: argparse.ArgumentParser, title: str, budget_help: str) -> None:
    group = parser.add_argument_group(title)
    for name, (_, kw) in _EXECUTOR_FLAGS.items():
        group.add_argument("--" + name.replace("_", "-"), dest=name, default=None, **kw)
    group.add_argument("--max-qpu-seconds", type=float, default=None, help=budget_help)
    add_cluster_args(group)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``qff``."""
    parser = argparse.ArgumentParser(prog="qff", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    model = sub.add_parser("model", help="inspect and audit models").add_subparsers(dest="action", required=True)
    show = model.add_parser("show", help="qubits, parameters and gates of a model")
    _add_model_args(show)
    show.set_defaults(func=cmd_model_show)
    audit = model.add_parser("audit", help="symmetry audit at random parameters")
    _add_model_args(audit)
    audit.add_argument("--seed", type=int, default=0)
    audit.add_argument("--n-geometries", type=int, default=8)
    audit.add_argument("--check", action="store_true",
                       help="exit 1 when a symmetry the model promises is broken beyond --tolerance")
    audit.add_argument("--tolerance", type=float, default=1e-10, help="relative tolerance of --check")
    audit.set_defaults(func=cmd_model_audit)

    dataset = sub.add_parser("dataset", help="reference datasets").add_subparsers(dest="action", required=True)
    gen = dataset.add_parser("generate", help="sample geometries and compute reference data (resumable)")
    gen.add_argument("--config", type=Path, help="YAML file with dataset settings; flags override it")
    for name, kw in _GENERATE_FLAGS.items():
        gen.add_argument("--" + name.replace("_", "-"), dest=name, default=None, **kw)
    gen.add_argument("--temperature", dest="temperature_k", type=float, default=None, help=argparse.SUPPRESS)
    add_cluster_args(gen)
    gen.add_argument("--catalog", type=Path, default=Path("data_catalog"), help="catalog directory for the record")
    gen.add_argument("--no-prefect", action="store_true", help="run the plain functions instead of the Prefect flow")
    gen.add_argument("--json", action="store_true")
    gen.set_defaults(func=cmd_dataset_generate)
    info = dataset.add_parser("info", help="what a dataset holds")
    info.add_argument("path", type=Path)
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_dataset_info)

    tr = sub.add_parser("train", help="train a model on a dataset (checkpointed, resumable)")
    tr.add_argument("--config", type=Path, help="YAML file with training settings; flags override it")
    for name, kw in _TRAIN_FLAGS.items():
        tr.add_argument("--" + name.replace("_", "-"), dest=name, default=None, **kw)
    for name, kw in _MODEL_FLAGS.items():
        tr.add_argument("--" + name.replace("_", "-"), dest=name, default=None, **kw)
    tr.add_argument("--symmetrize-inversion", action="store_true", default=None)
    _add_executor_args(tr, "quantum executors (also under executor: in --config)",
                       "refuse to start when the estimated QPU time of the steps to run exceeds this")
    tr.add_argument("--run-dir", type=Path, required=True, help="where the run's split and checkpoints go")
    tr.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
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
    ev = sub.add_parser("evaluate", help="test errors, symmetry checks, plots of a trained run")
    ev.add_argument("run_dir", type=Path, nargs="?", help="the run (or run_dir: in the evaluate: section of --config)")
    ev.add_argument("--config", type=Path, help="YAML with an evaluate: section (run_dir, sets, max_test, seed, "
                                                "executor); flags override it")
    ev.add_argument("--seed", type=int, default=None, help="seed of the random symmetry operations (default 0)")
    ev.add_argument("--sets", nargs="+", choices=["test", *TRANSFORM_NAMES], default=None,
                    help="sets to score (default: test and all four transformed copies)")
    ev.add_argument("--max-test", type=int, default=None,
                    help="score the first N test geometries only (each costs circuits on a quantum executor)")
    _add_executor_args(ev, "quantum executors (also under executor: in --config); ibm runs in a Batch",
                       "refuse to submit when the estimated QPU time exceeds this")
    ev.add_argument("--no-plots", action="store_true")
    ev.add_argument("--krr", action="store_true", help="also fit and score a kernel ridge regression baseline")
    ev.add_argument("--no-prefect", action="store_true", help="run the plain function instead of the Prefect flow")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=cmd_evaluate)

    demo = sub.add_parser("demo", help="the main job: the H2O pipeline on embedded defaults")
    demo.add_argument("--out-dir", help="output folder (default runs/h2o-<timestamp>)")
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(func=cmd_demo)
    pipe = sub.add_parser("pipeline", help="reference data, training and evaluation from one YAML file")
    pipe.add_argument("--config", type=Path, required=True)
    pipe.add_argument("--out-dir", help="output folder (default: the file's output_dir, else runs/<name>-<time>)")
    pipe.add_argument("--json", action="store_true")
    pipe.set_defaults(func=cmd_pipeline)
    return parser


JAX_CACHE_ENV = "QFF_JAX_CACHE_DIR"
DEFAULT_JAX_CACHE = "~/.cache/qff/jax"


def _setup_compilation_cache() -> None:
    """Persistent XLA cache for the command line: ``QFF_JAX_CACHE_DIR`` (``off`` disables it)."""
    location = os.environ.get(JAX_CACHE_ENV, DEFAULT_JAX_CACHE)
    if location.lower() in ("", "off", "0", "false", "no"):
        return
    from qff_core.execution.exact import enable_compilation_cache

    try:
        enable_compilation_cache(location)
    except OSError as exc:  # a read-only home must not stop the job
        print(f"qff: warning: compilation cache disabled ({location}: {exc.strerror})", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``qff``; returns the exit status."""
    args = build_parser().parse_args(argv)
    _setup_compilation_cache()
    try:
        return args.func(args)
    except QffError as exc:
        print(f"qff: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
