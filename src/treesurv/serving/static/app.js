// The treesurv page: builds its form from /ui/form.json (generated from
// treesurv.schema), calls the API and draws the charts as inline SVG.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
let spec = null;

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}, text = "") {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== "") node.textContent = text;
  return node;
}

// A labelled input with its description and the slot its API errors go to.
function field(f, label, input) {
  const wrap = el("div", { class: "field", id: `field-${f.name}` });
  input.title = f.description;
  wrap.append(label, input, el("span", { class: "hint" }, f.description));
  wrap.append(el("span", { class: "error", id: `err-${f.name}`, role: "alert" }));
  return wrap;
}

function fieldInput(f) {
  const label = el("label", { for: f.name }, f.name.replace("_", " ") + " ");
  if (f.unit) label.append(el("span", { class: "unit" }, `(${f.unit})`));
  let input;
  if (f.type === "string") {
    input = el("select", { id: f.name, name: f.name });
    for (const c of f.categories) input.append(el("option", { value: c }, c));
  } else {
    input = el("input", {
      id: f.name, name: f.name, type: "number", step: "any",
      min: f.minimum, max: f.maximum, inputmode: "decimal",
    });
  }
  return field(f, label, input);
}

// The optional field plot: "elsewhere" (no plot sent) or one of the study's plots.
function siteInput(f) {
  const input = el("select", { id: f.name, name: f.name });
  input.append(el("option", { value: "" }, "elsewhere (a typical site)"));
  for (let p = f.minimum; p <= f.maximum; p += 1) {
    input.append(el("option", { value: String(p) }, String(p)));
  }
  return field(f, el("label", { for: f.name }, "Field plot of the study "), input);
}

function traitsKnown() { return $("traits-known").checked; }

// Sterile and Conspecific follow Species and Soil; EMF exists only for EMF species.
function applyRules() {
  const species = $("Species").value, soil = $("Soil").value;
  const implied = spec.implied_values[species][soil];
  for (const [name, value] of Object.entries(implied)) $(name).value = value;
  const emf = $("EMF");
  const amf = spec.species_myco[species] === "AMF";
  emf.disabled = amf || !traitsKnown();
  if (amf) emf.value = "";
  for (const t of spec.traits) {
    if (t !== "EMF") $(t).disabled = !traitsKnown();
  }
  fillVaryOptions();
}

function fillVaryOptions() {
  const vary = $("vary"), keep = vary.value;
  vary.replaceChildren();
  for (const f of spec.features) {
    if (spec.implied.includes(f.name)) continue;
    if (!traitsKnown() && f.trait) continue;
    vary.append(el("option", { value: f.name }, f.name.replace("_", " ")));
  }
  if ([...vary.options].some((o) => o.value === keep)) vary.value = keep;
  else if ([...vary.options].some((o) => o.value === "Soil")) vary.value = "Soil";
}

function instance() {
  const out = {};
  for (const f of spec.features) {
    if (f.trait && !traitsKnown()) continue;
    const input = $(f.name);
    if (f.type === "string") out[f.name] = input.value;
    else if (input.value.trim() === "") { if (!f.nullable) out[f.name] = null; }
    else out[f.name] = Number(input.value);
  }
  if (traitsKnown() && spec.species_myco[out.Species] === "AMF") delete out.EMF;
  const plot = $(spec.site.name).value;
  if (plot !== "") out[spec.site.name] = Number(plot);
  return out;
}

function clearErrors() {
  for (const node of document.querySelectorAll(".error")) node.textContent = "";
  for (const node of document.querySelectorAll(".invalid")) node.classList.remove("invalid");
}

// Each 422 item names its field ("instances[0].AMF", "instance.Species+EMF",
// "horizon_days"): the message goes next to that field, else under the form.
function showErrors(detail) {
  if (!Array.isArray(detail)) { $("form-error").textContent = String(detail); return; }
  for (const item of detail) {
    const last = item.field.split(".").pop().replace(/\[\d+\]$/, "");
    const names = last.split("+");
    let shown = false;
    for (const name of names) {
      const slot = $(`err-${name}`);
      if (slot) {
        slot.textContent = item.msg;
        const input = $(name === "horizon_days" ? "horizon" : name);
        if (input) input.classList.add("invalid");
        shown = true;
      }
    }
    if (!shown) $("form-error").textContent += item.msg + " ";
  }
}

async function post(path, body) {
  const r = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = await r.json().catch(() => ({ detail: `HTTP ${r.status}` }));
  if (!r.ok) { showErrors(data.detail ?? `HTTP ${r.status}`); return null; }
  return data;
}

