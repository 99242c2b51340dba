// Cinetron's preview page: a client of the same /v1/videos API any OpenAI client uses.
// No framework and no build step; everything comes from this server.
"use strict";

const $ = (id) => document.getElementById(id);
const PAGE = 10;
const state = { model: null, current: null, stream: null, after: null, blobs: new Map() };

// -- API ---------------------------------------------------------------------------------

function token() {
  return sessionStorage.getItem("cinetron-token") || "";
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (e) {
    throw new ApiError(0, `the server at ${location.host} does not answer (${e.message})`);
  }
  if (response.status === 401) $("auth").hidden = false;
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) message = body.error.message;
    } catch (_) {
      // not JSON: keep the status line
    }
    throw new ApiError(response.status, message);
  }
  return response;
}

const getJson = async (path, options) => (await api(path, options)).json();

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

// -- the model and the form --------------------------------------------------------------

async function loadModel() {
  const models = await getJson("/v1/models");
  const m = models.data[0];
  state.model = m;
  $("model-info").textContent =
    `model ${m.id} ${m.version} · ${m.sizes.join(", ")} · ${m.fps} fps · ` +
    `${m.seconds.min}–${m.seconds.max} s`;
  const scheduler = $("scheduler");
  scheduler.replaceChildren(...m.schedulers.map((name) => new Option(name, name)));
  scheduler.value = m.defaults.scheduler;
  const size = $("size");
  size.replaceChildren(...m.sizes.map((s) => new Option(s, s)));
  $("steps").placeholder = `${m.defaults.steps} (${m.limits.steps[0]}–${m.limits.steps[1]})`;
  $("guidance").placeholder =
    `${m.defaults.guidance} (${m.limits.guidance[0]}–${m.limits.guidance[1]})`;
  $("seconds").placeholder = `${m.seconds.default} (${m.seconds.min}–${m.seconds.max})`;
  const image = $("image");
  image.disabled = !m.supports_input_reference;
  image.title = m.supports_input_reference
    ? `a PNG or JPEG of ${m.sizes[0]}: the first frame`
    : "this server's model repository has no VAE encoder, so no image-to-video";
}

function formData() {
  const data = new FormData();
  data.append("prompt", $("prompt").value);
  for (const field of ["negative_prompt", "seed", "steps", "guidance", "seconds"]) {
    const value = $(field).value.trim();
    if (value !== "") data.append(field, value);
  }
  data.append("scheduler", $("scheduler").value);
  data.append("size", $("size").value);
  const file = $("image").files[0];
  if (file) data.append("input_reference", file, file.name);
  return data;
}

function fillForm(video) {
  $("prompt").value = video.prompt || "";
  $("negative_prompt").value = video.negative_prompt || "";
  $("seed").value = video.seed ?? "";
  $("steps").value = video.steps ?? "";
  $("guidance").value = video.guidance ?? "";
  if (video.scheduler) $("scheduler").value = video.scheduler;
  $("seconds").value = video.seconds || "";
  if (video.size) $("size").value = video.size;
  $("image").value = "";
  showError(video.has_input_reference
    ? "settings replayed; this video started from an image: choose it again to reproduce it"
    : "");
  $("prompt").focus();
}

async function submit(event) {
  event.preventDefault();
  showError("");
  const button = $("generate");
  button.disabled = true;
  try {
    const video = await getJson("/v1/videos", { method: "POST", body: formData() });
    follow(video);
    loadHistory(true);
  } catch (e) {
    showError(e.message);
  } finally {
    button.disabled = false;
  }
}

// -- the current video: live progress over server-sent events, else polling -------------

const finished = (video) => video.status === "completed" || video.status === "failed";

function render(video) {
  if (!state.current || state.current.id !== video.id) return;
  // Answers can arrive out of order (a cancel's reply, taken while the job still ran,
  // after the event stream's final object): a finished video never goes back to running.
  if (finished(state.current) && !finished(video) && state.current !== video) return;
  state.current = video;
  $("current").hidden = false;
  $("current-title").textContent = video.prompt;
  const words = {
    queued: video.queue_position != null ? `queued (position ${video.queue_position})` : "queued",
    in_progress: "generating",
    completed: "done",
    failed: video.error && video.error.code === "cancelled" ? "cancelled" : "failed",
  };
  let status = words[video.status] || video.status;
  if (video.error) status += `: ${video.error.message}`;
  $("status").textContent = status;
  $("status").dataset.status = video.status;
  $("progress").value = video.progress;
  $("step-text").textContent = video.total_steps
    ? `step ${video.step} of ${video.total_steps} · ${video.progress}%`
    : `${video.progress}%`;
  $("seed-used").textContent = `seed ${video.seed} · ${video.seconds} s · ${video.size}`;
  const running = video.status === "queued" || video.status === "in_progress";
  $("cancel-current").hidden = !running;
  if (video.status === "completed") showVideo(video);
}

function follow(video) {
  if (state.stream) state.stream.abort();
  state.current = video;
  $("video").hidden = true;
  $("video").removeAttribute("src");
  $("download").hidden = true;
  render(video);
  if (video.status === "queued" || video.status === "in_progress") watch(video.id);
}

