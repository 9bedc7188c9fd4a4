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


def max_abs(a, b) -> float:
    assert tuple(a.shape) == tuple(b.shape), (tuple(a.shape), tuple(b.shape))
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def rel_err(a, b) -> float:
    """max |a - b| / max(1, max |b|): absolute for unit-scale signals, relative for large ones."""
    return max_abs(a, b) / max(1.0, b.abs().max().item())
