// Analytics of the current knowledge base (admin): volume, answer rate, refusals, ratings,
// hand-offs and latency over a period; the top questions (clustered by the server); the
// unanswered and down-rated questions. From a question an admin makes a golden-set row (a
// passage it cited) or a curated answer, returned verbatim when the question is asked again.

import { errorFrom, request, session, url } from "../api.js";
import { clear, formatDate, h, toast } from "../dom.js";
import { t } from "../i18n.js";

const enc = encodeURIComponent;
const PERIODS = ["7", "30", "90", "all"];
const call = {
  summary: (q) => request("GET", `v1/analytics/summary?${q}`),
  top: (q) => request("GET", `v1/analytics/top-questions?${q}&limit=10`),
  questions: (q, kind) => request("GET", `v1/analytics/questions?${q}&kind=${kind}&limit=20`),
  golden: (id, chunkId) =>
    request("POST", `v1/analytics/questions/${enc(id)}/golden`, { chunk_id: chunkId }),
  curate: (id, answer) => request("POST", `v1/analytics/questions/${enc(id)}/curated`, { answer }),
};

let ctx = null;
let root = null; // null once unmounted: late answers draw nothing
let period = "30";
let data = null; // {summary, top, unanswered, downrated}
let open = null; // {id, action: "golden" | "curate"}: the question whose form is shown

export function mount(el, context) {
  ctx = context;
  root = el;
  data = null;
  open = null;
  if (!ctx.kb) {
    clear(el, h("h1", {}, t("nav.analytics")), h("p.empty", {}, t("kb.pick_first")));
    return;
  }
  render();
  load();
}

export function unmount() {
  root = null;
}

function query() {
  const params = new URLSearchParams({ kb: ctx.kbId });
  if (period !== "all") {
    const since = new Date(Date.now() - Number(period) * 86_400_000);
    params.set("since", since.toISOString());
  }
  return params.toString();
}

async function load() {
  const q = query();
  try {
    const [summary, top, unanswered, downrated] = await Promise.all([
      call.summary(q),
      call.top(q),
      call.questions(q, "unanswered"),
      call.questions(q, "downrated"),
    ]);
    data = {
      summary,
      top: top.clusters,
      unanswered: unanswered.questions,
      downrated: downrated.questions,
    };
  } catch (exc) {
    ctx.failed(exc);
    return;
  }
  render();
}

function render() {
  if (!root) return;
  const picker = h(
    "select",
    {
      "data-test": "period",
      "aria-label": t("an.period"),
      onchange: (e) => {
        period = e.target.value;
        load();
      },
    },
    PERIODS.map((p) =>
      h(
        "option",
        { value: p, selected: p === period },
        p === "all" ? t("an.all_time") : t("an.last_days", { days: p }),
      ),
    ),
  );
  const head = h(
    "div.view-head",
    {},
    h("h1", {}, t("an.title", { kb: ctx.kb.name })),
    h("div.toolbar", {}, picker, h("button", { type: "button", onclick: load }, t("an.refresh")), downloadGolden()),
  );
  if (!data) {
    clear(root, head, h("p.muted", {}, t("an.loading")));
    return;
  }
  clear(
    root,
    head,
    summaryEl(data.summary),
    h("h2", {}, t("an.top")),
    topEl(data.top),
    h("h2", {}, t("an.unanswered")),
    questionsEl(data.unanswered, "unanswered"),
    h("h2", {}, t("an.downrated")),
    questionsEl(data.downrated, "downrated"),
  );
}

function percent(rate) {
  return rate == null ? "–" : `${Math.round(rate * 1000) / 10}%`;
}

function summaryEl(s) {
  const stat = (name, value) =>
    h(
      "div.card.stat",
      { dataset: { stat: name } },
      h("div.muted.small", {}, t(`an.${name}`)),
      h("div.stat-value", {}, String(value)),
    );
  const ms = (v) => (v == null ? "–" : `${v} ms`);
  return h(
    "div.stats",
    { "data-test": "summary" },
    stat("volume", s.volume),
    stat("answered_rate", percent(s.answered_rate)),
    stat("refused", s.refused),
    stat("grounded_rate", percent(s.grounded_rate)),
    stat("up", s.up),
    stat("down", s.down),
    stat("handoffs", s.handoffs),
    stat("latency", `${ms(s.latency_p50_ms)} / ${ms(s.latency_p95_ms)}`),
  );
}

