// Assistants of the current knowledge base: list and create, edit the selected one's settings,
// its version history with restore, and a playground that shows the composed prompt, the
// retrieved passages and the answer side by side.

import { request } from "../api.js";
import { clear, confirmDialog, formatDate, h, toast } from "../dom.js";
import { t } from "../i18n.js";

const enc = encodeURIComponent;
const call = {
  list: (kb) => request("GET", `v1/assistants?kb=${enc(kb)}`),
  create: (body) => request("POST", "v1/assistants", body),
  update: (id, body) => request("PATCH", `v1/assistants/${enc(id)}`, body),
  remove: (id) => request("DELETE", `v1/assistants/${enc(id)}`),
  versions: (id) => request("GET", `v1/assistants/${enc(id)}/versions`),
  restore: (id, v) => request("POST", `v1/assistants/${enc(id)}/versions/${v}/restore`),
  playground: (id, question) =>
    request("POST", `v1/assistants/${enc(id)}/playground`, { question }),
};

let ctx = null;
let root = null; // null once unmounted: late answers draw nothing
let assistants = [];
let selectedId = null;

export function mount(el, context) {
  ctx = context;
  root = el;
  assistants = [];
  selectedId = null;
  if (!ctx.kb) {
    clear(el, h("h1", {}, t("nav.assistants")), h("p.empty", {}, t("kb.pick_first")));
    return;
  }
  refresh();
}

export function unmount() {
  root = null;
}

async function refresh(select) {
  try {
    assistants = (await call.list(ctx.kbId)).assistants;
  } catch (exc) {
    ctx.failed(exc);
    return;
  }
  if (select) selectedId = select;
  if (!assistants.some((a) => a.id === selectedId)) selectedId = assistants[0]?.id ?? null;
  render();
}

function render() {
  if (!root) return;
  const current = assistants.find((a) => a.id === selectedId) || null;
  clear(
    root,
    h("div.view-head", {}, h("h1", {}, t("assistants.title", { kb: ctx.kb.name }))),
    h(
      "div.assistants-layout",
      {},
      h("aside.card.assistant-side", {}, createForm(), list()),
      current
        ? h("div.assistant-main", {}, settingsForm(current), history(current))
        : h("p.empty", {}, t("assistants.empty")),
      current ? playground(current) : null,
    ),
  );
}

function createForm() {
  const name = h("input", {
    name: "assistant-name",
    required: true,
    maxlength: "200",
    placeholder: t("assistants.name"),
  });
  return h(
    "form.inline-form",
    {
      "data-test": "assistant-create",
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          const made = await call.create({ name: name.value.trim(), kb: ctx.kbId });
          toast(t("assistants.created_ok", { name: made.name }), "ok");
          await refresh(made.id);
        } catch (exc) {
          ctx.failed(exc);
        }
      },
    },
    name,
    h("button.primary", { type: "submit" }, t("assistants.create")),
  );
}

function list() {
  if (!assistants.length) return null;
  return h(
    "ul.assistant-list",
    { "data-test": "assistant-list" },
    assistants.map((a) =>
      h(
        "li",
        {},
        h(
          `button.link${a.id === selectedId ? ".active" : ""}`,
          {
            type: "button",
            dataset: { assistant: a.name },
            onclick: () => {
              selectedId = a.id;
              render();
            },
          },
          a.name,
          h("span.muted.small", {}, ` v${a.version}`),
        ),
      ),
    ),
  );
}

// --- settings ----------------------------------------------------------------------------------

function field(label, control) {
  return h("label.field", {}, label, control);
}

function text(name, value, rows, maxlength) {
  return h("textarea", { name, rows: String(rows), maxlength: String(maxlength) }, value ?? "");
}

function number(name, value, attrs) {
  return h("input", { name, type: "number", value: value ?? "", ...attrs });
}

function choice(name, value, options) {
  return h(
    "select",
    { name },
    options.map(([v, label]) => h("option", { value: v, selected: v === value }, label)),
  );
}

// An empty box means "the default" (null); a number box gives a number.
function numberOf(form, name) {
  const raw = form.elements[name].value.trim();
  return raw === "" ? null : Number(raw);
}

function textOf(form, name) {
  const raw = form.elements[name].value;
  return raw.trim() === "" ? null : raw;
}

