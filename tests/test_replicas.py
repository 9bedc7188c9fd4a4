"""Several server processes on one voices folder (what a ReadWriteMany volume gives N pods), with
and without an HAProxy in front: same-id races, replace/delete seen everywhere, a durable store,
readiness, and the drain on SIGTERM. Real `python -m qwen3tts.serve` processes on loopback."""

from __future__ import annotations

import asyncio
import io
import json
import re

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from replica_util import HAProxy, Replica, gauges, haproxy_path, http_get

LONG_TEXT = "A long request that the shutdown will have to wait for, with many more words in it."


def clip_bytes(seconds: float = 3.2, seed: int = 0) -> bytes:
    x = (np.random.default_rng(seed).standard_normal(int(seconds * 24000)) * 0.1).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, 24000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def form(audio: bytes, **fields) -> aiohttp.FormData:
    f = aiohttp.FormData()
    f.add_field("audio", audio, filename="clip.wav", content_type="audio/wav")
    for k, v in fields.items():
        f.add_field(k, v)
    return f


async def post_voice(http, url, audio, method="POST", voice_id=None, **fields):
    target = url + "/api/v1/voices" + (f"/{voice_id}" if method == "PUT" else "")
    if method == "POST" and voice_id:
        fields["id"] = voice_id
    async with http.request(method, target, data=form(audio, **fields)) as r:
        return r.status, await r.json()


async def session(http, ws_url, voice=None):
    """(ws, first message); sends `start` with `voice` when the session is ready."""
    ws = await http.ws_connect(ws_url)
    first = await ws.receive_json(timeout=60)
    if first["type"] == "ready" and voice is not None:
        await ws.send_json({"type": "start", "voice": voice})
        first = await ws.receive_json(timeout=30)
    return ws, first


