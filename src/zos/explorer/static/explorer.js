// zos explorer: live refresh of the page's #live region, fed by the server's events.
// The page is complete without this script; it only keeps it fresh:
// - an "update" event (the registry's answers changed) or, on pages that ask for it, a
//   "tick" (every poll) makes it fetch the live region again and swap it in;
// - times say how long ago they were.
// After each swap the document gets a "zos:refreshed" event (detail: the version).
(function () {
  "use strict";
  var live = document.getElementById("live");
  var conn = document.getElementById("conn");

  function ago(el) {
    var ts = parseFloat(el.getAttribute("data-ts"));
    if (!ts) return;
    var s = Math.max(0, Math.round(Date.now() / 1000 - ts));
    var text = s < 120 ? s + " s ago" : s < 7200 ? Math.floor(s / 60) + " min ago"
      : Math.floor(s / 3600) + " h ago";
    el.title = el.getAttribute("datetime");
    el.textContent = text;
  }
  function ages() {
    var els = document.querySelectorAll("time[data-ts]");
    for (var i = 0; i < els.length; i++) ago(els[i]);
  }
  ages();
  setInterval(ages, 1000);

  if (!live || !window.EventSource || !window.fetch) return;
  var refreshOn = live.getAttribute("data-refresh") || "update";
  var busy = false, again = false;

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.pathname + location.search, {
      headers: { "X-Zos-Fragment": "live" },
      credentials: "same-origin",
      cache: "no-store"
    }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      var version = r.headers.get("X-Zos-Version");
      return r.text().then(function (html) {
        live.innerHTML = html;  // rendered and escaped by the server
        if (version) live.setAttribute("data-version", version);
        ages();
        document.dispatchEvent(new CustomEvent("zos:refreshed", { detail: { version: version } }));
      });
    }).catch(function (e) {
      if (conn) { conn.textContent = "refresh failed"; conn.className = "conn down"; }
    }).then(function () {
      busy = false;
      if (again) { again = false; refresh(); }
    });
  }

  var source = new EventSource("/events?since=" + encodeURIComponent(live.getAttribute("data-version")));
  source.addEventListener("open", function () {
    if (conn) { conn.textContent = "live"; conn.className = "conn up"; }
  });
  source.addEventListener("error", function () {
    if (conn) { conn.textContent = "reconnecting"; conn.className = "conn down"; }
  });
  source.addEventListener("update", function () { if (refreshOn === "update") refresh(); });
  source.addEventListener("tick", function () { if (refreshOn === "tick") refresh(); });
})();