function settingsForm(a) {
  const s = a.settings;
  const r = s.retrieval;
  const p = s.sampling;
  const def = t("assistants.default");
  const rerank = r.rerank === null ? "" : String(r.rerank);
  const form = h(
    "form.card.assistant-form",
    {
      "data-test": "assistant-form",
      onsubmit: async (e) => {
        e.preventDefault();
        const mode = form.elements.mode.value;
        const rr = form.elements.rerank.value;
        const body = {
          system_prompt: textOf(form, "system_prompt"),
          greeting: form.elements.greeting.value,
          refusal_text: textOf(form, "refusal_text"),
          language: form.elements.language.value,
          retrieval: {
            mode: mode || null,
            top_k: numberOf(form, "top_k"),
            rerank: rr === "" ? null : rr === "true",
            threshold: numberOf(form, "threshold"),
          },
          sampling: {
            temperature: numberOf(form, "temperature"),
            top_p: numberOf(form, "top_p"),
            max_tokens: numberOf(form, "max_tokens"),
          },
        };
        try {
          const saved = await call.update(a.id, body);
          toast(t("assistants.saved_ok", { name: saved.name, version: saved.version }), "ok");
          await refresh(saved.id);
        } catch (exc) {
          ctx.failed(exc);
        }
      },
    },
    h("h2", {}, a.name, h("span.muted.small", {}, ` · ${t("assistants.version")} ${a.version}`)),
    field(t("assistants.system_prompt"), text("system_prompt", s.system_prompt, 6, 8000)),
    h("p.muted.small", {}, t("assistants.system_prompt_hint")),
    field(t("assistants.greeting"), text("greeting", s.greeting, 2, 2000)),
    field(t("assistants.refusal_text"), text("refusal_text", s.refusal_text, 2, 2000)),
    h(
      "div.fields",
      {},
      field(
        t("assistants.language"),
        choice("language", s.language, [
          ["auto", t("assistants.language_auto")],
          ["zh", "中文"],
          ["en", "English"],
        ]),
      ),
      field(
        t("assistants.mode"),
        choice("mode", r.mode ?? "", [
          ["", def],
          ["hybrid", t("mode.hybrid")],
          ["dense", t("mode.dense")],
          ["lexical", t("mode.lexical")],
        ]),
      ),
      field(t("assistants.top_k"), number("top_k", r.top_k, { min: "1", max: "50" })),
      field(
        t("assistants.rerank"),
        choice("rerank", rerank, [
          ["", def],
          ["true", t("assistants.on")],
          ["false", t("assistants.off")],
        ]),
      ),
      field(
        t("assistants.threshold"),
        number("threshold", r.threshold, { min: "0", max: "1", step: "0.01" }),
      ),
    ),
    h(
      "div.fields",
      {},
      field(
        t("assistants.temperature"),
        number("temperature", p.temperature, { min: "0", max: "2", step: "0.05" }),
      ),
      field(
        t("assistants.top_p"),
        number("top_p", p.top_p, { min: "0.01", max: "1", step: "0.01" }),
      ),
      field(
        t("assistants.max_tokens"),
        number("max_tokens", p.max_tokens, { min: "1", max: "32768" }),
      ),
    ),
    h("p.muted.small", {}, t("assistants.defaults_hint")),
    h(
      "div.toolbar",
      {},
      h("button.primary", { type: "submit", "data-test": "assistant-save" }, t("assistants.save")),
      h(
        "button.danger",
        {
          type: "button",
          onclick: async () => {
            if (!(await confirmDialog(t("assistants.confirm_delete", { name: a.name })))) return;
            try {
              await call.remove(a.id);
              toast(t("assistants.deleted_ok", { name: a.name }), "ok");
              await refresh();
            } catch (exc) {
              ctx.failed(exc);
            }
          },
        },
        t("assistants.delete"),
      ),
    ),
  );
  return form;
}

// --- versions ----------------------------------------------------------------------------------

function history(a) {
  const box = h("div.card.assistant-versions", { "data-test": "assistant-versions" });
  clear(box, h("h2", {}, t("assistants.history")), h("p.muted", {}, t("common.loading")));
  call.versions(a.id).then(
    (body) => {
      if (!root) return;
      const rows = body.versions.map((v) =>
        h(
          "tr",
          { dataset: { version: String(v.version) } },
          h("td.num", {}, v.version),
          h("td.small", {}, formatDate(v.created_at)),
          h("td.small", {}, v.actor),
          h("td.small.clip", {}, v.settings.system_prompt || "–"),
          h(
            "td.actions",
            {},
            v.version === a.version
              ? h("span.muted.small", {}, t("assistants.current"))
              : h(
                  "button",
                  {
                    type: "button",
                    onclick: async () => {
                      try {
                        const saved = await call.restore(a.id, v.version);
                        toast(
                          t("assistants.restored_ok", { from: v.version, version: saved.version }),
                          "ok",
                        );
                        await refresh(saved.id);
                      } catch (exc) {
                        ctx.failed(exc);
                      }
                    },
                  },
                  t("assistants.restore"),
                ),
          ),
        ),
      );
      const head = [
        "assistants.version",
        "assistants.saved",
        "assistants.by",
        "assistants.system_prompt",
        "",
      ];
      clear(
        box,
        h("h2", {}, t("assistants.history")),
        h(
          "table.data",
          {},
          h("thead", {}, h("tr", {}, head.map((k) => h("th", {}, k ? t(k) : "")))),
          h("tbody", {}, rows),
        ),
      );
    },
    (exc) => ctx.failed(exc),
  );
  return box;
}

