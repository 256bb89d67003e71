// Ask: a chat over the current knowledge base. Answers stream in (SSE: delta..., citations,
// done); [n] markers and citation chips open the passage with its file and page. Conversations
// are kept by the server (/v1/conversations); retrieval-only asks skip the LLM. What the server
// says about an answer (`done`: grounded, truncated, degenerate) is shown as a notice above it,
// and a knowledge base with nothing ready to answer from (409 no_ready_documents) says what to do.
// Under each logged answer (`done`.answer_id): thumbs up or down with a comment, and a button
// that asks a person to take over (offered first when the server suggests it).

import { ApiError, api, askStream, request } from "../api.js";
import { badge, clear, formatDate, h, toast } from "../dom.js";
import { errorText, serverText } from "../errors.js";
import { label, t } from "../i18n.js";
import { downloadButton, headingText, pageView } from "./sources.js";

let ctx = null;
let parts = null; // {list, messages, panel, input, send, title}
// Chat state survives a re-render (language switch) of the same knowledge base.
const chat = {
  kbId: null,
  conversations: [],
  active: null, // conversation id
  messages: [],
  controller: null, // AbortController of the answer being streamed
  retrievalOnly: false,
};

export function mount(el, context) {
  ctx = context;
  const kb = ctx.kb;
  if (!kb) {
    clear(el, h("p.empty", {}, t("kb.pick_first")));
    return;
  }
  if (chat.kbId !== kb.id) {
    chat.controller?.abort();
    Object.assign(chat, { kbId: kb.id, conversations: [], active: null, messages: [] });
  }
  parts = {
    list: h("ul.conv-list", { "data-test": "conversations" }),
    messages: h("div.messages", { "data-test": "messages", "aria-live": "polite" }),
    panel: h("aside.cite-panel", { "data-test": "citation-panel", hidden: true }),
  };
  clear(
    el,
    h(
      "div.ask-layout",
      {},
      h(
        "aside.conv-side",
        {},
        h(
          "div.conv-head",
          {},
          h("h2", {}, t("ask.conversations")),
          h(
            "button",
            { type: "button", "data-test": "new-conversation", onclick: newConversation },
            t("ask.new"),
          ),
        ),
        parts.list,
      ),
      h(
        "section.chat",
        {},
        h("h1", {}, t("ask.title", { kb: kb.name })),
        parts.messages,
        composer(),
      ),
      parts.panel,
    ),
  );
  renderConversations();
  renderMessages();
  loadConversations();
}

export function unmount() {
  parts = null;
}

// --- conversations ---------------------------------------------------------------------------

async function loadConversations() {
  try {
    const body = await api.listConversations(chat.kbId);
    chat.conversations = body.conversations;
    renderConversations();
  } catch (exc) {
    ctx.failed(exc);
  }
}

function renderConversations() {
  if (!parts) return;
  if (!chat.conversations.length) {
    clear(parts.list, h("li.muted.small", {}, t("ask.no_conversations")));
    return;
  }
  clear(
    parts.list,
    chat.conversations.map((c) =>
      h(
        `li${c.id === chat.active ? ".active" : ""}`,
        {},
        h(
          "button.conv",
          {
            type: "button",
            dataset: { conversation: c.id },
            onclick: () => openConversation(c.id),
          },
          h("span.conv-title", {}, c.title || "…"),
          h("span.muted.small", {}, formatDate(c.updated_at)),
        ),
      ),
    ),
  );
}

function newConversation() {
  chat.controller?.abort();
  chat.active = null;
  chat.messages = [];
  renderConversations();
  renderMessages();
  parts?.input.focus();
}

async function openConversation(id) {
  chat.controller?.abort();
  try {
    const conv = await api.getConversation(id);
    chat.active = id;
    chat.messages = conv.messages.map((m) =>
      m.role === "user"
        ? { role: "user", text: m.content }
        : {
            role: "assistant",
            text: m.content,
            citations: m.citations,
            model: m.model,
            usage: m.usage,
            ...flags(m),
          },
    );
    renderConversations();
    renderMessages();
  } catch (exc) {
    ctx.failed(exc);
  }
}

