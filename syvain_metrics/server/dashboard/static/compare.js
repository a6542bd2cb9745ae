// The compare page of the Syvain Metrics dashboard: one small canvas chart per sub-series
// (metric x event metadata), a line per run. The server sends each run's series already
// reduced to one slice per pixel column (/dashboard/data/compare); this script smooths,
// colours, filters, zooms and hovers them. Every control's state lives in the URL query.
// User text only ever goes in through textContent. window.syvainCompare exposes what is
// drawn (for tests and benchmarks: values, not pixels).
(function () {
  "use strict";

  var HEIGHT = 230;
  var M = { left: 56, right: 12, top: 10, bottom: 26 };
  var MIN_CHART = 360;
  var PARALLEL = 6;  // a browser's connections to one host
  var CHUNK = 50;  // runs per request
  var DRAW_EVERY = 400;
  var CATEGORICAL = ["#2f5bd3", "#e0692b", "#2c9a51", "#c9354a", "#7f53c1", "#8c5a3c",
    "#d35fb7", "#5f6b7a", "#a5a812", "#1fa7b8"];
  // Viridis, sampled: a sequential scale that stays readable in grey and for colour blindness.
  var VIRIDIS = [[68, 1, 84], [72, 40, 120], [62, 73, 137], [49, 104, 142], [38, 130, 142],
    [31, 158, 137], [53, 183, 121], [110, 206, 88], [181, 222, 43], [253, 231, 37]];

  var root = document.getElementById("compare");
  var dataNode = document.getElementById("compare-data");
  if (!root || !dataNode) return;
  var page = JSON.parse(dataNode.textContent);
  var runs = page.runs;
  var el = function (id) { return document.getElementById(id); };
  var ui = {
    x: el("cmp-x"), color: el("cmp-color"), smooth: el("cmp-smooth"), smoothText: el("cmp-smooth-value"),
    logy: el("cmp-logy"), filter: el("cmp-filter"), reset: el("cmp-reset"), meta: el("cmp-meta"),
    legend: el("cmp-runs"), all: el("cmp-all"), none: el("cmp-none"), grid: el("cmp-grid"),
    status: el("cmp-status"), tip: el("cmp-tooltip"), count: el("cmp-run-count"),
  };

  function html(name, className, text, parent) {
    var node = document.createElement(name);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  // -- state and the URL ------------------------------------------------------------------

  var query = new URLSearchParams(location.search);
  var state = {
    x: ["step", "relative", "wall"].indexOf(query.get("x")) >= 0 ? query.get("x") : "step",
    smooth: Math.min(0.99, Math.max(0, Number(query.get("smooth")) || 0)),
    color: query.get("color") || "",
    logy: query.get("logy") === "1",
    filter: query.get("filter") || "",
    hidden: new Set((query.get("hide") || "").split(",").filter(Boolean).map(Number)),
    off: new Set(query.getAll("off")),
    zoom: null,
  };
  if (page.color_keys.indexOf(state.color) < 0) state.color = "";
  var zmin = Number(query.get("xmin")), zmax = Number(query.get("xmax"));
  if (query.has("xmin") && query.has("xmax") && zmax > zmin) state.zoom = [zmin, zmax];

  function saveUrl() {
    var q = new URLSearchParams();
    query.getAll("experiments").forEach(function (v) { q.append("experiments", v); });
    if (state.x !== "step") q.set("x", state.x);
    if (state.smooth) q.set("smooth", String(state.smooth));
    if (state.color) q.set("color", state.color);
    if (state.logy) q.set("logy", "1");
    if (state.filter) q.set("filter", state.filter);
    if (state.hidden.size) q.set("hide", Array.from(state.hidden).sort(function (a, b) { return a - b; }).join(","));
    Array.from(state.off).sort().forEach(function (v) { q.append("off", v); });
    if (state.zoom) { q.set("xmin", String(state.zoom[0])); q.set("xmax", String(state.zoom[1])); }
    history.replaceState(null, "", location.pathname + "?" + q.toString());
  }

  // -- colours ------------------------------------------------------------------------------

  function viridis(t) {
    var f = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
    var i = Math.min(VIRIDIS.length - 2, Math.floor(f));
    var a = VIRIDIS[i], b = VIRIDIS[i + 1], u = f - i;
    var c = [0, 1, 2].map(function (k) { return Math.round(a[k] + (b[k] - a[k]) * u); });
    return "rgb(" + c.join(",") + ")";
  }

  // Golden-angle hues never come back to the same one: 100 runs, 100 distinct colours.
  function runHue(i) {
    return "hsl(" + ((i * 137.508) % 360).toFixed(1) + ",68%," + (i % 2 ? 38 : 50) + "%)";
  }

  function assignColors() {
    var key = state.color;
    runs.forEach(function (run, i) { run.t = null; run.color = runHue(i); run.value = null; });
    if (!key) return { kind: "run" };
    var values = runs.map(function (run) { return run.metadata[key]; });
    var numbers = values.filter(function (v) { return typeof v === "number" && isFinite(v); });
    var present = values.filter(function (v) { return v !== undefined && v !== null; });
    if (numbers.length && numbers.length === present.length) {
      var lo = Math.min.apply(null, numbers), hi = Math.max.apply(null, numbers);
      var log = lo > 0 && hi / lo >= 20;
      var f = log ? Math.log10 : function (v) { return v; };
      runs.forEach(function (run, i) {
        var v = values[i];
        run.value = v === undefined ? null : v;
        if (typeof v !== "number") { run.color = "#9aa5b4"; return; }
        run.t = hi > lo ? (f(v) - f(lo)) / (f(hi) - f(lo)) : 0.5;
        run.color = viridis(run.t);
      });
      return { kind: "number", lo: lo, hi: hi, log: log };
    }
    var names = Array.from(new Set(present.map(String))).sort();
    runs.forEach(function (run, i) {
      var v = values[i];
      run.value = v === undefined ? null : v;
      if (v === undefined || v === null) { run.color = "#9aa5b4"; return; }
      var k = names.indexOf(String(v));
      run.color = k < CATEGORICAL.length ? CATEGORICAL[k] : runHue(k);
    });
    return { kind: "category", values: names };
  }

  // -- numbers and ticks --------------------------------------------------------------------

  function niceStep(span, count) {
    var raw = span / Math.max(1, count);
    var power = Math.pow(10, Math.floor(Math.log10(raw)));
    var unit = raw / power;
    return (unit < 1.5 ? 1 : unit < 3 ? 2 : unit < 7 ? 5 : 10) * power;
  }

  function linearTicks(lo, hi, count) {
    if (!(hi > lo)) return [lo];
    var step = niceStep(hi - lo, count);
    var ticks = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
      ticks.push(Math.abs(t) < step * 1e-9 ? 0 : Number(t.toPrecision(12)));
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

  // [unit in ms, its name, the least span (in units) shown in it]
  var UNITS = [[86400000, "d", 2], [3600000, "h", 2], [60000, "min", 2], [1000, "s", 1], [1, "ms", 0]];

  // Relative time: in the largest unit that still gives a few ticks (a 2 s run: 0 s, 0.5 s...).
  function relativeTicks(lo, hi, count) {
    var span = Math.max(1, hi - lo);
    var unit = UNITS[UNITS.length - 1];
    for (var i = 0; i < UNITS.length; i++) { if (span / UNITS[i][0] >= UNITS[i][2]) { unit = UNITS[i]; break; } }
    return linearTicks(lo / unit[0], hi / unit[0], count).map(function (v) {
      return { at: v * unit[0], text: String(Number(v.toPrecision(6))) + " " + unit[1] };
    });
  }

  var MS_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4,
    3e5, 6e5, 9e5, 18e5, 36e5, 72e5, 108e5, 216e5, 432e5, 864e5, 1728e5, 6048e5];
  var pad = function (v, n) { return String(v).padStart(n || 2, "0"); };

  // Wall time (UTC) at any span: calendar steps from a millisecond to a year, labelled with
  // just enough of the date and time to tell each tick from its neighbours.
  function wallTicks(lo, hi, count) {
    var span = Math.max(1, hi - lo);
    var step = null;
    for (var i = 0; i < MS_STEPS.length; i++) { if (span / MS_STEPS[i] <= count) { step = MS_STEPS[i]; break; } }
    var ticks = [];
    if (step !== null) {
      for (var t = Math.ceil(lo / step) * step; t <= hi; t += step) ticks.push(t);
    } else {
      var months = [1, 2, 3, 6, 12, 24, 60, 120].find(function (m) { return span / (m * 2629800000) <= count; }) || 240;
      var d = new Date(lo);
      var m0 = d.getUTCFullYear() * 12 + d.getUTCMonth() + 1;
      m0 = Math.ceil(m0 / months) * months;
      for (var m = m0; ; m += months) {
        var at = Date.UTC(Math.floor(m / 12), m % 12, 1);
        if (at > hi) break;
        ticks.push(at);
      }
      step = months * 2629800000;
    }
    // The first tick of a day's hours and minutes also says which day.
    return ticks.map(function (at, i) {
      var text = wallText(at, step);
      if (i === 0 && step >= 6e4 && step < 864e5) text = wallText(at, 864e5) + " " + text;
      return { at: at, text: text };
    });
  }

  function wallText(ms, step) {
    var d = new Date(ms);
    var date = d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate());
    var hm = pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
    if (step >= 28 * 864e5) return date.slice(0, 7);
    if (step >= 864e5) return date.slice(5);
    if (step >= 6e4) return hm;
    if (step >= 1e3) return hm + ":" + pad(d.getUTCSeconds());
    return pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds()) + "." + pad(d.getUTCMilliseconds(), 3);
  }

  function xText(v) {
    if (state.x === "step") return shortNumber(v);
    if (state.x === "wall") return new Date(v).toISOString().replace("T", " ").replace("Z", " UTC");
    return durationText(v);
  }

  function durationText(ms) {
    var a = Math.abs(ms), sign = ms < 0 ? "-" : "";
    if (a < 1000) return sign + Math.round(a) + " ms";
    if (a < 60000) return sign + (a / 1000).toFixed(2) + " s";
    var s = Math.floor(a / 1000), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    if (h === 0) return sign + m + " min " + pad(s % 60) + " s";
    return sign + h + " h " + pad(m) + " min";
  }

  function xTicks(lo, hi, count) {
    if (state.x === "relative") return relativeTicks(lo, hi, count);
    if (state.x === "wall") return wallTicks(lo, hi, count);
    return linearTicks(lo, hi, count).map(function (v) { return { at: v, text: shortNumber(v) }; });
  }

  // -- data ---------------------------------------------------------------------------------

  var loaded = { step: {}, time: {} };  // kind -> "metric\u0000first run" -> answer
  var charts = new Map();  // chart key -> Chart
  var order = [];
  var pairs = new Map();  // "key=value" of event metadata -> count of charts
  var requestWidth = 0;
  var draws = 0;
  var drawMs = 0;  // time spent drawing, for benchmarks

  function kind() { return state.x === "step" ? "step" : "time"; }

  function pairText(key, value) {
    return key + "=" + (typeof value === "string" ? value : JSON.stringify(value));
  }

  // TensorBoard's smoothing: an exponential moving average, debiased so that the first
  // points are not pulled towards zero.
  function ema(ys, w) {
    if (!w) return ys;
    var out = new Array(ys.length), last = 0, k = 0;
    for (var i = 0; i < ys.length; i++) {
      var y = ys[i];
      if (!isFinite(y)) { out[i] = y; continue; }
      last = last * w + (1 - w) * y;
      k += 1;
      out[i] = last / (1 - Math.pow(w, k));
    }
    return out;
  }

  function prepare(s) {
    var len = s.n.length, xs = new Array(len), mids = new Array(len);
    for (var i = 0; i < len; i++) {
      xs[i] = s.n[i] === 1 ? s.x0[i] : (s.x0[i] + s.x1[i]) / 2;
      mids[i] = s.n[i] === 1 ? s.lo[i] : (s.lo[i] + s.hi[i]) / 2;
    }
    s.xs = xs;
    s.mids = mids;
    s.smoothed = null;
    return s;
  }

  function xOf(s, v) { return state.x === "wall" ? v + s.start : v; }

  function addAnswer(answer) {
    var metric = answer.metric;
    var touched = new Set();
    answer.runs.forEach(function (entry) {
      entry.series.forEach(function (s) {
        var key = metric + "\u0000" + s.key;
        var chart = charts.get(key);
        if (!chart) {
          chart = new Chart(key, metric, s);
          charts.set(key, chart);
          Object.keys(s.metadata).forEach(function (k) {
            var p = pairText(k, s.metadata[k]);
            pairs.set(p, (pairs.get(p) || 0) + 1);
          });
        }
        s.run = entry.run;
        chart.series.push(prepare(s));
        touched.add(chart);
      });
    });
    return touched;
  }

  // Every metric, a few runs per request: the first runs of every chart show up first, and
  // the server reduces several requests at once.
  function load(k) {
    var jobs = [];
    for (var from = 0; from < runs.length; from += CHUNK) {
      page.metrics.forEach(function (m) {
        var job = { id: m.name + "\u0000" + from, name: m.name, from: from };
        if (!loaded[k][job.id]) jobs.push(job);
      });
    }
    var started = performance.now();
    var failed = null;
    var next = 0;
    function one() {
      if (next >= jobs.length) return Promise.resolve();
      var job = jobs[next++];
      var q = new URLSearchParams();
      q.set("experiments", runs.slice(job.from, job.from + CHUNK).map(function (r) { return r.id; }).join(","));
      q.set("metric", job.name);
      q.set("x", k);
      q.set("width", String(requestWidth));
      return fetch("/dashboard/data/compare?" + q.toString(), { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (reply) {
          return reply.json().then(function (body) {
            if (!reply.ok) throw new Error(body.error || "HTTP " + reply.status);
            return body;
          });
        })
        .then(function (answer) {
          answer.runs.forEach(function (entry) { entry.run += job.from; });
          loaded[k][job.id] = answer;
          if (kind() === k) drawSoon(addAnswer(answer));
        }, function (error) { failed = error; })
        .then(one);
    }
    var workers = [];
    for (var i = 0; i < PARALLEL; i++) workers.push(one());
    return Promise.all(workers).then(function () {
      root.dataset.loadMs = String(Math.round(performance.now() - started));
      if (failed) ui.status.textContent = "Could not load every chart: " + failed.message;
    });
  }

  // While answers arrive, charts are drawn at most every DRAW_EVERY ms (each with the runs
  // it has so far), and the next request goes out without waiting for any drawing.
  var waiting = new Set(), timer = 0, lastDraw = -Infinity;
  function drawSoon(touched) {
    touched.forEach(function (chart) { waiting.add(chart); });
    if (timer) return;
    var delay = Math.max(0, lastDraw + DRAW_EVERY - performance.now());
    timer = setTimeout(function () { requestAnimationFrame(drawWaiting); }, delay);
  }

  function drawWaiting() {
    clearTimeout(timer);
    timer = 0;
    lastDraw = performance.now();
    var only = waiting;
    waiting = new Set();
    if (only.size) layout(only);
  }

  function rebuild() {
    charts.forEach(function (chart) { chart.remove(); });
    charts = new Map();
    pairs = new Map();
    var k = kind();
    Object.keys(loaded[k]).forEach(function (id) { addAnswer(loaded[k][id]); });
    layout();
  }

  // -- one chart ------------------------------------------------------------------------------

  function Chart(key, metric, first) {
    this.key = key;
    this.metric = metric;
    this.label = first.label;
    this.metadata = first.metadata;
    this.series = [];
    this.section = html("section", "cmp-chart");
    this.section.dataset.label = this.label;
    html("h3", null, this.label, this.section);
    var plot = html("div", "cmp-plot", null, this.section);
    this.canvas = html("canvas", "cmp-lines", null, plot);
    this.over = html("canvas", "cmp-over", null, plot);
    this.note = html("p", "cmp-note", null, this.section);
    this.geom = null;
    this.drawn = {};
    this.attach();
  }

  Chart.prototype.remove = function () { this.section.remove(); };

  Chart.prototype.shown = function (regex) {
    var meta = this.metadata;
    var off = Object.keys(meta).some(function (k) { return state.off.has(pairText(k, meta[k])); });
    return !off && (!regex || regex.test(this.label));
  };

  Chart.prototype.visible = function () {
    return this.series.filter(function (s) { return !state.hidden.has(s.run); });
  };

  Chart.prototype.draw = function () {
    var width = Math.max(200, Math.floor(this.section.clientWidth - 16));
    var ratio = window.devicePixelRatio || 1;
    [this.canvas, this.over].forEach(function (c) {
      c.width = Math.round(width * ratio);
      c.height = Math.round(HEIGHT * ratio);
      c.style.width = width + "px";
      c.style.height = HEIGHT + "px";
    });
    var ctx = this.canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, HEIGHT);
    var series = this.visible();
    var log = state.logy;
    var xLo = Infinity, xHi = -Infinity;
    series.forEach(function (s) {
      if (!s.xs.length) return;
      xLo = Math.min(xLo, xOf(s, s.xs[0]));
      xHi = Math.max(xHi, xOf(s, s.xs[s.xs.length - 1]));
    });
    if (state.zoom) { xLo = state.zoom[0]; xHi = state.zoom[1]; }
    var yLo = Infinity, yHi = -Infinity, points = 0, drawn = 0;
    var w = state.smooth;
    series.forEach(function (s) {
      points += s.points;
      drawn += s.drawn;
      if (w && (!s.smoothed || s.smoothedWith !== w)) { s.smoothed = ema(s.mids, w); s.smoothedWith = w; }
      for (var i = 0; i < s.xs.length; i++) {
        var x = xOf(s, s.xs[i]);
        if (x < xLo || x > xHi) continue;
        var lo = s.lo[i], hi = s.hi[i];
        if (log) { if (hi <= 0) continue; if (lo <= 0) lo = hi; }
        if (lo < yLo) yLo = lo;
        if (hi > yHi) yHi = hi;
      }
    });
    this.note.textContent = series.length + " of " + this.series.length + " runs · " +
      points.toLocaleString("en-US") + " points, drawn as " + drawn.toLocaleString("en-US");
    this.drawn = {};
    if (!isFinite(yLo) || !isFinite(xLo)) { this.geom = null; this.section.dataset.empty = "1"; return; }
    delete this.section.dataset.empty;
    if (xHi === xLo) { xLo -= 1; xHi += 1; }
    if (yHi === yLo) { yLo = log ? yLo / 2 : yLo - 1; yHi = log ? yHi * 2 : yHi + 1; }
    var innerW = width - M.left - M.right, innerH = HEIGHT - M.top - M.bottom;
    var fy = log ? Math.log10 : function (v) { return v; };
    var a = fy(yLo), b = fy(yHi);
    var X = function (v) { return M.left + ((v - xLo) / (xHi - xLo)) * innerW; };
    var Y = function (v) { return M.top + innerH - ((fy(v) - a) / (b - a)) * innerH; };
    this.geom = { X: X, Y: Y, xLo: xLo, xHi: xHi, innerW: innerW, innerH: innerH, width: width };

    ctx.font = "11px system-ui, sans-serif";
    ctx.strokeStyle = "#eceff3";
    ctx.fillStyle = "#5f6b7a";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    (log ? logTicks(yLo, yHi) : linearTicks(yLo, yHi, 4)).forEach(function (t) {
      var y = Math.round(Y(t)) + 0.5;
      ctx.beginPath(); ctx.moveTo(M.left, y); ctx.lineTo(width - M.right, y); ctx.stroke();
      ctx.fillText(shortNumber(t), M.left - 5, y + 4);
    });
    ctx.textAlign = "center";
    var ticks = xTicks(xLo, xHi, Math.max(2, Math.floor(innerW / 80)));
    this.ticks = ticks.map(function (t) { return t.text; });
    ticks.forEach(function (t) {
      var x = Math.round(X(t.at)) + 0.5;
      ctx.beginPath(); ctx.moveTo(x, M.top); ctx.lineTo(x, M.top + innerH); ctx.stroke();
      var half = ctx.measureText(t.text).width / 2;
      ctx.fillText(t.text, Math.min(width - 2 - half, Math.max(half + 2, x)), HEIGHT - 8);
    });
    ctx.strokeStyle = "#d9dee5";
    ctx.strokeRect(M.left + 0.5, M.top + 0.5, innerW, innerH);

    ctx.save();
    ctx.beginPath();
    ctx.rect(M.left, M.top, innerW, innerH);
    ctx.clip();
    ctx.lineJoin = "round";
    var self = this;
    series.forEach(function (s) {
      var color = runs[s.run].color;
      // The raw line: each slice of many points as a stroke from its lowest to its highest.
      ctx.strokeStyle = color;
      ctx.globalAlpha = w ? 0.22 : 1;
      ctx.lineWidth = w ? 1 : 1.4;
      ctx.beginPath();
      var pen = false;
      for (var i = 0; i < s.xs.length; i++) {
        var lo = s.lo[i];
        if (log && s.hi[i] <= 0) { pen = false; continue; }
        if (log && lo <= 0) lo = s.hi[i];
        var x = X(xOf(s, s.xs[i]));
        if (pen) ctx.lineTo(x, Y(lo)); else ctx.moveTo(x, Y(lo));
        pen = true;
        if (s.n[i] > 1) ctx.lineTo(x, Y(s.hi[i]));
      }
      if (s.xs.length === 1) ctx.arc(X(xOf(s, s.xs[0])), Y(s.mids[0]), 2, 0, 2 * Math.PI);
      ctx.stroke();
      var line = w ? s.smoothed : s.mids;
      if (w) {
        ctx.globalAlpha = 1;
        ctx.lineWidth = 1.6;
        ctx.beginPath();
        pen = false;
        for (var j = 0; j < line.length; j++) {
          if (log && line[j] <= 0) { pen = false; continue; }
          var px = X(xOf(s, s.xs[j])), py = Y(line[j]);
          if (pen) ctx.lineTo(px, py); else ctx.moveTo(px, py);
          pen = true;
        }
        ctx.stroke();
      }
      self.drawn[s.run] = line;
    });
    ctx.restore();
    ctx.globalAlpha = 1;
  };

  function nearest(xs, value) {
    var lo = 0, hi = xs.length - 1;
    if (hi < 0) return -1;
    while (lo < hi) {
      var mid = (lo + hi) >> 1;
      if (xs[mid] < value) lo = mid + 1; else hi = mid;
    }
    if (lo > 0 && Math.abs(xs[lo - 1] - value) <= Math.abs(xs[lo] - value)) lo -= 1;
    return lo;
  }

  function valueText(s, i) {
    var short = function (v) { return String(Number(v.toPrecision(6))); };
    if (s.n[i] === 1) return String(s.lo[i]);
    return short(s.lo[i]) + " … " + short(s.hi[i]) + " (" + s.n[i] + " points)";
  }

  Chart.prototype.hover = function (px, clientX, clientY) {
    var g = this.geom;
    if (!g) return;
    var at = g.xLo + ((px - M.left) / g.innerW) * (g.xHi - g.xLo);
    var rows = [];
    var self = this;
    this.visible().forEach(function (s) {
      var i = nearest(s.xs, state.x === "wall" ? at - s.start : at);
      if (i < 0) return;
      var line = self.drawn[s.run] || s.mids;
      rows.push({ s: s, i: i, y: line[i] });
    });
    rows.sort(function (p, q) { return q.y - p.y; });
    var ctx = this.over.getContext("2d");
    var ratio = window.devicePixelRatio || 1;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, g.width, HEIGHT);
    ctx.strokeStyle = "#9aa5b4";
    ctx.setLineDash([3, 3]);
    ctx.beginPath(); ctx.moveTo(px + 0.5, M.top); ctx.lineTo(px + 0.5, M.top + g.innerH); ctx.stroke();
    ctx.setLineDash([]);
    var tip = ui.tip;
    tip.textContent = "";
    html("div", "tip-head", this.label + " · " + (state.x === "step" ? "step " + shortNumber(Math.round(at)) : xText(at)), tip);
    var list = html("div", "tip-rows" + (rows.length > 16 ? " tip-many" : ""), null, tip);
    rows.forEach(function (r) {
      var s = r.s, run = runs[s.run];
      var x = xOf(s, s.xs[r.i]);
      if (x >= g.xLo && x <= g.xHi && isFinite(r.y) && (!state.logy || r.y > 0)) {
        ctx.fillStyle = run.color;
        ctx.beginPath(); ctx.arc(g.X(x), g.Y(r.y), 3, 0, 2 * Math.PI); ctx.fill();
      }
      var row = html("div", "tip-row", null, list);
      row.dataset.run = String(s.run);
      row.dataset.value = String(r.y);
      var sw = html("span", "swatch", null, row);
      sw.style.background = run.color;
      html("span", "tip-label", run.slug + ": ", row);
      html("span", "tip-value", state.smooth ? String(Number(r.y.toPrecision(6))) : valueText(s, r.i), row);
    });
    tip.hidden = false;
    var left = clientX + 16;
    if (left + tip.offsetWidth > window.innerWidth - 8) left = Math.max(8, clientX - 16 - tip.offsetWidth);
    var top = Math.min(clientY + 12, window.innerHeight - tip.offsetHeight - 8);
    tip.style.left = left + "px";
    tip.style.top = Math.max(8, top) + "px";
  };

  Chart.prototype.clearOver = function () {
    if (!this.geom) return;
    var ctx = this.over.getContext("2d");
    ctx.clearRect(0, 0, this.over.width, this.over.height);
  };

  Chart.prototype.attach = function () {
    var self = this;
    var dragFrom = null;
    var pos = function (event) { return event.clientX - self.over.getBoundingClientRect().left; };
    this.over.addEventListener("mousedown", function (event) {
      if (!self.geom || event.button !== 0) return;
      dragFrom = pos(event);
      event.preventDefault();
    });
    this.over.addEventListener("mousemove", function (event) {
      var px = pos(event);
      self.hover(px, event.clientX, event.clientY);
      if (dragFrom !== null && self.geom) {
        var ctx = self.over.getContext("2d");
        ctx.fillStyle = "rgba(47, 91, 211, 0.12)";
        ctx.fillRect(Math.min(dragFrom, px), M.top, Math.abs(px - dragFrom), self.geom.innerH);
      }
    });
    window.addEventListener("mouseup", function (event) {
      if (dragFrom === null) return;
      var g = self.geom, px = pos(event), from = dragFrom;
      dragFrom = null;
      if (!g || Math.abs(px - from) < 4) return;
      var at = function (p) {
        p = Math.min(M.left + g.innerW, Math.max(M.left, p));
        return g.xLo + ((p - M.left) / g.innerW) * (g.xHi - g.xLo);
      };
      state.zoom = [at(Math.min(from, px)), at(Math.max(from, px))];
      changed();
    });
    this.over.addEventListener("mouseleave", function () { ui.tip.hidden = true; self.clearOver(); });
    this.over.addEventListener("dblclick", function () { state.zoom = null; changed(); });
  };

  // -- the page -------------------------------------------------------------------------------

  function chartWidth() {
    var gw = ui.grid.clientWidth || 800;
    var cols = Math.max(1, Math.floor((gw + 12) / (MIN_CHART + 12)));
    return Math.floor((gw - 12 * (cols - 1)) / cols) - 16;
  }

  // Places and filters every chart; draws those in ``only`` (a Set of charts), or all.
  function layout(only) {
    var regex = null;
    try { regex = state.filter ? new RegExp(state.filter, "i") : null; } catch (e) { regex = null; }
    ui.filter.classList.toggle("invalid", Boolean(state.filter) && regex === null);
    var keys = Array.from(charts.keys());
    keys.sort(function (p, q) {
      var a = charts.get(p), b = charts.get(q);
      return a.metric < b.metric ? -1 : a.metric > b.metric ? 1 : a.label < b.label ? -1 : a.label > b.label ? 1 : 0;
    });
    order = keys;
    var shownCount = 0;
    keys.forEach(function (key, i) {
      var chart = charts.get(key);
      var shown = chart.shown(regex);
      // Moved only when out of place: a moved canvas is painted again.
      var here = ui.grid.children[i];
      if (here !== chart.section) ui.grid.insertBefore(chart.section, here || null);
      chart.section.hidden = !shown;
      if (shown) shownCount += 1;
    });
    metaControls();
    redraw(only);
    ui.status.textContent = shownCount + " of " + keys.length + " charts · " +
      (runs.length - state.hidden.size) + " of " + runs.length + " runs shown";
  }

  // ``data-draws`` counts the draws that follow a change of data or of a control (a resize
  // only redraws the same values at another size, and is not counted).
  function redraw(only, resize) {
    var began = performance.now();
    charts.forEach(function (chart) {
      if (!chart.section.hidden && (!only || only.has(chart))) chart.draw();
    });
    drawMs += performance.now() - began;
    root.dataset.drawMs = String(Math.round(drawMs));
    if (resize) return;
    if (!root.dataset.firstAt && charts.size) root.dataset.firstAt = String(performance.now());
    draws += 1;
    root.dataset.draws = String(draws);
    root.dataset.drawnAt = String(performance.now());
  }

  function metaControls() {
    var names = Array.from(pairs.keys()).sort();
    var have = Array.from(ui.meta.querySelectorAll("input")).map(function (i) { return i.value; });
    if (names.join("\u0000") === have.join("\u0000")) return;
    ui.meta.textContent = "";
    names.forEach(function (name) {
      var label = html("label", "cmp-pair", null, ui.meta);
      var box = html("input", null, null, label);
      box.type = "checkbox";
      box.value = name;
      box.checked = !state.off.has(name);
      label.appendChild(document.createTextNode(" " + name));
      box.addEventListener("change", function () {
        if (box.checked) state.off.delete(name); else state.off.add(name);
        layout();
        saveUrl();
      });
    });
  }

  function legend(scale) {
    ui.legend.textContent = "";
    var items = runs.map(function (run, i) { return i; });
    if (scale.kind === "number") {
      items.sort(function (p, q) {
        var a = runs[p].t, b = runs[q].t;
        return (a === null) - (b === null) || a - b || p - q;
      });
    }
    items.forEach(function (i) {
      var run = runs[i];
      var li = html("li", state.hidden.has(i) ? "off" : null, null, ui.legend);
      var button = html("button", "cmp-run", null, li);
      button.type = "button";
      button.dataset.run = String(i);
      button.setAttribute("aria-pressed", String(!state.hidden.has(i)));
      button.title = "show or hide " + run.slug + " in every chart";
      var sw = html("span", "swatch", null, button);
      sw.style.background = run.color;
      html("span", "cmp-slug", run.slug, button);
      if (state.color && run.value !== null) {
        html("span", "cmp-value", typeof run.value === "string" ? run.value : JSON.stringify(run.value), button);
      }
      var link = html("a", "cmp-open", "↗", li);
      link.href = run.url;
      link.title = "open " + run.slug;
      button.addEventListener("click", function () {
        if (state.hidden.has(i)) state.hidden.delete(i); else state.hidden.add(i);
        li.classList.toggle("off", state.hidden.has(i));
        button.setAttribute("aria-pressed", String(!state.hidden.has(i)));
        changed();
      });
    });
    ui.count.textContent = (runs.length - state.hidden.size) + " / " + runs.length + " runs";
  }

  var pending = false;
  function changed() {
    saveUrl();
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () {
      pending = false;
      ui.count.textContent = (runs.length - state.hidden.size) + " / " + runs.length + " runs";
      layout();
    });
  }

  function setColor() {
    var scale = assignColors();
    legend(scale);
  }

  function start() {
    page.color_keys.forEach(function (key) {
      var option = html("option", null, key, ui.color);
      option.value = key;
    });
    ui.x.value = state.x;
    ui.color.value = state.color;
    ui.smooth.value = String(state.smooth);
    ui.smoothText.textContent = String(state.smooth);
    ui.logy.checked = state.logy;
    ui.filter.value = state.filter;
    setColor();
    requestWidth = Math.max(100, chartWidth() - M.left - M.right);

    ui.x.addEventListener("change", function () {
      var before = kind();
      state.x = ui.x.value;
      state.zoom = null;
      saveUrl();
      if (kind() !== before) {
        rebuild();
        load(kind()).then(markReady);
      } else {
        layout();
      }
    });
    ui.color.addEventListener("change", function () { state.color = ui.color.value; setColor(); changed(); });
    ui.smooth.addEventListener("input", function () {
      state.smooth = Number(ui.smooth.value);
      ui.smoothText.textContent = ui.smooth.value;
      changed();
    });
    ui.logy.addEventListener("change", function () { state.logy = ui.logy.checked; changed(); });
    ui.filter.addEventListener("input", function () { state.filter = ui.filter.value; changed(); });
    ui.reset.addEventListener("click", function () { state.zoom = null; changed(); });
    ui.all.addEventListener("click", function () { state.hidden.clear(); setColor(); changed(); });
    ui.none.addEventListener("click", function () {
      runs.forEach(function (r, i) { state.hidden.add(i); });
      setColor();
      changed();
    });
    // The grid's width changes with the window, and when a scroll bar appears.
    var resized = null, gridWidth = ui.grid.clientWidth;
    new ResizeObserver(function () {
      if (ui.grid.clientWidth === gridWidth) return;
      gridWidth = ui.grid.clientWidth;
      clearTimeout(resized);
      resized = setTimeout(function () { redraw(null, true); }, 100);
    }).observe(ui.grid);
    load(kind()).then(markReady);
  }

  function markReady() {
    drawWaiting();
    root.dataset.state = "ready";
    root.dataset.readyAt = String(performance.now());
  }

  window.syvainCompare = {
    state: function () {
      return {
        x: state.x, smooth: state.smooth, color: state.color, logy: state.logy,
        hidden: Array.from(state.hidden), off: Array.from(state.off), zoom: state.zoom,
        runs: runs.map(function (r, i) { return { index: i, slug: r.slug, color: r.color, t: r.t, value: r.value }; }),
      };
    },
    charts: function () {
      return order.map(function (key) {
        var c = charts.get(key);
        return {
          label: c.label, metric: c.metric, shown: !c.section.hidden,
          runs: Object.keys(c.drawn).map(Number),
          drawn: c.drawn,
          domain: c.geom ? [c.geom.xLo, c.geom.xHi] : null,
          ticks: c.ticks || [],
        };
      });
    },
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
