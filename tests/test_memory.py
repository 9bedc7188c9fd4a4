"""Memory: each mode holds only what it computes with. Checked on real parameter / buffer
inventories of the tiny model: a quantized talker keeps no float copy of a quantized weight;
checkpoints are read without memory maps (TensorFile, equal to safetensors' own reader); a
bfloat16 checkpoint's text embedding stays bfloat16 in a float32 model with identical output."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import TINY_MODEL
from qwen3tts import Qwen3TTS
from qwen3tts import weights as W
from qwen3tts.quant import Int8Linear, W8A8Linear

GREEDY = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=8, language="English")
# float tensors a quantized talker computes with: lookup tables, norms, the prefill-only text
# projection; every other float tensor would be a leftover copy of a quantized weight
FLOAT_OK = ("model.text_embedding.", "model.codec_embedding.", "code_predictor.model.codec_embedding.", "layernorm.",
            "q_norm.", "k_norm.", "qk_norm_weight", "model.norm.", "text_projection.")


def _inventory(module):
    seen = {}
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        seen[name] = t
    return seen


@pytest.mark.parametrize("mode", ["int8", "w8a8"])
def test_quantized_talker_holds_no_float_copies(mode):
    tts = Qwen3TTS.from_pretrained(TINY_MODEL, quantize=mode)
    inv = _inventory(tts.talker)
    quantized = [m for m in tts.talker.modules() if isinstance(m, (Int8Linear, W8A8Linear)) or type(m).__name__ == "NativeW8A8Linear"]
    cfg = tts.config.talker
    # every decoder-layer projection and every head is quantized: 4 per layer, codec head, 15 heads
    n_layers = cfg.num_hidden_layers + cfg.code_predictor.num_hidden_layers
    assert len(quantized) == 4 * n_layers + 1 + (cfg.code_predictor.num_code_groups - 1)
    assert not any(isinstance(m, torch.nn.Linear) and not name.startswith("text_projection.")
                   for name, m in tts.talker.named_modules())
    floats = {n: t for n, t in inv.items() if t.is_floating_point() and t.dim() >= 1}
    leftovers = sorted(n for n in floats if not any(k in n for k in FLOAT_OK) and not n.endswith(("scales", "bias")))
    assert leftovers == []
    # no float tensor anywhere in the talker has the shape of a quantized weight
    qshapes = {(m.out_features, m.in_features) for m in quantized}
    assert not [n for n, t in floats.items() if t.dim() == 2 and tuple(t.shape) in qshapes and "embedding" not in n]
    # each quantized linear holds its weight once, in int8 (the native layout pads rows)
    for m in quantized:
        q = m.quantized_weight()[0] if isinstance(m, W8A8Linear) else getattr(m, "weight_int8", getattr(m, "weight_q", None))
        assert q.dtype == torch.int8 and q.shape[0] == m.out_features and m.in_features <= q.shape[1] < m.in_features + 256


def test_tensor_file_reads_what_safetensors_reads(monkeypatch):
    monkeypatch.setattr(W, "PIECE_BYTES", 1000)  # many pieces per tensor (conversion path too)
    path = TINY_MODEL / "model.safetensors"
    tf = W.TensorFile(path)
    with safe_open(str(path), framework="pt") as f:
        assert sorted(tf) == sorted(f.keys())
        for k in f.keys():
            ref = f.get_tensor(k)
            assert tf.shape(k) == tuple(ref.shape) and tf.dtype(k) == ref.dtype
            assert torch.equal(tf[k], ref)
            if ref.is_floating_point():
                assert torch.equal(tf.read(k, torch.bfloat16), ref.to(torch.bfloat16))
    sub = tf.view("talker.model.")
    assert "norm.weight" in sub and torch.equal(sub["norm.weight"], tf["talker.model.norm.weight"])


def test_loading_keeps_no_file_mapped():
    tts = Qwen3TTS.from_pretrained(TINY_MODEL)
    maps = open("/proc/self/maps").read()
    assert str(TINY_MODEL / "model.safetensors") not in maps
    assert str(TINY_MODEL / "speech_tokenizer" / "model.safetensors") not in maps
    assert not any(t.is_meta for t in _inventory(tts.talker).values())


def _copy_model(dst, dtype):
    """The tiny model with every float tensor rounded to bfloat16, stored as `dtype`."""
    shutil.copytree(TINY_MODEL, dst)
    for rel in ("model.safetensors", "speech_tokenizer/model.safetensors"):
        with safe_open(str(TINY_MODEL / rel), framework="pt") as f:
            ts = {k: f.get_tensor(k) for k in f.keys()}
        save_file({k: (v.to(torch.bfloat16).to(dtype) if v.is_floating_point() else v).contiguous() for k, v in ts.items()}, str(dst / rel))
    return dst


def test_bf16_text_embedding_is_kept_and_exact(tmp_path):
    a = Qwen3TTS.from_pretrained(_copy_model(tmp_path / "bf16", torch.bfloat16))
    b = Qwen3TTS.from_pretrained(_copy_model(tmp_path / "f32", torch.float32))
    assert a.talker.model.text_embedding.weight.dtype == torch.bfloat16  # half the bytes
    assert b.talker.model.text_embedding.weight.dtype == torch.float32
    for m in (a, b):  # everything else is the model dtype
        assert all(t.dtype == torch.float32 for n, t in _inventory(m.talker).items() if t.is_floating_point() and "text_embedding" not in n)
    ra, rb = a.generate("Memory check.", **GREEDY), b.generate("Memory check.", **GREEDY)
    assert torch.equal(ra.codes, rb.codes) and torch.equal(ra.audio, rb.audio)
