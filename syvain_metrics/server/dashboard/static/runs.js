// The runs table and the parallel-coordinates page: what needs a script. Everything else
// (sorting, filters, columns, the parallel drawing) is done on the server and kept in the
// URL, so the pages work without this file; it only saves clicks.
"use strict";

(function () {
  // A filter or column choice applies at once: the form is submitted, and the new URL is
  // the new state.
  function autoApply() {
    document.querySelectorAll("form .auto-apply").forEach(function (input) {
      input.addEventListener("change", function () {
        var form = input.form;
        if (form.requestSubmit) {
          form.requestSubmit();
        } else {
          form.submit();
        }
      });
    });
    // The column chooser stays open after a choice, so the next one is one click away.
    var chooser = document.querySelector("details.column-chooser");
    if (chooser && sessionStorage.getItem("runs-columns-open") === "1") {
      chooser.open = true;
      sessionStorage.removeItem("runs-columns-open");
    }
    document.querySelectorAll(".column-choice").forEach(function (box) {
      box.addEventListener("change", function () {
        sessionStorage.setItem("runs-columns-open", "1");
      });
    });
  }

  // Row selection: a box that selects every row, and buttons usable once a run is chosen.
  function selection() {
    var form = document.querySelector("form.runs-selection");
    if (!form) {
      return;
    }
    var boxes = Array.prototype.slice.call(form.querySelectorAll("input.run-choice"));
    var all = form.querySelector("input.select-all");
    var count = form.querySelector(".selection-count");
    var buttons = form.querySelectorAll(".selection-actions button");
    function update() {
      var chosen = boxes.filter(function (box) { return box.checked; });
      buttons.forEach(function (button) { button.disabled = chosen.length === 0; });
      count.textContent = chosen.length === 0
        ? "Select runs to compare them."
        : chosen.length + " run" + (chosen.length === 1 ? "" : "s") + " selected";
      if (all) {
        all.checked = chosen.length === boxes.length && boxes.length > 0;
        all.indeterminate = chosen.length > 0 && chosen.length < boxes.length;
      }
      boxes.forEach(function (box) {
        box.closest("tr").classList.toggle("chosen", box.checked);
      });
    }
    if (all) {
      all.hidden = false;
      all.addEventListener("change", function () {
        boxes.forEach(function (box) { box.checked = all.checked; });
        update();
      });
    }
    boxes.forEach(function (box) { box.addEventListener("change", update); });
    update();
  }

  // Parallel coordinates: hovering a line (or its run's row) brings it forward and names it.
  function parallel() {
    var svg = document.querySelector("svg.parallel");
    if (!svg) {
      return;
    }
    var note = document.querySelector(".pc-hover");
    var group = svg.querySelector("g.lines");
    function show(path) {
      svg.querySelectorAll("path.run.hover").forEach(function (p) { p.classList.remove("hover"); });
      if (!path) {
        svg.classList.remove("hovering");
        return;
      }
      svg.classList.add("hovering");
      path.classList.add("hover");
      group.appendChild(path); // drawn last: on top
      var title = path.querySelector("title");
      note.textContent = title ? title.textContent : path.dataset.slug;
    }
    svg.querySelectorAll("path.run").forEach(function (path) {
      path.addEventListener("mouseenter", function () { show(path); });
    });
    svg.addEventListener("mouseleave", function () { show(null); });
  }

  function start() {
    autoApply();
    selection();
    parallel();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
