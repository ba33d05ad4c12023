"""``TrainConfig``: everything that determines a training run (``qff train`` flags or YAML)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from qff_core.execution.config import ExecutorConfig
from qff_core.models import InitStrategy, ModelConfig
from qff_core.models.fragment import EXACT_ONLY
from qff_core.run.label_noise import NOISE_SEED_OFFSET

# Settings a resumed run may change: the budget, how often it reports and saves, how it is guarded.
# The dataset is compared by the checksum of the samples the run uses, not by how its path was typed.
RESUMABLE_SETTINGS = ("patience", "keep_checkpoints", "checkpoint_every", "eval_every", "max_qpu_seconds")
"""Settings a resumed run takes from the command (and records): how it reports, saves and is guarded."""
_NOT_FINGERPRINTED = ("dataset", "steps", *RESUMABLE_SETTINGS)


class TrainConfig(BaseModel):
    """Everything that determines a training run (``qff train`` flags or YAML)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field(description="Zarr dataset (from `qff dataset generate`)")
    molecule: str | None = Field(None, description="molecule spec (built-in or file); default: the dataset's")
    model: ModelConfig = Field(default_factory=ModelConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig,
                                     description="where circuits run: exact, aer or ibm, with their options")
    steps: int = Field(2000, ge=1, description="Adam steps in total (the learning-rate schedule depends on it: a "
                                               "resumed run keeps its own)")
    batch_size: int = Field(128, ge=1, description="geometries per minibatch")
    learning_rate: float = Field(1e-2, gt=0, description="initial learning rate")
    final_learning_rate: float = Field(1e-4, gt=0, description="learning rate at the last step")
    schedule: Literal["exponential", "cosine", "constant"] = Field("exponential", description="learning-rate decay")
    energy_weight: float = Field(1.0, ge=0, description="w_E of the loss")
    force_weight: float = Field(10.0, ge=0, description="w_F of the loss")
    test_size: float = Field(0.2, ge=0, description="test samples: a fraction (< 1) or a count")
    val_size: float = Field(0.1, ge=0, description="validation samples from the rest: a fraction (< 1) or a count")
    n_train: int | None = Field(None, ge=1, description="train on the first N of the training split only "
                                                       "(learning curves)")
    seed: int = Field(0, description="seed of the split, the initial parameters and the minibatches")
    init: InitStrategy = Field("near_identity", description="initial parameters")
    init_from: str | None = Field(None, description="start from the best parameters of this run directory (a warm "
                                                    "start; same model required)")
    eval_every: int = Field(250, ge=1, description="steps between validations")
    checkpoint_every: int = Field(250, ge=1, description="steps between checkpoints")
    patience: int | None = Field(None, ge=1, description="stop after this many validations without improvement")
    keep_checkpoints: int = Field(3, ge=1, description="checkpoints kept on disk")
    max_qpu_seconds: float | None = Field(None, ge=0, description="refuse to start when the estimated QPU time of "
                                                                  "the steps still to run exceeds this")
    label_noise_energy_ev: float = Field(0.0, ge=0, description="standard deviation (eV) of Gaussian noise added to "
                                                                "every training energy label (validation and test "
                                                                "stay clean)")
    label_noise_forces_ev_per_a: float = Field(0.0, ge=0, description="standard deviation (eV/A) of Gaussian noise "
                                                                      "added to every training force component")
    label_noise_seed: int | None = Field(None, ge=0, description="seed of the label noise (default: seed + "
                                                                 f"{NOISE_SEED_OFFSET})")

    @property
    def has_label_noise(self) -> bool:
        """Whether the training labels get noise (``qff_core.run.label_noise``)."""
        return self.label_noise_energy_ev > 0 or self.label_noise_forces_ev_per_a > 0

    @property
    def noise_seed(self) -> int:
        """The seed of the label noise: ``label_noise_seed``, else ``seed + NOISE_SEED_OFFSET``."""
        return self.seed + NOISE_SEED_OFFSET if self.label_noise_seed is None else self.label_noise_seed

    def fingerprint(self) -> dict:
        """The settings a resumed run must share with the original (all but budget, reporting and guards)."""
        d = self.model_dump()
        for k in _NOT_FINGERPRINTED:
            d.pop(k)
        d["executor"] = self.executor.fingerprint()
        # The noise actually drawn: an explicit seed equal to the default one, or any seed without noise, is the same.
        d["label_noise_seed"] = self.noise_seed if self.has_label_noise else None
        return d

    @model_validator(mode="after")
    def _fragment_models_run_exactly(self) -> TrainConfig:
        if self.model.model == "fragment" and not self.executor.spec.exact:
            raise ValueError(EXACT_ONLY)
        return self

    @model_validator(mode="after")
    def _a_loss_and_whole_counts(self) -> TrainConfig:
        if self.energy_weight == 0 and self.force_weight == 0:
            raise ValueError("energy_weight and force_weight are both 0: the loss would be 0 whatever the model; give "
                             "at least one a positive weight")
        for name in ("test_size", "val_size"):
            size = getattr(self, name)
            if size >= 1 and size != int(size):
                raise ValueError(f"{name} {size:g}: a count (1 or more) must be a whole number; a fraction is below 1")
        return self


__all__ = ["RESUMABLE_SETTINGS", "TrainConfig"]
