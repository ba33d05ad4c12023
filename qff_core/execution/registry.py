"""Executors found by name: one ``ExecutorSpec`` each says everything the rest of qff may ask.

A spec holds the factory (``build`` for the Python API, ``open`` for configured runs: it keeps
what it opens, an IBM Runtime Session, open for the caller's block), what must be installed
(``found()``), the ``ExecutorConfig`` options it takes and needs, and what it is: ``exact``
(classical autodiff, any model), ``uses_dask`` (its circuits fan out on a Dask cluster),
``remote`` (jobs with ids that a journal re-attaches to) and ``qpu`` (priced in QPU seconds).
Settings validation, training, evaluation, cost and the command line ask these; no module
outside ``execution/`` compares executor names. This module imports nothing heavy: factories
import JAX and Qiskit when they run.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from qff_core.errors import InputError, ResourceError

if TYPE_CHECKING:
    from qff_core.distributed import ClusterConfig
    from qff_core.execution.base import Executor
    from qff_core.execution.config import ExecutorConfig
    from qff_core.execution.shift.journal import JobJournal
    from qff_core.models.fragment import AnyModel

RuntimeMode = Literal["session", "batch"]
LOCAL_IBM_BACKENDS = ("aer",)
"""IBM backend names that run locally (with every ``Fake...`` backend): qiskit-ibm-runtime's local testing mode."""


def is_local_backend(name: str | None) -> bool:
    """True for the ideal local simulator (``aer``) and fake backends: no account, no QPU time, no job ids to keep."""
    return name is not None and (name in LOCAL_IBM_BACKENDS or name.startswith("Fake")
                                 or name.lower().startswith("fake_"))


@dataclass(frozen=True)
class ExecutorSpec:
    """One registered executor: how to make it and what it is."""

    name: str
    description: str
    build: Callable[..., Executor]
    """(model, **options) -> Executor: the Python API (``get_executor``)."""
    open: Callable[..., AbstractContextManager[Executor]]
    """(config, model, *, client, journal, seed, token, runtime_mode) -> context manager of an Executor."""
    requires: tuple[tuple[str, str], ...] = ()
    """(module, pip package) pairs that must import."""
    options: frozenset[str] = frozenset()
    """The ExecutorConfig options (of ``CHECKED_OPTIONS``) it takes."""
    required: frozenset[str] = frozenset()
    """Options it cannot run without."""
    hints: tuple[tuple[str, str], ...] = ()
    """(option, what to do instead) for options it refuses."""
    exact: bool = False
    uses_dask: bool = False
    remote: bool = False
    qpu: bool = False
    check_access: Callable[[ExecutorConfig, str | None], None] | None = None
    """(config, token): raises InputError/ResourceError when the account or backend cannot be used."""

    def found(self) -> tuple[bool, str]:
        """(available here, why not or what it is)."""
        for module, package in self.requires:
            if importlib.util.find_spec(module) is None:
                return False, f"{package} is not installed: pip install {package}"
        return True, self.description

    def refuse_cluster(self) -> None:
        """InputError unless its circuits fan out on a Dask cluster (called when one is given)."""
        if not self.uses_dask:
            users = ", ".join(executor_names(uses_dask=True))
            raise InputError(f"the {self.name} executor does not fan out on a Dask cluster (only {users} do): "
                             "drop --cluster/--workers/--scheduler")

    def preflight(self, config: ExecutorConfig, token: str | None = None) -> None:
        """Everything that can be checked before a run writes or submits anything: installed, and for a remote
        executor the account (``token`` or the environment's) and backend reachable."""
        self.require()
        if self.check_access is not None:
            self.check_access(config, token)

    def require(self) -> None:
        """ResourceError when it cannot run here."""
        ok, why = self.found()
        if not ok:
            raise ResourceError(f"the {self.name} executor cannot run here: {why}")


_REGISTRY: dict[str, ExecutorSpec] = {}


def register_executor(spec: ExecutorSpec) -> None:
    """Make an executor available under ``spec.name`` (replacing one of the same name)."""
    _REGISTRY[spec.name] = spec


