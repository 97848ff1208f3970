'use strict';
// wanrt serve's page: submit prompts, follow progress (Server-Sent Events, or polling when an
// API key is needed, since EventSource cannot send headers), play finished videos.
// Everything the server returns is inserted as text, never as HTML.

const $ = (id) => document.getElementById(id);
const TERMINAL = ['completed', 'failed', 'cancelled'];
const state = { key: localStorage.getItem('wanrt-api-key') || '', following: new Set() };

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (state.key) h['Authorization'] = 'Bearer ' + state.key;
  return h;
}

async function api(method, path, body) {
  const opts = { method, headers: headers(body ? { 'Content-Type': 'application/json' } : {}) };
  if (body) opts.body = JSON.stringify(body);
  const r = await fetch(path, opts);
  let data = null;
  try { data = await r.json(); } catch (_) { /* not JSON */ }
  if (r.status === 401) $('key-row').hidden = false;
  if (!r.ok) {
    const err = new Error(data && data.error ? data.error.message : 'HTTP ' + r.status);
    err.param = data && data.error ? data.error.param : null;
    throw err;
  }
  return data;
}

function num(id) {
  const v = $(id).value.trim();
  return v === '' ? undefined : Number(v);
}

function refreshNotes() {
  $('no-jobs').hidden = $('jobs').children.length > 0;
  $('no-videos').hidden = $('gallery').children.length > 0;
}

// ---------------------------------------------------------------- jobs in progress

function card(job) {
  let li = $('job-' + job.id);
  if (li) return li;
  li = document.createElement('li');
  li.className = 'job';
  li.id = 'job-' + job.id;
  const line = document.createElement('div');
  line.className = 'line';
  const prompt = document.createElement('span');
  prompt.className = 'prompt';
  prompt.textContent = job.prompt || '';
  const cancel = document.createElement('button');
  cancel.type = 'button';
  cancel.className = 'cancel';
  cancel.textContent = 'Cancel';
  cancel.addEventListener('click', async () => {
    cancel.disabled = true;
    try { update(await api('POST', '/v1/videos/' + job.id + '/cancel')); } catch (e) { $('error').textContent = e.message; }
  });
  line.append(prompt, cancel);
  const bar = document.createElement('div');
  bar.className = 'bar';
  bar.append(document.createElement('div'));
  const status = document.createElement('div');
  status.className = 'status note';
  li.append(line, bar, status);
  $('jobs').prepend(li);
  refreshNotes();
  return li;
}

/** Applies a video object or an event (`{id, status, progress, stage, step?, steps?}`). */
function update(ev) {
  if (ev.status === 'completed' && ev.object === 'video') {
    const li = $('job-' + ev.id);
    if (li) li.remove();
    addVideo(ev, true);
    refreshNotes();
    return;
  }
  const li = card(ev);
  li.dataset.status = ev.status;
  li.dataset.progress = ev.progress;
  li.querySelector('.bar > div').style.width = (ev.progress || 0) + '%';
  let text = ev.status.replace('_', ' ') + ' · ' + (ev.progress || 0) + '%';
  if (ev.stage) text += ' · ' + ev.stage.replace('_', ' ');
  if (ev.step !== undefined && ev.steps) text += ' · step ' + ev.step + '/' + ev.steps;
  if (ev.error && ev.error.message) text += ' · ' + ev.error.message;
  li.querySelector('.status').textContent = text;
  if (TERMINAL.includes(ev.status)) {
    li.querySelector('.cancel').remove();
    setTimeout(() => { li.remove(); refreshNotes(); }, 8000);
  }
}

function follow(id) {
  if (state.following.has(id)) return;
  state.following.add(id);
  const done = () => state.following.delete(id);
  if (state.key) return poll(id, done);
  const es = new EventSource('/v1/videos/' + id + '/events');
  for (const name of ['video', 'stage', 'progress']) {
    es.addEventListener(name, (m) => update(JSON.parse(m.data)));
  }
  es.addEventListener('done', (m) => {
    es.close();
    done();
    const v = JSON.parse(m.data);
    if (v.deleted) { const li = $('job-' + id); if (li) li.remove(); refreshNotes(); return; }
    update(v);
  });
  es.onerror = () => { es.close(); poll(id, done); };
}

