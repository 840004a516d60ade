// Chat with an agent or a team, streamed as it happens.
//
// `#/chat/<agent>[/<session name>]`: a WebSocket to one agent instance
// (`/v1/agents/<name>/ws?session=…`): tokens, tool calls and results, the final answer.
// `#/chat/session:<id>`: a recorded session (`/v1/sessions`), with an agent or a team: its
// history, messages posted to it, and its live feed (`/v1/sessions/<id>/ws`: the agent's
// events, or the progress of the run each message of a team session starts).

import { get, post, seg, openSocket } from "../api.js";
import { AiosPage, h, replace, field, toast, errorBox, badge, pageHeader, liveIndicator, fmtTime } from "../ui.js";
import { fetchAllAgents, roleText } from "./agents.js";

/** A session name of the agent socket: the rule agent names follow. */
const SESSION_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
/** History entries loaded at once. */
const HISTORY_PAGE = 100;

/** The route of an agent chat. */
const agentRoute = (agent, session) => `#/chat/${seg(agent)}${session ? `/${seg(session)}` : ""}`;

/**
 * The transcript: user messages, streamed assistant bubbles, tool calls with their results,
 * run progress and errors, in a `.log` element. Both transports feed it.
 */
class Transcript {
  constructor(tenant) {
    this.el = h("div", { class: "log", role: "log", "aria-live": "polite", "aria-relevant": "additions", "aria-label": "Conversation", tabindex: "0" });
    this.tenantPrefix = `${tenant}.`;
    this.bubble = null;
    this.calls = new Map();
    this.runs = new Map();
    /** The turn ended (by the answer of a POST) before its events did: late events are folded in. */
    this.closed = false;
    this.lastFinal = null;
  }

  /** Appends `node` (before `before` when given), keeping the view at the bottom if it was. */
  add(node, before = null) {
    const atBottom = this.el.scrollHeight - this.el.scrollTop - this.el.clientHeight < 40;
    if (before && before.parentNode === this.el) this.el.insertBefore(node, before);
    else this.el.append(node);
    if (atBottom) this.el.scrollTop = this.el.scrollHeight;
    return node;
  }

  clear(...intro) {
    replace(this.el, ...intro);
    this.bubble = null;
    this.calls.clear();
    this.runs.clear();
    this.closed = false;
    this.lastFinal = null;
    this.turnFinal = null;
  }

  stripTenant(name) {
    return typeof name === "string" && name.startsWith(this.tenantPrefix) ? name.slice(this.tenantPrefix.length) : name;
  }

  user(text, at) {
    this.bubble = null;
    this.closed = false;
    this.turnFinal = null;
    return this.add(h("div", { class: "msg user" }, text, at ? h("time", { class: "at" }, fmtTime(at)) : null));
  }

  token(text) {
    if (this.closed) return;
    if (!this.bubble) this.bubble = this.add(h("div", { class: "msg assistant", dataset: { streaming: "true" } }));
    this.bubble.append(text);
    // How many pieces streamed in (kept on the final bubble; the browser tests read it).
    this.bubble.dataset.tokens = String((Number(this.bubble.dataset.tokens) || 0) + 1);
    const atBottom = this.el.scrollHeight - this.el.scrollTop - this.el.clientHeight < 80;
    if (atBottom) this.el.scrollTop = this.el.scrollHeight;
  }

  /** The final answer: fills the current bubble (or a new one) and marks it final. */
  final(text, { at, run } = {}) {
    if (this.closed) return this.lastFinal;
    let b = this.bubble;
    if (!b) b = this.add(h("div", { class: "msg assistant" }));
    replace(b, text, run ? h("a", { class: "at", href: `#/runs/${seg(run)}` }, "run details") : null, at ? h("time", { class: "at" }, fmtTime(at)) : null);
    delete b.dataset.streaming;
    b.dataset.final = "true";
    this.bubble = null;
    this.lastFinal = b;
    this.turnFinal = b;
    return b;
  }

  /**
   * Ends the turn with the answer a request returned: fills the bubble the turn's Final
   * event already marked, or the streaming one; events that arrive later are folded in.
   */
  closeWith(text, opts) {
    if (this.turnFinal && !this.closed) {
      this.bubble = this.turnFinal;
    }
    const b = this.final(text, opts);
    this.closed = true;
    return b;
  }

