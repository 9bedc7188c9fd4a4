"""Shared fixtures: the tiny official-layout model and its reference outputs (copied from
shared/reference/tiny so a fresh clone tests itself)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from qwen3tts import options

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_options():
    """Options a test set (`options.reload()` after `monkeypatch.setenv`, `set_current`) end
    with it: the next use parses the (restored) environment again."""
    yield
    options.set_current(None)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TINY = FIXTURES / "tiny"
TINY_MODEL = TINY / "model"


@pytest.fixture(scope="session")
def expected():
    from safetensors.torch import load_file

    return load_file(str(TINY / "expected.safetensors"))


@pytest.fixture(scope="session")
def expected_info():
    return json.loads((TINY / "expected.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def tiny_codec():
    from qwen3tts import SpeechTokenizer

    return SpeechTokenizer.from_pretrained(TINY_MODEL / "speech_tokenizer")


@pytest.fixture(scope="module")
def tiny_tts():
    """The tiny model as a `Qwen3TTS` (one per test module: modules may tweak it), 1 thread."""
    import torch

    from qwen3tts import Qwen3TTS

    torch.set_num_threads(1)
    return Qwen3TTS.from_pretrained(TINY_MODEL)


@pytest.fixture(scope="module")
def tiny_icl_voice(tiny_tts, expected, expected_info):
    """ICL voice prompt from the fixture's reference clip and transcript."""
    return tiny_tts.create_voice_prompt((expected["ref.wav"].numpy(), 24000), ref_text=expected_info["texts"]["ref"]["text"])


def mid_speech_tokenizer(dtype=torch.float32):
    """A random speech tokenizer whose decoder has 768 channels (768 -> 384 -> 192 -> 96 -> 48, a
    small transformer): wide enough for the codec's Winograd paths; the same weights every call."""
    import tempfile

    from qwen3tts.codec.tokenizer import SpeechTokenizer
    from qwen3tts.config import SpeechTokenizerConfig
    from qwen3tts.dev.random_model import random_tensor, speech_tokenizer_shapes, write_random_model

    small = {"decoder_dim": 768, "latent_dim": 256, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 4}
    with tempfile.TemporaryDirectory() as tmp:
        p = write_random_model(tmp, weights=False, config_overrides={"speech_tokenizer/config.json": {"decoder_config": small}})
        cfg = SpeechTokenizerConfig.from_file(p / "speech_tokenizer")
    tok = SpeechTokenizer(cfg, dtype=dtype)
    tok.load_state({k: random_tensor(k, s, 1).to(dtype) for k, s in speech_tokenizer_shapes(cfg).items()})
    return tok


def batched_push_gap(tok, codes: list) -> float:
    """The largest difference between streams pushed one frame at a time alone and the same
    streams pushed together (`push_many`), over every frame of `codes` (one (T, 16) per stream)."""
    from qwen3tts.codec.tokenizer import push_many

    alone = [tok.streaming_decoder() for _ in codes]
    together = [tok.streaming_decoder() for _ in codes]
    gap = 0.0
    for t in range(min(len(c) for c in codes)):
        want = [d.push(c[t : t + 1]) for d, c in zip(alone, codes)]
        got = push_many(together, [c[t : t + 1] for c in codes])
        gap = max([gap] + [max_abs(w, g) for w, g in zip(want, got)])
    return gap


def max_abs(a, b) -> float:
    assert tuple(a.shape) == tuple(b.shape), (tuple(a.shape), tuple(b.shape))
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def rel_err(a, b) -> float:
    """max |a - b| / max(1, max |b|): absolute for unit-scale signals, relative for large ones."""
    return max_abs(a, b) / max(1.0, b.abs().max().item())
