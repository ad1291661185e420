// The digitgan page: draws sample grids and latent walks, and finds a digit drawn on its pad
// in the model. What it draws comes from `backend`, defined by the script loaded before this
// one: api.js (digitgan serve's JSON/PNG API) or web.js (the generator run in the browser,
// for digitgan export --web). A backend has
//   info()      the model's facts and the request limits (as GET /api/info answers)
//   grid(body)  a PNG Blob of the samples POST /api/samples draws for `body`
//   walk(body)  the frames POST /api/interpolate draws for `body`, as nested uint8 arrays
//   project(body), only where a server can search the model: what POST /api/project answers
// and rejects a request it cannot draw with an Error whose message says why.
// Plain browser JavaScript, no build step and nothing fetched from elsewhere.
"use strict";

const WALK_STEPS = 24;
const STRIP_COLUMNS = 12; // the walk's overview shows its frames in rows of 12
const GRID_MAX_HEIGHT = 640; // pixels
const COUNTS = [16, 25, 36, 64, 100, 144, 256];
const PER_CLASS = [2, 4, 6, 8, 10, 12, 16, 20, 25];

const $ = (id) => document.getElementById(id);
let info = null;
let gridToken = 0;
let walkToken = 0;
let gridUrl = null;
let frames = []; // the walk's frames, as canvases of the image size
let playing = null;

// A whole number typed in a field, or the text as typed (the backend says what is wrong).
function seedOf(input) {
  const text = input.value.trim();
  const n = Number(text);
  return text !== "" && Number.isInteger(n) ? n : text;
}

function showError(id, message) {
  const el = $(id);
  el.textContent = message || "";
  el.hidden = !message;
}

const randomSeed = () => Math.floor(Math.random() * 1000000);

// The truncation the slider is set to: a number from 0 to 1 (1: plain sampling).
const truncation = () => Number($("truncation").value);

// What the "Digit" fields choose: the classes of a conditional model ("label"), the learnt
// categories of a model trained with model.categories ("category"), or nothing.
const choice = () => (info.num_classes > 0 ? "label" : info.categories > 0 ? "category" : null);
const rows = () => info.num_classes || info.categories; // the rows of a grid of them all
// The parts a category is chosen in: 1, or those of a code in parts (model.code_parts, as
// stacked's, one per channel), each chosen in its own select as any or one of its k values.
const codeParts = () => (choice() === "category" ? info.code_parts || 1 : 1);
const partSize = () => Math.round(info.categories ** (1 / codeParts()));

// What a "Digit" field (`id`: digit, walk-digit) picks: "any", "all", a class or category, or
// for a code in parts one value per part (null: any), "any" when every part is any.
function picked(id) {
  if (codeParts() === 1) {
    const value = $(id).value;
    return value === "any" || value === "all" ? value : Number(value);
  }
  const values = Array.from({length: codeParts()}, (_, i) => $(`${id}-part-${i}`).value);
  if (values.every((v) => v === "any")) return "any";
  return values.map((v) => (v === "any" ? null : Number(v)));
}

// A pick as digitgan sample's --category writes it: 7, or part by part 3,any,7.
const pickText = (value) => (Array.isArray(value) ? value.map((v) => v ?? "any").join(",") : String(value));

// --- the sample grid ---------------------------------------------------------------------

// The per-row counts of a grid of every class or category that fit the server's limit (none:
// such a grid is not offered).
const perRowCounts = () => PER_CLASS.filter((k) => k * rows() <= info.limits.max_n);

function fillCounts() {
  const all = picked("digit") === "all";
  const select = $("count");
  const old = Number(select.value) || 16;
  const options = all ? perRowCounts() : COUNTS.filter((k) => k <= info.limits.max_n);
  select.replaceChildren(...options.map((k) => new Option(String(k), String(k))));
  select.value = String(options.includes(old) ? old : all ? Math.min(8, options.at(-1)) : 16);
  const per = choice() === "category" ? "Per category " : "Per digit ";
  select.parentElement.firstChild.textContent = all ? per : "How many ";
}

