"""Molecular dynamics with a trained model through ASE's integrators (``qff md``).

``run_md(MDConfig(...))`` starts from the dataset's minimum (or the last frame of an .xyz/.extxyz),
draws Maxwell-Boltzmann velocities at ``temperature_k`` (seeded; no net momentum or rotation),
integrates NVE (velocity Verlet) or NVT (Langevin, Berendsen, Bussi), and writes every
``write_every``-th frame to an extended XYZ file with its energy (eV) and forces (eV/Angstrom).
A run that blows up (two atoms closer than ``MIN_DISTANCE_A``, an interatomic distance beyond
``max_distance_factor`` times its starting value, or a non-finite energy) stops, keeps the frames
written so far and raises ``MDBlowUpError``: a learned surface is only meaningful near its data.

Temperatures count the degrees of freedom that carry kinetic energy. An isolated molecule started
without net momentum or rotation keeps none under NVE and the velocity-rescaling thermostats
(Berendsen, Bussi), given an invariant model's forces (no net force or torque): 3N - 6 (3N - 5 for a
diatomic). ASE counts 3N, so those thermostats would heat the vibrations to 3N / (3N - 6) times the
target (3x for water). Langevin's random kicks reach rotations too: 3N - 3 (the centre of mass is fixed).
"""

from __future__ import annotations

import io
import logging
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from qff_core.domain import ExtrapolationWarning
from qff_core.errors import InputError, Interrupted, QffError
from qff_core.interrupts import raise_if_interrupted

logger = logging.getLogger(__name__)

MIN_DISTANCE_A = 0.5
"""Two atoms closer than this (Angstrom) mean the dynamics left the model's domain."""
MAX_TIMESTEP_FS = 5.0
H_TIMESTEP_WARNING_FS = 2.0
Ensemble = Literal["nve", "langevin", "nvt-berendsen", "bussi"]


class MDBlowUpError(QffError):
    """The trajectory left physical ground (atoms collided, energy not finite); the frames so far are kept.
    ``stopping_frame_written``: whether the trajectory's last frame is the one that stopped it."""

    def __init__(self, message: str, stopping_frame_written: bool = False) -> None:
        super().__init__(message)
        self.stopping_frame_written = stopping_frame_written


class MDConfig(BaseModel):
    """What ``qff md`` runs (flags, or the ``md:`` section of a config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_dir: str = Field(description="the trained run whose model drives the dynamics")
    ensemble: Ensemble = Field("nve", description="nve (velocity Verlet), langevin, nvt-berendsen or bussi")
    timestep_fs: float = Field(0.5, gt=0, le=MAX_TIMESTEP_FS, description="integration time step (fs)")
    steps: int = Field(2000, ge=1, description="integration steps")
    temperature_k: float = Field(300.0, ge=0, description="initial velocities and thermostat target (K)")
    friction_per_fs: float = Field(0.01, gt=0, description="langevin: friction (1/fs)")
    taut_fs: float = Field(100.0, gt=0, description="nvt-berendsen, bussi: thermostat time constant (fs)")
    seed: int = Field(0, description="seed of the initial velocities and the Langevin noise")
    start: str | None = Field(None, description=".xyz/.extxyz to start from (its last frame); default: the "
                                                "dataset's minimum")
    out: str | None = Field(None, description="trajectory file (extxyz; default <run>/md/<ensemble>.extxyz)")
    write_every: int = Field(1, ge=1, description="write every N-th step to the trajectory")
    max_distance_factor: float | None = Field(
        2.0, gt=1, description="stop when an interatomic distance exceeds this multiple of its starting value (the "
                               "molecule came apart: outside any training set); None never stops for that")
    executor: str = Field("exact", description="executor of the model (exact for MD; others cost circuits per step)")
    checkpoint: int | None = Field(None, description="a checkpoint step of the run (default: best parameters)")

    @model_validator(mode="after")
    def _berendsen_needs_temperature(self) -> MDConfig:
        if self.ensemble != "nve" and self.temperature_k <= 0:
            raise ValueError(f"the {self.ensemble} thermostat needs --temperature-k > 0")
        if self.ensemble == "langevin" and self.friction_per_fs * self.timestep_fs >= 1:
            raise ValueError(f"friction {self.friction_per_fs:g}/fs x time step {self.timestep_fs:g} fs = "
                             f"{self.friction_per_fs * self.timestep_fs:g}: Langevin needs this well below 1 (0.01/fs "
                             "is typical)")
        if self.out is not None and Path(self.out).suffix.lower() not in (".xyz", ".extxyz"):
            raise ValueError(f"--out {self.out}: the trajectory is extended XYZ; give a name ending in .extxyz "
                             "(or .xyz)")
        return self

    def trajectory_path(self) -> Path:
        """Where the frames go."""
        return Path(self.out) if self.out else Path(self.run_dir) / "md" / f"{self.ensemble}.extxyz"


def start_atoms(config: MDConfig, calc):
    """The initial ``Atoms``: the last frame of ``config.start``, else the calculator's reference geometry."""
    from ase import Atoms

    if config.start is None:
        return calc.reference_atoms()
    from qff_core.errors import GeometryError
    from qff_core.interchange import check_not_bohr, read_frames
    from qff_core.molecules.spec import validate_positions

    frames = read_frames(config.start)
    last = frames[-1]
    symbols = last.get_chemical_symbols()
    if np.any(last.pbc):
        raise InputError(f"the start geometry (the last frame of {config.start}) is periodic (pbc "
                         f"{last.pbc.tolist()}): qff models isolated molecules; write the molecule, whole, without a "
                         "cell")
    try:
        positions = validate_positions(last.positions, len(symbols))
        check_not_bohr([positions], symbols, config.start, first_frame=len(frames) - 1, override=None)
    except (GeometryError, QffError) as exc:
        raise InputError(f"the start geometry (the last frame of {config.start}): {exc}") from None
    return Atoms(symbols=symbols, positions=positions)


