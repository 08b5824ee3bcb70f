// Media in the browser: files as data URLs, small JPEG thumbnails, microphone recording and
// feature matrices drawn as heatmaps.
export function dataURL(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

const MAX_THUMBNAIL_CHARS = 12000; // the server's limit for metadata.thumbnail

// A JPEG data URL of the image scaled to fit `size` x `size` (what `mmserve index add` stores too);
// null when the browser cannot decode the file (the server then says why it cannot either).
export async function thumbnail(blob, size = 128) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob);
  } catch (_) {
    return null;
  }
  const scale = Math.min(1, size / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  for (const quality of [0.75, 0.55, 0.35]) {
    const url = canvas.toDataURL("image/jpeg", quality);
    if (url.length <= MAX_THUMBNAIL_CHARS) return url;
  }
  return null;
}

// One microphone recording at a time: start() asks for the microphone, stop() resolves to a Blob.
export class Recorder {
  constructor() {
    this.recorder = null;
  }

  get recording() {
    return this.recorder !== null && this.recorder.state === "recording";
  }

  async start() {
    if (!navigator.mediaDevices || !window.MediaRecorder) {
      throw Object.assign(new Error("this browser cannot record audio here (it needs https or localhost)"),
        { type: "browser_error" });
    }
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    this.chunks = [];
    this.recorder = new MediaRecorder(stream);
    this.recorder.ondataavailable = (event) => this.chunks.push(event.data);
    this.recorder.start();
  }

  stop() {
    return new Promise((resolve) => {
      const recorder = this.recorder;
      recorder.onstop = () => {
        recorder.stream.getTracks().forEach((track) => track.stop());
        resolve(new Blob(this.chunks, { type: recorder.mimeType || "audio/webm" }));
      };
      recorder.stop();
      this.recorder = null;
    });
  }
}

// A record button: first click starts, second click stops and hands the recording to `done`.
export function recordButton(button, done, onError) {
  const recorder = new Recorder();
  const label = button.textContent;
  button.addEventListener("click", async () => {
    try {
      if (!recorder.recording) {
        await recorder.start();
        button.textContent = "■ Stop";
        button.classList.add("recording");
        return;
      }
      button.textContent = label;
      button.classList.remove("recording");
      done(await recorder.stop());
    } catch (err) {
      button.textContent = label;
      button.classList.remove("recording");
      onError(err);
    }
  });
}

// Colour ramps (dark to bright, and blue-white-red for MFCC), as [position, r, g, b] stops.
const RAMPS = {
  magma: [[0, 0, 0, 4], [0.25, 80, 18, 123], [0.5, 183, 55, 121], [0.75, 252, 137, 97], [1, 252, 253, 191]],
  diverging: [[0, 59, 76, 192], [0.5, 221, 221, 221], [1, 180, 4, 38]],
};

function colour(ramp, t) {
  const stops = RAMPS[ramp];
  const x = Math.max(0, Math.min(1, t));
  let i = 1;
  while (i < stops.length - 1 && stops[i][0] < x) i += 1;
  const [p0, ...a] = stops[i - 1];
  const [p1, ...b] = stops[i];
  const f = (x - p0) / (p1 - p0 || 1);
  return a.map((v, k) => Math.round(v + (b[k] - v) * f));
}

// Rows standardised over time (MFCC: c0 would dwarf the rest), or scaled to the matrix's range.
function normalised(rows, perRow) {
  if (perRow) {
    return rows.map((row) => {
      const mean = row.reduce((s, v) => s + v, 0) / row.length;
      const sd = Math.sqrt(row.reduce((s, v) => s + (v - mean) ** 2, 0) / row.length) + 1e-6;
      return row.map((v) => 0.5 + (v - mean) / (4 * sd));
    });
  }
  let lo = Infinity;
  let hi = -Infinity;
  for (const row of rows) for (const v of row) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  return rows.map((row) => row.map((v) => (v - lo) / (hi - lo || 1)));
}

// Draw a (bins x frames) matrix on a canvas, low bins at the bottom, one pixel per cell.
export function heatmap(canvas, rows, { ramp = "magma", perRow = false } = {}) {
  const height = rows.length;
  const width = height ? rows[0].length : 0;
  canvas.width = Math.max(1, width);
  canvas.height = Math.max(1, height);
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(canvas.width, canvas.height);
  const values = normalised(rows, perRow);
  values.forEach((row, r) => row.forEach((v, c) => {
    const [red, green, blue] = colour(ramp, v);
    const at = ((height - 1 - r) * width + c) * 4;
    image.data.set([red, green, blue, 255], at);
  }));
  ctx.putImageData(image, 0, 0);
}
