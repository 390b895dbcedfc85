"""Training objectives: the snapshot objective, the continuous-time ELBO, the path-wise
objectives, and the training methods built on them (:data:`METHODS`). Objectives use the
library (process, sampling) and the models; they never import data, the engine or the CLI."""
from .methods import METHODS, Method, NotGenerative
from .snapshot import SNAPSHOT_LABEL, sample_times, snapshot_cross_entropy, snapshot_inputs, snapshot_loss

__all__ = [
           "METHODS",
           "SNAPSHOT_LABEL",
           "Method",
           "NotGenerative",
           "sample_times",
           "snapshot_cross_entropy",
           "snapshot_inputs",
           "snapshot_loss",
]