// The inputs of the answer shown live in the URL, so a link reproduces it.
function share(inst, h) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(inst)) params.set(k, v === null ? "" : String(v));
  if (traitsKnown()) params.set("traits", "1");
  if (h !== null) params.set("horizon", String(h));
  history.replaceState(null, "", `${location.pathname}?${params}`);
}

// A shared link: fill the form from the URL and answer at once. Returns whether the
// URL held inputs.
function restore() {
  const params = new URLSearchParams(location.search);
  if (![...params.keys()].length) return false;
  $("traits-known").checked = params.get("traits") === "1";
  for (const name of ["Species", "Soil"]) {
    if (params.has(name)) $(name).value = params.get(name);
  }
  applyRules();  // Sterile, Conspecific and EMF follow Species and Soil
  for (const f of [...spec.features, spec.site]) {
    if (params.has(f.name) && !spec.implied.includes(f.name)) $(f.name).value = params.get(f.name);
  }
  $("horizon").value = params.get("horizon") ?? "";
  return true;
}

function horizon() {
  const v = $("horizon").value.trim();
  return v === "" ? null : Number(v);
}

const MODEL_TEXT = {
  full: "full model (all ten inputs)",
  planning: "planning model (design fields only, traits unknown)",
};

async function predict(event) {
  event.preventDefault();
  clearErrors();
  const inst = instance(), h = horizon();
  const body = { instances: [inst] };
  if (h !== null) body.horizon_days = h;
  const pred = await post("/v1/predictions", body);
  if (!pred) { $("result").hidden = true; return; }  // no stale answer beside an error
  share(inst, h);
  const p = pred.predictions[0].death_probability;
  $("result").hidden = false;
  $("probability").textContent = `${(100 * p).toFixed(1)} %`;
  $("answer-by").textContent = (h === null ? "during the study" : `by day ${h}`) +
    ` · ${MODEL_TEXT[pred.model]} · version ${pred.model_version}`;
  $("model-version").textContent = pred.model_version;
  // The curve's days: the model's default grid, plus the chosen day so that the
  // value marked on it lies on the curve.
  const survBody = { instances: [inst] };
  const days = spec.model?.default_days ?? [];
  if (h !== null && days.length && h <= spec.model.max_days) {
    survBody.horizons = [...new Set([...days, h])].sort((a, b) => a - b);
  }
  const surv = await post("/v1/survival", survBody);
  if (!surv) return;
  const curve = surv.predictions[0];
  drawSurvival(curve.survival, h, h === null ? null : 1 - p);
  $("median").textContent = curve.median_survival_days === null
    ? "More than half such seedlings are alive at the end of the study."
    : `Median survival: day ${curve.median_survival_days}.`;
}

// `mark`: the chosen day, `alive`: the survival model's value on it (1 - the answer).
function drawSurvival(points, mark, alive) {
  const W = 360, H = 230, L = 40, R = 10, T = 10, B = 40;
  const maxDay = spec.model.max_days;
  const x = (d) => L + (d / maxDay) * (W - L - R);
  const y = (s) => T + (1 - s) * (H - T - B);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": "survival probability by day", id: "survival-svg" });
  root.append(svg("line", { class: "axis", x1: L, y1: y(0), x2: W - R, y2: y(0) }));
  root.append(svg("line", { class: "axis", x1: L, y1: y(0), x2: L, y2: y(1) }));
  for (const s of [0, 0.5, 1]) {
    root.append(svg("text", { x: L - 6, y: y(s) + 4, "text-anchor": "end" }, s.toFixed(1)));
  }
  for (let d = 0; d <= maxDay; d += 20) {
    root.append(svg("text", { x: x(d), y: H - 24, "text-anchor": "middle" }, d));
  }
  root.append(svg("text", { x: W - R, y: H - 4, "text-anchor": "end" }, "days since planting"));
  root.append(svg("text", { x: 12, y: T + (H - T - B) / 2, "text-anchor": "middle",
    transform: `rotate(-90 12 ${T + (H - T - B) / 2})` }, "share alive"));
  // A step function: S keeps its value until the next day.
  let path = `M${x(0)},${y(1)}`;
  for (const pt of points) path += ` H${x(pt.day)} V${y(pt.survival_probability)}`;
  path += ` H${x(maxDay)}`;
  root.append(svg("path", { class: "curve", d: path }));
  for (const pt of points) {
    const dot = svg("circle", { cx: x(pt.day), cy: y(pt.survival_probability), r: 3,
      fill: "currentColor" });
    dot.append(svg("title", {}, `day ${pt.day}: ${(100 * pt.survival_probability).toFixed(1)} % alive`));
    root.append(dot);
  }
  if (mark !== null && mark <= maxDay) {
    root.append(svg("line", { class: "axis", x1: x(mark), x2: x(mark), y1: y(0), y2: y(1),
      "stroke-dasharray": "4 3" }));
    // The value on that day: a ring on the curve, its figure just under it (above it
    // when the curve is low), on the side of the line with more room.
    const left = x(mark) > (W + L) / 2;
    const under = y(alive) + 16 < y(0) - 4;
    root.append(svg("circle", { class: "mark", cx: x(mark), cy: y(alive), r: 5, fill: "none",
      stroke: "currentColor" }));
    root.append(svg("text", { id: "survival-at", x: x(mark) + (left ? -8 : 8),
      y: under ? y(alive) + 16 : y(alive) - 8, "text-anchor": left ? "end" : "start" },
      `day ${mark}: ${(100 * alive).toFixed(1)} % alive`));
  }
  $("survival-chart").replaceChildren(root);
}

