"""Progress bars on long work: shown on a terminal, silent under --quiet or when output is not a terminal."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm

QUIET = False


def progress(iterable, total=None, desc: str = "", unit: str = "it", enabled: bool | None = None):
    if enabled is None:
        enabled = not QUIET and sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, leave=False, file=sys.stderr)