// --- playground --------------------------------------------------------------------------------

function playground(a) {
  const question = h("input", {
    name: "playground-question",
    required: true,
    maxlength: "20000",
    placeholder: t("assistants.playground_question"),
  });
  const run = h("button.primary", { type: "submit" }, t("assistants.playground_run"));
  const prompt = h("div.pg-pane", { "data-test": "playground-prompt" });
  const passages = h("div.pg-pane", { "data-test": "playground-passages" });
  const answer = h("div.pg-pane", { "data-test": "playground-answer" });
  const panes = [
    [prompt, "assistants.pg_prompt"],
    [passages, "assistants.pg_passages"],
    [answer, "assistants.pg_answer"],
  ];
  const columns = h(
    "div.pg-columns",
    {},
    panes.map(([pane, key]) => h("section.card", {}, h("h3", {}, t(key)), pane)),
  );
  const form = h(
    "form.inline-form",
    {
      "data-test": "playground",
      onsubmit: async (e) => {
        e.preventDefault();
        run.disabled = true;
        for (const [pane] of panes) clear(pane, h("p.muted", {}, t("common.loading")));
        try {
          const out = await call.playground(a.id, question.value.trim());
          if (!root) return;
          showPrompt(prompt, out);
          showPassages(passages, out.passages);
          showAnswer(answer, out);
        } catch (exc) {
          for (const [pane] of panes) clear(pane);
          ctx.failed(exc);
        } finally {
          run.disabled = false;
        }
      },
    },
    question,
    run,
  );
  return h(
    "section.assistant-playground",
    {},
    h("h2", {}, t("assistants.playground")),
    h("p.muted.small", {}, t("assistants.playground_hint")),
    form,
    columns,
  );
}

function showPrompt(pane, out) {
  clear(
    pane,
    out.settings.covered ? null : h("p.notice", {}, t("assistants.pg_not_sent")),
    out.prompt.map((m) =>
      h("div.pg-message", {}, h("div.msg-who", {}, m.role), h("pre.passage", {}, m.content)),
    ),
  );
}

function showPassages(pane, list) {
  if (!list.length) {
    clear(pane, h("p.empty", {}, t("assistants.pg_no_passages")));
    return;
  }
  clear(
    pane,
    list.map((p, i) =>
      h(
        "div.pg-passage",
        {},
        h(
          "div.small",
          {},
          h("strong", {}, `[${i + 1}] ${p.filename}`),
          ` · ${t("assistants.pg_page", { page: p.page })}`,
          ` · ${t("assistants.pg_score")} ${p.score.toFixed(3)}`,
          p.relevance != null
            ? ` · ${t("assistants.pg_relevance")} ${p.relevance.toFixed(3)}`
            : "",
        ),
        h("pre.passage", {}, p.text),
      ),
    ),
  );
}

function showAnswer(pane, out) {
  const ans = out.answer;
  const cited = ans.citations.filter((c) => c.cited);
  const s = out.settings;
  clear(
    pane,
    h("p.pg-answer-text", {}, ans.answer ?? ""),
    cited.length
      ? h(
          "ul.small",
          {},
          cited.map((c) => {
            const page = t("assistants.pg_page", { page: c.page });
            return h("li", {}, `[${c.index}] ${c.filename} · ${page}`);
          }),
        )
      : null,
    h(
      "p.muted.small",
      {},
      t("assistants.pg_facts", {
        route: s.route,
        model: ans.model ?? "–",
        top_k: s.retrieval.top_k,
        threshold: s.retrieval.threshold ?? "–",
        temperature: s.sampling.temperature,
        top_p: s.sampling.top_p ?? "–",
        max_tokens: s.sampling.max_tokens,
      }),
    ),
  );
}
