"""Time the official `qwen-tts` package (0.1.1) in the current process, on a model directory,
the way `../shared/reference/bench_reference.py` does; used by `bench.py --compare-official`.

Talker + code predictor: `Qwen3TTSForConditionalGeneration.generate` on an ICL voice-clone
prompt (built once, untimed), greedy, EOS made unreachable so exactly `frames` frames come out;
a forward hook on the talker stamps the prefill and every frame (code predictor of the previous
frame + one talker step). Codec: `speech_tokenizer.decode` of the generated codes.

Needs `qwen-tts==0.1.1` and its `transformers==4.57.3` importable (e.g. a venv created with
`--system-site-packages` so it also sees torch and qwen3tts). `qwen_tts` imports `torchaudio`
at import time for its unused 25 Hz tokenizer; when torchaudio is missing an empty stand-in is
registered (as the reference README does), which is enough for the 12 Hz model.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path


class OfficialUnavailable(RuntimeError):
    pass


def _stub_torchaudio() -> bool:
    """An empty `torchaudio` package on sys.path when the real one is missing."""
    if importlib.util.find_spec("torchaudio") is not None:
        return False
    root = Path(tempfile.mkdtemp(prefix="torchaudio-stub-"))
    (root / "torchaudio" / "compliance").mkdir(parents=True)
    for f in ("torchaudio/__init__.py", "torchaudio/compliance/__init__.py", "torchaudio/compliance/kaldi.py"):
        (root / f).write_text("")
    sys.path.append(str(root))
    return True


def load(model_dir):
    stubbed = _stub_torchaudio()
    try:
        import torch
        from qwen_tts import Qwen3TTSModel
    except Exception as e:  # noqa: BLE001
        raise OfficialUnavailable(
            f"--compare-official needs the official package: pip install qwen-tts==0.1.1 transformers==4.57.3 "
            f"(in a venv with --system-site-packages) [{type(e).__name__}: {e}]") from e
    tts = Qwen3TTSModel.from_pretrained(str(model_dir), local_files_only=True, dtype=torch.float32)
    return tts, stubbed


def time_generate(tts, text: str, ref_wav, ref_text: str, frames: int, repeats: int, warmup: int = 1):
    """-> (codes (frames, 16), per-frame seconds over the timed runs, prefill seconds)."""
    m = tts.model
    tc = m.config.talker_config
    prompt = tts.create_voice_clone_prompt(ref_audio=(ref_wav, 24000), ref_text=ref_text, x_vector_only_mode=False)
    prompt_dict = tts._prompt_items_to_voice_clone_prompt(prompt)
    input_ids = tts._tokenize_texts([tts._build_assistant_text(text)])
    ref_ids = tts._tokenize_texts([tts._build_ref_text(ref_text)])
    never = tc.vocab_size - 1 if tc.vocab_size - 1 != tc.codec_eos_token_id else tc.vocab_size - 2  # a suppressed id
    stamps: list[float] = []
    handle = m.talker.model.register_forward_hook(lambda *a: stamps.append(time.perf_counter()))
    per_frame, prefills, codes = [], [], None
    try:
        for r in range(repeats + warmup):
            stamps.clear()
            t0 = time.perf_counter()
            out, _ = m.generate(input_ids=input_ids, ref_ids=ref_ids, voice_clone_prompt=prompt_dict, languages=["English"],
                                non_streaming_mode=False, max_new_tokens=frames + 1, do_sample=False, subtalker_dosample=False,
                                repetition_penalty=1.05, eos_token_id=never)
            codes = out[0]
            if r >= warmup:
                prefills.append(stamps[0] - t0)
                per_frame += [b - a for a, b in zip(stamps[:-1], stamps[1:])]
    finally:
        handle.remove()
    return codes, per_frame, (statistics.median(prefills) if prefills else None)


def time_decode(tts, codes, repeats: int, warmup: int = 1) -> float:
    st = tts.model.speech_tokenizer
    for _ in range(warmup):
        st.decode({"audio_codes": codes})
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        st.decode({"audio_codes": codes})
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)
