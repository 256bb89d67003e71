/*
 * The knowledge-base chat widget. One tag puts a chat bubble on any page:
 *
 *   <script src="https://kb.example.com/widget.js" data-key="pk_..." data-lang="zh|en" async></script>
 *
 * Served by the API (GET /widget.js); the API's address is taken from this script's own URL.
 * Everything it needs is in this file (no fonts, images or styles from elsewhere), and it draws
 * inside a shadow root, so the page's CSS cannot break it nor it the page's. It calls only the
 * /v1/widget/* routes, with its publishable key in the X-Widget-Key header (docs/widget.md).
 */
(function () {
  "use strict";

  var script = document.currentScript;
  if (!script || !script.getAttribute("data-key")) {
    script = document.querySelector("script[data-key][src*='widget.js']");
  }
  if (!script || window.__kbqaWidget) {
    return; // no key to use, or a second tag on the same page
  }
  window.__kbqaWidget = true;

  var KEY = script.getAttribute("data-key") || "";
  var source = new URL(script.src, window.location.href);
  var BASE = source.origin + source.pathname.replace(/\/widget\.js$/, "");
  var asked = (script.getAttribute("data-lang") || "").toLowerCase();
  var lang = asked === "zh" || asked === "en" ? asked : null;

  var STRINGS = {
    en: {
      open: "Ask a question",
      close: "Close",
      title: "Help",
      placeholder: "Type your question…",
      send: "Send",
      sources: "Sources",
      page: "p.",
      up: "Helpful",
      down: "Not helpful",
      thanks: "Thanks for your feedback.",
      handoff: "Talk to a person",
      handoffDone: "A person has been asked to take over.",
      back: "Back",
      noImage: "This source has no page image; the passage:",
      unreachable:
        "The assistant cannot be reached from this page: this site may not be allowed to use it.",
      invalidKey: "This chat is not available: its key is not valid or was revoked.",
      refused: "This site is not allowed to use this assistant.",
      busy: "Too many questions right now; try again in {s} s.",
      failed: "Something went wrong: ",
    },
    zh: {
      open: "提问",
      close: "关闭",
      title: "帮助",
      placeholder: "请输入您的问题…",
      send: "发送",
      sources: "来源",
      page: "第{n}页",
      up: "有帮助",
      down: "没有帮助",
      thanks: "感谢您的反馈。",
      handoff: "转人工",
      handoffDone: "已请人工客服接手。",
      back: "返回",
      noImage: "此来源没有页面图像；相关段落：",
      unreachable: "无法从此页面连接助手：此网站可能未获准使用它。",
      invalidKey: "此聊天不可用：密钥无效或已被撤销。",
      refused: "此网站未获准使用这个助手。",
      busy: "提问过于频繁，请在 {s} 秒后重试。",
      failed: "出错了：",
    },
  };

  function t(name) {
    var table = STRINGS[lang || (/^zh/i.test(navigator.language || "") ? "zh" : "en")];
    return table[name];
  }

  function pageLabel(page) {
    var label = t("page");
    return label.indexOf("{n}") >= 0 ? label.replace("{n}", page) : label + " " + page;
  }

  var CSS = [
    // !important: the page's own !important rules on every element (or on div) must not
    // reach the host element, whose font and colour the widget's elements inherit.
    ":host { all: initial !important; position: fixed !important; right: 20px !important;",
    "  bottom: 20px !important; z-index: 2147483000 !important; display: block !important;",
    "  font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', 'PingFang SC', 'Microsoft YaHei',",
    "  sans-serif !important; color: #1f2328 !important; }",
    "*, *::before, *::after { box-sizing: border-box; }",
    "[hidden] { display: none !important; }",
    "button { font: inherit; cursor: pointer; }",
    ".bubble { width: 56px; height: 56px; border-radius: 50%; border: 0; background: #2563eb;",
    "  color: #fff; box-shadow: 0 4px 14px rgba(0,0,0,.25); display: grid; place-items: center; }",
    ".bubble:focus-visible, .panel button:focus-visible { outline: 3px solid #93c5fd; }",
    ".bubble svg { width: 28px; height: 28px; fill: currentColor; }",
    ".panel { position: absolute; right: 0; bottom: 72px; width: 370px;",
    "  max-width: calc(100vw - 40px); height: 540px; max-height: calc(100vh - 110px);",
    "  background: #fff; border-radius: 12px; box-shadow: 0 8px 30px rgba(0,0,0,.25);",
    "  display: flex; flex-direction: column; overflow: hidden; }",
    ".head { display: flex; align-items: center; gap: 8px; padding: 10px 12px;",
    "  background: #2563eb; color: #fff; }",
    ".head .name { flex: 1; font-weight: 600; overflow: hidden; text-overflow: ellipsis;",
    "  white-space: nowrap; }",
    ".head button { background: transparent; border: 0; color: #fff; font-size: 18px; }",
    ".log { flex: 1; overflow-y: auto; padding: 12px; display: flex; flex-direction: column;",
    "  gap: 8px; }",
    ".msg { padding: 8px 10px; border-radius: 10px; max-width: 92%; white-space: pre-wrap;",
    "  overflow-wrap: anywhere; }",
    ".msg.user { background: #2563eb; color: #fff; align-self: flex-end; }",
    ".msg.bot { background: #f1f3f5; align-self: flex-start; }",
    ".msg.error { background: #fdecea; color: #8a1c1c; align-self: stretch; }",
    ".cites { margin-top: 6px; border-top: 1px solid #d0d7de; padding-top: 4px;",
    "  white-space: normal; }",
    ".cites .label { font-size: 12px; color: #57606a; }",
    ".cites ul { list-style: none; margin: 2px 0 0; padding: 0; }",
    ".cite { background: none; border: 0; padding: 2px 0; color: #0b5cd5; text-align: left;",
    "  text-decoration: underline; font-size: 13px; }",
    ".actions { display: flex; flex-wrap: wrap; align-items: center; gap: 6px; margin-top: 6px;",
    "  white-space: normal; }",
    ".actions button { background: #fff; border: 1px solid #d0d7de; border-radius: 6px;",
    "  padding: 1px 8px; }",
    ".actions button[aria-pressed=true] { background: #dbeafe; border-color: #2563eb; }",
    ".actions svg { width: 16px; height: 16px; fill: #57606a; vertical-align: middle; }",
    ".actions .down svg { transform: rotate(180deg); }",
    ".actions .note { font-size: 12px; color: #57606a; }",
    "form { display: flex; gap: 6px; padding: 8px; border-top: 1px solid #e5e7eb; }",
    "textarea { flex: 1; resize: none; height: 40px; padding: 8px; border: 1px solid #d0d7de;",
    "  border-radius: 8px; font: inherit; color: inherit; background: #fff; }",
    "form button { border: 0; border-radius: 8px; background: #2563eb; color: #fff;",
    "  padding: 0 14px; }",
    "form button:disabled { opacity: .5; cursor: default; }",
    ".viewer { position: absolute; inset: 0; background: #fff; display: flex;",
    "  flex-direction: column; }",
    ".viewer .body { flex: 1; overflow: auto; padding: 10px; }",
    ".viewer img { display: block; max-width: 100%; border: 1px solid #d0d7de; }",
    ".viewer blockquote { margin: 8px 0 0; padding: 6px 10px; border-left: 3px solid #f0b429;",
    "  background: #fffbea; white-space: pre-wrap; }",
  ].join("\n");

  var CHAT_ICON =
    '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 ' +
    '1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z"/></svg>';

  // A thumb (pointing up; turned for "down"), drawn for this widget.
  var THUMB =
    '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M2 10h4v11H2z"/><path d="M8 10l4-8c1.7 ' +
    '0 2.6 1.2 2.3 2.8L13.6 9H20a2 2 0 0 1 2 2.3l-1.4 7.6A2.5 2.5 0 0 1 18.1 21H8z"/></svg>';

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      node.setAttribute(name, attrs[name]);
    });
    if (text != null) {
      node.textContent = text; // never innerHTML: answers and passages are text
    }
    return node;
  }

  // --- the elements, inside a shadow root ------------------------------------------------
  var host = el("div", { id: "kbqa-widget" });
  var root = host.attachShadow({ mode: "open" });
  var style = el("style");
  style.textContent = CSS;
  var bubble = el("button", { class: "bubble", type: "button", "data-test": "bubble" });
  bubble.innerHTML = CHAT_ICON; // a constant of this file
  var panel = el("section", { class: "panel", "data-test": "panel", role: "dialog" });
  panel.hidden = true;
  var head = el("div", { class: "head" });
  var name = el("span", { class: "name", "data-test": "assistant-name" });
  var closer = el("button", { type: "button" }, "×");
  head.append(name, closer);
  var log = el("div", { class: "log", "data-test": "log", "aria-live": "polite" });
  var form = el("form");
  var input = el("textarea", { "data-test": "question", rows: "1" });
  var send = el("button", { type: "submit", "data-test": "send" });
  form.append(input, send);
  panel.append(head, log, form);
  root.append(style, panel, bubble);

  function label() {
    bubble.setAttribute("aria-label", t("open"));
    closer.setAttribute("aria-label", t("close"));
    input.setAttribute("placeholder", t("placeholder"));
    input.setAttribute("aria-label", t("placeholder"));
    send.textContent = t("send");
    if (!name.textContent) {
      name.textContent = t("title");
    }
  }

  var state = { config: null, loading: null, conversation: null, busy: false };

  // --- talking to the API ---------------------------------------------------------------
  function call(method, path, body) {
    var headers = { "X-Widget-Key": KEY };
    var init = { method: method, headers: headers, credentials: "omit", mode: "cors" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(BASE + path, init).then(
      function (response) {
        if (response.ok) {
          return response;
        }
        return refusal(response).then(function (message) {
          throw new Error(message);
        });
      },
      function () {
        // A refused CORS preflight and a network failure look alike to a page.
        throw new Error(t("unreachable"));
      }
    );
  }

  function refusal(response) {
    if (response.status === 401) {
      return Promise.resolve(t("invalidKey"));
    }
    if (response.status === 403) {
      return Promise.resolve(t("refused"));
    }
    if (response.status === 429) {
      var wait = response.headers.get("Retry-After") || "60";
      return Promise.resolve(t("busy").replace("{s}", wait));
    }
    return response.json().then(
      function (body) {
        return t("failed") + ((body && body.error && body.error.message) || response.status);
      },
      function () {
        return t("failed") + response.status;
      }
    );
  }

  function loadConfig() {
    if (!state.loading) {
      state.loading = call("GET", "/v1/widget/config").then(function (response) {
        return response.json().then(function (config) {
          state.config = config;
          if (!lang && (config.language === "zh" || config.language === "en")) {
            lang = config.language;
          }
          name.textContent = config.assistant || t("title");
          label();
          if (config.greeting) {
            log.append(el("div", { class: "msg bot", "data-test": "greeting" }, config.greeting));
          }
          return config;
        });
      });
      state.loading.catch(function (error) {
        state.loading = null; // try again on the next opening
        showError(error.message);
      });
    }
    return state.loading;
  }

  // Server-Sent Events read from a fetch body: "event: name\ndata: json\n\n" blocks.
  async function readEvents(response, onEvent) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    for (;;) {
      var chunk = await reader.read();
      if (chunk.done) {
        break;
      }
      buffer += decoder.decode(chunk.value, { stream: true });
      var blocks = buffer.split("\n\n");
      buffer = blocks.pop();
      blocks.forEach(function (block) {
        var event = "message";
        var data = [];
        block.split("\n").forEach(function (line) {
          if (line.indexOf("event:") === 0) {
            event = line.slice(6).trim();
          } else if (line.indexOf("data:") === 0) {
            data.push(line.slice(5).replace(/^ /, ""));
          }
        });
        if (data.length) {
          onEvent(event, JSON.parse(data.join("\n")));
        }
      });
    }
  }

  // --- the conversation -----------------------------------------------------------------
  function scroll() {
    log.scrollTop = log.scrollHeight;
  }

  function showError(message) {
    log.append(el("div", { class: "msg error", "data-test": "widget-error", role: "alert" }, message));
    scroll();
  }

  async function ask(question) {
    state.busy = true;
    send.disabled = true;
    log.append(el("div", { class: "msg user" }, question));
    var message = el("div", { class: "msg bot", "data-test": "answer" });
    var text = el("div", { class: "text", "data-test": "answer-text" });
    message.append(text);
    try {
      var response = await call("POST", "/v1/widget/ask", {
        question: question,
        conversation_id: state.conversation,
      });
      log.append(message);
      await readEvents(response, function (event, data) {
        if (event === "delta") {
          text.textContent += data.text;
        } else if (event === "citations") {
          showCitations(message, data);
        } else if (event === "done") {
          state.conversation = data.conversation_id || state.conversation;
          message.setAttribute("data-answer-id", data.answer_id || "");
          if (data.answer_id) {
            showActions(message, data.answer_id, data.handoff_suggested);
          }
        } else if (event === "error") {
          showError(t("failed") + data.message);
        }
        scroll();
      });
    } catch (error) {
      if (!text.textContent) {
        message.remove();
      }
      showError(error.message);
    } finally {
      state.busy = false;
      send.disabled = false;
    }
  }

  function showCitations(message, citations) {
    if (!citations.length) {
      return;
    }
    var box = el("div", { class: "cites", "data-test": "citations" });
    box.append(el("div", { class: "label" }, t("sources")));
    var list = el("ul");
    citations.forEach(function (cite) {
      var text = "[" + cite.index + "] " + cite.filename;
      if (cite.page != null) {
        text += " · " + pageLabel(cite.page);
      }
      var item = el("li");
      var button = el("button", { type: "button", class: "cite", "data-test": "citation" }, text);
      button.addEventListener("click", function () {
        openSource(cite);
      });
      item.append(button);
      list.append(item);
    });
    box.append(list);
    message.append(box);
  }

  function showActions(message, answerId, suggested) {
    var actions = el("div", { class: "actions" });
    var up = el("button", { type: "button", "data-test": "thumbs-up", "aria-pressed": "false" });
    var down = el("button", {
      type: "button",
      class: "down",
      "data-test": "thumbs-down",
      "aria-pressed": "false",
    });
    up.innerHTML = THUMB; // a constant of this file
    down.innerHTML = THUMB;
    up.setAttribute("aria-label", t("up"));
    down.setAttribute("aria-label", t("down"));
    var handoff = el("button", { type: "button", "data-test": "handoff" }, t("handoff"));
    handoff.hidden = !suggested;
    var note = el("span", { class: "note", "data-test": "note" });
    actions.append(up, down, handoff, note);
    message.append(actions);

    function rate(rating) {
      call("POST", "/v1/widget/feedback", { answer_id: answerId, rating: rating })
        .then(function (response) {
          return response.json();
        })
        .then(function (record) {
          up.setAttribute("aria-pressed", String(rating === 1));
          down.setAttribute("aria-pressed", String(rating === -1));
          note.textContent = t("thanks");
          if (record.handoff_suggested && !record.handoff_requested) {
            handoff.hidden = false;
          }
        })
        .catch(function (error) {
          note.textContent = error.message;
        });
    }
    up.addEventListener("click", function () {
      rate(1);
    });
    down.addEventListener("click", function () {
      rate(-1);
    });
    handoff.addEventListener("click", function () {
      handoff.disabled = true;
      call("POST", "/v1/widget/handoff", { answer_id: answerId })
        .then(function () {
          handoff.hidden = true;
          note.textContent = t("handoffDone");
        })
        .catch(function (error) {
          handoff.disabled = false;
          note.textContent = error.message;
        });
    });
  }

  // A citation's source: its page rendered with the passage highlighted, else the passage.
  function openSource(cite) {
    var viewer = el("div", { class: "viewer", "data-test": "source-viewer" });
    var top = el("div", { class: "head" });
    var title = cite.filename + (cite.page != null ? " · " + pageLabel(cite.page) : "");
    var back = el("button", { type: "button" }, "←");
    back.setAttribute("aria-label", t("back"));
    top.append(back, el("span", { class: "name" }, title));
    var body = el("div", { class: "body" });
    var quote = el("blockquote", { "data-test": "source-text" }, cite.text);
    body.append(quote);
    viewer.append(top, body);
    panel.append(viewer);
    var url = null;
    back.addEventListener("click", function () {
      viewer.remove();
      if (url) {
        URL.revokeObjectURL(url);
      }
    });
    if (cite.page == null) {
      body.prepend(el("p", {}, t("noImage")));
      return;
    }
    var path =
      "/v1/widget/sources/" + encodeURIComponent(cite.document_id) + "/pages/" + cite.page +
      ".png?chunk_id=" + encodeURIComponent(cite.chunk_id);
    call("GET", path)
      .then(function (response) {
        return response.blob();
      })
      .then(function (blob) {
        url = URL.createObjectURL(blob);
        var image = el("img", { src: url, alt: title, "data-test": "source-image" });
        body.prepend(image);
      })
      .catch(function () {
        body.prepend(el("p", {}, t("noImage")));
      });
  }

  // --- events ---------------------------------------------------------------------------
  function toggle(open) {
    panel.hidden = !open;
    bubble.setAttribute("aria-expanded", String(open));
    if (open) {
      loadConfig();
      input.focus();
    }
  }

  bubble.addEventListener("click", function () {
    toggle(panel.hidden);
  });
  closer.addEventListener("click", function () {
    toggle(false);
  });
  panel.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      toggle(false);
      bubble.focus();
    }
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var question = input.value.trim();
    if (!question || state.busy) {
      return;
    }
    input.value = "";
    var ready = state.config ? Promise.resolve() : loadConfig();
    ready.then(
      function () {
        ask(question);
      },
      function () {} // loadConfig has shown why
    );
  });

  label();
  function mount() {
    document.body.append(host);
  }
  if (document.body) {
    mount();
  } else {
    document.addEventListener("DOMContentLoaded", mount);
  }
})();
