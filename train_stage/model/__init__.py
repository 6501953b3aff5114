"""The 4M model: config, modules, and loading/saving in the released checkpoint format."""

from .config import FourMConfig, preset
from .fourm import FourM, FourMOutput
from .hub import from_pretrained, save_pretrained

__all__ = ["FourM", "FourMConfig", "FourMOutput", "from_pretrained", "preset", "save_pretrained"]
