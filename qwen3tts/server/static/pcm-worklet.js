// AudioWorklet processors for the /speak page.
//
// "pcm-player": plays Float32 PCM pushed through its port, with a small jitter buffer: playback
// starts once `startSec` of audio is queued, and after an underrun it waits for `resumeSec`
// again; an underrun fades out over one render quantum instead of stopping hard (no clicks).
// Messages in: Float32Array (samples), {cmd: "flush"} (drop everything), {cmd: "end"}.
// Messages out: {event: "started"}, {event: "drained"}, {event: "level", played}.
//
// "pcm-recorder": posts microphone input (channel 0) as Float32Array blocks.

class PcmPlayer extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.startFrames = Math.round((o.startSec || 0.12) * sampleRate);
    this.resumeFrames = Math.round((o.resumeSec || 0.06) * sampleRate);
    this.queue = [];
    this.offset = 0;
    this.queued = 0;
    this.playing = false;
    this.ended = false;
    this.played = 0;
    this.last = 0;
    this.port.onmessage = (e) => {
      const d = e.data;
      if (d instanceof Float32Array) {
        this.queue.push(d);
        this.queued += d.length;
        this.ended = false;
      } else if (d && d.cmd === "flush") {
        this.queue = []; this.offset = 0; this.queued = 0; this.playing = false;
      } else if (d && d.cmd === "end") {
        this.ended = true;  // play out what is queued even below the threshold
      }
    };
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    const n = out.length;
    if (!this.playing) {
      const need = this.played === 0 ? this.startFrames : this.resumeFrames;
      if (this.queued >= need || (this.ended && this.queued > 0)) {
        this.playing = true;
        if (this.played === 0) this.port.postMessage({ event: "started" });
      }
    }
    let i = 0;
    if (this.playing) {
      while (i < n && this.queue.length) {
        const buf = this.queue[0];
        const take = Math.min(n - i, buf.length - this.offset);
        out.set(buf.subarray(this.offset, this.offset + take), i);
        i += take; this.offset += take; this.queued -= take; this.played += take;
        if (this.offset >= buf.length) { this.queue.shift(); this.offset = 0; }
      }
      if (i > 0) this.last = out[i - 1];
      if (i < n) {  // underrun: short fade from the last sample, then silence
        for (let j = i; j < n; j++) { this.last *= 0.9; out[j] = this.last; }
        this.playing = false;
        if (this.ended) this.port.postMessage({ event: "drained", played: this.played });
      }
    } else {
      for (let j = 0; j < n; j++) { this.last *= 0.9; out[j] = this.last; }
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    if ((this.played & 0x3fff) < n) this.port.postMessage({ event: "level", played: this.played });
    return true;
  }
}

class PcmRecorder extends AudioWorkletProcessor {
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (ch) this.port.postMessage(ch.slice(0));
    return true;
  }
}

registerProcessor("pcm-player", PcmPlayer);
registerProcessor("pcm-recorder", PcmRecorder);
