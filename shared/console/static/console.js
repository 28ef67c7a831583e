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
