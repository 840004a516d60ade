// Sessions: recorded conversations with an agent or a team, and their history.
// `#/sessions` lists them (operators start and delete them); `#/sessions/<id>` shows one's
// history, with a link to continue it in the chat (`#/chat/session:<id>`).

import { get, post, del, seg } from "../api.js";
import { AiosPage, h, replace, field, table, toast, confirmDialog, modal, busy, errorBox, badge, pageHeader, fmtTime, fmtAgo, fmtNum, fmtUsd } from "../ui.js";
import { fetchAllAgents } from "./agents.js";

/** History entries per page. */
const HISTORY_PAGE = 100;

/** Who a session talks to, as nodes. */
function targetText(target) {
  if (target?.Agent) return ["agent ", h("a", { href: `#/agents/${seg(target.Agent.name)}` }, target.Agent.name)];
  if (target?.Team) return target.Team.planner ? ["team, planner ", h("a", { href: `#/agents/${seg(target.Team.planner)}` }, target.Team.planner)] : "team";
  return "?";
}

const entries = (s) => Math.max(0, (s.next_seq ?? 0) - (s.first_seq ?? 0));

async function openNewSession() {
  let agents = [];
  try {
    agents = await fetchAllAgents();
  } catch (e) {
    toast(e.detail ?? String(e), "error");
  }
  const withSel = h(
    "select",
    { name: "with" },
    agents.map((a) => h("option", { value: `agent:${a.name}` }, `Agent ${a.name}`)),
    h("option", { value: "team" }, "A team (each message becomes a run)"),
  );
  const planners = agents.filter((a) => (a.capabilities ?? []).some((c) => c.name === "plan"));
  const planner = h(
    "select",
    { name: "planner" },
    h("option", { value: "" }, "The best agent with capability plan"),
    (planners.length ? planners : agents).map((a) => h("option", { value: a.name }, a.name)),
  );
  const plannerField = field("Planner", planner);
  plannerField.hidden = withSel.value !== "team";
  withSel.addEventListener("change", () => (plannerField.hidden = withSel.value !== "team"));
  const title = h("input", { name: "title", maxlength: "200", autocomplete: "off" });
  const status = h("div", { class: "form-status", "aria-live": "assertive" });
  const submit = h("button", { type: "submit" }, "Start");
  const form = h(
    "form",
    { novalidate: true, class: "session-form" },
    field("With", withSel),
    plannerField,
    field("Title", title, "Shown in the list (optional)."),
    status,
    h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", onclick: () => dlg.close() }, "Cancel"), submit),
  );
  const dlg = modal("New session", form);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    replace(status);
    const body = { title: title.value.trim() };
    if (withSel.value === "team") body.team = planner.value ? { planner: planner.value } : {};
    else body.agent = withSel.value.slice("agent:".length);
    submit.disabled = true;
    try {
      const info = await post("/v1/sessions", body);
      dlg.close();
      location.hash = `#/chat/session:${info.id}`;
    } catch (err) {
      replace(status, errorBox(err));
    } finally {
      submit.disabled = false;
    }
  });
  withSel.focus();
}

class SessionsPage extends AiosPage {
  async load() {
    if (this.route) return this.loadDetail(this.route);
    return this.loadList();
  }

  // ---- the list ----

  async loadList() {
    this.cursors = [null];
    this.listBox = h("div", { class: "card" }, h("p", { class: "loading" }, "Loading…"));
    const actions = [h("button", { type: "button", class: "secondary", onclick: (e) => busy(e.currentTarget, () => this.reloadList()) }, "Reload")];
    if (this.app.can("operator")) actions.push(h("button", { type: "button", onclick: () => openNewSession() }, "New session"));
    replace(this, pageHeader("Sessions", ...actions), this.listBox);
    await this.reloadList();
  }

  get pageSize() {
    return Math.min(200, Math.max(1, Number(this.app.prefs.page_size) || 50));
  }

  async reloadList() {
    const q = new URLSearchParams({ limit: String(this.pageSize) });
    const after = this.cursors[this.cursors.length - 1];
    if (after) q.set("after", after);
    let page;
    try {
      page = await get(`/v1/sessions?${q}`);
    } catch (e) {
      replace(this.listBox, errorBox(e));
      return;
    }
    const items = [...(page.items ?? [])].sort((a, b) => b.updated_ms - a.updated_ms);
    this.next = page.next ?? null;
    const op = this.app.can("operator");
    const columns = [
      { label: "Title", value: (s) => h("a", { href: `#/sessions/${seg(s.id)}` }, s.title || h("span", { class: "muted" }, `untitled ${s.id.slice(0, 8)}`)) },
      { label: "With", value: (s) => targetText(s.target) },
      { label: "Messages", class: "num", value: (s) => fmtNum(entries(s)) },
      { label: "Started", value: (s) => h("time", { title: fmtTime(s.created_ms) }, fmtAgo(s.created_ms)) },
      { label: "Last message", value: (s) => (entries(s) ? h("time", { title: fmtTime(s.updated_ms) }, fmtAgo(s.updated_ms)) : h("span", { class: "muted" }, "none")) },
      {
        label: "Actions",
        class: "row-actions",
        value: (s) =>
          h(
            "div",
            { class: "actions" },
            h("a", { class: "button secondary small", href: `#/chat/session:${seg(s.id)}`, "aria-label": `${op ? "Continue" : "Open"} ${s.title || s.id} in the chat` }, op ? "Continue" : "Open chat"),
            op ? h("button", { type: "button", class: "danger small", "aria-label": `Delete ${s.title || s.id}`, onclick: (e) => this.remove(e.currentTarget, s) }, "Delete") : null,
          ),
      },
    ];
    const pager = h(
      "div",
      { class: "pager actions" },
      h("button", { type: "button", class: "secondary small", disabled: this.cursors.length <= 1, onclick: () => (this.cursors.pop(), this.reloadList()) }, "Previous page"),
      h("span", { class: "muted" }, `Page ${this.cursors.length}`),
      h("button", { type: "button", class: "secondary small", disabled: !this.next || !items.length, onclick: () => (this.cursors.push(this.next), this.reloadList()) }, "Next page"),
    );
    replace(
      this.listBox,
      table(columns, items, {
        empty: op ? "No sessions yet. Start one here or from the Chat page." : "No sessions yet.",
        caption: "Sessions of this tenant",
        rowAttrs: (s) => ({ dataset: { session: s.id } }),
      }),
      this.cursors.length > 1 || (this.next && items.length) ? pager : null,
    );
  }

