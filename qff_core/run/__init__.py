"""A training run on disk: its configuration (``config.py``), directory with split, normalisation and
portable dataset location (``directory.py``), and the checkpointed trainer state (``state.py``).

Evaluation, cost and the registry read runs through here; only the trainer writes checkpoints.
"""

from qff_core.run.config import TrainConfig
from qff_core.run.directory import (
    DatasetChangedError,
    Normalisation,
    Run,
    Split,
    TrainingData,
    TrainingError,
    create_run,
    make_split,
    molecule_of,
    open_run,
    parameter_map,
)

__all__ = ["DatasetChangedError", "Normalisation", "Run", "Split", "TrainConfig", "TrainingData", "TrainingError",
           "create_run", "make_split", "molecule_of", "open_run", "parameter_map"]
