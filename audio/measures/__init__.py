"""Audio measures: signal measures (`signal`), 1-s clip measures (`clips`), ASR (`asr`), classifiers."""

from ttslens.audio.measures.signal import measure

__all__ = ["measure"]