class NoRigidMotion:
    """An ASE constraint that only counts: the centre of mass and the rotation hold no kinetic energy (taken out
    of the start velocities and kept out by forces without net force or torque), so ``get_temperature`` and the
    velocity-rescaling thermostats see the vibrational degrees of freedom alone. Positions, momenta and forces
    are left as they are (the model's forces are written unchanged)."""

    def get_removed_dof(self, atoms) -> int:
        return {1: 3, 2: 5}.get(len(atoms), 6)

    def adjust_positions(self, atoms, new) -> None:
        pass

    def adjust_momenta(self, atoms, momenta) -> None:
        pass

    def adjust_forces(self, atoms, forces) -> None:
        pass

    def copy(self) -> NoRigidMotion:
        return NoRigidMotion()

    def todict(self) -> dict:
        return {"name": "NoRigidMotion", "kwargs": {}}


def rotation_free(calc) -> bool:
    """Whether ``calc``'s forces keep a molecule's zero rotation: a QFF model that is rotation-invariant (not the
    generic model, no symmetry-breaking gates); any other calculator is assumed to be a physical surface."""
    return bool(getattr(calc, "rotation_invariant", True))


def _integrator(config: MDConfig, atoms, rigid_free: bool = True):
    from ase import units

    dt = config.timestep_fs * units.fs
    rng = np.random.default_rng([config.seed, 1])
    if config.ensemble != "langevin" and rigid_free:
        atoms.set_constraint(NoRigidMotion())  # momentum and angular momentum stay zero: vibrations only
    elif config.ensemble != "langevin":  # forces with a torque spin the molecule up: count the rotation too
        from ase.constraints import FixCom

        atoms.set_constraint(FixCom())
    if config.ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, timestep=dt)
    if config.ensemble == "langevin":
        from ase.constraints import FixCom
        from ase.md.langevin import Langevin

        atoms.set_constraint(FixCom())  # the centre of mass stays put without biasing the NVT distribution
        return Langevin(atoms, timestep=dt, temperature_K=config.temperature_k,
                        friction=config.friction_per_fs / units.fs, rng=rng, fixcm=False)
    if config.ensemble == "nvt-berendsen":
        from ase.md.nvtberendsen import NVTBerendsen

        return NVTBerendsen(atoms, timestep=dt, temperature_K=config.temperature_k, taut=config.taut_fs * units.fs)
    from ase.md.bussi import Bussi

    return Bussi(atoms, timestep=dt, temperature_K=config.temperature_k, taut=config.taut_fs * units.fs, rng=rng)


