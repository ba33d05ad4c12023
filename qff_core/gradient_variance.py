"""Barren-plateau statistics: how the variance of the cost gradient over random initialisations scales with depth.

For each depth D the model is built and compiled once; N parameter vectors are drawn with
``init_parameters(strategy="random")`` (angles uniform in [-pi, pi), s = 1 eV, e0 = 0) and the
gradient of a cost on G fixed random geometries (thermal-like displacements of the reference in its
frame, optionally also randomly oriented as ``audit.random_geometries``; fixed by the seed, the same at
every depth) is taken by reverse-mode autodiff on the exact simulator, float64. The
statistic is the standard one: Var over initialisations of dC/dtheta_k, averaged over the
circuit parameters k (every trainable parameter except the classical scale s and offset e0,
whose gradients say nothing about the circuit). A barren plateau shows as a variance that
falls exponentially with the number of qubits (and with depth, until the circuit forms a 2-design).

Costs: ``expectation`` (default) is <O> averaged over the geometries, the quantity whose gradient
vanishes in a barren plateau; ``energy`` is training's energy loss (``Loss``, sigma_E = 1 eV)
against the energies of one further random initialisation of the same model (a teacher), so the
regression problem is realisable like training's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from qff_core.audit import random_geometries
from qff_core.errors import InputError, ModelBuildError
from qff_core.execution.exact import ExactSimulator, compile_exact
from qff_core.loss import Loss
from qff_core.models import AnyModel, FragmentModel, ModelConfig, build_model, init_parameters
from qff_core.models.ir import Model
from qff_core.molecules import MoleculeSpec

CostName = Literal["expectation", "energy"]
COSTS: tuple[str, ...] = ("expectation", "energy")
CLASSICAL_KINDS = ("scale", "offset")
"""Parameter kinds outside the circuit: their gradients are trivial (<O> and 1) and left out."""
MAX_DEPTH: int = next(m.le for m in ModelConfig.model_fields["depth"].metadata if hasattr(m, "le"))
GEOMETRY_SIGMA_A = 0.1
"""Displacement (Angstrom) of each coordinate of the random geometries from the reference."""
DENSE_MAX_QUBITS = 8
"""Up to this width the simulator applies layers as 2^n matrices under ``lax.scan``: for gradients of one
cost this compiles 2-3x faster than the gate-by-gate tensor strategy, and compilation dominates."""


@dataclass(frozen=True)
class GradientVarianceConfig:
    """What to measure: ``depths`` (each in 1..64), ``samples`` random initialisations (>= 2, the variance is
    the unbiased one), ``geometries`` fixed random geometries (``rotate``: randomly oriented too), ``seed`` for
    both, and the ``cost``."""

    depths: tuple[int, ...]
    samples: int = 100
    geometries: int = 8
    seed: int = 0
    cost: CostName = "expectation"
    rotate: bool = False

    def __post_init__(self) -> None:
        if not self.depths:
            raise InputError("give at least one depth (e.g. --depth-range 1:8)")
        bad = [d for d in self.depths if not 1 <= d <= MAX_DEPTH]
        if bad:
            raise InputError(f"depths must lie in 1..{MAX_DEPTH} (a depth-0 model has no trainable layer); got {bad}")
        if len(set(self.depths)) != len(self.depths):
            raise InputError(f"each depth once, please; got {list(self.depths)}")
        if self.samples < 2:
            raise InputError(f"a variance needs at least 2 samples (random initialisations); got {self.samples}")
        if self.geometries < 1:
            raise InputError(f"the cost needs at least 1 geometry; got {self.geometries}")
        if self.cost not in COSTS:
            raise InputError(f"unknown cost {self.cost!r}; choose one of {', '.join(COSTS)}")


def parse_depths(depth_range: str, step: int = 1) -> tuple[int, ...]:
    """Depths ``A, A+step, ... <= B`` from ``"A:B"`` (B included); raises InputError saying what is wrong."""
    parts = depth_range.split(":")
    try:
        lo, hi = (int(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        lo = hi = None
    if lo is None or hi is None:
        raise InputError(f"--depth-range takes two integers A:B (e.g. 1:32); got {depth_range!r}")
    if step < 1:
        raise InputError(f"--depth-step must be at least 1; got {step}")
    if not 1 <= lo <= hi <= MAX_DEPTH:
        raise InputError(f"--depth-range A:B needs 1 <= A <= B <= {MAX_DEPTH}; got {depth_range!r}")
    return tuple(range(lo, hi + 1, step))


def parse_depth_list(text: str) -> tuple[int, ...]:
    """Depths from ``"1,2,4,8"``; raises InputError on anything but integers."""
    try:
        return tuple(int(p) for p in text.split(","))
    except ValueError:
        raise InputError(f"--depths takes integers separated by commas (e.g. 1,2,4,8); got {text!r}") from None


def circuit_parameters(model: Model) -> np.ndarray:
    """Indices of the trainable circuit parameters: everything training moves except s and e0."""
    return np.array([i for i, p in enumerate(model.parameters) if p.trainable and p.kind not in CLASSICAL_KINDS])


def fixed_geometries(model: AnyModel, n: int, seed: int, rotate: bool = False) -> np.ndarray:
    """(n, atoms, 3) geometries: the reference with Gaussian displacements (``GEOMETRY_SIGMA_A``), in its frame
    like thermal training data, or (``rotate``) each also randomly rotated and moved, as the symmetry audit
    draws them. They depend on the molecule and seed only, not on the depth."""
    rng = np.random.default_rng(seed)
    if rotate:
        return random_geometries(model, n, rng, sigma_a=GEOMETRY_SIGMA_A)
    ref = model.molecule.positions_a
    return ref + GEOMETRY_SIGMA_A * rng.standard_normal((n, *ref.shape))


def initialisations(model: AnyModel, samples: int, seed: int) -> np.ndarray:
    """(samples, n_parameters) random parameter vectors, one seed each drawn from ``seed``.

    The seeds are the same at every depth, so every depth's draws start alike (common random numbers);
    the first seed of the stream is the teacher's.
    """
    seeds = np.random.SeedSequence(seed).generate_state(samples + 1)[1:]
    return np.stack([init_parameters(model, seed=int(s), strategy="random") for s in seeds])


def teacher_parameters(model: AnyModel, seed: int) -> np.ndarray:
    """The random initialisation whose energies are the targets of the ``energy`` cost (not one of the samples)."""
    return init_parameters(model, seed=int(np.random.SeedSequence(seed).generate_state(1)[0]), strategy="random")


def cost_function(sim: ExactSimulator, positions_a: np.ndarray, cost: CostName,
                  targets_ev: np.ndarray | None = None) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """theta -> the scalar cost on ``positions_a`` (JAX-differentiable).

    ``expectation``: mean over geometries of <O> (s and e0 set to 1 and 0, inversion symmetrisation as the
    model does it). ``energy``: the energy term of the training loss against ``targets_ev``.
    """
    model = sim.model
    positions = jnp.asarray(positions_a)
    if cost == "expectation":
        def expectation(theta: jnp.ndarray) -> jnp.ndarray:
            theta = theta.at[model.scale].set(1.0).at[model.offset].set(0.0)
            return jnp.mean(sim.batch_energies_fn(theta, positions))

        return expectation
    if targets_ev is None:
        raise InputError("the energy cost needs target energies (the teacher's)")
    loss, targets = Loss(w_energy=1.0, w_forces=0.0), jnp.asarray(targets_ev)

    def energy(theta: jnp.ndarray) -> jnp.ndarray:
        return loss.value(sim.batch_energies_fn(theta, positions), None, targets, None)

    return energy


def sample_gradients(cost: Callable[[jnp.ndarray], jnp.ndarray], thetas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Costs (samples,) and gradients (samples, n_parameters) of ``cost`` at each row of ``thetas``.

    One jitted ``lax.map`` over the rows: it compiles one gradient (a vmap over initialisations compiles
    about twice as long, and compilation dominates) and holds one backward pass in memory at a time.
    """
    value_and_grad = jax.jit(lambda t: jax.lax.map(jax.value_and_grad(cost), t))
    values, grads = value_and_grad(jnp.asarray(thetas, dtype=jnp.float64))
    return np.asarray(values), np.asarray(grads)


