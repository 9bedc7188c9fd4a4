// The /speak page: a speak-protocol client that plays audio while it is generated.
"use strict";

const $ = (id) => document.getElementById(id);
const RATES = [8000, 16000, 22050, 24000, 44100, 48000];
const params = new URLSearchParams(location.search);
const token = params.get("token");

// test hook: what the page has seen (read by the headless-browser test)
const stats = (window.__speak = {
  state: "idle", connected: false, ready: false, binaryMessages: 0, samplesPosted: 0, played: 0,
  workletStarted: false, completes: [], errors: [], voices: [], sampleRate: null,
  wordsSent: 0, firstAudioFromFirstWordMs: null,
});

let ws = null, ctx = null, player = null, started = null, reqStart = 0, firstAudio = null;
let capabilities = null, retry = 0, pending = null;
// streamed-text mode: the words still to send, their timer, when the first word went out
let words = null, wordTimer = null, firstWordAt = null, onSent = null;

function setConn(cls, text) { const c = $("conn"); c.className = "pill " + cls; c.textContent = text; }
function setState(s) { stats.state = s; $("state").textContent = s; }
function showError(msg) { const e = $("error"); e.hidden = !msg; e.textContent = msg || ""; }

function connect() {
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/v1/speak";
  ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  setConn("wait", "connecting…");
  ws.onopen = () => { retry = 0; stats.connected = true; setConn("wait", "connected, waiting for model"); };
  ws.onclose = (ev) => {
    stats.connected = false; stats.ready = false; started = null;
    $("speak").disabled = true; $("cancel").disabled = true;
    setConn("off", "disconnected" + (ev.code ? ` (${ev.code})` : ""));
    if (ev.code === 1008) { showError("unauthorized: open this page with ?token=…"); return; }
    setTimeout(connect, Math.min(8000, 500 * 2 ** retry++));
  };
  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string") return onAudio(new Float32Array(ev.data));
    onMessage(JSON.parse(ev.data));
  };
}

function onMessage(m) {
  switch (m.type) {
    case "loading":
      $("loading").hidden = false; $("loadbar").value = m.progress; $("loadstage").textContent = `(${m.stage})`;
      break;
    case "ready":
      $("loading").hidden = true; capabilities = m.capabilities; stats.ready = true;
      setConn("on", "ready · " + m.model);
      fillLanguages(m.capabilities.languages);
      refreshVoices(m.voiceLoaded);
      $("speak").disabled = false;
      break;
    case "started":
      started = { voice: m.voice, language: m.language, sampleRate: m.sampleRate };
      if (pending) { const p = pending; pending = null; ws.send(JSON.stringify(p)); onSent && onSent(); }
      break;
    case "speaking":
      setState("speaking"); reqStart = performance.now(); firstAudio = null;
      break;
    case "complete":
      stats.completes.push(m);
      $("rtf").textContent = m.audioLengthMs ? (m.durationMs / m.audioLengthMs).toFixed(2) : "–";
      $("audiolen").textContent = (m.audioLengthMs / 1000).toFixed(2) + " s";
      if (stats.firstAudioFromFirstWordMs !== null && firstWordAt !== null) $("ttfa").textContent = stats.firstAudioFromFirstWordMs + " ms from the first word";
      else if (m.firstAudioMs != null) $("ttfa").textContent = m.firstAudioMs + " ms (server) · " + (firstAudio ?? "–") + " ms (page)";
      player && player.port.postMessage({ cmd: "end" });
      setState("idle"); $("cancel").disabled = true;
      break;
    case "error":
      stats.errors.push(m);
      if (m.code === "CANCELLED") { setState("cancelled"); $("cancel").disabled = true; break; }
      showError(`${m.code}: ${m.message}`);
      if (m.id) { setState("idle"); $("cancel").disabled = true; }
      break;
  }
}

function onAudio(pcm) {
  stats.binaryMessages++; stats.samplesPosted += pcm.length;
  if (firstAudio === null) {
    firstAudio = Math.round(performance.now() - reqStart);
    $("ttfa").textContent = firstAudio + " ms (page)";
    if (firstWordAt !== null) {
      stats.firstAudioFromFirstWordMs = Math.round(performance.now() - firstWordAt);
      $("ttfa").textContent = stats.firstAudioFromFirstWordMs + " ms from the first word";
    }
  }
  if (player) player.port.postMessage(pcm, [pcm.buffer]);
}

async function ensureAudio() {
  if (ctx) { if (ctx.state === "suspended") await ctx.resume(); return; }
  ctx = new AudioContext({ latencyHint: "interactive" });
  if (!RATES.includes(ctx.sampleRate)) { await ctx.close(); ctx = new AudioContext({ sampleRate: 24000 }); }
  stats.sampleRate = ctx.sampleRate;
  await ctx.audioWorklet.addModule("/static/pcm-worklet.js");
  player = new AudioWorkletNode(ctx, "pcm-player", { outputChannelCount: [1], processorOptions: { startSec: 0.12, resumeSec: 0.06 } });
  player.port.onmessage = (e) => {
    if (e.data.event === "started") stats.workletStarted = true;
    if (e.data.played !== undefined) stats.played = e.data.played;
  };
  player.connect(ctx.destination);
  if (ctx.state === "suspended") await ctx.resume();
}