async function watch(id) {
  const controller = new AbortController();
  state.stream = controller;
  let last = null;
  try {
    const response = await api(`/v1/videos/${id}/events`, { signal: controller.signal });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:"));
        if (!data.length) continue; // a keep-alive comment
        last = JSON.parse(data.map((l) => l.slice(5)).join("\n"));
        render(last);
      }
    }
  } catch (e) {
    if (controller.signal.aborted) return;
    showError(`progress stream lost (${e.message}); polling instead`);
  }
  if (state.stream === controller) state.stream = null;
  if (!last || last.status === "queued" || last.status === "in_progress") poll(id);
  else loadHistory(true);
}

async function poll(id) {
  while (state.current && state.current.id === id) {
    try {
      const response = await api(`/v1/videos/${id}`);
      const video = await response.json();
      render(video);
      if (video.status === "completed" || video.status === "failed") {
        loadHistory(true);
        return;
      }
      const wait = Number(response.headers.get("openai-poll-after-ms")) || 1000;
      await new Promise((r) => setTimeout(r, wait));
    } catch (e) {
      showError(e.message);
      return;
    }
  }
}

async function videoUrl(id) {
  if (!state.blobs.has(id)) {
    const blob = await (await api(`/v1/videos/${id}/content`)).blob();
    state.blobs.set(id, URL.createObjectURL(blob));
  }
  return state.blobs.get(id);
}

async function showVideo(video) {
  const player = $("video");
  if (player.dataset.id === video.id && !player.hidden) return;
  try {
    const url = await videoUrl(video.id);
    player.dataset.id = video.id;
    player.src = url;
    player.hidden = false;
    const link = $("download");
    link.href = url;
    link.download = `cinetron-${video.id}.mp4`;
    link.hidden = false;
    await player.play();
  } catch (e) {
    showError(`the video is done but cannot be shown: ${e.message}`);
  }
}

async function cancel(id) {
  try {
    const video = await getJson(`/v1/videos/${id}/cancel`, { method: "POST" });
    render(video);
  } catch (e) {
    showError(e.message);
  }
  loadHistory(true);
}

async function remove(id) {
  try {
    await api(`/v1/videos/${id}`, { method: "DELETE" });
    if (state.blobs.has(id)) URL.revokeObjectURL(state.blobs.get(id));
    state.blobs.delete(id);
  } catch (e) {
    showError(e.message);
  }
  loadHistory(true);
}

// -- history: the job store, newest first --------------------------------------------------

function button(label, cls, action) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = `secondary small ${cls}`;
  b.textContent = label;
  b.addEventListener("click", action);
  return b;
}

function historyItem(video) {
  const li = document.createElement("li");
  li.dataset.id = video.id;
  li.dataset.status = video.status;
  const text = document.createElement("div");
  text.className = "entry";
  const when = new Date(video.created_at * 1000).toLocaleString();
  const status = video.error && video.error.code === "cancelled" ? "cancelled" : video.status;
  const title = document.createElement("strong");
  title.textContent = video.prompt;
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent =
    `${status} · seed ${video.seed} · ${video.steps} steps · ${video.scheduler} · ` +
    `${video.seconds} s · ${when}`;
  text.append(title, meta);
  if (video.error) {
    const why = document.createElement("span");
    why.className = "why";
    why.textContent = video.error.message;
    text.append(why);
  }
  const actions = document.createElement("div");
  actions.className = "actions";
  if (video.status === "completed") actions.append(button("Play", "play", () => follow(video)));
  actions.append(button("Replay settings", "replay", () => fillForm(video)));
  if (video.status === "queued" || video.status === "in_progress") {
    actions.append(button("Watch", "watch", () => follow(video)));
    actions.append(button("Cancel", "cancel", () => cancel(video.id)));
  } else {
    actions.append(button("Delete", "delete", () => remove(video.id)));
  }
  li.append(text, actions);
  return li;
}

async function loadHistory(reset) {
  if (reset) state.after = null;
  const query = new URLSearchParams({ limit: String(PAGE), order: "desc" });
  if (state.after) query.set("after", state.after);
  try {
    const page = await getJson(`/v1/videos?${query}`);
    const list = $("history-list");
    const items = page.data.map(historyItem);
    if (reset) list.replaceChildren(...items);
    else list.append(...items);
    if (reset && !page.data.length) {
      const empty = document.createElement("li");
      empty.className = "empty";
      empty.textContent = "no videos yet";
      list.append(empty);
    }
    state.after = page.last_id;
    $("more").hidden = !page.has_more;
  } catch (e) {
    showError(e.message);
  }
}

// -- start -------------------------------------------------------------------------------

async function start() {
  showError("");
  try {
    await loadModel();
  } catch (e) {
    $("model-info").textContent = "model unavailable";
    showError(e.message);
  }
  await loadHistory(true);
}

document.addEventListener("DOMContentLoaded", () => {
  $("form").addEventListener("submit", submit);
  $("clear").addEventListener("click", () => {
    $("form").reset();
    if (state.model) $("scheduler").value = state.model.defaults.scheduler;
    showError("");
  });
  $("refresh").addEventListener("click", () => loadHistory(true));
  $("more").addEventListener("click", () => loadHistory(false));
  $("cancel-current").addEventListener("click", () => state.current && cancel(state.current.id));
  $("auth-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("cinetron-token", $("token").value.trim());
    $("auth").hidden = true;
    start();
  });
  start();
});