// --- composer and asking ---------------------------------------------------------------------

function composer() {
  const input = h("textarea", {
    id: "question",
    rows: 3,
    placeholder: t("ask.placeholder"),
    onkeydown: (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        form.requestSubmit();
      }
    },
  });
  const only = h("input", {
    type: "checkbox",
    id: "retrieval-only",
    checked: chat.retrievalOnly,
    onchange: () => {
      chat.retrievalOnly = only.checked;
    },
  });
  const send = h("button.primary", { type: "submit", "data-test": "send" });
  const form = h(
    "form.composer",
    {
      onsubmit: (e) => {
        e.preventDefault();
        if (chat.controller) {
          chat.controller.abort();
          return;
        }
        const question = input.value.trim();
        if (!question) return;
        input.value = "";
        ask(question);
      },
    },
    input,
    h(
      "div.composer-bar",
      {},
      h("label.check", { for: "retrieval-only" }, only, t("ask.retrieval_only")),
      send,
    ),
  );
  parts.input = input;
  parts.send = send;
  renderSendButton();
  return form;
}

function renderSendButton() {
  if (!parts) return;
  parts.send.textContent = chat.controller ? t("ask.stop") : t("ask.send");
  parts.send.classList.toggle("danger", Boolean(chat.controller));
}

async function ask(question) {
  const kbId = chat.kbId;
  chat.messages.push({ role: "user", text: question });
  const reply = { role: "assistant", text: "", citations: null, pending: true, deltas: 0 };
  chat.messages.push(reply);
  renderMessages();
  if (chat.retrievalOnly) {
    // Not recorded by the server: an answer-less turn has no place in the conversation.
    reply.retrievalOnly = true;
    try {
      const body = await api.ask(kbId, { question, retrieval_only: true });
      reply.citations = body.citations;
    } catch (exc) {
      reply.error = exc;
    }
    reply.pending = false;
    updateMessage(reply);
    return;
  }
  chat.controller = new AbortController();
  renderSendButton();
  try {
    if (!chat.active) {
      const conv = await api.createConversation(kbId);
      chat.active = conv.id;
      // Listed at once; the server names it after the first question once it is answered.
      chat.conversations.unshift({ ...conv, title: conv.title || question });
      renderConversations();
    }
    await askStream(
      kbId,
      { question, conversation_id: chat.active },
      (name, data) => onEvent(reply, name, data),
      chat.controller.signal,
    );
  } catch (exc) {
    if (exc.name === "AbortError") reply.note = t("ask.stopped");
    else reply.error = exc;
    if (exc.code === "no_ready_documents") showDocumentCounts(reply, kbId);
  } finally {
    reply.pending = false;
    chat.controller = null;
    renderSendButton();
    updateMessage(reply);
    if (chat.kbId === kbId) loadConversations();
  }
}

function onEvent(reply, name, data) {
  if (name === "delta") {
    reply.text += data.text;
    reply.deltas += 1;
  } else if (name === "citations") {
    reply.citations = data;
  } else if (name === "done") {
    reply.model = data.model;
    reply.usage = data.usage;
    reply.cached = Boolean(data.cached);
    reply.answerId = data.answer_id || null;
    reply.curated = Boolean(data.curated);
    reply.handoffSuggested = Boolean(data.handoff_suggested);
    Object.assign(reply, flags(data));
  } else if (name === "error") {
    reply.error = new ApiError(0, data.code || "internal_error", data.message || "");
  }
  updateMessage(reply);
}

// The answer's flags as the server sent them; absent ones stay unknown (an older server).
function flags(data) {
  const out = {};
  if (typeof data.grounded === "boolean") out.grounded = data.grounded;
  if (typeof data.truncated === "boolean") out.truncated = data.truncated;
  if (data.degenerate) out.degenerate = String(data.degenerate);
  return out;
}

