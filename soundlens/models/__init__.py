"""soundlens.models: load any supported speech or music model with its family spec."""

from soundlens.models.embedded import EMBEDDED, EmbeddedModel
from soundlens.models.families import FAMILIES, family_for_model_type
from soundlens.models.loaded import LoadedModel
from soundlens.models.loading import load
from soundlens.models.spec import FamilySpec, LayerGroup, Site

__all__ = [
    "EMBEDDED", "FAMILIES", "EmbeddedModel", "FamilySpec", "LayerGroup", "LoadedModel", "Site",
    "family_for_model_type", "load",
]
