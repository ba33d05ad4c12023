"""``qff model show``, ``qff model audit`` and ``qff model gradient-variance``: what a model is made of, whether
it keeps its symmetries, and whether its gradients vanish with depth (barren plateaus)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from qff_core.cli.common import add_config_flags, config_section, emit, given_values, logger, validated
from qff_core.models import AnyModel, ModelConfig, build_model
from qff_core.molecules import BUILTIN_NAMES, load_molecule


def add_model_flags(p: argparse.ArgumentParser, skip: tuple[str, ...] = (),
                    choices: dict[str, tuple] | None = None) -> None:
    """The ModelConfig flags (``--model``, ``--depth``...), but those in ``skip``; ``choices`` narrows some."""
    add_config_flags(p, ModelConfig, skip=skip, choices=choices)


def model_config_from_args(args: argparse.Namespace, base: dict | None = None) -> ModelConfig:
    """ModelConfig from ``base`` (a config file's ``model:`` section) with explicitly given flags on top."""
    return validated(ModelConfig, {**(base or {}), **given_values(args, ModelConfig)}, "model settings")


def _model_from_args(args: argparse.Namespace) -> AnyModel:
    config = model_config_from_args(args, config_section(args.config, "model"))
    return build_model(load_molecule(args.molecule), config)


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


def _transpiled(model: AnyModel, backend_name: str, level: int, exchange: str) -> tuple[dict, str]:
    """The ``transpiled:`` summary of ``model`` on a (fake) backend, and its line for people."""
    from qff_core.errors import InputError
    from qff_core.execution.qiskit.aer import fake_backend
    from qff_core.execution.qiskit.compiler import compile_qiskit
    from qff_core.execution.qiskit.report import transpile_report
    from qff_core.models.fragment import FragmentModel

    if isinstance(model, FragmentModel):
        raise InputError("a fragment model has no single circuit to transpile (it runs on the exact executor)")
    backend = fake_backend(backend_name)
    if model.n_qubits > backend.num_qubits:
        raise InputError(f"the model needs {model.n_qubits} qubits; {backend_name} has {backend.num_qubits}")
    t = transpile_report(compile_qiskit(model, exchange=exchange), backend, optimization_level=level)
    return t, (f"on {t['backend']} (optimization level {level}): {t['two_qubit_gates']} two-qubit gates, depth "
               f"{t['depth']} (two-qubit depth {t['two_qubit_depth']}), physical qubits {t['layout']}, estimated "
               f"fidelity {t['estimated_fidelity']:.3f}")


def cmd_show(args: argparse.Namespace) -> int:
    """Print qubits, parameter counts and gates per layer of a model (of each sub-model of a fragment model);
    with ``--backend``, what its circuit becomes on that device."""
    from qff_core.errors import InputError

    if args.backend is not None and not args.backend.strip():
        raise InputError("--backend is empty; give a device or fake backend, e.g. fake_torino")
    if args.optimization_level is not None and args.backend is None:
        raise InputError("--optimization-level sets the transpilation for --backend; give a backend too")
    level = 1 if args.optimization_level is None else args.optimization_level
    model = _model_from_args(args)
    s = model.summary()
    if s["model"] != "fragment":
        lines = _circuit_lines(s)
        if args.backend:
            s["transpiled"], line = _transpiled(model, args.backend, level, args.exchange)
            lines.append(line)
        emit(args, s, "\n".join(lines))
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
    emit(args, s, "\n".join(lines))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Audit a model's symmetries at random parameters; with ``--check``, exit 1 if one is broken."""
    from qff_core.audit import OPERATIONS, audit_model
    from qff_core.errors import InputError

    if args.n_geometries < 1:
        raise InputError(f"--n-geometries must be at least 1; got {args.n_geometries}")
    if not (math.isfinite(args.tolerance) and args.tolerance > 0):
        raise InputError(f"--tolerance must be a positive finite number (a relative change, e.g. 1e-10); got "
                         f"{args.tolerance}")
    model = _model_from_args(args)
    report = audit_model(model, seed=args.seed, n_geometries=args.n_geometries)
    d = report.to_dict()
    lines = [f"symmetry audit of the {model.kind} model of {model.molecule.name} "
             f"({report.n_geometries} random geometries, seed {report.seed}); relative change:"]
    for op in OPERATIONS:
        lines.append(f"  {op:12s} energy {d['energy_rel_error'][op]:.2e}  forces {d['forces_rel_error'][op]:.2e}")
    # What an invariant model promises: rotation, translation, permutation; inversion where guaranteed (the
    # generic baseline, which promises none of them, fails the check: that is what it is there to show).
    promised = [*OPERATIONS[:3], *(["inversion"] if report.inversion_guaranteed else [])]
    broken = [op for op in promised if report.max_rel_error[op] >= args.tolerance]
    d["checked"] = {"operations": promised, "tolerance": args.tolerance, "broken": broken}
    if args.check:
        lines.append(f"check ({', '.join(promised)} < {args.tolerance:g}): "
                     + ("passed" if not broken else f"FAILED for {', '.join(broken)}"))
    emit(args, d, "\n".join(lines))
    return 1 if args.check and broken else 0


def cmd_gradient_variance(args: argparse.Namespace) -> int:
    """Variance over random initialisations of the cost gradient, per depth (the barren-plateau statistic)."""
    from qff_core.errors import InputError
    from qff_core.gradient_variance import (
        GradientVarianceConfig,
        gradient_variance,
        parse_depth_list,
        parse_depths,
        plot_variance,
    )

    if args.depths and args.depth_step != 1:
        raise InputError("--depth-step steps through --depth-range; with --depths, list every depth")
    depths = parse_depth_list(args.depths) if args.depths else parse_depths(args.depth_range, args.depth_step)
    config = GradientVarianceConfig(depths=depths, samples=args.samples, geometries=args.geometries, seed=args.seed,
                                    cost=args.loss, rotate=args.rotate_geometries)
    model_config = model_config_from_args(args, config_section(args.config, "model"))
    molecule = load_molecule(args.molecule)
    log = logger(args)
    header = "depth qubits params  Var[dC/dθ]  first layer  last layer  mean |grad|  seconds"
    frame = "randomly oriented" if config.rotate else "reference-frame"
    log(f"gradient variance of the {model_config.model} model of {molecule.name}: {config.samples} random "
        f"initialisations, {config.geometries} {frame} geometries, cost {config.cost}, seed {config.seed}\n{header}")

    def line(d) -> str:
        return (f"{d.depth:5d} {d.n_qubits:6d} {d.n_circuit_parameters:6d}  {d.variance:10.3e}  "
                f"{d.variance_first_layer:11.3e}  {d.variance_last_layer:10.3e}  {d.mean_abs_gradient:11.3e}  "
                f"{d.seconds:7.1f}")

    report = gradient_variance(molecule, model_config, config, progress=lambda d: log(line(d), flush=True))
    if args.plot:
        label = f"{report.model} {report.molecule} ({report.depths[0].n_qubits} qubits)"
        path = plot_variance([(label, depths, [d.variance for d in report.depths])], args.plot)
        log(f"plot: {path}")
    if args.json:
        emit(args, report.to_dict(), "")
    return 0


def _common(p: argparse.ArgumentParser, skip: tuple[str, ...] = (), choices: dict[str, tuple] | None = None) -> None:
    p.add_argument("--molecule", default="h2o",
                   help=f"built-in ({', '.join(BUILTIN_NAMES)}) or an .xyz/.yaml file (default h2o)")
    p.add_argument("--config", type=Path, help="YAML file with model settings; flags override it")
    add_model_flags(p, skip=skip, choices=choices)
    p.add_argument("--json", action="store_true", help="print one JSON document")


def register(sub: argparse._SubParsersAction) -> None:
    """``qff model show|audit|gradient-variance``."""
    model = sub.add_parser("model", help="inspect and audit models").add_subparsers(dest="action", required=True)
    show = model.add_parser("show", help="qubits, parameters and gates of a model")
    _common(show)
    show.add_argument("--backend", default=None, help="also transpile for this fake backend (fake_torino, fake_fez, "
                                                      "fake_sherbrooke, FakeManilaV2...): gate counts, depth, layout, "
                                                      "estimated fidelity")
    show.add_argument("--optimization-level", type=int, choices=(0, 1, 2, 3), default=None,
                      help="transpiler optimization level (default 1)")
    show.add_argument("--exchange", choices=("cx3", "rotations"), default="cx3",
                      help="exchange units as three CNOTs (default) or RXX RYY RZZ")
    show.set_defaults(func=cmd_show)
    audit = model.add_parser("audit", help="symmetry audit at random parameters")
    _common(audit)
    audit.add_argument("--seed", type=int, default=0)
    audit.add_argument("--n-geometries", type=int, default=8)
    audit.add_argument("--check", action="store_true",
                       help="exit 1 when rotation, translation, permutation (and inversion where guaranteed: "
                            "the symmetries of an invariant model) change energy or forces beyond --tolerance; the "
                            "generic baseline fails it")
    audit.add_argument("--tolerance", type=float, default=1e-10, help="relative tolerance of --check")
    audit.set_defaults(func=cmd_audit)
    gv = model.add_parser("gradient-variance", help="variance of the cost gradient over random initialisations, "
                                                    "per depth (barren plateaus)")
    _common(gv, skip=("depth", "pair_depth", "pair_rep"), choices={"model": ("invariant", "generic")})
    depth = gv.add_mutually_exclusive_group()
    depth.add_argument("--depth-range", default="1:8", help="depths A:B, both included (default 1:8)")
    depth.add_argument("--depths", default=None, help="a list of depths instead, e.g. 1,2,4,8,16,32")
    gv.add_argument("--depth-step", type=int, default=1, help="step through --depth-range (default 1)")
    gv.add_argument("--samples", type=int, default=100, help="random initialisations per depth, >= 2 (default 100)")
    gv.add_argument("--geometries", type=int, default=8,
                    help="fixed random geometries the cost averages over (default 8)")
    gv.add_argument("--seed", type=int, default=0, help="seed of the geometries and initialisations (default 0)")
    gv.add_argument("--rotate-geometries", action="store_true",
                    help="orient each geometry at random (the generic model then averages over orientations, "
                         "which lowers its variance); default: all in the reference frame, like training data")
    gv.add_argument("--loss", choices=("expectation", "energy"), default="expectation",
                    help="cost: <O> averaged over the geometries (default), or the energy loss against a random "
                         "teacher model's energies")
    gv.add_argument("--plot", type=Path, default=None, help="also draw variance against depth (log scale) to this PNG")
    gv.set_defaults(func=cmd_gradient_variance)
