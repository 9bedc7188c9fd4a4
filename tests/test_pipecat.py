"""`qwen3tts.integrations.pipecat.Qwen3TTSService` in a real Pipecat pipeline against a live speak
server on the tiny fixture: text in -> `TTSAudioRawFrame`s at the pipeline's rate; an
interruption mid-utterance cancels the request and no audio follows it."""

from __future__ import annotations

import asyncio

import pytest

from conftest import TINY_MODEL

pytest.importorskip("pipecat", reason="pipecat-ai is not installed (pip install 'qwen3tts[pipecat]')")

from pipecat.frames.frames import (  # noqa: E402
    EndFrame,
    ErrorFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

from qwen3tts.integrations.pipecat import Qwen3TTSService  # noqa: E402
from qwen3tts.server.app import ServerConfig  # noqa: E402
from server_util import ServerThread  # noqa: E402

SHORT, LONG = 8, 400  # talker frames per request on the two servers


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    short = ServerThread(ServerConfig(model=str(TINY_MODEL), voices_dir=str(tmp_path_factory.mktemp("v1")), greedy=True, max_new_tokens=SHORT))
    long = ServerThread(ServerConfig(model=str(TINY_MODEL), voices_dir=str(tmp_path_factory.mktemp("v2")), greedy=True, max_new_tokens=LONG))
    yield short, long
    short.stop()
    long.stop()


class Collector(FrameProcessor):
    """Records what comes out of the TTS; after `interrupt_after` audio frames it interrupts the
    bot as a user starting to speak would (an `InterruptionFrame` both ways)."""

    def __init__(self, interrupt_after: int | None = None):
        super().__init__()
        self.frames: list = []
        self.interrupt_after = interrupt_after
        self.interrupted = asyncio.Event()

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            self.frames.append(frame)
            n = sum(isinstance(f, TTSAudioRawFrame) for f in self.frames)
            if self.interrupt_after is not None and n == self.interrupt_after and not self.interrupted.is_set():
                self.interrupted.set()
                self.frames.append("interrupted")
                await self.broadcast_interruption()
                return
        await self.push_frame(frame, direction)


async def run_pipeline(tts, collector, frames, rate, after=None):
    worker = PipelineWorker(Pipeline([tts, collector]), cancel_on_idle_timeout=False, params=PipelineParams(audio_out_sample_rate=rate))
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(worker, frame):
        started.set()

    async def feed():
        await asyncio.wait_for(started.wait(), 30)
        for f in frames:
            await worker.queue_frame(f)
        if after is not None:
            await after()
        await worker.queue_frame(EndFrame())

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.wait_for(asyncio.gather(runner.run(), feed()), 300)


@pytest.mark.parametrize("rate", [16000, 24000])
def test_text_in_audio_frames_out(servers, rate):
    short, _ = servers
    tts = Qwen3TTSService(url=short.ws_url)
    col = Collector()
    asyncio.run(run_pipeline(tts, col, [TTSSpeakFrame("Hello from Pipecat.")], rate))
    audio = [f for f in col.frames if isinstance(f, TTSAudioRawFrame)]
    kinds = [type(f) for f in col.frames]
    assert not [f for f in col.frames if isinstance(f, ErrorFrame)]
    assert audio and all(f.sample_rate == rate and f.num_channels == 1 and len(f.audio) > 0 for f in audio)
    samples = sum(len(f.audio) for f in audio) // 2
    want = (SHORT - 1) * 1920 * rate // 24000  # no end of speech on the random model: SHORT - 1 frames
    assert abs(samples - want) <= 2, (samples, want)
    assert kinds.index(TTSStartedFrame) < kinds.index(TTSAudioRawFrame)
    assert max(i for i, k in enumerate(kinds) if k is TTSAudioRawFrame) < kinds.index(TTSStoppedFrame)


def test_interruption_cancels_and_stops_audio(servers):
    _, long = servers
    tts = Qwen3TTSService(url=long.ws_url, sample_rate=16000)
    col = Collector(interrupt_after=3)

    async def after():
        await asyncio.wait_for(col.interrupted.wait(), 120)
        await asyncio.sleep(2.0)  # anything still in flight would arrive now

    asyncio.run(run_pipeline(tts, col, [TTSSpeakFrame("A long sentence that will be interrupted by the user.")], 16000, after))
    cut = col.frames.index("interrupted")
    before = [f for f in col.frames[:cut] if isinstance(f, TTSAudioRawFrame)]
    later = [f for f in col.frames[cut:] if isinstance(f, TTSAudioRawFrame)]
    assert len(before) == 3 and later == []
    assert long.server.metrics.errors.get("CANCELLED") == 1  # the server was told: `cancel` reached it
