// Jobs: re-index and retrieval-evaluation jobs with progress, rate and ETA (ingestion jobs
// behind a filter); start a re-index or an evaluation of the current knowledge base; the index
// versions with a rollback; cancel a queued or running job. Opening a row shows its details:
// an evaluation's report, what a re-index did.

import { api } from "../api.js";
import { badge, clear, formatDate, formatDuration, h, poller, progressBar, toast } from "../dom.js";
import { label, t } from "../i18n.js";
import { EVAL_KIND, evalForm, evalPending } from "./jobs-eval.js";
import { versionsPanel } from "./jobs-versions.js";

const ACTIVE = new Set(["queued", "running", "processing"]);
const FILTERS = {
  main: (job) => job.kind !== "ingest",
  all: () => true,
  ingest: (job) => job.kind === "ingest",
};

let ctx = null;
let parts = null;
let jobs = [];
let stopPolling = null;
let versions = null;
let versionKey = "";
const view = { filter: "main", thisKb: true };
// Opened rows (job ids) stay open across refreshes and visits.
const opened = new Set();
const COLS = 10;

export function mount(el, context) {
  ctx = context;
  jobs = [];
  versionKey = "";
  parts = { table: h("div", { "data-test": "job-table-wrap" }) };
  const select = h(
    "select",
    {
      id: "job-filter",
      onchange: () => {
        view.filter = select.value;
        refresh();
      },
    },
    Object.keys(FILTERS).map((k) =>
      h("option", { value: k, selected: k === view.filter }, t(`jobs.filter.${k}`)),
    ),
  );
  const thisKb = h("input", {
    type: "checkbox",
    id: "jobs-this-kb",
    checked: view.thisKb,
    onchange: () => {
      view.thisKb = thisKb.checked;
      refresh();
    },
  });
  versions = ctx.kb ? versionsPanel(ctx, { onRollback: () => refresh() }) : null;
  clear(
    el,
    h("h1", {}, t("jobs.title")),
    ctx.kb
      ? h(
          "div.job-forms",
          {},
          reindexForm(ctx.kb),
          evalForm(ctx.kb, { failed: (exc) => ctx.failed(exc), onStarted: () => refresh() }),
        )
      : h("p.muted", {}, t("kb.pick_first")),
    versions ? versions.el : null,
    h(
      "div.toolbar",
      {},
      h("h2.toolbar-title", {}, t("jobs.list")),
      h("label", { for: "job-filter" }, t("jobs.filter")),
      select,
      h("label.check", { for: "jobs-this-kb" }, thisKb, t("jobs.this_kb")),
    ),
    parts.table,
  );
  if (versions) versions.load();
  stopPolling = poller(refresh, () => (jobs.some((j) => ACTIVE.has(j.status)) ? 1000 : 5000));
}

export function unmount() {
  if (stopPolling) stopPolling();
  stopPolling = null;
  parts = null;
  versions = null;
}

async function refresh() {
  if (!parts) return;
  const params = { limit: "200" };
  if (view.thisKb && ctx.kbId) params.kb_id = ctx.kbId;
  if (view.filter === "ingest") params.kind = "ingest";
  try {
    const body = await api.listJobs(params);
    if (!parts) return;
    followVersions(body.jobs);
    jobs = body.jobs.filter(FILTERS[view.filter]);
    render();
  } catch (exc) {
    ctx.failed(exc);
  }
}

// Re-index and rollback jobs change the versions: reload them when one starts or ends.
function followVersions(all) {
  if (!versions) return;
  const key = all
    .filter((j) => j.kind === "reindex" && j.kb_id === ctx.kbId)
    .map((j) => `${j.id}:${j.status}`)
    .join(",");
  if (key !== versionKey) {
    versionKey = key;
    versions.load();
  }
}

function reindexForm(kb) {
  const field = (id, key, attrs) =>
    h(
      "label.field",
      { for: id },
      h("span", {}, t(key)),
      h("input", { id, placeholder: t("jobs.optional"), ...attrs }),
    );
  const form = h(
    "form.card.reindex",
    {
      "data-test": "reindex-form",
      onsubmit: async (e) => {
        e.preventDefault();
        const body = {};
        const num = (id) => form.querySelector(`#${id}`).value.trim();
        if (num("chunk-tokens")) body.chunk_tokens = Number(num("chunk-tokens"));
        if (num("overlap-tokens")) body.overlap_tokens = Number(num("overlap-tokens"));
        if (num("embedding-model")) body.embedding_model = num("embedding-model");
        try {
          const job = await api.reindex(kb.id, body);
          toast(t("jobs.started", { version: job.version }), "ok");
          await refresh();
        } catch (exc) {
          ctx.failed(exc);
        }
      },
    },
    h("h2", {}, `${t("jobs.reindex")}: ${kb.name}`),
    h("p.muted.small", {}, t("jobs.reindex_lead")),
    h(
      "div.fields",
      {},
      field("chunk-tokens", "jobs.chunk_tokens", { type: "number", min: "32", max: "8192" }),
      field("overlap-tokens", "jobs.overlap_tokens", { type: "number", min: "0" }),
      field("embedding-model", "jobs.embedding_model", { type: "text" }),
      h("button.primary", { type: "submit" }, t("jobs.start")),
    ),
  );
  return form;
}

