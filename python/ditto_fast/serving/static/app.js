// The demo page of `ditto-fast serve`: upload a portrait, stream speech (a file at its own pace,
// or the microphone) over /v1/session, play the fMP4 answer through Media Source Extensions.
// The protocol is documented in ditto_fast/serving/protocol.py.
"use strict";

const $ = (id) => document.getElementById(id);
const PIECE_S = 0.04; // audio is sent in 40 ms pieces, as a live source delivers it
const LIVE_EDGE_S = 1.0; // playback further than this behind the newest video jumps ahead
const KEEP_S = 20; // seconds of played video kept in the SourceBuffer

const params = new URLSearchParams(location.search);
$("token").value = params.get("token") || "";

function log(line) {
  const el = $("log");
  el.textContent += line + "\n";
  el.scrollTop = el.scrollHeight;
}

function authHeaders() {
  const token = $("token").value;
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function uploadPortrait(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  const response = await fetch("/v1/avatars", { method: "POST", body: form, headers: authHeaders() });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`upload failed (${response.status}): ${body.detail || response.statusText}`);
  return body.id;
}

function toInt16(samples) {
  const pcm = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    pcm[i] = Math.round(s * 32767);
  }
  return pcm;
}

// A file decoded and resampled to 16 kHz mono by the browser.
async function decodeSpeech(file) {
  const data = await file.arrayBuffer();
  const decoded = await new AudioContext().decodeAudioData(data);
  const rate = 16000;
  const offline = new OfflineAudioContext(1, Math.ceil(decoded.duration * rate), rate);
  const source = offline.createBufferSource();
  source.buffer = decoded;
  source.connect(offline.destination);
  source.start();
  return { samples: (await offline.startRendering()).getChannelData(0), rate };
}

// Plays the fMP4 stream: a SourceBuffer in "segments" mode (the fragments carry their own
// timestamps, on the session's clock), appended one message at a time.
class Player {
  constructor(video) {
    this.video = video;
    this.media = new MediaSource();
    this.queue = [];
    this.buffer = null;
    video.src = URL.createObjectURL(this.media);
    this.opened = new Promise((resolve) => this.media.addEventListener("sourceopen", resolve, { once: true }));
  }

  async init(mimeType) {
    await this.opened;
    if (!MediaSource.isTypeSupported(mimeType)) throw new Error(`this browser cannot play ${mimeType}`);
    this.buffer = this.media.addSourceBuffer(mimeType);
    this.buffer.mode = "segments";
    this.buffer.addEventListener("updateend", () => this.next());
    this.next();
  }

  append(bytes) {
    this.queue.push(bytes);
    this.next();
  }

  next() {
    const buffer = this.buffer;
    if (!buffer || buffer.updating) return;
    const played = this.video.currentTime;
    if (buffer.buffered.length && played - buffer.buffered.start(0) > 2 * KEEP_S) {
      buffer.remove(0, played - KEEP_S); // bounded memory in long sessions
      return;
    }
    if (this.queue.length) {
      buffer.appendBuffer(this.queue.shift());
      return;
    }
    this.keepLive();
  }

  keepLive() {
    const ranges = this.buffer.buffered;
    if (!ranges.length) return;
    const newest = ranges.end(ranges.length - 1);
    if (newest - this.video.currentTime > LIVE_EDGE_S) this.video.currentTime = newest - 0.2;
    if (this.video.paused) this.video.play().catch((error) => log(`play: ${error.message}`));
  }

  end() {
    const finish = () => this.media.readyState === "open" && this.media.endOfStream();
    if (this.buffer && (this.buffer.updating || this.queue.length)) {
      this.buffer.addEventListener("updateend", () => !this.queue.length && finish());
    } else finish();
  }
}

// Sends 16 kHz speech from a file at the pace it plays.
function sendFile(socket, speech, onDone) {
  const piece = Math.round(speech.rate * PIECE_S);
  const started = performance.now();
  let at = 0;
  const timer = setInterval(() => {
    const due = Math.min(speech.samples.length, Math.ceil(((performance.now() - started) / 1000) * speech.rate));
    while (at < due && socket.readyState === WebSocket.OPEN) {
      socket.send(toInt16(speech.samples.subarray(at, at + piece)).buffer);
      at += piece;
    }
    if (at >= speech.samples.length) {
      clearInterval(timer);
      onDone();
    }
  }, PIECE_S * 1000);
  return () => clearInterval(timer);
}

// The microphone through an AudioWorklet that forwards its 128-sample blocks to the page.
const WORKLET = `registerProcessor("pcm-tap", class extends AudioWorkletProcessor {
  process(inputs) { if (inputs[0][0]) this.port.postMessage(inputs[0][0].slice()); return true; }
});`;

