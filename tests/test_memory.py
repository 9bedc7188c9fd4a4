"""Memory: each mode holds only what it computes with. Checked on real parameter / buffer
inventories of the tiny model: a quantized talker keeps no float copy of a quantized weight;
checkpoints are read without memory maps (TensorFile, equal to safetensors' own reader); a
bfloat16 checkpoint's text embedding stays bfloat16 in a float32 model with identical output,
and stays in the file (rows read per lookup); the codec encoder is read when a voice needs it,
only the codebooks it uses and their centroids, and not kept (QWEN3TTS_KEEP_ENCODER keeps
it); the codec decoder's oneDNN-packed weights have no float32 twins (state_dict still gives
them, exactly), and Winograd keeps its packed channel mixes without the transformed weight."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import TINY_MODEL
from qwen3tts import Qwen3TTS
from qwen3tts import weights as W
from qwen3tts.native import dnn
from qwen3tts.quant import Int8Linear, W8A8Linear

GREEDY = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=8, language="English")
# float tensors a quantized talker computes with: lookup tables, norms, the prefill-only text
# projection; every other float tensor would be a leftover copy of a quantized weight
FLOAT_OK = ("model.text_embedding.", "model.codec_embedding.", "code_predictor.model.codec_embedding.", "layernorm.",
            "q_norm.", "k_norm.", "qk_norm_weight", "model.norm.", "text_projection.")


@pytest.fixture
def tiny_codec_fresh():
    from qwen3tts import SpeechTokenizer

    return SpeechTokenizer.from_pretrained(TINY_MODEL / "speech_tokenizer")


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
    # each quantized linear holds its weight once, in int8 (the native layout pads rows and row groups)
    for m in quantized:
        q = m.quantized_weight()[0] if isinstance(m, W8A8Linear) else getattr(m, "weight_int8", getattr(m, "weight_q", None))
        assert q.dtype == torch.int8 and m.in_features * m.out_features <= q.numel() < (m.in_features + 256) * (m.out_features + 4)


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


def test_text_embedding_stays_in_the_file_and_reads_exact_rows(tmp_path):
    from qwen3tts.weights import FileEmbedding, TensorFile

    tts = Qwen3TTS.from_pretrained(TINY_MODEL)
    emb = tts.talker.model.text_embedding
    assert isinstance(emb, FileEmbedding)
    assert not [n for n in _inventory(tts.talker) if "text_embedding" in n]  # no table in memory
    table = TensorFile(TINY_MODEL / "model.safetensors").read("talker.model.text_embedding.weight")
    ref = torch.nn.Embedding.from_pretrained(table.to(emb.dtype))
    for ids in (torch.tensor(5), torch.tensor([3, 3, 0, table.shape[0] - 1]), torch.randint(0, table.shape[0], (2, 7))):
        assert torch.equal(emb(ids), ref(ids))
    assert torch.equal(emb.weight, table.to(emb.dtype))
    with pytest.raises(IndexError):
        emb(torch.tensor([table.shape[0]]))
    # built in memory (a dict of tensors), the table is an ordinary parameter
    a = _copy_model(tmp_path / "bf16", torch.bfloat16)
    e2 = FileEmbedding(TensorFile(a / "model.safetensors").view("talker."), "model.text_embedding.weight", torch.bfloat16)
    ids = torch.randint(0, table.shape[0], (9,))
    assert torch.equal(e2(ids), table.to(torch.bfloat16)[ids])


def test_codec_encoder_is_loaded_when_a_voice_needs_it():
    from qwen3tts.codec.tokenizer import SpeechTokenizer

    tts = Qwen3TTS.from_pretrained(TINY_MODEL)
    tok = tts.speech_tokenizer
    assert not tok.encoder_loaded()
    wav = (torch.sin(torch.arange(24000) / 7.0) * 0.2).numpy()
    tts.create_voice_prompt((wav, 24000), x_vector_only=True)
    assert not tok.encoder_loaded()  # an x-vector voice needs no codes
    voice = tts.create_voice_prompt((wav, 24000), ref_text="Reference words.")
    assert not tok.encoder_loaded()  # loaded for the encode, released after it
    # the lazily loaded encoder is the one loaded from tensors in memory, each time it is loaded
    path = TINY_MODEL / "speech_tokenizer" / "model.safetensors"
    eager = SpeechTokenizer(tok.config)
    eager.load_state(dict(W.TensorFile(path).items()))
    assert eager.encoder_loaded() and eager._encoder_tensors is None  # the dict is not kept
    assert torch.equal(voice.ref_codes, eager.encode(wav, 24000))
    assert eager.encoder_loaded()  # nothing to reload it from: it stays
    again = tts.create_voice_prompt((wav, 24000), ref_text="Reference words.")
    assert torch.equal(again.ref_codes, voice.ref_codes) and not tok.encoder_loaded()
    assert all(torch.equal(a, b) for a, b in zip(tok.encoder.state_dict().values(), eager.encoder.state_dict().values()))
    assert tok.encoder_loaded()  # asked for by name: kept
    assert torch.equal(tok.encode(wav, 24000), voice.ref_codes) and tok.encoder_loaded()


def test_codec_encoder_per_call_holds_only_what_it_computes_with():
    """`encode` without a kept encoder reads only the codebooks it uses and keeps their
    centroids, not the checkpoint's sums: the same codes as the whole encoder."""
    tok = Qwen3TTS.from_pretrained(TINY_MODEL).speech_tokenizer
    cfg = tok.config.encoder
    wav = (torch.randn(36000, generator=torch.Generator().manual_seed(3)) * 0.2).numpy()
    per_call = {n: tok.encode(wav, 24000, num_quantizers=n) for n in (1, cfg.num_semantic_quantizers + 2, cfg.num_quantizers)}
    assert not tok.encoder_loaded()
    whole = tok.encoder
    assert {n: torch.equal(c, tok.encode(wav, 24000, num_quantizers=n)) for n, c in per_call.items()} == dict.fromkeys(per_call, True)
    n = cfg.num_semantic_quantizers + 2
    lean = tok._build_encoder(n)
    names = [k for k, _ in lean.named_buffers()]
    assert not [k for k in names if k.endswith(("embed_sum", "cluster_usage"))]
    assert sum(k.endswith("codebook.embed") for k in names) == n < sum(k.endswith("codebook.embed") for k, _ in whole.named_buffers())
    held = sum(t.numel() * t.element_size() for t in list(lean.parameters()) + list(lean.buffers()))
    assert held < sum(t.numel() * t.element_size() for t in list(whole.parameters()) + list(whole.buffers()))
    with pytest.raises(ValueError, match="keeps"):
        lean.encode(torch.zeros(1, 1, 4800), num_quantizers=n + 1)


