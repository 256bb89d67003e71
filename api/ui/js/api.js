// The HTTP API as the console uses it. Every /v1 call carries the signed-in key.

const KEY_STORE = "kbqa.key";
// The console is served at <prefix>/ui/, the API at <prefix>/: relative URLs keep working
// behind a proxy that adds a prefix.
const BASE = new URL("../", window.location.href);

// A refused or failed request: `code` is the server's stable error code, `message` its English
// sentence, `details` the fields at fault ([{field, loc, message, type}]). errors.js turns them
// into text in the user's language.
export class ApiError extends Error {
  constructor(status, code, message, details = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export const session = {
  // sessionStorage: the key lives as long as the tab, never on disk beyond it.
  get key() {
    return sessionStorage.getItem(KEY_STORE);
  },
  signIn(key) {
    sessionStorage.setItem(KEY_STORE, key);
  },
  signOut() {
    sessionStorage.removeItem(KEY_STORE);
  },
  get signedIn() {
    return sessionStorage.getItem(KEY_STORE) !== null;
  },
};

export function url(path) {
  return new URL(path.replace(/^\//, ""), BASE).toString();
}

function headers(extra = {}, key = session.key) {
  const out = { ...extra };
  if (key) out.Authorization = `Bearer ${key}`;
  return out;
}

// What a status means when the body is not the server's envelope (a proxy's error page).
const STATUS_CODES = {
  401: "unauthorized",
  403: "forbidden",
  404: "not_found",
  413: "payload_too_large",
  429: "rate_limited",
};

// The server's error envelope {"error": {"code", "message", "details"?}}.
export function errorFrom(status, body, fallback) {
  const error = body && typeof body.error === "object" ? body.error : null;
  if (error && error.code) {
    const details = Array.isArray(error.details) ? error.details : [];
    return new ApiError(status, error.code, error.message || fallback || "", details);
  }
  return new ApiError(status, STATUS_CODES[status] || "http_error", fallback || `HTTP ${status}`);
}

async function parse(resp) {
  if (resp.status === 204) return null;
  const text = await resp.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!resp.ok) throw errorFrom(resp.status, body, text.slice(0, 300) || resp.statusText);
  return body;
}

export async function request(method, path, body, { key } = {}) {
  const init = { method, headers: headers({}, key === undefined ? session.key : key) };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(url(path), init);
  } catch (exc) {
    throw new ApiError(0, "network", exc.message || String(exc));
  }
  return parse(resp);
}

export const api = {
  ready: () => fetch(url("readyz")).then((r) => r.json()),
  listKbs: (key) => request("GET", "v1/knowledge-bases", undefined, { key }),
  getKb: (id) => request("GET", `v1/knowledge-bases/${id}`),
  createKb: (name, description) => request("POST", "v1/knowledge-bases", { name, description }),
  deleteKb: (id) => request("DELETE", `v1/knowledge-bases/${id}`),
  listDocs: (kb, status) =>
    request("GET", `v1/knowledge-bases/${kb}/documents${status ? `?status=${status}` : ""}`),
  deleteDoc: (kb, id) => request("DELETE", `v1/knowledge-bases/${kb}/documents/${id}`),
  listChunks: (kb, doc, offset, limit) =>
    request(
      "GET",
      `v1/knowledge-bases/${kb}/documents/${doc}/chunks?offset=${offset}&limit=${limit}`,
    ),
  setChunkDisabled: (kb, doc, chunk, disabled) =>
    request("PATCH", `v1/knowledge-bases/${kb}/documents/${doc}/chunks/${chunk}`, { disabled }),
  listConversations: (kb) => request("GET", `v1/conversations?kb_id=${encodeURIComponent(kb)}`),
  getConversation: (id) => request("GET", `v1/conversations/${id}`),
  createConversation: (kb) => request("POST", "v1/conversations", { kb_id: kb }),
  ask: (kb, body) => request("POST", `v1/knowledge-bases/${kb}/ask`, body),
  listJobs: (params) => request("GET", `v1/jobs?${new URLSearchParams(params)}`),
  cancelJob: (id) => request("POST", `v1/jobs/${id}/cancel`),
  getJob: (id) => request("GET", `v1/jobs/${id}`),
  reindex: (kb, body) => request("POST", `v1/knowledge-bases/${kb}/reindex`, body),
  evaluate: (kb, body) => request("POST", `v1/knowledge-bases/${kb}/eval`, body),
  listVersions: (kb) => request("GET", `v1/knowledge-bases/${kb}/versions`),
  rollback: (kb) => request("POST", `v1/knowledge-bases/${kb}/versions/rollback`),
};

// A binary answer (a file, a page image) fetched with the key.
async function fetchBlob(path) {
  let resp;
  try {
    resp = await fetch(url(path), { headers: headers() });
  } catch (exc) {
    throw new ApiError(0, "network", exc.message || String(exc));
  }
  if (!resp.ok) await parse(resp);
  return { blob: await resp.blob(), headers: resp.headers };
}

// The page policy allows images from data: URLs (not blob:), so the PNG becomes one.
function dataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new ApiError(0, "network", String(reader.error)));
    reader.readAsDataURL(blob);
  });
}

// A PDF page rendered by the server, with the chunk's text highlighted when chunkId is given.
export async function pageImage(kb, doc, page, chunkId) {
  const query = chunkId != null ? `?chunk_id=${encodeURIComponent(chunkId)}` : "";
  const { blob, headers: got } = await fetchBlob(
    `v1/knowledge-bases/${kb}/documents/${doc}/pages/${page}.png${query}`,
  );
  return { src: await dataUrl(blob), highlights: Number(got.get("X-Highlight-Count") || 0) };
}

// The original file, saved under its own name.
export async function downloadFile(kb, doc, filename) {
  const { blob } = await fetchBlob(`v1/knowledge-bases/${kb}/documents/${doc}/file`);
  const href = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = href;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10_000);
}

// One multipart upload with progress (fetch cannot report upload progress; XHR can).
export function uploadFile(kb, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url(`v1/knowledge-bases/${kb}/documents`));
    for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onerror = () => reject(new ApiError(0, "network", "network error"));
    xhr.onload = () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(errorFrom(xhr.status, body, xhr.statusText));
    };
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

// POST .../ask with stream: true; calls onEvent(name, data) for each Server-Sent Event
// (delta..., citations, done, or error). A failure before the stream starts throws ApiError.
export async function askStream(kb, body, onEvent, signal) {
  let resp;
  try {
    resp = await fetch(url(`v1/knowledge-bases/${kb}/ask`), {
      method: "POST",
      headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
      body: JSON.stringify({ ...body, stream: true }),
      signal,
    });
  } catch (exc) {
    if (exc.name === "AbortError") throw exc;
    throw new ApiError(0, "network", exc.message || String(exc));
  }
  if (!resp.ok) await parse(resp);
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      dispatch(buffer.slice(0, end), onEvent);
      buffer = buffer.slice(end + 2);
    }
  }
  if (buffer.trim()) dispatch(buffer, onEvent);
}

function dispatch(block, onEvent) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (!data.length) return;
  const raw = data.join("\n");
  let parsed = raw;
  try {
    parsed = JSON.parse(raw);
  } catch {
    // not JSON: pass the text on
  }
  onEvent(name, parsed);
}
