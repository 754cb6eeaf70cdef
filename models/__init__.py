"""Plain model code: no `cog` import anywhere below this package (docs/architecture.md).

Importing any of it first installs the filter for the libraries' noise (models/log.py),
so no command of ours opens with warnings that tell a user nothing."""

from models.log import quiet_library_noise

quiet_library_noise()
