"""ModelSpec.interface -> the Family that serves it (models/engine/family.py)."""

from models.engine.family import Family
from models.flux.family import FLUX, FLUX_CONTROL, FLUX_FILL, FLUX_KONTEXT, FLUX_REDUX
from models.sdxl.family import SDXL

FAMILIES: dict[str, Family] = {
    f.name: f for f in (FLUX, FLUX_FILL, FLUX_KONTEXT, FLUX_CONTROL, FLUX_REDUX, SDXL)
}
