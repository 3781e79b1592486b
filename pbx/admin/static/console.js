// Short polling for the live pages: every few seconds, fetch the page's <main> (?partial=1) and swap it in,
// unless the operator is typing in a form or listening to a message. No framework.
(function () {
  "use strict";
  var main = document.getElementById("main");
  if (!main || !main.dataset.refresh) { return; }
  var every = parseInt(main.dataset.refresh, 10) || 2000;
  function busy() {
    var active = document.activeElement;
    if (active && main.contains(active) && (active.tagName === "INPUT" || active.tagName === "SELECT")) { return true; }
    var audios = main.getElementsByTagName("audio");
    for (var i = 0; i < audios.length; i++) { if (!audios[i].paused) { return true; } }
    return false;
  }
  function refresh() {
    if (busy() || document.hidden) { return; }
    var url = window.location.pathname + "?partial=1";
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (response.redirected || response.status === 401) { window.location.assign("/login"); return null; }
        return response.ok ? response.text() : null;
      })
      .then(function (html) { if (html !== null && html !== undefined && !busy()) { main.innerHTML = html; } })
      .catch(function () { /* the PBX restarts: try again at the next tick */ });
  }
  window.setInterval(refresh, every);
}());
