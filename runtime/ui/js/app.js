// The application shell: sign-in with an API key, the signed-in session (idle expiry, the
// key's own expiry, sign-out), preferences stored server-side per key, the navigation
// (only what the key's role and tenant may use) and the hash router that mounts one view
// (a custom element `aios-page-<name>`) at a time.

import { ApiError, get, put, setKey, onUnauthorized } from "./api.js";
import { h, replace, field, errorBox } from "./ui.js";
import "./pages/dashboard.js";
import "./pages/tree.js";
import "./pages/agents.js";
import "./pages/chat.js";
import "./pages/runs.js";
import "./pages/schedules.js";
import "./pages/sessions.js";
import "./pages/tools.js";
import "./pages/memory.js";
import "./pages/costs.js";
import "./pages/audit.js";
import "./pages/keys.js";
import "./pages/webhooks.js";
import "./pages/settings.js";

const ROLES = ["viewer", "operator", "admin"];
const KEY_STORAGE = "aios.key";
const ACTIVITY_STORAGE = "aios.lastActivity";

/** Preferences every key starts with. */
export const DEFAULT_PREFS = { theme: "system", default_agent: "", page_size: 50, session_minutes: 60 };

/** The views: hash name, label, least role, node-wide (operator tenant only). */
const VIEWS = [
  { name: "dashboard", label: "Dashboard", role: "viewer" },
  { name: "tree", label: "Supervision tree", role: "operator", node: true },
  { name: "agents", label: "Agents", role: "viewer" },
  { name: "chat", label: "Chat", role: "viewer" },
  { name: "runs", label: "Runs", role: "viewer" },
  { name: "schedules", label: "Schedules", role: "viewer" },
  { name: "sessions", label: "Sessions", role: "viewer" },
  { name: "tools", label: "Tools", role: "viewer" },
  { name: "memory", label: "Memory", role: "viewer" },
  { name: "costs", label: "Costs", role: "viewer" },
  { name: "audit", label: "Audit log", role: "admin" },
  { name: "keys", label: "API keys", role: "admin" },
  { name: "webhooks", label: "Webhooks", role: "admin" },
  { name: "settings", label: "Settings", role: "viewer" },
];

