// The console's shell: sign-in, header (knowledge base, views, language), hash routing.

import { api, session } from "./api.js";
import { clear, h, toast } from "./dom.js";
import { errorText } from "./errors.js";
import { getLang, setLang, t } from "./i18n.js";
import * as analyticsView from "./views/analytics.js";
import * as askView from "./views/ask.js";
import * as assistantsView from "./views/assistants.js";
import * as documentsView from "./views/documents.js";
import * as jobsView from "./views/jobs.js";
import * as kbsView from "./views/kbs.js";

const VIEWS = {
  kbs: kbsView,
  documents: documentsView,
  ask: askView,
  assistants: assistantsView,
  analytics: analyticsView,
  jobs: jobsView,
};
const KB_STORE = "kbqa.kb";

const root = document.getElementById("app");
let mounted = null; // the current view module, for unmount()

const ctx = {
  kbs: [],
  get kbId() {
    return sessionStorage.getItem(KB_STORE);
  },
  get kb() {
    return this.kbs.find((k) => k.id === this.kbId) || null;
  },
  selectKb(id) {
    if (id) sessionStorage.setItem(KB_STORE, id);
    else sessionStorage.removeItem(KB_STORE);
    renderKbPicker();
  },
  async refreshKbs() {
    const body = await api.listKbs();
    this.kbs = body.knowledge_bases;
    if (!this.kb) this.selectKb(this.kbs.length ? this.kbs[0].id : null);
    renderKbPicker();
    return this.kbs;
  },
  go(view) {
    window.location.hash = `#/${view}`;
  },
  // A 401 means the key was revoked or expired mid-session: back to sign-in.
  failed(exc, context) {
    if (exc.status === 401) {
      signOut(errorText(exc));
      return;
    }
    toast(t("common.error", { message: errorText(exc, context) }), "error");
  },
};

function currentView() {
  const name = window.location.hash.replace(/^#\/?/, "").split("/")[0];
  return name in VIEWS ? name : "kbs";
}

function langButton(onSwitch) {
  return h(
    "button.lang",
    {
      type: "button",
      "data-test": "lang",
      onclick: () => {
        setLang(getLang() === "zh" ? "en" : "zh");
        onSwitch();
      },
    },
    t("lang.switch"),
  );
}

// --- sign-in ---------------------------------------------------------------------------------

function renderSignIn(message) {
  unmount();
  const error = h("p.form-error", { role: "alert" }, message || "");
  const keyInput = h("input", {
    id: "api-key",
    name: "api-key",
    type: "password",
    autocomplete: "off",
    required: true,
    placeholder: "kbqa_…",
  });
  const openNote = h("div.open-note");
  const submit = h("button.primary", { type: "submit" }, t("signin.submit"));
  let open = false; // the server takes requests without a key (loopback, no key created yet)

  // The key is tried on a real request before anything else: the server refuses a wrong one,
  // in open mode too, and the refusal is shown here instead of a console that fails later.
  const tryKey = async (key) => {
    error.textContent = t("signin.checking");
    error.dataset.state = "checking";
    submit.disabled = true;
    try {
      const body = await api.listKbs(key);
      session.signIn(key);
      ctx.kbs = body.knowledge_bases;
      start();
    } catch (exc) {
      const reason = open && key && exc.status === 401 ? t("signin.open_rejected") : errorText(exc);
      error.textContent = t(exc.status ? "signin.rejected" : "signin.unreachable", {
        message: reason,
      });
      error.dataset.state = "rejected";
    } finally {
      submit.disabled = false;
    }
  };

  const form = h(
    "form.signin",
    {
      onsubmit: (e) => {
        e.preventDefault();
        tryKey(keyInput.value.trim());
      },
    },
    h(
      "div.signin-head",
      {},
      h("h1", {}, t("app.title")),
      langButton(() => renderSignIn()),
    ),
    h("h2", {}, t("signin.title")),
    h("p.muted", {}, t("signin.lead")),
    h("label", { for: "api-key" }, t("signin.key")),
    keyInput,
    submit,
    error,
    openNote,
    h(
      "p.muted.small",
      {},
      t("signin.hint"),
      " ",
      h("code", {}, "rag keys create --tenant default --scopes admin"),
    ),
  );
  clear(root, h("main.signin-page", {}, form));
  keyInput.focus();

  // Tell the user when the server needs no key (loopback, no keys created yet).
  api
    .ready()
    .then((ready) => {
      if (ready?.checks?.auth?.mode !== "open") return;
      open = true;
      clear(
        openNote,
        h("p", {}, t("signin.open")),
        h("button", { type: "button", onclick: () => tryKey("") }, t("signin.continue_open")),
      );
    })
    .catch(() => {});
}

function signOut(message) {
  session.signOut();
  document.getElementById("toast").classList.remove("visible");
  sessionStorage.removeItem(KB_STORE);
  renderSignIn(message);
}

// --- shell -----------------------------------------------------------------------------------

let picker = null;

function renderKbPicker() {
  if (!picker) return;
  const options = ctx.kbs.map((kb) =>
    h("option", { value: kb.id, selected: kb.id === ctx.kbId }, kb.name),
  );
  if (!options.length) options.push(h("option", { value: "" }, t("kb.none")));
  clear(picker, options);
}

function renderShell() {
  picker = h("select#kb-picker", {
    "aria-label": t("kb.current"),
    onchange: () => {
      ctx.selectKb(picker.value);
      mountView();
    },
  });
  renderKbPicker();
  const view = currentView();
  const nav = h(
    "nav.tabs",
    {},
    Object.keys(VIEWS).map((name) =>
      h(
        `a.tab${name === view ? ".active" : ""}`,
        { href: `#/${name}`, "data-view": name },
        t(`nav.${name}`),
      ),
    ),
  );
  const header = h(
    "header.topbar",
    {},
    h("div.brand", {}, t("app.title")),
    nav,
    h("div.spacer"),
    h("label.kb-label", { for: "kb-picker" }, t("kb.current")),
    picker,
    langButton(() => {
      renderShell();
    }),
    h("button.link", { type: "button", onclick: () => signOut() }, t("signout")),
  );
  clear(root, header, h("main#view.view"));
  mountView();
}

function unmount() {
  if (mounted?.unmount) mounted.unmount();
  mounted = null;
}

function mountView() {
  unmount();
  const container = document.getElementById("view");
  if (!container) return;
  const name = currentView();
  for (const tab of document.querySelectorAll("nav.tabs a")) {
    tab.classList.toggle("active", tab.dataset.view === name);
  }
  mounted = VIEWS[name];
  mounted.mount(container, ctx);
}

async function start() {
  try {
    await ctx.refreshKbs();
  } catch (exc) {
    if (exc.status === 401) {
      signOut(errorText(exc));
      return;
    }
  }
  renderShell();
}

window.addEventListener("hashchange", () => {
  if (session.signedIn && document.getElementById("view")) mountView();
});

setLang(getLang());
if (session.signedIn) start();
else renderSignIn();
