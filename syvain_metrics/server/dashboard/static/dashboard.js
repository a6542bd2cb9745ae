// Charts of the Syvain Metrics dashboard: one SVG line chart per metric, a line per series.
// The server sends each series already reduced to one slice per pixel column (see
// /dashboard/data/chart); this script draws them, shows values on hover and switches the
// x axis and the y scale. User text only ever goes in through textContent.
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var HEIGHT = 280;
  var MARGIN = { left: 64, right: 16, top: 12, bottom: 32 };
  var COLORS = 10;
  var MARKED_POINTS = 60;

  function svg(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (key) {
      node.setAttribute(key, String(attrs[key]));
    });
    if (parent) parent.appendChild(node);
    return node;
  }

  function html(name, className, text, parent) {
    var node = document.createElement(name);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  // -- numbers and ticks -----------------------------------------------------------------

  function niceStep(span, count) {
    var raw = span / Math.max(1, count);
    var power = Math.pow(10, Math.floor(Math.log10(raw)));
    var unit = raw / power;
    var nice = unit < 1.5 ? 1 : unit < 3 ? 2 : unit < 7 ? 5 : 10;
    return nice * power;
  }

  function linearTicks(lo, hi, count) {
    if (!(hi > lo)) return [lo];
    var step = niceStep(hi - lo, count);
    var ticks = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
      ticks.push(Math.abs(t) < step * 1e-9 ? 0 : t);
    }
    return ticks;
  }

  function logTicks(lo, hi) {
    var ticks = [];
    for (var p = Math.floor(Math.log10(lo)); p <= Math.ceil(Math.log10(hi)); p++) {
      var t = Math.pow(10, p);
      if (t >= lo * (1 - 1e-9) && t <= hi * (1 + 1e-9)) ticks.push(t);
    }
    return ticks.length >= 2 ? ticks : [lo, hi];
  }

  function shortNumber(v) {
    if (v === 0) return "0";
    var a = Math.abs(v);
    if (a >= 1e6 || a < 1e-3) return v.toExponential(1);
    return String(Number(v.toPrecision(4)));
  }

  function points(n) {
    return n.toLocaleString("en-US") + (n === 1 ? " point" : " points");
  }

  function timeText(ms, withDate) {
    var iso = new Date(ms).toISOString();
    return withDate ? iso.slice(0, 19).replace("T", " ") : iso.slice(11, 19);
  }

  function xText(axis, v, span) {
    if (axis === "time") return timeText(v, span > 86400000);
    return shortNumber(v);
  }

  // -- one chart ---------------------------------------------------------------------------

  function Chart(section, controls) {
    this.section = section;
    this.controls = controls;
    this.metric = section.dataset.metric;
    this.experiments = JSON.parse(section.dataset.experiments);
    this.plot = section.querySelector(".plot");
    this.note = section.querySelector(".chart-note");
    this.legend = section.querySelector(".legend");
    this.data = null;
  }

  Chart.prototype.axis = function () {
    var select = this.controls && this.controls.querySelector(".x-axis");
    return select ? select.value : "step";
  };

  Chart.prototype.logScale = function () {
    var box = this.controls && this.controls.querySelector(".log-scale");
    return Boolean(box && box.checked);
  };

  Chart.prototype.width = function () {
    return Math.max(320, Math.floor(this.plot.clientWidth || 800));
  };

  Chart.prototype.load = function () {
    var self = this;
    var params = new URLSearchParams();
    this.experiments.forEach(function (id) { params.append("experiments", id); });
    params.set("metric", this.metric);
    params.set("x", this.axis());
    params.set("width", String(this.width() - MARGIN.left - MARGIN.right));
    this.section.classList.add("is-loading");
    return fetch("/dashboard/data/chart?" + params.toString(), {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    })
      .then(function (reply) {
        return reply.json().then(function (body) {
          if (!reply.ok) throw new Error(body.error || "HTTP " + reply.status);
          return body;
        });
      })
      .then(function (data) {
        self.data = data;
        self.draw();
      })
      .catch(function (error) {
        self.plot.textContent = "";
        html("p", "chart-error", "Could not load this chart: " + error.message, self.plot);
      })
      .then(function () {
        self.section.classList.remove("is-loading");
        self.section.dataset.state = "drawn";
      });
  };

  Chart.prototype.draw = function () {
    var data = this.data;
    var axis = data.x;
    var log = this.logScale();
    this.plot.textContent = "";
    this.legend.textContent = "";
    var lines = data.series.map(function (s) {
      var centers = s.x0.map(function (x0, i) { return (x0 + s.x1[i]) / 2; });
      return { s: s, centers: centers };
    });
    var skipped = 0;
    var yLo = Infinity;
    var yHi = -Infinity;
    data.series.forEach(function (s) {
      for (var i = 0; i < s.n.length; i++) {
        if (log && s.hi[i] <= 0) { skipped += s.n[i]; continue; }
        var low = log && s.lo[i] <= 0 ? s.hi[i] : s.lo[i];
        if (log && s.lo[i] <= 0) skipped += 1;
        yLo = Math.min(yLo, low);
        yHi = Math.max(yHi, s.hi[i]);
      }
    });
    this.writeNote(data, skipped, log);
    var xr = data.x_range;
    if (xr[0] === null || !isFinite(yLo)) {
      html("p", "empty", axis === "step" ? "No points with a step: try time on the x axis." : "Nothing to draw.", this.plot);
      return;
    }
    if (yHi === yLo) { yLo = log ? yLo / 2 : yLo - 1; yHi = log ? yHi * 2 : yHi + 1; }
    var xLo = xr[0];
    var xHi = xr[1] === xr[0] ? xr[0] + 1 : xr[1];
    var width = this.width();
    var innerW = width - MARGIN.left - MARGIN.right;
    var innerH = HEIGHT - MARGIN.top - MARGIN.bottom;
    var xScale = function (v) { return MARGIN.left + ((v - xLo) / (xHi - xLo)) * innerW; };
    var yScale = log
      ? function (v) {
          var a = Math.log10(yLo), b = Math.log10(yHi);
          return MARGIN.top + innerH - ((Math.log10(v) - a) / (b - a)) * innerH;
        }
      : function (v) { return MARGIN.top + innerH - ((v - yLo) / (yHi - yLo)) * innerH; };

    var root = svg("svg", {
      width: width, height: HEIGHT, viewBox: "0 0 " + width + " " + HEIGHT,
      role: "img", "aria-label": this.metric,
    }, this.plot);
    var grid = svg("g", { class: "grid" }, root);
    (log ? logTicks(yLo, yHi) : linearTicks(yLo, yHi, 5)).forEach(function (t) {
      var y = yScale(t);
      svg("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: y, y2: y }, grid);
      svg("text", { x: MARGIN.left - 6, y: y + 4, class: "tick y" }, grid).textContent = shortNumber(t);
    });
    linearTicks(xLo, xHi, Math.max(2, Math.floor(innerW / 110))).forEach(function (t) {
      var x = xScale(t);
      svg("line", { x1: x, x2: x, y1: MARGIN.top, y2: MARGIN.top + innerH, class: "x" }, grid);
      svg("text", { x: x, y: HEIGHT - 10, class: "tick x" }, grid).textContent = xText(axis, t, xHi - xLo);
    });
    svg("rect", { x: MARGIN.left, y: MARGIN.top, width: innerW, height: innerH, class: "frame" }, root);

    var self = this;
    lines.forEach(function (line, index) {
      var s = line.s;
      var d = [];
      var pen = "M";
      for (var i = 0; i < s.n.length; i++) {
        if (log && s.hi[i] <= 0) { pen = "M"; continue; }
        var low = log && s.lo[i] <= 0 ? s.hi[i] : s.lo[i];
        var x = s.n[i] === 1 ? xScale(s.x0[i]) : xScale(line.centers[i]);
        d.push(pen + x.toFixed(2) + "," + yScale(low).toFixed(2));
        pen = "L";
        if (s.n[i] > 1) d.push("L" + x.toFixed(2) + "," + yScale(s.hi[i]).toFixed(2));
      }
      var path = svg("path", { d: d.join(" "), class: "series c" + (index % COLORS) }, root);
      path.dataset.label = s.label;
      // Few points: mark each one (a lone point is no line at all).
      if (s.n.length <= MARKED_POINTS) {
        for (var j = 0; j < s.n.length; j++) {
          if (s.n[j] !== 1 || (log && s.lo[j] <= 0)) continue;
          svg("circle", { cx: xScale(s.x0[j]), cy: yScale(s.lo[j]), r: 2.5, class: "marker c" + (index % COLORS) }, root);
        }
      }
      var item = html("li", null, null, self.legend);
      html("span", "swatch c" + (index % COLORS), null, item);
      html("span", "label", s.label, item);
      html("span", "count", " " + points(s.points), item);
    });
    this.hover(root, lines, { xScale: xScale, yScale: yScale, xLo: xLo, xHi: xHi, innerW: innerW, innerH: innerH, log: log, axis: axis });
  };

  Chart.prototype.writeNote = function (data, skipped, log) {
    var parts = [
      points(data.points) + ", drawn as " + data.drawn.toLocaleString("en-US"),
    ];
    var unplaced = data.series.reduce(function (sum, s) { return sum + s.unplaced; }, 0);
    if (unplaced) parts.push(unplaced.toLocaleString("en-US") + " without a " + (data.x === "step" ? "step (not drawn; try time on the x axis)" : "time"));
    if (log && skipped) parts.push(skipped.toLocaleString("en-US") + " values ≤ 0 left out of the log scale");
    this.note.textContent = parts.join("; ");
  };

  function nearest(centers, value) {
    var lo = 0, hi = centers.length - 1;
    if (hi < 0) return -1;
    while (lo < hi) {
      var mid = (lo + hi) >> 1;
      if (centers[mid] < value) lo = mid + 1; else hi = mid;
    }
    if (lo > 0 && Math.abs(centers[lo - 1] - value) <= Math.abs(centers[lo] - value)) lo -= 1;
    return lo;
  }

  // A point as it was logged; a slice of several as its range, to 6 significant digits.
  function valueText(s, i) {
    if (s.n[i] === 1) return String(s.lo[i]);
    var short = function (v) { return String(Number(v.toPrecision(6))); };
    return short(s.lo[i]) + " … " + short(s.hi[i]) + " (" + s.n[i] + " points)";
  }

  function placeText(axis, s, i, span) {
    var first = xText(axis, s.x0[i], span);
    return s.x0[i] === s.x1[i] ? first : first + "–" + xText(axis, s.x1[i], span);
  }

  Chart.prototype.hover = function (root, lines, g) {
    var plot = this.plot;
    var tip = html("div", "tooltip", null, plot);
    tip.hidden = true;
    var cross = svg("line", { class: "crosshair", y1: MARGIN.top, y2: MARGIN.top + g.innerH, x1: -10, x2: -10 }, root);
    var dots = svg("g", { class: "dots" }, root);
    var overlay = svg("rect", { x: MARGIN.left, y: MARGIN.top, width: g.innerW, height: g.innerH, class: "overlay" }, root);
    var span = g.xHi - g.xLo;
    overlay.addEventListener("mousemove", function (event) {
      var box = root.getBoundingClientRect();
      var px = event.clientX - box.left;
      var at = g.xLo + ((px - MARGIN.left) / g.innerW) * span;
      tip.textContent = "";
      dots.textContent = "";
      var head = null;
      lines.forEach(function (line, index) {
        var i = nearest(line.centers, at);
        if (i < 0) return;
        var s = line.s;
        var place = placeText(g.axis, s, i, span);
        if (head === null) {
          head = place;
          html("div", "tip-head", g.axis + " " + head, tip);
        }
        var row = html("div", "tip-row", null, tip);
        html("span", "swatch c" + (index % COLORS), null, row);
        html("span", "tip-label", s.label + ": ", row);
        var shown = html("span", "tip-value", valueText(s, i), row);
        shown.dataset.value = String(s.lo[i]);
        // A series whose nearest point is elsewhere says where.
        if (place !== head) html("span", "tip-place", " at " + g.axis + " " + place, row);
        if (s.n[i] === 1) {
          var sx = g.xScale(s.x0[i]);
          if (!(g.log && s.lo[i] <= 0)) {
            svg("circle", { cx: sx, cy: g.yScale(s.lo[i]), r: 3.5, class: "dot c" + (index % COLORS) }, dots);
          }
          row.dataset.step = String(s.x0[i]);
        }
      });
      cross.setAttribute("x1", String(px));
      cross.setAttribute("x2", String(px));
      tip.hidden = false;
      var left = px + 14;
      if (left + tip.offsetWidth > plot.clientWidth) left = Math.max(0, px - 14 - tip.offsetWidth);
      tip.style.left = left + "px";
      tip.style.top = MARGIN.top + "px";
    });
    overlay.addEventListener("mouseleave", function () {
      tip.hidden = true;
      dots.textContent = "";
      cross.setAttribute("x1", "-10");
      cross.setAttribute("x2", "-10");
    });
  };

  // -- the page ------------------------------------------------------------------------------

  function start() {
    var controls = document.querySelector(".chart-controls");
    var charts = Array.prototype.map.call(document.querySelectorAll("section.chart"), function (section) {
      return new Chart(section, controls);
    });
    if (!charts.length) return;
    // A few at a time: each is one request, and the first ones show up first.
    var queue = charts.slice();
    function next() {
      var chart = queue.shift();
      if (chart) return chart.load().then(next);
      return null;
    }
    for (var k = 0; k < 3; k++) next();
    if (controls) {
      controls.querySelector(".x-axis").addEventListener("change", function () {
        charts.forEach(function (chart) { chart.load(); });
      });
      controls.querySelector(".log-scale").addEventListener("change", function () {
        charts.forEach(function (chart) { if (chart.data) chart.draw(); });
      });
    }
    var resized = null;
    window.addEventListener("resize", function () {
      clearTimeout(resized);
      resized = setTimeout(function () { charts.forEach(function (chart) { chart.load(); }); }, 300);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