def test_codec_encoder_is_kept_when_asked():
    from qwen3tts import options

    tts = Qwen3TTS.from_pretrained(TINY_MODEL)
    tok = tts.speech_tokenizer
    wav = (torch.sin(torch.arange(24000) / 5.0) * 0.2).numpy()
    released = tok.encode(wav, 24000)
    assert not tok.encoder_loaded()
    with options.override(keep_encoder=True):
        assert torch.equal(tok.encode(wav, 24000), released)
        assert tok.encoder_loaded()
    assert options.from_env({"QWEN3TTS_KEEP_ENCODER": "1"}).keep_encoder
    assert not options.from_env({}).keep_encoder


def _packed(tok):
    from qwen3tts.codec.layers import CausalConv1d, CausalConvTranspose1d
    from qwen3tts.ops import Linear as FewRowsLinear

    mods = [m for m in tok.decoder.modules() if isinstance(m, (FewRowsLinear, CausalConvTranspose1d))
            or (isinstance(m, CausalConv1d) and m.conv.kernel_size[0] == 1)]
    return mods, [getattr(m, "conv", m).weight for m in mods]


def _from_file(k):
    """Decoder tensor `k` from the checkpoint (q|k|v and gate|up fused along the rows)."""
    file = W.TensorFile(TINY_MODEL / "speech_tokenizer" / "model.safetensors").view("decoder.")
    for fused, parts in (("qkv_proj.", "qkv"), ("gate_up_proj.", ("gate", "up"))):
        if fused in k:
            return torch.cat([file[k.replace(fused, f"{p}_proj.")] for p in parts])
    return file[k]


@pytest.mark.skipif(not dnn.enabled(), reason="oneDNN products are off or absent in this torch")
def test_codec_packed_weights_have_no_float_twins(tiny_codec_fresh):
    tok = tiny_codec_fresh
    mods, weights = _packed(tok)
    assert len(mods) > 10 and all(w.is_meta for w in weights)  # the packed copy is the only copy
    assert all("_dnn" in m.__dict__ for m in mods)
    held = {n for n, t in tok.decoder.state_dict(keep_vars=True).items() if t.is_meta}
    assert held == set()  # state_dict gives the weights (rebuilt from the packed copies)
    for k, t in tok.decoder.state_dict().items():
        assert torch.equal(t, _from_file(k)), k
    codes = torch.randint(0, tok.config.decoder.codebook_size, (12, 16), generator=torch.Generator().manual_seed(1))
    y = tok.decode(codes)
    assert all(w.is_meta for w in _packed(tok)[1])  # decoding packs nothing again


def test_codec_packed_weights_come_back_when_onednn_goes_off(tiny_codec_fresh, monkeypatch):
    """oneDNN's ops failing at run time switch it off for the process (dnn._switch_off): every
    packed-only weight is rebuilt in place and the next backend of the plan's chain reads it."""
    tok = tiny_codec_fresh
    codes = torch.randint(0, tok.config.decoder.codebook_size, (12, 16), generator=torch.Generator().manual_seed(2))
    y = tok.decode(codes)
    monkeypatch.setattr(dnn._have_ops, "ok", True)  # restored (on) after the test
    with pytest.warns(RuntimeWarning, match="oneDNN products unavailable"):
        dnn._switch_off(RuntimeError("simulated failure"))
    y_off = tok.decode(codes)
    assert not any(w.is_meta for w in _packed(tok)[1])
    assert all(torch.equal(t, _from_file(k)) for k, t in tok.decoder.state_dict().items())
    assert (y - y_off).abs().max() < 1e-5


def test_winograd_keeps_packed_mixes_without_u(monkeypatch, expected):
    from qwen3tts import SpeechTokenizer
    from qwen3tts.codec import winograd

    if not dnn.enabled():
        pytest.skip("oneDNN products are off or absent in this torch")
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    monkeypatch.setattr(winograd, "MIN_ROWS", 1)
    monkeypatch.setattr(winograd, "FUSED_MAX_CHANNELS", 0)  # the channel mixes in oneDNN (packed)
    tok = SpeechTokenizer.from_pretrained(TINY_MODEL / "speech_tokenizer")
    wav = tok.decode(expected["decode.codes"])
    caches = [m.__dict__["_winograd"] for m in tok.decoder.modules() if "_winograd" in m.__dict__]
    assert caches and all(c[1] is None and isinstance(c[2], list) for c in caches)  # U dropped once packed
    assert (wav - expected["decode.wav"]).abs().max() < 1e-4
