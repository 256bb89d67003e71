// Knowledge bases: list with document and chunk counts, create, delete.

import { api } from "../api.js";
import { badge, clear, confirmDialog, formatDate, h, toast } from "../dom.js";
import { label, t } from "../i18n.js";

let container = null; // the list's box: a refresh redraws it, never the form being typed in
let ctx = null;

export function mount(el, context) {
  ctx = context;
  container = h("div", { "data-test": "kb-list" });
  clear(el, h("h1", {}, t("kbs.title")), createForm(), container);
  render();
  ctx.refreshKbs().then(render, (exc) => ctx.failed(exc));
}

export function unmount() {
  container = null;
}

function render() {
  if (!container) return;
  clear(container, table());
}

function createForm() {
  const name = h("input", {
    name: "name",
    required: true,
    maxlength: "200",
    placeholder: t("kbs.name"),
  });
  const description = h("input", {
    name: "description",
    maxlength: "10000",
    placeholder: t("kbs.description"),
  });
  const form = h(
    "form.inline-form.card",
    {
      "data-test": "create-kb",
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          const kb = await api.createKb(name.value.trim(), description.value.trim());
          toast(t("kbs.created_ok", { name: kb.name }), "ok");
          form.reset();
          ctx.selectKb(kb.id);
          await ctx.refreshKbs();
          render();
        } catch (exc) {
          ctx.failed(exc, "kbs");
        }
      },
    },
    name,
    description,
    h("button.primary", { type: "submit" }, t("kbs.create")),
  );
  return form;
}

function statusBadges(byStatus) {
  return Object.entries(byStatus || {})
    .filter(([, n]) => n > 0)
    .map(([status, n]) => badge(status, `${label("status", status)} ${n}`));
}

function table() {
  if (!ctx.kbs.length) return h("p.empty", {}, t("kbs.empty"));
  const head = [
    "kbs.name",
    "kbs.documents",
    "kbs.chunks",
    "kbs.by_status",
    "kbs.model",
    "kbs.created",
    "kbs.actions",
  ];
  return h(
    "table.data",
    { "data-test": "kb-table" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        head.map((k) => h("th", {}, t(k))),
      ),
    ),
    h(
      "tbody",
      {},
      ctx.kbs.map((kb) =>
        h(
          `tr${kb.id === ctx.kbId ? ".selected" : ""}`,
          { dataset: { kb: kb.id } },
          h(
            "td",
            {},
            h("strong", {}, kb.name),
            kb.description ? h("div.muted.small", {}, kb.description) : null,
          ),
          h("td.num", { "data-col": "documents" }, kb.documents ?? "–"),
          h("td.num", { "data-col": "chunks" }, kb.chunks ?? "–"),
          h("td", {}, statusBadges(kb.documents_by_status)),
          h("td.small", {}, `${kb.embedding_model} (${kb.embedding_dim})`),
          h("td.small", {}, formatDate(kb.created_at)),
          h("td.actions", {}, actions(kb)),
        ),
      ),
    ),
  );
}

function actions(kb) {
  const open = (view) => () => {
    ctx.selectKb(kb.id);
    ctx.go(view);
  };
  return [
    h("button", { type: "button", onclick: open("documents") }, t("kbs.open")),
    h("button", { type: "button", onclick: open("ask") }, t("kbs.ask")),
    h(
      "button.danger",
      {
        type: "button",
        onclick: async () => {
          if (!(await confirmDialog(t("kbs.confirm_delete", { name: kb.name })))) return;
          try {
            await api.deleteKb(kb.id);
            toast(t("kbs.deleted_ok", { name: kb.name }), "ok");
            if (ctx.kbId === kb.id) ctx.selectKb(null);
            await ctx.refreshKbs();
            render();
          } catch (exc) {
            ctx.failed(exc);
          }
        },
      },
      t("kbs.delete"),
    ),
  ];
}
