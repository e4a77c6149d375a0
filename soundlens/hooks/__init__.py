"""soundlens.hooks: read activations at named sites, store them, and (later) write them.

Sites come from each model's family spec (``LoadedModel.sites()``); ``capture`` runs one
forward pass and returns pooled activations; ``extract`` does it over a dataset into a
resumable ``ActivationStore``; ``Intervene`` writes: it adds, sets or ablates directions at
sites (heads included), restricted to chosen batch rows and forward calls.
"""

from soundlens.hooks.capture import POOLINGS, Capture, capture, pool
from soundlens.hooks.extract import dataset_fingerprint, example_audio, extract
from soundlens.hooks.interventions import (
    Edit,
    Intervene,
    InterventionError,
    ablate,
    add,
    cfg_conditional_rows,
    cfg_unconditional_rows,
    set_projection,
)
from soundlens.hooks.store import ActivationStore, StoreError

__all__ = [
    "POOLINGS", "ActivationStore", "Capture", "Edit", "Intervene", "InterventionError",
    "StoreError", "ablate", "add", "capture", "cfg_conditional_rows", "cfg_unconditional_rows",
    "dataset_fingerprint", "example_audio", "extract", "pool", "set_projection",
]
