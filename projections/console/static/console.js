// The change list's first page follows the server's events: each "changes" event carries the rows,
// rendered (later pages have no data-stream: they are not live).
(function () {
  var body = document.getElementById("changes-body");
  var live = document.getElementById("live");
  if (!body || !body.getAttribute("data-stream") || !window.EventSource) { return; }
  var source = new EventSource(body.getAttribute("data-stream"));
  source.addEventListener("changes", function (e) { body.innerHTML = e.data; });
  source.addEventListener("problem", function () { if (live) { live.className = "live off"; } });
  source.onopen = function () { if (live) { live.className = "live on"; } };
  source.onerror = function () { if (live) { live.className = "live off"; } };
})();
