// analysisfleet console: live updates over Server-Sent Events. The server
// renders every fragment; this file only swaps them in, and pauses.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var src = document.body.getAttribute("data-live");
  var btn = document.getElementById("pause");
  var status = document.getElementById("live-status");
  if (!live || !src || !btn || !status) { return; }
  if (!window.EventSource) { status.textContent = "Live updates: not supported by this browser (reload to refresh)."; btn.hidden = true; return; }
  var es = null, paused = false, pending = null, updates = 0;

  function swap(html) {
    live.innerHTML = html;
    updates++;
    live.setAttribute("data-updates", String(updates));
    status.textContent = "Live updates: on (last " + new Date().toLocaleTimeString() + ")";
  }
  // Never pull the page from under the keyboard: while focus is inside the
  // live region, hold the newest fragment until focus leaves.
  function focused() { return live.contains(document.activeElement) && document.activeElement !== live; }
  live.addEventListener("focusout", function () {
    setTimeout(function () { if (pending !== null && !focused() && !paused) { swap(pending); pending = null; } }, 0);
  });
  function open() {
    es = new EventSource(src);
    es.addEventListener("open", function () { status.textContent = "Live updates: on"; });
    es.addEventListener("fragment", function (e) {
      if (paused) { return; }
      if (focused()) { pending = e.data; return; }
      swap(e.data);
    });
    es.addEventListener("problem", function (e) { status.textContent = "Live updates: " + e.data; });
    es.addEventListener("error", function () { if (!paused) { status.textContent = "Live updates: reconnecting…"; } });
  }
  btn.addEventListener("click", function () {
    paused = !paused;
    btn.setAttribute("aria-pressed", paused ? "true" : "false");
    btn.textContent = paused ? "Resume live updates" : "Pause live updates";
    if (paused) {
      if (es) { es.close(); es = null; }
      status.textContent = "Live updates: paused";
    } else {
      pending = null;
      open();
    }
  });
  open();
})();
