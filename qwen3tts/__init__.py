"""qwen3tts: a from-scratch PyTorch Qwen3-TTS (12 Hz family) that streams 80 ms frames.

Public API (lazy: importing the package does not import torch):
    SpeechTokenizer, Qwen3TTS, TextTokenizer, VoicePrompt, TextStream
"""

__version__ = "0.1.0"

_LAZY = {
    "SpeechTokenizer": ("qwen3tts.codec.tokenizer", "SpeechTokenizer"),
    "StreamingDecoder": ("qwen3tts.codec.tokenizer", "StreamingDecoder"),
    "Qwen3TTS": ("qwen3tts.pipeline", "Qwen3TTS"),
    "TextTokenizer": ("qwen3tts.text", "TextTokenizer"),
    "VoicePrompt": ("qwen3tts.voice", "VoicePrompt"),
    "TextStream": ("qwen3tts.textstream", "TextStream"),
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'qwen3tts' has no attribute {name!r}")
