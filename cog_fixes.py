"""Work-arounds for the Cog SDK (cog 0.23.1), applied when predict.py is imported.

Like predict.py, this is Cog-layer code: nothing in models/ imports it.
"""

import glob
import tempfile
from pathlib import Path

from cog.types import URLPath

_convert = URLPath.convert


def _convert_without_leftovers(self):
    """cog's URLPath.convert creates its temporary file before it downloads the URL, and
    leaves that file behind, empty, when the download fails: one per failed URL input,
    forever, in a long-running server. Remove it, then fail as cog does."""
    pattern = str(Path(tempfile.gettempdir()) / f"tmp*{glob.escape(self.filename)}")
    before = set(glob.glob(pattern))
    try:
        return _convert(self)
    except BaseException:
        for leftover in set(glob.glob(pattern)) - before:
            Path(leftover).unlink(missing_ok=True)
        raise


URLPath.convert = _convert_without_leftovers