  async remove(button, s) {
    const name = s.title || s.id.slice(0, 8);
    if (!(await confirmDialog(`Delete session ${name}? Its history is erased${s.target?.Agent ? " and the agent forgets the conversation" : ""}.`, { confirm: "Delete" }))) return false;
    const ok = await busy(button, async () => {
      await del(`/v1/sessions/${seg(s.id)}`);
      toast(`Session ${name} deleted.`, "ok");
      return true;
    });
    if (ok && !this.route) await this.reloadList();
    return !!ok;
  }

  // ---- one session ----

  async loadDetail(id) {
    let info;
    try {
      info = await get(`/v1/sessions/${seg(id)}`);
    } catch (e) {
      replace(this, pageHeader("Session", h("a", { class: "button secondary", href: "#/sessions" }, "All sessions")), errorBox(e));
      return;
    }
    this.info = info;
    const op = this.app.can("operator");
    const cost = { nanos: 0 };
    this.log = h("div", { class: "log history", role: "log", "aria-label": "History", tabindex: "0" });
    this.more = h("div", { class: "actions" });
    this.costEl = h("dd", {}, "—");
    replace(
      this,
      pageHeader(
        info.title || `Session ${id.slice(0, 8)}`,
        h("a", { class: "button secondary", href: "#/sessions" }, "All sessions"),
        h("a", { class: "button", href: `#/chat/session:${seg(id)}` }, op ? "Continue chatting" : "Open in chat"),
        op
          ? h(
              "button",
              {
                type: "button",
                class: "danger",
                onclick: async (e) => {
                  if (await this.remove(e.currentTarget, info)) location.hash = "#/sessions";
                },
              },
              "Delete",
            )
          : null,
      ),
      h(
        "section",
        { class: "card", "aria-label": "Session" },
        h(
          "dl",
          { class: "props" },
          h("dt", {}, "With"),
          h("dd", {}, targetText(info.target)),
          h("dt", {}, "Id"),
          h("dd", {}, h("code", {}, info.id)),
          h("dt", {}, "Started"),
          h("dd", {}, fmtTime(info.created_ms)),
          h("dt", {}, "Last message"),
          h("dd", {}, entries(info) ? fmtTime(info.updated_ms) : "none"),
          h("dt", {}, "Messages"),
          h("dd", {}, fmtNum(entries(info)), info.first_seq > 0 ? h("span", { class: "muted" }, ` (the ${fmtNum(info.first_seq)} oldest were dropped)`) : null),
          h("dt", {}, "Cost of the shown answers"),
          this.costEl,
        ),
      ),
      h("section", { class: "card", "aria-labelledby": "history-title" }, h("h2", { id: "history-title" }, "History"), this.log, this.more),
    );
    this.cost = cost;
    await this.loadHistory(info.first_seq ?? 0);
  }

  async loadHistory(from) {
    replace(this.more);
    let page;
    try {
      page = await get(`/v1/sessions/${seg(this.info.id)}/history?from=${from}&limit=${HISTORY_PAGE}`);
    } catch (e) {
      replace(this.more, errorBox(e));
      return;
    }
    const items = page.items ?? [];
    if (!items.length && !this.log.children.length) {
      this.log.append(h("p", { class: "empty" }, "Nothing said yet."));
    }
    for (const e of items) {
      this.cost.nanos += e.cost_nanos ?? 0;
      const meta = h(
        "span",
        { class: "at" },
        h("time", {}, fmtTime(e.at_ms)),
        e.run ? [" · ", h("a", { href: `#/runs/${seg(e.run)}` }, `run ${e.run.slice(0, 8)}`)] : null,
        e.cost_nanos ? ` · ${fmtUsd(e.cost_nanos / 1e9)}` : null,
      );
      const cls = e.role === "User" ? "msg user" : e.role === "Assistant" ? "msg assistant" : "msg error";
      this.log.append(h("div", { class: cls, dataset: { seq: e.seq, role: e.role.toLowerCase() } }, e.role === "System" ? badge("system", "bad") : null, e.role === "System" ? " " : null, e.text, meta));
    }
    this.costEl.textContent = fmtUsd(this.cost.nanos / 1e9);
    if (page.next != null) {
      replace(this.more, h("button", { type: "button", class: "secondary", onclick: () => this.loadHistory(page.next) }, "Load more"));
    }
  }
}
customElements.define("aios-page-sessions", SessionsPage);
