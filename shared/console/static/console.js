// Progressive enhancement only: every page works without this file.
// 1) htmx requests carry the page's CSRF token (forms carry it as a hidden field).
document.addEventListener("htmx:configRequest", function (event) {
  var meta = document.querySelector('meta[name="csrf-token"]');
  if (meta && meta.content) { event.detail.headers["X-CSRF-Token"] = meta.content; }
});
// 2) Keyboard shortcuts: an element with data-key="n" is clicked (or focused, for inputs) when n is pressed
//    outside a text field. Esc leaves a text field so the shortcuts work again.
document.addEventListener("keydown", function (event) {
  var target = event.target;
  // A focused radio or checkbox (as after choosing one by its shortcut) takes no text: shortcuts still apply.
  var typing = target && (target.tagName === "TEXTAREA" || target.tagName === "SELECT" ||
    (target.tagName === "INPUT" && !/^(radio|checkbox|button|submit|reset)$/.test(target.type)));
  if (event.key === "Escape" && typing) { target.blur(); return; }
  if (typing || event.ctrlKey || event.metaKey || event.altKey) { return; }
  var el = document.querySelector('[data-key="' + CSS.escape(event.key.toLowerCase()) + '"]');
  if (!el) { return; }
  event.preventDefault();
  if (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT") { el.focus(); } else { el.click(); }
});
// 3) A form with data-confirm asks first (the campaign's cancel button); without JavaScript it submits at once.
document.addEventListener("submit", function (event) {
  var message = event.target.getAttribute && event.target.getAttribute("data-confirm");
  if (message && !window.confirm(message)) { event.preventDefault(); }
}, true);
// 4) A select with data-autosubmit submits its form when changed (report periods); a <noscript> button does it otherwise.
document.addEventListener("change", function (event) {
  var target = event.target;
  if (target && target.hasAttribute && target.hasAttribute("data-autosubmit") && target.form) { target.form.requestSubmit(); }
});
// 5) The call timer of a citizen put through to this seat (the operator's desk, #live-call): elapsed since the
//    bridge, frozen once it ended. Here, not inline in the page: the consoles' CSP runs scripts from this origin only.
(function () {
  function tick() {
    var box = document.getElementById("live-call");
    var timer = document.getElementById("call-timer");
    if (!box || !timer) { return; }
    var since = Date.parse(box.dataset.since), until = box.dataset.until ? Date.parse(box.dataset.until) : Date.now();
    var s = Math.max(0, Math.floor((until - since) / 1000));
    timer.textContent = Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }
  tick(); setInterval(tick, 1000);
})();
