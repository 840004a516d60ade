// API keys of the signed-in key's tenant (admins only): the list with each key's status
// (active, expiring, expired, revoked), creating a key (its secret is shown once), rotating
// one with an overlap during which the old key keeps working, and revoking one.

import { get, post, del, seg } from "../api.js";
import {
  AiosPage,
  h,
  replace,
  pageHeader,
  field,
  table,
  toast,
  confirmDialog,
  modal,
  errorBox,
  badge,
  fmtTime,
  fmtAgo,
  fmtDuration,
  secretBlock,
} from "../ui.js";

/** A key expiring sooner than this is shown as "expiring". */
const EXPIRING_MS = 3 * 24 * 3600 * 1000;
/** The API's longest rotation overlap (ROTATION_OVERLAP_MAX_MS), in seconds. */
const OVERLAP_MAX_S = 30 * 24 * 3600;
/** The API's default rotation overlap, in seconds. */
const OVERLAP_DEFAULT_S = 24 * 3600;
const ROLES = [
  ["viewer", "reads everything of its tenant"],
  ["operator", "also runs agents, writes memory, tests tools, restarts actors"],
  ["admin", "also manages keys, tools, webhooks, quotas and reads the audit log"],
];
const EXPIRY_CHOICES = [
  ["", "Never"],
  ["1", "In 1 day"],
  ["7", "In 7 days"],
  ["30", "In 30 days"],
  ["90", "In 90 days"],
  ["365", "In 1 year"],
  ["date", "On a date…"],
];

/** A key's status: {label, kind} for its badge. */
function keyStatus(k, now = Date.now()) {
  if (k.revoked_ms) return { label: "revoked", kind: "bad" };
  if (k.expires_ms && k.expires_ms <= now) return { label: "expired", kind: "bad" };
  if (k.expires_ms && k.expires_ms - now < EXPIRING_MS) return { label: "expiring", kind: "warn" };
  return { label: "active", kind: "ok" };
}

/** An API failure as an inline message, with what the page was doing. */
function failure(err, doing) {
  if (err?.status === 403) {
    return errorBox(`Managing API keys needs an admin key: ${err.detail}`);
  }
  return errorBox(`${doing}: ${err?.detail ?? err?.message ?? String(err)}`);
}

