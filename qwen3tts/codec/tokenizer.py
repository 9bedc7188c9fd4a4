"""`SpeechTokenizer`: the public face of the 12 Hz codec (`Qwen3TTSTokenizer` +
`Qwen3TTSTokenizerV2Model` in the official package).

    tok = SpeechTokenizer.from_pretrained(model_dir / "speech_tokenizer")
    codes = tok.encode(wav, sample_rate)          # (T, 16) int64, T = ceil(L_24k / 1920)
    wav = tok.decode(codes)                       # (T * 1920,) float32, exact single pass
    wav = tok.decode(codes, chunk_size=300, left_context=25)   # the official chunked decode
    dec = tok.streaming_decoder(); dec.push(codes[:3]); dec.push(codes[3:])  # == decode(codes)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .. import ops, options
from ..audio import load_audio
from ..config import SpeechTokenizerConfig
from ..weights import check_names, load_into, read_on_access, read_safetensors, release_freed_memory, split_by_prefix
from .decoder import CodecDecoder
from .encoder import CodecEncoder
from .layers import CausalConv1d, CausalConvTranspose1d, StreamState

# Checkpoint tensors that inference never reads.
_UNUSED = [
    r"encoder\.quantizer\.\w+\.output_proj\.weight",
    r"encoder\.quantizer\.\w+\.layers\.\d+\.codebook\.initialized",
]
_ENCODER_UNUSED = [p.replace(r"encoder\.", "", 1) for p in _UNUSED]
# An offline decode of at least this many frames (4 s) first gives the C heap's free pages back
# to the system (malloc_trim): freed chunks left by earlier work would otherwise sit under its
# peak. Shorter decodes skip it: their peak is small, and a trim costs milliseconds.
TRIM_BEFORE_FRAMES = 50


def _as_codes(codes, num_quantizers: int) -> torch.Tensor:
    c = torch.as_tensor(codes)
    if c.dim() != 2 or c.shape[1] != num_quantizers:
        raise ValueError(f"codes must have shape (T, {num_quantizers}), got {tuple(c.shape)}")
    if c.is_floating_point():
        raise ValueError("codes must be integers")
    return c.long()


class StreamingDecoder:
    """Exact incremental decoder: `push(codes (n, 16)) -> (n * 1920,)`; any split of a sequence
    gives the samples of one offline `decode` (fp32: within 1e-5). Holds its own state."""

    def __init__(self, tok: "SpeechTokenizer"):
        self.tok = tok
        self.state: StreamState = tok.decoder.init_state(1)

    @property
    def frames(self) -> int:
        return self.state.pos

    def reset(self) -> None:
        self.state.reset()

    @torch.inference_mode()
    def push(self, codes) -> torch.Tensor:
        c = _as_codes(codes, self.tok.num_quantizers).to(self.tok.device)
        if c.shape[0] == 0:
            return torch.zeros(0)
        self.tok._check_range(c)
        return self.tok.decoder.step(c.T[None], self.state)[0].float().cpu()


def push_many(decoders: list[StreamingDecoder], codes: list) -> list[torch.Tensor]:
    """`[d.push(c) for d, c in zip(decoders, codes)]` in one batched pass per chunk length: the
    sessions' states are stacked, decoded together (each row at its own position) and written
    back. Equal to the separate pushes (tested)."""
    if len(decoders) != len(codes):
        raise ValueError("one chunk of codes per decoder")
    if len(decoders) <= 1:
        return [d.push(c) for d, c in zip(decoders, codes)]
    tok = decoders[0].tok
    cs = [_as_codes(c, tok.num_quantizers).to(tok.device) for c in codes]
    out: list[torch.Tensor | None] = [None] * len(decoders)
    groups: dict[int, list[int]] = {}
    for i, c in enumerate(cs):
        tok._check_range(c)
        groups.setdefault(c.shape[0], []).append(i)
    with torch.inference_mode():
        for n, idx in groups.items():
            if n == 0:
                for i in idx:
                    out[i] = torch.zeros(0)
                continue
            states = [decoders[i].state for i in idx]
            st = StreamState.stack(states)
            wav = tok.decoder.step(torch.stack([cs[i].T for i in idx]), st)  # (B, n * 1920)
            st.unstack(states)
            host = wav.float().cpu()
            for b, i in enumerate(idx):
                out[i] = host[b]
    return out


class SpeechTokenizer:
    def __init__(self, config: SpeechTokenizerConfig, device="cpu", dtype=torch.float32):
        self.config = config
        self.device = torch.device(device)
        self.dtype = dtype
        self.decoder = CodecDecoder(config.decoder).to(self.device, dtype).eval().requires_grad_(False)
        self._encoder: CodecEncoder | None = None
        self._encoder_tensors = None  # where a lazily loaded encoder's weights are read from
        self.num_quantizers = config.decoder.num_quantizers
        self.samples_per_frame = config.decode_upsample_rate
        self.sample_rate = config.output_sample_rate
        if self.decoder.samples_per_frame != self.samples_per_frame:
            raise ValueError("decoder upsampling does not match decode_upsample_rate")

    @classmethod
    def from_pretrained(cls, path, device="cpu", dtype=torch.float32) -> "SpeechTokenizer":
        """`path`: the `speech_tokenizer/` folder (config.json + model.safetensors)."""
        path = Path(path)
        if (path / "speech_tokenizer" / "config.json").exists() and not (path / "model.safetensors").exists():
            path = path / "speech_tokenizer"
        tok = cls(SpeechTokenizerConfig.from_file(path), device=device, dtype=dtype)
        tok.load_state(read_safetensors(path / "model.safetensors"))
        return tok

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load the checkpoint (a dict or a weights.TensorFile). From a file the encoder is only
        checked here and loaded on first use (`encoder`): it serves only voice creation."""
        enc, dec = split_by_prefix(tensors, ("encoder.", "decoder."), "speech tokenizer checkpoint")
        load_into(self.decoder, dec, what="speech tokenizer decoder")
        self.decoder.quantizer.refresh()
        self.decoder.pre_transformer.fuse()
        if self.device.type == "cpu":
            for m in self.decoder.modules():
                if isinstance(m, (CausalConv1d, CausalConvTranspose1d)):
                    m.use_channels_last()
        # the compute plan (qwen3tts/ops), chosen once here: on CPU the decoder's products may
        # keep packed weight copies (a few rows per streaming step), the encoder's run on its weights
        plan = ops.prepare(self.decoder, packed=self.device.type == "cpu")
        ops.keep_packed_only(self.decoder, plan)  # the decoder's packed products keep no float twins
        self._encoder, self._encoder_tensors = None, enc
        if read_on_access(enc):  # read on access: nothing held until then
            with torch.device("meta"):  # the names and shapes only: no storage
                check_names(CodecEncoder(self.config.encoder), enc, ignore=_ENCODER_UNUSED, what="speech tokenizer encoder")
        else:  # tensors in memory: load now (keeping them for later would hold them anyway)
            self._load_encoder()

    @property
    def encoder(self) -> CodecEncoder:
        """The codec encoder (waveform -> codes), whole, loaded on first use and kept (`encode`
        without it loads the parts it needs per call)."""
        if self._encoder is None:
            self._load_encoder()
        return self._encoder

    @encoder.setter
    def encoder(self, module: CodecEncoder) -> None:
        self._encoder, self._encoder_tensors = module, None

    def encoder_loaded(self) -> bool:
        return self._encoder is not None

    def _load_encoder(self) -> None:
        self._encoder = self._build_encoder()
        # a read-on-access source (a file) is kept: `encode` loads from it per call; tensors in
        # memory are not (holding them would hold the weights twice)
        if not read_on_access(self._encoder_tensors):
            self._encoder_tensors = None

    def _build_encoder(self, num_quantizers: int | None = None) -> CodecEncoder:
        """The encoder, loaded from the checkpoint (initialised without one). `num_quantizers`
        (a checkpoint read on access only): just what `encode(num_quantizers)` reads, for one
        call: the codebooks past them are not read, the others keep only their centroids."""
        lean = num_quantizers is not None and read_on_access(self._encoder_tensors)
        if self._encoder_tensors is None:  # no checkpoint (a tokenizer built without weights): initialised weights
            enc = CodecEncoder(self.config.encoder).to(self.device, self.dtype).eval().requires_grad_(False)
        else:
            with torch.device("meta"):  # storage is made by load_into, in the model dtype
                enc = CodecEncoder(self.config.encoder).to(dtype=self.dtype).eval().requires_grad_(False)
            if lean:  # (the names were checked against the whole encoder in load_state)
                enc.keep_quantizers(num_quantizers)
            load_into(enc, self._encoder_tensors, what="speech tokenizer encoder", ignore=_ENCODER_UNUSED, device=self.device,
                      only_meta=lean)
            for m in enc.modules():  # the buffers not in the checkpoint (made by `refresh` below)
                for k, b in m._buffers.items():
                    if b is not None and b.is_meta:
                        m._buffers[k] = torch.empty_like(b, device=self.device)
        if lean:
            enc.keep_centroids_only()
        else:
            enc.quantizer.refresh()
        ops.prepare(enc)  # the compute plan: the encoder's products run on its weights as they are
        return enc

    # ---- helpers
    def _check_range(self, c: torch.Tensor) -> None:
        size = self.config.decoder.codebook_size
        if c.numel() and (int(c.max()) >= size or int(c.min()) < 0):
            raise ValueError(f"codes must be in [0, {size}), got range [{int(c.min())}, {int(c.max())}]")

    # ---- encode
    @torch.inference_mode()
    def encode(self, wav, sample_rate: int | None = None, taps: dict | None = None, num_quantizers: int | None = None) -> torch.Tensor:
        """Waveform (1-D tensor/array, a path, or (samples, rate)) -> LongTensor (T, 16)."""
        x = load_audio(wav, sample_rate, target_rate=self.config.encoder.sampling_rate)
        n = self.config.encoder_valid_num_quantizers if num_quantizers is None else num_quantizers
        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device, self.dtype)[None, None]  # (1, 1, L)
        if self._encoder is None and self._encoder_tensors is not None and not options.current().keep_encoder:
            # voices are made rarely: the encoder is read from the file for this call (only the
            # parts it computes with) and not kept (QWEN3TTS_KEEP_ENCODER=1 keeps it loaded)
            enc = self._build_encoder(n)
            codes = enc.encode(t, num_quantizers=n, taps=taps)  # (n, 1, T)
            del enc
            release_freed_memory()
        else:
            codes = self.encoder.encode(t, num_quantizers=n, taps=taps)  # (n, 1, T)
        frames = math.ceil(x.shape[0] / self.config.encode_downsample_rate)
        return codes[:, 0, :frames].T.contiguous().cpu()  # (T, n)

    # ---- decode
    @torch.inference_mode()
    def decode(self, codes, chunk_size: int | None = None, left_context: int = 25, taps: dict | None = None) -> torch.Tensor:
        """LongTensor (T, 16) -> FloatTensor (T * 1920,). Exact single pass by default; with
        `chunk_size` the official `chunked_decode(chunk_size, left_context)` (official `decode`
        uses 300 / 25, which differs from the exact pass after each 300-frame boundary)."""
        c = _as_codes(codes, self.num_quantizers).to(self.device)
        self._check_range(c)
        c = c.T[None]  # (1, 16, T)
        if c.shape[-1] >= TRIM_BEFORE_FRAMES:  # the heap's free pages (e.g. a finished stream's) go back first
            release_freed_memory()
        if chunk_size is None:
            wav = self.decoder.decode(c, taps=taps)
        else:
            wav = self.decoder.chunked_decode(c, chunk_size, left_context)
        return wav[0].float().cpu()

    def streaming_decoder(self) -> StreamingDecoder:
        return StreamingDecoder(self)