async function poll(id, done) {
  for (;;) {
    let v;
    try { v = await api('GET', '/v1/videos/' + id); } catch (_) { done(); return; }
    update(v);
    if (TERMINAL.includes(v.status)) { done(); return; }
    await new Promise((r) => setTimeout(r, 500));
  }
}

// ---------------------------------------------------------------- gallery

async function addVideo(job, first) {
  if ($('vid-' + job.id)) return;
  const fig = document.createElement('figure');
  fig.id = 'vid-' + job.id;
  const video = document.createElement('video');
  video.muted = true;
  video.loop = true;
  video.autoplay = true;
  video.playsInline = true;
  video.controls = true;
  const [w, h] = (job.size || '1x1').split('x').map(Number);
  if (w && h) fig.style.setProperty('--ar', w + ' / ' + h);
  const cap = document.createElement('figcaption');
  cap.textContent = job.prompt;
  const meta = document.createElement('div');
  meta.className = 'note';
  meta.textContent = job.size + ' · ' + job.seconds + ' s · seed ' + job.parameters.seed;
  const link = document.createElement('a');
  link.href = '/v1/videos/' + job.id + '/content';
  link.textContent = ' · MP4';
  link.download = job.id + '.mp4';
  meta.append(link);
  fig.append(video, cap, meta);
  if (first) $('gallery').prepend(fig); else $('gallery').append(fig);
  refreshNotes();
  const url = '/v1/videos/' + job.id + '/content';
  if (state.key) {
    const r = await fetch(url, { headers: headers() });
    if (r.ok) {
      // The plain URLs would need the key in a header: use the fetched copy for both.
      video.src = URL.createObjectURL(await r.blob());
      link.href = video.src;
    }
  } else {
    video.src = url;
  }
  video.play().catch(() => { /* autoplay refused: controls remain */ });
}

// ---------------------------------------------------------------- start

// A chosen image file as a data: URL, the form in which the JSON body carries it.
function dataUrl(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(new Error('cannot read ' + file.name));
    r.readAsDataURL(file);
  });
}

async function submit(ev) {
  ev.preventDefault();
  $('error').textContent = '';
  $('error').dataset.param = '';
  const key = $('api-key').value.trim();
  if (key) { state.key = key; localStorage.setItem('wanrt-api-key', key); }
  const body = { prompt: $('prompt').value };
  const more = {
    model: $('model').value || undefined,
    negative_prompt: $('negative').value.trim() || undefined,
    width: num('width'), height: num('height'), num_frames: num('frames'),
    num_inference_steps: num('steps'), guidance_scale: num('guidance'), seed: num('seed'),
  };
  for (const [k, v] of Object.entries(more)) if (v !== undefined) body[k] = v;
  $('submit').disabled = true;
  try {
    for (const [field, id] of [['input_reference', 'first-frame'], ['last_image', 'last-frame']]) {
      const file = $(id).files[0];
      if (file) body[field] = await dataUrl(file);
    }
    const job = await api('POST', '/v1/videos', body);
    update(job);
    follow(job.id);
  } catch (e) {
    $('error').textContent = e.message;
    $('error').dataset.param = e.param || '';
  } finally {
    $('submit').disabled = false;
  }
}

async function load() {
  if (state.key) $('api-key').value = state.key;
  try {
    const h = await api('GET', '/healthz');
    $('health').textContent = h.models.join(', ') + ' · ' + h.queue + ' queue · ' + h.queued + ' waiting';
  } catch (_) { $('health').textContent = 'server unreachable'; }
  try {
    const models = await api('GET', '/v1/models');
    for (const m of models.data) {
      const o = document.createElement('option');
      o.value = m.id;
      o.textContent = m.id;
      $('model').append(o);
    }
    const d = models.data.length ? models.data[0].defaults : null;
    if (d) {
      $('width').placeholder = d.width; $('height').placeholder = d.height; $('frames').placeholder = d.num_frames;
      $('steps').placeholder = d.num_inference_steps; $('guidance').placeholder = d.guidance_scale;
    }
    const list = await api('GET', '/v1/videos?limit=50');
    for (const job of list.data) {
      if (job.status === 'completed') addVideo(job, false);
      else if (!TERMINAL.includes(job.status)) { update(job); follow(job.id); }
    }
  } catch (e) {
    $('error').textContent = e.message;
  }
  refreshNotes();
  document.body.dataset.loaded = '1';
}

$('form').addEventListener('submit', submit);
load();
