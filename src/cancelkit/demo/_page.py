"""The demo's single page: no build step, no external assets, no markup from data.

Beside the answer it draws each ended run's Stop receipt as a timeline: one row per
layer (model stream, tool, worker thread, sub-agent, transaction, the run), each with
a bar from the Stop to the moment that layer had stopped, all on one scale, so one
can see which layer stopped when (a run nobody stopped: by time since its start).

Everything the model or a user supplies (answer text, tool names, reasons, error
messages) reaches the DOM through ``textContent`` on elements the script creates,
never as HTML. As a second guard the page is served with a strict
Content-Security-Policy (:data:`CONTENT_SECURITY_POLICY`): only this page's own
script and style run (allowed by their SHA-256 hashes), so an inline event handler
that got into the page anyway would not run.
"""

import base64
import hashlib

__all__ = ("CONTENT_SECURITY_POLICY", "PAGE")

_STYLE = """
  :root { --ink:#1d2330; --muted:#667085; --line:#e4e7ec; --bg:#f6f7fb; --accent:#3b5bdb;
          --stop:#e03131; --ok:#2b8a3e; --warn:#e8590c; }
  * { box-sizing: border-box; }
  body { margin:0; font:15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif;
         color:var(--ink); background:var(--bg); }
  header { padding:22px 32px; background:#fff; border-bottom:1px solid var(--line); }
  header h1 { margin:0; font-size:20px; } header p { margin:4px 0 0; color:var(--muted); }
  main { display:grid; grid-template-columns: minmax(0,1fr) 470px; gap:24px; padding:24px 32px;
         max-width:1280px; align-items:start; }
  .card { background:#fff; border:1px solid var(--line); border-radius:12px; padding:18px; }
  textarea { width:100%; min-height:84px; padding:10px 12px; border:1px solid var(--line);
             border-radius:8px; font:inherit; resize:vertical; }
  .row { display:flex; gap:10px; margin-top:10px; align-items:center; }
  button { border:0; border-radius:8px; padding:9px 18px; font:600 14px system-ui; cursor:pointer; }
  #send { background:var(--accent); color:#fff; } #stop { background:var(--stop); color:#fff; }
  button:disabled { opacity:.4; cursor:default; }
  #answer { white-space:pre-wrap; min-height:160px; max-height:320px; overflow:auto; margin-top:14px;
            padding:14px; border-radius:8px; background:#fbfbfd; border:1px dashed var(--line); }
  .badge { display:inline-block; padding:2px 10px; border-radius:999px; font-size:13px;
           font-weight:600; background:#eef2ff; color:var(--accent); }
  .badge.completed { background:#ebfbee; color:var(--ok); }
  .badge.cancelled { background:#fff4e6; color:var(--warn); }
  .badge.failed { background:#fff5f5; color:var(--stop); }
  .tool, .muted { color:var(--muted); font-size:13px; }
  h2 { font-size:15px; margin:0 0 10px; } h2.runs { margin-top:18px; }
  #history li { margin-bottom:6px; } #history { padding-left:18px; margin:0; }
  .verdict { margin:0 0 8px; font-size:14px; font-weight:600; }
  .facts { display:grid; grid-template-columns:auto minmax(0,1fr); gap:2px 12px; margin:0; font-size:13px; }
  .facts dt { color:var(--muted); } .facts dd { margin:0; overflow-wrap:anywhere; }
  .axis, .track { display:flex; }
  .axis { margin:14px 0 2px; font-size:12px; color:var(--muted); }
  .axis .now { flex:1; display:flex; justify-content:space-between; padding-left:4px; }
  .early { width:16%; flex:none; }
  .axis .early { text-align:right; padding-right:4px; }
  #timeline { list-style:none; margin:0; padding:0; }
  #timeline li { padding:5px 0 6px; border-top:1px solid var(--line); }
  .lhead { display:flex; gap:8px; align-items:baseline; font-size:13px; }
  .ltype { font-weight:600; width:82px; flex:none; }
  .lname { flex:1; min-width:0; overflow:hidden; text-overflow:ellipsis; white-space:nowrap;
           color:var(--muted); }
  .lout { font-weight:600; } .lout.ok { color:var(--ok); } .lout.cut { color:var(--warn); }
  .lout.bad { color:var(--stop); }
  .lwhen { width:132px; flex:none; text-align:right; font-variant-numeric:tabular-nums; }
  .track { height:10px; margin-top:3px; }
  .track .early { border-right:2px solid var(--stop); position:relative;
                  background:repeating-linear-gradient(90deg,#f1f3f5 0 6px,#fff 6px 9px); }
  .track .now { flex:1; position:relative; background:#f1f3f5; }
  .track.unstopped .now { border-left:2px solid var(--muted); }
  .bar { position:absolute; left:0; top:1px; bottom:1px; min-width:3px; border-radius:0 5px 5px 0; }
  .dot { position:absolute; right:5px; top:2px; width:6px; height:6px; border-radius:50%;
         background:#adb5bd; }
  .l-run .bar { background:#1d2330; } .l-task .bar { background:#5c7cfa; }
  .l-child .bar { background:#7048e8; } .l-stream .bar { background:#1098ad; }
  .l-thread .bar { background:#f08c00; } .l-transaction .bar { background:#2b8a3e; }
  .l-tool .bar { background:#d6336c; }
  .ldetail { font-size:12px; color:var(--muted); overflow-wrap:anywhere; }
  .service { margin:14px 0 0; padding-top:10px; border-top:1px solid var(--line); }
"""