  error(text) {
    this.bubble = null;
    return this.add(h("div", { class: "msg error", role: "alert" }, text));
  }

  note(text) {
    return this.add(h("div", { class: "note muted" }, text));
  }

  /** An agent event (`{ToolCall: …}`, `{ToolResult: …}`, `{Final: …}`, `{Error: …}`). */
  event(ev) {
    const [kind, v] = Object.entries(ev ?? {})[0] ?? [];
    if (kind === "ToolCall") this.toolCall(v);
    else if (kind === "ToolResult") this.toolResult(v);
    else if (kind === "Final") this.final(v.text ?? "");
    else if (kind === "Error") {
      if (!this.closed) this.error(`${v.kind ? `${v.kind}: ` : ""}${v.message ?? "the agent failed"}`);
    } else if (kind === "Token") this.token(String(v ?? ""));
    return kind;
  }

  toolCall({ id, name, arguments: args }) {
    // Text streamed before the call stays where it is; what follows goes below the call.
    if (this.bubble) this.bubble.classList.add("interim");
    this.bubble = null;
    const out = h("div", { class: "tool-out muted" }, "running…");
    const entry = h(
      "div",
      { class: "msg tool", dataset: { call: id ?? "" } },
      h("div", { class: "tool-head" }, h("span", { class: "tool-label" }, "Tool call "), h("strong", {}, name), " ", h("code", {}, args ?? "")),
      out,
    );
    entry.out = out;
    this.calls.set(id, entry);
    this.add(entry, this.closed ? this.lastFinal : null);
  }

  toolResult({ id, name, output, is_error: isError }) {
    let entry = this.calls.get(id);
    if (!entry) {
      this.toolCall({ id, name, arguments: "" });
      entry = this.calls.get(id);
    }
    entry.out.className = `tool-out${isError ? " failed" : ""}`;
    replace(entry.out, isError ? "failed: " : "→ ", output ?? "");
    if (isError) entry.classList.add("failed");
  }

  /** A run event of a team session (`{type: "planned", run, …}`). */
  runEvent(e) {
    const id = e.run;
    let r = this.runs.get(id);
    if (!r) {
      const steps = h("ol", { class: "run-steps" });
      const status = h("span", { class: "run-status" }, badge("planning"));
      r = h(
        "div",
        { class: "msg tool run", dataset: { run: id } },
        h("div", { class: "tool-head" }, h("span", { class: "tool-label" }, "Team run "), h("a", { href: `#/runs/${seg(id)}` }, id.slice(0, 8)), " ", status),
        steps,
      );
      r.steps = steps;
      r.status = status;
      r.items = new Map();
      this.runs.set(id, r);
      this.add(r, this.closed ? this.lastFinal : null);
    }
    const step = (sid) => {
      let li = r.items.get(sid);
      if (!li) {
        li = h("li", { dataset: { state: "pending" } }, h("span", { class: "mark", "aria-hidden": "true" }, "○"), " ", h("code", {}, sid), h("span", { class: "detail muted" }));
        r.items.set(sid, li);
        r.steps.append(li);
      }
      return li;
    };
    const mark = (li, state, symbol, detail) => {
      li.dataset.state = state;
      li.querySelector(".mark").textContent = symbol;
      li.querySelector(".detail").textContent = detail ? ` ${detail}` : "";
    };
    const agent = this.stripTenant(e.agent);
    switch (e.type) {
      case "planned":
        for (const s of e.steps ?? []) step(s);
        replace(r.status, badge("running"));
        break;
      case "plan_rejected":
        replace(r.status, badge("plan rejected", "warn"));
        break;
      case "step_started":
        mark(step(e.step), "running", "▶", `${agent}${e.attempt > 1 ? ` (attempt ${e.attempt})` : ""}…`);
        break;
      case "step_done":
        mark(step(e.step), "done", "✓", agent);
        break;
      case "step_failed":
        mark(step(e.step), "failed", "✗", `${agent}: ${e.error}${e.retry ? " (retrying)" : ""}`);
        break;
      case "awaiting_approval": {
        const li = step(e.step);
        mark(li, "awaiting", "‖", `awaits approval: ${e.reason}`);
        li.append(" ", h("a", { href: `#/runs/${seg(id)}` }, "decide"));
        replace(r.status, badge("awaiting approval", "warn"));
        break;
      }
      case "decided":
        mark(step(e.step), e.approved ? "pending" : "denied", e.approved ? "○" : "⊘", `${e.approved ? "approved" : "denied"} by ${e.by}`);
        break;
      case "composing":
        replace(r.status, badge("composing"));
        break;
      case "finished": {
        const st = String(e.status ?? "").toLowerCase();
        replace(r.status, badge(st, st === "succeeded" ? "ok" : "bad"));
        if (e.error) r.append(h("div", { class: "tool-out failed" }, e.error));
        break;
      }
      default:
        break;
    }
    return e.type;
  }
}