async def speak(http, ws_url, voice, text="Hello there.") -> bytes:
    ws, m = await session(http, ws_url, voice)
    assert m["type"] == "started", m
    await ws.send_json({"type": "speak", "text": text})
    audio = bytearray()
    while True:
        msg = await ws.receive(timeout=60)
        if msg.type == aiohttp.WSMsgType.BINARY:
            audio += msg.data
            continue
        d = json.loads(msg.data)
        assert d["type"] in ("speaking", "complete"), d
        if d["type"] == "complete":
            break
    await ws.close()
    return bytes(audio)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two replicas on one voices folder, started on a folder a crash left leftovers in."""
    root = tmp_path_factory.mktemp("replicas")
    voices = root / "voices"
    (voices / ".tmp-0123").mkdir(parents=True)
    (voices / ".tmp-0123" / "reference.wav").write_bytes(b"half")
    (voices / ".trash-4567").mkdir()
    reps = [Replica(voices, root / f"r{i}.log", "--max-sessions", "4", "--drain-seconds", "60") for i in range(2)]
    try:
        for r in reps:
            r.wait_ready()
        yield reps, voices, root
    finally:
        for r in reps:
            r.stop()
        for r in reps:
            assert "Traceback" not in r.log.read_text(), r.log.read_text()[-3000:]


def test_crash_leftovers_cleaned_at_start_and_readiness(pair):
    reps, voices, _ = pair
    assert sorted(p.name for p in voices.iterdir()) == [".lock"]
    for r in reps:  # /readyz: 503 "loading" while the preloaded model loads and warms up, then 200 "ready"
        assert r.ready_seen[-1] == (200, {"status": "ready"})
        assert all(seen == (503, {"status": "loading"}) for seen in r.ready_seen[:-1])


def test_same_id_races_give_one_201_and_one_409(pair):
    (a, b), voices, _ = pair

    async def go():
        out = []
        async with aiohttp.ClientSession() as http:
            for i in range(12):
                vid = f"race-{i}"
                res = await asyncio.gather(post_voice(http, a.url, clip_bytes(seed=i), voice_id=vid),
                                           post_voice(http, b.url, clip_bytes(seed=100 + i), voice_id=vid))
                out.append(res)
                async with http.delete((b if i % 2 else a).url + f"/api/v1/voices/{vid}") as r:
                    assert r.status == 204
        return out
    for (s1, b1), (s2, b2) in asyncio.run(go()):
        assert sorted([s1, s2]) == [201, 409], (s1, b1, s2, b2)
        loser = b1 if s1 == 409 else b2
        assert loser["error"]["code"] == "EXISTS"
    assert sorted(p.name for p in voices.iterdir()) == [".lock"]  # every winner deleted, no leftovers


def test_replace_and_delete_are_seen_by_the_other_replica(pair):
    (a, b), voices, _ = pair

    async def go():
        async with aiohttp.ClientSession() as http:
            assert (await post_voice(http, a.url, clip_bytes(seed=1), voice_id="shared", language="english"))[0] == 201
            async with http.get(b.url + "/api/v1/voices") as r:
                listed = [v for v in (await r.json())["voices"] if not v.get("builtIn")]  # the built-in voice is not in the folder
            before_b = await speak(http, b.ws_url, "shared")  # B computes and caches the prompt of the first clip
            st, body = await post_voice(http, a.url, clip_bytes(seed=2), method="PUT", voice_id="shared")
            after_b = await speak(http, b.ws_url, "shared")
            after_a = await speak(http, a.ws_url, "shared")
            st2, _ = await post_voice(http, b.url, clip_bytes(seed=3), method="PUT", voice_id="fresh")
            async with http.delete(a.url + "/api/v1/voices/shared") as r:
                deleted = r.status
            async with http.get(b.url + "/api/v1/voices") as r:
                after_delete = [v["id"] for v in (await r.json())["voices"] if not v.get("builtIn")]
            ws, m = await session(http, b.ws_url, "shared")
            await ws.close()
            return listed, before_b, (st, body), after_b, after_a, st2, deleted, after_delete, m
    listed, before_b, (st, body), after_b, after_a, st2, deleted, after_delete, m = asyncio.run(go())
    assert [(v["id"], v["language"]) for v in listed] == [("shared", "English")]  # normalised to the model's spelling
    assert st == 200 and body["voice"]["id"] == "shared"  # PUT on an existing id replaces it
    assert len(before_b) > 0 and after_b != before_b  # B does not serve its cached prompt of the old clip
    assert after_b == after_a  # B speaks exactly as A does with the new clip (greedy)
    assert st2 == 201  # PUT on a new id creates it
    assert deleted == 204 and after_delete == ["fresh"]
    assert m["type"] == "error" and m["code"] == "VOICE_NOT_FOUND"


def test_broken_clip_unavailable_and_language_checked(pair):
    """A voice whose clip does not decode (garbage or empty) is listed as unavailable with no file
    system path, and refused at `start`; an unknown language is refused at upload."""
    (a, b), voices, _ = pair
    header_only = io.BytesIO()
    sf.write(header_only, np.zeros(0, np.float32), 24000, format="WAV", subtype="PCM_16")
    broken = {"garbage": b"RIFF\x00\x00 not a wav at all", "zero-bytes": b"", "empty": header_only.getvalue()}
    for vid, data in broken.items():
        assert asyncio.run(self_upload(a.url, vid)) == 201
        (voices / vid / "reference.wav").write_bytes(data)
        (voices / vid / "prompt.safetensors").unlink(missing_ok=True)

    async def go():
        async with aiohttp.ClientSession() as http:
            async with http.get(b.url + "/api/v1/voices") as r:
                listing = await r.json()
            ws, m = await session(http, b.ws_url, "garbage")
            await ws.close()
            bad_lang = await post_voice(http, a.url, clip_bytes(), voice_id="klingon", language="Klingon")
            junk = await post_voice(http, a.url, b"definitely not audio", voice_id="junk")
            for vid in broken:
                async with http.delete(a.url + f"/api/v1/voices/{vid}") as r:
                    assert r.status == 204
            return listing, m, bad_lang, junk
    listing, m, (st, body), junk = asyncio.run(go())
    assert junk[0] == 400 and junk[1]["error"]["code"] == "BAD_AUDIO" and not re.search(r"0x|<|/", junk[1]["error"]["message"])
    assert not set(broken) & {v["id"] for v in listing["voices"]}
    assert "does not decode" in listing["unavailable"]["garbage"] and "does not decode" in listing["unavailable"]["zero-bytes"]
    assert "is empty" in listing["unavailable"]["empty"]
    assert str(voices) not in json.dumps(listing) and "/" not in json.dumps(listing["unavailable"])
    assert m["type"] == "error" and m["code"] == "VOICE_NOT_FOUND" and "/" not in m["message"]
    assert st == 400 and body["error"]["code"] == "BAD_LANGUAGE" and "English" in body["error"]["message"]
    assert not (voices / "klingon").exists()


async def self_upload(url, vid):
    async with aiohttp.ClientSession() as http:
        return (await post_voice(http, url, clip_bytes(seed=7), voice_id=vid))[0]


def haproxy_status(stats_url: str) -> dict[str, str]:
    _, text = http_get(stats_url + ";csv")
    rows = [line.split(",") for line in text.splitlines() if line and not line.startswith("#")]
    return {r[1]: r[17] for r in rows if r[0] == "replicas" and r[1].startswith("r")}


@pytest.mark.skipif(haproxy_path() is None, reason="HAProxy is not installed (apt-get install haproxy); the balancer test needs it")
def test_two_replicas_behind_haproxy(pair):
    (a, b), voices, root = pair
    lb = HAProxy([a, b], root)
    try:
        _balanced(a, b, lb, voices)
    finally:
        lb.stop()


def _balanced(a, b, lb, voices):
    async def go():
        async with aiohttp.ClientSession() as http:
            # voices uploaded through the balancer are usable on both replicas
            for i in range(3):
                assert (await post_voice(http, lb.url, clip_bytes(seed=20 + i), voice_id=f"lb-{i}"))[0] == 201
            for r in (a, b):
                for i in range(3):
                    ws, m = await session(http, r.ws_url, f"lb-{i}")
                    assert m["type"] == "started" and m["voice"] == f"lb-{i}", m
                    await ws.close()
            # same-id uploads to both replicas directly, at once
            for i in range(3):
                res = await asyncio.gather(post_voice(http, a.url, clip_bytes(seed=30 + i), voice_id=f"both-{i}"),
                                           post_voice(http, b.url, clip_bytes(seed=40 + i), voice_id=f"both-{i}"))
                assert sorted(s for s, _ in res) == [201, 409]
            # a session through the balancer, mid-stream when its replica gets SIGTERM
            ws = await http.ws_connect(lb.ws_url)
            assert (await ws.receive_json(timeout=60))["type"] == "ready"
            await ws.send_json({"type": "speak", "text": LONG_TEXT})
            while (await ws.receive(timeout=60)).type != aiohttp.WSMsgType.BINARY:
                pass
            busy = [r for r in (a, b) if gauges(r.url)["qwen3tts_active_requests"] == 1]
            assert len(busy) == 1
            x, y = busy[0], (b if busy[0] is a else a)
            x.sigterm()
            ready_codes = []
            for _ in range(600):
                ready_codes.append(http_get(x.url + "/readyz")[0])
                if ready_codes[-1] != 200:
                    break
            name = "r0" if x is a else "r1"
            for _ in range(600):  # the balancer's health check sees /readyz 503 (a bound, not a timing check)
                if haproxy_status(lb.stats_url)[name] == "DOWN":
                    break
                await asyncio.sleep(0.05)
            assert haproxy_status(lb.stats_url) == {name: "DOWN", ("r1" if name == "r0" else "r0"): "UP"}
            new_sessions = []
            for _ in range(3):  # new sessions land on the other replica
                ws2 = await http.ws_connect(lb.ws_url)
                new_sessions.append((await ws2.receive_json(timeout=60))["type"])
                new_sessions.append(gauges(y.url)["qwen3tts_active_sessions"])
                await ws2.close()
            seen, code = [], None
            while True:
                msg = await ws.receive(timeout=60)
                if msg.type == aiohttp.WSMsgType.TEXT:
                    seen.append(json.loads(msg.data)["type"])
                    if seen[-1] == "stopped":
                        stopped = json.loads(msg.data)
                elif msg.type != aiohttp.WSMsgType.BINARY:
                    code = ws.close_code
                    break
            async with http.get(lb.url + "/api/v1/voices") as r:
                listed = sorted(v["id"] for v in (await r.json())["voices"] if not v.get("builtIn"))
            return x, ready_codes, new_sessions, seen, stopped, code, listed
    x, ready_codes, new_sessions, seen, stopped, code, listed = asyncio.run(go())
    assert ready_codes[-1] == 503
    assert new_sessions[0::2] == ["ready"] * 3 and min(new_sessions[1::2]) >= 1  # not refused: served by the other replica
    assert seen == ["complete", "stopped"] and stopped == {"type": "stopped", "reason": "server_shutdown"} and code == 1001
    assert x.proc.wait(30) == 0
    assert {"both-0", "both-1", "both-2", "lb-0", "lb-1", "lb-2"} <= set(listed)
    assert sorted(p.name for p in voices.iterdir() if not p.name.startswith(".")) == listed


def test_sigterm_drains_then_stops(pair):
    """`/readyz` 503 at once, new sessions and HTTP synthesis refused with SERVER_DRAINING, the
    request in progress finishes, then `stopped{server_shutdown}` and exit 0."""
    reps, _, _ = pair
    r = next(x for x in reps if x.proc.poll() is None)  # the balancer test may have stopped one

    async def go():
        async with aiohttp.ClientSession() as http:
            before = gauges(r.url)
            ws = await http.ws_connect(r.ws_url)
            assert (await ws.receive_json(timeout=60))["type"] == "ready"
            await ws.send_json({"type": "speak", "text": LONG_TEXT})
            while (await ws.receive(timeout=60)).type != aiohttp.WSMsgType.BINARY:
                pass
            during = gauges(r.url)
            r.sigterm()
            for _ in range(600):
                if (ready := http_get(r.url + "/readyz"))[0] != 200:
                    break
            draining = gauges(r.url)
            ws2, refused = await session(http, r.ws_url)
            await ws2.receive(timeout=10)
            async with http.post(r.url + "/v1/audio/speech", json={"input": "hi"}) as resp:
                oa = resp.status, resp.headers.get("Retry-After"), await resp.json()
            seen = []
            while True:
                msg = await ws.receive(timeout=60)
                if msg.type == aiohttp.WSMsgType.TEXT:
                    seen.append(json.loads(msg.data))
                elif msg.type != aiohttp.WSMsgType.BINARY:
                    break
            return before, during, ready, draining, refused, ws2.close_code, oa, seen, ws.close_code
    before, during, ready, draining, refused, close2, oa, seen, close1 = asyncio.run(go())
    assert before["qwen3tts_capacity_sessions"] == 4 and before["qwen3tts_ready"] == 1 and before["qwen3tts_active_requests"] == 0
    assert during["qwen3tts_active_sessions"] == 1 and during["qwen3tts_active_requests"] == 1
    assert ready == (503, {"status": "draining"})
    assert draining["qwen3tts_draining"] == 1 and draining["qwen3tts_ready"] == 0
    assert refused["code"] == "SERVER_DRAINING" and refused["recoverable"] is True and close2 == 1012
    assert oa[0] == 503 and oa[1] == "1" and oa[2]["error"]["code"] == "SERVER_DRAINING"
    assert [m["type"] for m in seen] == ["complete", "stopped"] and seen[-1]["reason"] == "server_shutdown" and close1 == 1001
    assert r.proc.wait(30) == 0
