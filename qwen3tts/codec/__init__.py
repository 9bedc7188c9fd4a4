"""The 12 Hz speech tokenizer (codec): encoder (wav -> 16 codebooks) and causal decoder."""

from .tokenizer import SpeechTokenizer, StreamingDecoder

__all__ = ["SpeechTokenizer", "StreamingDecoder"]
