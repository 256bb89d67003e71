// Retrieval evaluation on the Jobs page: a form that reads a JSONL golden set in the browser
// and queues POST .../eval with it, and the report of a finished evaluation job (one row per
// mode: hit@1/5/10, MRR, nDCG@10, latency p50/p95).

import { api } from "../api.js";
import { h, toast } from "../dom.js";
import { errorText } from "../errors.js";
import { t } from "../i18n.js";

export const EVAL_KIND = "eval";
// The modes POST .../eval accepts (rag/eval_run.py); hybrid+rerank loads the cross-encoder
// on the server, so it is not ticked by default.
const MODES = ["lexical", "dense", "hybrid", "hybrid+rerank"];
const DEFAULT_MODES = new Set(["lexical", "dense", "hybrid"]);
const KS = ["1", "5", "10"];

export function modeLabel(mode) {
  return t(`mode.${mode.replace("+", "_")}`);
}

// The golden set as the API takes it inline: one JSON object a line, blank lines skipped.
// Each needs a question and evidence (answer_excerpt, or page/pages with an optional filename);
// the server checks the rest and answers 422 before anything is queued.
export function parseGolden(text) {
  const items = [];
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (!line) return;
    let item;
    try {
      item = JSON.parse(line);
    } catch {
      throw new Error(t("eval.bad_json", { line: i + 1 }));
    }
    if (!item || typeof item !== "object" || Array.isArray(item)) {
      throw new Error(t("eval.not_object", { line: i + 1 }));
    }
    if (!String(item.question ?? "").trim()) {
      throw new Error(t("eval.no_question", { line: i + 1 }));
    }
    const pages = Array.isArray(item.pages) ? item.pages.length : item.page != null;
    if (!item.answer_excerpt && !pages) {
      throw new Error(t("eval.no_evidence", { line: i + 1 }));
    }
    items.push(item);
  });
  if (!items.length) throw new Error(t("eval.empty_set"));
  return items;
}

// The form: golden-set file, modes, start. `onStarted(job)` after the job is queued.
export function evalForm(kb, { failed, onStarted }) {
  let golden = null;
  const status = h(
    "p.golden-status.small.muted",
    { "data-test": "golden-status", "aria-live": "polite" },
    t("eval.no_file"),
  );
  const submit = h(
    "button.primary",
    { type: "submit", "data-test": "eval-start", disabled: true },
    t("eval.start"),
  );
  const boxes = MODES.map((mode) =>
    h("input", {
      type: "checkbox",
      name: "eval-mode",
      value: mode,
      id: `eval-mode-${mode.replace("+", "-")}`,
      checked: DEFAULT_MODES.has(mode),
      onchange: () => update(),
    }),
  );
  const update = () => {
    submit.disabled = !golden || !boxes.some((b) => b.checked);
  };
  const say = (text, kind) => {
    status.textContent = text;
    status.className = `golden-status small ${kind === "error" ? "error-text" : "muted"}`;
    status.dataset.state = kind;
  };

  // The browser's own file button speaks the browser's language: a label of ours instead.
  const fileName = h("span.file-name.small", { "data-test": "golden-name" }, t("eval.no_file_name"));
  const file = h("input", {
    type: "file",
    id: "golden-file",
    class: "visually-hidden",
    accept: ".jsonl,.ndjson,.json,.txt,application/json,text/plain",
    onchange: async () => {
      golden = null;
      update();
      const chosen = file.files[0];
      fileName.textContent = chosen ? chosen.name : t("eval.no_file_name");
      if (!chosen) {
        say(t("eval.no_file"), "empty");
        return;
      }
      try {
        golden = parseGolden(await chosen.text());
        say(t("eval.file_ok", { count: golden.length, name: chosen.name }), "ok");
      } catch (exc) {
        say(t("eval.file_bad", { name: chosen.name, message: exc.message }), "error");
      }
      update();
    },
  });

  const form = h(
    "form.card.eval-form",
    {
      "data-test": "eval-form",
      onsubmit: async (e) => {
        e.preventDefault();
        const modes = boxes.filter((b) => b.checked).map((b) => b.value);
        if (!golden || !modes.length) return;
        submit.disabled = true;
        try {
          const job = await api.evaluate(kb.id, { golden, modes });
          toast(t("eval.started", { count: golden.length, modes: modes.length }), "ok");
          await onStarted(job);
        } catch (exc) {
          if (exc.status && exc.status !== 401) say(errorText(exc), "error");
          failed(exc);
        } finally {
          update();
        }
      },
    },
    h("h2", {}, `${t("eval.title")}: ${kb.name}`),
    h("p.muted.small", {}, t("eval.lead")),
    h(
      "div.fields",
      {},
      h(
        "div.field",
        {},
        h("span", {}, t("eval.golden")),
        h(
          "div.file-pick",
          {},
          h("label.button-like", { for: "golden-file" }, t("eval.choose")),
          fileName,
          file,
        ),
      ),
      h(
        "fieldset.modes",
        { "data-test": "eval-modes" },
        h("legend", {}, t("eval.modes")),
        boxes.map((box) =>
          h(
            "label.check",
            { for: box.id, title: box.value === "hybrid+rerank" ? t("eval.rerank_note") : null },
            box,
            modeLabel(box.value),
          ),
        ),
      ),
      submit,
    ),
    status,
    h(
      "p.muted.small.format",
      {},
      t("eval.format"),
      " ",
      h("code", {}, '{"question": "…", "answer_excerpt": "…"}'),
      " ",
      t("eval.format_or"),
      " ",
      h("code", {}, '{"question": "…", "filename": "a.pdf", "page": 3}'),
    ),
  );
  return form;
}

