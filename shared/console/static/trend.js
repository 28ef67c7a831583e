// The compliance page's 30-day trend: one line per tier (and the total) of the daily deadline compliance, drawn by
// Chart.js (vendored beside this file, chart.umd.min.js, MIT) from the JSON the server embedded in the page
// (#trend-data; computed by services/dispatcher/reports/service.py daily_trend, labels from the catalogue).
// The unit selector (#trend-unit) switches between the whole unit and each unit below it without a reload.
(function () {
  "use strict";
  var holder = document.getElementById("trend-data");
  var canvas = document.getElementById("trend-chart");
  if (!holder || !canvas || !window.Chart) { return; }
  var data = JSON.parse(holder.textContent);
  var select = document.getElementById("trend-unit");
  var colours = { high: "#c0392b", medium: "#d68910", low: "#2874a6", all: "#2c3e50" };

  function datasets(key) {
    return data.tiers.map(function (tier) {
      return {
        label: tier.label, tier: tier.key, data: data.rate[key][tier.key],
        borderColor: colours[tier.key], backgroundColor: colours[tier.key],
        borderDash: tier.key === "all" ? [6, 4] : [], borderWidth: tier.key === "all" ? 3 : 2,
        pointRadius: 3, spanGaps: true, tension: 0.2, clip: false  // a point at 100% is drawn whole
      };
    });
  }

  var current = select ? select.value : "";
  var chart = new window.Chart(canvas, {
    type: "line",
    data: { labels: data.labels, datasets: datasets(current) },
    options: {
      animation: false, responsive: true, maintainAspectRatio: false, layout: { padding: { top: 6 } },
      interaction: { mode: "index", intersect: false },
      scales: {
        y: { min: 0, max: 100, ticks: { callback: function (v) { return v + "%"; } },
             title: { display: true, text: data.y_label } }
      },
      plugins: {
        tooltip: {
          callbacks: {
            label: function (ctx) {
              var pair = data.counts[current][ctx.dataset.tier][ctx.dataIndex];
              return ctx.dataset.label + ": " + ctx.formattedValue + "% (" + data.count_label + " " +
                pair[0] + "/" + pair[1] + ")";
            }
          }
        }
      }
    }
  });
  if (select) {
    select.addEventListener("change", function () {
      current = select.value;
      chart.data.datasets = datasets(current);
      chart.update();
      canvas.dataset.unit = current;
    });
  }
})();
