// The what-if explorer of "What fits where" (chapter 5) for the static book: plain JavaScript,
// no kernel, no network. It answers from the numbers the book build precomputed with the memory
// engine (ondevice/whatif_data.py, loaded from explorer/whatif-data.js), so every update is a
// few additions, and every total is ondevice.whatif.answer(...).total to the byte.
//
// The Python twins of the functions below: answer -> ondevice.whatif.answer, largestBatch ->
// MemoryCurve.largest_batch, limits -> ondevice.whatif.limits, verdict -> ondevice.whatif.verdict,
// methodOn -> ondevice.whatif.method_on, at -> ondevice.whatif_data.at.
(function () {
  "use strict";

  // ---- loading: the data (base64 of gzipped JSON) and plotly.js, each once per page ----------
  function loadScript(url) {
    return new Promise(function (resolve, reject) {
      var s = document.createElement("script");
      s.src = url;
      s.onload = resolve;
      s.onerror = function () { reject(url + " did not load"); };
      document.head.appendChild(s);
    });
  }

  function unpack(b64) {
    var bin = atob(b64), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).text().then(JSON.parse);
  }

  function loadData(root) {
    if (!window.whatifData) {
      window.whatifData = loadScript(root + "explorer/whatif-data.js").then(function () {
        return unpack(window.WHATIF_DATA);
      });
    }
    return window.whatifData;
  }

  function loadPlotly(root) {  // the promise the book's figures share (ondevice/plotting.py)
    if (window.Plotly) return Promise.resolve(window.Plotly);
    if (!window.bookPlotly) {
      window.bookPlotly = loadScript(root + "vendor/plotly/plotly.min.js").then(function () { return window.Plotly; });
    }
    return window.bookPlotly;
  }

  // ---- numbers as Python prints them -----------------------------------------------------
  // format(x, ",.Nf"): the exact binary value rounded half to even (toFixed rounds exact ties
  // up), thousands separated by commas.
  function pyFixed(x, digits) {
    var negative = x < 0, a = Math.abs(x), s = a.toFixed(digits);
    var long = a.toFixed(digits + 25), tail = long.slice(-25);
    if (tail === "5" + "0".repeat(24)) {  // x lies exactly halfway
      var down = long.slice(0, long.length - 25).replace(/\.$/, "");
      if (Number(down.charAt(down.length - 1)) % 2 === 0) s = down;
    }
    var parts = s.split(".");
    parts[0] = parts[0].replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return (negative ? "-" : "") + parts.join(".");
  }

  function mb(n) {  // ondevice.whatif._mb
    return Math.abs(n) >= 1e5 ? pyFixed(n / 1e6, 2) + " MB" : pyFixed(n / 1e3, 1) + " KB";
  }

  function binary(n) {  // ondevice.devices.binary
    return n >= 1048576 ? pyFixed(n / 1048576, 0) + " MiB" : pyFixed(n / 1024, 0) + " KiB";
  }

  function verdict(a) {
    var t = pyFixed(a.total / 1e6, 2) + " MB", budget = a.question.budget;
    if (a.fits) return "fits: " + t + " of " + mb(budget) + ", " + mb(a.margin) + " to spare";
    return "does not fit: " + t + " is " + mb(-a.margin) + " over the " + mb(budget) + " budget";
  }

  // ---- answers from the precomputed curves ------------------------------------------------
  function at(runs, batch) {  // in the run [start, p, d, v...] that holds b - 1: v[k % p] + floor(k / p) * d
    var i = runs.length - 1;
    while (runs[i][0] > batch - 1) i -= 1;
    var run = runs[i], k = batch - 1 - run[0], p = run[1];
    return run[3 + k % p] + Math.floor(k / p) * run[2];
  }

  function variant(q) { return q.profile === "masked" ? "masked-" + q.backward : q.profile; }

  function answer(data, q) {  // Answer.breakdown(), part by part; the total is their sum
    var m = data.models[q.model], key = q.method + "|" + variant(q);
    var byWidth = m.curves[key][q.resolution], parts = {}, total = 0;
    var curves = byWidth[q.optimizer + "|" + q.frozen_bits] || byWidth[q.optimizer];  // its own, if the width needs
    data.parts.forEach(function (p) {
      parts[p[0]] = p[0] === "params" ? m.params[key][q.frozen_bits] : at(curves[p[0]], q.batch);
      total += parts[p[0]];
    });
    return {question: q, total: total, parts: parts, fits: total <= q.budget, margin: q.budget - total};
  }

  function largestBatch(data, q) {  // the bisection of MemoryCurve.largest_batch
    function fits(b) { return answer(data, Object.assign({}, q, {batch: b})).total <= q.budget; }
    var lo = 1, hi = data.max_batch;
    if (!fits(1)) return 0;
    if (fits(hi)) return hi;
    while (hi - lo > 1) {
      var mid = Math.floor((lo + hi) / 2);
      if (fits(mid)) lo = mid; else hi = mid;
    }
    return lo;
  }

  function limits(data, q) {
    return data.models[q.model].methods.map(function (method) {
      var here = Object.assign({}, q, {method: method}), a = answer(data, here);
      var fitting = data.models[q.model].resolutions.filter(function (r) {
        return answer(data, Object.assign({}, here, {resolution: r})).total <= q.budget;
      });
      return {method: method, total: a.total, fits: a.fits, largestBatch: largestBatch(data, here),
              largestResolution: fitting.length ? Math.max.apply(null, fitting) : null};
    });
  }

  function methodOn(data, model, wanted) {
    var options = data.models[model].methods;
    if (options.indexOf(wanted) >= 0) return wanted;
    return data.fallback[wanted] || options[0];
  }

  function measured(data, q) {
    var v = data.measured_variant[variant(q)];
    return data.measured.rows.filter(function (r) {
      return r.network === q.model && r.method === q.method && r.resolution === q.resolution &&
        r.batch === q.batch && r.optimizer === q.optimizer && r.frozen_bits === q.frozen_bits && r.variant === v;
    });
  }

  // ---- the page ---------------------------------------------------------------------------
  var CSS = ".whatif-explorer{border:1px solid #ccc;border-radius:6px;padding:.8em;margin:1em 0}" +
    ".whatif-controls{display:grid;grid-template-columns:repeat(auto-fill,minmax(15em,1fr));gap:.4em .9em}" +
    ".whatif-controls label{display:flex;flex-direction:column;font-size:.85em}" +
    ".whatif-controls label.whatif-check{flex-direction:row;align-items:center}" +
    ".whatif-controls select,.whatif-controls input{font-size:1em}" +
    ".whatif-verdict{font-weight:bold;font-size:1.1em;margin:.6em 0}" +
    ".whatif-note{font-size:.8em;color:#555}.whatif-explorer table{font-size:.85em}" +
    ".whatif-explorer tr.chosen{font-weight:bold}";
  var PROFILE_LABELS = {paper: "paper (TinyTL's accounting)", pytorch: "pytorch (stock PyTorch)",
                        masked: "masked (kernelized)"};

  function element(tag, attrs, parent) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") e.textContent = attrs[k]; else e.setAttribute(k, attrs[k]);
    });
    if (parent) parent.appendChild(e);
    return e;
  }

  function control(box, label, testid, tag, attrs) {  // the control; its label's text is .caption
    var l = element("label", {}, box), caption = element("span", {text: label}, l);
    var c = element(tag, Object.assign({"data-testid": testid}, attrs || {}), l);
    c.caption = caption;
    return c;
  }

  function fill(select, options) {  // options: [[value, label], ...]
    select.textContent = "";
    options.forEach(function (o) { element("option", {value: o[0], text: o[1]}, select); });
  }

  function Explorer(el, data, Plotly, start) {
    this.el = el; this.data = data; this.Plotly = Plotly; this.updates = 0;
    this.wanted = start.method;
    el.textContent = "";
    var box = element("div", {"class": "whatif-controls"}, el), c = this.c = {};
    c.model = control(box, "model", "model", "select");
    fill(c.model, data.model_order.map(function (m) { return [m, m]; }));
    c.method = control(box, "method", "method", "select");
    c.resolution = control(box, "resolution", "resolution", "input", {type: "range", step: 32,
      min: data.resolutions[0], max: data.resolutions[data.resolutions.length - 1]});
    c.batch = control(box, "batch", "batch", "input", {type: "range", min: 1, max: data.max_batch, step: 1});
    c.frozen_bits = control(box, "frozen weights (bits)", "frozen-bits", "select");
    fill(c.frozen_bits, data.frozen_bits.map(function (b) { return [b, b + "-bit"]; }));
    c.optimizer = control(box, "optimizer", "optimizer", "select");
    fill(c.optimizer, data.optimizers.map(function (o) { return [o, o]; }));
    c.profile = control(box, "profile", "profile", "select");
    fill(c.profile, data.profiles.map(function (p) { return [p, PROFILE_LABELS[p] || p]; }));
    c.backward = control(box, "backward (masked profile)", "backward", "select");
    fill(c.backward, data.backwards.map(function (b) { return [b, b]; }));
    c.device = control(box, "device", "device", "select");
    fill(c.device, data.devices.map(function (d) { return [d.name, d.name]; }).concat([["custom", "custom budget"]]));
    c.budget = control(box, "budget (MB, 10^6 bytes)", "budget-mb", "input", {type: "number", step: "any", min: 0});
    var predict = element("label", {"class": "whatif-check"}, box);
    c.predict = element("input", {type: "checkbox", "data-testid": "predict-first"}, predict);
    element("span", {text: " predict first (type a guess before the answer shows)"}, predict);
    this.deviceNote = element("div", {"class": "whatif-note", "data-testid": "device-note"}, el);
    this.guessBox = element("div", {"class": "whatif-guess"}, el);
    element("span", {text: "Your guess for the total, in MB: "}, this.guessBox);
    this.guess = element("input", {type: "number", step: "any", "data-testid": "guess"}, this.guessBox);
    this.reveal = element("button", {type: "button", "data-testid": "reveal", text: "reveal"}, this.guessBox);
    this.guessResult = element("p", {"data-testid": "guess-result"}, el);
    this.answerBox = element("div", {"data-testid": "answer"}, el);
    this.verdictEl = element("p", {"class": "whatif-verdict", "data-testid": "verdict"}, this.answerBox);
    this.chartsBox = element("div", {}, this.answerBox);
    this.measuredEl = element("p", {"class": "whatif-note", "data-testid": "measured"}, this.chartsBox);
    this.breakdownCaption = element("p", {"class": "whatif-note"}, this.chartsBox);
    this.breakdownEl = element("div", {"data-testid": "breakdown-chart", style: "height:360px"}, this.chartsBox);
    this.breakdownLegend = element("div", {"class": "whatif-note"}, this.chartsBox);
    this.layersCaption = element("p", {"class": "whatif-note"}, this.chartsBox);
    this.layersEl = element("div", {"data-testid": "layers-chart", style: "height:300px"}, this.chartsBox);
    this.layersLegend = element("div", {"class": "whatif-note", "data-testid": "layers-legend"}, this.chartsBox);
    this.limitsEl = element("table", {"data-testid": "limits"}, this.chartsBox);
    this.drawn = {};  // what each chart shows now: it is redrawn only when that changes

    c.model.value = start.model;
    this.setMethods(start.method);
    c.resolution.value = start.resolution; c.batch.value = start.batch;
    c.frozen_bits.value = start.frozen_bits; c.optimizer.value = start.optimizer;
    c.profile.value = start.profile; c.backward.value = start.backward;
    c.device.value = "custom"; c.budget.value = start.budget / 1e6;
    [c.frozen_bits, c.optimizer, c.profile, c.backward].forEach(function (s) {  // a value it lacks: the first
      if (!s.value) s.selectedIndex = 0;
    });
    var self = this;
    c.model.addEventListener("change", function () { self.setMethods(self.wanted); self.update(); });
    c.method.addEventListener("change", function () { self.wanted = c.method.value; self.update(); });
    c.device.addEventListener("change", function () {
      var d = self.device();
      if (d) c.budget.value = d.budget / 1e6;  // the budget follows the preset
      self.update();
    });
    c.budget.addEventListener("input", function () { c.device.value = "custom"; self.update(); });
    ["resolution", "batch"].forEach(function (k) { c[k].addEventListener("input", function () { self.update(); }); });
    ["frozen_bits", "optimizer", "profile", "backward"].forEach(function (k) {
      c[k].addEventListener("change", function () { self.update(); });
    });
    c.predict.addEventListener("change", function () { self.update(); });
    this.reveal.addEventListener("click", function () { self.showAnswer(true); });
    this.guess.addEventListener("keydown", function (e) { if (e.key === "Enter") self.showAnswer(true); });
    this.update();
    el.setAttribute("data-ready", "1");
  }

  Explorer.prototype.setMethods = function (wanted) {  // the model changed: keep a valid method
    var model = this.c.model.value, resolutions = this.data.models[model].resolutions;
    fill(this.c.method, this.data.models[model].methods.map(function (m) { return [m, m]; }));
    this.c.method.value = methodOn(this.data, model, wanted);
    this.c.resolution.min = resolutions[0];  // a smaller input than the model takes moves up to it
  };

  Explorer.prototype.device = function () {
    var name = this.c.device.value;
    return this.data.devices.filter(function (d) { return d.name === name; })[0] || null;
  };

  Explorer.prototype.question = function () {
    var c = this.c, d = this.device();
    return {model: c.model.value, method: c.method.value, resolution: Number(c.resolution.value),
            batch: Number(c.batch.value), frozen_bits: Number(c.frozen_bits.value), optimizer: c.optimizer.value,
            profile: c.profile.value, backward: c.backward.value,
            budget: d ? d.budget : Number(c.budget.value === "" ? NaN : c.budget.value) * 1e6};
  };

  // One update: the answer for what the controls say now. Its duration (answer, limits, table and
  // the charts that changed) is left in the box's data-render-ms attribute.
  Explorer.prototype.update = function () {
    var t0 = performance.now(), q = this.question();
    this.c.backward.disabled = q.profile !== "masked";
    this.c.resolution.caption.textContent = "resolution: " + q.resolution + " px";
    this.c.batch.caption.textContent = "batch: " + q.batch;
    this.deviceNote.textContent = this.deviceText();
    if (!(isFinite(q.budget) && q.budget > 0)) {
      this.last = null;
      this.verdictEl.textContent = "Cannot answer: budget must be a positive, finite number of bytes, got " +
        JSON.stringify(this.c.budget.value);
    } else {
      this.last = answer(this.data, q);
      this.verdictEl.textContent = verdict(this.last);
      this.drawLimits(limits(this.data, q), q.method);
      this.drawMeasured(q);
    }
    this.chartsBox.hidden = !this.last;
    this.showAnswer(false);
    this.updates += 1;
    this.el.setAttribute("data-updates", String(this.updates));
    this.el.setAttribute("data-render-ms", (performance.now() - t0).toFixed(3));
  };

  Explorer.prototype.draw = function () {  // the charts, while they are visible
    var q = this.last.question, keys = {
      breakdown: JSON.stringify([q.model, q.resolution, q.batch, q.frozen_bits, q.optimizer, variant(q), q.budget,
                                 this.measuredRows.length ? q.method : ""]),  // the method: only its measured mark
      layers: [q.model, q.method, variant(q), q.resolution].join("|")};
    if (keys.breakdown !== this.drawn.breakdown) this.drawBreakdown(q);
    if (keys.layers !== this.drawn.layers) this.drawLayers(q);
    this.drawn = keys;
  };

  Explorer.prototype.showAnswer = function (revealed) {  // "predict first": the answer waits for a guess
    var locked = this.c.predict.checked && !revealed;
    this.guessBox.hidden = !locked;
    this.answerBox.hidden = locked;
    if (locked) { this.guess.value = ""; this.guessResult.textContent = ""; return; }
    if (this.last) this.draw();  // charts are drawn only when shown (plotly sizes them then)
    if (!revealed || !this.last) { this.guessResult.textContent = ""; return; }
    var guess = Number(this.guess.value), truth = this.last.total / 1e6;
    this.guessResult.textContent = this.guess.value === "" || !isFinite(guess) ? "No guess typed." :
      "You guessed " + pyFixed(guess, 2) + " MB; the total is " + pyFixed(truth, 2) + " MB: off by " +
      pyFixed(guess - truth, 2) + " MB (" + pyFixed(100 * (guess - truth) / truth, 1) + "%).";
  };

  Explorer.prototype.deviceText = function () {
    var d = this.device();
    if (!d) return "Custom budget: type it in MB. Presets subtract what firmware, the OS and the runtime take.";
    return d.name + ": RAM " + binary(d.ram) + " (" + d.ram_source + ")" + d.deductions.map(function (x) {
      return " - " + x.what + " " + binary(x.bytes) + " (" + x.source + ")";
    }).join("") + " = budget " + binary(d.budget) + " (" + mb(d.budget) + ").";
  };

  Explorer.prototype.drawLimits = function (rows, chosen) {
    var t = this.limitsEl, max = this.data.max_batch;
    t.textContent = "";
    var head = element("tr", {}, t);
    ["method", "total", "fits", "largest batch", "largest resolution"].forEach(function (h) {
      element("th", {text: h}, head);
    });
    rows.forEach(function (r) {
      var tr = element("tr", r.method === chosen ? {"class": "chosen"} : {}, t);
      [r.method, mb(r.total), r.fits ? "yes" : "no",
       r.largestBatch ? (r.largestBatch === max ? max + "+" : String(r.largestBatch)) : "none",
       r.largestResolution ? r.largestResolution + " px" : "none"].forEach(function (v) {
        element("td", {text: v}, tr);
      });
    });
  };

  Explorer.prototype.drawMeasured = function (q) {
    var rows = measured(this.data, q), all = this.data.measured.rows, a = this.last;
    var text;
    if (rows.length) {
      text = rows.map(function (r) {
        return "Measured on " + r.device + ": peak " + mb(r.measured_peak) + " in a training step (benchmarks/results/" +
          r.file + "), predicted here " + mb(a.total) + " (the benchmark's own estimate " + mb(r.estimated_peak) + ").";
      }).join(" ");
    } else if (q.profile === "paper") {
      text = "The paper profile is TinyTL's accounting, not what a step allocates: measured steps are " +
        "compared with the pytorch and masked profiles.";
    } else if (!all.length) {
      text = "No measured training step is recorded yet (benchmarks/train_memory.py writes " +
        "benchmarks/results/train_memory-<device>.json).";
    } else {
      text = "No measured step for this configuration among the " + all.length + " recorded in " +
        this.data.measured.files.join(", ") + ".";
    }
    this.measuredText = text;
    this.measuredEl.textContent = text;
    this.measuredRows = rows;
  };

  // The first draw makes the figure; later ones give plotly only what changed (Plotly.update:
  // the traces' numbers and the layout's texts), cheaper than redrawing it from scratch.
  var CHANGING = ["x", "y", "hovertext"];
  function plot(Plotly, el, traces, layout) {
    layout.showlegend = false;  // legends are HTML (plotly would re-measure their texts each time)
    layout.xaxis = Object.assign({fixedrange: true}, layout.xaxis);
    layout.yaxis = Object.assign({fixedrange: true}, layout.yaxis);
    if (el.traceCount !== traces.length) {
      el.traceCount = traces.length;
      return Plotly.react(el, traces, layout, {displaylogo: false, responsive: true});
    }
    var change = {};
    CHANGING.forEach(function (k) { change[k] = traces.map(function (t) { return t[k] || []; }); });
    change["marker.color"] = traces.map(function (t) { return t.marker ? t.marker.color : undefined; });
    return Plotly.update(el, change, {shapes: layout.shapes || []});
  }
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
                 "#e6550d", "#31a354", "#756bb1", "#636363"];

  Explorer.prototype.drawBreakdown = function (q) {
    var data = this.data, methods = data.models[q.model].methods;
    var answers = methods.map(function (m) { return answer(data, Object.assign({}, q, {method: m})); });
    var traces = data.parts.map(function (p) {
      return {type: "bar", name: p[1], x: methods, y: answers.map(function (a) { return a.parts[p[0]] / 1e6; })};
    });
    var rows = this.measuredRows || [];
    if (rows.length) {
      traces.push({type: "scatter", mode: "markers", name: "measured step peak", x: rows.map(function () { return q.method; }),
                   y: rows.map(function (r) { return r.measured_peak / 1e6; }),
                   hovertext: rows.map(function (r) { return r.device; }), marker: {symbol: "x", size: 12, color: "black"}});
    }
    var profile = q.profile === "masked" ? "masked (" + q.backward + ")" : q.profile;
    // Texts that change live in HTML captions: plotly re-measures its own texts at every update.
    this.breakdownCaption.textContent = "Every method at " + q.model + ", " + q.resolution + " px, batch " + q.batch +
      ", " + profile + " profile, frozen weights " + q.frozen_bits + "-bit, " + q.optimizer + "; dashed: the budget, " +
      mb(q.budget) + (rows.length ? "; x: the measured step peak" : "") + ".";
    legendHTML(this.breakdownLegend, traces.map(function (t, k) { return [t.name, PALETTE[k]]; }));
    traces.forEach(function (t, k) { t.marker = t.marker || {color: PALETTE[k]}; });
    plot(this.Plotly, this.breakdownEl, traces, {
      barmode: "stack", height: 360, margin: {t: 10, r: 10, b: 40, l: 60}, yaxis: {title: {text: "MB (10^6 bytes)"}},
      shapes: [{type: "line", xref: "paper", x0: 0, x1: 1, y0: q.budget / 1e6, y1: q.budget / 1e6,
                line: {color: "crimson", dash: "dash"}}]
    });
  };

  Explorer.prototype.drawLayers = function (q) {  // one bar per layer, in call order, coloured by type
    var m = this.data.models[q.model], group = m.layers[q.method + "|" + variant(q)];
    var values = group.v[q.resolution], x = [], y = [], text = [], color = [], legend = {}, total = 0, top = -1;
    group.i.forEach(function (nameIndex, k) {
      var name = m.names[nameIndex], type = m.types[group.t[k]], v = values[k];
      x.push(k + 1); y.push(v / 1e6); text.push(name + " (" + type + "): " + mb(v));
      color.push(legend[type] = PALETTE[group.t[k] % PALETTE.length]);
      total += v;
      if (top < 0 || v > values[top]) top = k;
    });
    this.layersCaption.textContent = "What " + q.method + " keeps for backward at batch 1, per layer (" +
      variant(q) + " profile): " + mb(total) + " in " + x.length + " layers" +
      (top >= 0 ? "; the most: " + m.names[group.i[top]] + ", " + mb(values[top]) : "") + ".";
    plot(this.Plotly, this.layersEl, [{type: "bar", x: x, y: y, hovertext: text, hoverinfo: "text",
                                       marker: {color: color}}], {
      height: 300, margin: {t: 10, r: 10, b: 40, l: 60}, bargap: 0.1, showlegend: false,
      yaxis: {title: {text: "MB at batch 1"}}, xaxis: {title: {text: "layers in call order"}}
    });
    legendHTML(this.layersLegend, Object.keys(legend).map(function (type) { return [type, legend[type]]; }));
  };

  function legendHTML(box, items) {  // [[label, colour], ...]
    box.textContent = "";
    items.forEach(function (item) {
      var span = element("span", {style: "margin-right:1em;white-space:nowrap"}, box);
      element("span", {style: "display:inline-block;width:.8em;height:.8em;margin-right:.3em;background:" + item[1]}, span);
      element("span", {text: item[0]}, span);
    });
  }

  function mount(el, root) {
    if (!document.getElementById("whatif-css")) element("style", {id: "whatif-css", text: CSS}, document.head);
    var start = JSON.parse(el.getAttribute("data-question"));
    return Promise.all([loadData(root), loadPlotly(root)]).then(function (loaded) {
      el.whatif = new Explorer(el, loaded[0], loaded[1], start);
      return el.whatif;
    });
  }

  window.WhatIf = {mount: mount, answer: answer, limits: limits, verdict: verdict, pyFixed: pyFixed, binary: binary, at: at};
})();