async function sendMicrophone(socket, context) {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
  const url = URL.createObjectURL(new Blob([WORKLET], { type: "text/javascript" }));
  await context.audioWorklet.addModule(url);
  const tap = new AudioWorkletNode(context, "pcm-tap");
  const piece = Math.round(context.sampleRate * PIECE_S);
  let pending = new Float32Array(0);
  let active = true; // blocks already posted by the worklet may arrive after stop: none after "end"
  tap.port.onmessage = ({ data }) => {
    if (!active) return;
    const joined = new Float32Array(pending.length + data.length);
    joined.set(pending);
    joined.set(data, pending.length);
    pending = joined;
    while (pending.length >= piece && socket.readyState === WebSocket.OPEN) {
      socket.send(toInt16(pending.subarray(0, piece)).buffer);
      pending = pending.slice(piece);
    }
  };
  context.createMediaStreamSource(stream).connect(tap);
  return () => {
    active = false;
    stream.getTracks().forEach((track) => track.stop());
    tap.disconnect();
  };
}

let current = null; // { socket, stop, ended }

// {"type": "end"} once (the protocol refuses anything after it): the server then sends the rest
// of the video and the stats, and closes.
function endSession() {
  if (!current || current.ended) return;
  current.ended = true;
  current.stop();
  if (current.socket.readyState === WebSocket.OPEN) current.socket.send(JSON.stringify({ type: "end" }));
  $("interrupt").disabled = $("stop").disabled = true;
}

async function start() {
  const image = $("image").files[0];
  const useMic = $("mic").checked;
  const audioFile = $("audio").files[0];
  if (!image) return log("pick a portrait first");
  if (!useMic && !audioFile) return log("pick a speech file, or tick microphone");
  $("start").disabled = true;
  try {
    log("uploading the portrait…");
    const avatar = await uploadPortrait(image);
    const speech = useMic ? null : await decodeSpeech(audioFile);
    const micContext = useMic ? new AudioContext() : null;
    const rate = useMic ? micContext.sampleRate : speech.rate;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const token = $("token").value;
    const socket = new WebSocket(`${scheme}://${location.host}/v1/session` +
                                 (token ? `?token=${encodeURIComponent(token)}` : ""));
    socket.binaryType = "arraybuffer";
    const player = new Player($("video"));
    const options = $("emo").value ? { emo: Number($("emo").value) } : {};
    const counts = { bytes: 0, firstPush: 0, firstVideo: 0 };
    current = { socket, stop: () => {}, ended: false };

    socket.onopen = () => {
      socket.send(JSON.stringify({ type: "start", avatar, video: "fmp4", sample_rate: rate, options }));
    };
    socket.onmessage = async ({ data }) => {
      if (typeof data !== "string") {
        if (!counts.firstVideo) {
          counts.firstVideo = performance.now();
          log(`first video ${Math.round(counts.firstVideo - counts.firstPush)} ms after the first audio`);
        }
        counts.bytes += data.byteLength;
        $("live").textContent = `${(counts.bytes / 1024).toFixed(0)} KiB of video received`;
        player.append(data);
        return;
      }
      const message = JSON.parse(data);
      if (message.type === "started") {
        log(`session ${message.session}: ${message.width}x${message.height} at ${message.fps} fps`);
        $("interrupt").disabled = $("stop").disabled = false;
        counts.firstPush = performance.now();
        current.stop = useMic ? await sendMicrophone(socket, micContext) : sendFile(socket, speech, endSession);
      } else if (message.type === "init") {
        await player.init(message.mime_type).catch((error) => log(error.message));
      } else if (message.type === "stats") {
        const { type, ...stats } = message;
        log("stats: " + JSON.stringify(stats, null, 1));
      } else if (message.type === "error") {
        log(`error: ${message.message}`);
      }
    };
    socket.onclose = ({ code, reason }) => {
      log(`closed (${code}${reason ? ": " + reason : ""})`);
      current.stop();
      player.end();
      $("start").disabled = false;
      $("interrupt").disabled = $("stop").disabled = true;
    };
  } catch (error) {
    log(error.message);
    $("start").disabled = false;
  }
}

$("start").onclick = start;
$("interrupt").onclick = () => current && !current.ended && current.socket.send(JSON.stringify({ type: "interrupt" }));
$("stop").onclick = endSession;
$("emo").onchange = () => {
  const socket = current && current.socket;
  if (socket && socket.readyState === WebSocket.OPEN && !current.ended && $("emo").value) {
    socket.send(JSON.stringify({ type: "controls", emo: Number($("emo").value) }));
  }
};
