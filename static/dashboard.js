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
  (data.quality || []).forEach(function (pixel, i) {
    draw("quality-chart-" + i, {
      type: "bar",
      data: {
        labels: pixel.days.map(function (d) { return d.day.slice(5); }),
        datasets: [
          { type: "line", label: "score %", yAxisID: "score", borderColor: colors.received,
            backgroundColor: colors.received, data: pixel.days.map(function (d) { return d.score; }) },
          { label: "click id", data: pixel.days.map(function (d) { return d.with.twclid; }), backgroundColor: "#137333" },
          { label: "email", data: pixel.days.map(function (d) { return d.with.hashed_email; }), backgroundColor: "#5e35b1" },
          { label: "dropped", data: pixel.days.map(function (d) { return d.dropped_no_identifier; }), backgroundColor: colors.dropped }
        ]
      },
      options: Object.assign({ scales: { y: { beginAtZero: true, ticks: { precision: 0 } },
        score: { position: "right", min: 0, max: 100, grid: { drawOnChartArea: false } } } }, common)
    });
  });
  document.body.classList.add("charts-on");
})();
