// wanrt review: rater page. Talks to /api/*; every POST carries the CSRF token.
"use strict";

const $ = (id) => document.getElementById(id);
let state = null;      // /api/state
let current = null;    // /api/next
let choice = { overall: null, visual: null, motion: null, alignment: null };
let likert = { left: null, right: null };
let shownAt = 0;
let submitting = false;

function randomId() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

async function api(method, url, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.headers["X-CSRF-Token"] = state ? state.csrf : "";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(url, opts);
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (!res.ok) {
    const err = new Error((data && data.error) || ("HTTP " + res.status));
    err.status = res.status;
    throw err;
  }
  return data;
}

function show(id) {
  for (const s of ["join", "rate", "done"]) $(s).hidden = s !== id;
}

function setProgress(p) {
  if (!p) return;
  const pct = p.total ? Math.round((100 * p.done) / p.total) : 0;
  $("progress-bar").style.width = pct + "%";
  $("progress-text").textContent = "Rated " + p.done + " of " + p.total;
}

async function loadState() {
  state = await api("GET", "/api/state");
  if (!state.joined) {
    show("join");
    $("join-form").hidden = state.invite_only;
    $("invite-only").hidden = !state.invite_only;
    $("join-name").focus();
    return;
  }
  $("who").textContent = "Rater: " + state.name;
  buildStatic();
  await loadNext();
}

let built = false;
function buildStatic() {
  if (built) return;
  built = true;
  for (const side of ["left", "right"]) {
    const box = $("likert-" + side);
    const label = document.createElement("span");
    label.textContent = "Score:";
    box.appendChild(label);
    for (let v = 1; v <= 5; v++) {
      const b = document.createElement("button");
      b.type = "button";
      b.id = "likert-" + side + "-" + v;
      b.textContent = String(v);
      b.title = ["", "bad", "poor", "fair", "good", "excellent"][v];
      b.addEventListener("click", () => setLikert(side, v));
      box.appendChild(b);
    }
  }
  const table = $("criteria");
  for (const c of state.criteria) {
    const tr = document.createElement("tr");
    const th = document.createElement("td");
    th.textContent = c.label;
    tr.appendChild(th);
    const td = document.createElement("td");
    td.className = "crit";
    for (const [val, text] of [["left", "A"], ["tie", "Tie"], ["right", "B"], [null, "No opinion"]]) {
      const b = document.createElement("button");
      b.type = "button";
      b.id = "crit-" + c.key + "-" + (val || "none");
      b.textContent = text;
      b.addEventListener("click", () => { choice[c.key] = val; render(); });
      td.appendChild(b);
    }
    tr.appendChild(td);
    table.appendChild(tr);
  }
}

function setLikert(side, v) {
  likert[side] = likert[side] === v ? null : v;
  render();
}

function render() {
  for (const c of ["left", "tie", "right"]) {
    $("choice-" + c).classList.toggle("selected", choice.overall === c);
  }
  for (const side of ["left", "right"]) {
    for (let v = 1; v <= 5; v++) {
      const b = $("likert-" + side + "-" + v);
      if (b) b.classList.toggle("selected", likert[side] === v);
    }
  }
  if (state && state.criteria) {
    for (const c of state.criteria) {
      for (const val of ["left", "tie", "right", "none"]) {
        const b = $("crit-" + c.key + "-" + val);
        if (b) b.classList.toggle("selected", (choice[c.key] || "none") === val);
      }
    }
  }
  let ok = choice.overall !== null && !submitting;
  if (state && state.require_likert && (likert.left === null || likert.right === null)) ok = false;
  $("submit").disabled = !ok;
}

function mediaElement(m) {
  if (m.kind === "image") {
    const img = document.createElement("img");
    img.src = m.url;
    img.alt = "";
    return img;
  }
  const v = document.createElement("video");
  v.src = m.url;
  v.muted = true;
  v.autoplay = true;
  v.playsInline = true;
  v.preload = "auto";
  return v;
}

