// Ask: a chat over the current knowledge base. Answers stream in (SSE: delta..., citations,
// done); [n] markers and citation chips open the passage with its file and page. Conversations
// are kept by the server (/v1/conversations); retrieval-only asks skip the LLM.

import { api, askStream } from "../api.js";
import { clear, formatDate, h } from "../dom.js";
import { t } from "../i18n.js";

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
      reply.error = exc.message;
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
    else reply.error = exc.message;
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
  } else if (name === "error") {
    reply.error = data.message;
  }
  updateMessage(reply);
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
  const body = h("div.msg-text", {}, withMarkers(msg.text, cites));
  if (msg.pending && !msg.retrievalOnly) {
    if (!msg.text) body.append(h("span.muted", {}, t("ask.thinking")));
    body.append(h("span.cursor", { "aria-hidden": "true" }));
  }
  const el = h(
    "div.msg.msg-assistant",
    { dataset: { role: "assistant", state, deltas: String(msg.deltas || 0) } },
    head,
    msg.retrievalOnly
      ? h("p.muted.small", {}, t("ask.retrieval_note"), " ", t("ask.not_saved"))
      : body,
  );
  if (msg.error)
    el.append(h("p.error-text", { role: "alert" }, t("ask.error", { message: msg.error })));
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
    el.append(
      h(
        "details.more-sources",
        {},
        h("summary", {}, `${t("ask.other_sources")} (${others.length})`),
        h("div.chips", {}, others.map(chip)),
      ),
    );
  }
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
      h("dt", {}, t("cite.score")),
      h("dd", {}, typeof c.score === "number" ? c.score.toFixed(3) : "–"),
    ),
    h("blockquote.passage", { "data-test": "cite-text" }, c.text),
  );
}
