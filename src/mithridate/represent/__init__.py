"""Representations: what models and detectors look at (encoded tables, CNN embeddings, probabilities)."""

from mithridate.represent.cnn import CNNClassifier, SmallCNN, layer_embeddings, to_nchw
from mithridate.represent.models import TableModel, reference_model
from mithridate.represent.table import TableEncoder, column_kinds

__all__ = [
    "CNNClassifier",
    "SmallCNN",
    "TableEncoder",
    "TableModel",
    "column_kinds",
    "layer_embeddings",
    "reference_model",
    "to_nchw",
]

from mithridate.represent.representation import (
    Representation,
    nearest_neighbours,
    out_of_fold_proba,
    represent,
    standardise,
)

__all__ += ["Representation", "nearest_neighbours", "out_of_fold_proba", "represent", "standardise"]
