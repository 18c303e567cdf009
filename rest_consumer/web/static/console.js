// The operator console: plain DOM, no framework, no build. Every value from the API enters
// the page as text (textContent), never as markup: job data and endpoint replies are not ours.
"use strict";

const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
const refreshMs = Number(document.body.dataset.refreshMs) || 2000;
const root = document.body.dataset.root || "";  // where the API is mounted

class ApiError extends Error {
  constructor(status, body) {
    const details = body && typeof body === "object" ? body.details : body;
    const title = body && typeof body === "object" ? body.error : "";
    const text = typeof details === "string" ? details : JSON.stringify(details);
    super(`${status}${title ? " " + title : ""}: ${text}`);
    this.status = status;
  }
}

async function api(method, path, body) {
  const options = {method, credentials: "same-origin",
                   headers: {"Accept": "application/json", "X-CSRF-Token": csrfToken}};
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  // from the origin: a page opened as http://user:password@host/ would make fetch refuse
  const response = await fetch(new URL(path, location.origin), options);
  const text = await response.text();
  let data = text;
  try { data = JSON.parse(text); } catch (_) { /* not JSON: keep the text */ }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else if (value !== null && value !== undefined) node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attributes = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

function show(text, kind = "error") {
  const box = document.getElementById("message");
  box.textContent = text;
  box.className = kind;
  box.hidden = false;
}

function clearMessage() {
  document.getElementById("message").hidden = true;
}

function number(value) {
  return value === null || value === undefined ? "–" : Number(value).toLocaleString("en");
}

function ago(seconds) {
  if (!seconds) return "";
  const s = Math.max(0, Date.now() / 1000 - seconds);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

function stamp() {
  document.getElementById("updated").textContent =
    "updated " + new Date().toLocaleTimeString("en-GB");
}

/** Poll ``load`` every refreshMs; an error shows in the banner and polling goes on. */
function poll(load) {
  let failing = false;
  const run = async () => {
    try {
      await load();
      stamp();
      if (failing) clearMessage();
      failing = false;
    } catch (error) {
      failing = true;
      show(`could not refresh: ${error.message}`);
    }
    setTimeout(run, refreshMs);
  };
  return run();
}

/** Run an action; its result or the API's refusal shows in the banner. ``settle`` sets the
 * buttons as the page's state wants them afterwards (default: the button usable again). */
async function act(button, action, settle = () => { button.disabled = false; }) {
  button.disabled = true;
  try {
    const said = await action();
    if (said) show(said, "ok");
  } catch (error) {
    show(error.message);
  } finally {
    settle();
  }
}

// --- the jobs page -------------------------------------------------------------------------

function sparkline(values) {
  const width = 90, height = 18, top = Math.max(1, ...values);
  const line = svg("svg", {width, height, viewBox: `0 0 ${width} ${height}`, class: "spark"});
  const step = width / Math.max(1, values.length - 1);
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${
    (height - 1 - (v / top) * (height - 2)).toFixed(1)}`);
  line.append(svg("polyline", {points: points.join(" ")}));
  return line;
}

/* The endpoint's circuit-breaker state, its current request limit and the limit over time. */
function endpointHealth(endpoint) {
  const node = id => document.getElementById(id);
  const state = endpoint.state || "closed";
  node("endpoint-state").textContent = state;
  node("endpoint-state").className = `state endpoint-${state}`;
  const since = endpoint.since ? ` (changed ${ago(endpoint.since)})` : "";
  const limit = endpoint.limit === null || endpoint.limit === undefined ? "-" : endpoint.limit;
  const error = endpoint.last_error ? `; last error: ${endpoint.last_error}` : "";
  node("endpoint-detail").textContent = `${state}${since}; limit ${limit}; ` +
    `${number(endpoint.refused || 0)} refused${error}`;
  node("endpoint-limit").replaceChildren(sparkline((endpoint.history || []).map(h => h[1])));
}

function jobRow(job) {
  const page = `${root}/ui/job/${encodeURIComponent(job.id)}`;
  const link = el("a", {href: page, text: job.id});
  const error = job.last_error;
  const errorCell = el("td", {class: "error-text",
                              title: error ? error.reason : null,
                              text: error ? `${error.reason} (${ago(error.time)})` : ""});
  const letters = job.dead_letters === null
    ? el("span", {class: "muted", title: "not indexed yet: open the job", text: "?"})
    : el("a", {href: `${page}#dead-letters`,
               text: number(job.dead_letters)});
  return el("tr", {"data-job": job.id},
    el("td", {}, link), el("td", {text: job.owner || ""}),
    el("td", {}, el("span", {class: `state state-${job.state}`, text: job.state,
                             title: job.reason || null})),
    el("td", {class: "num lag", text: number(job.lag)}),
    el("td", {class: "num rate"}, sparkline(job.spark), " ",
       el("span", {class: "rate-value", text: job.rate.toFixed(1)})),
    el("td", {class: "num delivered", text: number(job.delivered)}),
    el("td", {class: "num dead-letters"}, letters),
    errorCell);
}