# Data goes into the DOM as text only: textContent, createElement, append.
_SCRIPT = """
const $ = (id) => document.getElementById(id);
let current = null, source = null;
// Class names come from these fixed tables, never from the data.
const LAYERS = {"run": "l-run", "task": "l-task", "child run": "l-child", "stream": "l-stream",
                "thread": "l-thread", "transaction": "l-transaction", "tool": "l-tool"};
const OUTCOMES = {"completed": "ok", "finished": "ok", "returned": "ok", "committed": "ok",
                  "cancelled": "cut", "closed": "cut", "withdrawn": "cut", "prevented": "cut",
                  "failed": "bad", "abandoned": "bad", "unknown": "bad"};
function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text != null) node.textContent = String(text);
  return node;
}
function ms(value) {
  const a = Math.abs(value);
  return a >= 1000 ? (a / 1000).toFixed(2) + " s" : a.toFixed(a >= 10 ? 0 : 1) + " ms";
}
function reasonText(reason) {
  return reason.kind + (reason.message ? " (" + reason.message + ")" : "");
}
function setStatus(status, reason) {
  const badge = $("status"); badge.textContent = status; badge.className = "badge " + status;
  $("reason").textContent = reason ? "reason: " + reasonText(reason) : "";
}
function note(text) {
  const line = document.createElement("div"); line.className = "tool"; line.textContent = text;
  $("answer").append(line);
}
function waiting(text) { $("receipt").replaceChildren(el("p", "muted", text)); }
function tokens(entry) {
  if (entry.output_tokens == null) return "";
  return entry.output_tokens + " tokens out, " + (entry.input_tokens ?? 0) + " in" +
    (entry.estimated ? " (estimated)" : "");
}
// One row per layer, in the order they ended; each bar runs from the Stop (or, for a
// run nobody stopped, from its start) to when that layer had stopped, on one scale.
function showReceipt(r) {
  const box = $("receipt");
  if (!r) { waiting("No receipt: the worker that held the run went away."); return; }
  const stopped = r.asked_at != null;
  const since = (e) => stopped ? e.after_stop_ms : (e.at - r.started_at) * 1000;
  const total = stopped ? r.stopped_in_ms : (r.ended_at - r.started_at) * 1000;
  let end = Math.max(total, 0.001);
  for (const e of r.layers) end = Math.max(end, since(e));
  const facts = el("dl", "facts");
  const fact = (term, value) => facts.append(el("dt", null, term), el("dd", null, value));
  if (r.reason) fact("reason", reasonText(r.reason));
  if (r.source) fact("Stop from", r.source);
  fact("tools", r.tools.started + " started, " + r.tools.finished + " finished, " +
    r.tools.prevented + " prevented");
  const subagents = r.layers.some((e) => e.layer === "child run");
  fact("usage", r.usage.output_tokens + " tokens out, " + r.usage.input_tokens + " in" +
    (subagents ? ", sub-agents included" : "") +
    (r.usage.estimated ? " (estimated: a provider's count never came)" : ""));
  const axis = el("div", "axis");
  if (stopped) axis.append(el("span", "early", "earlier"));
  const now = el("span", "now");
  now.append(el("span", null, stopped ? "\\u25B2 Stop" : "start"),
             el("span", null, "+" + ms(end) + (stopped ? ": all stopped" : ": ended")));
  axis.append(now);
  const list = el("ol"); list.id = "timeline";
  for (const e of r.layers) {
    const t = since(e);
    const row = el("li", LAYERS[e.layer] || "l-other"); row.dataset.layer = e.layer;
    const name = e.name === r.run_id ? "this run" :
      e.name.startsWith(r.run_id + ":") ? e.name.slice(r.run_id.length + 1) : e.name;
    const label = el("span", "lname", name); label.title = e.name;
    const when = !stopped ? "+" + ms(t) + " after start" :
      t < 0 ? ms(t) + " before Stop" : "+" + ms(t) + " after Stop";
    const head = el("div", "lhead");
    head.append(el("span", "ltype", e.layer), label,
                el("span", "lout " + (OUTCOMES[e.outcome] || ""), e.outcome), el("span", "lwhen", when));
    const track = el("div", stopped ? "track" : "track unstopped");
    const zone = el("span", "now"), bar = el("span", "bar");
    if (stopped) {
      const early = el("span", "early");
      if (t < 0) early.append(el("span", "dot"));
      track.append(early);
    }
    if (t >= 0 || !stopped) { bar.style.width = (100 * Math.max(t, 0) / end).toFixed(2) + "%"; zone.append(bar); }
    track.append(zone);
    row.append(head, track);
    const more = [tokens(e), e.detail].filter((part) => part).join("; ");
    if (more) row.append(el("div", "ldetail", more));
    list.append(row);
  }
  const verdict = stopped ? r.status + ": every layer had stopped " + ms(total) + " after the Stop" :
    "Not stopped: " + r.status + " in " + ms(total) + " (layers by time since the start)";
  box.replaceChildren(el("p", "verdict", verdict), facts, axis, list);
}
async function problem(reply) {
  try {
    const detail = (await reply.json()).detail;
    return typeof detail === "string" ? detail : detail.map((e) => e.msg).join("; ");
  } catch (e) { return "HTTP " + reply.status; }
}
function idle() { $("send").disabled = false; $("stop").disabled = true; }
async function ask() {
  $("answer").textContent = ""; $("send").disabled = true; $("stop").disabled = false;
  setStatus("running", null); waiting("Running. Press Stop: the receipt shows what stopped, and when.");
  // The page asks for its run to stop when it stops watching (the tab is closed).
  const reply = await fetch("/api/runs", {method: "POST", headers: {"content-type": "application/json"},
                                          body: JSON.stringify({prompt: $("prompt").value, stop_when_unwatched: true})});
  if (!reply.ok) { setStatus("failed", {kind: "error", message: await problem(reply)}); idle(); return; }
  current = (await reply.json()).id;
  source = new EventSource("/api/runs/" + current + "/events");
  source.addEventListener("delta", (e) => { $("answer").append(JSON.parse(e.data).text); });
  source.addEventListener("tool_call", (e) => { note("calling " + JSON.parse(e.data).name + "..."); });
  source.addEventListener("tool_result", (e) => { const d = JSON.parse(e.data);
    note(d.name + (d.is_error ? " failed" : " returned")); });
  source.addEventListener("done", (e) => { const d = JSON.parse(e.data); source.close();
    setStatus(d.status, d.reason); idle(); showReceipt(d.receipt); refresh();
    const r = d.receipt, usage = d.usage || (r && r.usage);
    const item = document.createElement("li");
    item.textContent = d.status + (d.reason ? " (" + d.reason.kind + ")" : "") +
      (usage ? ", " + usage.output_tokens + " tokens" + (usage.estimated ? " (estimated)" : "") : "") +
      (r && r.stopped_in_ms != null ? ", stopped in " + ms(r.stopped_in_ms) : "");
    $("history").prepend(item); });
}
async function stop() {
  if (!current) return;
  $("stop").disabled = true;
  await fetch("/api/runs/" + current + "/cancel", {method: "POST"});
}
async function refresh() {
  try {
    const s = await (await fetch("/api/stats")).json();
    $("s-saved").textContent = s.tokens_saved_by_stop ?? "-";
    $("s-runs").textContent = s.active_runs;
    $("s-model").textContent = s.model.status + (s.model.restarts ? " (restarted " + s.model.restarts + "x)" : "");
  } catch (e) {}
}
$("send").onclick = ask; $("stop").onclick = stop;
setInterval(refresh, 1000); refresh();
"""

