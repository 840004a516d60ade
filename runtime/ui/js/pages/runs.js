// Runs: tasks a planner turns into a plan whose steps the tenant's agents carry out by
// capability. `#/runs` lists them (operators start new ones); `#/runs/<id>` follows one live
// over `/v1/runs/<id>/ws`: its steps as they start and finish, the steps that wait for a
// person's approval (approve or reject them here), cancellation, and the final answer.

import { get, post, seg, openSocket } from "../api.js";
import {
  AiosPage,
  h,
  replace,
  field,
  table,
  toast,
  confirmDialog,
  modal,
  busy,
  errorBox,
  badge,
  pageHeader,
  liveIndicator,
  fmtTime,
  fmtAgo,
  fmtDuration,
  fmtUsd,
} from "../ui.js";
import { fetchAllAgents } from "./agents.js";

const FINISHED = new Set(["Succeeded", "Failed", "Cancelled"]);
/** How often the list refreshes while some of its runs are active. */
const LIST_REFRESH_MS = 3000;

/** `AwaitingApproval` → "awaiting approval". */
const words = (s) => String(s ?? "").replace(/([a-z])([A-Z])/g, "$1 $2").toLowerCase();

export function runStatusBadge(status) {
  const kind = status === "Succeeded" ? "ok" : status === "Failed" || status === "Cancelled" ? "bad" : status === "AwaitingApproval" ? "warn" : "";
  return badge(words(status), kind);
}

/** A step's status: its name and, when it waits, why. */
function stepStatus(st) {
  if (st && typeof st === "object") {
    const [name, v] = Object.entries(st)[0] ?? ["?", {}];
    return { name, reason: v?.reason };
  }
  return { name: String(st ?? "") };
}

const STEP_MARKS = {
  Pending: ["○", "pending"],
  Running: ["▶", "running"],
  Done: ["✓", "done"],
  Failed: ["✗", "failed"],
  Denied: ["⊘", "denied"],
  AwaitingApproval: ["‖", "awaiting approval"],
};

const usd = (nanos) => fmtUsd((nanos ?? 0) / 1e9);

/** The time between two Unix ms times: `350 ms`, `12 s`, `3 min 4 s`. */
function took(a, b) {
  const ms = Math.max(0, (b ?? Date.now()) - a);
  return ms < 1000 ? `${ms} ms` : fmtDuration(Math.round(ms / 1000));
}

async function openNewRun() {
  let agents = [];
  try {
    agents = await fetchAllAgents();
  } catch (e) {
    toast(e.detail ?? String(e), "error");
  }
  const planners = agents.filter((a) => (a.capabilities ?? []).some((c) => c.name === "plan"));
  const task = h("textarea", { name: "task", rows: "5", required: true, placeholder: "What should the team do?" });
  const planner = h(
    "select",
    { name: "planner" },
    h("option", { value: "" }, planners.length ? "The best agent with capability plan" : "The best agent with capability plan (none yet)"),
    (planners.length ? planners : agents).map((a) => h("option", { value: a.name }, a.name)),
  );
  const status = h("div", { class: "form-status", "aria-live": "assertive" });
  const submit = h("button", { type: "submit" }, "Start run");
  const teamNote = agents.filter((a) => (a.capabilities ?? []).some((c) => c.name !== "plan"));
  const form = h(
    "form",
    { novalidate: true },
    field("Task", task, "The planner splits it into steps; each step goes to the agent whose capabilities fit best."),
    field("Planner", planner),
    h(
      "p",
      { class: "hint" },
      teamNote.length
        ? `Agents that can take steps: ${teamNote.map((a) => `${a.name} (${a.capabilities.map((c) => c.name).join(", ")})`).join("; ")}.`
        : "No agent has a capability besides plan yet: steps will find no agent. Give agents capabilities first.",
    ),
    status,
    h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", onclick: () => dlg.close() }, "Cancel"), submit),
  );
  const dlg = modal("New run", form);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    replace(status);
    const body = { task: task.value };
    if (planner.value) body.planner = planner.value;
    submit.disabled = true;
    try {
      const { id } = await post("/v1/runs", body);
      dlg.close();
      toast("Run started.", "ok");
      location.hash = `#/runs/${seg(id)}`;
    } catch (err) {
      replace(status, errorBox(err));
    } finally {
      submit.disabled = false;
    }
  });
  task.focus();
}

class RunsPage extends AiosPage {
  async load() {
    if (this.route) return this.loadDetail(this.route);
    return this.loadList();
  }

  // ---- the list ----