async function compare() {
  clearErrors();
  const body = { instance: instance(), vary: $("vary").value };
  const h = horizon();
  if (h !== null) body.horizon_days = h;
  const res = await post("/v1/compare", body);
  if (!res) return;
  drawBars(res);
  const best = res.variants.find((v) => v.best);
  $("best").textContent = best
    ? `Lowest risk: ${res.vary} = ${best.value} (${(100 * best.death_probability).toFixed(1)} %)` +
      ` · ${MODEL_TEXT[res.model]}`
    : "No variant could be scored.";
}

function drawBars(res) {
  const rowH = 24, L = 150, W = 360, R = 50;
  const H = res.variants.length * rowH + 10;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", id: "compare-svg",
    "aria-label": `death probability by ${res.vary}` });
  res.variants.forEach((v, i) => {
    const top = 5 + i * rowH;
    root.append(svg("text", { x: L - 6, y: top + 15, "text-anchor": "end" }, String(v.value)));
    if (v.death_probability === null) {
      root.append(svg("text", { x: L, y: top + 15 }, "not possible"));
      return;
    }
    const bar = svg("rect", { class: v.best ? "bar best" : "bar", x: L, y: top + 3,
      width: Math.max(1, v.death_probability * (W - L - R)), height: rowH - 8 });
    bar.append(svg("title", {}, v.error ?? `${(100 * v.death_probability).toFixed(1)} %`));
    root.append(bar);
    root.append(svg("text", { x: L + v.death_probability * (W - L - R) + 4, y: top + 15 },
      `${(100 * v.death_probability).toFixed(1)} %`));
  });
  $("compare-chart").replaceChildren(root);
}

// ---- Score a spreadsheet. The file itself is the body of POST /ui/score (its type
// said by its extension: Windows calls a .csv file Excel's); the answer carries the
// report (the command line's: row, column, value, rule) and the scored file.
const XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
let downloadUrl = null;

