// Monitoring charts: one uPlot chart per column (drift score and its threshold), live quality,
// prediction drift, the prediction distribution (class shares or quantiles) and labelled rows,
// from the console's JSON endpoint. No inline script (CSP).
(function () {
  "use strict";
  var root = document.getElementById("charts");
  if (!root || typeof uPlot === "undefined") { return; }

  function width() { return Math.max(260, Math.min(root.clientWidth - 24, 560)); }

  function chart(title, ts, series) {
    var box = document.createElement("figure");
    box.className = "chart";
    var h = document.createElement("h2");
    h.textContent = title;
    box.appendChild(h);
    root.appendChild(box);
    var colors = ["#0550ae", "#a40e26", "#116329", "#7d4e00", "#6639ba"];
    var opts = {
      width: width(), height: 200,
      scales: { x: { time: true } },
      series: [{}].concat(series.map(function (s, i) {
        return { label: s.label, stroke: colors[i % colors.length], width: 2, dash: s.dash || undefined, spanGaps: true };
      })),
      axes: [{}, { size: 60 }]
    };
    var data = [ts].concat(series.map(function (s) { return s.values; }));
    box.setAttribute("aria-label", title + ": " + ts.length + " windows");
    return new uPlot(opts, data, box);
  }

  fetch(root.getAttribute("data-src"), { credentials: "same-origin" })
    .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
    .then(function (m) {
      if (!m.ts || !m.ts.length) { return; }
      var plots = [];
      Object.keys(m.quality || {}).forEach(function (k) {
        plots.push(chart("Live quality: " + k, m.ts, [{ label: k, values: m.quality[k] }]));
      });
      plots.push(chart("Rows and labelled rows per window", m.ts, [
        { label: "rows", values: m.rows }, { label: "labelled", values: m.labelled }]));
      var pd = m.predictions || {};
      var pdKeys = Object.keys(pd.series || {});
      if (pd.windows && pdKeys.length) {
        plots.push(chart(pd.kind === "classes" ? "Predicted class shares" : "Prediction quantiles", m.ts,
          pdKeys.map(function (k) { return { label: k, values: pd.series[k] }; })));
      }
      if ((m.prediction_drift || []).some(function (v) { return v !== null; })) {
        plots.push(chart("Prediction drift", m.ts, [{ label: "score", values: m.prediction_drift }]));
      }
      Object.keys(m.columns || {}).sort().forEach(function (col) {
        var c = m.columns[col];
        plots.push(chart("Drift: " + col, m.ts, [
          { label: "score", values: c.score }, { label: "threshold", values: c.threshold, dash: [6, 4] }]));
      });
      window.addEventListener("resize", function () {
        plots.forEach(function (p) { p.setSize({ width: width(), height: 200 }); });
      });
    })
    .catch(function (err) {
      var p = document.createElement("p");
      p.setAttribute("role", "alert");
      p.textContent = "Could not load the monitoring data (" + err.message + ").";
      root.appendChild(p);
    });
})();