function render() {
  if (!parts) return;
  if (!jobs.length) {
    clear(parts.table, h("p.empty", {}, t("jobs.empty")));
    return;
  }
  const names = new Map(ctx.kbs.map((k) => [k.id, k.name]));
  const cols = [
    "jobs.kind",
    "jobs.kb",
    "jobs.status",
    "jobs.progress",
    "jobs.rate",
    "jobs.eta",
    "jobs.started_at",
    "jobs.finished_at",
    "jobs.error",
    "",
  ];
  clear(
    parts.table,
    h(
      "table.data.jobs",
      { "data-test": "job-table" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          cols.map((k) => h("th", {}, k ? t(k) : "")),
        ),
      ),
      h(
        "tbody",
        {},
        jobs.flatMap((job) =>
          opened.has(job.id) ? [row(job, names), detailRow(job)] : [row(job, names)],
        ),
      ),
    ),
  );
}

function toggle(job) {
  if (opened.has(job.id)) opened.delete(job.id);
  else opened.add(job.id);
  render();
}

// "v2", or "v1 (was v2)" for a switch that went back to an older version (a rollback).
function versionNote(result) {
  if (!result?.version) return null;
  const back = result.previous != null && result.previous > result.version;
  const text = back
    ? t("jobs.rolled_back", { version: result.version, previous: result.previous })
    : `v${result.version}`;
  return h("span.muted.small", {}, ` ${text}`);
}

function row(job, names) {
  const p = job.progress || {};
  const fraction = p.total
    ? p.done / p.total
    : job.status === "succeeded"
      ? 1
      : ACTIVE.has(job.status)
        ? null
        : 0;
  const counts = p.total ? `${p.done ?? 0} / ${p.total}` : "";
  const active = ACTIVE.has(job.status);
  const open = opened.has(job.id);
  return h(
    `tr.job-row${open ? ".open" : ""}`,
    {
      dataset: { job: job.id, kind: job.kind, status: job.status },
      // The whole row opens its details; its own buttons keep their meaning.
      onclick: (e) => {
        if (!e.target.closest("button, a, input, select")) toggle(job);
      },
    },
    h(
      "td.kind",
      {},
      h(
        "button.disclosure",
        {
          type: "button",
          "data-test": "job-open",
          "aria-expanded": open ? "true" : "false",
          title: t(open ? "jobs.close_details" : "jobs.open_details"),
          onclick: () => toggle(job),
        },
        open ? "▾" : "▸",
      ),
      label("kind", job.kind),
      versionNote(job.result),
      job.filename ? h("span.clip.small.muted", { title: job.filename }, job.filename) : null,
    ),
    // A name, or an id clipped to its start: the details show it whole.
    h(
      "td.small",
      { "data-col": "kb" },
      h("span.clip", { title: job.kb_id || null }, names.get(job.kb_id) || job.kb_id || "–"),
    ),
    h("td", {}, badge(job.status, label("status", job.status))),
    h("td.progress-cell", {}, progressBar(fraction, counts)),
    h("td.num.small", {}, p.rate_per_s ? t("jobs.per_s", { rate: p.rate_per_s.toFixed(1) }) : "–"),
    h("td.num.small", { "data-col": "eta" }, active ? formatDuration(p.eta_s) : "–"),
    h("td.small", {}, formatDate(job.started_at)),
    h("td.small", {}, formatDate(job.finished_at)),
    h(
      "td.problems",
      {},
      job.error ? h("div.error-text.clamp", { title: job.error }, job.error) : "",
    ),
    h(
      "td.actions",
      {},
      active && !job.cancel_requested
        ? h(
            "button.danger",
            {
              type: "button",
              onclick: async () => {
                try {
                  await api.cancelJob(job.id);
                  toast(t("jobs.cancelled_ok"), "ok");
                  await refresh();
                } catch (exc) {
                  ctx.failed(exc);
                }
              },
            },
            t("jobs.cancel"),
          )
        : null,
    ),
  );
}

function detailRow(job) {
  const names = new Map(ctx.kbs.map((k) => [k.id, k.name]));
  return h(
    "tr.job-detail",
    { dataset: { detailOf: job.id } },
    h(
      "td",
      { colSpan: COLS },
      details(job, names),
      job.kind === EVAL_KIND ? evalPending(job) : null,
    ),
  );
}

const pct = (x) => `${Math.round(x * 100)}%`;
// Nested results are shown as nested lists down to this depth, then as compact JSON.
const MAX_DEPTH = 3;