async function speak() {
  const text = $("text").value.trim();
  if (!text) return showError("type something to say");
  showError("");
  await ensureAudio();
  player.port.postMessage({ cmd: "flush" });
  const want = { type: "start", voice: $("voice").value, language: $("language").value, sampleRate: ctx.sampleRate,
                 encoding: "pcm32f", transport: "binary" };
  if (token) want.authToken = token;
  let msg = { type: "speak", text, id: "p" + Date.now() };
  stopWords(); firstWordAt = null; stats.firstAudioFromFirstWordMs = null; onSent = null;
  if ($("llm").checked) {  // as an LLM writes: the first word opens a streamed request, the rest follow at the rate
    words = $("text").value.match(/\S+\s*/g) || [];
    msg = { type: "speak", text: words.shift(), final: false, id: msg.id };
    stats.wordsSent = 1;
    onSent = () => { onSent = null; firstWordAt = performance.now(); startWords(); };
  }
  $("cancel").disabled = false; setState("queued");
  if (!started || started.voice !== want.voice || started.language.toLowerCase() !== want.language.toLowerCase() || started.sampleRate !== want.sampleRate) {
    pending = msg; ws.send(JSON.stringify(want));
  } else {
    ws.send(JSON.stringify(msg));
    onSent && onSent();
  }
}

function startWords() {
  const ms = 1000 / Math.max(1, Math.min(200, Number($("wps").value) || 15));
  wordTimer = setInterval(() => {
    if (!ws || ws.readyState !== 1) return stopWords();
    const w = words.shift();
    const last = words.length === 0;
    ws.send(JSON.stringify(last ? { type: "text", text: w ?? "", final: true } : { type: "text", text: w }));
    if (w !== undefined) stats.wordsSent++;
    if (last) stopWords();
  }, ms);
}

function stopWords() { if (wordTimer !== null) clearInterval(wordTimer); wordTimer = null; }

function cancel() {
  stopWords();
  ws && ws.readyState === 1 && ws.send(JSON.stringify({ type: "cancel" }));
  player && player.port.postMessage({ cmd: "flush" });
}

function fillLanguages(langs) {
  for (const sel of [$("language"), $("vlanguage")]) {
    const cur = sel.value;
    sel.innerHTML = "";
    for (const l of langs) sel.add(new Option(l, l));
    if (langs.includes(cur)) sel.value = cur;
  }
}

async function refreshVoices(select) {
  try {
    const r = await fetch("/api/v1/voices", { headers: token ? { Authorization: "Bearer " + token } : {} });
    const body = await r.json();
    stats.voices = body.voices.map((v) => v.id);
    const sel = $("voice"), cur = select || sel.value;
    sel.innerHTML = "";
    sel.add(new Option("default", "default"));
    for (const v of body.voices) sel.add(new Option(`${v.name} (${v.mode})`, v.id));
    if ([...sel.options].some((o) => o.value === cur)) sel.value = cur;
  } catch (e) { /* list stays as it is */ }
}

// ---------------------------------------------------------------- new voice: upload or record
let recorded = null, recNode = null, recStream = null, recChunks = [];

function wavBlob(chunks, rate) {
  const n = chunks.reduce((a, c) => a + c.length, 0);
  const buf = new ArrayBuffer(44 + n * 2), v = new DataView(buf);
  const w = (o, s) => [...s].forEach((ch, i) => v.setUint8(o + i, ch.charCodeAt(0)));
  w(0, "RIFF"); v.setUint32(4, 36 + n * 2, true); w(8, "WAVEfmt "); v.setUint32(16, 16, true); v.setUint16(20, 1, true);
  v.setUint16(22, 1, true); v.setUint32(24, rate, true); v.setUint32(28, rate * 2, true); v.setUint16(32, 2, true);
  v.setUint16(34, 16, true); w(36, "data"); v.setUint32(40, n * 2, true);
  let o = 44;
  for (const c of chunks) for (const s of c) { v.setInt16(o, Math.max(-1, Math.min(1, s)) * 32767, true); o += 2; }
  return new Blob([buf], { type: "audio/wav" });
}

async function toggleRecord() {
  if (recNode) {
    recNode.disconnect(); recStream.getTracks().forEach((t) => t.stop());
    recorded = wavBlob(recChunks, ctx.sampleRate);
    const secs = recChunks.reduce((a, c) => a + c.length, 0) / ctx.sampleRate;
    $("recinfo").textContent = `recorded ${secs.toFixed(1)} s`; $("record").textContent = "● Record";
    recNode = null;
    return;
  }
  await ensureAudio();
  try { recStream = await navigator.mediaDevices.getUserMedia({ audio: true }); }
  catch (e) { $("recinfo").textContent = "microphone not available: " + e.message; return; }
  recChunks = [];
  recNode = new AudioWorkletNode(ctx, "pcm-recorder");
  recNode.port.onmessage = (e) => recChunks.push(e.data);
  ctx.createMediaStreamSource(recStream).connect(recNode);
  $("record").textContent = "■ Stop"; $("recinfo").textContent = "recording… (3–30 s)";
}

async function saveVoice() {
  const file = $("vfile").files[0] || recorded;
  if (!file) { $("vstatus").textContent = "choose a clip or record one"; return; }
  const form = new FormData();
  form.append("audio", file, file.name || "recording.wav");
  form.append("name", $("vname").value || "My voice");
  form.append("transcript", $("vtranscript").value);
  form.append("language", $("vlanguage").value);
  $("vstatus").textContent = "saving…";
  const r = await fetch("/api/v1/voices", { method: "POST", body: form, headers: token ? { Authorization: "Bearer " + token } : {} });
  const body = await r.json();
  if (r.status === 201) {
    $("vstatus").textContent = `saved as "${body.voice.id}"`;
    await refreshVoices(body.voice.id);
  } else {
    $("vstatus").textContent = `${body.error.code}: ${body.error.message}`;
  }
}

$("speak").onclick = speak;
$("cancel").onclick = cancel;
$("record").onclick = toggleRecord;
$("vsave").onclick = saveVoice;
$("text").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) speak(); });
connect();