/** Runs `fn` for a form's submit button, showing a failure in `status` (and keeping it). */
async function submitting(button, status, fn) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  replace(status);
  try {
    return await fn();
  } catch (e) {
    replace(status, errorBox(e.detail ?? e.message ?? String(e)));
    return undefined;
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

class KeysPage extends AiosPage {
  async load() {
    this.keys = [];
    this.hideInactive = false;
    this.list = h("div", { class: "keys-list", "aria-live": "polite" }, h("p", { class: "loading" }, "Loading…"));
    const hide = h("input", {
      type: "checkbox",
      name: "hide_inactive",
      onchange: () => {
        this.hideInactive = hide.checked;
        this.render();
      },
    });
    replace(
      this,
      pageHeader(
        "API keys",
        h("button", { type: "button", onclick: () => this.openCreate() }, "New key"),
        h("button", { type: "button", class: "secondary", onclick: (e) => this.refresh(e.currentTarget) }, "Refresh"),
      ),
      h(
        "p",
        { class: "muted" },
        `Keys of tenant ${this.app.me.tenant}. A key's secret is shown once, when it is created or rotated; only its hash is kept.`,
      ),
      h("label", { class: "check" }, hide, " Hide revoked and expired keys"),
      this.list,
    );
    await this.refresh();
  }

  /** Reloads the list. */
  async refresh(button) {
    if (button) button.disabled = true;
    try {
      const r = await get("/v1/keys");
      this.keys = r.items ?? [];
      this.render();
    } catch (e) {
      replace(this.list, failure(e, "Cannot list the keys"));
    } finally {
      if (button) button.disabled = false;
    }
  }

  render() {
    const me = this.app.me;
    const now = Date.now();
    const rank = { active: 0, expiring: 0, expired: 1, revoked: 2 };
    let rows = [...this.keys].sort(
      (a, b) => rank[keyStatus(a, now).label] - rank[keyStatus(b, now).label] || b.created_ms - a.created_ms,
    );
    const hidden = this.hideInactive ? rows.filter((k) => rank[keyStatus(k, now).label] > 0).length : 0;
    if (this.hideInactive) rows = rows.filter((k) => rank[keyStatus(k, now).label] === 0);
    const columns = [
      {
        label: "Name",
        value: (k) => [k.name || h("span", { class: "muted" }, "(no name)"), k.id === me.key_id ? [" ", badge("this session")] : null],
      },
      {
        label: "ID",
        value: (k) => h("a", { class: "mono", href: `#/audit/key_id=${seg(k.id)}`, title: "Audit log entries of this key" }, k.id),
      },
      { label: "Role", value: (k) => k.role },
      { label: "Tenant", value: (k) => k.tenant },
      {
        label: "Status",
        value: (k) => {
          const s = keyStatus(k, now);
          let note = null;
          if (s.label === "expiring") note = `in ${fmtDuration(Math.max(0, Math.round((k.expires_ms - now) / 1000)))}`;
          if (s.label === "revoked") note = fmtTime(k.revoked_ms);
          return [badge(s.label, s.kind), note ? h("small", { class: "hint" }, note) : null];
        },
      },
      { label: "Created", value: (k) => h("span", { title: fmtAgo(k.created_ms) }, fmtTime(k.created_ms)) },
      { label: "Expires", value: (k) => (k.expires_ms ? fmtTime(k.expires_ms) : h("span", { class: "muted" }, "never")) },
      { label: "Replaced by", value: (k) => (k.replaced_by ? h("span", { class: "mono" }, k.replaced_by) : "—") },
      {
        label: "Actions",
        class: "key-actions",
        value: (k) => {
          const label = k.name ? `${k.name} (${k.id})` : k.id;
          return h(
            "div",
            { class: "row" },
            h(
              "button",
              {
                type: "button",
                class: "secondary small",
                // The API refuses to rotate a revoked, expired or already rotated key.
                disabled: keyStatus(k, now).kind === "bad" || !!k.replaced_by,
                title: k.replaced_by
                  ? `Key ${label} was already rotated: rotate its replacement ${k.replaced_by}`
                  : keyStatus(k, now).kind === "bad"
                    ? `Key ${label} is ${keyStatus(k, now).label}: it cannot be rotated`
                    : `Rotate key ${label}`,
                onclick: () => this.openRotate(k),
              },
              "Rotate",
            ),
            h(
              "button",
              {
                type: "button",
                class: "danger small",
                disabled: !!k.revoked_ms,
                title: `Revoke key ${label}`,
                onclick: (e) => this.revoke(k, e.currentTarget),
              },
              "Revoke",
            ),
          );
        },
      },
    ];
    replace(
      this.list,
      table(columns, rows, {
        empty: this.keys.length ? "Every key is revoked or expired." : "No keys.",
        caption: `${rows.length} key${rows.length === 1 ? "" : "s"}${hidden ? ` (${hidden} revoked or expired hidden)` : ""}`,
        rowAttrs: (k) => ({ "data-key-id": k.id, class: k.id === me.key_id ? "current-key" : null }),
      }),
    );
  }

  /** The "New key" dialog: the form, then the secret. */
  openCreate() {
    const me = this.app.me;
    const name = h("input", { name: "name", maxlength: "128", autocomplete: "off", placeholder: "e.g. ci-deploy" });
    const role = h(
      "select",
      { name: "role" },
      ROLES.map(([r]) => h("option", { value: r }, r)),
    );
    const roleField = field("Role", role, ROLES[0][1]);
    const roleHint = roleField.querySelector(".hint");
    const describeRole = () => {
      roleHint.textContent = `${role.value}: ${ROLES.find(([r]) => r === role.value)[1]}.`;
    };
    role.addEventListener("change", describeRole);
    describeRole();
    const tenant = me.operator_tenant
      ? h("input", {
          name: "tenant",
          autocomplete: "off",
          pattern: "[a-z0-9_\\-]{1,32}",
          maxlength: "32",
          placeholder: me.tenant,
          title: "1 to 32 of a-z, 0-9, _ and -",
        })
      : null;
    const expiry = h(
      "select",
      { name: "expires_in" },
      EXPIRY_CHOICES.map(([v, label]) => h("option", { value: v }, label)),
    );
    const date = h("input", { type: "datetime-local", name: "expires_at" });
    const dateField = field("Expires at", date, "Local time.");
    dateField.hidden = true;
    expiry.addEventListener("change", () => {
      dateField.hidden = expiry.value !== "date";
      date.required = expiry.value === "date";
    });
    const status = h("div", { class: "form-status", "aria-live": "assertive" });
    const submit = h("button", { type: "submit" }, "Create");
    const body = h("div", { class: "modal-body" });
    const dlg = modal("New key", body);
    const form = h(
      "form",
      {
        class: "key-form",
        onsubmit: (e) => {
          e.preventDefault();
          submitting(submit, status, async () => {
            const req = { name: name.value.trim(), role: role.value };
            if (tenant && tenant.value.trim()) req.tenant = tenant.value.trim();
            if (expiry.value === "date") {
              const ms = new Date(date.value).getTime();
              if (!Number.isFinite(ms)) throw new Error("Expires at: choose a date and time.");
              if (ms <= Date.now()) throw new Error("Expires at: must be in the future.");
              req.expires_ms = ms;
            } else if (expiry.value) {
              req.expires_ms = Date.now() + Number(expiry.value) * 24 * 3600 * 1000;
            }
            const r = await post("/v1/keys", req);
            const k = r.key;
            const elsewhere = k.tenant !== me.tenant;
            const done = h("button", { type: "button", onclick: () => dlg.close() }, "Done");
            replace(
              body,
              h(
                "p",
                {},
                "Key ",
                h("code", {}, k.id),
                ` (${k.name || "no name"}, ${k.role}, tenant ${k.tenant}) was created`,
                k.expires_ms ? `; it expires ${fmtTime(k.expires_ms)}.` : "; it does not expire.",
              ),
              elsewhere
                ? h("p", { class: "muted" }, `It belongs to tenant ${k.tenant}, so it is not listed here: only that tenant's admins see it.`)
                : null,
              secretBlock(r.secret, "the key", "Only a hash of it is kept."),
              h("div", { class: "actions" }, done),
            );
            body.querySelector(".secret-row button")?.focus();
            toast(`Key ${k.id} created.`, "ok");
            this.refresh();
          });
        },
      },
      field("Name", name, "A label, to tell keys apart (at most 128 characters)."),
      roleField,
      tenant ? field("Tenant", tenant, `Leave empty for ${me.tenant}. Keys of another tenant are managed by that tenant's admins.`) : null,
      field("Expires", expiry),
      dateField,
      status,
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "secondary", onclick: () => dlg.close() }, "Cancel"),
        submit,
      ),
    );
    body.append(form);
    name.focus();
  }

  /** The "Rotate" dialog for key `k`: the overlap, then the new secret. */
  openRotate(k) {
    const me = this.app.me;
    const own = k.id === me.key_id;
    const overlap = h("input", {
      type: "number",
      name: "overlap_s",
      min: "0",
      max: String(OVERLAP_MAX_S),
      step: "1",
      required: true,
      value: String(OVERLAP_DEFAULT_S),
      inputmode: "numeric",
    });
    const overlapField = field(
      "Old key stays valid for (seconds)",
      overlap,
      `0 ends it at once; at most ${OVERLAP_MAX_S} (30 days). Default ${OVERLAP_DEFAULT_S} (24 h).`,
    );
    const spelled = h("small", { class: "hint", "aria-live": "polite" });
    const spell = () => {
      const s = Number(overlap.value);
      spelled.textContent = overlap.value !== "" && Number.isInteger(s) && s >= 0 ? `= ${fmtDuration(s)}` : "";
    };
    overlap.addEventListener("input", spell);
    spell();
    overlapField.append(spelled);
    const status = h("div", { class: "form-status", "aria-live": "assertive" });
    const submit = h("button", { type: "submit" }, "Rotate");
    const body = h("div", { class: "modal-body" });
    const dlg = modal(`Rotate key ${k.name || k.id}`, body);
    // Rotating the session's own key: the list is reloaded once the dialog is closed, so a
    // short overlap does not sign out (and hide the new secret) before it is copied.
    let reloadOnClose = false;
    dlg.dialog.addEventListener("close", () => reloadOnClose && this.refresh());
    const form = h(
      "form",
      {
        class: "key-form",
        onsubmit: (e) => {
          e.preventDefault();
          submitting(submit, status, async () => {
            const s = Number(overlap.value);
            if (!Number.isInteger(s) || s < 0 || s > OVERLAP_MAX_S) {
              throw new Error(`Old key stays valid for: a whole number of seconds from 0 to ${OVERLAP_MAX_S}.`);
            }
            const r = await post(`/v1/keys/${seg(k.id)}/rotate`, { overlap_ms: s * 1000 });
            const until = Date.now() + s * 1000;
            if (own) {
              // The session's key now expires: let the shell's expiry check know.
              me.expires_ms = me.expires_ms ? Math.min(me.expires_ms, until) : until;
              reloadOnClose = true;
            }
            const done = h("button", { type: "button", onclick: () => dlg.close() }, "Done");
            replace(
              body,
              h(
                "p",
                {},
                "New key ",
                h("code", {}, r.key.id),
                " replaces ",
                h("code", {}, k.id),
                s ? `, which keeps working until ${fmtTime(until)}.` : ", which no longer works.",
              ),
              own
                ? h(
                    "p",
                    { class: "warning-box" },
                    `This session uses the old key: sign in with the new key ${s ? `before ${fmtTime(until)}` : "now"}.`,
                  )
                : null,
              secretBlock(r.secret, "the new key", "Only a hash of it is kept."),
              h("div", { class: "actions" }, done),
            );
            body.querySelector(".secret-row button")?.focus();
            toast(`Key ${k.id} rotated to ${r.key.id}.`, "ok");
            if (!own) this.refresh();
          });
        },
      },
      h(
        "p",
        {},
        "A new key is created with the same name, role, tenant and expiry; its secret is shown once. The old key ",
        h("code", {}, k.id),
        " keeps working for the time below, then expires.",
      ),
      own
        ? h(
            "p",
            { class: "warning-box", role: "alert" },
            "This is the key you are signed in with. When the time below is over, this session is signed out: sign in again with the new key.",
          )
        : null,
      h(
        "p",
        { class: "muted" },
        k.expires_ms
          ? `The new key expires when this one does: ${fmtTime(k.expires_ms)}.`
          : "The new key does not expire.",
        null,
      ),
      overlapField,
      status,
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "secondary", onclick: () => dlg.close() }, "Cancel"),
        submit,
      ),
    );
    body.append(form);
    overlap.focus();
  }

  /** Revokes key `k` after confirmation. */
  async revoke(k, button) {
    const me = this.app.me;
    const own = k.id === me.key_id;
    const now = Date.now();
    const lastAdmin =
      k.role === "admin" &&
      keyStatus(k, now).kind !== "bad" &&
      !this.keys.some((o) => o.id !== k.id && o.role === "admin" && keyStatus(o, now).kind !== "bad");
    const lines = [
      `Revoke key ${k.name ? `${k.name} (${k.id})` : k.id}? It stops working at once, and this cannot be undone.`,
      own ? "This is the key you are signed in with: you will be signed out immediately." : null,
      lastAdmin ? `It is the last working admin key of tenant ${k.tenant}: nobody will be able to manage its keys from here.` : null,
    ].filter(Boolean);
    if (!(await confirmDialog(lines.join(" ")))) return;
    button.disabled = true;
    try {
      await del(`/v1/keys/${seg(k.id)}`);
      toast(`Key ${k.id} revoked.`, "ok");
    } catch (e) {
      toast(`Cannot revoke ${k.id}: ${e.detail ?? e.message}`, "error");
    } finally {
      button.disabled = false;
    }
    // With its own key revoked, this reload is refused and the shell signs out.
    await this.refresh();
  }
}

customElements.define("aios-page-keys", KeysPage);