// Any JSON value the API sends, readable: scalars as text, lists of scalars joined, objects
// and lists of objects as nested definition lists.
function valueView(value, depth = 0) {
  if (value === null || value === undefined || value === "") return "–";
  if (typeof value === "boolean") return t(value ? "common.yes" : "common.no");
  if (typeof value === "number") return String(Number.isInteger(value) ? value : +value.toFixed(4));
  if (typeof value !== "object") return String(value);
  const scalars = Array.isArray(value) && value.every((v) => v === null || typeof v !== "object");
  if (scalars) return value.length ? value.map((v) => valueView(v, depth + 1)).join(", ") : "–";
  if (depth >= MAX_DEPTH) return h("code.json", {}, JSON.stringify(value));
  const entries = Array.isArray(value)
    ? value.map((v, i) => [`${i + 1}`, v])
    : Object.entries(value);
  if (!entries.length) return "–";
  return h(
    "dl.job-facts.nested",
    {},
    entries.map(([k, v]) => [h("dt", {}, k), h("dd", {}, valueView(v, depth + 1))]),
  );
}

// A job's fields, then what its kind says about itself (a re-index: the version, the one
// before it, the checks it passed or failed), then the rest of its result and its error.
function details(job, names) {
  const p = job.progress || {};
  const r = job.result || {};
  const facts = [
    [t("jobs.id"), h("code", {}, job.id)],
    [t("jobs.kind"), label("kind", job.kind)],
    [t("jobs.status"), badge(job.status, label("status", job.status))],
  ];
  if (job.kb_id) {
    const name = names.get(job.kb_id);
    facts.push([
      t("jobs.kb_id"),
      name ? [name, " ", h("code", {}, job.kb_id)] : h("code", {}, job.kb_id),
    ]);
  }
  if (job.filename) facts.push([t("jobs.filename"), job.filename]);
  if (job.document_id) facts.push([t("jobs.document"), h("code", {}, job.document_id)]);
  if (job.priority) facts.push([t("jobs.priority"), label("priority", job.priority)]);
  if (job.queue_position != null)
    facts.push([t("jobs.queue_position"), String(job.queue_position)]);
  if (job.stage && ACTIVE.has(job.status)) facts.push([t("jobs.stage"), label("stage", job.stage)]);
  if (job.pages_total) {
    facts.push([
      t("jobs.pages"),
      t("jobs.progress_detail", { done: job.pages_done ?? 0, total: job.pages_total }),
    ]);
  }
  if (p.total) {
    const parts = [t("jobs.progress_detail", { done: p.done ?? 0, total: p.total })];
    if (p.rate_per_s) parts.push(t("jobs.per_s", { rate: p.rate_per_s.toFixed(1) }));
    if (ACTIVE.has(job.status) && p.eta_s != null) parts.push(formatDuration(p.eta_s));
    facts.push([t("jobs.progress"), parts.join(" · ")]);
  }
  facts.push([t("jobs.created_at"), formatDate(job.created_at)]);
  if (job.started_at) facts.push([t("jobs.started_at"), formatDate(job.started_at)]);
  if (job.finished_at) facts.push([t("jobs.finished_at"), formatDate(job.finished_at)]);
  facts.push([t("jobs.attempts"), String(job.attempts ?? 0)]);
  if (job.cancel_requested) facts.push([t("jobs.cancel_requested"), t("common.yes")]);
  if (job.request_id) facts.push([t("jobs.request_id"), h("code", {}, job.request_id)]);
  if (job.payload && Object.keys(job.payload).length) {
    facts.push([t("jobs.payload"), valueView(job.payload)]);
  }
  if (r.version != null) {
    const previous = r.previous != null ? ` (${t("jobs.previous", { version: r.previous })})` : "";
    facts.push([t("jobs.version"), `v${r.version}${previous}`]);
  }
  if (r.checks) {
    const c = r.checks;
    const summary = c.ok
      ? t("jobs.checks_ok", {
          chunks: c.sql_chunks ?? "–",
          dense: c.dense_hit_rate != null ? pct(c.dense_hit_rate) : "–",
          lexical: c.lexical_hit_rate != null ? pct(c.lexical_hit_rate) : "–",
        })
      : t("jobs.checks_failed", { reason: c.reason || "–" });
    facts.push([t("jobs.checks"), summary]);
  }
  if (r.pruned?.length) facts.push([t("jobs.pruned"), r.pruned.map((n) => `v${n}`).join(", ")]);
  // An evaluation's report is its own table below (its `table` is the same as plain text);
  // the rest of any result is listed here.
  const shown = new Set(["version", "previous", "checks", "pruned", "kb_id"]);
  if (job.kind === EVAL_KIND) for (const key of ["modes", "table"]) shown.add(key);
  const rest = Object.fromEntries(Object.entries(r).filter(([k]) => !shown.has(k)));
  if (Object.keys(rest).length) facts.push([t("jobs.result"), valueView(rest)]);
  if (job.error) facts.push([t("jobs.error_full"), h("div.error-text", {}, job.error)]);
  return h(
    "dl.job-facts",
    { "data-test": "job-details", "aria-label": t("jobs.details") },
    facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
  );
}