def _thermalize(atoms, temperature_k: float, rng: np.random.Generator) -> None:
    """Maxwell-Boltzmann momenta (``thermalize_momenta`` from ASE 3.29, the older name before)."""
    import ase.md
    import ase.md.velocitydistribution

    thermalize = getattr(ase.md, "thermalize_momenta", None)
    if thermalize is None:  # ASE < 3.29
        thermalize = ase.md.velocitydistribution.MaxwellBoltzmannDistribution
    thermalize(atoms, temperature_K=temperature_k, rng=rng)


def start_velocities(atoms, temperature_k: float, rng: np.random.Generator) -> None:
    """Maxwell-Boltzmann velocities at ``temperature_k`` with the centre-of-mass motion and the rotation projected
    out and not given back: the 3N-6 vibrations (3N-5 for a diatomic) hold (3N-6)/2 kT on average, a canonical
    draw of theirs. ASE's Stationary and ZeroRotation preserve the temperature counted over 3N by default, which
    put all 3N/2 kT into the vibrations: a 300 K start was ~900 K for water (a review measured 889 K)."""
    from ase.md.velocitydistribution import Stationary, ZeroRotation

    _thermalize(atoms, temperature_k, rng)
    Stationary(atoms, preserve_temperature=False)
    with np.errstate(divide="ignore", invalid="ignore"):  # a linear molecule: one principal moment is zero
        ZeroRotation(atoms, preserve_temperature=False)


def _pair_distances(atoms) -> np.ndarray:
    d = atoms.get_all_distances()
    return d[np.triu_indices(len(atoms), 1)]


def _check_frame(atoms, energy_ev: float, step: int, start_distances: np.ndarray, factor: float | None) -> None:
    if not math.isfinite(energy_ev) or not np.all(np.isfinite(atoms.positions)):
        raise MDBlowUpError(f"step {step}: the energy or positions are not finite")
    d = _pair_distances(atoms)
    if d.size and d.min() < MIN_DISTANCE_A:
        raise MDBlowUpError(f"step {step}: two atoms are {d.min():.3f} A apart (below {MIN_DISTANCE_A} A): the "
                            "dynamics left the model's training domain; use a smaller time step or temperature")
    if factor is not None and d.size and np.any(d > factor * start_distances):
        k = int(np.argmax(d / start_distances))
        raise MDBlowUpError(f"step {step}: an interatomic distance grew from {start_distances[k]:.3f} to {d[k]:.3f} A "
                            f"(over {factor}x): the molecule came apart, outside the model's training domain; use a "
                            "smaller time step (over 1 fs for hydrogen's vibrations is large) or a lower temperature, "
                            "or teach the model these geometries (qff active-learn)")


def run_md(config: MDConfig, *, calc=None, progress: Callable[[int, int], None] | None = None,
           plot: bool = True) -> dict:
    """Integrate ``config.steps`` steps; returns the summary (frames, energy drift, mean temperature, timing).

    ``calc``: a ``QFFCalculator`` already open (default: one of ``config.run_dir``), or any ASE calculator of the
    molecule (scripts/nve_reference_control.py drives a harmonic reference surface with it). Raises
    MDBlowUpError after writing the frames so far when the trajectory blows up.
    """
    from qff_core.calculator import QFFCalculator

    own = calc is None
    calc = calc or QFFCalculator(config.run_dir, executor=config.executor, checkpoint=config.checkpoint)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExtrapolationWarning)  # logged and counted instead
            return _integrate(config, calc, progress, plot)
    finally:
        if own:
            calc.close()


