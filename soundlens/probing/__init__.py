"""soundlens.probing: where does a concept live? Layer-wise linear probes with controls.

``LinearProbeClassifier`` / ``LinearProbeRegressor`` (scikit-learn estimators), ``sweep`` (all
sites at once, held-out metrics with intervals, baselines, control task), directions for
steering, and ``probe_dataset`` / ``probe_concepts`` (the `soundlens probe` job).
"""

from soundlens.probing.directions import Directions, from_probe, mean_difference, pca_of_means
from soundlens.probing.probes import LinearProbeClassifier, LinearProbeRegressor, ProbeError
from soundlens.probing.run import probe_concepts, probe_dataset
from soundlens.probing.sweep import Split, SweepResult, control_labels, make_split, sweep

__all__ = [
    "Directions", "LinearProbeClassifier", "LinearProbeRegressor", "ProbeError", "Split",
    "SweepResult", "control_labels", "from_probe", "make_split", "mean_difference",
    "pca_of_means", "probe_concepts", "probe_dataset", "sweep",
]
