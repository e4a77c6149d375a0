"""soundlens.steering: steering vectors from probe directions or contrastive activations.

Steered generation, head selection, schedules and evaluation come with the rest of issue 5.
"""

from soundlens.steering.vectors import SteeringVector, SteeringVectorError

__all__ = ["SteeringVector", "SteeringVectorError"]