// The largest whole upscaling at which the grid fits its box, so that every pixel of every
// digit is shown as a square of the same size (and downloaded that way). The grid's layout
// is digitgan.viz.make_grid's: a square-ish grid, or one row per class, with
// 2-pixel gaps.
function gridScale(n, label) {
  const [, h, w] = info.image_shape;
  const cols = label === "all" ? n : Math.ceil(Math.sqrt(n));
  const high = label === "all" ? rows() : Math.ceil(n / cols);
  const box = $("grid").parentElement;
  const room = box.clientWidth - parseFloat(getComputedStyle(box).paddingLeft) * 2;
  const fit = Math.min(room / (2 + cols * (w + 2)), GRID_MAX_HEIGHT / (2 + high * (h + 2)));
  return Math.max(1, Math.min(info.limits.max_scale, Math.floor(fit)));
}

async function drawGrid() {
  const token = ++gridToken;
  const body = {n: Number($("count").value), seed: seedOf($("seed")), truncation: truncation()};
  const digit = picked("digit");
  const field = choice();
  if (field && digit !== "any") body[field] = digit;
  body.scale = gridScale(body.n, body[field]);
  $("samples-card").classList.add("busy");
  try {
    const blob = await backend.grid(body);
    if (token !== gridToken) return; // a newer request has been made
    const url = URL.createObjectURL(blob);
    const img = $("grid");
    img.src = url;
    await img.decode();
    if (gridUrl) URL.revokeObjectURL(gridUrl);
    gridUrl = url;
    const link = $("download");
    link.href = url;
    const what = body[field] === undefined ? ""
      : `-${field === "label" ? "digit" : field}-${pickText(body[field])}`;
    const psi = body.truncation === 1 ? "" : `-psi${body.truncation}`;
    link.download = `digitgan-seed${body.seed}-n${body.n}${what}${psi}.png`;
    link.setAttribute("aria-disabled", "false");
    img.dataset.scale = String(body.scale);
    img.dataset.seed = String(body.seed);
    img.dataset.n = String(body.n);
    img.dataset.label = body.label === undefined ? "" : String(body.label);
    img.dataset.category = body.category === undefined ? "" : pickText(body.category);
    img.dataset.truncation = String(body.truncation);
    showError("samples-error", "");
  } catch (e) {
    if (token === gridToken) showError("samples-error", e.message);
  } finally {
    if (token === gridToken) $("samples-card").classList.remove("busy");
  }
}

// --- the latent walk ---------------------------------------------------------------------

// One image, nested [channel][row][column] uint8, as a canvas of its own size: one channel
// as grey, two as red and green, three as red, green and blue (a fourth is its opacity).
function toCanvas(image) {
  const [c, h, w] = [image.length, image[0].length, image[0][0].length];
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const data = ctx.createImageData(w, h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = 4 * (y * w + x);
      for (let k = 0; k < 3; k++) {
        data.data[i + k] = c === 1 ? image[0][y][x] : k < c ? image[k][y][x] : 0;
      }
      data.data[i + 3] = c === 4 ? image[3][y][x] : 255;
    }
  }
  ctx.putImageData(data, 0, 0);
  return canvas;
}

function showFrame(i) {
  if (!frames.length) return;
  const view = $("walk-frame");
  const ctx = view.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(frames[i], 0, 0, view.width, view.height);
  view.dataset.frame = String(i);
  $("walk-position").textContent = `frame ${i + 1} of ${frames.length}`;

  const [w, h] = [frames[0].width, frames[0].height];
  const at = (k) => [(k % STRIP_COLUMNS) * w, Math.floor(k / STRIP_COLUMNS) * h];
  const sctx = $("walk-strip").getContext("2d");
  frames.forEach((f, k) => sctx.drawImage(f, ...at(k)));
  const [x, y] = at(i);
  sctx.strokeStyle = "#8c9eff";
  sctx.lineWidth = 2;
  sctx.strokeRect(x + 1, y + 1, w - 2, h - 2);
}

