"""dflashkit: DFlash block-diffusion speculative decoding — lossless, batched, trainable, servable."""

from .api import generate, load
from .config import DraftConfig
from .engine.generator import Generator
from .engine.sampling import SamplingParams
from .engine.sequence import GenerationResult
from .errors import DFlashError
from .models.drafter import DFlashDraft
from .models.factory import make_target
from .models.target import TargetModel

__all__ = ["load", "generate", "Generator", "SamplingParams", "GenerationResult", "DFlashDraft", "DraftConfig",
           "TargetModel", "make_target", "DFlashError"]
__version__ = "0.1.0"