// Nothing to answer from: how many documents are where, from the knowledge base's counts.
async function showDocumentCounts(reply, kbId) {
  try {
    const kb = await api.getKb(kbId);
    reply.counts = kb.documents_by_status || {};
    updateMessage(reply);
  } catch {
    // the notice stands without the counts
  }
}

// --- messages --------------------------------------------------------------------------------

function renderMessages() {
  if (!parts) return;
  if (!chat.messages.length) {
    clear(parts.messages, h("p.empty", {}, t("ask.empty")));
    return;
  }
  clear(parts.messages, chat.messages.map(messageEl));
  parts.messages.scrollTop = parts.messages.scrollHeight;
}

function updateMessage(msg) {
  if (!parts || !msg.el || !msg.el.isConnected) return renderMessages();
  msg.el.replaceWith(messageEl(msg));
  parts.messages.scrollTop = parts.messages.scrollHeight;
}

function messageEl(msg) {
  let el;
  if (msg.role === "user") {
    el = h(
      "div.msg.msg-user",
      { dataset: { role: "user" } },
      h("div.msg-who", {}, t("ask.you")),
      h("div.msg-text", {}, msg.text),
    );
  } else {
    el = assistantEl(msg);
  }
  msg.el = el;
  return el;
}

function assistantEl(msg) {
  const state = msg.pending ? "streaming" : msg.error ? "error" : "done";
  const cites = msg.citations || [];
  const head = h("div.msg-who", {}, t(msg.retrievalOnly ? "ask.passages" : "ask.assistant"));
  if (msg.model)
    head.append(h("span.model", { "data-test": "model" }, t("ask.model", { model: msg.model })));
  if (msg.cached) head.append(h("span.cached", { "data-test": "cached" }, t("ask.cached")));
  if (msg.curated) head.append(h("span.cached", { "data-test": "curated" }, t("fb.curated")));
  const body = h("div.msg-text", {}, withMarkers(msg.text, cites));
  if (msg.pending && !msg.retrievalOnly) {
    if (!msg.text) body.append(h("span.muted", {}, t("ask.thinking")));
    body.append(h("span.cursor", { "aria-hidden": "true" }));
  }
  const unreliable = Boolean(msg.degenerate);
  if (unreliable) body.classList.add("unreliable");
  const el = h(
    "div.msg.msg-assistant",
    { dataset: { role: "assistant", state, deltas: String(msg.deltas || 0) } },
    head,
    msg.pending ? null : notices(msg),
    msg.retrievalOnly
      ? h("p.muted.small", {}, t("ask.retrieval_note"), " ", t("ask.not_saved"))
      : body,
  );
  if (msg.error?.code === "no_ready_documents") el.append(noReadyNotice(msg));
  else if (msg.error)
    el.append(
      h(
        "p.error-text",
        { role: "alert", "data-code": msg.error.code || null, title: serverText(msg.error) },
        t("ask.error", { message: errorText(msg.error) }),
      ),
    );
  if (msg.note) el.append(h("p.muted.small", {}, msg.note));
  if (msg.retrievalOnly && !msg.pending && !msg.error && !cites.length)
    el.append(h("p.muted", {}, t("ask.no_passages")));
  const cited = msg.retrievalOnly ? cites : cites.filter((c) => c.cited);
  const others = msg.retrievalOnly ? [] : cites.filter((c) => !c.cited);
  if (cited.length)
    el.append(
      h(
        "div.chips",
        { "data-test": "sources" },
        h("span.chips-label", {}, t("ask.sources")),
        cited.map(chip),
      ),
    );
  if (others.length) {
    // An answer to distrust opens the passages it should have used.
    const open = unreliable || msg.grounded === false;
    el.append(
      h(
        "details.more-sources",
        { open },
        h("summary", {}, `${t("ask.other_sources")} (${others.length})`),
        h("div.chips", {}, others.map(chip)),
      ),
    );
  }
  if (msg.answerId && !msg.pending && !msg.error) el.append(feedbackBar(msg));
  if (msg.usage && msg.usage.completion_tokens != null) {
    el.append(
      h(
        "p.muted.small",
        {},
        t("ask.tokens", {
          prompt: msg.usage.prompt_tokens ?? "?",
          completion: msg.usage.completion_tokens,
        }),
      ),
    );
  }
  return el;
}

