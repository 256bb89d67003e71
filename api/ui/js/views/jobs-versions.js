// The "Index versions" panel of the Jobs page: GET .../versions as a table, and a rollback
// (POST .../versions/rollback) after an in-page confirmation.
//
// The API rolls back to the most recent retired version only, so the button sits on that
// version's row and names it; none shows while a version is being built (the API answers 409).

import { api } from "../api.js";
import { badge, clear, confirmDialog, formatDate, h, toast } from "../dom.js";
import { label, t } from "../i18n.js";

export function versionsPanel(ctx, { onRollback }) {
  const body = h("div", { "data-test": "versions-wrap" }, h("p.muted.small", {}, t("common.loading")));
  const el = h(
    "section.card.versions",
    { "data-test": "versions" },
    h("h2", {}, t("versions.title")),
    h("p.muted.small", {}, t("versions.lead")),
    body,
  );
  let loading = null;

  async function rollback(target, live) {
    const ok = await confirmDialog(t("versions.confirm_rollback", { target, live }));
    if (!ok) return;
    try {
      const job = await api.rollback(ctx.kbId);
      toast(t("versions.rollback_started", { version: job.version }), "ok");
      await onRollback(job);
    } catch (exc) {
      ctx.failed(exc);
    }
    await load();
  }

  function render(data) {
    const list = data.versions || [];
    if (!list.length) {
      clear(body, h("p.empty", {}, t("versions.empty")));
      return;
    }
    const building = list.some((v) => v.status === "building");
    const retired = list.filter((v) => v.status === "retired").map((v) => v.number);
    const target = !building && retired.length ? Math.max(...retired) : null;
    const cols = [
      "versions.number",
      "versions.status",
      "versions.model",
      "versions.dim",
      "versions.chunking",
      "versions.chunks",
      "versions.documents",
      "versions.created",
      "versions.activated",
      "versions.error",
      "",
    ];
    const row = (v) =>
      h(
        `tr${v.number === data.live ? ".selected" : ""}`,
        { dataset: { version: String(v.number), status: v.status } },
        h("td", { "data-col": "number" }, h("strong", {}, `v${v.number}`)),
        h("td", { "data-col": "status" }, badge(v.status, label("vstatus", v.status))),
        h("td.small.embed-model", { "data-col": "model" }, v.embedding_model),
        h("td.num.small", { "data-col": "dim" }, String(v.embedding_dim)),
        h(
          "td.small",
          { "data-col": "chunking" },
          t("versions.chunk_settings", { tokens: v.chunk_tokens, overlap: v.overlap_tokens }),
        ),
        h("td.num", { "data-col": "chunks" }, String(v.chunks)),
        h("td.num", { "data-col": "documents" }, String(v.documents)),
        h("td.small", {}, formatDate(v.created_at)),
        h("td.small", {}, formatDate(v.activated_at)),
        h("td.problems", {}, v.error ? h("div.error-text", {}, v.error) : ""),
        h(
          "td.actions",
          {},
          v.number === target
            ? h(
                "button.danger",
                {
                  type: "button",
                  "data-test": "rollback",
                  onclick: () => rollback(v.number, data.live),
                },
                t("versions.rollback", { version: v.number }),
              )
            : null,
        ),
      );
    clear(
      body,
      h(
        "table.data",
        { "data-test": "versions-table" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            cols.map((k) => h("th", {}, k ? t(k) : "")),
          ),
        ),
        h("tbody", {}, list.map(row)),
      ),
      building ? h("p.muted.small", {}, t("versions.building_note")) : null,
    );
  }

  // Several callers may ask at once (mount, a job that ended, a rollback): one request at a
  // time, and one more after it when someone asked meanwhile, so the last answer is fresh.
  let again = false;
  function load() {
    if (!ctx.kbId) return Promise.resolve();
    if (loading) {
      again = true;
      return loading;
    }
    loading = (async () => {
      do {
        again = false;
        try {
          const data = await api.listVersions(ctx.kbId);
          if (el.isConnected) render(data);
        } catch (exc) {
          ctx.failed(exc);
        }
      } while (again && el.isConnected);
      loading = null;
    })();
    return loading;
  }

  return { el, load };
}
