// Headwater dashboard: plain JavaScript, no dependencies, no build step.
// Every piece of text from the API (documents, answers, profiles) is put on the page
// with textContent / text nodes only, never as HTML: documents are untrusted input.
"use strict";

const KEY_STORE = "headwater.apiKey";
const POLL_MS = 2000;

// -- DOM helpers --------------------------------------------------------------------

const $ = (sel, root = document) => root.querySelector(sel);

/** An element with attributes and children; strings become text nodes (never HTML). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fill(node, children) {
  node.replaceChildren(...children);
}

function text(value) {
  if (value === null || value === undefined) return "–";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  if (seconds < 1) return "just now";
  if (seconds < 120) return `${Math.round(seconds)} s ago`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

function when(iso) {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? text(iso) : new Date(t).toLocaleString();
}

function dl(node, entries) {
  const items = [];
  for (const [k, v] of entries) items.push(el("dt", {}, k), el("dd", {}, text(v)));
  fill(node, items.length ? items : [el("dd", { class: "muted" }, "none")]);
}

// -- API ----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(status ? `${status}: ${message}` : message);
    this.status = status;
  }
}

function detailOf(body) {
  const d = body && body.detail;
  if (typeof d === "string") return d;
  if (Array.isArray(d)) return d.map((e) => `${(e.loc || []).join(".")}: ${e.msg}`).join("; ");
  return null;
}

/** JSON from the API, with the stored key; throws ApiError with the server's message. */
async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  const key = localStorage.getItem(KEY_STORE);
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, `cannot reach the Headwater server (${err.message})`);
  }
  let data = null;
  try {
    data = await res.json();
  } catch (err) {
    if (res.ok) throw new ApiError(res.status, "the server sent a response that is not JSON");
  }
  if (!res.ok) {
    if (res.status === 401) keyPanel(true, "This server needs an API key.");
    throw new ApiError(res.status, detailOf(data) || res.statusText || "request failed");
  }
  return data;
}

function showError(view, err) {
  const box = $(".error", view);
  if (!err) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.textContent = err instanceof ApiError ? err.message : `error: ${err.message || err}`;
  box.hidden = false;
}

/** Run an action of a view; its error is shown in the view, never swallowed. */
async function guarded(view, action) {
  try {
    const out = await action();
    showError(view, null);
    return out;
  } catch (err) {
    showError(view, err);
    return undefined;
  }
}

// -- API key ------------------------------------------------------------------------

function keyPanel(open, message) {
  const form = $("#key-form");
  form.hidden = !open;
  const stored = localStorage.getItem(KEY_STORE);
  $("#key-state").textContent = message || (stored ? "A key is stored in this browser." : "No key stored.");
  if (open) $("#key-input").focus();
}

function setupKey() {
  $("#key-toggle").addEventListener("click", () => keyPanel($("#key-form").hidden));
  $("#key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("#key-input").value.trim();
    if (!value) return;
    localStorage.setItem(KEY_STORE, value);
    $("#key-input").value = "";
    keyPanel(false);
    route();
  });
  $("#key-forget").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORE);
    keyPanel(true, "Key forgotten.");
  });
}

// -- Pipelines ----------------------------------------------------------------------

let pollTimer = null;

function stateBadge(state) {
  const cls = state === "live" ? "good" : state === "stopped" ? "bad" : "warn";
  return el("span", { class: `badge ${cls}` }, state);
}

function freshness(p) {
  const wm = Object.values(p.watermark || {}).filter((v) => v).join(", ");
  const head = p.lag === 0 ? "caught up" : `${p.lag} behind`;
  return [head, el("br"), el("small", { class: "muted" }, `last batch ${ago(p.last_batch_age_s)}`),
    wm ? el("br") : null, wm ? el("small", { class: "muted" }, `at ${wm}`) : null];
}

function renderPipelines(data) {
  $("#pipelines-at").textContent = `as of ${when(data.at)}`;
  const rows = data.pipelines.map((p) => el("tr", { "data-pipeline": p.name },
    el("td", {}, p.name, el("br"), el("small", { class: "muted" }, p.processor)),
    el("td", { class: "state" }, stateBadge(p.state)),
    el("td", {}, p.workers),
    el("td", {}, p.input),
    el("td", { class: "num events" }, p.events),
    el("td", { class: "num" }, p.throughput_eps === null ? "–" : `${p.throughput_eps.toFixed(1)}/s`),
    el("td", { class: "num lag" }, p.lag),
    el("td", {}, ...freshness(p)),
    el("td", { class: p.dead_letters ? "num dlq bad" : "num dlq" }, p.dead_letters,
      el("br"), el("small", { class: "muted" }, p.dlq_topic))));
  fill($("#pipelines-table tbody"), rows.length ? rows
    : [el("tr", {}, el("td", { colspan: "9", class: "muted" }, "no pipelines configured"))]);
  const srcs = data.sources.map((s) => el("tr", { "data-source": s.name },
    el("td", {}, s.name), el("td", {}, s.kind), el("td", {}, s.tables.join(", ")),
    el("td", {}, s.snapshot), el("td", {}, text(s.position)),
    el("td", { class: s.error ? "bad" : "" },
      s.error ? s.error : s.lag_bytes === null ? "–" : `${s.lag_bytes} B`)));
  fill($("#sources-table tbody"), srcs.length ? srcs
    : [el("tr", {}, el("td", { colspan: "6", class: "muted" }, "no sources configured"))]);
}