def executor_spec(name: str) -> ExecutorSpec:
    """The spec of executor ``name``; InputError naming the choices when there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown executor {name!r}; choose one of {', '.join(executor_names())}") from None


def executor_names(**flags: bool) -> tuple[str, ...]:
    """Registered executor names, optionally those whose spec flags equal ``flags`` (``uses_dask=True``...)."""
    return tuple(n for n, s in _REGISTRY.items() if all(getattr(s, k) == v for k, v in flags.items()))


def found() -> dict[str, tuple[bool, str]]:
    """Every registered executor with (available here, why not or what it is), as engines report it."""
    return {name: spec.found() for name, spec in _REGISTRY.items()}


def get_executor(name: str, model: AnyModel, **options) -> Executor:
    """Build executor ``name`` for ``model`` (``options`` as its factory takes them)."""
    spec = executor_spec(name)
    spec.require()
    return spec.build(model, **options)


@contextmanager
def open_executor(config: ExecutorConfig, model: AnyModel, *, cluster: ClusterConfig | None = None, client=None,
                  journal: JobJournal | None = None, seed: int | None = None, token: str | None = None,
                  runtime_mode: RuntimeMode = "session") -> Iterator[Executor]:
    """The executor ``config`` describes for ``model``, open for the duration of the block.

    ``cluster`` (a Dask cluster started here) or ``client`` (a running one): where circuits fan
    out, for executors that use Dask. ``journal``: where remote job ids are recorded. ``seed``:
    shot-noise seed when the config gives none. ``token``: an API key read from a secret store
    (never stored). ``runtime_mode``: a remote executor's jobs run in a Session (training:
    each step waits on the last) or a Batch (evaluation: independent jobs).
    """
    spec = executor_spec(config.name)
    spec.require()
    if cluster is not None or client is not None:
        spec.refuse_cluster()
    from qff_core.models.fragment import EXACT_ONLY, FragmentModel

    if isinstance(model, FragmentModel) and not spec.exact:
        raise InputError(EXACT_ONLY)
    seed = config.seed if config.seed is not None else seed
    with ExitStack() as stack:
        if cluster is not None:
            from qff_core.distributed import dask_client

            client = stack.enter_context(dask_client(cluster))
        yield stack.enter_context(spec.open(config, model, client=client, journal=journal, seed=seed, token=token,
                                            runtime_mode=runtime_mode))


# ----------------------------------------------------------------------------- the built-in executors


def _build_exact(model: AnyModel, **options) -> Executor:
    from qff_core.execution.exact.executor import ExactExecutor

    if options:
        raise InputError(f"the exact executor takes no options; got {sorted(options)}")
    return ExactExecutor.for_model(model)


@contextmanager
def _open_exact(config: ExecutorConfig, model: AnyModel, **_context) -> Iterator[Executor]:
    yield _build_exact(model)


def _build_aer(model: AnyModel, *, shots: int | None = None, noise_backend: str | None = None, threads: int = 1,
               batching=None, client=None, seed: int | None = None, retry=None,
               optimization_level: int = 1) -> Executor:
    from qff_core.execution.qiskit.aer import AerEvaluator
    from qff_core.execution.qiskit.compiler import compile_qiskit
    from qff_core.execution.shift.executor import ShiftExecutor
    from qff_core.execution.shift.fanout import DEFAULT_RETRY
    from qff_core.execution.shift.planner import DEFAULT_BATCHING

    qmodel = compile_qiskit(model)
    evaluator = AerEvaluator(shots=shots, noise_backend=noise_backend, threads=threads,
                             optimization_level=optimization_level)
    return ShiftExecutor(name="aer", qmodel=qmodel, evaluator=evaluator, program=evaluator.prepare(qmodel),
                         batching=batching or DEFAULT_BATCHING, client=client, seed=seed, retry=retry or DEFAULT_RETRY)


def _dask_workers(client) -> int:
    return len(client.scheduler_info(n_workers=-1)["workers"]) if client is not None else 1


@contextmanager
def _open_aer(config: ExecutorConfig, model: AnyModel, *, client=None, seed=None, **_context) -> Iterator[Executor]:
    yield _build_aer(model, shots=config.shots, noise_backend=config.noise_backend,
                     batching=config.batching(_dask_workers(client)), client=client, seed=seed, retry=config.retry(),
                     optimization_level=config.transpiler_level)


def _build_ibm(model: AnyModel, *, backend="aer", options: dict | None = None, mode=None, batching=None,
               seed: int | None = None, journal: JobJournal | None = None, retry=None, service=None,
               optimization_level: int = 1) -> Executor:
    """``backend``: a name for ``ibm_backend`` or a backend object; ``mode``: an open Session/Batch;
    ``service``: the account's QiskitRuntimeService (re-attaches to journalled jobs)."""
    from qff_core.execution.qiskit.compiler import compile_qiskit
    from qff_core.execution.qiskit.ibm import IbmEvaluator, ibm_backend
    from qff_core.execution.shift.executor import ShiftExecutor
    from qff_core.execution.shift.fanout import DEFAULT_RETRY
    from qff_core.execution.shift.planner import DEFAULT_BATCHING

    qmodel = compile_qiskit(model)
    evaluator = IbmEvaluator(backend=ibm_backend(backend, service=service) if isinstance(backend, str) else backend,
                             options=dict(options or {"resilience_level": 0}), mode=mode, service=service,
                             optimization_level=optimization_level)
    return ShiftExecutor(name="ibm", qmodel=qmodel, evaluator=evaluator, program=evaluator.prepare(qmodel),
                         batching=batching or DEFAULT_BATCHING, seed=seed, journal=journal,
                         retry=retry or DEFAULT_RETRY)


