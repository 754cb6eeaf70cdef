"""Model family name (ModelSpec.family) -> the plain model class that serves it."""

from models.flux.model import FluxModel
from models.sdxl.model import SDXLModel
from models.serving.model import DiffusionModel

FAMILIES: dict[str, type[DiffusionModel]] = {"flux": FluxModel, "sdxl": SDXLModel}
