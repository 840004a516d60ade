// The costs view (`#/costs`): the tenant's LLM tokens and cost (totals, per agent, per
// tenant for the operator tenant, requests today) and their last hour, refreshed every 10 s.

import { get, seg } from "../api.js";
import { h, replace, errorBox, busy, fmtNum, fmtUsd, fmtTime, AiosPage, pageHeader } from "../ui.js";
import { lineChart } from "../charts.js";
import { barChart, pagedTable } from "./tools.js";

/** How often the figures are refreshed. */
const REFRESH_MS = 10000;
/** The span of the history charts. */
const HOUR_MS = 3600000;

const tokens = (t) => (t?.input_tokens ?? 0) + (t?.output_tokens ?? 0);
const pct = (part, whole) => (whole > 0 ? `${((part / whole) * 100).toFixed(1)} %` : "—");

function stat(label, value, title) {
  return h("div", { class: "stat", title }, h("div", { class: "label" }, label), h("div", { class: "value" }, value));
}

/** Columns shared by the per-agent and per-tenant tables. */
function totalsColumns(totalCost) {
  return [
    { label: "Requests", class: "num", value: (r) => fmtNum(r.totals?.requests) },
    { label: "Cached", class: "num", value: (r) => fmtNum(r.totals?.cached_requests) },
    { label: "Input tokens", class: "num", value: (r) => fmtNum(r.totals?.input_tokens) },
    { label: "Output tokens", class: "num", value: (r) => fmtNum(r.totals?.output_tokens) },
    { label: "Cost", class: "num", value: (r) => fmtUsd(r.cost_usd) },
    { label: "Share of cost", class: "num", value: (r) => pct(r.cost_usd ?? 0, totalCost) },
  ];
}

class CostsPage extends AiosPage {
  async load() {
    this.points = [];
    this.lastAt = 0;
    const refresh = h("button", { type: "button", class: "secondary", onclick: () => busy(refresh, () => this.refresh()) }, "Refresh");
    this.updated = h("span", { class: "muted cost-updated", "aria-live": "off" });
    this.summary = h("div", {}, h("p", { class: "loading" }, "Loading…"));
    this.agentCharts = h("div", { class: "cost-charts" });
    this.agentTable = h("div", {});
    this.tenantCard = h("div", {});
    this.history = h("div", {}, h("p", { class: "loading" }, "Loading…"));
    const nodeWide = !!this.app.me?.operator_tenant;
    this.replaceChildren(
      pageHeader("Costs", this.updated, refresh),
      this.summary,
      h(
        "section",
        { class: "card", "aria-labelledby": "cost-agents" },
        h("h2", { id: "cost-agents" }, "Per agent"),
        this.agentCharts,
        this.agentTable,
      ),
      this.tenantCard,
      h(
        "section",
        { class: "card", "aria-labelledby": "cost-history" },
        h("h2", { id: "cost-history" }, "Last hour"),
        h(
          "p",
          { class: "muted" },
          nodeWide
            ? "Tokens and cost of the whole node (every tenant) so far, sampled every 5 s."
            : "Your tenant's tokens and cost so far, sampled every 5 s.",
        ),
        this.history,
      ),
    );
    await this.refresh();
    const timer = setInterval(() => {
      if (!document.hidden) this.refresh().catch(() => {});
    }, REFRESH_MS);
    this.cleanup(() => clearInterval(timer));
  }

  async refresh() {
    const [costs, history] = await Promise.allSettled([
      get("/v1/costs"),
      get(`/v1/metrics/history${this.lastAt ? `?since_ms=${this.lastAt}` : ""}`),
    ]);
    if (costs.status === "rejected") {
      this.lastCosts = null;
      replace(this.summary, errorBox(costs.reason));
    }
    else this.renderCosts(costs.value ?? {});
    if (history.status === "rejected") replace(this.history, errorBox(history.reason));
    else this.renderHistory(history.value?.items ?? []);
    this.updated.textContent = `updated ${fmtTime(Date.now()).slice(11)}`;
  }

