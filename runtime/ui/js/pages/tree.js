// The supervision tree, live: every supervisor and worker with its state, generation,
// restart count and mailbox depth, expandable; operators restart, stop or kill an actor.
// Supervision events arrive over `/v1/tree/ws`; each one is listed, flashes its node, and
// reloads the tree (coalesced), so a crash and its restart show within a second.

import { get, post, openSocket } from "../api.js";
import { AiosPage, h, replace, pageHeader, liveIndicator, badge, confirmDialog, busy, toast, fmtTime, field } from "../ui.js";

const GROUPS = ["services", "memory", "tools", "agents", "runs"];
/** Supervision events listed at most. */
const EVENTS_MAX = 200;
/** Children shown under a node before "show more". */
const CHILDREN_SHOWN = 50;

function statusOf(node) {
  const st = node.status;
  if (st && typeof st === "object" && st.Running) return { text: `running · gen ${st.Running.generation}`, kind: "ok", running: true };
  if (st === "Restarting") return { text: "restarting", kind: "warn" };
  if (st === "Stopped") return { text: "stopped", kind: "bad", stopped: true };
  return { text: JSON.stringify(st), kind: "" };
}

/** One event's kind as text: `ChildRestarted {generation: 2}` → "restarted (gen 2)". */
function describe(kind) {
  if (typeof kind === "string") return kind.replace(/^Child/, "").toLowerCase();
  const [name, v] = Object.entries(kind)[0] ?? ["?", {}];
  const short = name.replace(/^Child/, "").replace(/([a-z])([A-Z])/g, "$1 $2").toLowerCase();
  if (v && typeof v === "object") {
    const bits = Object.entries(v).map(([k, x]) => `${k}: ${typeof x === "object" ? JSON.stringify(x) : x}`);
    return `${short} (${bits.join(", ")})`;
  }
  return short;
}

class TreePage extends AiosPage {
  async load() {
    this.expanded = new Set(["services", "agents", "memory", "runs"]);
    this.showAll = new Set();
    this.flashing = new Map();
    this.filter = "";
    this.live = liveIndicator();
    this.treeBox = h("div", { class: "tree", role: "tree", "aria-label": "Supervision tree" });
    this.eventsBox = h("ol", { class: "events", reversed: true, "aria-live": "polite", "aria-label": "Supervision events" });
    const filter = h("input", {
      type: "search",
      name: "filter",
      placeholder: "agents/…",
      oninput: (e) => {
        this.filter = e.target.value.trim();
        this.render();
      },
    });
    replace(
      this,
      pageHeader("Supervision tree", this.live, h("button", { type: "button", class: "secondary", onclick: () => this.reload() }, "Reload")),
      h("div", { class: "card" }, field("Filter by path", filter)),
      h("div", { class: "grid tree-grid" }, h("section", { class: "card", "aria-label": "Actors" }, this.treeBox), h("section", { class: "card" }, h("h2", {}, "Events"), this.eventsBox)),
    );
    await this.reload();
    const sock = openSocket("/v1/tree/ws", {
      onState: (s) => this.live.set(s),
      onOpen: () => this.reload(),
      onMessage: (f) => this.onEvent(f),
    });
    this.cleanup(() => sock.close());
    this.cleanup(() => clearTimeout(this.pending));
  }

  onEvent(frame) {
    if (frame.type === "lagged") {
      this.scheduleReload();
      return;
    }
    if (frame.type !== "supervision") return;
    const e = frame.data;
    const path = e.child ?? e.supervisor ?? "";
    this.eventsBox.prepend(
      h("li", { dataset: { path } }, h("time", { class: "muted" }, fmtTime(e.at_ms).slice(11)), " ", h("code", {}, path || "(root)"), " ", describe(e.kind)),
    );
    while (this.eventsBox.children.length > EVENTS_MAX) this.eventsBox.lastElementChild.remove();
    if (path) this.flashing.set(path, Date.now());
    this.scheduleReload();
  }

  scheduleReload() {
    if (this.pending) return;
    this.pending = setTimeout(() => {
      this.pending = null;
      this.reload();
    }, 150);
  }

  /** Reloads the tree; one request at a time (a reload asked meanwhile runs after it). */
  async reload() {
    if (this.loading) {
      this.dirty = true;
      return;
    }
    this.loading = true;
    try {
      do {
        this.dirty = false;
        this.data = await get("/v1/tree");
        if (!this.isConnected) return;
        this.render();
      } while (this.dirty);
    } catch (e) {
      replace(this.treeBox, h("div", { class: "error", role: "alert" }, e.detail ?? String(e)));
    } finally {
      this.loading = false;
    }
  }

