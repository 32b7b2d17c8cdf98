"""mmchunk: learned dynamic segmentation (H-Net chunking) of audio, video and text."""

from mmchunk.ragged import Ragged

__all__ = ["Ragged"]
__version__ = "0.1.0"
