"""``qff serve``: every deployment of ``deploy/prefect.yaml`` served from this process (Prefect's ``serve``),
the no-worker alternative for one machine: same flows, names, parameters and schedules, no work pool."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from qff_core.cli.common import logger
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
    root = Path(prefect_file).resolve().parents[1]
    out = []
    for d in spec.get("deployments", []):
        if only and d["name"] not in only:
            continue
        flow = load_flow_from_entrypoint(str(root / d["entrypoint"]))
        schedules = []
        for s in d.get("schedules") or []:
            if "cron" in s:
                schedules.append(Cron(s["cron"], timezone=s.get("timezone"), active=s.get("active", True)))
            elif "interval" in s:
                schedules.append(Interval(s["interval"], active=s.get("active", True)))
        out.append(flow.to_deployment(name=d["name"], parameters=d.get("parameters"), description=d.get("description"),
                                      schedules=schedules or None))
    if only and len(out) != len(only):
        known = ", ".join(d["name"] for d in spec.get("deployments", []))
        raise InputError(f"--only names deployments that {prefect_file} does not declare (it has {known})")
    return out


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the deployments until interrupted (Ctrl-C)."""
    from qff_core.cli.prefect_api import prefect_api

    log = logger(args)
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
