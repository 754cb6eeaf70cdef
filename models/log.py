"""One logger for the model code. The Cog adapter sends it to stdout, which
coglet records as the prediction's logs."""

import logging

log = logging.getLogger("models")