/** Script errors, rejected promises nobody handled and CSP violations, newest last. */
const errors = [];
function recordError(text) {
  errors.push(text);
  if (errors.length > 100) errors.shift();
  console.error(text);
}
addEventListener("error", (e) => recordError(`error: ${e.message} (${e.filename}:${e.lineno})`));
addEventListener("unhandledrejection", (e) => recordError(`unhandled rejection: ${e.reason?.detail ?? e.reason?.message ?? e.reason}`));
addEventListener("securitypolicyviolation", (e) => recordError(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`));

const app = {
  /** What went wrong in this page so far (the browser tests check it stays empty). */
  errors,
  /** `/v1/me`: key_id, role, tenant, operator_tenant, name, expires_ms, version. */
  me: null,
  /** The key's preferences (DEFAULT_PREFS merged with what the daemon stores). */
  prefs: { ...DEFAULT_PREFS },
  /** Whether the signed-in key has at least `role`. */
  can(role) {
    return !!this.me && ROLES.indexOf(this.me.role) >= ROLES.indexOf(role);
  },
  /** Stores `changes` in the key's preferences on the daemon, and applies them. */
  async savePrefs(changes) {
    const next = { ...this.prefs, ...changes };
    const saved = await put("/v1/preferences", next);
    this.prefs = { ...DEFAULT_PREFS, ...saved };
    applyTheme();
  },
  signOut,
};
window.aios = app;

let expiryTimer = null;

function storedKey() {
  return sessionStorage.getItem(KEY_STORAGE) ?? localStorage.getItem(KEY_STORAGE);
}

function applyTheme() {
  document.documentElement.dataset.theme = app.prefs.theme ?? "system";
}

/** Signs out: forgets the key, closes every view (and its sockets), shows the sign-in. */
function signOut(reason) {
  sessionStorage.removeItem(KEY_STORAGE);
  localStorage.removeItem(KEY_STORAGE);
  localStorage.removeItem(ACTIVITY_STORAGE);
  setKey(null);
  app.me = null;
  clearInterval(expiryTimer);
  showSignIn(reason);
}

onUnauthorized((detail) => {
  if (app.me) signOut(`Signed out: ${detail}`);
});

function showSignIn(message) {
  const input = h("input", {
    name: "key",
    type: "password",
    autocomplete: "current-password",
    required: true,
    placeholder: "aios_…",
    spellcheck: "false",
  });
  const remember = h("input", { type: "checkbox", name: "remember" });
  const status = h("div", { class: "signin-status", role: "alert", "aria-live": "assertive" }, message ? errorBox(message) : null);
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h(
    "form",
    {
      class: "signin card",
      "aria-labelledby": "signin-title",
      onsubmit: async (e) => {
        e.preventDefault();
        button.disabled = true;
        try {
          const key = input.value.trim();
          const me = await get("/v1/me", { key });
          (remember.checked ? localStorage : sessionStorage).setItem(KEY_STORAGE, key);
          await start(key, me);
        } catch (err) {
          replace(status, errorBox(err instanceof ApiError && err.status === 401 ? `This key was refused: ${err.detail}` : err));
        } finally {
          button.disabled = false;
        }
      },
    },
    h("h1", { id: "signin-title" }, "AIOS"),
    h("p", {}, "Sign in with an API key. aiosd printed the first admin key when it created its data directory; aiosctl keys create makes more."),
    field("API key", input),
    h("label", { class: "check" }, remember, " Remember on this device"),
    status,
    button,
  );
  replace(document.getElementById("app"), h("main", { class: "signin-wrap" }, form));
  document.title = "Sign in · AIOS";
  input.focus();
}

async function start(key, me) {
  setKey(key);
  app.me = me;
  try {
    app.prefs = { ...DEFAULT_PREFS, ...((await get("/v1/preferences")) ?? {}) };
  } catch {
    app.prefs = { ...DEFAULT_PREFS };
  }
  applyTheme();
  touch();
  renderShell();
  clearInterval(expiryTimer);
  expiryTimer = setInterval(checkExpiry, 15000);
  route();
}

/** Records activity (shared across tabs through localStorage). */
function touch() {
  localStorage.setItem(ACTIVITY_STORAGE, String(Date.now()));
}

function checkExpiry() {
  if (!app.me) return;
  const idleMs = Date.now() - Number(localStorage.getItem(ACTIVITY_STORAGE) ?? Date.now());
  const limit = Math.max(1, Number(app.prefs.session_minutes) || DEFAULT_PREFS.session_minutes) * 60000;
  if (idleMs > limit) signOut("Signed out after a period without activity.");
  else if (app.me.expires_ms && Date.now() >= app.me.expires_ms) signOut("Signed out: the key has expired.");
}

for (const ev of ["keydown", "pointerdown", "wheel"]) {
  addEventListener(ev, () => app.me && touch(), { passive: true });
}

function renderShell() {
  const nav = h(
    "nav",
    { id: "nav", "aria-label": "Main" },
    h(
      "ul",
      {},
      VIEWS.filter(visible).map((v) => h("li", {}, h("a", { href: `#/${v.name}`, dataset: { view: v.name } }, v.label))),
    ),
  );
  const toggle = h(
    "button",
    {
      type: "button",
      class: "icon menu-toggle",
      "aria-controls": "nav",
      "aria-expanded": "false",
      "aria-label": "Menu",
      onclick: () => {
        const open = document.body.classList.toggle("nav-open");
        toggle.setAttribute("aria-expanded", String(open));
      },
    },
    "☰",
  );
  const who = h(
    "span",
    { class: "who", title: `key ${app.me.key_id}` },
    `${app.me.name || app.me.key_id} · ${app.me.role} · tenant ${app.me.tenant}`,
  );
  replace(
    document.getElementById("app"),
    h("a", { class: "skip", href: "#main" }, "Skip to content"),
    h(
      "header",
      { class: "top" },
      toggle,
      h("a", { class: "brand", href: "#/dashboard" }, "AIOS"),
      h("span", { class: "version" }, `aiosd ${app.me.version ?? ""}`),
      h("span", { class: "spacer" }),
      who,
      h("button", { type: "button", class: "secondary", onclick: () => signOut() }, "Sign out"),
    ),
    h("div", { class: "body" }, nav, h("main", { id: "main", tabindex: "-1" })),
  );
}

function visible(view) {
  return app.can(view.role) && (!view.node || app.me.operator_tenant);
}

/** Mounts the view the location hash names (`#/agents/echo` → aios-page-agents, "echo"). */
function route() {
  if (!app.me) return;
  const main = document.getElementById("main");
  if (!main) return;
  const [name, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  const view = VIEWS.find((v) => v.name === name && visible(v));
  if (!view) {
    location.replace("#/dashboard");
    if (name === "dashboard") return;
    return;
  }
  const el = document.createElement(`aios-page-${view.name}`);
  let param;
  try {
    param = rest.map(decodeURIComponent).join("/");
  } catch {
    location.replace(`#/${view.name}`);
    return;
  }
  el.setAttribute("route", param);
  replace(main, el);
  document.title = `${view.label} · AIOS`;
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.view === view.name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.body.classList.remove("nav-open");
}

addEventListener("hashchange", route);

async function boot() {
  const key = storedKey();
  if (!key) return showSignIn();
  try {
    const me = await get("/v1/me", { key });
    await start(key, me);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) signOut(`Signed out: ${err.detail}`);
    else showSignIn(err.detail ?? String(err));
  }
}

boot();
