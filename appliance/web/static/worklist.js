// Keeps the open worklist current: every few seconds, fetch the ledger and rows for the
// same filters and page (server-rendered, escaped HTML) and swap them in. No reload, no CDN.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) { return; }
  var status = document.getElementById("live-status");
  var interval = Math.max(parseInt(live.getAttribute("data-interval"), 10) || 10, 1) * 1000;
  var src = live.getAttribute("data-src");
  function refresh() {
    fetch(src, {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (response) {
        if (response.redirected || response.status === 401 || response.status === 303) {
          window.location.assign("/login");
          return null;
        }
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        if (html === null) { return; }
        var parsed = new DOMParser().parseFromString(html, "text/html");
        var table = parsed.getElementById("worklist-table");
        var ledger = parsed.getElementById("ledger");
        if (table && ledger) {
          document.getElementById("worklist-table").replaceWith(table);
          document.getElementById("ledger").replaceWith(ledger);
          live.setAttribute("data-updated", String(Date.now()));
          if (status) { status.textContent = status.textContent.replace(/ · (updated|update failed).*$/, "") + " · updated " + new Date().toLocaleTimeString(); }
        }
      })
      .catch(function () {
        if (status) { status.textContent = status.textContent.replace(/ · (updated|update failed).*$/, "") + " · update failed, retrying"; }
      })
      .finally(function () { window.setTimeout(refresh, interval); });
  }
  window.setTimeout(refresh, interval);
}());
