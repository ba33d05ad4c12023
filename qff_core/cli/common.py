"""What every ``qff`` subcommand shares: flags made from the pydantic configs, config files, output.

Flags are generated from the config classes' fields (``add_config_flags``): the help text is
the field's description and its default is read from the field, so a default is written once,
in the config. A flag left out is ``None`` and does not override the ``--config`` file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from qff_core.errors import InputError

JAX_CACHE_ENV = "QFF_JAX_CACHE_DIR"
DEFAULT_JAX_CACHE = "~/.cache/qff/jax"


def _scalar_type(annotation: Any) -> tuple[Any, tuple | None]:
    """(argparse type, choices) of a field annotation; (None, None) when it is no flag's business."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _scalar_type(args[0]) if len(args) == 1 else (None, None)
    if origin is Literal:
        choices = typing.get_args(annotation)
        return type(choices[0]), choices
    if annotation in (int, float, str, bool):
        return annotation, None
    return None, None


def _default_text(field) -> str:
    if field.is_required():
        return ""
    default = field.get_default(call_default_factory=True)
    if default is None or isinstance(default, BaseModel) or default == ():
        return ""
    return f" (default {default})"


def add_config_flags(parser: argparse.ArgumentParser | Any, config: type[BaseModel], *,
                     only: Iterable[str] | None = None, skip: Iterable[str] = (),
                     rename: Mapping[str, str] | None = None, help: Mapping[str, str] | None = None,
                     choices: Mapping[str, Iterable] | None = None) -> None:
    """One flag per scalar field of ``config`` (``--field-name``, or ``--<rename[field]>``), with the field's
    description and default as help. Every flag defaults to None: given flags override the config file."""
    rename, help, extra_choices = dict(rename or {}), dict(help or {}), dict(choices or {})
    wanted = set(only) if only is not None else None
    for name, field in config.model_fields.items():
        if name in skip or (wanted is not None and name not in wanted):
            continue
        kind, allowed = _scalar_type(field.annotation)
        if kind is None:
            continue
        allowed = tuple(extra_choices.get(name, ())) or allowed
        flag = "--" + rename.get(name, name).replace("_", "-")
        text = (help.get(name) or field.description or "") + _default_text(field)
        if kind is bool:
            parser.add_argument(flag, dest=rename.get(name, name), action="store_true", default=None, help=text)
        else:
            parser.add_argument(flag, dest=rename.get(name, name), type=kind, choices=allowed, default=None,
                                help=text)


def given_values(args: argparse.Namespace, config: type[BaseModel], *,
                 rename: Mapping[str, str] | None = None) -> dict:
    """The scalar fields of ``config`` whose flags were given, by field name (nested configs have flags of their
    own, which may share a name: ``--model`` is ModelConfig.model, not TrainConfig.model)."""
    rename = dict(rename or {})
    out = {}
    for name, field in config.model_fields.items():
        if _scalar_type(field.annotation)[0] is None:
            continue
        value = getattr(args, rename.get(name, name), None)
        if value is not None:
            out[name] = value
    return out


def problem_lines(exc, name: str, prefix: tuple = ()) -> list[str]:
    """One line per problem of a pydantic ValidationError: where (``prefix`` first), what is wrong, what was given
    (not pydantic's URLs)."""
    out = []
    for e in exc.errors():
        loc, msg = ".".join(map(str, (*prefix, *e["loc"]))), e["msg"].removeprefix("Value error, ")
        out.append(f"  {loc or name}: {msg} (given: {e['input']!r})" if loc else f"  {msg}")
    return out


def validated(cls: type[BaseModel], values: dict, what: str):
    """``cls.model_validate(values)``, a validation error turned into an InputError naming ``what``."""
    from pydantic import ValidationError

    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        raise InputError(f"invalid {what}:\n" + "\n".join(problem_lines(exc, cls.__name__))) from None
    except ValueError as exc:
        raise InputError(f"invalid {what}:\n{exc}") from exc


def load_config(path: Path | None) -> dict:
    """A YAML config file as a mapping; {} without a file."""
    from qff_core.yamlfile import load_mapping

    return {} if path is None else load_mapping(path, "config file")


def config_section(path: Path | None, section: str) -> dict:
    """The ``section:`` of a YAML config file (or the whole file when it has no such key); {} without a file."""
    loaded = load_config(path)
    value = loaded.get(section, loaded)
    if not isinstance(value, dict):
        raise InputError(f"the {section}: section of {path} must be a mapping of settings, not {value!r}")
    return dict(value)


def emit(args: argparse.Namespace, payload: dict, text: str) -> None:
    """Print ``text`` for people, or the JSON document with ``--json``."""
    print(json.dumps(payload, indent=2) if args.json else text)


def logger(args: argparse.Namespace):
    """``print`` for people; nothing with ``--json`` (stdout then holds the JSON document alone)."""
    return (lambda *a, **k: None) if getattr(args, "json", False) else print


def setup_compilation_cache() -> None:
    """Persistent XLA cache for the command line: ``QFF_JAX_CACHE_DIR`` (``off`` disables it)."""
    location = os.environ.get(JAX_CACHE_ENV, DEFAULT_JAX_CACHE)
    if location.lower() in ("", "off", "0", "false", "no"):
        return
    from qff_core.execution.exact import enable_compilation_cache

    try:
        enable_compilation_cache(location)
    except OSError as exc:  # a read-only home must not stop the job
        print(f"qff: warning: compilation cache disabled ({location}: {exc.strerror})", file=sys.stderr)


# ----------------------------------------------------------------------------- Dask clusters