function fillOwners(select, owners) {
  const chosen = new URLSearchParams(location.search).get("owner") || "";
  const known = new Set([...select.options].map(o => o.value));
  for (const owner of owners) {
    if (!known.has(owner)) select.append(el("option", {value: owner, text: owner}));
  }
  select.value = chosen;
}

function jobsPage() {
  const select = document.getElementById("owner");
  select.addEventListener("change", () => {
    const url = new URL(location.href);
    if (select.value) url.searchParams.set("owner", select.value);
    else url.searchParams.delete("owner");
    history.replaceState(null, "", url.pathname + url.search);  // never the credentials
    load().catch(error => show(error.message));
  });
  const body = document.querySelector("#jobs tbody");
  const draw = data => {
    fillOwners(select, data.owners);
    const rows = document.createDocumentFragment();
    for (const job of data.jobs) rows.append(jobRow(job));
    if (!data.jobs.length) rows.append(el("tr", {}, el("td", {colspan: 8, class: "muted",
                                                                text: "no jobs"})));
    body.replaceChildren(rows);
    document.getElementById("job-count").textContent = `(${data.jobs.length})`;
    if (!document.body.dataset.rendered) {
      document.body.dataset.rendered = String(Math.round(performance.now()));
    }
  };
  const load = async () => {
    const owner = new URLSearchParams(location.search).get("owner") || "";
    draw(await api("GET", `${root}/ui/api/jobs?owner=${encodeURIComponent(owner)}`));
  };
  draw(JSON.parse(document.getElementById("first-rows").textContent));
  stamp();
  setTimeout(() => poll(load), refreshMs);
}

// --- the job page --------------------------------------------------------------------------