  renderCosts(c) {
    // Unchanged figures are not redrawn, so keyboard focus in the tables stays put.
    const sig = JSON.stringify(c);
    if (sig === this.lastCosts) return;
    this.lastCosts = sig;
    const t = c.totals ?? {};
    const cost = c.cost_usd ?? 0;
    replace(
      this.summary,
      h(
        "section",
        { class: "stats cost-stats", "aria-label": `Totals of tenant ${c.tenant ?? ""}` },
        stat("Cost", fmtUsd(cost), `tenant ${c.tenant ?? ""}, USD`),
        stat("Input tokens", fmtNum(t.input_tokens)),
        stat("Output tokens", fmtNum(t.output_tokens)),
        stat("LLM requests", fmtNum(t.requests)),
        stat("Answered from cache", `${fmtNum(t.cached_requests)}`, pct(t.cached_requests ?? 0, t.requests ?? 0)),
        stat("Requests today", fmtNum(c.requests_today), "counted against the tenant's daily quota"),
      ),
    );

    const agents = [...(c.agents ?? [])].sort((a, b) => (b.cost_usd ?? 0) - (a.cost_usd ?? 0) || tokens(b.totals) - tokens(a.totals));
    const agentCost = agents.reduce((s, a) => s + (a.cost_usd ?? 0), 0);
    replace(
      this.agentCharts,
      barChart("Cost per agent", agents.map((a) => ({ label: a.agent, value: a.cost_usd ?? 0 })), { format: fmtUsd }),
      barChart("Tokens per agent (input + output)", agents.map((a) => ({ label: a.agent, value: tokens(a.totals) }))),
    );
    replace(
      this.agentTable,
      pagedTable(
        [{ label: "Agent", value: (r) => h("a", { href: `#/agents/${seg(r.agent)}`, class: "mono" }, r.agent) }, ...totalsColumns(agentCost)],
        agents,
        { empty: "No agent has used an LLM yet.", caption: "Tokens and cost per agent", rowAttrs: (r) => ({ dataset: { agent: r.agent } }) },
        this.app.prefs?.page_size,
      ),
    );

    if (!this.app.me?.operator_tenant) {
      replace(this.tenantCard);
      return;
    }
    const tenants = [...(c.tenants ?? [])].sort((a, b) => (b.cost_usd ?? 0) - (a.cost_usd ?? 0) || tokens(b.totals) - tokens(a.totals));
    const nodeCost = tenants.reduce((s, x) => s + (x.cost_usd ?? 0), 0);
    replace(
      this.tenantCard,
      h(
        "section",
        { class: "card", "aria-labelledby": "cost-tenants" },
        h("h2", { id: "cost-tenants" }, "Per tenant"),
        h("p", { class: "muted" }, `Every tenant of the node (you use the operator tenant). In all: ${fmtUsd(nodeCost)}.`),
        pagedTable(
          [{ label: "Tenant", value: (r) => h("span", { class: "mono" }, r.tenant) }, ...totalsColumns(nodeCost)],
          tenants,
          { empty: "No tenant has used an LLM yet.", caption: "Tokens and cost per tenant", rowAttrs: (r) => ({ dataset: { tenant: r.tenant } }) },
          this.app.prefs?.page_size,
        ),
      ),
    );
  }

  renderHistory(items) {
    for (const it of items) {
      if (it.at_ms > this.lastAt) {
        this.points.push(it);
        this.lastAt = it.at_ms;
      }
    }
    const from = Date.now() - HOUR_MS;
    this.points = this.points.filter((p) => p.at_ms >= from);
    const tokenSeries = [{ label: "Tokens", points: this.points.map((p) => [p.at_ms, p.tokens ?? 0]) }];
    const costSeries = [{ label: "Cost", points: this.points.map((p) => [p.at_ms, p.cost_usd ?? 0]) }];
    replace(
      this.history,
      h(
        "div",
        { class: "cost-charts" },
        lineChart("Tokens (input + output), total", tokenSeries, { format: fmtNum }),
        lineChart("Cost (USD), total", costSeries, { format: fmtUsd }),
      ),
    );
  }
}

customElements.define("aios-page-costs", CostsPage);