class ChatPage extends AiosPage {
  async load() {
    this.live = liveIndicator();
    this.transcript = new Transcript(this.app.me.tenant);
    this.canSend = this.app.can("operator");
    this.answering = false;
    this.sock = null;
    this.cleanup(() => this.sock?.close());

    this.input = h("textarea", {
      name: "content",
      rows: "2",
      required: true,
      placeholder: this.canSend ? "Write a message… (Enter sends, Shift+Enter starts a new line)" : "",
      disabled: !this.canSend,
      onkeydown: (e) => {
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
          e.preventDefault();
          if (!this.sendButton.disabled) this.composer.requestSubmit();
        }
      },
    });
    this.sendButton = h("button", { type: "submit", disabled: true }, "Send");
    this.composer = h(
      "form",
      { class: "composer", onsubmit: (e) => (e.preventDefault(), this.send()) },
      field("Message", this.input, this.canSend ? null : "Sending messages needs the operator role; you see the conversation's live events."),
      this.sendButton,
    );
    this.setupBox = h("div", { class: "card chat-setup" });
    replace(this, pageHeader("Chat", this.live), this.setupBox, h("section", { class: "chat", "aria-label": "Chat" }, this.transcript.el, this.composer));

    const route = this.route;
    if (route.startsWith("session:")) return this.openSession(route.slice("session:".length));
    const [agent = "", session = ""] = route.split("/");
    return this.setupAgent(agent, session);
  }

  updateSend() {
    const ready = this.mode === "session" ? true : !!this.sock?.open;
    // While a team session is being set up, the agent below is not the one to talk to.
    const settingUp = this.mode === "agent" && this.modeSel?.value === "team";
    this.sendButton.disabled = !this.canSend || this.answering || !ready || !this.target || settingUp;
    this.composer.setAttribute("aria-busy", String(this.answering));
  }

  setAnswering(on) {
    this.answering = on;
    this.updateSend();
  }

  // ---- agent socket ----

  async setupAgent(agentName, sessionName) {
    this.mode = "agent";
    let agents;
    try {
      agents = await fetchAllAgents();
    } catch (e) {
      replace(this.setupBox, errorBox(e));
      return;
    }
    this.agents = agents;
    const names = agents.map((a) => a.name);
    if (!names.length) {
      replace(
        this.setupBox,
        h("p", { class: "empty" }, "No agents yet. ", h("a", { href: "#/agents" }, this.canSend ? "Create one on the Agents page." : "Agents are listed on the Agents page.")),
      );
      this.live.set("closed");
      this.live.textContent = "no agent";
      return;
    }
    let chosen = names.includes(agentName) ? agentName : "";
    if (agentName && !chosen) toast(`There is no agent ${agentName}.`, "error");
    if (!chosen) chosen = names.includes(this.app.prefs.default_agent) ? this.app.prefs.default_agent : names[0];
    if (sessionName && !SESSION_NAME.test(sessionName)) sessionName = "";

    const modeSel = h(
      "select",
      { name: "mode", onchange: () => this.renderSetup(modeSel.value) },
      h("option", { value: "agent", selected: true }, "An agent"),
      h("option", { value: "team" }, "A team"),
    );
    this.modeSel = modeSel;
    this.agentSel = h(
      "select",
      { name: "agent", onchange: () => this.connectAgent(this.agentSel.value, this.sessionInput.value.trim()) },
      agents.map((a) => h("option", { value: a.name, selected: a.name === chosen }, `${a.name} (${roleText(a.role)})`)),
    );
    this.sessionInput = h("input", {
      name: "session",
      value: sessionName,
      placeholder: "main",
      autocomplete: "off",
      spellcheck: "false",
      maxlength: "64",
      onchange: () => this.connectAgent(this.agentSel.value, this.sessionInput.value.trim()),
    });
    this.renderSetup("agent");
    this.connectAgent(chosen, sessionName);
  }

  renderSetup(mode) {
    const modeField = field("Talk to", this.modeSel);
    this.updateSend();
    if (mode === "agent") {
      const record = this.canSend
        ? h(
            "button",
            {
              type: "button",
              class: "secondary",
              title: "A recorded session keeps its history, listed under Sessions",
              onclick: (e) => this.startSession(e.currentTarget, { agent: this.agentSel.value, title: `Chat with ${this.agentSel.value}` }),
            },
            "Start recorded session",
          )
        : null;
      replace(
        this.setupBox,
        h(
          "form",
          { class: "inline", onsubmit: (e) => (e.preventDefault(), this.connectAgent(this.agentSel.value, this.sessionInput.value.trim())) },
          modeField,
          field("Agent", this.agentSel),
          field("Session", this.sessionInput, "Optional: one conversation per name."),
          h("a", { class: "button secondary", href: `#/agents/${seg(this.agentSel.value)}` }, "Agent details"),
          record,
        ),
      );
      return;
    }
    // A team: every message becomes a run, planned by the planner and carried out by the
    // tenant's agents chosen by capability.
    const planners = this.agents.filter((a) => (a.capabilities ?? []).some((c) => c.name === "plan") || roleText(a.role) === "planner");
    const plannerSel = h(
      "select",
      { name: "planner" },
      h("option", { value: "" }, "The best agent with capability plan"),
      (planners.length ? planners : this.agents).map((a) => h("option", { value: a.name }, a.name)),
    );
    const title = h("input", { name: "title", maxlength: "200", autocomplete: "off", placeholder: "Team chat" });
    const members = this.agents.filter((a) => (a.capabilities ?? []).some((c) => c.name !== "plan"));
    replace(
      this.setupBox,
      h(
        "form",
        {
          class: "inline",
          onsubmit: (e) => {
            e.preventDefault();
            const body = { team: plannerSel.value ? { planner: plannerSel.value } : {}, title: title.value.trim() || "Team chat" };
            this.startSession(e.submitter ?? e.currentTarget.querySelector("button[type=submit]"), body);
          },
        },
        modeField,
        field("Planner", plannerSel),
        field("Title", title),
        this.canSend ? h("button", { type: "submit" }, "Start team session") : null,
      ),
      h(
        "p",
        { class: "hint team-hint" },
        "Each message becomes a run: the planner splits it into steps and each step goes to the agent whose capabilities fit best. ",
        members.length
          ? ["Members: ", members.map((a, i) => [i ? ", " : "", h("a", { href: `#/agents/${seg(a.name)}` }, a.name), ` (${a.capabilities.map((c) => c.name).join(", ")})`])]
          : "No agent has a capability other than plan yet: give agents capabilities on the Agents page.",
      ),
      this.canSend ? null : h("p", { class: "muted" }, "Starting a session needs the operator role."),
    );
  }

  connectAgent(agent, session) {
    if (session && !SESSION_NAME.test(session)) {
      // Enter in the field both changes and submits it: one message is enough.
      const now = Date.now();
      if (this.rejected?.value !== session || now - this.rejected.at > 1000) {
        toast("Session: 1–64 of a-z, A-Z, 0-9, _ - . (or empty for the main conversation).", "error");
      }
      this.rejected = { value: session, at: now };
      this.sessionInput.setAttribute("aria-invalid", "true");
      this.sessionInput.focus();
      return;
    }
    this.sessionInput?.removeAttribute("aria-invalid");
    if (this.sock && this.target === agent && (this.session ?? "") === session) return;
    this.sock?.close();
    this.target = agent;
    this.session = session;
    this.setAnswering(false);
    history.replaceState(null, "", agentRoute(agent, session));
    this.transcript.clear(h("div", { class: "note muted" }, `Conversation with ${agent}${session ? `, session ${session}` : " (main conversation)"}. Earlier messages of this conversation are not shown here; the agent remembers them.`));
    const q = session ? `?session=${encodeURIComponent(session)}` : "";
    // Events of a socket that was replaced meanwhile are dropped.
    let sock = null;
    const stale = () => sock !== null && this.sock !== sock;
    sock = openSocket(`/v1/agents/${seg(agent)}/ws${q}`, {
      onState: (s) => {
        if (stale()) return;
        this.live.set(s);
        if (s === "closed" && this.answering) {
          this.transcript.error("The connection dropped while the agent was answering; the rest of the answer may be lost.");
          this.setAnswering(false);
        }
        this.updateSend();
      },
      onMessage: (f) => !stale() && this.onAgentFrame(f),
    });
    this.sock = sock;
    // The agent's details link follows the choice.
    const link = this.setupBox.querySelector("a.button");
    if (link) link.href = `#/agents/${seg(agent)}`;
    this.updateSend();
  }

  onAgentFrame(f) {
    if (f.type === "token") this.transcript.token(f.text ?? "");
    else if (f.type === "event") {
      const kind = this.transcript.event(f.event);
      if (kind === "Final" || kind === "Error") this.setAnswering(false);
    } else if (f.type === "error") {
      this.transcript.error(f.message ?? "error");
      this.setAnswering(false);
    } else if (f.type === "lagged") {
      this.transcript.note(`${f.missed ?? "Some"} events were missed (the connection was too slow); the final answer still arrives.`);
    }
  }

  async startSession(button, body) {
    if (button) button.disabled = true;
    try {
      const info = await post("/v1/sessions", body);
      location.hash = `#/chat/session:${info.id}`;
    } catch (e) {
      toast(e.detail ?? String(e), "error");
    } finally {
      if (button) button.disabled = false;
    }
  }

  // ---- recorded sessions ----

  async openSession(id) {
    this.mode = "session";
    this.sessionId = id;
    let info;
    try {
      info = await get(`/v1/sessions/${seg(id)}`);
    } catch (e) {
      replace(this.setupBox, errorBox(e), h("a", { href: "#/sessions" }, "All sessions"));
      this.live.set("closed");
      this.live.textContent = "no session";
      return;
    }
    this.info = info;
    const target = info.target ?? {};
    const agent = target.Agent?.name;
    const team = target.Team;
    this.target = agent ?? "team";
    replace(
      this.setupBox,
      h(
        "div",
        { class: "row session-info" },
        h("strong", {}, info.title || "Untitled session"),
        agent ? ["with agent ", h("a", { href: `#/agents/${seg(agent)}` }, agent)] : ["with a team", team?.planner ? [" planned by ", h("a", { href: `#/agents/${seg(team.planner)}` }, team.planner)] : " (best planner)"],
        h("span", { class: "muted" }, `· started ${fmtTime(info.created_ms)}`),
        h("span", { class: "spacer" }),
        h("a", { class: "button secondary small", href: `#/sessions/${seg(id)}` }, "Session details"),
        h("a", { class: "button secondary small", href: "#/chat" }, "New chat"),
      ),
    );
    this.nextSeq = info.next_seq;
    this.firstShown = Math.max(info.first_seq ?? 0, info.next_seq - HISTORY_PAGE);
    this.transcript.clear();
    try {
      await this.renderHistory(this.firstShown, info.next_seq);
    } catch (e) {
      this.transcript.error(e.detail ?? String(e));
    }
    if (this.firstShown > (info.first_seq ?? 0)) this.addEarlierButton(info.first_seq ?? 0);
    if (!this.transcript.el.querySelector(".msg")) this.transcript.note(agent ? `A new conversation with ${agent}.` : "A new team conversation: each message is planned and carried out by the team.");
    const sock = openSocket(`/v1/sessions/${seg(id)}/ws`, {
      onState: (s) => {
        this.live.set(s);
        this.updateSend();
      },
      onOpen: () => {
        // What was said while the feed was down.
        if (!this.answering) this.syncHistory();
      },
      onMessage: (f) => this.onSessionFrame(f),
    });
    this.sock = sock;
    this.updateSend();
    if (this.canSend) this.input.focus();
  }

  entryNode(e) {
    if (e.role === "User") return h("div", { class: "msg user", dataset: { seq: e.seq } }, e.text, h("time", { class: "at" }, fmtTime(e.at_ms)));
    if (e.role === "Assistant")
      return h(
        "div",
        { class: "msg assistant", dataset: { seq: e.seq, final: "true" } },
        e.text,
        e.run ? h("a", { class: "at", href: `#/runs/${seg(e.run)}` }, "run details") : null,
        h("time", { class: "at" }, fmtTime(e.at_ms)),
      );
    return h("div", { class: "msg error", dataset: { seq: e.seq } }, e.text, h("time", { class: "at" }, fmtTime(e.at_ms)));
  }

  /** Renders entries `from..to` at the end of the transcript. */
  async renderHistory(from, to) {
    let seq = from;
    while (seq < to) {
      const page = await get(`/v1/sessions/${seg(this.sessionId)}/history?from=${seq}&limit=${Math.min(HISTORY_PAGE, to - seq)}`);
      const items = page.items ?? [];
      for (const e of items) this.transcript.add(this.entryNode(e));
      if (!items.length) break;
      seq = items[items.length - 1].seq + 1;
    }
    this.transcript.el.scrollTop = this.transcript.el.scrollHeight;
  }

  addEarlierButton(firstSeq) {
    const button = h(
      "button",
      {
        type: "button",
        class: "secondary small earlier",
        onclick: async () => {
          const from = Math.max(firstSeq, this.firstShown - HISTORY_PAGE);
          button.disabled = true;
          try {
            const page = await get(`/v1/sessions/${seg(this.sessionId)}/history?from=${from}&limit=${this.firstShown - from}`);
            const height = this.transcript.el.scrollHeight;
            button.after(...(page.items ?? []).map((e) => this.entryNode(e)));
            this.transcript.el.scrollTop += this.transcript.el.scrollHeight - height;
            this.firstShown = from;
            if (from <= firstSeq) button.remove();
          } catch (e) {
            toast(e.detail ?? String(e), "error");
          } finally {
            button.disabled = false;
          }
        },
      },
      "Show earlier messages",
    );
    this.transcript.el.prepend(button);
  }

  /** Appends entries said since the last one shown (by another tab or client). */
  async syncHistory() {
    if (this.syncing) return;
    this.syncing = true;
    try {
      const info = await get(`/v1/sessions/${seg(this.sessionId)}`);
      if (info.next_seq > this.nextSeq) {
        // A turn of someone else that was streaming here is replaced by its entries.
        for (const n of this.transcript.el.querySelectorAll('.msg.assistant[data-streaming="true"]')) n.remove();
        this.transcript.bubble = null;
        await this.renderHistory(Math.max(this.nextSeq, info.first_seq ?? 0), info.next_seq);
        this.nextSeq = info.next_seq;
      }
    } catch (e) {
      toast(e.detail ?? String(e), "error");
    } finally {
      this.syncing = false;
    }
  }

  onSessionFrame(f) {
    const d = f.data ?? {};
    if (f.type === "lagged") {
      this.transcript.note(`${d.missed ?? "Some"} events were missed; the answer still arrives.`);
      return;
    }
    if (!this.answering) {
      // Another client's turn: shown from the history once it ends.
      if ((f.type === "event" && (d.Final || d.Error)) || (f.type === "run" && d.type === "finished")) this.syncHistory();
      if (f.type !== "run") return;
    }
    if (f.type === "token") this.transcript.token(d.text ?? "");
    // A failure is reported by the answer to the message (and recorded in the history).
    else if (f.type === "event" && !d.Error) this.transcript.event(d);
    else if (f.type === "run") this.transcript.runEvent(d);
  }

  // ---- sending ----

  async send() {
    const content = this.input.value;
    if (!content.trim() || this.answering || !this.canSend) return;
    if (this.mode === "agent") {
      if (!this.sock?.send({ content })) {
        toast("Not connected to the agent yet; try again in a moment.", "error");
        return;
      }
      this.transcript.user(content);
      this.input.value = "";
      this.setAnswering(true);
      return;
    }
    this.transcript.user(content);
    this.input.value = "";
    this.setAnswering(true);
    try {
      const entry = await post(`/v1/sessions/${seg(this.sessionId)}/messages`, { content });
      const bubble = this.transcript.closeWith(entry.text, { run: entry.run, at: entry.at_ms });
      if (bubble) bubble.dataset.seq = entry.seq;
      this.nextSeq = entry.seq + 1;
    } catch (e) {
      this.transcript.error(e.detail ?? String(e));
      this.transcript.closed = true;
      try {
        this.nextSeq = (await get(`/v1/sessions/${seg(this.sessionId)}`)).next_seq;
      } catch {
        // The next sync shows what is missing.
      }
    } finally {
      this.setAnswering(false);
      this.input.focus();
    }
  }
}
customElements.define("aios-page-chat", ChatPage);
