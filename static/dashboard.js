// Dashboard charts, drawn from the figures the page already holds as tables
// (#chart-data); without JavaScript the tables are shown instead.
(function () {
  "use strict";
  var source = document.getElementById("chart-data");
  if (!source || !window.Chart) return;
  var data = JSON.parse(source.textContent);
  var colors = { received: "#1d9bf0", forwarded: "#137333", dropped: "#c62828", pending: "#8899a6" };
  var common = { responsive: true, maintainAspectRatio: false, animation: false };

  function draw(id, config) {
    var canvas = document.getElementById(id);
    if (canvas) new window.Chart(canvas, config);
  }

  draw("events-chart", {
    type: "line",
    data: {
      labels: data.hours,
      datasets: ["received", "forwarded", "dropped"].map(function (name) {
        return { label: name, data: data.events[name], borderColor: colors[name],
                 backgroundColor: colors[name], tension: 0.2, pointRadius: 2 };
      })
    },
    options: Object.assign({ scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } }, common)
  });
  draw("drops-chart", {
    type: "bar",
    data: {
      labels: data.drops.map(function (row) { return row.reason; }),
      datasets: [{ label: "events", data: data.drops.map(function (row) { return row.count; }),
                   backgroundColor: colors.dropped }]
    },
    options: Object.assign({ indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { ticks: { precision: 0 } } } }, common)
  });
  draw("conversions-chart", {
    type: "bar",
    data: {
      labels: data.conversions.map(function (row) { return row.pixel_id; }),
      datasets: ["delivered", "failed", "pending"].map(function (name) {
        return { label: name, data: data.conversions.map(function (row) { return row[name]; }),
                 backgroundColor: colors[name === "delivered" ? "forwarded" : name === "failed" ? "dropped" : "pending"] };
      })
    },
    options: Object.assign({ scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } }, common)
  });
  document.body.classList.add("charts-on");
})();
