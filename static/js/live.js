// Live pages: tell the agent page's websocket where the page stands each time it (re)connects,
// so it sends exactly the events the page hasn't shown. Served from our static files (no CDN).
(function () {
  "use strict";
  document.addEventListener("htmx:wsOpen", function (event) {
    var source = event.target;
    setLiveState(source, "live");
    if (source.id !== "live-agent") return;
    var cursor = document.getElementById("events-cursor");
    var after = cursor ? parseInt(cursor.dataset.seq || "0", 10) : 0;
    event.detail.socketWrapper.sendImmediately(JSON.stringify({ after: after }));
  });
  document.addEventListener("htmx:wsClose", function (event) {
    setLiveState(event.target, event.detail.event.code === 4403 ? "refused" : "reconnecting");
  });
  function setLiveState(source, state) {
    var badge = document.getElementById("live-state");
    if (!badge) return;
    badge.dataset.state = state;
    badge.textContent = { live: "● live", reconnecting: "○ reconnecting…", refused: "not allowed" }[state];
  }
})();
