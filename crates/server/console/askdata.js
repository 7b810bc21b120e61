"use strict";
const $ = (id) => document.getElementById(id);
let last = null;

async function post(path, body) {
  const r = await fetch(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  let data = null;
  try { data = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) {
    const msg = data && data.error && data.error.message ? data.error.message : `HTTP ${r.status}`;
    throw new Error(msg);
  }
  return data;
}

function cell(v) {
  const td = document.createElement("td");
  if (v === null || v === undefined) { td.textContent = ""; }
  else if (typeof v === "number") { td.textContent = String(v); td.className = "num"; }
  else { td.textContent = String(v); }
  return td;
}

function renderTable(columns, rows) {
  const wrap = $("table-wrap");
  wrap.replaceChildren();
  if (!columns || columns.length === 0) return;
  const table = document.createElement("table");
  table.id = "rows";
  const head = table.createTHead().insertRow();
  for (const c of columns) { const th = document.createElement("th"); th.textContent = c; head.appendChild(th); }
  const body = table.createTBody();
  for (const r of rows || []) { const tr = body.insertRow(); for (const v of r) tr.appendChild(cell(v)); }
  wrap.appendChild(table);
}

function render(a) {
  last = a;
  $("result").hidden = false;
  // A wrong answer, or none, can still be taught: the corrected SQL becomes an example.
  $("feedback").hidden = false;
  $("correct").hidden = !a.sql;
  $("correction").hidden = true;
  $("feedback-status").textContent = "";
  $("answer").textContent = a.answer || "";
  $("error").hidden = !a.error;
  $("error").textContent = a.error || "";
  $("sql").textContent = a.sql || "";
  $("echarts-option").textContent = a.echarts ? JSON.stringify(a.echarts, null, 2) : "";
  $("model-output").textContent = a.model_output || "";
  $("corrected-sql").value = a.sql || "";
  // The server draws the chart (the same SVG the CLI writes). Where ECharts is on the page
  // (window.echarts, served from this origin), it draws the option instead.
  const chart = $("chart");
  chart.replaceChildren();
  if (a.echarts && window.echarts && typeof window.echarts.init === "function") {
    const div = document.createElement("div");
    div.style.cssText = "width:100%;height:420px";
    chart.appendChild(div);
    window.echarts.init(div).setOption(a.echarts);
  } else if (a.svg) {
    const doc = new DOMParser().parseFromString(a.svg, "image/svg+xml");
    const svg = doc.documentElement;
    if (svg && svg.nodeName.toLowerCase() === "svg") chart.appendChild(document.importNode(svg, true));
  }
  renderTable(a.columns, a.rows);
}

async function ask(question) {
  const started = performance.now();
  $("ask").disabled = true;
  $("status").className = "";
  $("status").textContent = "Asking…";
  const tick = setInterval(() => { $("status").textContent = `Asking… ${((performance.now() - started) / 1000).toFixed(0)} s`; }, 1000);
  try {
    const body = { question, svg: true };
    if ($("model").value) body.model = $("model").value;
    const a = await post("/api/askdata/ask", body);
    render(a);
    $("status").textContent = `Answered in ${((performance.now() - started) / 1000).toFixed(1)} s`;
  } catch (e) {
    $("status").className = "error";
    $("status").textContent = e.message;
  } finally {
    clearInterval(tick);
    $("ask").disabled = false;
  }
}

async function feedback(verdict) {
  if (!last) return;
  const body = { question: last.question, sql: last.sql, verdict };
  if (last.chart) body.chart = last.chart;
  if (verdict === "wrong") {
    const fixed = $("corrected-sql").value.trim();
    if (fixed) body.corrected_sql = fixed;
  }
  try {
    const r = await post("/api/askdata/feedback", body);
    $("feedback-status").className = "";
    $("feedback-status").textContent = `Saved: ${r.examples} example(s) in ${r.dataset}`;
  } catch (e) {
    $("feedback-status").className = "error";
    $("feedback-status").textContent = e.message;
  }
}

$("ask-form").addEventListener("submit", (e) => { e.preventDefault(); const q = $("question").value.trim(); if (q) ask(q); });
for (const b of $("examples").querySelectorAll("button")) b.addEventListener("click", () => { $("question").value = b.textContent; ask(b.textContent); });
$("correct").addEventListener("click", () => feedback("correct"));
$("wrong").addEventListener("click", () => { $("correction").hidden = false; $("corrected-sql").focus(); });
$("send-correction").addEventListener("click", () => feedback("wrong"));

fetch("/v1/models").then((r) => r.json()).then((list) => {
  for (const m of list.data || []) {
    if (m.kind === "embedding") continue;
    const o = document.createElement("option");
    o.value = m.id; o.textContent = m.id;
    $("model").appendChild(o);
  }
}).catch(() => {});
