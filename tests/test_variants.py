"""The other 12 Hz checkpoints of the family, at their real shapes with random weights (bf16,
built in memory): 1.7B-Base (x-vector 2048 wide, 2048 -> 1024 projection into the predictor),
CustomVoice (preset speakers, dialect rule, instruct on 1.7B) and VoiceDesign (instruct)."""

from __future__ import annotations

import gc

import pytest
import torch

from qwen3tts.dev.random_model import VARIANTS, random_tts, write_random_model

pytestmark = pytest.mark.slow
GREEDY = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=3)


def build(tmp_path, preset):
    return random_tts(write_random_model(tmp_path / preset, preset=preset, weights=False), seed=1, dtype=torch.bfloat16)


def test_presets_listed():
    assert set(VARIANTS) == {"0.6b-base", "1.7b-base", "0.6b-customvoice", "1.7b-customvoice", "1.7b-voicedesign"}


def test_1_7b_base(tmp_path):
    tts = build(tmp_path, "1.7b-base")
    assert tts.talker.model.text_embedding.weight.shape == (151936, 2048) and tts.talker.codec_head.weight.shape == (3072, 2048)
    assert isinstance(tts.talker.code_predictor.small_to_mtp_projection, torch.nn.Linear)
    wav = torch.sin(torch.arange(24000 * 3) / 9.0) * 0.2
    voice = tts.create_voice_prompt((wav, 24000), x_vector_only=True)
    assert voice.speaker_embedding.shape == (2048,)
    out = tts.generate("Hello.", language="English", voice=voice, **GREEDY)
    assert out.codes.shape == (2, 16) and out.audio.shape == (2 * 1920,)
    del tts
    gc.collect()


@pytest.mark.parametrize("preset", ["0.6b-customvoice", "1.7b-customvoice"])
def test_custom_voice(tmp_path, preset):
    tts = build(tmp_path, preset)
    assert tts.speaker_encoder is None and "ryan" in tts.speakers
    out = tts.generate("Hello.", language="English", speaker="Ryan", **GREEDY)
    assert out.codes.shape == (2, 16)
    # a dialect speaker speaking Chinese uses its dialect id in the prompt
    p_dialect = tts._prompt("你好", "Chinese", None, True, "Dylan")
    p_plain = tts._prompt("你好", "Chinese", None, True, "Ryan")
    assert p_dialect.prefill.shape == p_plain.prefill.shape and not torch.equal(p_dialect.prefill[5], p_plain.prefill[5])
    with pytest.raises(ValueError, match="needs speaker"):
        tts.generate("Hello.", **GREEDY)
    with pytest.raises(ValueError, match="unknown speaker 'nobody'"):
        tts.generate("Hello.", speaker="nobody", **GREEDY)
    if preset.startswith("1.7b"):
        out = tts.generate("Hello.", language="English", speaker="Ryan", instruct="Very happy.", **GREEDY)
        assert out.codes.shape == (2, 16)
        n_instr = len(tts.text_tokenizer.encode(tts.text_tokenizer.instruct_text("Very happy.")))
        assert tts._prompt("Hello.", "English", None, True, "Ryan", "Very happy.").prefill.shape[0] == \
            tts._prompt("Hello.", "English", None, True, "Ryan").prefill.shape[0] + n_instr
    else:
        with pytest.raises(ValueError, match="does not take instruct"):
            tts.generate("Hello.", speaker="Ryan", instruct="Very happy.", **GREEDY)
    del tts
    gc.collect()


def test_voice_design(tmp_path):
    tts = build(tmp_path, "1.7b-voicedesign")
    out = tts.generate("Hello.", language="English", instruct="A calm, deep male voice.", **GREEDY)
    assert out.codes.shape == (2, 16) and torch.isfinite(out.audio).all()
    with pytest.raises(ValueError, match="Base checkpoint"):
        from qwen3tts.voice import VoicePrompt

        tts.generate("Hello.", voice=VoicePrompt(torch.zeros(2048), mode="xvector"), **GREEDY)
    del tts
    gc.collect()
