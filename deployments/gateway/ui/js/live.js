// Live speech: the microphone streamed to the server's WebSocket (docs/live_speech.md) as 16 kHz
// mono PCM (s16le), which answers with partial transcripts while one speaks and a final one when the
// recording stops (a "commit"). The browser resamples the microphone to 16 kHz (an AudioContext at
// that rate); the PCM is kept too, so the view can play it back and draw its features.
import { ApiError, liveSocket } from "./api.js";

export const SAMPLE_RATE = 16000;
const FRAME = 4096; // samples per processing callback (~0.26 s at 16 kHz)
const CLOSES = { 1003: "a frame the server could not read", 1009: "the recording is over the server's max_buffer_s",
  4408: "the connection was idle too long" };

function pcm16(floats) {
  const out = new Int16Array(floats.length);
  for (let i = 0; i < floats.length; i++) out[i] = Math.max(-1, Math.min(1, floats[i])) * 0x7fff;
  return out;
}

// A WAV file of 16-bit mono PCM chunks (for the audio element and the features request).
export function wav(chunks, rate = SAMPLE_RATE) {
  const samples = chunks.reduce((n, c) => n + c.length, 0);
  const view = new DataView(new ArrayBuffer(44));
  const text = (at, s) => [...s].forEach((ch, i) => view.setUint8(at + i, ch.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + samples * 2, true); text(8, "WAVEfmt ");
  view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, rate * 2, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, samples * 2, true);
  return new Blob([view, ...chunks], { type: "audio/wav" });
}

export class LiveSpeech {
  // `on`: {session(created), partial(message), final(message), error(ApiError)}
  constructor(query, on) {
    this.query = query;
    this.on = on;
    this.chunks = [];
  }

  async start() {
    if (!navigator.mediaDevices) {
      throw new ApiError(0, "browser_error", "this browser cannot use the microphone here (it needs https or localhost)", null);
    }
    this.stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
    this.socket = liveSocket(this.query);
    this.socket.binaryType = "arraybuffer";
    this.finals = [];
    this.socket.onmessage = (event) => this.message(JSON.parse(event.data));
    this.closed = new Promise((resolve) => { this.socket.onclose = resolve; });
    try {
      await new Promise((resolve, reject) => {
        this.socket.onopen = resolve;
        this.socket.onerror = () => reject(new ApiError(0, "network_error",
          "the live speech socket was refused (a missing or wrong API key, or the server is busy)", null));
      });
    } catch (err) {
      this.release();
      throw err;
    }
    this.socket.onerror = null;
    this.context = new AudioContext({ sampleRate: SAMPLE_RATE });
    const source = this.context.createMediaStreamSource(this.stream);
    this.node = this.context.createScriptProcessor(FRAME, 1, 1);
    this.node.onaudioprocess = (event) => {
      const chunk = pcm16(event.inputBuffer.getChannelData(0));
      this.chunks.push(chunk);
      if (this.socket.readyState === WebSocket.OPEN) this.socket.send(chunk.buffer);
    };
    source.connect(this.node);
    this.node.connect(this.context.destination);
    this.closed.then((event) => this.whenClosed(event));
  }

  message(msg) {
    if (msg.type === "session.created") this.on.session(msg);
    else if (msg.type === "transcript.partial") this.on.partial(msg);
    else if (msg.type === "transcript.final") this.finals.shift()?.(msg);
    else if (msg.type === "error") this.on.error(new ApiError(msg.status, msg.error.type, msg.error.message,
      msg.error.param, msg.error.request_id));
  }

  whenClosed(event) {
    this.release();
    if (event.code !== 1000 && event.code !== 1005) {
      const why = CLOSES[event.code] || `closed with code ${event.code}`;
      this.on.error(new ApiError(event.code, "live_speech_closed", `${why}: ${event.reason}`, null));
    }
    this.finals.splice(0).forEach((resolve) => resolve(null));
  }

  // Stop the microphone, ask for the final transcript, close: resolves to {final, audio (a WAV blob)}.
  async stop() {
    this.release();
    let final = null;
    if (this.socket.readyState === WebSocket.OPEN) {
      final = await new Promise((resolve) => {
        this.finals.push(resolve);
        this.socket.send(JSON.stringify({ type: "commit" }));
      });
      this.socket.close(1000);
    }
    return { final, audio: wav(this.chunks) };
  }

  release() {
    if (this.node) this.node.disconnect();
    if (this.context && this.context.state !== "closed") this.context.close();
    if (this.stream) this.stream.getTracks().forEach((track) => track.stop());
    this.node = null;
  }
}
