"""``qff serve``: every deployment of ``deploy/prefect.yaml`` served from this process (Prefect's ``serve``),
the no-worker alternative for one machine: same flows, names, parameters and schedules, no work pool."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

import yaml

from qff_core.cli.common import logger, problem_lines
from qff_core.errors import InputError

DEFAULT_PREFECT_FILE = Path(__file__).resolve().parents[2] / "deploy" / "prefect.yaml"


def served_deployments(prefect_file: Path, only: list[str] | None = None) -> list:
    """RunnerDeployments for the deployments a prefect.yaml declares (entrypoints relative to its repository)."""
    from prefect.flows import load_flow_from_entrypoint
    from prefect.schedules import Cron, Interval

    try:
        spec = yaml.safe_load(Path(prefect_file).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read the deployment file {prefect_file}: {exc}") from None
    declared = spec.get("deployments") if isinstance(spec, dict) else None
    if not declared or not isinstance(declared, list):
        raise InputError(f"{prefect_file} declares no deployments (a 'deployments:' list, as deploy/prefect.yaml)")
    # Entrypoints are relative to the repository holding the file; a copy edited elsewhere uses qff's own flows.
    roots = [Path(prefect_file).resolve().parents[1], DEFAULT_PREFECT_FILE.parents[1]]
    out = []
    for k, d in enumerate(declared):
        if not isinstance(d, dict) or not d.get("name") or not d.get("entrypoint"):
            raise InputError(f"deployment {k + 1} of {prefect_file} needs a name and an entrypoint "
                             "(flows/FILE.py:FLOW)")
        if only and d["name"] not in only:
            continue
        where = f"deployment {d['name']!r} of {prefect_file}"
        path, _, flow_name = str(d["entrypoint"]).partition(":")
        root = next((r for r in roots if (r / path).is_file()), None)
        if root is None or not flow_name:
            raise InputError(f"{where}: entrypoint {d['entrypoint']!r} is no flows/FILE.py:FLOW found beside the file "
                             f"or in qff ({roots[-1]})")
        flow = load_flow_from_entrypoint(str(root / d["entrypoint"]))
        try:
            schedules = []
            for s in d.get("schedules") or []:
                if "cron" in s:
                    schedules.append(Cron(s["cron"], timezone=s.get("timezone"), active=s.get("active", True)))
                elif "interval" in s:
                    schedules.append(Interval(s["interval"], active=s.get("active", True)))
        except (ValueError, TypeError, KeyError) as exc:
            raise InputError(f"{where}: a schedule is not valid ({exc})") from None
        check_parameters(flow, d.get("parameters"), where)
        out.append(flow.to_deployment(name=d["name"], parameters=d.get("parameters"), description=d.get("description"),
                                      schedules=schedules or None))
    if only and len(out) != len(set(only)):
        known = ", ".join(d["name"] for d in declared)
        raise InputError(f"--only names deployments that {prefect_file} does not declare (it has {known})")
    return out


def check_parameters(flow, parameters: object, where: str) -> None:
    """InputError, one line per problem, for deployment parameters the flow would refuse: a name it does not take,
    a value its type (a qff config) does not accept. Parameters left out may come with each run."""
    import typing

    from pydantic import TypeAdapter, ValidationError

    if parameters is None:
        return
    if not isinstance(parameters, dict):
        raise InputError(f"{where}: parameters must be a mapping of parameter names to values")
    hints = typing.get_type_hints(flow.fn)
    accepted = [name for name in inspect.signature(flow.fn).parameters]
    problems = [f"  {name}: not a parameter of the flow (it takes {', '.join(accepted)})"
                for name in parameters if name not in accepted]
    for name, value in parameters.items():
        if name not in accepted or name not in hints:
            continue
        try:
            TypeAdapter(hints[name]).validate_python(value)
        except ValidationError as exc:
            problems.extend(problem_lines(exc, name, prefix=(name,)))
    if problems:
        raise InputError(f"{where}: invalid parameters:\n" + "\n".join(problems))


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the deployments until interrupted (Ctrl-C)."""
    from qff_core.cli.prefect_api import prefect_api

    log = logger(args)
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit {args.limit}: flow runs at once must be at least 1")
    served_deployments(args.prefect_file, args.only)  # a bad file fails before a server starts
    with prefect_api() as url:
        import prefect

        deployments = served_deployments(args.prefect_file, args.only)
        log(f"serving {', '.join(d.name for d in deployments)} against {url}; run one with "
            f"PREFECT_API_URL={url} prefect deployment run 'FLOW/DEPLOYMENT' --params '{{...}}'", flush=True)
        prefect.serve(*deployments, print_starting_message=False, limit=args.limit)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """``qff serve``."""
    p = sub.add_parser("serve", help="serve qff's deployments from this process (no work pool or worker)")
    p.add_argument("--prefect-file", type=Path, default=DEFAULT_PREFECT_FILE,
                   help="the deployments to serve (default deploy/prefect.yaml)")
    p.add_argument("--only", nargs="+", default=None, help="serve only these deployment names")
    p.add_argument("--limit", type=int, default=None, help="flow runs at once (default: no limit)")
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_serve)
