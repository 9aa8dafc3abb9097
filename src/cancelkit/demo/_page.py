"""The demo's single page: no build step, no external assets, no markup from data.

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
  main { display:grid; grid-template-columns: minmax(0,1fr) 320px; gap:24px; padding:24px 32px;
         max-width:1200px; }
  .card { background:#fff; border:1px solid var(--line); border-radius:12px; padding:18px; }
  textarea { width:100%; min-height:84px; padding:10px 12px; border:1px solid var(--line);
             border-radius:8px; font:inherit; resize:vertical; }
  .row { display:flex; gap:10px; margin-top:10px; align-items:center; }
  button { border:0; border-radius:8px; padding:9px 18px; font:600 14px system-ui; cursor:pointer; }
  #send { background:var(--accent); color:#fff; } #stop { background:var(--stop); color:#fff; }
  button:disabled { opacity:.4; cursor:default; }
  #answer { white-space:pre-wrap; min-height:160px; margin-top:14px; padding:14px;
            border-radius:8px; background:#fbfbfd; border:1px dashed var(--line); }
  .badge { display:inline-block; padding:2px 10px; border-radius:999px; font-size:13px;
           font-weight:600; background:#eef2ff; color:var(--accent); }
  .badge.completed { background:#ebfbee; color:var(--ok); }
  .badge.cancelled { background:#fff4e6; color:var(--warn); }
  .badge.failed { background:#fff5f5; color:var(--stop); }
  .tool { color:var(--muted); font-size:13px; }
  dl { display:grid; grid-template-columns:auto auto; gap:6px 12px; margin:0; }
  dt { color:var(--muted); } dd { margin:0; text-align:right; font-variant-numeric:tabular-nums; }
  h2 { font-size:15px; margin:0 0 12px; } h2.runs { margin-top:18px; }
  #history li { margin-bottom:6px; } #history { padding-left:18px; margin:0; }
"""

# Data goes into the DOM as text only: textContent, createElement, append.
_SCRIPT = """
const $ = (id) => document.getElementById(id);
let current = null, source = null;
function setStatus(status, reason) {
  const badge = $("status"); badge.textContent = status; badge.className = "badge " + status;
  $("reason").textContent = reason ? "reason: " + reason.kind + (reason.message ? " (" + reason.message + ")" : "") : "";
}
function note(text) {
  const line = document.createElement("div"); line.className = "tool"; line.textContent = text;
  $("answer").append(line);
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
  setStatus("running", null);
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
    setStatus(d.status, d.reason); idle();
    const item = document.createElement("li");
    item.textContent = d.status + (d.reason ? " (" + d.reason.kind + ")" : "") + ", " +
      d.usage.output_tokens + " tokens" + (d.usage.estimated ? " (estimated)" : "");
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
    $("s-generated").textContent = s.tokens_generated ?? "-";
    $("s-saved").textContent = s.tokens_saved_by_stop ?? "-";
    $("s-after").textContent = s.tokens_after_disconnect ?? "-";
    $("s-p50").textContent = s.stop_latency_ms.p50 == null ? "-" : s.stop_latency_ms.p50.toFixed(1) + " ms";
    $("s-max").textContent = s.stop_latency_ms.max == null ? "-" : s.stop_latency_ms.max.toFixed(1) + " ms";
    $("s-runs").textContent = s.active_runs;
    $("s-tasks").textContent = s.tasks + " / " + s.threads;
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
    <h2>What Stop saved</h2>
    <dl>
      <dt>tokens generated</dt><dd id="s-generated">-</dd>
      <dt>tokens saved by Stop</dt><dd id="s-saved">-</dd>
      <dt>generated after disconnect</dt><dd id="s-after">-</dd>
      <dt>time to stop every layer (p50)</dt><dd id="s-p50">-</dd>
      <dt>slowest stop</dt><dd id="s-max">-</dd>
      <dt>active runs</dt><dd id="s-runs">-</dd>
      <dt>tasks / threads</dt><dd id="s-tasks">-</dd>
      <dt>model server</dt><dd id="s-model">-</dd>
    </dl>
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