function metric(key, value, digits) {
  const ok = typeof value === "number" && Number.isFinite(value);
  return h(
    "td.num",
    { "data-metric": key, "data-value": ok ? String(value) : "" },
    ok ? value.toFixed(digits) : "–",
  );
}

// The report of a succeeded evaluation job (its `result`): a table, mode × metric.
export function evalReport(job) {
  const result = job.result || {};
  const modes = Object.entries(result.modes || {});
  if (!modes.length) return h("p.muted.small", {}, t("eval.no_report"));
  const head = [
    t("eval.mode"),
    ...KS.map((k) => `hit@${k}`),
    "MRR",
    "nDCG@10",
    t("eval.p50"),
    t("eval.p95"),
    t("eval.missed"),
  ];
  return h(
    "div.eval-report",
    { "data-test": "eval-report" },
    h(
      "p.small.muted",
      {},
      t("eval.report_head", {
        questions: result.questions ?? "–",
        // "inline": sent with the request, as the console does; else the server-side file.
        golden: result.golden === "inline" ? t("eval.inline") : (result.golden ?? "–"),
      }),
    ),
    h(
      "table.data.report",
      { "data-test": "eval-table" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          head.map((text) => h("th", {}, text)),
        ),
      ),
      h(
        "tbody",
        {},
        modes.map(([mode, r]) =>
          h(
            "tr",
            { dataset: { mode } },
            h("th", { scope: "row" }, modeLabel(mode)),
            KS.map((k) => metric(`hit@${k}`, r.hit_at?.[k], 3)),
            metric("mrr", r.mrr, 3),
            metric("ndcg@10", r.ndcg_at_10, 3),
            metric("p50_ms", r.latency_p50_ms, 1),
            metric("p95_ms", r.latency_p95_ms, 1),
            h(
              "td.small.missed",
              { "data-metric": "misses" },
              r.misses?.length ? r.misses.join(", ") : t("eval.none_missed"),
            ),
          ),
        ),
      ),
    ),
  );
}

// What an opened evaluation row shows while it is not (or never will be) finished.
export function evalPending(job) {
  if (job.status === "succeeded") return evalReport(job);
  const key = job.status === "failed" || job.status === "cancelled" ? "eval.no_report" : "eval.wait";
  return h("p.muted.small", {}, t(key));
}