async function loadWalk() {
  const token = ++walkToken;
  const body = {seed_a: seedOf($("seed-a")), seed_b: seedOf($("seed-b")), steps: WALK_STEPS,
                truncation: truncation()};
  const digit = choice() && picked("walk-digit");
  if (digit !== null && digit !== "any") body[choice()] = digit;
  try {
    const images = await backend.walk(body);
    if (token !== walkToken) return;
    frames = images.map(toCanvas);
    const view = $("walk-frame");
    [view.width, view.height] = [7 * frames[0].width, 7 * frames[0].height]; // 196 for 28
    const strip = $("walk-strip");
    strip.width = Math.min(frames.length, STRIP_COLUMNS) * frames[0].width;
    strip.height = Math.ceil(frames.length / STRIP_COLUMNS) * frames[0].height;
    const zoom = Math.max(1, Math.floor(strip.parentElement.clientWidth * 0.9 / strip.width));
    strip.style.width = `${zoom * strip.width}px`;
    const slider = $("walk-slider");
    slider.max = String(frames.length - 1);
    showFrame(Number(slider.value));
    $("walk-frame").dataset.seeds = `${body.seed_a}-${body.seed_b}`;
    $("walk-frame").dataset.truncation = String(body.truncation);
    $("walk-frame").dataset.category = body.category === undefined ? "" : pickText(body.category);
    showError("walk-error", "");
  } catch (e) {
    if (token === walkToken) showError("walk-error", e.message);
  }
}

function stopPlaying() {
  clearInterval(playing);
  playing = null;
  $("walk-play").textContent = "Play";
}

function togglePlay() {
  if (playing) return stopPlaying();
  const slider = $("walk-slider");
  let direction = 1;
  $("walk-play").textContent = "Pause";
  playing = setInterval(() => {
    let i = Number(slider.value) + direction;
    if (i < 0 || i > Number(slider.max)) {
      direction = -direction;
      i += 2 * direction;
    }
    slider.value = String(i);
    showFrame(i);
  }, 70);
}

// --- draw a digit, find it in the model ---------------------------------------------------

const PAD_STROKE = 22; // pixels of the 280-pixel pad: about 2 of the model's 28
let padInk = false;
let findToken = 0;

// Draw one image (nested [channel][row][column] uint8) onto a canvas, scaled, pixels sharp.
function paint(target, image) {
  const ctx = target.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(toCanvas(image), 0, 0, target.width, target.height);
}

function clearPad() {
  const pad = $("pad");
  const ctx = pad.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, pad.width, pad.height);
  padInk = false;
  $("draw-find").disabled = true;
}

function setUpPad() {
  const pad = $("pad");
  const ctx = pad.getContext("2d");
  let last = null;
  const at = (e) => {
    const box = pad.getBoundingClientRect();
    return [(e.clientX - box.left) * pad.width / box.width,
            (e.clientY - box.top) * pad.height / box.height];
  };
  const line = (from, to) => {
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = PAD_STROKE;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(...from);
    ctx.lineTo(...to);
    ctx.stroke();
  };
  pad.addEventListener("pointerdown", (e) => {
    e.preventDefault();
    pad.setPointerCapture(e.pointerId);
    last = at(e);
    line(last, last); // a dot
    padInk = true;
    $("draw-find").disabled = false;
  });
  pad.addEventListener("pointermove", (e) => {
    if (last === null) return;
    const next = at(e);
    line(last, next);
    last = next;
  });
  const stop = () => { last = null; };
  pad.addEventListener("pointerup", stop);
  pad.addEventListener("pointercancel", stop);
  clearPad();
}

// A class number after "a" or "an" as it is read aloud: a 7, an 8, an 11, an 18.
function withArticle(n) {
  const digits = String(n);
  const lead = Number(digits.slice(0, (digits.length - 1) % 3 + 1));
  return `${digits.startsWith("8") || lead === 11 || lead === 18 ? "an" : "a"} ${n}`;
}

