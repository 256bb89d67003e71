// Small DOM helpers. Text always goes in through textContent, never innerHTML: document text
// and file names are untrusted.

import { t } from "./i18n.js";

// h("button.primary", {onclick, type: "submit"}, "Save") -> <button class="primary">Save</button>
// ("main#view.wide" gives an id too.)
export function h(tag, attrs = {}, ...children) {
  const [head, ...classes] = tag.split(".");
  const [name, id] = head.split("#");
  const el = document.createElement(name || "div");
  if (id) el.id = id;
  if (classes.length) el.className = classes.join(" ");
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key in el && typeof value !== "string") {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : value);
    }
  }
  append(el, children);
  return el;
}

// Children may be nested arrays at any depth (a view maps rows to [cell, cell] pairs): all are
// flattened, so an array never reaches the page as "[object HTMLElement],…" text.
function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function formatBytes(n) {
  if (n == null) return "–";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

// Local time as YYYY-MM-DD HH:MM:SS: unambiguous in either language.
export function formatDate(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  const p = (n) => String(n).padStart(2, "0");
  const date = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
  return `${date} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function formatDuration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return t("time.s", { s });
  if (s < 3600) return t("time.ms", { m: Math.floor(s / 60), s: s % 60 });
  return t("time.hm", { h: Math.floor(s / 3600), m: Math.floor((s % 3600) / 60) });
}

// A progress bar; `fraction` null draws an indeterminate bar.
export function progressBar(fraction, text) {
  const bar = h("div.progress", { role: "progressbar" });
  const wrap = h("div.progress-wrap", {}, bar);
  const fill = h("div.progress-fill");
  if (fraction == null) {
    bar.classList.add("indeterminate");
  } else {
    const pct = Math.max(0, Math.min(100, fraction * 100));
    fill.style.width = `${pct}%`;
    bar.setAttribute("aria-valuenow", String(Math.round(pct)));
  }
  bar.append(fill);
  if (text) wrap.append(h("span.progress-text", {}, text));
  return wrap;
}

export function badge(kind, text) {
  return h(`span.badge.badge-${kind}`, {}, text);
}

let toastTimer = null;

export function toast(message, kind = "info") {
  const box = document.getElementById("toast");
  clear(box, message);
  box.className = `toast toast-${kind} visible`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => box.classList.remove("visible"), 4000);
}

// An in-page confirmation (window.confirm blocks, cannot be styled or translated).
export function confirmDialog(message) {
  return new Promise((resolve) => {
    const close = (answer) => {
      overlay.remove();
      resolve(answer);
    };
    const ok = h(
      "button.primary.danger",
      { type: "button", onclick: () => close(true) },
      t("common.confirm"),
    );
    const overlay = h(
      "div.modal-overlay",
      { onclick: (e) => e.target === overlay && close(false) },
      h(
        "div.modal",
        { role: "dialog", "aria-modal": "true" },
        h("p", {}, message),
        h(
          "div.modal-actions",
          {},
          h("button", { type: "button", onclick: () => close(false) }, t("common.cancel")),
          ok,
        ),
      ),
    );
    document.body.append(overlay);
    ok.focus();
  });
}

// Repeats `fn` every `ms` until stopped; waits for each run to finish before scheduling.
export function poller(fn, ms) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    try {
      await fn();
    } finally {
      if (!stopped) timer = setTimeout(tick, typeof ms === "function" ? ms() : ms);
    }
  };
  timer = setTimeout(tick, 0);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