function sizeText(n) {
  if (n >= 1024 * 1024) return `${(n / (1024 * 1024)).toFixed(1)} MiB`;
  return n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} bytes`;
}

function uploadType(name) {
  const lower = name.toLowerCase();
  if (lower.endsWith(".xlsx")) return XLSX;
  if (lower.endsWith(".csv") || lower.endsWith(".txt")) return "text/csv";
  return null;
}

function uploadState(state, status) {
  $("batch").dataset.state = state;
  if (status !== undefined) $("upload-status").textContent = status;
}

// `fraction` null: the work has no measurable progress (the server is scoring).
function setProgress(label, fraction) {
  $("upload-progress-box").hidden = false;
  const bar = $("upload-progress");
  if (fraction === null) {
    bar.removeAttribute("value");
    $("upload-progress-label").textContent = label;
  } else {
    bar.value = Math.round(100 * fraction);
    $("upload-progress-label").textContent = `${label}: ${Math.round(100 * fraction)} %`;
  }
}

function resetUpload() {
  $("upload-error").textContent = "";
  $("upload-result").hidden = true;
  $("upload-issues").hidden = true;
  $("upload-issues-body").replaceChildren();
  $("upload-progress-box").hidden = true;
  if (downloadUrl) URL.revokeObjectURL(downloadUrl);
  downloadUrl = null;
}

function uploadFailed(message) {
  $("upload-progress-box").hidden = true;
  $("upload-error").textContent = message;
  uploadState("error", "The file was not scored.");
}

function scoreFile(file) {
  resetUpload();
  const type = uploadType(file.name);
  if (!type) { uploadFailed(`${file.name}: choose a CSV (.csv) or XLSX (.xlsx) file`); return; }
  const limit = spec.upload.max_bytes;
  if (file.size > limit) {  // the server's own message, without sending the file
    uploadFailed(`${file.name}: file too large: ${file.size} bytes (${sizeText(file.size)}); ` +
      `the limit is ${limit} bytes (${sizeText(limit)}): split the file`);
    return;
  }
  const xhr = new XMLHttpRequest();
  xhr.open("POST", `${spec.upload.path}?filename=${encodeURIComponent(file.name)}`);
  xhr.setRequestHeader("Content-Type", type);
  xhr.responseType = "json";
  xhr.upload.onprogress = (e) => {
    setProgress(`Uploading ${file.name}`, e.lengthComputable ? e.loaded / e.total : null);
  };
  xhr.upload.onload = () => {
    setProgress(`Scoring ${file.name}…`, null);
    uploadState("scoring", `Scoring ${file.name}…`);
  };
  xhr.onprogress = (e) => {
    if (e.lengthComputable) setProgress("Receiving the scored file", e.loaded / e.total);
  };
  xhr.onload = () => {
    $("upload-progress-box").hidden = true;
    const body = xhr.response;
    if (xhr.status !== 200 || !body) {
      const detail = body?.detail;
      uploadFailed(Array.isArray(detail) ? detail.map((d) => d.msg).join(" ")
        : String(detail ?? `the server answered HTTP ${xhr.status}`));
      return;
    }
    showScored(body);
  };
  xhr.onerror = () => uploadFailed(`${file.name}: the upload failed (connection lost)`);
  setProgress(`Uploading ${file.name}`, 0);
  uploadState("uploading", `Uploading ${file.name} (${sizeText(file.size)})…`);
  xhr.send(file);
}

function showScored(r) {
  const text = atob(r.content_base64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i += 1) bytes[i] = text.charCodeAt(i);
  downloadUrl = URL.createObjectURL(new Blob([bytes], { type: r.media_type }));
  const link = $("upload-download");
  link.href = downloadUrl;
  link.download = r.filename;
  link.textContent = `Download ${r.filename}`;
  $("upload-result").hidden = false;
  $("model-version").textContent = r.model_version;
  const rows = $("upload-issues-body");
  for (const i of r.issues) {
    const tr = el("tr");
    for (const v of [i.line ?? "–", i.column, i.value, i.rule]) tr.append(el("td", {}, String(v)));
    rows.append(tr);
  }
  let caption = `Rows not scored — ${r.summary}`;
  if (r.problems > r.issues.length) {
    caption += ` (${r.problems} problems in all; the first ${r.issues.length} shown)`;
  }
  $("upload-issues-caption").textContent = caption;
  $("upload-issues").hidden = r.issues.length === 0;
  uploadState("done", `Scored ${r.scored} of ${r.rows} rows with model ${r.model_version}, ` +
    `${MODEL_TEXT[r.model]}` +
    (r.rejected ? `; ${r.rejected} rejected (listed below, not in the file).` : "."));
}

function setUpUpload() {
  $("upload-limit").textContent = `Files up to ${sizeText(spec.upload.max_bytes)}.`;
  const input = $("upload-file"), zone = $("drop");
  input.addEventListener("change", () => { if (input.files.length) scoreFile(input.files[0]); });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) scoreFile(file);
  });
  uploadState("idle");
}

async function start() {
  spec = await (await fetch("/ui/form.json")).json();
  for (const f of spec.features) {
    const box = f.trait ? $("trait-fields") : $("design");
    box.append(fieldInput(f));
    const v = spec.example[f.name];
    if (v !== null && v !== undefined) $(f.name).value = v;
  }
  const rules = el("p", { class: "hint" }, spec.rules.map((r) => r.message).join(". ") + ".");
  $("design").append(rules, siteInput(spec.site));
  if (spec.model) {
    $("model-version").textContent = spec.model.version;
    $("horizon").max = spec.model.max_days ?? "";
  }
  $("Species").addEventListener("change", applyRules);
  $("Soil").addEventListener("change", applyRules);
  $("traits-known").addEventListener("change", applyRules);
  $("seedling").addEventListener("submit", predict);
  $("compare").addEventListener("click", compare);
  setUpUpload();
  applyRules();
  if (restore()) await predict(new Event("submit"));
  document.body.dataset.ready = "true";
}

start().catch((err) => { $("form-error").textContent = `The page could not start: ${err}`; });
