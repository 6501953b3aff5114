"""Any-to-any sampling over a 4M model (issue 7 point 1, 4M-FACTS §7).

``generate(model, inputs, steps, seed)`` is the public call; see :mod:`.generate`.
"""

from .adapter import ModelAdapter
from .autoregressive import decode_sequence, merge_spans
from .generate import TargetStep, generate, run_step
from .guidance import Condition
from .image_decoding import decode_image_tokens
from .inputs import UNKNOWN, build_slots, patchify

__all__ = ["Condition", "ModelAdapter", "TargetStep", "UNKNOWN", "build_slots", "decode_image_tokens",
           "decode_sequence", "generate", "merge_spans", "patchify", "run_step"]