// --- feedback and hand-off --------------------------------------------------------------------

const sendFeedback = (id, body) => request("POST", `v1/answers/${id}/feedback`, body);
const sendHandoff = (id, body) => request("POST", `v1/answers/${id}/handoff`, body);

function feedbackBar(msg) {
  const fb = (msg.feedback ||= { rating: null, commenting: false, busy: false, handoff: false });
  const rate = (rating) => {
    if (fb.busy) return;
    if (rating === "down" && !fb.commenting && fb.rating !== "down") {
      fb.commenting = true; // a down-rating asks what was wrong first
      updateMessage(msg);
      return;
    }
    submit({ rating });
  };
  const submit = async (body) => {
    fb.busy = true;
    try {
      await sendFeedback(msg.answerId, body);
      fb.rating = body.rating;
      fb.commenting = false;
      if (body.handoff) fb.handoff = true;
      toast(t("fb.thanks"), "ok");
    } catch (exc) {
      ctx.failed(exc);
    } finally {
      fb.busy = false;
      updateMessage(msg);
    }
  };
  const handoff = async () => {
    fb.busy = true;
    try {
      await sendHandoff(msg.answerId, {});
      fb.handoff = true;
    } catch (exc) {
      ctx.failed(exc);
    } finally {
      fb.busy = false;
      updateMessage(msg);
    }
  };
  const thumb = (rating, symbol) =>
    h(
      `button.thumb${fb.rating === rating ? ".active" : ""}`,
      {
        type: "button",
        "data-test": `rate-${rating}`,
        "aria-pressed": fb.rating === rating ? "true" : "false",
        disabled: fb.busy,
        onclick: () => rate(rating),
      },
      // The word too: a system without an emoji font still shows what the button does.
      h("span", { "aria-hidden": "true" }, symbol),
      " ",
      t(`fb.${rating}`),
    );
  const bar = h(
    "div.feedback",
    { "data-test": "feedback", dataset: { answerId: msg.answerId } },
    thumb("up", "👍"),
    thumb("down", "👎"),
    fb.handoff
      ? h("span.muted.small", { "data-test": "handoff-done" }, t("fb.handoff_done"))
      : h(
          `button${msg.handoffSuggested ? ".primary" : ""}`,
          { type: "button", "data-test": "handoff", disabled: fb.busy, onclick: handoff },
          t("fb.handoff"),
        ),
    fb.rating ? h("span.muted.small", { "data-test": "feedback-done" }, t("fb.thanks")) : null,
  );
  const out = [];
  if (msg.handoffSuggested && !fb.handoff)
    out.push(notice("handoff", "warn", t("fb.suggest")));
  out.push(bar);
  if (fb.commenting) {
    const comment = h("textarea", {
      rows: 2,
      maxlength: 2000,
      "data-test": "feedback-comment",
      placeholder: t("fb.comment"),
    });
    const alsoHandoff = h("input", { type: "checkbox", "data-test": "feedback-handoff" });
    out.push(
      h(
        "form.inline-form.feedback-form",
        {
          onsubmit: (e) => {
            e.preventDefault();
            const text = comment.value.trim();
            submit({
              rating: "down",
              ...(text ? { comment: text } : {}),
              ...(alsoHandoff.checked ? { handoff: true } : {}),
            });
          },
        },
        comment,
        h("label.check", {}, alsoHandoff, t("fb.also_handoff")),
        h("button.primary", { type: "submit", "data-test": "feedback-send" }, t("fb.send")),
      ),
    );
  }
  return h("div.feedback-wrap", {}, out);
}

