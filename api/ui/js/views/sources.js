// The source behind a citation: a PDF page rendered by the server with the passage
// highlighted (pageView), and a document's chunks page by page, each one can be disabled or
// enabled and opened on its page (chunkPanel). Used by the ask and documents views.

import { api, downloadFile, pageImage } from "../api.js";
import { badge, clear, h, toast } from "../dom.js";
import { errorText } from "../errors.js";
import { t } from "../i18n.js";

const CHUNKS_PER_PAGE = 20;

// A page of a document as an image, loaded with the key (an <img> cannot send it itself).
// Formats without pages (415) say so instead of failing.
export function pageView(kbId, docId, page, chunkId) {
  const note = h("p.muted.small", { "data-test": "page-note" }, t("source.loading"));
  const view = h(
    "figure.page-view",
    { "data-test": "page-view", dataset: { page: String(page), state: "loading" } },
    note,
  );
  pageImage(kbId, docId, page, chunkId).then(
    ({ src, highlights }) => {
      const img = h("img.page-image", {
        src,
        alt: t("source.page_alt", { page }),
        "data-test": "page-image",
        dataset: { highlights: String(highlights) },
      });
      note.textContent = highlights
        ? t("source.highlighted", { page })
        : chunkId != null
          ? t("source.not_found", { page })
          : t("source.page", { page });
      view.dataset.state = "ready";
      view.dataset.highlights = String(highlights);
      view.prepend(img);
    },
    (exc) => {
      view.dataset.state = exc.status === 415 ? "unsupported" : "failed";
      note.textContent =
        exc.status === 415 ? t("source.no_pages") : t("common.error", { message: errorText(exc) });
    },
  );
  return view;
}

export function downloadButton(kbId, doc, onError) {
  return h(
    "button",
    {
      type: "button",
      "data-test": "download",
      onclick: () => downloadFile(kbId, doc.id, doc.filename).catch(onError),
    },
    t("source.download"),
  );
}

// The chunks of one document, with paging, disable/enable and "show page" for PDFs.
export function chunkPanel(ctx, doc, onClose) {
  const state = { offset: 0, total: 0, chunks: [], version: null };
  const list = h("ol.chunk-list", { "data-test": "chunk-list" });
  const pager = h("div.pager");
  const viewer = h("div.chunk-viewer");
  const panel = h(
    "section.card.chunk-panel",
    { "data-test": "chunk-panel", dataset: { doc: doc.id } },
    h(
      "div.cite-head",
      {},
      h("h2", {}, t("chunks.title", { name: doc.filename })),
      h(
        "div.chunk-head-actions",
        {},
        downloadButton(doc.kb_id, doc, (exc) => ctx.failed(exc)),
        h("button.link", { type: "button", onclick: onClose }, t("cite.close")),
      ),
    ),
    pager,
    viewer,
    list,
  );
  const isPdf = doc.media_type === "application/pdf";

  const load = async () => {
    try {
      const body = await api.listChunks(doc.kb_id, doc.id, state.offset, CHUNKS_PER_PAGE);
      Object.assign(state, { total: body.total, chunks: body.chunks, version: body.version });
      render();
    } catch (exc) {
      ctx.failed(exc);
    }
  };

  const toggle = async (chunk) => {
    try {
      const changed = await api.setChunkDisabled(doc.kb_id, doc.id, chunk.id, !chunk.disabled);
      Object.assign(chunk, changed);
      toast(t(changed.disabled ? "chunks.disabled_ok" : "chunks.enabled_ok"), "ok");
      render();
    } catch (exc) {
      ctx.failed(exc);
    }
  };

  const show = (chunk, page) => {
    clear(
      viewer,
      h(
        "div.cite-head",
        {},
        h("span.small", {}, t("chunks.viewing", { ordinal: chunk.ordinal + 1, page })),
        h("button.link", { type: "button", onclick: () => clear(viewer) }, t("cite.close")),
      ),
      pageView(doc.kb_id, doc.id, page, chunk.id),
    );
    viewer.scrollIntoView({ block: "nearest" });
  };

  const item = (chunk) => {
    const pages = [];
    for (let p = chunk.page_start; p <= chunk.page_end; p += 1) pages.push(p);
    return h(
      `li.chunk${chunk.disabled ? ".chunk-disabled" : ""}`,
      { dataset: { chunk: String(chunk.id), disabled: String(chunk.disabled) } },
      h(
        "div.chunk-meta.small",
        {},
        h("span.chunk-ordinal", {}, `#${chunk.ordinal + 1}`),
        h(
          "span",
          {},
          chunk.page_end !== chunk.page_start
            ? t("cite.pages", { page: chunk.page_start, end: chunk.page_end })
            : t("cite.page", { page: chunk.page_start }),
        ),
        h("span", {}, t("chunks.tokens", { n: chunk.token_count })),
        chunk.disabled ? badge("disabled", t("chunks.disabled")) : null,
      ),
      chunk.heading_path.length
        ? h("div.heading-path.small", { "data-test": "heading-path" }, headingText(chunk))
        : null,
      h("blockquote.passage.chunk-text", {}, chunk.text),
      h(
        "div.chunk-actions",
        {},
        h(
          "button",
          { type: "button", "data-test": "toggle-chunk", onclick: () => toggle(chunk) },
          t(chunk.disabled ? "chunks.enable" : "chunks.disable"),
        ),
        isPdf
          ? pages.map((p) =>
              h(
                "button.link",
                { type: "button", "data-test": "show-page", onclick: () => show(chunk, p) },
                t("chunks.show_page", { page: p }),
              ),
            )
          : null,
      ),
    );
  };

  const render = () => {
    const last = Math.min(state.offset + state.chunks.length, state.total);
    clear(
      pager,
      h(
        "span.muted.small",
        { "data-test": "chunk-range" },
        state.total
          ? t("chunks.range", { from: state.offset + 1, to: last, total: state.total })
          : t("chunks.none"),
      ),
      h(
        "button",
        {
          type: "button",
          "data-test": "chunks-prev",
          disabled: state.offset === 0,
          onclick: () => {
            state.offset = Math.max(0, state.offset - CHUNKS_PER_PAGE);
            load();
          },
        },
        t("chunks.prev"),
      ),
      h(
        "button",
        {
          type: "button",
          "data-test": "chunks-next",
          disabled: last >= state.total,
          onclick: () => {
            state.offset += CHUNKS_PER_PAGE;
            load();
          },
        },
        t("chunks.next"),
      ),
    );
    clear(list, state.chunks.map(item));
    list.start = state.offset + 1;
  };

  load();
  return panel;
}

export function headingText(item) {
  return (item.heading_path || []).join(" › ");
}