def add_cluster_args(p: argparse.ArgumentParser | Any) -> None:
    """``--cluster FILE.yaml`` plus the ``--workers``/``--scheduler`` overrides, for any command that fans work
    out to Dask."""
    p.add_argument("--cluster", type=Path, default=None,
                   help="Dask cluster YAML (kind local|address|slurm|pbs; see deploy/dask/); "
                        "default $QFF_CLUSTER, else 2 local workers")
    p.add_argument("--workers", type=int, default=None,
                   help="local Dask workers, or jobs for slurm/pbs (0: compute in this process)")
    p.add_argument("--scheduler", default=None, help="address of a running Dask scheduler (overrides --cluster)")


def cluster_given(args: argparse.Namespace) -> bool:
    """Whether a cluster was asked for (``--workers 0`` asks for none: it computes in this process)."""
    return args.cluster is not None or bool(args.scheduler) or bool(args.workers)


def cluster_config_from_args(args: argparse.Namespace):
    """The ClusterConfig of ``add_cluster_args`` flags; None means compute in this process.
    A bad file or a missing ``sbatch``/``qsub`` fails here, before any work."""
    from qff_core.distributed import check_submit_command, load_cluster_config

    if args.workers is not None and args.workers < 0:
        raise InputError(f"--workers must be 0 or more; got {args.workers}")
    config = load_cluster_config(args.cluster, workers=args.workers, scheduler=args.scheduler)
    if config is not None:
        check_submit_command(config)
    return config


# ----------------------------------------------------------------------------- executors

EXECUTOR_FLAGS = {"name": "executor", "seed": "shot_seed", "backend": "ibm_backend", "instance": "ibm_instance",
                  "channel": "ibm_channel", "token_secret": "ibm_token_secret", "noise_backend": "noise"}
"""ExecutorConfig field -> flag name, where they differ."""


def add_executor_args(parser: argparse.ArgumentParser, title: str) -> Any:
    """The executor flags (from ExecutorConfig) and the cluster flags, in one group (returned)."""
    from qff_core.execution import ExecutorConfig, executor_names

    group = parser.add_argument_group(title)
    add_config_flags(group, ExecutorConfig, rename=EXECUTOR_FLAGS,
                     only=("name", "shots", "precision", "seed", "noise_backend", "backend", "instance", "channel",
                           "token_secret", "resilience_level", "optimization_level"),
                     help={"name": "where circuits run", "seed": "seed of the shot noise (default: --seed)",
                           "noise_backend": "aer: simulate this device's noise: a fake backend (fake_torino, fake_fez, "
                                            "fake_sherbrooke, FakeManilaV2...) or a NoiseModel JSON file"},
                     choices={"name": executor_names()})
    group.add_argument("--noise-backend", dest="noise", default=None, help=argparse.SUPPRESS)  # the older name
    group.add_argument("--mitigation", default=None, metavar="YAML",
                       help="ibm: EstimatorOptions groups, inline YAML/JSON, e.g. '{resilience: {zne_mitigation: "
                            "true}, twirling: {num_randomizations: 16}}' (validated before anything runs)")
    add_cluster_args(group)
    return group


def executor_values(args: argparse.Namespace, section_values: dict, loaded: dict, *, top_level: bool) -> dict:
    """Executor settings: ``executor:`` of the section, the file's top-level ``executor:`` (when ``top_level``),
    its ``qpu_time:``, then flags."""
    from qff_core.execution import ExecutorConfig

    merged: dict = {}
    for source in (section_values.get("executor"), loaded.get("executor") if top_level else None):
        merged.update({"name": source} if isinstance(source, str) else dict(source or {}))
    if loaded.get("qpu_time") is not None:
        if merged.get("qpu_time") is not None and merged["qpu_time"] != loaded["qpu_time"]:
            raise InputError("the config gives qpu_time: twice, at the top level and under executor:, differently; "
                             "keep one")
        merged["qpu_time"] = loaded["qpu_time"]
    merged.update(given_values(args, ExecutorConfig, rename=EXECUTOR_FLAGS))
    if getattr(args, "mitigation", None):
        import yaml

        try:
            mitigation = yaml.safe_load(args.mitigation)
        except yaml.YAMLError as exc:
            raise InputError(f"--mitigation is not YAML/JSON: {exc}") from None
        if not isinstance(mitigation, dict):
            raise InputError(f"--mitigation must be a mapping of EstimatorOptions groups, not {mitigation!r}")
        glued = _glued_keys(mitigation)
        if glued:  # YAML reads {a:1} as the key "a:1" with no value
            raise InputError(f"--mitigation: {', '.join(map(repr, glued))} read as a key without a value; YAML needs "
                             "a space after the colon: {twirling: {num_randomizations: 4}}")
        merged["mitigation"] = mitigation
    return merged


def _glued_keys(mapping: dict) -> list[str]:
    """Keys like ``"num_randomizations:4"`` holding None, at any depth: ``key:value`` written without a space."""
    out = []
    for k, v in mapping.items():
        if isinstance(k, str) and ":" in k and v is None:
            out.append(k)
        elif isinstance(v, dict):
            out.extend(_glued_keys(v))
    return out


def executor_cluster(args: argparse.Namespace, executor) -> Any:
    """The Dask cluster of an executor that fans out on one (``--cluster``...); others take none."""
    if executor.spec.uses_dask:
        return cluster_config_from_args(args)
    if cluster_given(args):
        executor.spec.refuse_cluster()
    return None


def token(executor) -> str | None:
    """The API key from the executor's Prefect Secret block (``token_secret``), for plain-function runs."""
    if not executor.token_secret:
        return None
    from flows.credentials import token_for

    return token_for(executor)


__all__ = ["add_cluster_args", "add_config_flags", "add_executor_args", "cluster_config_from_args", "config_section",
           "emit", "executor_cluster", "executor_values", "given_values", "load_config", "logger",
           "setup_compilation_cache", "token", "validated"]
