"""soundlens.hooks: read activations at named sites, store them, and (later) write them.

Sites come from each model's family spec (``LoadedModel.sites()``); ``capture`` runs one
forward pass and returns pooled activations; ``extract`` does it over a dataset into a
resumable ``ActivationStore``.
"""

from soundlens.hooks.capture import POOLINGS, Capture, capture, pool
from soundlens.hooks.extract import dataset_fingerprint, example_audio, extract
from soundlens.hooks.store import ActivationStore, StoreError

__all__ = [
    "POOLINGS", "ActivationStore", "Capture", "StoreError", "capture", "dataset_fingerprint",
    "example_audio", "extract", "pool",
]