_BODY = """
<header>
  <h1>Stop means stop</h1>
  <p>An agent with tools, a model stream, a worker thread and a database write.
     Press Stop (or close the tab) and watch every layer stop.</p>
</header>
<main>
  <section class="card">
    <textarea id="prompt">Research cancellation in async Python [[tokens:600]] [[rate:40]]</textarea>
    <div class="row">
      <button id="send">Ask</button>
      <button id="stop" disabled>Stop</button>
      <span id="status" class="badge">idle</span>
      <span id="reason" class="tool"></span>
    </div>
    <div id="answer" aria-live="polite"></div>
    <h2 class="runs">Runs</h2>
    <ol id="history"></ol>
  </section>
  <aside class="card">
    <h2>Stop receipt: what stopped, and when</h2>
    <div id="receipt"><p class="muted">Ask, then press Stop: each layer of the run
      (model stream, tools, worker thread, sub-agent, database write) appears here
      with the moment it had stopped.</p></div>
    <p class="service muted">model server <span id="s-model">-</span>;
      active runs <span id="s-runs">-</span>;
      tokens the model never generated thanks to Stop <span id="s-saved">-</span></p>
  </aside>
</main>
"""

PAGE = (
    '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    "<title>cancelkit: Stop means stop</title>\n"
    f"<style>{_STYLE}</style>\n</head>\n<body>{_BODY}<script>{_SCRIPT}</script>\n</body>\n</html>\n"
)


def _digest(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        f"script-src {_digest(_SCRIPT)}",  # this page's script only: no inline handlers
        f"style-src {_digest(_STYLE)}",
        "connect-src 'self'",
        "img-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
