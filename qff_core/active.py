"""Active learning from molecular dynamics (``qff active-learn``): let the model's own trajectories say which
geometries to label next.

Each round: (1) a committee of models on the same data (the current model and ``committee - 1``
members from other seeds); (2) MD with the current model (Langevin at ``temperature_k``), every
``sample_every``-th frame a candidate; (3) each candidate scored by the committee's force
disagreement (root mean square over atoms of the per-component standard deviation, eV/Angstrom);
(4) the ``per_round`` most uncertain candidates that are mutually distinct (distance matrices at
least ``min_separation_a`` apart, RMS) are appended to the dataset and labelled with its
reference engine and level of theory, as ``qff dataset generate`` does; (5) every model is
retrained on the grown training split, warm-started from its previous parameters; the test
split stays as it was. ``selection="random"`` draws the same number of distinct frames at
random instead: the honest control.

Each stage is idempotent and its outcome recorded in ``<work_dir>/state.json``: a killed round
resumes where it stopped, and labelled frames are never relabelled (the appended frames are found
again by their dataset segment).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from qff_core.domain import TrainingDomain
from qff_core.errors import InputError, Interrupted
from qff_core.metrics import error_metrics
from qff_core.run import Run, Split, TrainConfig, open_run
from qff_core.store.dataset import DONE, Dataset

Log = Callable[[str], None]


class ActiveLearningConfig(BaseModel):
    """What ``qff active-learn`` does."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run: str = Field(description="the trained run to improve (its dataset grows)")
    rounds: int = Field(1, ge=1, description="active-learning rounds")
    per_round: int = Field(10, ge=1, description="frames labelled per round")
    committee: int = Field(3, ge=2, description="models whose disagreement scores a frame (the run included)")
    committee_steps: int | None = Field(None, ge=1, description="training steps of the extra committee members "
                                                                "(default: the run's)")
    retrain_steps: int | None = Field(None, ge=1, description="warm-start training steps per round (default: the "
                                                              "run's)")
    retrain_learning_rate: float | None = Field(1e-3, gt=0, description="initial learning rate of the warm-start "
                                                                       "retraining (null in a --config file: the "
                                                                       "run's)")
    selection: Literal["committee", "random"] = Field("committee", description="committee disagreement, or random "
                                                                               "frames (the control)")
    temperature_k: float = Field(500.0, gt=0, le=5000.0, description="MD temperature of the exploration (K)")
    md_steps: int = Field(2000, ge=1, description="MD steps per round")
    timestep_fs: float = Field(0.5, gt=0, le=5.0, description="MD time step (fs)")
    sample_every: int = Field(10, ge=1, description="every N-th MD frame is a candidate")
    min_separation_a: float = Field(0.05, ge=0, description="RMS distance-matrix difference two picks must exceed")
    max_extrapolation: float = Field(0.25, ge=0, description="candidates with an interatomic distance more than this "
                                                             "fraction outside the training data's range are dropped "
                                                             "(a trajectory leaving the surface, not data to learn)")
    test_set: str | None = Field(None, description="a labelled dataset (e.g. MD-sampled) scored after every round")
    work_dir: str | None = Field(None, description="where rounds, committees and state go (default <run>_active)")
    seed: int = Field(0, description="seed of the MD and the random selection")
    chunk_size: int = Field(4, ge=1, description="samples per labelling task")

    def work_path(self) -> Path:
        """The folder of this active-learning job."""
        return Path(self.work_dir) if self.work_dir else Path(f"{str(self.run).rstrip('/')}_active")


# ----------------------------------------------------------------------------- scoring and picking


def disagreement(forces: np.ndarray) -> np.ndarray:
    """Force disagreement per frame (eV/Angstrom) from a committee's forces (members, frames, atoms, 3): the
    RMS over atoms and components of the standard deviation across members."""
    return np.sqrt(np.mean(np.var(forces, axis=0, ddof=1), axis=(1, 2)))


def _distance_matrices(positions_a: np.ndarray) -> np.ndarray:
    d = np.linalg.norm(positions_a[:, :, None] - positions_a[:, None, :], axis=-1)
    iu = np.triu_indices(positions_a.shape[1], 1)
    return d[:, iu[0], iu[1]]


