// Speech view: transcribe or translate an uploaded clip (its segments on a timeline), or the microphone
// live over the WebSocket (partial transcripts while one speaks, the final one on stop), and the
// audio's mel, MFCC and chroma as pictures.
import { call } from "./api.js";
import { LiveSpeech } from "./live.js";
import { dataURL, heatmap } from "./media.js";
import { $, clearError, el, guarded, showError, showRequestId } from "./ui.js";

const PANELS = [
  { name: "mel", title: "mel spectrogram (dB)", ramp: "magma" },
  { name: "mfcc", title: "MFCC (standardised per coefficient)", ramp: "diverging", perRow: true },
  { name: "chroma", title: "chroma", ramp: "magma" },
];

const seconds = (s) => `${s.toFixed(1)} s`;

function timeline(result) {
  const duration = Math.max(result.duration, ...result.segments.map((s) => s.end), 0.001);
  const track = el("div", { class: "track-lane" });
  const list = el("ol", { class: "segments" });
  for (const seg of result.segments) {
    const block = el("span", { class: "segment", title: `${seconds(seg.start)}–${seconds(seg.end)}: ${seg.text}` });
    block.style.left = `${(seg.start / duration) * 100}%`;
    block.style.width = `${Math.max(0.5, ((seg.end - seg.start) / duration) * 100)}%`;
    track.append(block);
    list.append(el("li", {}, el("span", { class: "time", text: `${seconds(seg.start)}–${seconds(seg.end)}` }),
      el("span", { text: seg.text.trim() })));
  }
  const axis = el("div", { class: "axis" }, el("span", { text: "0 s" }), el("span", { text: seconds(duration) }));
  $("speech-timeline").replaceChildren(track, axis, list);
}

async function transcribe(blob, name) {
  const form = new FormData();
  form.append("file", blob, name);
  form.append("response_format", "verbose_json");
  const route = $("speech-task").value;
  const result = await call(`v1/audio/${route}`, form);
  $("speech-text").textContent = result.text.trim() || "(no speech heard)";
  const language = `${result.language} (${(result.language_probability * 100).toFixed(0)} %)`;
  $("speech-meta").textContent = `${result.task} · language ${language} · ${seconds(result.duration)}`;
  showRequestId("speech-request", result.requestId);
  timeline(result);
  $("speech-result").hidden = false;
}

async function features(blob) {
  if (!$("speech-features").checked) {
    $("speech-panels").hidden = true;
    return;
  }
  const result = await call("v1/audio/features", { audio: await dataURL(blob) });
  $("feature-panels").replaceChildren(...PANELS.filter((p) => result.features[p.name]).map((p) => {
    const canvas = el("canvas", { class: "heatmap", "data-feature": p.name, "aria-label": p.title });
    heatmap(canvas, result.features[p.name].data, p);
    return el("figure", {}, el("figcaption", { text: `${p.title} · ${result.features[p.name].shape.join(" × ")}` }), canvas);
  }));
  $("speech-panels").hidden = false;
}

async function run(blob, name) {
  const audio = $("speech-audio");
  audio.src = URL.createObjectURL(blob);
  audio.hidden = false;
  $("speech-text").textContent = "…";
  await guarded(null, () => Promise.all([transcribe(blob, name), features(blob)]));
}

function showPartial(message) {
  $("speech-text").replaceChildren(el("span", { class: "partial", text: message.text || "…" }));
  $("speech-meta").textContent = `live · ${seconds(message.audio_s)} heard so far`;
}

async function showFinal(final, audio) {
  $("speech-audio").src = URL.createObjectURL(audio);
  $("speech-audio").hidden = false;
  if (final) {
    $("speech-text").textContent = final.text || "(no speech heard)";
    $("speech-meta").textContent = `live · language ${final.language || "?"} · ${seconds(final.audio_s)}`;
  }
  await guarded(null, () => features(audio));
}

// The record button: the first click opens the socket and the microphone, the second stops both.
function liveButton(button) {
  const label = button.textContent;
  let live = null;
  const reset = () => {
    live = null;
    button.textContent = label;
    button.classList.remove("recording");
  };
  button.addEventListener("click", async () => {
    if (live) {
      const running = live;
      reset();
      const { final, audio } = await running.stop();
      return showFinal(final, audio);
    }
    const task = $("speech-task").value === "translations" ? "translate" : "transcribe";
    live = new LiveSpeech({ task }, {
      session: (created) => showRequestId("speech-request", created.request_id),
      partial: showPartial,
      error: (err) => { showError(err); if (live && err.type === "live_speech_closed") reset(); },
    });
    try {
      await live.start();
    } catch (err) {
      reset();
      return showError(err);
    }
    clearError();
    button.textContent = "■ Stop";
    button.classList.add("recording");
    $("speech-timeline").replaceChildren();
    $("speech-text").textContent = "…";
    $("speech-meta").textContent = "live · listening";
    $("speech-result").hidden = false;
  });
}

export function init() {
  $("speech-file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) run(file, file.name);
    e.target.value = "";
  });
  liveButton($("speech-record"));
}
