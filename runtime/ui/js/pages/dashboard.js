// The dashboard: health, the node and its cluster, actors by kind, restarts per minute, LLM
// tokens and cost over time, the scheduler's queue; refreshed every 5 s from `/v1/status`,
// `/v1/cluster/nodes` and `/v1/metrics/history` (samples of the last hour, one every 5 s).

import { get } from "../api.js";
import { AiosPage, h, replace, pageHeader, fmtNum, fmtUsd, fmtDuration, fmtTime, table, badge } from "../ui.js";
import { lineChart, perMinute, chartTable } from "../charts.js";

const REFRESH_MS = 5000;

function stat(label, value, hint) {
  return h("div", { class: "stat", title: hint }, h("div", { class: "label" }, label), h("div", { class: "value" }, value));
}

async function probe(path) {
  try {
    const r = await fetch(path);
    return r.ok ? "ok" : r.status === 404 ? "n/a" : `HTTP ${r.status}`;
  } catch {
    return "unreachable";
  }
}

class DashboardPage extends AiosPage {
  async load() {
    this.samples = [];
    this.body = h("div", { "aria-live": "off" });
    replace(this, pageHeader("Dashboard", h("span", { class: "muted", id: "dash-updated" })), this.body);
    await this.refresh();
    const timer = setInterval(() => this.tick(), REFRESH_MS);
    this.cleanup(() => clearInterval(timer));
  }

  /** A periodic refresh: a failure (the daemon restarting) is shown, and retried. */
  async tick() {
    if (this.refreshing) return;
    this.refreshing = true;
    try {
      await this.refresh();
      this.querySelector(".dash-down")?.remove();
    } catch (e) {
      if (!this.querySelector(".dash-down")) {
        this.body.before(h("div", { class: "error dash-down", role: "alert" }, `Cannot refresh: ${e.detail ?? e.message}. Retrying every 5 s.`));
      }
    } finally {
      this.refreshing = false;
    }
  }

  async refresh() {
    const node = this.app.me.operator_tenant;
    const since = this.samples.at(-1)?.at_ms ?? 0;
    const [status, cluster, hist, healthz, readyz, errors] = await Promise.all([
      get("/v1/status"),
      node ? get("/v1/cluster/nodes") : { cluster: false, nodes: [] },
      get(`/v1/metrics/history?since_ms=${since}`),
      probe("/healthz"),
      probe("/readyz"),
      node && this.app.can("operator") ? get("/v1/errors").catch(() => null) : null,
    ]);
    this.samples = this.samples.concat(hist.items).slice(-720);
    const s = this.samples;
    const last = s.at(-1) ?? {};
    const series = (key) => s.map((x) => [x.at_ms, x[key] ?? 0]);
    const restartsPerMin = perMinute(series("restarts"));
    const cards = [
      stat("Health", h("span", {}, badge(`live ${healthz}`, healthz === "ok" ? "ok" : "bad"), " ", badge(`ready ${readyz}`, readyz === "ok" ? "ok" : "warn"))),
      stat("Uptime", fmtDuration(status.uptime_s)),
    ];
    if (node) {
      // Node-wide figures: the operator tenant's only.
      cards.push(
        stat(
          "Nodes",
          cluster.cluster ? `${1 + cluster.nodes.filter((n) => n.status === "up").length} up` : "1",
          cluster.cluster ? "this node and the members it has a session with" : "this node (not in a cluster)",
        ),
      );
      cards.push(stat("Actors", fmtNum(status.actors)));
      cards.push(stat("Agents active", fmtNum(status.agents_active)));
      cards.push(stat("Restarts / min", (restartsPerMin.at(-1)?.[1] ?? 0).toFixed(1)));
      cards.push(stat("LLM queue", fmtNum(last.llm_queued), "requests waiting in the LLM schedulers"));
      cards.push(stat("LLM in flight", fmtNum(last.llm_in_flight)));
    }
    cards.push(stat("LLM tokens", fmtNum(last.tokens)));
    cards.push(stat("LLM cost", fmtUsd(last.cost_usd)));
    const charts = [];
    if (node) {
      const kinds = ["agents", "tools", "memory", "services", "runs"].map((k) => ({
        label: k,
        points: s.map((x) => [x.at_ms, x.children?.[k] ?? 0]),
      }));
      charts.push(this.chart("Actors by kind", kinds, fmtNum));
      charts.push(this.chart("Restarts per minute", [{ label: "restarts/min", points: restartsPerMin }], (v) => v.toFixed(1)));
      charts.push(
        this.chart(
          "Scheduler queue depth",
          [
            { label: "queued", points: series("llm_queued") },
            { label: "in flight", points: series("llm_in_flight") },
          ],
          fmtNum,
        ),
      );
    }
    charts.push(this.chart("LLM tokens (total)", [{ label: "tokens", points: series("tokens") }], fmtNum));
    charts.push(this.chart("LLM cost (total)", [{ label: "USD", points: series("cost_usd") }], fmtUsd));
    replace(
      this.body,
      h("section", { class: "stats", "aria-label": "Now" }, cards),
      cluster.cluster ? this.members(cluster) : null,
      h("section", { class: "grid charts", "aria-label": "Last hour" }, charts),
      errors
        ? h(
            "section",
            { class: "card" },
            h("h2", {}, "Recent errors"),
            table(
              [
                { label: "When", value: (e) => fmtTime(e.at_ms) },
                { label: "Where", value: (e) => e.route },
                { label: "What", value: (e) => e.message },
              ],
              (errors.errors ?? []).slice(-10).reverse(),
              { empty: "No errors." },
            ),
          )
        : null,
    );
    const upd = this.querySelector("#dash-updated");
    if (upd) upd.textContent = `updated ${fmtTime(Date.now()).slice(11)}`;
  }

  /** The cluster's nodes as this one sees them. */
  members(cluster) {
    const rows = [{ ...cluster.self, status: "self" }, ...cluster.nodes];
    const figure = (v) => (v === null || v === undefined ? "–" : String(v));
    const tone = { self: "ok", up: "ok", down: "bad" };
    return h(
      "section",
      { class: "card", id: "dash-cluster" },
      h("h2", {}, "Cluster"),
      table(
        [
          { label: "Node", value: (n) => n.name },
          { label: "Address", value: (n) => n.address ?? "" },
          { label: "Status", value: (n) => badge(n.status, tone[n.status] ?? "warn") },
          { label: "Actors", value: (n) => figure(n.actors) },
          { label: "Agents active", value: (n) => figure(n.agents_active) },
          { label: "Busy (load)", value: (n) => figure(n.agents_busy) },
          { label: "Memory shards", value: (n) => figure(n.memory_shards) },
          { label: "Since", value: (n) => (n.since_ms ? fmtTime(n.since_ms) : "") },
        ],
        rows,
        { caption: "Nodes of the cluster" },
      ),
    );
  }

  chart(title, series, format) {
    return h("div", { class: "card" }, lineChart(title, series, { format }), chartTable(title, series, format));
  }
}

customElements.define("aios-page-dashboard", DashboardPage);
