// The backend of the page that `digitgan export --web` writes (see app.js): no server, the
// generator (generator.onnx) runs in this browser with ONNX Runtime Web (static/ort.wasm.min.js,
// loaded before this script). The noise of a seed is drawn as PyTorch draws it on the CPU, so
// a seed draws here the digits digitgan sample draws for it (to float rounding: at most 1/255).
"use strict";

const LIMITS = {max_n: 256, max_steps: 64, max_seed: 2 ** 32 - 1, max_scale: 8};
const PAD = 2; // pixels between the images of a grid, as digitgan.viz.make_grid

// --- PyTorch's random numbers ------------------------------------------------------------

// torch.Generator().manual_seed(seed) on the CPU: the 32-bit Mersenne Twister MT19937
// (Matsumoto and Nishimura 1998), seeded with seed mod 2^32 as PyTorch seeds it.
class MersenneTwister {
  constructor(seed) {
    this.state = new Uint32Array(624);
    this.state[0] = seed >>> 0;
    for (let i = 1; i < 624; i++) {
      const prev = this.state[i - 1] ^ (this.state[i - 1] >>> 30);
      this.state[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
    this.index = 624;
  }

  next() { // the next 32-bit draw
    const s = this.state;
    if (this.index >= 624) {
      for (let k = 0; k < 624; k++) {
        const y = (s[k] & 0x80000000) | (s[(k + 1) % 624] & 0x7fffffff);
        s[k] = s[(k + 397) % 624] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      }
      this.index = 0;
    }
    let y = s[this.index++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  float24() { // a float32 in [0, 1) from the low 24 bits of one draw (torch.rand)
    return (this.next() & 0xffffff) / 2 ** 24;
  }
}

// Box-Muller on 16 uniform floats in place, as PyTorch's normal_fill_16: the first 8 give
// the radii, the last 8 the angles.
function boxMuller16(data, at) {
  for (let j = at; j < at + 8; j++) {
    const radius = Math.sqrt(-2 * Math.log(1 - data[j]));
    const theta = 2 * Math.PI * data[j + 8];
    data[j] = radius * Math.cos(theta);
    data[j + 8] = radius * Math.sin(theta);
  }
}

// torch.randn(size) for a multiple of 16: uniform floats, transformed 16 at a time.
function randn(size, rng) {
  const out = new Float32Array(size);
  for (let i = 0; i < size; i++) out[i] = rng.float24();
  for (let i = 0; i < size; i += 16) boxMuller16(out, i);
  return out;
}

// Sampler.noise(n, seed, category): n noise vectors (flat, n x z_dim), uniform in [-1, 1) or
// normal; with a category, each made to draw it (withCode).
function noise(n, seed, category) {
  const size = n * model.z_dim;
  const rng = new MersenneTwister(seed);
  // normal noise in whole blocks of 16, as Sampler.noise draws it
  const z = model.noise === "normal" ? randn(Math.ceil(size / 16) * 16, rng).subarray(0, size)
    : Float32Array.from({length: size}, () => 2 * rng.float24() - 1);
  return category === undefined ? z : withCode(z, category);
}

// digitgan.models.base.category_choice: the category each of the code's `model.code_parts`
// parts is made to take (null: any) for `category`, a number among `model.categories` (its
// digits in base k, the first part the most significant) or, for a code in parts, one value
// per part, null or "any" for any; an Error saying what is expected otherwise.
function categoryChoice(category) {
  const parts = model.code_parts;
  const k = Math.round(model.categories ** (1 / parts));
  const whole = (v, top) => Number.isInteger(v) && v >= 0 && v < top;
  if (whole(category, model.categories)) {
    return Array.from({length: parts}, (_, part) => Math.floor(category / k ** (parts - 1 - part)) % k);
  }
  if (parts > 1 && Array.isArray(category) && category.length === parts) {
    const values = category.map((v) => (v === null || v === "any" ? null : v));
    if (values.every((v) => v === null || whole(v, k))) return values;
  }
  const either = parts > 1 ? ` or ${parts} values (one per part, each 0 to ${k - 1} or any)` : "";
  throw new Error(`expected an integer from 0 to ${model.categories - 1}${either}`);
}

// digitgan.models.base.with_code: noise (flat) made to draw learnt category `category`: in each
// vector and in the block of its last entries of each part the category fixes (one block of
// `model.categories` for a code in one part), the largest entry trades places with the entry
// of that part's category.
function withCode(z, category) {
  const out = Float32Array.from(z);
  const parts = model.code_parts;
  const k = Math.round(model.categories ** (1 / parts));
  const d = model.z_dim;
  const chosen = categoryChoice(category);
  for (let row = 0; row < out.length; row += d) {
    for (let part = 0; part < parts; part++) {
      if (chosen[part] === null) continue;
      const code = row + d - (parts - part) * k;
      const want = code + chosen[part];
      let top = code;
      for (let i = code + 1; i < code + k; i++) if (out[i] > out[top]) top = i;
      [out[top], out[want]] = [out[want], out[top]];
    }
  }
  return out;
}

// The truncation trick (digitgan.models.truncate_noise): noise pulled toward its mean, 0.
function truncate(z, psi) {
  return psi === 1 ? z : z.map((v) => v * psi);
}

// digitgan.models.interpolate_noise: `steps` vectors from z0 to z1, a straight line for
// uniform noise, spherical (slerp) for normal noise.
function interpolate(z0, z1, steps) {
  const d = z0.length;
  const out = new Float32Array(steps * d);
  let weights = (t) => [1 - t, t];
  if (model.noise === "normal") {
    let dot = 0, n0 = 0, n1 = 0;
    for (let i = 0; i < d; i++) {
      dot += z0[i] * z1[i];
      n0 += z0[i] * z0[i];
      n1 += z1[i] * z1[i];
    }
    const cos = dot / Math.max(Math.sqrt(n0 * n1), 1e-8); // as torch's cosine_similarity
    const omega = Math.acos(Math.min(1, Math.max(-1, cos)));
    const sin = Math.sin(omega);
    if (sin > 1e-6) weights = (t) => [Math.sin((1 - t) * omega) / sin, Math.sin(t * omega) / sin];
  }
  for (let k = 0; k < steps; k++) {
    const [a, b] = weights(k / (steps - 1));
    for (let i = 0; i < d; i++) out[k * d + i] = a * z0[i] + b * z1[i];
  }
  return out;
}

// --- the generator -----------------------------------------------------------------------

let model = null; // the facts of the model (app.js calls them info)
let session = null;
let queue = Promise.resolve(); // one run at a time, in the order asked

// Images (uint8, flat N x C x H x W) for noise z (flat) and labels (an array, or null).
function generate(z, labels) {
  const n = z.length / model.z_dim;
  const feeds = {noise: new ort.Tensor("float32", z, [n, model.z_dim])};
  if (model.num_classes > 0) feeds.labels = new ort.Tensor("int64", BigInt64Array.from(labels, BigInt), [n]);
  const run = queue.then(() => session.run(feeds));
  queue = run.catch(() => {});
  return run.then(({images}) => toUint8(images.data));
}

// digitgan.viz.to_uint8: x * 255 in float32, rounded half to even.
function toUint8(data) {
  return Uint8Array.from(data, (x) => {
    const v = Math.fround(x * 255);
    const r = Math.round(v);
    return r - v === 0.5 && r % 2 === 1 ? r - 1 : r;
  });
}

// Sampler.labels: one class for all, or the classes in turn.
function labelsFor(n, label) {
  if (model.num_classes === 0) return null;
  return Array.from({length: n}, (_, i) => (label === undefined ? i % model.num_classes : label));
}

// --- requests, checked as the server checks them ---------------------------------------

function integer(body, name, fallback, lo, hi) {
  const value = body[name] === undefined ? fallback : body[name];
  if (!Number.isInteger(value)) throw new Error(`${name}: expected an integer, got ${JSON.stringify(value)}`);
  if (value < lo) throw new Error(`${name}: ${value} is below the minimum ${lo}`);
  if (value > hi) throw new Error(`${name}: ${value} is above the maximum ${hi}`);
  return value;
}

// The optional learnt category of `body` (undefined when absent; "all" where allowed): a
// number, or for a code in parts one value per part.
function categoryOf(body, allowAll) {
  const value = body.category;
  if (value === undefined || value === null) return undefined;
  if (!model.categories) throw new Error("category: this model learnt no categories (its model.categories is 0)");
  if (allowAll && value === "all") return value;
  try {
    categoryChoice(value);
  } catch (e) {
    throw new Error(`category: ${e.message}${allowAll ? ' or "all"' : ""}, got ${JSON.stringify(value)}`);
  }
  return value;
}

// The PNG grid of `pixels` (uint8, flat N x C x H x W), `nrow` images a row, each pixel a
// `scale` x `scale` square: digitgan.viz.make_grid and png_bytes, as an RGBA PNG.
function gridPng(pixels, n, nrow, scale) {
  const [c, h, w] = model.image_shape;
  const rows = Math.max(1, Math.ceil(n / nrow));
  const width = (PAD + nrow * (w + PAD)) * scale;
  const height = (PAD + rows * (h + PAD)) * scale;
  const canvas = document.createElement("canvas");
  [canvas.width, canvas.height] = [width, height];
  const ctx = canvas.getContext("2d");
  const out = ctx.createImageData(width, height);
  for (let i = 3; i < out.data.length; i += 4) out.data[i] = 255; // black, opaque
  for (let k = 0; k < n; k++) {
    const top = PAD + Math.floor(k / nrow) * (h + PAD);
    const left = PAD + (k % nrow) * (w + PAD);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        for (let ch = 0; ch < 3; ch++) {
          const v = pixels[((k * c + (c === 1 ? 0 : ch)) * h + y) * w + x];
          for (let sy = 0; sy < scale; sy++) {
            const row = ((top + y) * scale + sy) * width;
            for (let sx = 0; sx < scale; sx++) out.data[4 * (row + (left + x) * scale + sx) + ch] = v;
          }
        }
      }
    }
  }
  ctx.putImageData(out, 0, 0);
  return new Promise((resolve, reject) => canvas.toBlob(
    (blob) => (blob ? resolve(blob) : reject(new Error("the browser cannot encode a PNG"))), "image/png"));
}

// Image i of `pixels` as nested [channel][row][column] arrays (what app.js draws).
function nested(pixels, i) {
  const [c, h, w] = model.image_shape;
  return Array.from({length: c}, (_, ch) => Array.from({length: h}, (_, y) => {
    const at = ((i * c + ch) * h + y) * w;
    return Array.from(pixels.subarray(at, at + w));
  }));
}

const backend = {
  async info() {
    const res = await fetch("model.json");
    if (!res.ok) throw new Error(`model.json: ${res.status} ${res.statusText}`);
    const {config, evaluation} = await res.json();
    ort.env.wasm.numThreads = 1; // more need cross-origin isolation, which static hosts rarely give
    ort.env.wasm.wasmPaths = new URL("static/", document.baseURI).href;
    session = await ort.InferenceSession.create(config.onnx.file, {executionProviders: ["wasm"]});
    model = {
      checkpoint: config.onnx.file,
      preset: config.preset,
      step: config.step,
      arch: config.architecture,
      dataset: config.dataset,
      image_shape: config.image_shape,
      z_dim: config.noise.z_dim,
      noise: config.noise.kind,
      num_classes: config.num_classes,
      class_names: config.num_classes ? config.class_names : [],
      categories: config.categories || 0,
      code_parts: config.code_parts || 1,
      metrics: evaluation && evaluation.metrics,
      floor: evaluation && evaluation.floor,
      limits: LIMITS,
    };
    document.getElementById("about").textContent = `Drawn in this browser by ONNX Runtime Web ${ort.env.versions.web} ` +
      "from generator.onnx: a seed draws the digits digitgan sample draws for it.";
    return model;
  },

  async grid(body) {
    const seed = integer(body, "seed", 0, 0, LIMITS.max_seed);
    const scale = integer(body, "scale", 1, 1, LIMITS.max_scale);
    const psi = body.truncation === undefined ? 1 : body.truncation;
    const category = categoryOf(body, !model.num_classes); // "all" as in the server
    if (category === "all" || body.label === "all") {
      // Sampler.class_grid: row k is class k (or category k: the noise made to draw it),
      // column j noise j
      const k = model.num_classes || model.categories;
      const per = integer(body, "n", 16, 1, Math.floor(LIMITS.max_n / k));
      const z = noise(per, seed);
      const all = new Float32Array(z.length * k);
      for (let r = 0; r < k; r++) all.set(model.num_classes ? z : withCode(z, r), r * z.length);
      const labels = model.num_classes ? Array.from({length: k * per}, (_, i) => Math.floor(i / per)) : null;
      return gridPng(await generate(truncate(all, psi), labels), k * per, per, scale);
    }
    const n = integer(body, "n", 16, 1, LIMITS.max_n);
    const pixels = await generate(truncate(noise(n, seed, category), psi), labelsFor(n, body.label));
    return gridPng(pixels, n, Math.max(1, Math.ceil(Math.sqrt(n))), scale);
  },

  async walk(body) {
    const steps = integer(body, "steps", 16, 2, LIMITS.max_steps);
    const category = categoryOf(body, false);
    const z0 = noise(1, integer(body, "seed_a", 0, 0, LIMITS.max_seed), category);
    const z1 = noise(1, integer(body, "seed_b", 1, 0, LIMITS.max_seed), category);
    const psi = body.truncation === undefined ? 1 : body.truncation;
    const label = model.num_classes > 0 && body.label === undefined ? 0 : body.label;
    const pixels = await generate(truncate(interpolate(z0, z1, steps), psi), labelsFor(steps, label));
    return Array.from({length: steps}, (_, i) => nested(pixels, i));
  },
};
