"""Per-modality encoders (text bytes, audio samples, video frames) producing Ragged features."""
