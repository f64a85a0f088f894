// The run monitor's page: polls state.json (small), redraws, and fetches a worker's screen only
// when its shot number changed. Read-only: it only ever GETs.
"use strict";

const POLL_MS = 1000;
const shots = new Map(); // worker index -> shot number shown

function duration(s) {
  if (s === null || s === undefined) return "-";
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function fmt(x) {
  return Number.isInteger(x) ? String(x) : String(Math.round(x * 100) / 100);
}

function el(tag, props = {}, text) {
  const e = document.createElement(tag);
  Object.assign(e, props);
  if (text !== undefined) e.textContent = text;
  return e;
}

function standing(s) {
  const mean = s.mean === null ? "-" : s.mean.toFixed(2);
  const unit = s.kind === "screenspot" ? "hits" : "score";
  const eta = s.ended ? "finished" : `ETA ${duration(s.eta_s)}`;
  return `${s.done}/${s.total} done, ${unit} ${fmt(s.score)} (mean ${mean}), ${eta}`;
}

let kind = "osworld";

function tile(w, i) {
  const li = el("li", { className: "tile", id: `worker-${i}` });
  li.append(el("h3", {}, w.name));
  const busy = w.task !== "";
  const task = busy ? `${w.domain ? w.domain + "/" : ""}${w.task}` : "no task";
  const step = busy && w.max_steps ? `, step ${w.step}/${w.max_steps}` : "";
  const time = w.started === null ? "" : `, since ${new Date(w.started * 1000).toLocaleTimeString()}`;
  li.append(el("p", { className: "meta" }, `${task} · ${w.phase}${step}${time}`));
  if (w.shot > 0) {
    const img = el("img", { alt: `${w.name}'s screen after step ${w.step} of ${task}` });
    img.dataset.worker = String(i);
    li.append(img);
  }
  const [said, did] = kind === "screenspot" ? ["Instruction", "Answer"] : ["Thought", "Action"];
  if (w.thought) li.append(el("p", { className: "thought" }, `${said}: ${w.thought}`));
  if (w.action) li.append(el("p", { className: "action" }, `${did}: ${w.action}`));
  if (w.view) {
    const a = el("a", { href: w.view, rel: "noreferrer", target: "_blank" }, "live view");
    li.append(a);
  }
  return li;
}

function drawWorkers(workers) {
  const ul = document.getElementById("workers");
  const kept = new Map(); // reuse the img elements, so an unchanged screen is never fetched again
  ul.querySelectorAll("img[data-worker]").forEach((img) => kept.set(img.dataset.worker, img));
  ul.replaceChildren(...workers.map(tile));
  ul.querySelectorAll("img[data-worker]").forEach((img) => {
    const i = img.dataset.worker;
    const w = workers[Number(i)];
    const old = kept.get(i);
    if (old && shots.get(i) === w.shot) {
      old.alt = img.alt;
      img.replaceWith(old);
    } else {
      shots.set(i, w.shot);
      img.src = `shot?w=${i}&n=${w.shot}`;
    }
  });
}

function row(cells) {
  const tr = el("tr");
  for (const c of cells) {
    if (c instanceof Node) {
      const td = el("td");
      td.append(c);
      tr.append(td);
    } else {
      tr.append(el("td", {}, String(c)));
    }
  }
  return tr;
}

function drawTables(s) {
  document.querySelector("#domains tbody").replaceChildren(
    ...s.domains.map((d) =>
      // of the tasks done so far: mid-run, the rest are not failures yet
      row([d.domain, d.done, d.tasks, fmt(d.score), d.done ? `${((100 * d.score) / d.done).toFixed(1)}%` : "–"]),
    ),
  );
  document.querySelector("#finished tbody").replaceChildren(
    ...s.finished.map((f) => {
      const name = f.report ? el("a", { href: f.report, rel: "noreferrer" }, f.task_id) : f.task_id;
      return row([f.domain, name, fmt(f.score), f.kind]);
    }),
  );
  const summary = document.getElementById("summary");
  if (s.summary && summary.hidden) {
    summary.replaceChildren(el("a", { href: s.summary, rel: "noreferrer" }, "The run's summary"));
    summary.hidden = false;
  }
}

let last = "";
const drawn = { workers: "", tables: "" }; // what each part was last drawn from: unchanged parts are left alone

async function poll() {
  try {
    const r = await fetch("state.json", { cache: "no-store" });
    if (!r.ok) throw new Error(`state.json: HTTP ${r.status}`);
    const text = await r.text();
    document.getElementById("error").hidden = true;
    if (text !== last) {
      last = text;
      const s = JSON.parse(text);
      kind = s.kind;
      document.getElementById("title").textContent = s.title;
      document.title = `${s.title}: ${s.done}/${s.total}`;
      const line = standing(s);
      const st = document.getElementById("standing");
      if (st.textContent !== line) st.textContent = line; // the live region speaks changes only
      const bar = document.getElementById("bar");
      bar.max = Math.max(s.total, 1);
      bar.value = s.done;
      const workers = JSON.stringify(s.workers);
      if (workers !== drawn.workers) {
        drawn.workers = workers;
        drawWorkers(s.workers);
      }
      const tables = JSON.stringify([s.domains, s.finished, s.summary]);
      if (tables !== drawn.tables) {
        drawn.tables = tables;
        drawTables(s);
      }
      document.body.dataset.ended = s.ended ? "1" : "0";
      document.body.dataset.score = String(s.score);
    }
    document.body.dataset.polls = String(Number(document.body.dataset.polls) + 1);
  } catch (e) {
    const err = document.getElementById("error");
    err.textContent = `The run is not answering (${e.message}); it may have ended.`;
    err.hidden = false;
  }
  setTimeout(poll, POLL_MS);
}

poll();
