"""Model family name (ModelSpec.family) -> the plain model class that serves it."""

from models.common import DiffusionModel
from models.flux import FluxModel
from models.sdxl import SDXLModel

FAMILIES: dict[str, type[DiffusionModel]] = {"flux": FluxModel, "sdxl": SDXLModel}
