// The overview refreshes #live every few seconds (htmx). While the keyboard focus is inside it, a
// refresh would replace the focused element and throw the focus back to the page's start, so the
// refresh waits until the focus leaves. No inline script and no eval (the console's CSP forbids both).
document.addEventListener("htmx:beforeRequest", function (event) {
  var live = document.getElementById("live");
  var focused = document.activeElement;
  if (live && event.detail.elt === live && focused && focused !== live && live.contains(focused)) {
    event.preventDefault();
  }
});
