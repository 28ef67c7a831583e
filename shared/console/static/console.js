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
  // While a modal question is open (the desk's "you already hold a task"), only its own keys apply.
  var scope = document.querySelector("dialog[open]") || document;
  var el = scope.querySelector('[data-key="' + CSS.escape(event.key.toLowerCase()) + '"]');
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
// 5) The call timer on the operator's desk (#live-call: my click-to-call, or a citizen put through to me): elapsed
//    since the call was answered, frozen once it ended. Counted on the server's clock (data-now, when the box was
//    rendered) plus the time since, so a browser whose clock is off still shows the right time. Here, not inline in
//    the page: the consoles' CSP runs scripts from this origin only.
(function () {
  function tick() {
    var box = document.getElementById("live-call");
    var timer = document.getElementById("call-timer");
    if (!box || !timer) { return; }
    if (box.shouhuOffset === undefined) { box.shouhuOffset = box.dataset.now ? Date.parse(box.dataset.now) - Date.now() : 0; }
    var since = Date.parse(box.dataset.since);
    var until = box.dataset.until ? Date.parse(box.dataset.until) : Date.now() + box.shouhuOffset;
    var s = Math.max(0, Math.floor((until - since) / 1000));
    timer.textContent = Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }
  tick(); setInterval(tick, 1000);
  document.addEventListener("htmx:afterSwap", tick);
})();
// 6) A <dialog data-modal> the server rendered open (a question before an action) becomes modal: the focus stays
//    in it and Esc closes it. Without JavaScript it is an open dialog whose buttons work the same.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("dialog[data-modal][open]").forEach(function (dialog) {
    if (dialog.showModal) { dialog.close(); dialog.showModal(); }
  });
});
