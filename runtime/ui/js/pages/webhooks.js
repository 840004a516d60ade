// Webhooks of the signed-in key's tenant (admins only): the subscriptions (creating one shows
// its signing secret once; deleting one drops its queued deliveries), the recent delivery
// attempts (kept in memory by the daemon since its start, newest first) and the dead letters,
// which can be queued again.

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
  fmtNum,
  secretBlock,
} from "../ui.js";

/** The event types a subscription may name (EVENT_TYPES in webhooks.rs), with what they mean. */
const EVENT_TYPES = [
  ["agent.created", "an agent was created"],
  ["agent.deleted", "an agent was deleted"],
  ["key.created", "an API key was created"],
  ["key.rotated", "an API key was rotated"],
  ["key.revoked", "an API key was revoked"],
  ["quota.exceeded", "a quota refused a request (first time of the day)"],
  ["run.completed", "a run completed"],
  ["actor.restarted", "an actor restarted (node-wide: operator tenant only)"],
];
const OUTCOME_KIND = { delivered: "ok", retrying: "warn", dead: "bad" };
const AUTO_REFRESH_MS = 5000;

function describe(err) {
  return err?.detail ?? err?.message ?? String(err);
}

/** An API failure as an inline message, with what the page was doing. */
function failure(err, doing) {
  if (err?.status === 403) return errorBox(`Managing webhooks needs an admin key: ${describe(err)}`);
  return errorBox(`${doing}: ${describe(err)}`);
}

