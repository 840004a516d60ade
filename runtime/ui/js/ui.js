// Small DOM helpers shared by every view: element building (text only, never HTML strings,
// so nothing the API returns is ever parsed as markup), tables, forms, dialogs, toasts and
// formatting; and AiosPage, the base class of every view.

/**
 * Builds an element. `attrs`: `class`, `text`, `on<event>` handlers, `dataset`, boolean
 * attributes (true/false), other attributes as strings. Children: nodes, strings (as text),
 * arrays, null/false (skipped).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = !!v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let fieldSeq = 0;

/**
 * A labelled form field: `field("Name", h("input", {name: "name"}), "hint")`. The label is
 * tied to the control by id, so screen readers and tests find the control by its label.
 */
export function field(label, control, hint) {
  if (!control.id) control.id = `f${++fieldSeq}`;
  const hintEl = hint ? h("small", { class: "hint", id: `${control.id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control, hintEl);
}

/**
 * A table: `columns` are `{label, value: row => node|string, class?}`; `rows` an array.
 * Shows `empty` when there are no rows.
 */
export function table(columns, rows, { empty = "Nothing here yet.", caption, rowAttrs } = {}) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      caption ? h("caption", {}, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.class }, c.label)))),
      h(
        "tbody",
        {},
        rows.map((r) =>
          h(
            "tr",
            rowAttrs ? rowAttrs(r) : {},
            columns.map((c) => h("td", { class: c.class, "data-label": c.label }, c.value(r))),
          ),
        ),
      ),
    ),
  );
}

/** A short message at the corner of the screen; `kind`: "info", "ok" or "error". */
export function toast(message, kind = "info") {
  let box = document.getElementById("toasts");
  if (!box) {
    box = h("div", { id: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(box);
  }
  const t = h("div", { class: `toast ${kind}` }, message);
  box.append(t);
  setTimeout(() => t.remove(), kind === "error" ? 8000 : 4000);
}

/** Asks a yes/no question in a modal dialog; resolves to true on confirmation. */
export function confirmDialog(message, { confirm = "Confirm", danger = true } = {}) {
  return new Promise((resolve) => {
    const dlg = h(
      "dialog",
      { class: "confirm", "aria-label": "Confirm" },
      h("p", {}, message),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "secondary", onclick: () => dlg.close("no") }, "Cancel"),
        h("button", { type: "button", class: danger ? "danger" : "", onclick: () => dlg.close("yes") }, confirm),
      ),
    );
    dlg.addEventListener("close", () => {
      dlg.remove();
      resolve(dlg.returnValue === "yes");
    });
    document.body.append(dlg);
    dlg.showModal();
  });
}

/** A modal dialog holding `content`; returns {dialog, close}. */
export function modal(title, content) {
  const dlg = h(
    "dialog",
    { class: "modal", "aria-label": title },
    h("header", {}, h("h2", {}, title), h("button", { type: "button", class: "icon", "aria-label": "Close", onclick: () => dlg.close() }, "×")),
    content,
  );
  dlg.addEventListener("close", () => dlg.remove());
  document.body.append(dlg);
  dlg.showModal();
  return { dialog: dlg, close: () => dlg.close() };
}

/** An inline error message for `err` (an ApiError or anything with a message). */
export function errorBox(err) {
  return h("div", { class: "error", role: "alert" }, err?.detail ?? err?.message ?? String(err));
}

/** Runs `fn` for a button, disabling it meanwhile and toasting a failure. */
export async function busy(button, fn) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await fn();
  } catch (e) {
    toast(e.detail ?? e.message ?? String(e), "error");
    return undefined;
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

/** Reads a form's named controls into an object (empty strings left out). */
export function formData(form) {
  const out = {};
  for (const [k, v] of new FormData(form).entries()) {
    if (v !== "") out[k] = v;
  }
  return out;
}

// ---- formatting ----

/** `2026-11-25 19:03:04` in local time. */
export function fmtTime(ms) {
  if (!ms) return "—";
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** `3 s ago`, `5 min ago`, ... */
export function fmtAgo(ms) {
  if (!ms) return "—";
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 60) return `${Math.max(s, 0)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** A duration in seconds as `1 h 2 min`. */
export function fmtDuration(s) {
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export const fmtNum = (n) => (n ?? 0).toLocaleString("en-US");
export const fmtUsd = (n) => `$${(n ?? 0).toFixed((n ?? 0) < 1 ? 4 : 2)}`;

/** A status badge: `badge("running", "ok")`. */
export const badge = (text, kind = "") => h("span", { class: `badge ${kind}` }, text);

/**
 * The base of every view. A view is a custom element (`aios-page-<name>`); the router
 * creates it with `route` (the rest of the location hash, for example the agent's name) and
 * removes it on navigation. Subclasses implement `async load()`, which fills the element;
 * resources registered with `cleanup(fn)` (sockets, timers) are released on removal.
 */
export class AiosPage extends HTMLElement {
  connectedCallback() {
    this._cleanups = [];
    this.classList.add("page");
    Promise.resolve()
      .then(() => this.load())
      .catch((e) => this.replaceChildren(errorBox(e)));
  }

  disconnectedCallback() {
    for (const fn of this._cleanups ?? []) fn();
    this._cleanups = [];
  }

  /**
   * Runs `fn` when the view is removed; at once if it already was (a `load()` that was still
   * awaiting when the user navigated away must not leave a socket or timer behind).
   */
  cleanup(fn) {
    if (!this.isConnected) fn();
    else this._cleanups.push(fn);
  }

  /** The application: `app.me` (key id, role, tenant), `app.prefs`, `app.can(role)`. */
  get app() {
    return window.aios;
  }

  /** The view's route parameter (after `#/<view>/`), or "". */
  get route() {
    return this.getAttribute("route") ?? "";
  }

  /** Fills the view. */
  async load() {}
}

/** A page header: a title and optional actions. */
export function pageHeader(title, ...actions) {
  return h("header", { class: "page-header" }, h("h1", {}, title), h("div", { class: "actions" }, actions));
}

/** A small "live" indicator bound to a socket's state. */
export function liveIndicator() {
  const el = h("span", { class: "live connecting", role: "status", "aria-live": "polite" }, "connecting");
  el.set = (state) => {
    el.className = `live ${state}`;
    el.textContent = state === "open" ? "live" : state === "closed" ? "reconnecting…" : "connecting";
  };
  return el;
}

/** Copies `text`; when the clipboard refuses, selects `el`'s text so it can be copied by hand. */
export async function copyText(text, el) {
  try {
    await navigator.clipboard.writeText(text);
    toast("Copied to the clipboard.", "ok");
  } catch (e) {
    const range = document.createRange();
    range.selectNodeContents(el);
    const sel = getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    toast(`Could not copy (${e.message}): the text is selected, press Ctrl+C.`, "error");
  }
}

/** A secret shown once (`code.secret`): the warning, the secret and a Copy button. */
export function secretBlock(secret, what, note = "") {
  const code = h("code", { class: "secret" }, secret);
  const copy = h("button", { type: "button", class: "secondary small", onclick: () => copyText(secret, code) }, "Copy");
  return h(
    "div",
    { class: "secret-box" },
    h("p", { class: "secret-warning", role: "alert" }, `Copy ${what} now: it will not be shown again.${note ? ` ${note}` : ""}`),
    h("div", { class: "secret-row" }, code, copy),
  );
}
