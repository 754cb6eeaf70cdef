"""Model family name (ModelSpec.family) -> its Family (models/engine/family.py)."""

from models.engine.family import Family
from models.flux.family import FLUX
from models.sdxl.family import SDXL

FAMILIES: dict[str, Family] = {family.name: family for family in (FLUX, SDXL)}