/** A button's work: disabled meanwhile; a failure is toasted and returned as false. */
async function working(button, fn) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    await fn();
    return true;
  } catch (e) {
    toast(describe(e), "error");
    return false;
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

class WebhooksPage extends AiosPage {
  async load() {
    this.pageSize = Math.max(1, Number(this.app.prefs.page_size) || 50);
    this.subs = [];
    this.showAllAttempts = false;

    this.subsBox = h("div", { "aria-live": "polite" }, h("p", { class: "loading" }, "Loading…"));
    this.attemptsBox = h("div", {}, h("p", { class: "loading" }, "Loading…"));
    this.queued = h("span", { class: "muted" });
    this.deadBox = h("div", { "aria-live": "polite" }, h("p", { class: "loading" }, "Loading…"));
    this.attemptsStamp = h("span", { class: "muted", role: "status" });

    const refreshAttempts = h(
      "button",
      { type: "button", class: "secondary", onclick: (e) => this.refreshActivity(e.currentTarget) },
      "Refresh",
    );
    const auto = h("input", { type: "checkbox", name: "auto_refresh", onchange: () => this.autoRefresh(auto.checked) });
    this.cleanup(() => clearInterval(this.timer));

    replace(
      this,
      pageHeader("Webhooks"),
      h(
        "p",
        { class: "muted" },
        "Events of tenant ",
        this.app.me.tenant,
        " are POSTed as JSON to each subscribed URL, signed with HMAC-SHA256 of ",
        h("code", {}, "<timestamp>.<body>"),
        " (headers ",
        h("code", {}, "x-aios-signature"),
        ", ",
        h("code", {}, "x-aios-timestamp"),
        "), retried with backoff, then kept as dead letters.",
      ),
      h(
        "section",
        { class: "card", "aria-labelledby": "wh-subs-title" },
        h("h2", { id: "wh-subs-title" }, "Subscriptions"),
        this.subscribeForm(),
        this.subsBox,
      ),
      h(
        "section",
        { class: "card", "aria-labelledby": "wh-attempts-title" },
        h(
          "div",
          { class: "row section-head" },
          h("h2", { id: "wh-attempts-title" }, "Recent delivery attempts"),
          h("span", { class: "spacer" }),
          h("label", { class: "check" }, auto, ` Refresh every ${AUTO_REFRESH_MS / 1000} s`),
          refreshAttempts,
        ),
        h("p", { class: "row muted" }, this.queued, this.attemptsStamp),
        this.attemptsBox,
      ),
      h(
        "section",
        { class: "card", "aria-labelledby": "wh-dead-title" },
        h("h2", { id: "wh-dead-title" }, "Dead letters"),
        h(
          "p",
          { class: "muted" },
          "Deliveries that failed every attempt. Redeliver queues one again, with its attempts reset. Refresh (above) reloads these too.",
        ),
        this.deadBox,
      ),
    );
    await this.refreshSubs();
    await this.refreshActivity();
  }

  /** The "Subscribe" form: URL and events. */
  subscribeForm() {
    const url = h("input", {
      type: "url",
      name: "url",
      required: true,
      placeholder: "https://example.com/aios-hook",
      autocomplete: "off",
      spellcheck: "false",
    });
    const all = h("input", { type: "checkbox", name: "events", value: "*" });
    const boxes = EVENT_TYPES.map(([ev, what]) => {
      const box = h("input", { type: "checkbox", name: "events", value: ev });
      return { box, label: h("label", { class: "check", title: what }, box, " ", h("span", { class: "mono" }, ev), h("small", { class: "hint" }, what)) };
    });
    all.addEventListener("change", () => {
      for (const { box } of boxes) box.disabled = all.checked;
    });
    const status = h("div", { class: "form-status", "aria-live": "assertive" });
    const submit = h("button", { type: "submit" }, "Subscribe");
    const form = h(
      "form",
      {
        class: "wh-subscribe",
        "aria-label": "New subscription",
        onsubmit: async (e) => {
          e.preventDefault();
          replace(status);
          const events = all.checked ? ["*"] : boxes.filter(({ box }) => box.checked).map(({ box }) => box.value);
          if (!events.length) {
            replace(status, errorBox("Events: choose at least one (or all events)."));
            return;
          }
          submit.disabled = true;
          submit.setAttribute("aria-busy", "true");
          try {
            const sub = await post("/v1/webhooks", { url: url.value.trim(), events });
            form.reset();
            for (const { box } of boxes) box.disabled = false;
            this.showSecret(sub);
            toast(`Subscribed ${sub.url}.`, "ok");
            await this.refreshSubs();
          } catch (err) {
            replace(status, failure(err, "Cannot subscribe"));
          } finally {
            submit.disabled = false;
            submit.removeAttribute("aria-busy");
          }
        },
      },
      field("URL", url, "Where deliveries are POSTed: http(s)://host/…"),
      h(
        "fieldset",
        { class: "event-choices" },
        h("legend", {}, "Events"),
        h("label", { class: "check" }, all, " ", h("strong", {}, "All events"), " ", h("span", { class: "mono muted" }, "(*, also future ones)")),
        h("div", { class: "event-grid" }, boxes.map((b) => b.label)),
      ),
      status,
      h("div", { class: "actions" }, submit),
    );
    return form;
  }

  /** The new subscription's signing secret, in a dialog. */
  showSecret(sub) {
    const done = h("button", { type: "button" }, "Done");
    const dlg = modal(
      "Webhook subscribed",
      h(
        "div",
        { class: "modal-body" },
        h("p", {}, "Deliveries to ", h("code", {}, sub.url), ` (${sub.events.join(", ")}) are signed with this secret: check `, h("code", {}, "x-aios-signature"), " with it."),
        secretBlock(sub.secret, "the signing secret"),
        h("div", { class: "actions" }, done),
      ),
    );
    done.addEventListener("click", () => dlg.close());
    dlg.dialog.querySelector(".secret-row button")?.focus();
  }

  /** The URL of subscription `id` (its id when it is gone). */
  subLabel(id) {
    const s = this.subs.find((x) => x.id === id);
    return s
      ? h("span", { title: `subscription ${id}` }, h("span", { class: "wh-url" }, s.url))
      : h("span", { class: "mono muted", title: "removed subscription" }, id.slice(0, 12));
  }

  async refreshSubs() {
    try {
      const r = await get("/v1/webhooks");
      this.subs = r.items ?? [];
      this.renderSubs();
    } catch (e) {
      replace(this.subsBox, failure(e, "Cannot list the subscriptions"));
    }
  }

  renderSubs() {
    const columns = [
      { label: "URL", value: (s) => h("span", { class: "wh-url" }, s.url) },
      { label: "Events", value: (s) => h("span", { class: "row" }, s.events.map((ev) => badge(ev === "*" ? "all (*)" : ev))) },
      { label: "ID", value: (s) => h("span", { class: "mono", title: s.id }, s.id.slice(0, 12)) },
      { label: "Created", value: (s) => h("span", { title: fmtAgo(s.created_ms) }, fmtTime(s.created_ms)) },
      {
        label: "Actions",
        value: (s) =>
          h(
            "button",
            { type: "button", class: "danger small", title: `Delete the subscription of ${s.url}`, onclick: (e) => this.remove(s, e.currentTarget) },
            "Delete",
          ),
      },
    ];
    replace(
      this.subsBox,
      table(columns, this.subs, {
        empty: "No subscriptions yet.",
        caption: `${this.subs.length} subscription${this.subs.length === 1 ? "" : "s"}`,
        rowAttrs: (s) => ({ "data-subscription-id": s.id }),
      }),
    );
  }

  async remove(s, button) {
    const ok = await confirmDialog(
      `Delete the subscription of ${s.url}? Its queued deliveries are dropped and its signing secret stops being used.`,
    );
    if (!ok) return;
    if (await working(button, () => del(`/v1/webhooks/${seg(s.id)}`))) {
      toast(`Subscription of ${s.url} deleted.`, "ok");
    }
    await this.refreshSubs();
  }

  autoRefresh(on) {
    clearInterval(this.timer);
    this.timer = on ? setInterval(() => this.refreshActivity(), AUTO_REFRESH_MS) : null;
  }

  /** Reloads the attempts and the dead letters. */
  async refreshActivity(button) {
    if (button) button.disabled = true;
    try {
      await Promise.all([this.refreshAttempts(), this.refreshDead()]);
    } finally {
      if (button) button.disabled = false;
    }
  }

  async refreshAttempts() {
    try {
      const r = await get("/v1/webhooks/deliveries");
      this.attempts = r.items ?? [];
      replace(
        this.queued,
        r.queued === null || r.queued === undefined ? "" : `${fmtNum(r.queued)} deliver${r.queued === 1 ? "y" : "ies"} queued on the node.`,
      );
      replace(this.attemptsStamp, `Updated ${fmtTime(Date.now())}.`);
      this.renderAttempts();
    } catch (e) {
      replace(this.attemptsBox, failure(e, "Cannot read the delivery attempts"));
    }
  }

  renderAttempts() {
    const items = this.attempts ?? [];
    const shown = this.showAllAttempts ? items : items.slice(0, this.pageSize);
    const columns = [
      { label: "Time", value: (a) => h("span", { title: fmtAgo(a.at_ms) }, fmtTime(a.at_ms)) },
      { label: "Delivery", class: "num", value: (a) => `#${a.seq}` },
      { label: "Subscription", value: (a) => this.subLabel(a.subscription) },
      { label: "Event", value: (a) => h("span", { class: "mono" }, a.event) },
      { label: "Attempt", class: "num", value: (a) => String(a.attempt) },
      { label: "Outcome", value: (a) => badge(a.outcome, OUTCOME_KIND[a.outcome] ?? "") },
      { label: "Error", value: (a) => h("span", { class: "wh-error" }, a.error || "") },
      { label: "Took", class: "num", value: (a) => `${fmtNum(a.took_ms)} ms` },
    ];
    replace(
      this.attemptsBox,
      table(columns, shown, {
        empty: "No delivery attempts since the daemon started.",
        caption: "Delivery attempts, newest first",
      }),
      items.length > shown.length
        ? h(
            "button",
            {
              type: "button",
              class: "secondary small",
              onclick: () => {
                this.showAllAttempts = true;
                this.renderAttempts();
              },
            },
            `Show all ${fmtNum(items.length)}`,
          )
        : null,
    );
  }

  async refreshDead() {
    try {
      const r = await get("/v1/webhooks/dead");
      this.dead = r.items ?? [];
      this.renderDead();
    } catch (e) {
      replace(this.deadBox, failure(e, "Cannot read the dead letters"));
    }
  }

  renderDead() {
    const columns = [
      { label: "Delivery", class: "num", value: (d) => `#${d.seq}` },
      { label: "Subscription", value: (d) => this.subLabel(d.subscription) },
      { label: "Event", value: (d) => h("span", { class: "mono" }, d.event) },
      { label: "Attempts", class: "num", value: (d) => String(d.attempts) },
      { label: "Last error", value: (d) => h("span", { class: "wh-error" }, d.last_error || "") },
      {
        label: "Body",
        value: (d) => h("details", { class: "wh-body" }, h("summary", {}, "Show"), h("pre", {}, prettyJson(d.body))),
      },
      {
        label: "Actions",
        value: (d) =>
          h(
            "button",
            { type: "button", class: "small", title: `Redeliver delivery #${d.seq}`, onclick: (e) => this.redeliver(d, e.currentTarget) },
            "Redeliver",
          ),
      },
    ];
    replace(
      this.deadBox,
      table(columns, this.dead, {
        empty: "No dead letters.",
        caption: `${this.dead.length} dead letter${this.dead.length === 1 ? "" : "s"}, oldest first`,
        rowAttrs: (d) => ({ "data-seq": String(d.seq) }),
      }),
    );
  }

  async redeliver(d, button) {
    if (await working(button, () => post(`/v1/webhooks/dead/${seg(String(d.seq))}/redeliver`))) {
      toast(`Delivery #${d.seq} queued again.`, "ok");
    }
    await this.refreshActivity();
  }
}

/** A delivery body, indented when it is JSON. */
function prettyJson(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

customElements.define("aios-page-webhooks", WebhooksPage);
