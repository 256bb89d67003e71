// Documents of the current knowledge base: table with live status (queue position, stage,
// pages and ETA while a document is in flight), drag-and-drop upload of several files with
// per-file progress, delete, and a filter for failed documents.

import { api, uploadFile } from "../api.js";
import {
  badge,
  clear,
  confirmDialog,
  formatBytes,
  formatDate,
  formatDuration,
  h,
  poller,
  progressBar,
  toast,
} from "../dom.js";
import { errorText, serverText } from "../errors.js";
import { label, t, warningText } from "../i18n.js";
import { chunkPanel } from "./sources.js";

const PARALLEL_UPLOADS = 2;
const BUSY = new Set(["queued", "processing"]);

let ctx = null;
let parts = null; // {summary, uploads, table}
let stopPolling = null;
let docs = [];
let failedOnly = false;
// Uploads outlive a re-render (language switch), and belong to the KB they were sent to.
const uploads = [];

export function mount(el, context) {
  ctx = context;
  const kb = ctx.kb;
  if (!kb) {
    clear(el, h("p.empty", {}, t("kb.pick_first")));
    return;
  }
  docs = []; // another knowledge base's rows must not show while the first refresh runs
  parts = {
    summary: h("p.muted", { "data-test": "doc-summary" }),
    uploads: h("ul.uploads", { "data-test": "uploads" }),
    table: h("div", { "data-test": "doc-table-wrap" }),
    chunks: h("div", { "data-test": "chunks-wrap" }),
    live: h("span.live.muted.small", {}, t("docs.live")),
  };
  const filter = h("input", {
    type: "checkbox",
    id: "failed-only",
    checked: failedOnly,
    onchange: () => {
      failedOnly = filter.checked;
      refresh();
    },
  });
  clear(
    el,
    h("div.view-head", {}, h("h1", {}, t("docs.title", { kb: kb.name })), parts.summary),
    dropZone(kb.id),
    parts.uploads,
    h(
      "div.toolbar",
      {},
      h("label.check", { for: "failed-only" }, filter, t("docs.failed_only")),
      parts.live,
    ),
    parts.table,
    parts.chunks,
  );
  renderUploads();
  renderTable();
  stopPolling = poller(refresh, () => (busy() ? 1000 : 5000));
}

export function unmount() {
  if (stopPolling) stopPolling();
  stopPolling = null;
  parts = null;
}

function busy() {
  return docs.some((d) => BUSY.has(d.status)) || uploads.some((u) => u.state === "uploading");
}

async function refresh() {
  const kb = ctx?.kb;
  if (!kb || !parts) return;
  try {
    const [list, stats] = await Promise.all([
      api.listDocs(kb.id, failedOnly ? "failed" : null),
      api.getKb(kb.id),
    ]);
    if (!parts) return;
    docs = list.documents;
    parts.summary.textContent = t("docs.summary", {
      documents: stats.documents,
      chunks: stats.chunks,
    });
    parts.live.classList.toggle("active", busy());
    renderTable();
  } catch (exc) {
    ctx.failed(exc);
  }
}

// --- upload ----------------------------------------------------------------------------------

function dropZone(kbId) {
  const input = h("input", {
    type: "file",
    multiple: true,
    id: "file-input",
    class: "visually-hidden",
    onchange: () => {
      enqueue(kbId, [...input.files]);
      input.value = "";
    },
  });
  const zone = h(
    "div.dropzone",
    {
      "data-test": "dropzone",
      ondragover: (e) => {
        e.preventDefault();
        zone.classList.add("over");
      },
      ondragleave: () => zone.classList.remove("over"),
      ondrop: (e) => {
        e.preventDefault();
        zone.classList.remove("over");
        enqueue(kbId, [...(e.dataTransfer?.files || [])]);
      },
    },
    h("span", {}, t("docs.drop"), " "),
    h("label.button-like", { for: "file-input" }, t("docs.choose")),
    input,
  );
  return zone;
}

function enqueue(kbId, files) {
  for (const file of files) {
    // An empty file would only be refused by the server: say so at once, in our words.
    const empty = file.size === 0;
    uploads.push({
      kbId,
      file,
      state: empty ? "failed" : "waiting",
      progress: 0,
      error: empty ? new Error(t("upload.empty")) : null,
      docId: null,
    });
  }
  renderUploads();
  for (let i = 0; i < PARALLEL_UPLOADS; i += 1) drain();
}

let running = 0;

async function drain() {
  if (running >= PARALLEL_UPLOADS) return;
  const next = uploads.find((u) => u.state === "waiting");
  if (!next) return;
  running += 1;
  next.state = "uploading";
  renderUploads();
  try {
    const doc = await uploadFile(next.kbId, next.file, (fraction) => {
      next.progress = fraction;
      renderUploads();
    });
    next.progress = 1;
    next.state = doc.duplicate ? "duplicate" : "accepted";
    next.docId = doc.id;
  } catch (exc) {
    next.state = "failed";
    next.error = exc; // rendered in the language of the moment
  } finally {
    running -= 1;
    renderUploads();
    refresh();
    drain();
  }
}

function clearFinished() {
  for (let i = uploads.length - 1; i >= 0; i -= 1) {
    if (!["waiting", "uploading"].includes(uploads[i].state)) uploads.splice(i, 1);
  }
  renderUploads();
}