  render() {
    if (!this.data) return;
    const now = Date.now();
    for (const [p, t] of this.flashing) if (now - t > 1500) this.flashing.delete(p);
    const groups = GROUPS.filter((g) => g in this.data).map((g) =>
      this.nodeItem({ id: g, path: g, kind: "Supervisor", status: { Running: { generation: 1 } }, restarts: 0, mailbox_len: 0, children: this.data[g], group: true }),
    );
    replace(this.treeBox, h("ul", { role: "group" }, groups.filter(Boolean)));
  }

  matches(node) {
    if (!this.filter) return true;
    if (node.path?.includes(this.filter)) return true;
    return (node.children ?? []).some((c) => this.matches(c));
  }

  nodeItem(node) {
    if (node.truncated) return h("li", { class: "muted" }, "… more (the listing is cut at 5000 actors)");
    if (!this.matches(node)) return null;
    const kids = node.children ?? [];
    const open = this.expanded.has(node.path) || (this.filter && kids.length > 0);
    const st = statusOf(node);
    const toggle = kids.length
      ? h(
          "button",
          {
            type: "button",
            class: "toggle",
            "aria-expanded": String(!!open),
            "aria-label": `${open ? "Collapse" : "Expand"} ${node.path}`,
            onclick: () => {
              if (this.expanded.has(node.path)) this.expanded.delete(node.path);
              else this.expanded.add(node.path);
              this.render();
            },
          },
          open ? "▾" : "▸",
        )
      : h("span", { class: "toggle", "aria-hidden": "true" }, "·");
    const actions = [];
    if (!node.group && this.app.can("operator")) {
      if (st.running) {
        actions.push(h("button", { type: "button", class: "small secondary", onclick: (e) => this.act(e.target, "stop", node) }, "Stop"));
        actions.push(h("button", { type: "button", class: "small danger", onclick: (e) => this.act(e.target, "kill", node) }, "Kill"));
      }
      if (st.stopped) actions.push(h("button", { type: "button", class: "small", onclick: (e) => this.act(e.target, "restart", node) }, "Restart"));
    }
    const row = h(
      "div",
      { class: `node${this.flashing.has(node.path) ? " flash" : ""}`, dataset: { path: node.path } },
      toggle,
      h("span", { class: "name" }, node.group ? h("strong", {}, node.id) : node.id),
      node.group ? badge(`${kids.length} children`) : badge(node.kind === "Supervisor" ? "supervisor" : "worker"),
      node.group ? null : h("span", { class: `badge state ${st.kind}` }, st.text),
      node.group ? null : h("span", { class: "badge restarts", title: "restarts" }, `restarts ${node.restarts}`),
      node.group ? null : h("span", { class: "badge mailbox", title: "messages waiting" }, `mailbox ${node.mailbox_len}`),
      actions,
    );
    let list = null;
    if (open && kids.length) {
      const all = this.showAll.has(node.path) || this.filter;
      const shown = all ? kids : kids.slice(0, CHILDREN_SHOWN);
      list = h(
        "ul",
        { role: "group" },
        shown.map((c) => this.nodeItem(c)).filter(Boolean),
        shown.length < kids.length
          ? h("li", {}, h("button", { type: "button", class: "small secondary", onclick: () => { this.showAll.add(node.path); this.render(); } }, `Show all ${kids.length}`))
          : null,
      );
    }
    return h("li", { role: "treeitem", "aria-expanded": kids.length ? String(!!open) : undefined }, row, list);
  }

  async act(button, what, node) {
    if (what !== "restart") {
      const text =
        what === "kill"
          ? `Kill ${node.path}? It stops at once, as if it crashed; its supervisor restarts it as its policy says.`
          : `Stop ${node.path}? It stays stopped until restarted.`;
      if (!(await confirmDialog(text, { confirm: what === "kill" ? "Kill" : "Stop" }))) return;
    }
    await busy(button, async () => {
      await post(`/v1/tree/${what}`, { path: node.path });
      toast(`${what}: ${node.path}`, "ok");
      this.scheduleReload();
    });
  }
}

customElements.define("aios-page-tree", TreePage);
