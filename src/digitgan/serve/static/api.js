// The backend of digitgan serve's page (see app.js): the server's JSON/PNG API.
"use strict";

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify(body),
  };
  const res = await fetch(path, options);
  if (!res.ok) {
    let message = `${res.status} ${res.statusText}`;
    try { message = (await res.json()).error || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return res;
}

const backend = {
  info: async () => (await api("/api/info")).json(),
  grid: async (body) => (await api("/api/samples", body)).blob(),
  walk: async (body) =>
    (await (await api("/api/interpolate", {...body, format: "json"})).json()).images,
  project: async (body) => (await api("/api/project", body)).json(),
};