  async loadList() {
    this.cursors = [null];
    this.listBox = h("div", { class: "card" }, h("p", { class: "loading" }, "Loading…"));
    const actions = [h("button", { type: "button", class: "secondary", onclick: (e) => busy(e.currentTarget, () => this.reloadList()) }, "Reload")];
    if (this.app.can("operator")) actions.push(h("button", { type: "button", onclick: () => openNewRun() }, "New run"));
    replace(this, pageHeader("Runs", ...actions), this.listBox);
    this.cleanup(() => clearTimeout(this.refresh));
    await this.reloadList();
  }

  get pageSize() {
    return Math.min(200, Math.max(1, Number(this.app.prefs.page_size) || 50));
  }

  async reloadList() {
    clearTimeout(this.refresh);
    const q = new URLSearchParams({ limit: String(this.pageSize) });
    const after = this.cursors[this.cursors.length - 1];
    if (after) q.set("after", after);
    let page;
    try {
      page = await get(`/v1/runs?${q}`);
    } catch (e) {
      replace(this.listBox, errorBox(e));
      return;
    }
    if (!this.isConnected) return;
    const items = [...(page.items ?? [])].sort((a, b) => b.created_ms - a.created_ms);
    this.next = page.next ?? null;
    const columns = [
      { label: "Run", value: (r) => h("a", { href: `#/runs/${seg(r.id)}`, class: "mono", title: r.id }, r.id.slice(0, 8)) },
      { label: "Task", class: "task", value: (r) => h("span", { title: r.spec?.task ?? "" }, clip(r.spec?.task ?? "", 90)) },
      { label: "Status", value: (r) => runStatusBadge(r.status) },
      { label: "Planner", value: (r) => r.planner ?? r.spec?.planner ?? h("span", { class: "muted" }, "—") },
      { label: "Steps", class: "num", value: (r) => (r.steps?.length ? `${r.steps.filter((s) => s.status === "Done").length}/${r.steps.length}` : "—") },
      { label: "Cost", class: "num", value: (r) => usd(r.cost_nanos) },
      { label: "Started", value: (r) => h("time", { title: fmtTime(r.created_ms) }, fmtAgo(r.created_ms)) },
      { label: "Took", class: "num", value: (r) => (r.finished_ms ? took(r.created_ms, r.finished_ms) : "…") },
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
        empty: this.app.can("operator") ? "No runs yet. Start one with New run." : "No runs yet.",
        caption: "Runs of this tenant",
        rowAttrs: (r) => ({ dataset: { run: r.id, status: r.status } }),
      }),
      this.cursors.length > 1 || (this.next && items.length) ? pager : null,
    );
    if (items.some((r) => !FINISHED.has(r.status))) this.refresh = setTimeout(() => this.reloadList(), LIST_REFRESH_MS);
  }

  // ---- one run ----

  async loadDetail(id) {
    this.id = id;
    this.live = liveIndicator();
    this.events = h("ol", { class: "events run-events", reversed: true, "aria-label": "Run events" });
    this.body = h("div", {}, h("p", { class: "loading" }, "Loading…"));
    this.headerActions = h("div", { class: "actions" });
    replace(this, h("header", { class: "page-header" }, h("h1", {}, `Run ${id.slice(0, 8)}`), this.live, this.headerActions), this.body);
    this.cleanup(() => clearTimeout(this.pending));
    this.cleanup(() => this.sock?.close());
    await this.reloadRun();
    if (!this.state) {
      this.live.set("closed");
      this.live.textContent = "not found";
      return;
    }
    if (FINISHED.has(this.state.status)) {
      this.setFinished();
      return;
    }
    this.sock = openSocket(`/v1/runs/${seg(id)}/ws`, {
      onState: (s) => {
        if (!this.done) this.live.set(s);
      },
      // Whatever happened while the feed was down.
      onOpen: () => this.reloadRun(),
      onMessage: (f) => this.onFrame(f),
    });
  }

  setFinished() {
    this.done = true;
    this.sock?.close();
    this.live.className = "live done";
    this.live.textContent = "finished";
  }

  async reloadRun() {
    try {
      this.state = await get(`/v1/runs/${seg(this.id)}`);
    } catch (e) {
      if (!this.state) replace(this.body, errorBox(e), h("a", { href: "#/runs" }, "All runs"));
      else toast(e.detail ?? String(e), "error");
      return;
    }
    if (!this.isConnected) return;
    this.render();
    if (FINISHED.has(this.state.status) && !this.done) this.setFinished();
  }

  scheduleReload() {
    clearTimeout(this.pending);
    this.pending = setTimeout(() => this.reloadRun(), 200);
  }

  onFrame(f) {
    if (f.type === "lagged") {
      this.logEvent(`${f.data?.missed ?? "some"} events missed; reloading`);
      this.scheduleReload();
      return;
    }
    if (f.type !== "run") return;
    const e = f.data ?? {};
    const prefix = `${this.app.me.tenant}.`;
    const agent = typeof e.agent === "string" && e.agent.startsWith(prefix) ? e.agent.slice(prefix.length) : e.agent;
    const s = this.state;
    const step = s?.steps?.find((x) => x.step.id === e.step);
    switch (e.type) {
      case "planned":
        this.logEvent(`planned: ${(e.steps ?? []).join(", ")}`);
        break;
      case "plan_rejected":
        this.logEvent(`plan rejected: ${e.reason}`);
        break;
      case "step_started":
        this.logEvent(`step ${e.step} started on ${agent}${e.attempt > 1 ? ` (attempt ${e.attempt})` : ""}`);
        if (step) Object.assign(step, { status: "Running", agent, attempts: e.attempt });
        if (s) s.status = "Running";
        break;
      case "step_done":
        this.logEvent(`step ${e.step} done (${agent})`);
        if (step) step.status = "Done";
        break;
      case "step_failed":
        this.logEvent(`step ${e.step} failed on ${agent}: ${e.error}${e.retry ? " — retrying" : ""}`);
        if (step) Object.assign(step, { status: e.retry ? "Pending" : "Failed", error: e.error });
        break;
      case "awaiting_approval":
        this.logEvent(`step ${e.step} awaits approval: ${e.reason}`);
        if (step) step.status = { AwaitingApproval: { reason: e.reason } };
        break;
      case "decided":
        this.logEvent(`step ${e.step} ${e.approved ? "approved" : "rejected"} by ${e.by}`);
        if (step) step.status = e.approved ? "Pending" : "Denied";
        break;
      case "composing":
        this.logEvent("composing the answer");
        if (s) s.status = "Composing";
        break;
      case "finished":
        this.logEvent(`finished: ${words(e.status)}${e.error ? ` — ${e.error}` : ""}`);
        if (s) s.status = e.status;
        break;
      default:
        this.logEvent(e.type ?? "event");
    }
    if (s) this.render();
    this.scheduleReload();
  }

  logEvent(text) {
    this.events.prepend(h("li", {}, h("time", { class: "muted" }, fmtTime(Date.now()).slice(11)), " ", text));
    while (this.events.children.length > 200) this.events.lastElementChild.remove();
  }

  render() {
    const r = this.state;
    const op = this.app.can("operator");
    const finished = FINISHED.has(r.status);
    replace(
      this.headerActions,
      h("a", { class: "button secondary", href: "#/runs" }, "All runs"),
      op && !finished ? h("button", { type: "button", class: "danger", onclick: (e) => this.cancel(e.currentTarget) }, "Cancel run") : null,
    );
    const session = r.spec?.session;
    const summary = h(
      "section",
      { class: "card", "aria-labelledby": "run-summary" },
      h("h2", { id: "run-summary" }, "Run ", runStatusBadge(r.status)),
      h("pre", { class: "task" }, r.spec?.task ?? ""),
      h(
        "dl",
        { class: "props" },
        h("dt", {}, "Id"),
        h("dd", {}, h("code", {}, r.id)),
        h("dt", {}, "Planner"),
        h("dd", {}, r.planner ? h("a", { href: `#/agents/${seg(r.planner)}` }, r.planner) : h("span", { class: "muted" }, r.spec?.planner ?? "choosing…")),
        h("dt", {}, "Started"),
        h("dd", {}, fmtTime(r.created_ms)),
        h("dt", {}, finished ? "Finished" : "Updated"),
        h("dd", {}, fmtTime(finished ? r.finished_ms : r.updated_ms)),
        h("dt", {}, "Took"),
        h("dd", {}, took(r.created_ms, r.finished_ms)),
        h("dt", {}, "Cost"),
        h("dd", {}, usd(r.cost_nanos)),
        h("dt", {}, "Plan attempts"),
        h("dd", {}, String(r.plan_attempts ?? 0)),
        session ? [h("dt", {}, "Session"), h("dd", {}, h("a", { href: `#/sessions/${seg(session)}` }, session.slice(0, 8)))] : null,
      ),
    );
    const awaiting = (r.steps ?? []).filter((s) => stepStatus(s.status).name === "AwaitingApproval");
    const steps = h(
      "section",
      { class: "card", "aria-labelledby": "run-steps" },
      h("h2", { id: "run-steps" }, "Plan", r.steps?.length ? ` · ${r.steps.filter((s) => s.status === "Done").length}/${r.steps.length} done` : ""),
      awaiting.length ? h("p", { class: "awaiting-note", role: "status" }, `${awaiting.length} step${awaiting.length === 1 ? "" : "s"} wait${awaiting.length === 1 ? "s" : ""} for your decision.`) : null,
      r.steps?.length
        ? h("ol", { class: "steps" }, r.steps.map((s) => this.stepItem(s, op && !finished)))
        : h("p", { class: "empty" }, r.status === "Planning" ? "The planner is making a plan…" : "No plan."),
    );
    const outcome = h(
      "section",
      { class: "card", "aria-labelledby": "run-answer" },
      h("h2", { id: "run-answer" }, "Answer"),
      r.answer ? h("pre", { class: "answer" }, r.answer) : null,
      r.error ? errorBox(r.error) : null,
      !r.answer && !r.error ? h("p", { class: "empty" }, finished ? "No answer." : r.status === "Composing" ? "Composing the answer…" : "Not yet.") : null,
    );
    replace(this.body, h("div", { class: "grid run-grid" }, summary, outcome), steps, h(
        "section",
        { class: "card", "aria-labelledby": "run-events" },
        h("h2", { id: "run-events" }, "Live events"),
        this.events,
        this.events.children.length ? null : h("p", { class: "empty" }, finished ? "The run had finished when this page opened." : "Waiting for events…"),
      ),
    );
  }

  stepItem(s, canDecide) {
    const st = stepStatus(s.status);
    const [mark, label] = STEP_MARKS[st.name] ?? ["?", words(st.name)];
    const step = s.step ?? {};
    const li = h(
      "li",
      { class: "step", dataset: { step: step.id, state: st.name.toLowerCase() } },
      h(
        "div",
        { class: "step-head" },
        h("span", { class: "mark", "aria-label": label, title: label }, mark),
        h("code", { class: "step-id" }, step.id),
        badge(step.capability),
        s.agent ? h("span", {}, "→ ", h("a", { href: `#/agents/${seg(s.agent)}` }, s.agent)) : h("span", { class: "muted" }, "unassigned"),
        s.attempts > 1 ? h("span", { class: "muted" }, `attempt ${s.attempts}`) : null,
        s.started_ms && s.finished_ms ? h("span", { class: "muted" }, took(s.started_ms, s.finished_ms)) : null,
        h("span", { class: "muted state-label" }, label),
      ),
      h("p", { class: "step-desc" }, step.description),
      step.depends_on?.length ? h("p", { class: "muted small" }, `after ${step.depends_on.join(", ")}`) : null,
      s.decision ? h("p", { class: "muted small" }, `${s.decision.approve ? "Approved" : "Rejected"} by ${s.decision.by}${s.decision.note ? `: ${s.decision.note}` : ""}`) : null,
      s.error && st.name !== "Done" ? h("div", { class: "error" }, s.error) : null,
      s.output ? h("details", {}, h("summary", {}, "Output"), h("pre", {}, s.output)) : null,
    );
    if (st.name === "AwaitingApproval") {
      const note = h("input", { name: "note", autocomplete: "off", placeholder: "Optional" });
      li.append(
        h(
          "div",
          { class: "approval" },
          h("p", {}, h("strong", {}, "Awaits approval: "), st.reason ?? ""),
          canDecide
            ? h(
                "form",
                { class: "inline", onsubmit: (e) => e.preventDefault() },
                field(`Note for step ${step.id}`, note),
                h("button", { type: "button", onclick: (e) => this.decide(e.currentTarget, step.id, true, note.value) }, "Approve"),
                h("button", { type: "button", class: "danger", onclick: (e) => this.decide(e.currentTarget, step.id, false, note.value) }, "Reject"),
              )
            : h("p", { class: "muted" }, "An operator must approve or reject it."),
        ),
      );
    }
    return li;
  }

  async decide(button, step, approve, note) {
    await busy(button, async () => {
      await post(`/v1/runs/${seg(this.id)}/steps/${seg(step)}/decision`, { approve, note: note ?? "" });
      toast(`Step ${step} ${approve ? "approved" : "rejected"}.`, "ok");
      await this.reloadRun();
    });
  }

  async cancel(button) {
    if (!(await confirmDialog("Cancel this run? Work in progress stops and the run ends as cancelled.", { confirm: "Cancel run" }))) return;
    await busy(button, async () => {
      const { cancelled } = await post(`/v1/runs/${seg(this.id)}/cancel`);
      toast(cancelled ? "Run cancelled." : "The run had already finished.", cancelled ? "ok" : "info");
      await this.reloadRun();
    });
  }
}

function clip(text, n) {
  const t = text.replace(/\s+/g, " ").trim();
  return t.length > n ? `${t.slice(0, n - 1)}…` : t;
}

customElements.define("aios-page-runs", RunsPage);
