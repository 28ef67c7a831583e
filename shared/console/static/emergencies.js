// The red emergency banner (console_base.html): short polling of the console's live route every 2.5 s.
// Why polling and not server-sent events: see Console._live_router in shared/console/web.py.
// The route answers an HTML fragment in the page's language; an empty answer hides the banner.
(function () {
  var banner = document.getElementById("emergency-banner");
  if (!banner || !window.fetch) { return; }
  var every = parseInt(banner.getAttribute("data-every-ms"), 10) || 2500;
  var timer = null, inflight = false, stopped = false, last = null;

  function show(html) {
    if (html === last) { return; }
    last = html;
    banner.innerHTML = html;
    banner.hidden = !html.trim();
  }
  function schedule() {
    // A hidden tab does not poll; it catches up the moment it is shown again.
    if (!stopped && !document.hidden && timer === null) { timer = setTimeout(poll, every); }
  }
  function poll() {
    timer = null;
    if (inflight || stopped) { return; }
    inflight = true;
    fetch(banner.getAttribute("data-src"), {credentials: "same-origin", cache: "no-store",
                                             headers: {"Accept": "text/html"}})
      .then(function (r) {
        if (r.status === 401) { stopped = true; return null; }  // signed out: the next click signs in again
        return r.ok ? r.text() : null;
      })
      .then(function (html) { if (html !== null) { show(html); } })
      .catch(function () { /* offline for a moment: the next poll tries again */ })
      .then(function () { inflight = false; schedule(); });
  }
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && timer === null && !inflight) { poll(); }
  });
  poll();
})();