@dataclass(frozen=True)
class DepthStatistics:
    """The gradient statistics of one depth; variances are over initialisations (ddof 1), then averaged
    over the parameters named (``variance``: every circuit parameter; ``*_first_layer``: the prelude's
    encoding, layer 0; ``*_last_layer``: layer D; ``variance_by_layer[l]``: layer l)."""

    depth: int
    n_qubits: int
    n_parameters: int
    n_circuit_parameters: int
    variance: float
    variance_first_layer: float
    variance_last_layer: float
    variance_by_layer: list[float]
    variance_by_kind: dict[str, float]
    mean_abs_gradient: float
    mean_cost: float
    std_cost: float
    seconds: float


def gradient_statistics(model: Model, gradients: np.ndarray, costs: np.ndarray,
                        seconds: float = 0.0) -> DepthStatistics:
    """Summarise per-sample full gradients (samples, n_parameters) and costs (samples,) of ``model``."""
    idx = circuit_parameters(model)
    var = np.var(gradients[:, idx], axis=0, ddof=1)
    layers = np.array([model.parameters[i].layer for i in idx])
    kinds = np.array([model.parameters[i].kind for i in idx])
    by_layer = [float(np.mean(var[layers == layer])) if np.any(layers == layer) else float("nan")
                for layer in range(model.depth + 1)]
    return DepthStatistics(
        depth=model.depth,
        n_qubits=model.n_qubits,
        n_parameters=model.n_parameters,
        n_circuit_parameters=len(idx),
        variance=float(np.mean(var)),
        variance_first_layer=by_layer[0],
        variance_last_layer=by_layer[-1],
        variance_by_layer=by_layer,
        variance_by_kind={str(k): float(np.mean(var[kinds == k])) for k in dict.fromkeys(kinds)},
        mean_abs_gradient=float(np.mean(np.abs(gradients[:, idx]))),
        mean_cost=float(np.mean(costs)),
        std_cost=float(np.std(costs, ddof=1)),
        seconds=seconds,
    )