def _integrate(config: MDConfig, calc, progress: Callable[[int, int], None] | None, plot: bool) -> dict:
    """``run_md`` with its calculator open."""
    from qff_core.interchange import write_frame

    atoms = start_atoms(config, calc)
    atoms.calc = calc
    atoms.get_potential_energy()  # another molecule, or a geometry the model cannot take: refused before the
    d = _pair_distances(atoms)  # trajectory file is opened (and an old one emptied)
    if d.size and d.min() < MIN_DISTANCE_A:
        raise InputError(f"the start geometry has two atoms {d.min():.3f} A apart (below {MIN_DISTANCE_A} A): "
                         "not a geometry to start dynamics from; check --start and its units")
    out = _writable(config.trajectory_path())
    if "H" in atoms.get_chemical_symbols() and config.timestep_fs > H_TIMESTEP_WARNING_FS:
        logger.warning(f"a {config.timestep_fs} fs time step is large for hydrogen's vibrations (above "
                       f"{H_TIMESTEP_WARNING_FS} fs the energy is rarely conserved)")
    start_velocities(atoms, config.temperature_k, np.random.default_rng(config.seed))
    rigid_free = rotation_free(calc)
    if not rigid_free and config.ensemble != "langevin":
        logger.warning("the model is not rotation-invariant: its forces can turn the molecule, so temperatures count "
                       "3N - 3 degrees of freedom (rotation included), not the 3N - 6 vibrations")
    dyn = _integrator(config, atoms, rigid_free)
    start_distances = _pair_distances(atoms)
    trace: dict[str, list[float]] = {"time_fs": [], "potential_ev": [], "kinetic_ev": [], "temperature_k": [],
                                     "outside": []}  # steps outside the training domain
    t0 = time.perf_counter()
    with open(out, "w") as fh:

        written = [0, 0]  # frames written; 1 when the last is the frame that stopped a blow-up

        def write(step: int, e_pot: float) -> None:
            frame = io.StringIO()  # one write of a whole frame: an interrupt never leaves half of one in the file
            write_frame(frame, atoms.get_chemical_symbols(), atoms.positions, e_pot, atoms.get_forces(),
                        info={"time_fs": float(step * config.timestep_fs),
                              "temperature_k": float(atoms.get_temperature())})
            fh.write(frame.getvalue())
            fh.flush()
            written[0] += 1

        def record() -> None:
            raise_if_interrupted()
            step = dyn.nsteps
            e_pot = atoms.get_potential_energy()
            try:
                _check_frame(atoms, e_pot, step, start_distances, config.max_distance_factor)
            except MDBlowUpError:
                if math.isfinite(e_pot) and np.all(np.isfinite(atoms.positions)):
                    write(step, e_pot)  # the frame that stopped it, for the post-mortem
                    written[1] = 1
                raise
            outside = getattr(calc, "last_outside", None)  # a QFFCalculator's; any ASE calculator can drive run_md
            if outside:
                if not trace["outside"]:
                    logger.warning(f"step {step} left the model's training domain ({'; '.join(outside[:3])}"
                                   "): energies and forces there are extrapolated; the summary counts such steps")
                trace["outside"].append(step)
            trace["time_fs"].append(step * config.timestep_fs)
            trace["potential_ev"].append(float(e_pot))
            trace["kinetic_ev"].append(float(atoms.get_kinetic_energy()))
            trace["temperature_k"].append(float(atoms.get_temperature()))
            if step % config.write_every == 0 or step == config.steps:  # the last step too: a --start continues it
                write(step, e_pot)
            if progress is not None and (step % max(1, config.steps // 20) == 0 or step == config.steps):
                progress(step, config.steps)

        dyn.attach(record, interval=1)  # ASE calls observers at step 0 too
        try:
            dyn.run(config.steps)
        except MDBlowUpError as exc:
            also = " and the one that stopped it" if written[1] else ""
            raise MDBlowUpError(f"{exc}; the {written[0] - written[1]} frames so far{also} are in {out}"
                                f"{_partial_plot(trace, out, config, plot)}", bool(written[1])) from None
        except KeyboardInterrupt:
            fh.flush()
            reached_fs = trace["time_fs"][-1] if trace["time_fs"] else 0.0
            raise Interrupted(f"kept {written[0]} frames ({len(trace['time_fs'])} steps, {reached_fs:g} fs) in "
                              f"{out}"
                              f"{_partial_plot(trace, out, config, plot)}. qff md does not resume "
                              f"(running the same command starts again and overwrites {out.name}): continue "
                              f"from the last frame with --start {out} --out ANOTHER.extxyz (new velocities "
                              "are drawn)") from None
    wall = time.perf_counter() - t0
    return _summary(config, trace, wall, out, plot)


def _writable(out: Path) -> Path:
    """``out`` with its folder made; InputError when it cannot be a file there (a folder, a path under a file)."""
    if out.is_dir():
        raise InputError(f"--out {out} is a directory; give a file name ending in .extxyz")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {out}: cannot create its folder ({exc.strerror or exc})") from None
    return out


def _partial_plot(trace: dict, out: Path, config: MDConfig, plot: bool) -> str:
    """The traces of a run that stopped early, when there are two points to draw (text to add to the message)."""
    if not plot or len(trace["time_fs"]) < 2:
        return ""
    try:
        return f" (traces: {plot_trace(trace, out.with_suffix('.png'), config)})"
    except Exception:  # the message about the stop matters more than the picture
        return ""


def _fitted_drift_ev(total_ev: np.ndarray) -> float:
    """Secular drift of the total energy over the run: the least-squares line's rise from first to last step.

    Velocity Verlet conserves a shadow energy, so the total energy oscillates (O(dt^2)) about a constant; final minus
    initial (``energy_drift_ev``) includes that oscillation at whatever phase the run ends, the fit does not."""
    if total_ev.size < 3:
        return float(total_ev[-1] - total_ev[0])
    steps = np.arange(total_ev.size, dtype=float)
    return float(np.polyfit(steps, total_ev, 1)[0] * (total_ev.size - 1))


def _n_frames(config: MDConfig) -> int:
    """Frames a finished run writes: every ``write_every``-th step from 0, and the last step."""
    return len(range(0, config.steps + 1, config.write_every)) + (1 if config.steps % config.write_every else 0)


def _summary(config: MDConfig, trace: dict, wall_s: float, out: Path, plot: bool) -> dict:
    total = np.asarray(trace["potential_ev"]) + np.asarray(trace["kinetic_ev"])
    temperature = np.asarray(trace["temperature_k"])
    simulated_ns = config.steps * config.timestep_fs * 1e-6
    summary = {
        "run_dir": config.run_dir, "ensemble": config.ensemble, "timestep_fs": config.timestep_fs,
        "steps": config.steps, "n_frames": _n_frames(config),
        "trajectory": str(out), "energy_drift_ev": float(total[-1] - total[0]),
        "energy_drift_fit_ev": _fitted_drift_ev(total),
        "energy_fluctuation_ev": float(total.std()),
        "max_energy_deviation_ev": float(np.max(np.abs(total - total[0]))),
        "mean_temperature_k": float(temperature[1:].mean()) if temperature.size > 1 else float(temperature[0]),
        "target_temperature_k": config.temperature_k,
        "steps_outside_training_domain": len(trace["outside"]),
        "first_step_outside_training_domain": trace["outside"][0] if trace["outside"] else None,
        "wall_time_s": wall_s,
        "ns_per_day": simulated_ns / wall_s * 86400.0 if wall_s > 0 else None,
    }
    if plot:
        summary["plot"] = str(plot_trace(trace, out.with_suffix(".png"), config))
    return summary


def plot_trace(trace: dict, path: Path, config: MDConfig) -> Path:
    """Potential and kinetic energy (eV, relative to the first total), the total's deviation from its first value
    (meV, on its own scale: what energy conservation is judged by; with its fitted line in NVE) and the
    temperature against time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.asarray(trace["time_fs"])
    pot, kin = np.asarray(trace["potential_ev"]), np.asarray(trace["kinetic_ev"])
    e0 = pot[0] + kin[0]
    deviation_mev = (pot + kin - e0) * 1e3
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(8, 8), sharex=True, height_ratios=(3, 2, 3))
    ax1.plot(t, pot - e0, lw=0.8, label="potential")
    ax1.plot(t, kin, lw=0.8, label="kinetic")
    ax1.set_ylabel("energy (eV, relative\nto initial total)")
    ax1.legend(fontsize=8)
    ax2.plot(t, deviation_mev, lw=0.8, color="C2", label="total - initial")
    if config.ensemble == "nve" and t.size >= 3:
        fit = np.polyval(np.polyfit(t, deviation_mev, 1), t)
        ax2.plot(t, fit, lw=1.2, color="k", ls="--",
                 label=f"fitted drift {(fit[-1] - fit[0]):+.2g} meV over {t[-1] - t[0]:g} fs")
    ax2.axhline(0.0, color="0.6", lw=0.6)
    ax2.set_ylabel("total energy\n(meV, minus initial)")
    ax2.legend(fontsize=8, loc="upper left")
    ax3.plot(t, trace["temperature_k"], lw=0.8)
    if config.ensemble != "nve":
        ax3.axhline(config.temperature_k, color="0.5", ls="--", lw=1)
    ax3.set_xlabel("time (fs)")
    ax3.set_ylabel("temperature (K)")
    fig.suptitle(f"{config.ensemble} MD, {config.timestep_fs} fs steps: {config.run_dir}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = ["MDBlowUpError", "MDConfig", "run_md", "start_atoms", "start_velocities"]