async function pollPipelines() {
  clearTimeout(pollTimer);
  const view = $("#view-pipelines");
  if (view.hidden) return;
  const data = await guarded(view, () => api("/v1/pipelines"));
  if (data) renderPipelines(data);
  if (!view.hidden) pollTimer = setTimeout(pollPipelines, POLL_MS);
}

// -- Ask and feedback ---------------------------------------------------------------

let conversation = null;
let rating = null;

function renderAnswer(res) {
  conversation = res.conversation_id;
  rating = null;
  $("#answer-cache").textContent = res.cache;
  $("#answer-cache").className = `badge ${res.cache === "hit" ? "good" : ""}`;
  $("#answer-stale").hidden = res.stale !== true;
  const total = Object.values(res.timings_ms || {}).reduce((a, b) => a + b, 0);
  $("#answer-timing").textContent = `${Math.round(total)} ms`;
  $("#answer-conversation").textContent = `conversation ${res.conversation_id}`;
  $("#answer-conversation").dataset.id = res.conversation_id;
  $("#answer-text").textContent = res.answer;
  fill($("#answer-citations"), res.citations.length ? res.citations.map((c) => el("li", {},
    el("strong", { class: "doc" }, c.doc_id), " ",
    el("span", { class: "muted" }, `version ${c.version} · ${c.source}`),
    el("blockquote", {}, c.text)))
    : [el("li", { class: "muted" }, "no passages cited")]);
  const profile = Object.entries(res.profile_fields || {});
  $("#answer-profile-box").hidden = profile.length === 0;
  dl($("#answer-profile"), profile);
  dl($("#answer-asof"), Object.entries(res.as_of || {}));
  for (const id of ["#thumb-up", "#thumb-down"]) $(id).setAttribute("aria-pressed", "false");
  $("#feedback-comment").value = "";
  $("#feedback-send").disabled = true;
  $("#feedback-state").textContent = "";
  $("#answer").hidden = false;
}

function setupAsk() {
  const view = $("#view-ask");
  $("#ask-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {
      question: $("#ask-question").value,
      consistency: $("#ask-fresh").checked ? "fresh" : "latest",
      cache: $("#ask-bypass").checked ? "bypass" : "use",
    };
    const customer = $("#ask-customer").value.trim();
    if (customer) body.customer_id = customer;
    $("#ask-send").disabled = true;
    $("#ask-send").textContent = "Asking…";
    try {
      const res = await guarded(view, () => api("/v1/ask", { method: "POST", body }));
      if (res) renderAnswer(res);
    } finally {
      $("#ask-send").disabled = false;
      $("#ask-send").textContent = "Ask";
    }
  });
  for (const [id, value] of [["#thumb-up", 5], ["#thumb-down", 1]]) {
    $(id).addEventListener("click", () => {
      rating = value;
      $("#thumb-up").setAttribute("aria-pressed", String(value === 5));
      $("#thumb-down").setAttribute("aria-pressed", String(value === 1));
      $("#feedback-send").disabled = false;
    });
  }
  $("#feedback-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!conversation || rating === null) return;
    const comment = $("#feedback-comment").value.trim();
    const body = { conversation_id: conversation, rating, comment: comment || null };
    $("#feedback-state").textContent = "sending…";
    const res = await guarded(view, () => api("/v1/feedback", { method: "POST", body }));
    $("#feedback-state").textContent = res && res.accepted ? "Feedback recorded." : "Feedback not recorded.";
    if (res && res.accepted) $("#feedback-send").disabled = true;
  });
}

// -- Profiles -----------------------------------------------------------------------

