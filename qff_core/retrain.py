"""Retraining a registered model when its dataset grows, and promoting the result only if it is not worse.

``retrain(RetrainConfig(name=...))``:

* the dataset of the production version unchanged since it was trained, or a candidate already judged on
  exactly these data (unless ``force``): nothing to do (``skipped``);
* new finished samples: they are split into train/validation/test in the proportions of the
  production run's split (seeded), the production run's split is kept as it is (its test samples
  never enter training), and a candidate is trained on the union, warm-started from the
  production parameters (or from scratch);
* candidate and production are scored on the same test set (the pinned test indices plus the new
  test samples) and the candidate is promoted only if it is not worse, within ``tolerance``, in
  the rotated-set force MAE and then energy MAE; otherwise it stays registered as a candidate.
  The decision, the numbers and the reason are recorded in the registry.

The model's record is locked for the whole retrain (a second retrain waits, then finds nothing
new and skips); the registry is written only at the end, so a retrain that fails or is killed
changes nothing there, and a rerun resumes the candidate's training from its checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from qff_core.errors import InputError, Interrupted
from qff_core.registry import (
    PRIMARY_METRICS,
    ModelRecord,
    ModelVersion,
    RegistryError,
    load,
    model_lock,
    save,
    set_production,
    version_from_run,
)
from qff_core.run import Run, Split, TrainingError, open_run
from qff_core.store.dataset import DONE

logger = logging.getLogger(__name__)


class RetrainConfig(BaseModel):
    """What ``qff retrain`` and the scheduled ``retrain`` flow do."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="the registered model to retrain")
    catalog: str | None = Field(None, description="catalog folder (default $QFF_CATALOG, else data_catalog)")
    from_scratch: bool = Field(False, description="start from the initial parameters instead of the production ones")
    steps: int | None = Field(None, ge=1, description="training steps (default: the production run's)")
    tolerance: float = Field(0.02, ge=0, le=1, description="relative tolerance of 'not worse' for promotion (at most "
                                                           "1: a candidate up to twice production's error)")
    runs_dir: str | None = Field(None, description="where candidate runs go (default: beside the production run)")
    wait: bool = Field(True, description="wait for a retrain of the same model already running (else exit 2)")
    force: bool = Field(False, description="train a candidate even if a version was already trained on these data")


def extend_split(old: Split, done: np.ndarray, seed: int) -> Split:
    """``old`` plus the finished samples it does not hold, split in ``old``'s proportions (seeded)."""
    new = np.setdiff1d(done, old.used())
    order = np.random.default_rng([seed, 7919, int(old.used().size)]).permutation(new)
    total = max(int(old.used().size), 1)
    n_test = round(new.size * old.test.size / total)
    n_val = round(new.size * old.val.size / total)
    return Split(train=np.sort(np.concatenate([old.train, order[n_test + n_val:]])),
                 val=np.sort(np.concatenate([old.val, order[n_test:n_test + n_val]])),
                 test=np.sort(np.concatenate([old.test, order[:n_test]])))


def fresh_samples(dataset, used: np.ndarray, log: Callable[[str], None] = logger.info) -> np.ndarray:
    """Finished samples of ``dataset`` outside ``used`` that are not copies of a used one (up to rotation,
    translation and permutation): a copy of a pinned test geometry in the training split would flatter the
    candidate. Copies are left out, and said so."""
    from qff_core.molecules.matching import same_geometries

    done = np.flatnonzero(dataset.status() == DONE)
    new = np.setdiff1d(done, used)
    if new.size == 0 or used.size == 0:
        return new
    copies = same_geometries(dataset.samples(np.sort(used))[0], dataset.samples(new)[0])
    if copies:
        log(f"{len(copies)} new samples are copies of samples the production run used (e.g. sample "
            f"{int(new[min(copies)])}); they are left out")
    return np.delete(new, sorted(copies))


def decide(candidate: dict, production: dict, tolerance: float) -> tuple[bool, str]:
    """Promote iff the candidate is not worse within ``tolerance`` in each primary metric, in order; the reason."""
    for set_name, metric in PRIMARY_METRICS:
        c, p = float(candidate[set_name][metric]), float(production[set_name][metric])
        if c > p * (1 + tolerance):
            return False, (f"{set_name} {metric} {c:.4g} is worse than production's {p:.4g} "
                           f"(tolerance {tolerance:.0%})")
    def said(s: str, m: str) -> str:
        c, p = float(candidate[s][m]), float(production[s][m])
        worse = f" (worse, within the {tolerance:.0%} tolerance)" if c > p else ""
        return f"{s} {m} {c:.4g} vs production {p:.4g}{worse}"

    return True, "; ".join(said(s, m) for s, m in PRIMARY_METRICS)