def pick_frames(positions_a: np.ndarray, scores: np.ndarray, n: int, min_separation_a: float) -> np.ndarray:
    """Indices of up to ``n`` frames, highest score first, each at least ``min_separation_a`` (RMS of the
    interatomic-distance differences) from those already picked."""
    dm = _distance_matrices(positions_a)
    picked: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if all(np.sqrt(np.mean((dm[i] - dm[j]) ** 2)) > min_separation_a for j in picked):
            picked.append(int(i))
            if len(picked) == n:
                break
    return np.asarray(picked, dtype=int)


def committee_forces(runs: list[Run], positions_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energies (members, frames) and forces (members, frames, atoms, 3) of each committee member."""
    from qff_core.execution.exact import compile_exact

    sim = compile_exact(runs[0].model)  # every member is the same model: one compilation
    out = [sim.evaluate(run.final_parameters()[0], positions_a) for run in runs]
    return np.stack([e for e, _ in out]), np.stack([f for _, f in out])


# ----------------------------------------------------------------------------- state


def _load_state(work: Path) -> dict:
    path = work / "state.json"
    if not path.exists():
        return {"rounds": []}
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} cannot be read ({exc}): the record of this active-learning job is damaged; restore "
                         "it, or start the job again with another --work-dir") from None
    if not isinstance(state, dict) or not isinstance(state.get("rounds"), list):
        raise InputError(f"{path} is not the record of an active-learning job; pass another --work-dir")
    return state


def _absolute_paths(settings: dict) -> dict:
    """``settings`` with its paths made absolute: ``./r`` and ``r`` are one run."""
    return {k: str(Path(v).resolve()) if k in ("run", "test_set", "work_dir") and v is not None else v
            for k, v in settings.items()}


def _settings(config: ActiveLearningConfig) -> dict:
    """The settings a job is resumed with (all but the rounds), paths absolute, the work dir where it is."""
    return _absolute_paths({**config.model_dump(exclude={"rounds"}), "work_dir": str(config.work_path())})


def _recorded_settings(before: dict | None, now: dict) -> dict | None:
    """The settings a job recorded, read as ``_settings`` writes them (a record from before a setting existed
    holds that setting's value now; its relative paths are read from here)."""
    if before is None:
        return None
    out = {**now, **before}
    if out.get("work_dir") is None:  # recorded as "the default": where this job is now
        out["work_dir"] = now["work_dir"]
    return _absolute_paths(out)


def preflight(config: ActiveLearningConfig) -> Run:
    """The checks that cost nothing, before a committee is trained or a frame appended: the run (with a
    checkpoint, on a dataset qff can label), the MD giving candidates, the test set, the work dir. Returns the run."""
    from qff_core.store.checkpoint import latest_checkpoint

    run = open_run(config.run)
    if latest_checkpoint(run.checkpoint_dir) is None:
        raise InputError(f"the run in {run.path} has no checkpoint yet: train it first")
    dataset = run.dataset()
    level = dataset.group.attrs["level_of_theory"]
    if level["engine"] == "imported":
        raise InputError(f"{dataset.path} was imported: qff cannot label new frames at its level of theory "
                         f"({level['keywords'].get('description', level['method'])}); active learning needs a "
                         "dataset made by `qff dataset generate`")
    if config.md_steps < config.sample_every:
        raise InputError(f"--md-steps {config.md_steps} with --sample-every {config.sample_every} keeps only the start "
                         "frame: no candidates. Give --md-steps at least --sample-every (many times it, for a choice)")
    if config.test_set is not None:
        test = Dataset.open(config.test_set)
        if Path(config.test_set).resolve() == dataset.path.resolve():
            raise InputError(f"--test-set {config.test_set} is the run's own dataset, which the rounds grow and train "
                             "on; give a separate labelled dataset (e.g. MD frames labelled with qff dataset generate "
                             "--sampler file)")
        if list(test.group.attrs["molecule"]["symbols"]) != list(dataset.group.attrs["molecule"]["symbols"]):
            raise InputError(f"--test-set {config.test_set} holds {' '.join(test.group.attrs['molecule']['symbols'])}"
                             f", the run {' '.join(dataset.group.attrs['molecule']['symbols'])}")
        tested = test.group.attrs["level_of_theory"]
        if tested.get("engine") != "imported" and tested != level:  # an imported one says only what its text says
            raise InputError(f"--test-set {config.test_set} was computed at {tested}, the run's data at {level}: "
                             "errors against it would mix two surfaces")
    work = config.work_path()
    if work.exists() and not work.is_dir():
        raise InputError(f"--work-dir {work} is a file; give a folder for the job's rounds and state")
    from qff_core.store.paths import check_writable_dir

    check_writable_dir(work, "--work-dir")
    return run


def _save_state(work: Path, state: dict) -> None:
    tmp = work / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, work / "state.json")


def _train(run_dir: Path, config: TrainConfig, split: Split | None) -> Run:
    """Train (or finish training) the run in ``run_dir``; an existing one resumes."""
    from qff_core.training import train

    resume = (run_dir / "run.json").exists()
    train(run_dir, config, resume=resume, split=None if resume else split)
    return open_run(run_dir)


def _member_config(base: Run, seed: int, steps: int, init_from: str | None,
                   learning_rate: float | None = None) -> TrainConfig:
    update = {"seed": seed, "steps": steps, "init_from": init_from, "n_train": None}
    if base.config.has_label_noise:  # every member trains on the same noisy labels, as a user holds one noisy dataset
        update["label_noise_seed"] = base.config.noise_seed
    if learning_rate is not None:
        update.update(learning_rate=learning_rate,
                      final_learning_rate=min(base.config.final_learning_rate, learning_rate))
    return base.config.model_copy(update=update)


# ----------------------------------------------------------------------------- one round


def _committee(config: ActiveLearningConfig, main: Run, previous: list[str] | None, split: Split,
               round_dir: Path, log: Log) -> list[Run]:
    """The current model and its committee members on ``split`` (round 0: trained from other seeds; later
    rounds: the members the previous round retrained)."""
    if previous is not None:  # retrained at the end of the previous round
        return [main, *(open_run(p) for p in previous)]
    if config.selection == "random":  # the control needs no committee
        return [main]
    members = [main]
    steps = config.committee_steps or main.config.steps
    for j in range(1, config.committee):
        path = round_dir / f"member_{j}"
        if not (path / "run.json").exists():
            log(f"committee member {j}: training {steps} steps (seed {j})")
        members.append(_train(path, _member_config(main, j, steps, None), split))
    return members


def _explore(config: ActiveLearningConfig, main: Run, round_no: int, round_dir: Path, log: Log) -> np.ndarray:
    """Candidate positions (frames, atoms, 3) from a Langevin trajectory of the current model. A trajectory
    that blows up ends there: the frames before it, where the model goes wrong, are the candidates."""
    from qff_core.interchange import read_frames
    from qff_core.md import MDBlowUpError, MDConfig, run_md

    traj = round_dir / "md.extxyz"
    md = MDConfig(run_dir=str(main.path), ensemble="langevin", steps=config.md_steps, timestep_fs=config.timestep_fs,
                  temperature_k=config.temperature_k, seed=config.seed + 1000 * round_no, out=str(traj),
                  write_every=config.sample_every)
    summary_path = round_dir / "md.json"
    if not summary_path.exists():
        try:
            summary = run_md(md)
        except MDBlowUpError as exc:
            log(f"exploration stopped early: {exc}")
            summary = {"blew_up": str(exc), "last_frame_stopped_it": exc.stopping_frame_written}
        summary_path.write_text(json.dumps(summary, indent=2))
    summary = json.loads(summary_path.read_text())
    frames = read_frames(traj) if traj.exists() and traj.stat().st_size else []
    positions = np.stack([a.positions for a in frames]) if frames else np.zeros((0, main.model.molecule.n_atoms, 3))
    stopped = summary.get("last_frame_stopped_it", "the one that stopped it" in summary.get("blew_up", ""))
    domain = TrainingDomain.of_positions(tuple(main.model.molecule.symbols),
                                         main.dataset().samples(main.split.train)[0])
    candidates, dropped = usable_candidates(positions, stopped, domain, config.max_extrapolation)
    if dropped:
        log(f"dropped {dropped} of {len(candidates) + dropped} candidate frames with an interatomic distance more "
            f"than {100 * config.max_extrapolation:g} % outside the training data's range (--max-extrapolation)")
    if len(candidates) == 0:
        raise InputError(f"the exploration MD of round {round_no + 1} gave no frames to choose from (see "
                         f"{summary_path}): lower --temperature-k or --timestep-fs, or raise --md-steps")
    return candidates


def usable_candidates(positions_a: np.ndarray, stopped: bool, domain: TrainingDomain,
                      max_extrapolation: float) -> tuple[np.ndarray, int]:
    """The candidate frames of an exploration trajectory (frames, atoms, 3) and how many were dropped for lying more
    than ``max_extrapolation`` outside ``domain``. Never candidates: the start frame (training data already) and,
    when the MD blew up (``stopped``), the last frame, the one that stopped it."""
    frames = positions_a[1:len(positions_a) - 1] if stopped else positions_a[1:]
    wide = TrainingDomain(domain.symbols, domain.ranges_a, margin=max_extrapolation)
    inside = np.array([not wide.outside(x) for x in frames], dtype=bool)
    return frames[inside], int((~inside).sum())


def _select(config: ActiveLearningConfig, candidates: np.ndarray, members: list[Run], round_no: int) -> tuple:
    if config.selection == "committee":
        scores = disagreement(committee_forces(members, candidates)[1])
    else:  # random scores: the same distinctness rule, no model's opinion
        scores = np.random.default_rng([config.seed, round_no, 31]).random(len(candidates))
    return pick_frames(candidates, scores, config.per_round, config.min_separation_a), scores


def _append(dataset: Dataset, positions: np.ndarray, tag: dict) -> np.ndarray:
    """Dataset indices of the round's frames: appended once (found again by their segment on a rerun)."""
    for seg in dataset.segments():
        if all(seg.get(k) == v for k, v in tag.items()):
            return np.arange(seg["start"], seg["stop"])
    return dataset.add_geometries(positions, segment=tag)


def label(dataset: Dataset, chunk_size: int, log: Log, molecule: str | None = None) -> dict:
    """Compute every pending sample of ``dataset`` with its own engine and level of theory; ``molecule``: the spec
    (a file) when the dataset's molecule is no built-in (its charge and multiplicity come from there)."""
    from qff_core.datagen import GenerateConfig, compute_pending
    from qff_core.run.directory import molecule_of

    level = dataset.group.attrs["level_of_theory"]
    if level["engine"] == "imported":
        raise InputError(f"{dataset.path} was imported: qff cannot compute more samples at its level of theory "
                         f"({level['keywords'].get('description', level['method'])}); label the frames yourself")
    keywords = {k: v for k, v in level.get("keywords", {}).items()}
    spec = molecule or dataset.group.attrs["molecule"]["name"]
    stored = dataset.group.attrs["molecule"]
    found = molecule_of(dataset, spec)  # the same atoms as the dataset's, else a clear error
    if (found.charge, found.multiplicity) != (stored.get("charge", 0), stored.get("multiplicity", 1)):
        raise InputError(f"molecule {spec} has charge {found.charge} and multiplicity {found.multiplicity}, but "
                         f"{dataset.path} was computed with {stored.get('charge', 0)} and "
                         f"{stored.get('multiplicity', 1)}; label with the dataset's molecule")
    settings = GenerateConfig(molecule=spec, engine=level["engine"],
                              method=level["method"], basis=level["basis"], keywords=keywords, out=str(dataset.path),
                              samples=max(1, dataset.n_samples), chunk_size=chunk_size)
    summary = compute_pending(dataset, settings)
    log(f"labelled {summary['computed']} frames ({summary['failed']} failed) with {level['engine']} "
        f"{level['method']}/{level['basis']}")
    return summary


def _test_errors(run: Run, test_set: str | None) -> dict | None:
    if test_set is None:
        return None
    from qff_core.execution.exact import compile_exact

    ds = Dataset.open(test_set)
    done = np.flatnonzero(ds.status() == DONE)
    x, e, f = ds.samples(done)
    pe, pf = compile_exact(run.model).evaluate(run.final_parameters()[0], x)
    return error_metrics(pe, e, pf, f)


def _frame_errors(run: Run, dataset: Dataset, indices: np.ndarray) -> dict:
    from qff_core.execution.exact import compile_exact

    done = indices[dataset.status()[indices] == DONE]
    if done.size == 0:
        return {}
    x, e, f = dataset.samples(done)
    pe, pf = compile_exact(run.model).evaluate(run.final_parameters()[0], x)
    return error_metrics(pe, e, pf, f)


def active_learn(config: ActiveLearningConfig, *, log: Log = print) -> dict:
    """Run (or resume) ``config.rounds`` rounds; returns the per-round record (also in ``state.json``)."""
    start = preflight(config)
    work = config.work_path()
    work.mkdir(parents=True, exist_ok=True)
    state = _load_state(work)
    settings = _settings(config)  # more rounds continue a job; other settings start another
    before = _recorded_settings(state.get("config"), settings)
    if before is not None and before != settings:
        changed = "; ".join(f"{k}: {before.get(k)!r} then, {v!r} now" for k, v in settings.items()
                            if before.get(k) != v)
        raise InputError(f"{work} holds an active-learning job with other settings ({changed}); resume it with the "
                         "same settings (only --rounds may grow) or pass another --work-dir")
    state["config"] = settings
    if state.get("initial_test") is None:
        state["initial_test"] = _test_errors(start, config.test_set)
        _save_state(work, state)
    main, members_prev = start, None
    for record in state["rounds"]:
        if record.get("stage") == "done":
            main = open_run(record["model"])
            members_prev = record["members"]
    for round_no in range(len([r for r in state["rounds"] if r.get("stage") == "done"]), config.rounds):
        log(f"round {round_no + 1}/{config.rounds}: {config.selection} selection of {config.per_round} frames")
        try:
            main, members_prev, record = _round(config, work, state, round_no, main, members_prev, log)
        except Interrupted:  # the trainer's own advice (qff train --resume) would leave the round unfinished
            raise Interrupted(f"round {round_no + 1} is kept where it stopped in {work}; run the same "
                              "`qff active-learn` command again: it resumes there (labelled frames are not "
                              "labelled again)") from None
    return {"work_dir": str(work), "initial_test": state["initial_test"], "rounds": state["rounds"],
            "final_run": str(main.path)}


def _round(config: ActiveLearningConfig, work: Path, state: dict, round_no: int, main: Run,
           members_prev: list[str] | None, log: Log) -> tuple[Run, list[str], dict]:
    round_dir = work / f"round_{round_no + 1}"
    round_dir.mkdir(exist_ok=True)
    if len(state["rounds"]) <= round_no:
        state["rounds"].append({"round": round_no + 1, "stage": "started"})
    record = state["rounds"][round_no]
    members = _committee(config, main, members_prev, main.split, round_dir, log)
    dataset = main.dataset()
    if "selected" not in record:
        candidates = _explore(config, main, round_no, round_dir, log)
        picked, scores = _select(config, candidates, members, round_no)
        if len(picked) < config.per_round:
            log(f"picked {len(picked)} frames, not {config.per_round}: only {len(picked)} of the {len(candidates)} "
                f"candidates are {config.min_separation_a} A apart (--min-separation-a); more --md-steps give more")
        np.save(round_dir / "selected_positions.npy", candidates[picked])
        record.update(selected={"n_candidates": len(candidates), "frames": picked.tolist(),
                                "scores": [float(scores[i]) for i in picked],
                                "score": "force disagreement (eV/A)" if config.selection == "committee" else
                                "random"}, stage="selected")
        _save_state(work, state)
    tag = {"kind": "active_learning", "work_dir": str(work.resolve()), "round": round_no + 1,
           "selection": config.selection, "temperature_k": config.temperature_k}
    indices = _append(dataset, np.load(round_dir / "selected_positions.npy"), tag)
    record.update(dataset_indices=indices.tolist(), stage="labelling")
    _save_state(work, state)
    summary = label(dataset, config.chunk_size, log, main.config.molecule)
    status = dataset.status()[indices]
    record.update(reference_calls=int(indices.size), failed=int((status != DONE).sum()),
                  errors_before=_frame_errors(main, dataset, indices), stage="retraining")
    _save_state(work, state)
    new_train = indices[status == DONE]
    split = Split(train=np.sort(np.concatenate([main.split.train, new_train])), val=main.split.val,
                  test=main.split.test)
    steps = config.retrain_steps or main.config.steps
    log(f"retraining {len(members)} model{'s' if len(members) > 1 else ''} on {split.train.size} training geometries "
        f"({steps} steps, warm start)")
    lr = config.retrain_learning_rate
    new_main = _train(round_dir / "model", _member_config(main, main.config.seed, steps, str(main.path), lr), split)
    new_members = [str(_train(round_dir / f"next_member_{j}", _member_config(m, j, steps, str(m.path), lr),
                              split).path) for j, m in enumerate(members[1:], start=1)]
    record.update(model=str(new_main.path), members=new_members, labelling=summary,
                  errors_after=_frame_errors(new_main, dataset, indices),
                  test_before=_test_errors(main, config.test_set), test_after=_test_errors(new_main, config.test_set),
                  stage="done")
    _save_state(work, state)
    return new_main, new_members, record


__all__ = ["ActiveLearningConfig", "active_learn", "committee_forces", "disagreement", "label", "pick_frames",
           "preflight", "usable_candidates"]