function topEl(clusters) {
  if (!clusters.length) return h("p.empty", {}, t("an.none"));
  return h(
    "ol.top-questions",
    { "data-test": "top-questions" },
    clusters.map((c) =>
      h(
        "li",
        { title: c.examples.join("\n") },
        h("span.top-question", {}, c.representative),
        " ",
        h("span.badge", {}, t("an.times", { n: c.count })),
        " ",
        h("span.muted.small", {}, t("an.cluster_answered", { rate: percent(c.answered_rate) })),
      ),
    ),
  );
}

function questionsEl(rows, kind) {
  if (!rows.length) return h("p.empty", { "data-test": kind }, t("an.none"));
  return h("ul.question-list", { "data-test": kind }, rows.map(questionEl));
}

function questionEl(q) {
  const actions = h(
    "div.question-actions",
    {},
    h(
      "button",
      { type: "button", "data-test": "make-golden", onclick: () => toggle(q.id, "golden") },
      t("an.golden"),
    ),
    h(
      "button",
      { type: "button", "data-test": "curate", onclick: () => toggle(q.id, "curate") },
      t("an.curate"),
    ),
  );
  const meta = [formatDate(q.created_at), q.channel];
  if (q.rating) meta.push(t(`an.rating_${q.rating}`));
  if (q.handoff_requested) meta.push(t("an.handed_off"));
  if (!q.covered) meta.push(t("an.not_covered"));
  return h(
    "li.question",
    { dataset: { answerId: q.id } },
    h("div.question-text", {}, q.question),
    h("div.muted.small.clamp", {}, q.answer || ""),
    q.comment ? h("blockquote.comment", { "data-test": "comment" }, q.comment) : null,
    h("div.muted.small", {}, meta.join(" · ")),
    actions,
    open?.id === q.id ? (open.action === "golden" ? goldenForm(q) : curateForm(q)) : null,
  );
}

function toggle(id, action) {
  open = open?.id === id && open.action === action ? null : { id, action };
  render();
}

function goldenForm(q) {
  const cited = q.citations.filter((c) => c.cited);
  const choices = (cited.length ? cited : q.citations).filter((c) => c.chunk_id != null);
  if (!choices.length) return h("p.muted", { "data-test": "golden-form" }, t("an.no_passage"));
  const select = h(
    "select",
    { "data-test": "golden-passage", "aria-label": t("an.pick_passage") },
    choices.map((c) =>
      h("option", { value: String(c.chunk_id) }, `${c.filename} · ${t("cite.page", { page: c.page })}`),
    ),
  );
  return h(
    "form.inline-form",
    {
      "data-test": "golden-form",
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          await call.golden(q.id, Number(select.value));
          toast(t("an.golden_ok"), "ok");
          open = null;
          render();
        } catch (exc) {
          ctx.failed(exc);
        }
      },
    },
    h("label", {}, t("an.pick_passage"), " ", select),
    h("button.primary", { type: "submit" }, t("an.save")),
  );
}

function curateForm(q) {
  const text = h("textarea", {
    rows: 4,
    maxlength: 20000,
    required: true,
    "data-test": "curated-answer",
    "aria-label": t("an.curate_prompt"),
  });
  text.value = q.answer || "";
  return h(
    "form.inline-form",
    {
      "data-test": "curate-form",
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          await call.curate(q.id, text.value);
          toast(t("an.curated_ok"), "ok");
          open = null;
          render();
        } catch (exc) {
          ctx.failed(exc);
        }
      },
    },
    h("label", {}, t("an.curate_prompt")),
    text,
    h("button.primary", { type: "submit" }, t("an.save")),
  );
}

// The golden set as the JSONL `rag eval` reads, saved as a file (fetched with the key).
function downloadGolden() {
  return h(
    "button",
    {
      type: "button",
      "data-test": "download-golden",
      onclick: async () => {
        try {
          const headers = session.key ? { Authorization: `Bearer ${session.key}` } : {};
          const resp = await fetch(url(`v1/knowledge-bases/${enc(ctx.kbId)}/golden`), { headers });
          if (!resp.ok) {
            const body = await resp.json().catch(() => null);
            throw errorFrom(resp.status, body, resp.statusText);
          }
          const href = URL.createObjectURL(await resp.blob());
          const link = h("a", { href, download: `golden-${ctx.kb.name}.jsonl` });
          document.body.append(link);
          link.click();
          link.remove();
          setTimeout(() => URL.revokeObjectURL(href), 10_000);
        } catch (exc) {
          ctx.failed(exc);
        }
      },
    },
    t("an.download_golden"),
  );
}