def retrain(config: RetrainConfig, *, progress: Callable[[dict], None] | None = None,
            log: Callable[[str], None] | None = None, token: str | None = None) -> dict:
    """Retrain ``config.name`` if its dataset grew; returns ``action`` (skipped, promoted, rejected) and the
    numbers behind it."""
    log = log or logger.info
    with model_lock(config.name, config.catalog, wait=config.wait, notice=logger.warning):
        record = load(config.name, config.catalog)
        production = record.production()
        if production is None:
            raise RegistryError(f"model {config.name!r} has no version in production; promote one with "
                                "`qff models promote NAME@VERSION --reason TEXT`")
        prod_run = _open_production(production)
        dataset = prod_run.dataset()
        checksum = dataset.checksum()
        new = fresh_samples(dataset, prod_run.split.used(), log)
        if new.size == 0:  # what the run used, not the dataset at registration: samples may come in between
            return {"action": "skipped", "reason": "the dataset holds no finished samples beyond the "
                    f"{prod_run.split.used().size} version {production.version} was trained on", "name": config.name,
                    "production": production.version}
        tried = next((v for v in record.versions if v.dataset["checksum"] == checksum
                      and v.version != production.version), None)
        if tried is not None and not config.force:  # a candidate on exactly these data was judged already
            return {"action": "skipped", "reason": f"version {tried.version} was trained on exactly these data "
                    f"({tried.status}: {tried.history[-1].reason}); --force trains another",
                    "name": config.name, "production": production.version}
        split = extend_split(prod_run.split, np.union1d(prod_run.split.used(), new), prod_run.config.seed)
        added = int(split.used().size - prod_run.split.used().size)
        version = 1 + max(v.version for v in record.versions)
        run_dir = Path(config.runs_dir or Path(production.run_dir).parent) / f"{config.name}-v{version}"
        log(f"{config.name}: {added} new samples ({split.train.size - prod_run.split.train.size} train, "
            f"{split.test.size - prod_run.split.test.size} test); training version {version} in {run_dir}")
        _train_candidate(prod_run, run_dir, split, config, progress, token)
        return _judge(record, production, prod_run, run_dir, version, split, added, config)


def _open_production(production: ModelVersion) -> Run:
    try:
        return open_run(production.run_dir)
    except InputError as exc:
        raise RegistryError(f"the production version {production.version} points at {production.run_dir}, which "
                            f"cannot be opened ({exc}); restore that run or promote another version") from None


def _train_candidate(prod_run: Run, run_dir: Path, split: Split, config: RetrainConfig, progress, token) -> None:
    from qff_core.training import train

    updates: dict = {"dataset": str(Path(prod_run.config.dataset)),
                     "init_from": None if config.from_scratch else str(prod_run.path)}
    if config.steps is not None:
        updates["steps"] = config.steps
    candidate = prod_run.config.model_copy(update=updates)
    try:
        summary = train(run_dir, candidate, resume=(run_dir / "run.json").exists(), split=split, progress=progress,
                        token=token)
    except Interrupted:  # `qff train --resume` would finish the candidate but never judge or register it
        raise Interrupted(f"the candidate in {run_dir} is kept where it stopped; nothing was registered. Run the same "
                          f"`qff retrain --model {config.name}` again: it resumes the candidate, then judges it"
                          ) from None
    if summary["stop_reason"] == "non-finite loss":
        raise TrainingError(f"the candidate in {run_dir} diverged (a non-finite loss at step {summary['step']}); "
                            "nothing was registered. Retrain with fewer --steps or --from-scratch, or lower the "
                            "production run's learning rate")


def _judge(record: ModelRecord, production: ModelVersion, prod_run: Run, run_dir: Path, version: int, split: Split,
           added: int, config: RetrainConfig) -> dict:
    """Score both on the candidate's test set, decide, and write the registry (the only write of a retrain)."""
    from qff_core.evaluation import score

    prod_metrics = score(prod_run, split.test)
    candidate = version_from_run(run_dir, version, "candidate", "retrained on new samples", test_indices=split.test)
    promoted, why = decide(candidate.metrics, prod_metrics, config.tolerance)
    candidate.notes = {"retrained_from": production.version, "new_samples": added,
                       "retrain_settings": {"steps": config.steps, "from_scratch": config.from_scratch},
                       "warm_start": not config.from_scratch, "production_metrics_on_this_test_set": prod_metrics,
                       "decision": "promoted" if promoted else "rejected", "reason": why}
    record.versions.append(candidate)
    if promoted:
        set_production(record, version, f"retrained: {why}")
    save(record, config.catalog)
    return {"action": "promoted" if promoted else "rejected", "reason": why, "name": record.name,
            "version": version, "production": version if promoted else production.version,
            "run_dir": str(run_dir), "new_samples": added, "test_size": int(split.test.size),
            "candidate": {k: candidate.metrics[k] for k in candidate.metrics}, "previous": prod_metrics}


__all__ = ["RetrainConfig", "decide", "extend_split", "fresh_samples", "retrain"]
