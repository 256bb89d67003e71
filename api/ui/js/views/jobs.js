// Jobs: re-index (and evaluation, where the server runs them as jobs) with progress, rate and
// ETA; start a re-index of the current knowledge base; cancel a queued or running job.

import { api } from "../api.js";
import { badge, clear, formatDate, formatDuration, h, poller, progressBar, toast } from "../dom.js";
import { label, t } from "../i18n.js";

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
const view = { filter: "main", thisKb: true };

export function mount(el, context) {
  ctx = context;
  jobs = [];
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
  clear(
    el,
    h("h1", {}, t("jobs.title")),
    ctx.kb ? reindexForm(ctx.kb) : h("p.muted", {}, t("kb.pick_first")),
    h(
      "div.toolbar",
      {},
      h("label", { for: "job-filter" }, t("jobs.filter")),
      select,
      h("label.check", { for: "jobs-this-kb" }, thisKb, t("jobs.this_kb")),
    ),
    parts.table,
  );
  stopPolling = poller(refresh, () => (jobs.some((j) => ACTIVE.has(j.status)) ? 1000 : 5000));
}

export function unmount() {
  if (stopPolling) stopPolling();
  stopPolling = null;
  parts = null;
}

async function refresh() {
  if (!parts) return;
  const params = { limit: "200" };
  if (view.thisKb && ctx.kbId) params.kb_id = ctx.kbId;
  if (view.filter === "ingest") params.kind = "ingest";
  try {
    const body = await api.listJobs(params);
    jobs = body.jobs.filter(FILTERS[view.filter]);
    render();
  } catch (exc) {
    ctx.failed(exc);
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
      "table.data",
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
        jobs.map((job) => row(job, names)),
      ),
    ),
  );
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
  return h(
    "tr",
    { dataset: { job: job.id, kind: job.kind, status: job.status } },
    h(
      "td",
      {},
      label("kind", job.kind),
      job.result?.version ? h("span.muted.small", {}, ` v${job.result.version}`) : null,
    ),
    h("td.small", {}, names.get(job.kb_id) || job.kb_id || "–"),
    h("td", {}, badge(job.status, label("status", job.status))),
    h("td.progress-cell", {}, progressBar(fraction, counts)),
    h("td.num.small", {}, p.rate_per_s ? t("jobs.per_s", { rate: p.rate_per_s.toFixed(1) }) : "–"),
    h("td.num.small", { "data-col": "eta" }, active ? formatDuration(p.eta_s) : "–"),
    h("td.small", {}, formatDate(job.started_at)),
    h("td.small", {}, formatDate(job.finished_at)),
    h("td.problems", {}, job.error ? h("div.error-text", {}, job.error) : ""),
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