@contextmanager
def _open_ibm(config: ExecutorConfig, model: AnyModel, *, journal=None, seed=None, token=None,
              runtime_mode: RuntimeMode = "session", **_context) -> Iterator[Executor]:
    """Inside an IBM Runtime Session or Batch, closed on exit (on error too). Local testing mode (``aer``,
    ``Fake...`` backends) needs no account and keeps no journal: its jobs cannot be re-attached."""
    from qff_core.execution.qiskit.ibm import ibm_backend, runtime_service
    from qff_core.execution.qiskit.ibm import runtime_mode as open_runtime_mode

    local = is_local_backend(config.backend)
    service = None if local else runtime_service(channel=config.channel, instance=config.instance, token=token)
    backend = ibm_backend(config.backend, service=service)
    with open_runtime_mode(backend, runtime_mode, max_time=config.session_max_time) as mode:
        yield _build_ibm(model, backend=backend, options=config.ibm_options(), mode=mode, batching=config.batching(),
                         seed=seed if local else None, journal=None if local else journal, retry=config.retry(),
                         service=service, optimization_level=config.transpiler_level)


def _check_ibm_access(config: ExecutorConfig, token: str | None) -> None:
    """An account that IBM Quantum accepts, unless the backend runs locally (``aer``, ``Fake...``)."""
    if is_local_backend(config.backend):
        return
    from qiskit_ibm_runtime.exceptions import IBMAccountError, IBMError

    from qff_core.execution.qiskit.ibm import runtime_service

    rehearse = "; to rehearse without an account, use --ibm-backend FakeManilaV2 (qiskit-ibm-runtime's local testing)"
    try:
        runtime_service(channel=config.channel, instance=config.instance, token=token)
    except IBMAccountError as exc:
        where = (f"the Prefect Secret block {config.token_secret!r}" if config.token_secret else
                 "$QISKIT_IBM_TOKEN (with $QISKIT_IBM_INSTANCE), an account saved with "
                 "QiskitRuntimeService.save_account(...), or a Prefect Secret block named by --ibm-token-secret")
        raise InputError(f"IBM Quantum account problem ({str(exc).strip()}): the API key comes from {where}"
                         f"{rehearse}") from None
    except (IBMError, ConnectionError, OSError) as exc:
        raise ResourceError(f"cannot reach IBM Quantum ({type(exc).__name__}: {str(exc).strip()[:200]}); check the "
                            f"network{rehearse}") from None


register_executor(ExecutorSpec(
    name="exact", description="JAX statevector simulator (float64, autodiff)", build=_build_exact,
    open=_open_exact, exact=True))
register_executor(ExecutorSpec(
    name="aer", description="parameter shift on qiskit-aer (exact or sampled, optional fake-backend noise)",
    build=_build_aer, open=_open_aer, requires=(("qiskit_aer", "qiskit-aer"),),
    options=frozenset({"shots", "noise_backend", "optimization_level"}), uses_dask=True,
    hints=(("precision", "aer samples real shots: give shots instead of precision"),)))
register_executor(ExecutorSpec(
    name="ibm", description="parameter shift through IBM Runtime's client-side Estimator (Session or Batch)",
    build=_build_ibm, open=_open_ibm,
    requires=(("qiskit_ibm_runtime", "qiskit-ibm-runtime"), ("qiskit_aer", "qiskit-aer")),
    options=frozenset({"shots", "precision", "backend", "instance", "channel", "token_secret", "optimization_level"}),
    required=frozenset({"backend"}), remote=True, qpu=True, check_access=_check_ibm_access,
    hints=(("backend", "a device of your account (ibm_fez...), or aer / FakeManilaV2... for qiskit-ibm-runtime's "
                       "local testing mode"),)))


__all__ = [
    "LOCAL_IBM_BACKENDS",
    "ExecutorSpec",
    "executor_names",
    "executor_spec",
    "found",
    "get_executor",
    "is_local_backend",
    "open_executor",
    "register_executor",
]
