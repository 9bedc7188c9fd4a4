"""The server on the fixed-shape path: `--cuda-graphs` reaches the engine's model, the engine
picks the static batch on CUDA (auto) and bf16 weights there, and sessions served through the
static rows (forced on, on CPU) each equal their library stream."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import torch

from conftest import TINY_MODEL
from server_util import ServerThread, connect
from qwen3tts import options
from qwen3tts.config import cuda_graphs_option
from qwen3tts.cuda_graph import CodecBatch
from qwen3tts.server.app import ServerConfig
from qwen3tts.server.engine import Engine
from qwen3tts.static_batch import StaticBatch, use_graphs
from qwen3tts.voices import VoiceStore

MAX_NEW = 10


def pcm16(x):
    return (np.clip(np.asarray(x), -1, 1) * 32767.0).round().astype("<i2")


def test_flags_and_the_engine_choice_on_cuda(monkeypatch, tmp_path):
    from qwen3tts.serve import main, parse_args

    monkeypatch.delenv("QWEN3TTS_CUDA_GRAPHS", raising=False)
    options.reload()
    assert parse_args([]).cuda_graphs == "auto" and parse_args([]).dtype == "auto"
    assert parse_args(["--cuda-graphs", "off"]).cuda_graphs == "off"
    monkeypatch.setenv("QWEN3TTS_CUDA_GRAPHS", "on")
    options.reload()
    assert parse_args([]).cuda_graphs == "on"
    assert main(["--cuda-graphs", "maybe"]) == 2
    monkeypatch.setenv("QWEN3TTS_CUDA_GRAPHS", "0")  # the environment's spelling
    options.reload()
    assert cuda_graphs_option(parse_args([]).cuda_graphs) == "off"
    monkeypatch.delenv("QWEN3TTS_CUDA_GRAPHS")
    options.reload()
    gpu = Engine(str(TINY_MODEL), device="cuda", voices=VoiceStore(tmp_path / "v1"))  # not loaded: no GPU needed
    cpu = Engine(str(TINY_MODEL), device="cpu", voices=VoiceStore(tmp_path / "v2"))
    try:
        assert gpu.dtype == "bfloat16" and use_graphs(gpu.device, gpu.cuda_graphs)  # the graph path, bf16 weights
        assert cpu.dtype == "float32" and not use_graphs(cpu.device, cpu.cuda_graphs)
        off = Engine(str(TINY_MODEL), device="cuda", cuda_graphs="off", voices=VoiceStore(tmp_path / "v3"))
        assert not use_graphs(off.device, off.cuda_graphs)
        off.shutdown()
    finally:
        gpu.shutdown()
        cpu.shutdown()


def test_sessions_served_through_the_static_rows(tmp_path):
    from qwen3tts import Qwen3TTS

    eng = Engine(str(TINY_MODEL), voices=VoiceStore(tmp_path / "v"), greedy=True, max_new_tokens=MAX_NEW, cuda_graphs="on")
    s = ServerThread(ServerConfig(), eng)
    texts = {"a": "Session a is talking now.", "b": "And session b says something else.", "c": "Third!"}
    try:
        async def one(http, name):
            c = await connect(http, s.ws_url)
            await c.ready()
            await c.send({"type": "speak", "text": texts[name], "id": name})
            done = await c.type("complete")
            await c.ws.close()
            return done, bytes(c.audio)

        async def go():
            async with aiohttp.ClientSession() as http:
                return await asyncio.gather(*(one(http, k) for k in texts))
        res = asyncio.run(go())
        static = eng.tts.generator.static
        assert isinstance(static, StaticBatch) and isinstance(eng.tts.codec_batch, CodecBatch)
        assert static.rows >= 2 and not static._eager  # sessions shared the static rows
    finally:
        s.stop()
        eng.shutdown()
    lib = Qwen3TTS.from_pretrained(TINY_MODEL)
    kw = dict(language="auto", do_sample=False, subtalker_dosample=False, max_new_tokens=MAX_NEW)
    for (done, audio), (name, text) in zip(res, texts.items()):
        assert done["type"] == "complete" and done["id"] == name
        alone = pcm16(torch.cat([ch.audio for ch in lib.stream(text, **kw)])).astype(int)
        got = np.frombuffer(audio, dtype="<i2").astype(int)
        assert got.shape == alone.shape and got.size > 0 and np.abs(got - alone).max() <= 1