function chart(node, throughput) {
  const width = 600, height = 140, pad = 28;
  const perSecond = k => throughput[k].map(v => v / throughput.bucket_s);
  const delivered = perSecond("delivered"), dead = perSecond("dead_lettered");
  const top = Math.max(1, ...delivered, ...dead);
  const x = i => pad + i * (width - pad - 4) / Math.max(1, delivered.length - 1);
  const y = v => height - 16 - v / top * (height - 28);
  const line = (values, cls) => svg("polyline", {
    class: cls, points: values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ")});
  const label = (text, lx, ly, anchor = "start") => {
    const t = svg("text", {x: lx, y: ly, "text-anchor": anchor});
    t.textContent = text;
    return t;
  };
  node.replaceChildren(
    svg("line", {x1: pad, y1: y(0), x2: width - 4, y2: y(0), class: "axis"}),
    label(top.toFixed(1), pad - 4, y(top) + 4, "end"), label("0", pad - 4, y(0) + 4, "end"),
    label("15 min ago", pad, height - 2), label("now", width - 4, height - 2, "end"),
    line(dead, "dead"), line(delivered, "delivered"));
}

function counters(node, status) {
  const lag = (status.partitions || []).reduce((sum, p) => sum + (p.lag || 0), 0);
  const rows = [
    ["delivered", status.counters.delivered], ["dispatched", status.counters.dispatched],
    ["retried", status.counters.retried], ["dead-lettered", status.counters.dead_lettered],
    ["skipped", status.counters.skipped], ["in flight", status.in_flight],
    ["lag", status.partitions_error ? null : lag],
    ["deliveries/s (last minute)", status.throughput.rate],
  ];
  if (status.ordering.mode !== "none") rows.push(["held behind a key", status.ordering.held]);
  node.replaceChildren(...rows.flatMap(([name, value]) => [
    el("dt", {text: name}), el("dd", {"data-counter": name, text: number(value)})]));
}

function letterRow(letter) {
  const source = `${letter.topic}[${letter.partition}]@${letter.offset}` +
                 (letter.index === null ? "" : ` #${letter.index}`) +
                 (letter.held_behind ? ` (held behind it: ${letter.held_behind.join(", ")})`
                                     : "");
  return el("tr", {"data-letter": letter.id},
    el("td", {}, el("input", {type: "checkbox", value: letter.id,
                              "aria-label": `choose dead letter ${letter.id}`})),
    el("td", {class: "num", text: letter.id}), el("td", {text: ago(letter.time)}),
    el("td", {class: "reason", text: letter.reason}),
    el("td", {class: "num", text: letter.status ?? ""}),
    el("td", {class: "num", text: letter.attempts}), el("td", {text: source}),
    el("td", {class: "excerpt", text: letter.excerpt || ""}));
}

function jobPage() {
  const jobId = document.body.dataset.jobId;
  const base = `${root}/job/${encodeURIComponent(jobId)}`;
  const letters = {next: null, shown: []};
  const $ = id => document.getElementById(id);
  // Controls the caller's role may not use are not on the page at all.
  const on = (id, type, handler) => { const node = $(id); if (node) node.addEventListener(type, handler); };

  const loadDefinition = async () => {
    $("definition").textContent = JSON.stringify(await api("GET", base), null, 2);
  };
  const loadLetters = async (before = null) => {
    const query = before === null ? "" : `&before=${before}`;
    const page = await api("GET", `${base}/dead_letters?limit=50${query}`);
    letters.shown = before === null ? page.dead_letters : letters.shown.concat(page.dead_letters);
    letters.next = page.next;
    const chosen = new Set([...document.querySelectorAll("#dead-letters tbody input:checked")]
                             .map(box => box.value));
    const rows = letters.shown.map(letterRow);
    for (const row of rows) {
      const box = row.querySelector("input");
      box.checked = chosen.has(box.value);
    }
    document.querySelector("#dead-letters tbody").replaceChildren(...rows);
    $("dead-letter-total").textContent = `(${page.total})`;
    $("older").hidden = page.next === null;
  };
  let state = null;
  const settleStartStop = () => {  // start a stopped job, stop one that is not
    if (!$("start")) return;
    $("start").disabled = state !== "stopped";
    $("stop").disabled = state === "stopped" || state === null;
  };
  const loadStatus = async () => {
    const status = await api("GET", `${base}/status`);
    state = status.state;
    settleStartStop();
    $("state").textContent = status.state;
    $("state").className = `state state-${status.state}`;
    $("reason").textContent = status.reason || "";
    counters($("counters"), status);
    endpointHealth(status.endpoint || {});
    chart($("chart"), status.throughput);
    const seek = status.set_offset;
    if ($("set-offset-state")) {
      $("set-offset-state").textContent = seek
        ? `last request: ${seek.offset}, ${seek.state}` : "";
    }
  };

  const chosenIds = () => [...document.querySelectorAll("#dead-letters tbody input:checked")]
    .map(box => Number(box.value));
  $("choose-all").addEventListener("change", event => {
    for (const box of document.querySelectorAll("#dead-letters tbody input")) {
      box.checked = event.target.checked;
    }
  });
  on("older", "click", () => act($("older"), () => loadLetters(letters.next)));
  on("start", "click", () => act($("start"), async () => {
    await api("POST", `${base}/start`);
    await Promise.all([loadStatus(), loadDefinition()]);
    return "job started";
  }, settleStartStop));
  on("stop", "click", () => act($("stop"), async () => {
    if (!confirm(`Stop job ${jobId}? Its readers stop reading until it is started again.`)) return;
    await api("POST", `${base}/stop`);
    await Promise.all([loadStatus(), loadDefinition()]);
    return "job stopped";
  }, settleStartStop));
  on("replay-chosen", "click", () => act($("replay-chosen"), async () => {
    const ids = chosenIds();
    if (!ids.length) throw new Error("choose the dead letters to replay first");
    const said = await api("POST", `${base}/dead_letters/replay`, {ids});
    await loadLetters();
    return `replayed ${said.count} dead letter(s)`;
  }));
  on("replay-all", "click", () => act($("replay-all"), async () => {
    if (!confirm(`Send every dead letter of ${jobId} again?`)) return;
    const said = await api("POST", `${base}/dead_letters/replay`);
    await loadLetters();
    return `replayed ${said.count} dead letter(s)`;
  }));
  on("purge", "click", () => act($("purge"), async () => {
    if (!confirm(`Purge every dead letter of ${jobId}? They cannot be replayed afterwards.`)) {
      return;
    }
    const said = await api("DELETE", `${base}/dead_letters`);
    await loadLetters();
    return `purged ${said.purged} dead letter(s)`;
  }));
  on("set-offset", "submit", event => {
    event.preventDefault();
    const form = event.target;
    const where = form.elements.where.value;
    const offset = where === "number" ? form.elements.offset.value.trim() : where;
    act(form.querySelector("button"), async () => {
      if (!offset) throw new Error("give the offset to set");
      if (!confirm(`Move job ${jobId} to offset ${offset} on every partition?`)) return;
      const said = await api("POST", `${base}/set_offset/${encodeURIComponent(offset)}`);
      await loadStatus();
      return `offset ${said.offset} requested (applied by ${said.applied_by})`;
    });
  });
  on("preview", "submit", event => {
    event.preventDefault();
    const form = event.target;
    act(form.querySelector("button"), async () => {
      let sample;
      try { sample = JSON.parse(form.elements.sample.value); } catch (error) {
        throw new Error(`the sample is not JSON: ${error.message}`);
      }
      const said = await api("POST", `${base}/preview`, sample);
      $("preview-result").textContent = JSON.stringify(said.requests, null, 2);
    });
  });

  const loadHistory = async () => {  // admins only: the page has the list for them
    const records = await api("GET", `${root}/audit?job=${encodeURIComponent(jobId)}&limit=50`);
    $("history").replaceChildren(...records.map(r => el("li", {
      text: `${new Date(r.time * 1000).toLocaleString()}: ${r.who} (${r.role}) ${r.action}`})));
  };

  loadDefinition().catch(error => show(error.message));
  loadLetters().catch(error => show(error.message));
  if ($("history")) loadHistory().catch(error => show(error.message));
  poll(loadStatus);
  setInterval(() => {  // the newest page only, unless older ones are being read
    if (letters.shown.length <= 50) loadLetters().catch(error => show(error.message));
  }, refreshMs * 3);
}

if (document.body.dataset.page === "jobs") jobsPage();
else if (document.body.dataset.page === "job") jobPage();
