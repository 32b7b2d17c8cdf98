"""Per-modality encoders (text bytes, audio samples, video frames) producing Ragged features."""

from .audio import AudioSamples, frame_waveforms, stack_context
from .base import REGISTRY, ModalityEncoder, build_encoder, register
from .text import TextBytes
from .video import VideoFrames

__all__ = [
    "REGISTRY",
    "AudioSamples",
    "ModalityEncoder",
    "TextBytes",
    "VideoFrames",
    "build_encoder",
    "frame_waveforms",
    "register",
    "stack_context",
]