// What the server said about a finished answer, most serious first.
function notices(msg) {
  const out = [];
  if (msg.degenerate) {
    const kind = `ask.flag.degenerate_${msg.degenerate}`;
    const text = ["echo", "repetition"].includes(msg.degenerate)
      ? t(kind)
      : t("ask.flag.degenerate", { kind: msg.degenerate });
    out.push(notice("degenerate", "bad", text));
  }
  if (msg.truncated) out.push(notice("truncated", "warn", t("ask.flag.truncated")));
  // Degenerate answers cite nothing as a rule: one notice says enough.
  if (msg.grounded === false && !msg.degenerate)
    out.push(notice("ungrounded", "warn", t("ask.flag.ungrounded")));
  return out;
}

function notice(flag, kind, text) {
  return h(`p.notice.notice-${kind}`, { role: "note", "data-flag": flag }, text);
}

function noReadyNotice(msg) {
  const counts = Object.entries(msg.counts || {}).filter(([, n]) => n > 0);
  return h(
    "div.notice.notice-warn",
    { role: "alert", "data-flag": "no-ready-documents", "data-code": "no_ready_documents" },
    h("p", {}, t("ask.no_ready")),
    counts.length
      ? h(
          "p.small",
          { "data-test": "doc-counts" },
          t("ask.doc_counts"),
          " ",
          counts.map(([status, n]) => badge(status, `${label("status", status)} ${n}`)),
        )
      : null,
    h(
      "button",
      { type: "button", "data-test": "go-documents", onclick: () => ctx.go("documents") },
      t("ask.go_documents"),
    ),
  );
}

// The answer text with each [n] that names a citation turned into a button.
function withMarkers(text, cites) {
  const byIndex = new Map(cites.map((c) => [c.index, c]));
  const out = [];
  let last = 0;
  for (const m of text.matchAll(/\[(\d+)\]/g)) {
    const c = byIndex.get(Number(m[1]));
    if (!c) continue;
    out.push(text.slice(last, m.index));
    out.push(
      h(
        "button.marker",
        { type: "button", title: `${c.filename} · ${pageText(c)}`, onclick: () => showPassage(c) },
        `[${c.index}]`,
      ),
    );
    last = m.index + m[0].length;
  }
  out.push(text.slice(last));
  return out;
}

function pageText(c) {
  return c.page_end && c.page_end !== c.page
    ? t("cite.pages", { page: c.page, end: c.page_end })
    : t("cite.page", { page: c.page });
}

function chip(c) {
  return h(
    "button.chip",
    {
      type: "button",
      dataset: { index: String(c.index), page: String(c.page), filename: c.filename },
      onclick: () => showPassage(c),
    },
    h("span.chip-index", {}, `[${c.index}]`),
    h("span.chip-file", {}, c.filename),
    h("span.chip-page", {}, pageText(c)),
  );
}

function showPassage(c) {
  if (!parts) return;
  parts.panel.hidden = false;
  parts.panel.dataset.index = String(c.index);
  parts.panel.dataset.page = String(c.page);
  clear(
    parts.panel,
    h(
      "div.cite-head",
      {},
      h("h2", {}, `[${c.index}] ${t("cite.passage")}`),
      h(
        "button.link",
        { type: "button", onclick: () => (parts.panel.hidden = true) },
        t("cite.close"),
      ),
    ),
    h(
      "dl.cite-meta",
      {},
      h("dt", {}, t("cite.file")),
      h("dd", { "data-test": "cite-file" }, c.filename),
      h("dt", {}, t("cite.page_label")),
      h("dd", { "data-test": "cite-page" }, pageText(c)),
      c.heading_path?.length
        ? [
            h("dt", {}, t("cite.heading")),
            h("dd", { "data-test": "cite-heading" }, headingText(c)),
          ]
        : null,
      h("dt", {}, t("cite.score")),
      h("dd", {}, typeof c.score === "number" ? c.score.toFixed(3) : "–"),
    ),
    h("blockquote.passage", { "data-test": "cite-text" }, c.text),
    // The page the passage is on, as the PDF shows it, with the passage highlighted.
    pageView(chat.kbId, c.document_id, c.page, c.chunk_id),
    h(
      "div.cite-actions",
      {},
      downloadButton(chat.kbId, { id: c.document_id, filename: c.filename }, (exc) =>
        ctx.failed(exc),
      ),
    ),
  );
}