function renderProfile(res) {
  const p = res.profile || {};
  $("#profile-id").textContent = res.person_id;
  $("#profile-version").textContent = `version ${res.version}`;
  const attrs = Object.entries(p.attributes || {}).map(([name, a]) => el("tr", { "data-field": name },
    el("td", {}, name), el("td", { class: "value" }, text(a && a.value)),
    el("td", { class: "lineage" }, text(a && a.source))));
  fill($("#profile-attributes tbody"), attrs.length ? attrs
    : [el("tr", {}, el("td", { colspan: "3", class: "muted" }, "no fields"))]);
  const ids = (p.identifiers || []).map((i) => el("tr", {},
    el("td", {}, i.kind), el("td", { class: "value" }, text(i.value)),
    el("td", { class: "lineage" }, (i.sources || []).join(", "))));
  fill($("#profile-identifiers tbody"), ids.length ? ids
    : [el("tr", {}, el("td", { colspan: "3", class: "muted" }, "no identifiers"))]);
  fill($("#profile-records"), (p.records || []).map((r) => el("li", {}, r)));
  const facts = Object.entries(p.facts || {}).map(([name, f]) => el("tr", {},
    el("td", {}, name), el("td", {}, text(f.count)), el("td", {}, text(f.amount)),
    el("td", {}, text(f.first)), el("td", {}, text(f.last)),
    el("td", {}, (f.upcoming || []).map((u) => `${text(u.date)} (${text(u.id)})`).join(", ") || "–")));
  $("#profile-facts-box").hidden = facts.length === 0;
  fill($("#profile-facts tbody"), facts);
  const aliases = p.aliases || [];
  $("#profile-aliases-box").hidden = aliases.length === 0;
  fill($("#profile-aliases"), aliases.map((a) => el("li", {}, a)));
  dl($("#profile-asof"), Object.entries(res.as_of || {}));
  $("#profile").hidden = false;
}

function setupProfiles() {
  const view = $("#view-profiles");
  $("#profile-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const ref = $("#profile-ref").value.trim();
    $("#profile").hidden = true;
    const res = await guarded(view,
      () => api(`/v1/profiles?identifier=${encodeURIComponent(ref)}`));
    if (res) renderProfile(res);
  });
}

// -- Knowledge base -----------------------------------------------------------------

async function openDocument(docId) {
  const view = $("#view-knowledge");
  const res = await guarded(view, () => api(`/v1/documents/${encodeURIComponent(docId)}`));
  if (!res) return;
  const d = res.document;
  $("#document-title").textContent = d.title || d.uri;
  $("#document-meta").textContent = `${d.doc_id} · version ${d.version} · ${d.chunks} chunks · changed ${when(d.updated_at)}`;
  fill($("#document-chunks"), res.chunks.map((c) => el("li", { "data-chunk": c.chunk_id },
    c.headings.length ? el("small", { class: "muted" }, c.headings.join(" › ")) : null,
    el("p", {}, c.text))));
  $("#document").hidden = false;
}

async function loadDocuments() {
  const view = $("#view-knowledge");
  const res = await guarded(view, () => api("/v1/documents?limit=100"));
  if (!res) return;
  $("#documents-total").textContent = `(${res.documents.length} of ${res.total}, newest changes first)`;
  fill($("#documents-table tbody"), res.documents.length ? res.documents.map((d) => el("tr", { "data-doc": d.doc_id },
    el("td", {}, el("button", { type: "button", class: "link", onclick: () => openDocument(d.doc_id) },
      d.title || d.uri), el("br"), el("small", { class: "muted" }, d.doc_id)),
    el("td", {}, d.source), el("td", {}, d.version), el("td", { class: "num" }, d.chunks),
    el("td", {}, when(d.updated_at))))
    : [el("tr", {}, el("td", { colspan: "5", class: "muted" }, "the knowledge base is empty"))]);
}

function setupKnowledge() {
  const view = $("#view-knowledge");
  $("#documents-refresh").addEventListener("click", loadDocuments);
  $("#search-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const q = $("#search-q").value.trim();
    const res = await guarded(view, () => api(`/v1/search?k=10&q=${encodeURIComponent(q)}`));
    if (!res) return;
    fill($("#search-hits"), res.hits.length ? res.hits.map((h) => el("li", { "data-doc": h.doc_id },
      el("button", { type: "button", class: "link", onclick: () => openDocument(h.doc_id) },
        h.title || h.uri),
      " ", el("span", { class: "muted" }, `score ${h.score.toFixed(4)} · version ${h.version}`),
      el("blockquote", {}, h.text)))
      : [el("li", { class: "muted" }, "no matches")]);
  });
}

// -- Views --------------------------------------------------------------------------

const VIEWS = {
  pipelines: pollPipelines,
  ask: () => $("#ask-question").focus(),
  profiles: () => $("#profile-ref").focus(),
  knowledge: loadDocuments,
};

function route() {
  const name = location.hash.slice(1) in VIEWS ? location.hash.slice(1) : "pipelines";
  for (const section of document.querySelectorAll(".view")) {
    section.hidden = section.id !== `view-${name}`;
  }
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.view === name);
  }
  VIEWS[name]();
}

document.addEventListener("DOMContentLoaded", () => {
  setupKey();
  setupAsk();
  setupProfiles();
  setupKnowledge();
  window.addEventListener("hashchange", route);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) route(); });
  route();
});