async function findDrawing() {
  if (!padInk) return;
  const token = ++findToken;
  const body = {image: $("pad").toDataURL("image/png"), walk_to: randomSeed()};
  const digit = $("draw-digit").value;
  if (info.num_classes > 0 && digit !== "any" && digit !== "") body.label = Number(digit);
  const card = $("draw-card");
  card.classList.add("busy");
  $("draw-find").disabled = true;
  try {
    const data = await backend.project(body);
    if (token !== findToken) return;
    paint($("drawn"), data.drawing);
    paint($("found"), data.projection);
    const named = data.label === null ? undefined : (info.class_names || [])[data.label];
    const as = data.label === null ? ""
      : `, drawn as ${named && named !== String(data.label) ? named : withArticle(data.label)}`;
    $("found-caption").textContent = `The model's closest digit${as}`;
    const early = data.stopped_early
      ? ` The search stopped at the server's time limit, after ${data.steps} steps.` : "";
    $("found-distance").textContent =
      `Distance from your drawing: ${data.distance.toFixed(3)} (root mean squared ` +
      `difference per pixel: 0 is identical, 1 is as different as can be).${early}`;
    $("nearest").replaceChildren(...data.nearest.map((near, i) => {
      const figure = document.createElement("figure");
      const canvas = document.createElement("canvas");
      [canvas.width, canvas.height] = [data.shape[2], data.shape[1]];
      paint(canvas, data.nearest_images[i]);
      const caption = document.createElement("figcaption");
      caption.textContent = `#${near.index}, ${withArticle(near.label)}: ${near.distance.toFixed(3)}`;
      figure.append(canvas, caption);
      return figure;
    }));
    $("nearest-hint").textContent = data.nearest.length ? $("nearest-hint").dataset.text
      : data.nearest_note;
    const walk = $("found-walk");
    const frames = data.walk.map(toCanvas);
    [walk.width, walk.height] = [frames.length * frames[0].width, frames[0].height];
    walk.style.width = `${3 * walk.width}px`;
    const wctx = walk.getContext("2d");
    frames.forEach((f, k) => wctx.drawImage(f, k * f.width, 0));
    $("found-more").hidden = false;
    card.dataset.distance = String(data.distance);
    card.dataset.label = data.label === null ? "" : String(data.label);
    card.dataset.found = String(token);
    showError("draw-error", "");
  } catch (e) {
    if (token === findToken) showError("draw-error", e.message);
  } finally {
    if (token === findToken) {
      card.classList.remove("busy");
      $("draw-find").disabled = !padInk;
    }
  }
}

// --- the model's facts -------------------------------------------------------------------

function showFacts() {
  const [c, h, w] = info.image_shape;
  const file = info.checkpoint.split(/[\\/]/).pop();
  const facts = [
    ["Checkpoint", file, info.checkpoint],
    ["Preset", info.preset],
    ["Iterations trained", info.step.toLocaleString("en")],
    ["Architecture", info.arch],
    ["Dataset", info.dataset],
    ["Noise", `${info.noise}, ${info.z_dim} dimensions`],
    ["Images", `${w}\u00d7${h}, ${c === 1 ? "grey" : `${c} channels`}`],
    ["Classes", info.num_classes > 0 ? `${info.num_classes} (conditional)`
      : info.categories > 0 ? `unconditional, ${info.categories} learnt categories${
        codeParts() > 1 ? ` (${codeParts()} parts of ${partSize()})` : ""}` : "unconditional"],
  ];
  if (info.saved_at) facts.push(["Saved", info.saved_at.replace("T", " ")]);
  $("facts").replaceChildren(...facts.flatMap(([name, value, title]) => {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = name;
    dd.textContent = value;
    if (title) dd.title = title;
    return [dt, dd];
  }));
  $("summary").textContent =
    `${info.preset} preset \u00b7 ${info.step.toLocaleString("en")} iterations \u00b7 ` +
    `${info.arch} on ${info.dataset}`;

  const metrics = info.metrics || {};
  const names = Object.keys(metrics);
  const fmt = (v) => (typeof v === "number" ? Number(v.toPrecision(4)).toString() : "\u2013");
  $("metrics").querySelector("tbody").replaceChildren(...names.map((name) => {
    const row = document.createElement("tr");
    for (const [text, num] of [[name, false], [fmt(metrics[name]), true],
                               [fmt((info.floor || {})[name]), true]]) {
      const td = document.createElement("td");
      td.textContent = text;
      if (num) td.className = "num";
      row.append(td);
    }
    return row;
  }));
  $("metrics").hidden = names.length === 0;
  $("no-metrics").hidden = names.length > 0;
}