// Synchronised looping playback of the two videos.
function videos() {
  return Array.from(document.querySelectorAll(".media video"));
}
function restart() {
  const vs = videos();
  for (const v of vs) { v.currentTime = 0; v.play().catch(() => {}); }
  for (const img of document.querySelectorAll(".media img")) {
    const src = img.src; img.src = ""; img.src = src;  // restart GIF animation
  }
  $("play").textContent = "Pause (space)";
}
function togglePlay() {
  const vs = videos();
  if (!vs.length) return;
  const paused = vs[0].paused;
  for (const v of vs) { if (paused) v.play().catch(() => {}); else v.pause(); }
  $("play").textContent = paused ? "Pause (space)" : "Play (space)";
}
function wireSync() {
  const vs = videos();
  for (const v of vs) v.addEventListener("ended", restart);
  if (vs.length === 2) {
    vs[0].addEventListener("timeupdate", () => {
      if (Math.abs(vs[0].currentTime - vs[1].currentTime) > 0.15 && !vs[1].seeking) {
        vs[1].currentTime = vs[0].currentTime;
      }
    });
  }
}

async function loadNext() {
  current = await api("GET", "/api/next");
  setProgress(current.progress);
  if (current.done) {
    show("done");
    $("done-text").textContent = "You rated " + current.progress.done + " pairs.";
    return;
  }
  choice = { overall: null, visual: null, motion: null, alignment: null };
  likert = { left: null, right: null };
  $("prompt").textContent = current.prompt;
  for (const side of ["left", "right"]) {
    const box = $("media-" + side);
    box.replaceChildren(mediaElement(current[side]));
  }
  wireSync();
  restart();
  $("message").textContent = "";
  shownAt = Date.now();
  show("rate");
  render();
}

function submissionId(assignment) {
  // Same id for retries and double clicks of one pair, even across a reload.
  const key = "wr_sub_" + assignment;
  let id = sessionStorage.getItem(key);
  if (!id) { id = randomId(); sessionStorage.setItem(key, id); }
  return id;
}

async function submit() {
  if (submitting || !current || current.done || choice.overall === null) return;
  if (state.require_likert && (likert.left === null || likert.right === null)) {
    $("message").textContent = "Give both videos a score from 1 to 5.";
    return;
  }
  submitting = true;
  render();
  const body = {
    submission_id: submissionId(current.assignment),
    assignment: current.assignment,
    overall: choice.overall,
    elapsed_ms: Date.now() - shownAt,
  };
  for (const k of ["visual", "motion", "alignment"]) if (choice[k]) body[k] = choice[k];
  if (likert.left !== null) body.likert_left = likert.left;
  if (likert.right !== null) body.likert_right = likert.right;
  let done = false;
  for (let attempt = 0; attempt < 4 && !done; attempt++) {
    try {
      await api("POST", "/api/vote", body);
      done = true;
    } catch (e) {
      if (e.status === 409) { done = true; break; }   // already rated: move on
      if (e.status && e.status < 500) { $("message").textContent = e.message; break; }
      $("message").textContent = "Network problem, retrying…";
      await new Promise((r) => setTimeout(r, 500 * (attempt + 1)));
    }
  }
  submitting = false;
  if (done) {
    sessionStorage.removeItem("wr_sub_" + current.assignment);
    await loadNext();
  } else {
    render();
  }
}

document.addEventListener("keydown", (ev) => {
  if (ev.target && ["INPUT", "TEXTAREA"].includes(ev.target.tagName)) return;
  if ($("rate").hidden) return;
  const digit = /^Digit([1-5])$/.exec(ev.code);
  if (digit) { setLikert(ev.shiftKey ? "right" : "left", Number(digit[1])); ev.preventDefault(); return; }
  switch (ev.key) {
    case "ArrowLeft": case "a": case "A": choice.overall = "left"; break;
    case "ArrowRight": case "b": case "B": choice.overall = "right"; break;
    case "ArrowDown": case "t": case "T": choice.overall = "tie"; break;
    case "Enter": submit(); break;
    case " ": togglePlay(); break;
    case "r": case "R": restart(); break;
    default: return;
  }
  ev.preventDefault();
  render();
});

document.addEventListener("DOMContentLoaded", () => {
  for (const c of ["left", "tie", "right"]) {
    $("choice-" + c).addEventListener("click", () => { choice.overall = c; render(); });
  }
  $("submit").addEventListener("click", submit);
  $("play").addEventListener("click", togglePlay);
  $("restart").addEventListener("click", restart);
  $("join-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      state = await api("POST", "/api/join", { name: $("join-name").value });
      await loadState();
    } catch (e) {
      alert(e.message);
    }
  });
  loadState().catch((e) => { $("message").textContent = e.message; });
});
