"""Unmodified data files from the 4M reference release (Apache-2.0)."""

from importlib import resources
from pathlib import Path


def reference_file(name: str) -> Path:
    return Path(str(resources.files(__name__) / name))