// A class by its name where the dataset names it ("3: Dress"), else by its number.
function className(i) {
  const name = (info.class_names || [])[i];
  return name === undefined || name === String(i) ? String(i) : `${i}: ${name}`;
}

// The names of a code's parts: its channels' colours where there is a part per channel (Stacked
// MNIST), else their numbers.
function partNames() {
  const channels = info.image_shape[0];
  return codeParts() === 3 && channels === 3 ? ["red", "green", "blue"]
    : Array.from({length: codeParts()}, (_, i) => `part ${i + 1}`);
}

// In place of the select `id` of every category, one select per part of the code, each any or
// one of its values (a walk's parts too may be any: the noise picks them).
function setUpParts(id) {
  const names = partNames();
  $(id).hidden = true;
  $(id).after(...names.map((name, i) => {
    const select = document.createElement("select");
    select.id = `${id}-part-${i}`;
    select.title = name;
    select.setAttribute("aria-label", `category, ${name}`);
    const values = Array.from({length: partSize()}, (_, v) => new Option(`${name}: ${v}`, String(v)));
    select.append(new Option(`${name}: any`, "any"), ...values);
    return select;
  }));
}

// The "Digit" fields: a conditional model's classes (a walk stays within one), or the learnt
// categories of a model trained with them (named "Category", chosen part by part for a code
// in parts; the search of a drawing takes none).
function setUpDigits() {
  const field = choice();
  if (field === null) return;
  $("digit-field").hidden = false;
  $("walk-digit-field").hidden = false;
  if (field === "category") {
    for (const id of ["digit-field", "walk-digit-field"]) $(id).firstChild.textContent = "Category ";
  }
  if (codeParts() > 1) {
    setUpParts("digit");
    setUpParts("walk-digit");
    return;
  }
  const digits = Array.from({length: rows()}, (_, i) => new Option(className(i), String(i)));
  const any = () => new Option("any", "any");
  const all = perRowCounts().length ? [new Option("all, one row each", "all")] : [];
  $("digit").replaceChildren(any(), ...digits.map((o) => o.cloneNode(true)), ...all);
  const walk = digits.map((o) => o.cloneNode(true));
  $("walk-digit").replaceChildren(...(field === "category" ? [any(), ...walk] : walk));
  if (field === "category") return;
  $("draw-digit").replaceChildren(any(), ...digits);
  $("draw-digit-field").hidden = false;
}

// --- wiring ------------------------------------------------------------------------------

async function start() {
  try {
    info = await backend.info();
  } catch (e) {
    $("summary").textContent = `cannot load the model: ${e.message}`;
    return;
  }
  for (const id of ["seed", "seed-a", "seed-b"]) $(id).max = String(info.limits.max_seed);
  showFacts();
  setUpDigits();
  fillCounts();

  $("again").addEventListener("click", () => { $("seed").value = String(randomSeed()); drawGrid(); });
  $("count").addEventListener("change", drawGrid);
  $("seed").addEventListener("change", drawGrid);
  $("digit-field").addEventListener("change", () => { fillCounts(); drawGrid(); });
  $("truncation").addEventListener("input", () => {
    $("truncation-value").textContent = truncation().toFixed(2);
  });
  $("truncation").addEventListener("change", () => { drawGrid(); loadWalk(); });

  $("walk-slider").addEventListener("input", (e) => { stopPlaying(); showFrame(Number(e.target.value)); });
  $("walk-play").addEventListener("click", togglePlay);
  $("walk-random").addEventListener("click", () => {
    $("seed-a").value = String(randomSeed());
    $("seed-b").value = String(randomSeed());
    loadWalk();
  });
  for (const id of ["seed-a", "seed-b", "walk-digit-field"]) $(id).addEventListener("change", loadWalk);

  if (backend.project) {
    $("nearest-hint").dataset.text = $("nearest-hint").textContent;
    setUpPad();
    $("draw-clear").addEventListener("click", clearPad);
    $("draw-find").addEventListener("click", findDrawing);
  } else {
    $("draw-card").hidden = true;  // (a static page: no server to search the model)
  }

  await Promise.all([drawGrid(), loadWalk()]);
}

start();