function renderUploads() {
  if (!parts) return;
  const mine = uploads.filter((u) => u.kbId === ctx.kbId);
  parts.uploads.hidden = !mine.length;
  const finished = mine.some((u) => !["waiting", "uploading"].includes(u.state));
  clear(
    parts.uploads,
    finished
      ? h(
          "li.uploads-head",
          {},
          h("button.link", { type: "button", onclick: clearFinished }, t("docs.clear_uploads")),
        )
      : null,
    mine.map((u) => {
      // Once accepted, the row follows the document through the worker.
      const doc = u.docId && docs.find((d) => d.id === u.docId);
      const text = {
        waiting: t("upload.uploading", { pct: 0 }),
        uploading: t("upload.uploading", { pct: Math.round(u.progress * 100) }),
        accepted: t("upload.accepted"),
        duplicate: t("upload.duplicate"),
        failed: u.error ? t("upload.failed", { message: errorText(u.error, "upload") }) : "",
      }[u.state];
      return h(
        `li.upload.upload-${u.state}`,
        { dataset: { file: u.file.name, state: u.state } },
        h("span.upload-name", {}, u.file.name),
        h("span.muted.small", {}, formatBytes(u.file.size)),
        progressBar(u.progress, null),
        h(
          "span.upload-state",
          { title: u.error ? serverText(u.error) : null },
          text,
          doc ? [" · ", badge(doc.status, label("status", doc.status))] : null,
          doc && BUSY.has(doc.status) && flightText(doc) ? [" · ", flightText(doc)] : null,
        ),
      );
    }),
  );
}

// --- table -----------------------------------------------------------------------------------

function renderTable() {
  if (!parts) return;
  renderUploads();
  if (!docs.length) {
    clear(parts.table, h("p.empty", {}, t(failedOnly ? "docs.empty_failed" : "docs.empty")));
    return;
  }
  const cols = [
    "docs.filename",
    "docs.status",
    "docs.progress",
    "docs.pages",
    "docs.chunks",
    "docs.size",
    "docs.uploaded",
    "docs.error",
    "docs.actions",
  ];
  clear(
    parts.table,
    h(
      "table.data",
      { "data-test": "doc-table" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          cols.map((k) => h("th", {}, t(k))),
        ),
      ),
      h("tbody", {}, docs.map(row)),
    ),
  );
}

function row(doc) {
  const warnings = (doc.warnings || []).map(warningText);
  return h(
    "tr",
    { dataset: { doc: doc.id, filename: doc.filename, status: doc.status } },
    h("td.filename", { title: doc.filename }, doc.filename),
    h("td", {}, badge(doc.status, label("status", doc.status))),
    h("td.flight.small", { "data-col": "progress" }, BUSY.has(doc.status) ? flight(doc) : "–"),
    h("td.num", { "data-col": "pages" }, doc.pages ?? "–"),
    h("td.num", { "data-col": "chunks" }, doc.chunks),
    h("td.num", {}, formatBytes(doc.size_bytes)),
    h("td.small", {}, formatDate(doc.created_at)),
    h(
      "td.problems",
      { "data-col": "problems" },
      doc.error ? h("div.error-text", {}, doc.error) : null,
      warnings.map((w) => h("div.warning-text.small", { "data-test": "doc-warning" }, w)),
    ),
    h(
      "td.actions",
      {},
      h(
        "button",
        { type: "button", "data-test": "open-chunks", onclick: () => showChunks(doc) },
        t("docs.open_chunks"),
      ),
      h(
        "button.danger",
        {
          type: "button",
          onclick: async () => {
            if (!(await confirmDialog(t("docs.confirm_delete", { name: doc.filename })))) return;
            try {
              await api.deleteDoc(doc.kb_id, doc.id);
              if (parts?.chunks.firstChild?.dataset.doc === doc.id) clear(parts.chunks);
              toast(t("docs.deleted_ok", { name: doc.filename }), "ok");
              await refresh();
            } catch (exc) {
              ctx.failed(exc);
            }
          },
        },
        t("docs.delete"),
      ),
    ),
  );
}

// The chunk list of one document, below the table (the table re-renders as it polls).
function showChunks(doc) {
  if (!parts) return;
  const panel = chunkPanel(ctx, doc, () => clear(parts.chunks));
  clear(parts.chunks, panel);
  panel.scrollIntoView({ block: "start" });
}

// --- in flight ---------------------------------------------------------------------------------

// Where a queued or processing document is: its place in the queue, or its stage and pages,
// and the server's estimate of the time left (absent until the worker's recent speed is known).
function flightParts(doc) {
  const where = [];
  if (doc.queue_position != null) {
    where.push(t("docs.queue_position", { position: doc.queue_position }));
  } else if (doc.stage) {
    where.push(label("stage", doc.stage));
    if (doc.pages_total) {
      where.push(t("docs.stage_pages", { done: doc.pages_done ?? 0, total: doc.pages_total }));
    }
  }
  const eta = doc.eta_s != null ? t("docs.eta", { eta: formatDuration(doc.eta_s) }) : null;
  return { where, eta };
}

function flightText(doc) {
  const { where, eta } = flightParts(doc);
  return [...where, eta].filter(Boolean).join(" · ");
}

// Stages that go page by page; later ones report the pages already read.
const PAGED = new Set(["parse", "ocr"]);

function flight(doc) {
  const { where, eta } = flightParts(doc);
  const pages =
    PAGED.has(doc.stage) && doc.pages_total ? (doc.pages_done ?? 0) / doc.pages_total : null;
  return [
    h("div", { "data-test": "doc-where" }, where.join(" · ") || "–"),
    pages != null ? progressBar(pages, null) : null,
    eta ? h("div.muted", { "data-test": "doc-eta" }, eta) : null,
  ];
}