@dataclass(frozen=True)
class DepthSample:
    """The raw material of one depth: model, simulator, initialisations, their gradients and costs."""

    model: Model
    simulator: ExactSimulator
    thetas: np.ndarray
    gradients: np.ndarray
    costs: np.ndarray


def _circuit_model(molecule: MoleculeSpec, model_config: ModelConfig, depth: int) -> Model:
    """The one-circuit model at ``depth``; a fragment model (a sum of circuits) is refused."""
    model = build_model(molecule, model_config, depth=depth)
    if isinstance(model, FragmentModel):
        raise ModelBuildError("a fragment model is a sum of circuits, with no single gradient landscape; "
                              "measure --model invariant or generic (on a monomer or pair molecule) instead")
    return model


def sample_depth(molecule: MoleculeSpec, model_config: ModelConfig, config: GradientVarianceConfig,
                 depth: int, positions_a: np.ndarray) -> DepthSample:
    """Build and compile the model at ``depth`` once; gradients and costs at ``config.samples`` initialisations."""
    model = _circuit_model(molecule, model_config, depth)
    sim = compile_exact(model, strategy="dense" if model.n_qubits <= DENSE_MAX_QUBITS else "tensor", unroll=False)
    thetas = initialisations(model, config.samples, config.seed)
    targets = None
    if config.cost == "energy":
        teacher = jnp.asarray(teacher_parameters(model, config.seed))
        targets = np.asarray(sim.energies(teacher, jnp.asarray(positions_a)))
    cost = cost_function(sim, positions_a, config.cost, targets)
    costs, gradients = sample_gradients(cost, thetas)
    return DepthSample(model, sim, thetas, gradients, costs)


@dataclass(frozen=True)
class GradientVarianceReport:
    """Per-depth statistics of one model family (molecule, ModelConfig without depth) and the settings."""

    molecule: str
    model: str
    model_config: dict
    settings: dict
    depths: list[DepthStatistics]

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


def gradient_variance(molecule: MoleculeSpec, model_config: ModelConfig, config: GradientVarianceConfig,
                      progress: Callable[[DepthStatistics], None] | None = None) -> GradientVarianceReport:
    """The barren-plateau statistics of ``model_config`` on ``molecule`` at each of ``config.depths``;
    ``progress`` is called with each depth's statistics as they come."""
    positions = fixed_geometries(_circuit_model(molecule, model_config, config.depths[0]), config.geometries,
                                 config.seed, config.rotate)
    rows = []
    for depth in config.depths:
        start = time.perf_counter()
        s = sample_depth(molecule, model_config, config, depth, positions)
        rows.append(gradient_statistics(s.model, s.gradients, s.costs, time.perf_counter() - start))
        if progress:
            progress(rows[-1])
    return GradientVarianceReport(
        molecule=molecule.name,
        model=model_config.model,
        model_config=model_config.model_dump(exclude={"depth"}),
        settings={**asdict(config), "depths": list(config.depths), "variance_ddof": 1,
                  "init_strategy": "random", "excluded_parameter_kinds": list(CLASSICAL_KINDS)},
        depths=rows,
    )


def plot_variance(series: Sequence[tuple[str, Sequence[int], Sequence[float]]], path: str | Path,
                  title: str = "gradient variance over random initialisations") -> Path:
    """A log-scale plot of variance against depth, one line per ``(label, depths, variances)``; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, depths, variances in series:
        ax.plot(depths, variances, marker="o", label=label)
    ax.set_yscale("log")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("depth D")
    ax.set_ylabel("mean over parameters of Var[dC/dθ]")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
