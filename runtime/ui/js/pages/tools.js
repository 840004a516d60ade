// The tools view: the installed tools the tenant may use (versions, description, input
// schema), their usage by agent and version, the grants that reach the tenant, and for the
// operator tenant their example tests, the node's MCP servers and the grants' controls.
//
// `#/tools` lists everything; `#/tools/<name>` shows one tool.
//
// Also exported for the memory and costs views: `barChart` (a horizontal SVG bar chart)
// and `pagedTable` (a table showing `page_size` rows at a time).

import { get, post, del, seg } from "../api.js";
import {
  h,
  replace,
  field,
  table,
  toast,
  confirmDialog,
  modal,
  errorBox,
  busy,
  formData,
  fmtNum,
  badge,
  AiosPage,
  pageHeader,
} from "../ui.js";

const SVG = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/**
 * A horizontal bar chart: `items` = [{label, value, part?}], largest first (the first
 * `limit`). `part` (failures, say) is drawn over the end of the bar in the "bad" colour and
 * named `partLabel` in the legend. Labels and figures are HTML text (readable at any width,
 * and by screen readers as a list); each bar is an SVG whose rect widths are attributes, so
 * no inline style is needed. Returns a <figure>.
 */
export function barChart(title, items, { format = fmtNum, limit = 20, valueLabel = "", partLabel = "" } = {}) {
  const fig = h("figure", { class: "chart tm-barchart" }, h("figcaption", {}, title));
  const rows = [...items].sort((a, b) => b.value - a.value || a.label.localeCompare(b.label)).slice(0, limit);
  if (!rows.length) {
    fig.append(h("p", { class: "empty" }, "Nothing to chart yet."));
    return fig;
  }
  const top = Math.max(...rows.map((r) => r.value), 0) || 1;
  const describe = (r) => `${format(r.value)}${partLabel && r.part ? `, ${fmtNum(r.part)} ${partLabel}` : ""}`;
  fig.append(
    h(
      "ul",
      { class: "tm-bars" },
      rows.map((r) => {
        const w = r.value > 0 ? Math.max(0.5, (r.value / top) * 100) : 0;
        const bar = svgEl("svg", { viewBox: "0 0 100 10", preserveAspectRatio: "none", "aria-hidden": "true", focusable: "false" });
        bar.append(svgEl("rect", { x: 0, y: 0, width: w.toFixed(2), height: 10, class: "bar" }));
        if (r.part > 0 && r.value > 0) {
          const pw = Math.max(0.5, (Math.min(r.part, r.value) / r.value) * w);
          bar.append(svgEl("rect", { x: (w - pw).toFixed(2), y: 0, width: pw.toFixed(2), height: 10, class: "bar part" }));
        }
        return h(
          "li",
          { class: "tm-bar-row", title: `${r.label}: ${describe(r)}` },
          h("span", { class: "tm-bar-label" }, r.label),
          h("span", { class: "visually-hidden" }, ": "),
          bar,
          h("span", { class: "tm-bar-value" }, describe(r)),
        );
      }),
    ),
  );
  const legend = [];
  if (valueLabel) legend.push(h("li", {}, h("span", { class: "swatch tm-swatch-bar", "aria-hidden": "true" }), valueLabel));
  if (partLabel) legend.push(h("li", {}, h("span", { class: "swatch tm-swatch-part", "aria-hidden": "true" }), partLabel));
  if (items.length > rows.length) legend.push(h("li", {}, `the ${rows.length} largest of ${items.length}`));
  if (legend.length) fig.append(h("ul", { class: "legend" }, legend));
  return fig;
}

/**
 * A table (see ui.js `table`) that shows `pageSize` rows and a "Show more" button for the
 * rest.
 */
export function pagedTable(columns, rows, opts = {}, pageSize = 50) {
  const size = Math.max(1, Number(pageSize) || 50);
  const box = h("div", { class: "tm-paged" });
  let shown = size;
  const render = (focusMore) => {
    const more =
      rows.length > shown
        ? h(
            "div",
            { class: "row tm-more" },
            h("span", { class: "muted" }, `Showing ${fmtNum(shown)} of ${fmtNum(rows.length)}.`),
            h(
              "button",
              {
                type: "button",
                class: "secondary small",
                onclick: () => {
                  shown += size;
                  render(true);
                },
              },
              "Show more",
            ),
          )
        : null;
    replace(box, table(columns, rows.slice(0, shown), opts), more);
    if (focusMore) (more?.querySelector("button") ?? box.querySelector("tbody tr:last-child a, tbody tr:last-child button"))?.focus();
  };
  render(false);
  return box;
}

/** A definition list of [term, value] pairs (values: nodes or strings). */
export function kv(pairs) {
  return h(
    "dl",
    { class: "tm-kv" },
    pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "—")]),
  );
}

/** Splits `name@version`. */
function splitId(id) {
  const at = id.lastIndexOf("@");
  return at > 0 ? [id.slice(0, at), id.slice(at + 1)] : [id, ""];
}

const LATENCY_BUCKETS = ["≤ 0.1 ms", "≤ 1 ms", "≤ 10 ms", "≤ 100 ms", "≤ 1 s", "≤ 10 s", "≤ 60 s", "> 60 s"];

/** The latency bucket holding the median call, from the usage histogram. */
function medianLatency(buckets = []) {
  const total = buckets.reduce((a, b) => a + b, 0);
  if (!total) return "—";
  let seen = 0;
  for (let i = 0; i < buckets.length; i++) {
    seen += buckets[i];
    if (seen * 2 >= total) return LATENCY_BUCKETS[i] ?? "—";
  }
  return "—";
}

const pct = (part, whole) => (whole ? `${((part / whole) * 100).toFixed(1)} %` : "—");

/** Usage items ({tool: "name@version", agent, usage}) summed per tool name. */
function usageByTool(items) {
  const out = new Map();
  for (const it of items) {
    const [name] = splitId(it.tool);
    const t = out.get(name) ?? { calls: 0, errors: 0, cache_hits: 0 };
    t.calls += it.usage?.calls ?? 0;
    t.errors += it.usage?.errors ?? 0;
    t.cache_hits += it.usage?.cache_hits ?? 0;
    out.set(name, t);
  }
  return out;
}

const toolLink = (name) => h("a", { href: `#/tools/${seg(name)}`, class: "mono" }, name);

/** The table of usage rows (per tool version and agent). */
function usageTable(items, pageSize, { withTool = true } = {}) {
  const rows = [...items].sort((a, b) => (b.usage?.calls ?? 0) - (a.usage?.calls ?? 0));
  const columns = [
    withTool && { label: "Tool", value: (r) => toolLink(splitId(r.tool)[0]) },
    { label: "Version", value: (r) => h("span", { class: "mono" }, splitId(r.tool)[1] || "—") },
    { label: "Agent", value: (r) => r.agent },
    { label: "Calls", class: "num", value: (r) => fmtNum(r.usage?.calls) },
    { label: "Failures", class: "num", value: (r) => fmtNum(r.usage?.errors) },
    { label: "Failure rate", class: "num", value: (r) => pct(r.usage?.errors ?? 0, r.usage?.calls ?? 0) },
    { label: "Cache hits", class: "num", value: (r) => fmtNum(r.usage?.cache_hits) },
    { label: "Median latency", value: (r) => medianLatency(r.usage?.latency_buckets) },
  ].filter(Boolean);
  return pagedTable(columns, rows, { empty: "No calls recorded yet.", caption: "Calls per tool version and agent" }, pageSize);
}

/** The outcome of a tool's example tests. */
function testReport(name, res) {
  const examples = res?.examples ?? [];
  const passed = examples.filter((e) => e.passed).length;
  const summary = examples.length
    ? [badge(res.passed ? "passed" : "failed", res.passed ? "ok" : "bad"), ` ${passed} of ${examples.length} passed`]
    : [badge("no tests", "warn"), " this tool has no examples, so there is nothing to run"];
  return h(
    "div",
    { class: "tm-test-run", dataset: { tool: name } },
    h("h3", {}, "Tests of ", h("span", { class: "mono" }, name), ": ", summary),
    examples.length
      ? h(
          "ul",
          { class: "tm-tests" },
          examples.map((e) =>
            h(
              "li",
              { class: e.passed ? "passed" : "failed" },
              badge(e.passed ? "passed" : "failed", e.passed ? "ok" : "bad"),
              h("span", { class: "tm-test-name" }, e.name),
              e.detail ? h("pre", { class: "tm-test-detail" }, e.detail) : null,
            ),
          ),
        )
      : null,
  );
}

/** Runs `name`'s tests, showing the outcome (or the error) in `out`. */
async function runTests(name, button, out) {
  replace(out, h("p", { class: "muted" }, `Running the tests of ${name}…`));
  await busy(button, async () => {
    try {
      const res = await post(`/v1/tools/${seg(name)}/test`);
      replace(out, testReport(name, res));
      toast(`${name}: ${res.examples?.length ? (res.passed ? "tests passed" : "tests failed") : "no tests"}`, res.passed ? "ok" : "error");
    } catch (e) {
      replace(out, errorBox(`Testing ${name} failed: ${e.detail ?? e.message ?? e}`));
      throw e;
    }
  });
}

/** Runs `fn` on up to `n` items at once; resolves to the settled results in order. */
async function settleAll(items, n, fn) {
  const out = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      try {
        out[i] = { ok: true, value: await fn(items[i]) };
      } catch (e) {
        out[i] = { ok: false, error: e };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}

/** A section: a card with a title and a body that can be refilled. */
function section(title, ...headerExtra) {
  const body = h("div", { class: "tm-section-body" }, h("p", { class: "loading" }, "Loading…"));
  const id = `tm-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  const card = h(
    "section",
    { class: "card", "aria-labelledby": id },
    h("div", { class: "tm-card-head" }, h("h2", { id }, title), h("div", { class: "actions" }, headerExtra)),
    body,
  );
  return { card, body };
}

class ToolsPage extends AiosPage {
  async load() {
    if (this.route) return this.loadTool(this.route);
    return this.loadList();
  }

  /** Tool tests are node-wide: operators of the operator tenant. */
  get canTest() {
    return this.app.can("operator") && !!this.app.me?.operator_tenant;
  }

  /** The node's MCP servers are listed to the operator tenant only. */
  get seesMcp() {
    return !!this.app.me?.operator_tenant;
  }

  /** Adding and removing MCP servers: admins of the operator tenant. */
  get canManageMcp() {
    return this.app.can("admin") && !!this.app.me?.operator_tenant;
  }

  get pageSize() {
    return this.app.prefs?.page_size ?? 50;
  }

  // ---- #/tools ----

  async loadList() {
    const refresh = h("button", { type: "button", class: "secondary", onclick: () => busy(refresh, () => this.refreshList()) }, "Refresh");
    this.toolsSec = section("Installed tools");
    this.usageSec = section("Usage");
    const addMcp = this.canManageMcp
      ? h("button", { type: "button", onclick: () => this.addMcpDialog() }, "Add MCP server")
      : null;
    this.mcpSec = section("MCP servers", addMcp);
    this.mcpMsg = h("div", { class: "tm-msg", role: "alert" });
    this.mcpList = h("div", {}, h("p", { class: "loading" }, "Loading…"));
    replace(this.mcpSec.body, this.mcpMsg, this.mcpList);
    const addGrant = this.canManageMcp
      ? h("button", { type: "button", onclick: () => this.addGrantDialog() }, "Grant tools")
      : null;
    this.grantsSec = section("Grants", addGrant);
    this.testOut = h("div", { class: "tm-test-out", role: "status", "aria-live": "polite" });
    this.replaceChildren(
      pageHeader("Tools", refresh),
      this.toolsSec.card,
      this.usageSec.card,
      this.grantsSec.card,
      this.seesMcp ? this.mcpSec.card : null,
    );
    await this.refreshList();
  }

  async refreshList() {
    const [tools, usage, mcp, grants] = await Promise.allSettled([
      get("/v1/tools"),
      get("/v1/tools/usage"),
      this.seesMcp ? get("/v1/mcp-servers") : Promise.resolve({ items: [] }),
      get("/v1/tools/grants"),
    ]);
    if (grants.status === "rejected") replace(this.grantsSec.body, errorBox(grants.reason));
    else this.renderGrants(grants.value?.items ?? []);
    const usageItems = usage.status === "fulfilled" ? usage.value?.items ?? [] : [];
    const byTool = usageByTool(usageItems);

    // Installed tools.
    if (tools.status === "rejected") replace(this.toolsSec.body, errorBox(tools.reason));
    else this.renderTools(tools.value?.items ?? [], usage.status === "fulfilled" ? byTool : null);

    // Usage.
    if (usage.status === "rejected") replace(this.usageSec.body, errorBox(usage.reason));
    else {
      const bars = [...byTool.entries()].map(([label, t]) => ({ label, value: t.calls, part: t.errors }));
      replace(
        this.usageSec.body,
        h("p", { class: "muted" }, "Calls of each tool by your tenant's agents (cache hits included)."),
        usageItems.length ? barChart("Calls per tool", bars, { valueLabel: "calls", partLabel: "failures" }) : null,
        usageTable(usageItems, this.pageSize),
      );
    }

    // MCP servers.
    if (mcp.status === "rejected") replace(this.mcpList, errorBox(mcp.reason));
    else this.renderMcp(mcp.value?.items ?? []);
  }

  renderTools(tools, byTool) {
    tools.sort((a, b) => a.name.localeCompare(b.name));
    const versionCells = new Map();
    const columns = [
      { label: "Tool", value: (t) => toolLink(t.name) },
      {
        label: "Versions",
        value: (t) => {
          const cell = h("span", { class: "tm-versions" }, h("span", { class: "mono" }, t.version));
          versionCells.set(t.name, cell);
          return cell;
        },
      },
      { label: "Description", value: (t) => t.description || h("span", { class: "muted" }, "—") },
      {
        label: "Capabilities",
        value: (t) => ((t.capabilities ?? []).length ? h("span", { class: "tm-badges" }, t.capabilities.map((c) => badge(c.name))) : "—"),
      },
      { label: "Calls", class: "num", value: (t) => (byTool ? fmtNum(byTool.get(t.name)?.calls ?? 0) : "—") },
      { label: "Failures", class: "num", value: (t) => (byTool ? fmtNum(byTool.get(t.name)?.errors ?? 0) : "—") },
    ];
    if (this.canTest) {
      columns.push({
        label: "Tests",
        value: (t) => {
          const b = h(
            "button",
            { type: "button", class: "secondary small", "aria-label": `Run tests of ${t.name}`, onclick: () => runTests(t.name, b, this.testOut) },
            "Run tests",
          );
          return b;
        },
      });
    }
    replace(
      this.toolsSec.body,
      pagedTable(columns, tools, { empty: "No tools are installed.", rowAttrs: (t) => ({ dataset: { tool: t.name } }) }, this.pageSize),
      this.testOut,
    );
    // Each tool's versions, a few requests at a time.
    settleAll(tools, 4, (t) => get(`/v1/tools/${seg(t.name)}/versions`)).then((results) => {
      results.forEach((r, i) => {
        const cell = versionCells.get(tools[i].name);
        if (!cell) return;
        if (!r.ok) {
          replace(cell, h("span", { class: "tm-inline-error" }, `versions: ${r.error.detail ?? r.error.message}`));
          return;
        }
        replace(cell, versionList(r.value));
      });
    });
  }

  renderMcp(servers) {
    servers.sort((a, b) => a.name.localeCompare(b.name));
    const columns = [
      { label: "Name", value: (m) => h("span", { class: "mono" }, m.name) },
      { label: "Transport", value: (m) => m.transport },
      {
        label: "Connected",
        value: (m) => [
          m.connected ? badge("connected", "ok") : badge("disconnected", "bad"),
          m.error ? h("div", { class: "tm-inline-error" }, m.error) : null,
        ],
      },
      { label: "PID", class: "num", value: (m) => (m.pid ?? "—").toString() },
      { label: "Generation", class: "num", value: (m) => (m.generation ?? "—").toString() },
      {
        label: "Version",
        value: (m) => [
          h("span", { class: "mono" }, m.version || "—"),
          m.server_version && m.server_version !== m.version ? h("div", { class: "muted" }, `server reports ${m.server_version}`) : null,
        ],
      },
      {
        label: "Tools",
        value: (m) =>
          (m.tools ?? []).length
            ? h("ul", { class: "tm-list" }, m.tools.map((id) => h("li", {}, toolLink(splitId(id)[0]), h("span", { class: "muted" }, ` @${splitId(id)[1]}`))))
            : "—",
      },
    ];
    if (this.canManageMcp) {
      columns.push({
        label: "Actions",
        value: (m) => {
          const b = h(
            "button",
            { type: "button", class: "danger small", "aria-label": `Remove MCP server ${m.name}`, onclick: () => this.removeMcp(m, b) },
            "Remove",
          );
          return b;
        },
      });
    }
    replace(
      this.mcpList,
      pagedTable(columns, servers, { empty: "No MCP servers.", rowAttrs: (m) => ({ dataset: { mcp: m.name } }) }, this.pageSize),
    );
  }

  renderGrants(grants) {
    const who = (g) => [
      g.tenant ? `tenant ${g.tenant}` : "every tenant",
      g.agent ? `agent ${g.agent}` : null,
      g.role ? `role ${g.role}` : null,
    ].filter(Boolean).join(", ");
    const columns = [
      { label: "Who", value: (g) => who(g) },
      { label: "Tools", value: (g) => h("span", { class: "mono" }, (g.tools ?? []).join(", ")) },
      { label: "From", value: (g) => (g.source === "config" ? badge("configuration") : badge("API")) },
    ];
    if (this.canManageMcp) {
      columns.push({
        label: "Actions",
        value: (g) => {
          if (g.source !== "api") return "—";
          const b = h(
            "button",
            { type: "button", class: "danger small", "aria-label": `Revoke the grant of ${(g.tools ?? []).join(", ")} to ${who(g)}`, onclick: () => this.revokeGrant(g, b) },
            "Revoke",
          );
          return b;
        },
      });
    }
    replace(
      this.grantsSec.body,
      h("p", { class: "muted" }, "Who may call which tools. Each agent still lists the tools it calls in its definition."),
      pagedTable(columns, grants, { empty: "No grants reach this tenant.", rowAttrs: (g) => ({ dataset: { grant: g.id } }) }, this.pageSize),
    );
  }

  async revokeGrant(grant, button) {
    const ok = await confirmDialog(`Revoke the grant of ${(grant.tools ?? []).join(", ")}? Agents it covered can no longer call those tools.`, { confirm: "Revoke" });
    if (!ok) return;
    await busy(button, async () => {
      await del(`/v1/tools/grants/${seg(grant.id)}`);
      toast("Grant revoked.", "ok");
      await this.refreshList();
    });
  }

  addGrantDialog() {
    const status = h("div", { class: "tm-status", role: "alert" });
    const submit = h("button", { type: "submit" }, "Grant");
    const form = h(
      "form",
      {
        onsubmit: async (e) => {
          e.preventDefault();
          replace(status);
          const f = formData(form);
          const body = { tools: String(f.tools ?? "").split(",").map((t) => t.trim()).filter(Boolean) };
          for (const k of ["tenant", "agent", "role"]) if (f[k]) body[k] = String(f[k]).trim();
          await busy(submit, async () => {
            try {
              await post("/v1/tools/grants", body);
            } catch (err) {
              replace(status, errorBox(err));
              throw err;
            }
            toast(`Granted ${body.tools.join(", ")}.`, "ok");
            dlg.close();
            await this.refreshList();
          });
        },
      },
      field("Tenant", h("input", { name: "tenant", spellcheck: "false", autocomplete: "off", placeholder: "acme" }), "Empty: every tenant."),
      field("Agent", h("input", { name: "agent", spellcheck: "false", autocomplete: "off", placeholder: "writer" }), "One agent of that tenant, by its name there (needs a tenant)."),
      field("Role", h("input", { name: "role", spellcheck: "false", autocomplete: "off", placeholder: "executor" }), "Only agents with this role (optional)."),
      field("Tools", h("input", { name: "tools", required: true, spellcheck: "false", autocomplete: "off", placeholder: "t__search, web_fetch" }), "Tool names separated by commas; * for every tool."),
      status,
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "secondary", onclick: () => dlg.close() }, "Cancel"),
        submit,
      ),
    );
    const { dialog: dlg } = modal("Grant tools", form);
    form.querySelector("input[name=tenant]")?.focus();
  }

  async removeMcp(server, button) {
    const n = server.tools?.length ?? 0;
    const ok = await confirmDialog(
      `Remove the MCP server "${server.name}"? Its ${n} tool${n === 1 ? "" : "s"} will be uninstalled and its connection closed. This is refused while an agent or another tool still needs one of them.`,
      { confirm: "Remove" },
    );
    if (!ok) return;
    replace(this.mcpMsg);
    await busy(button, async () => {
      try {
        await del(`/v1/mcp-servers/${seg(server.name)}`);
      } catch (e) {
        const inUse = e.status === 409;
        replace(
          this.mcpMsg,
          h(
            "div",
            { class: "error tm-error-detail" },
            h("strong", {}, inUse ? `"${server.name}" is in use and was not removed. ` : `Removing "${server.name}" failed. `),
            e.detail ?? e.message ?? String(e),
            inUse ? h("div", {}, "Remove the tool from those agents (or remove the agents) first, then try again.") : null,
          ),
        );
        this.mcpMsg.querySelector(".error")?.setAttribute("tabindex", "-1");
        this.mcpMsg.querySelector(".error")?.focus();
        // Some of its tools may have been uninstalled before the refusal.
        this.refreshList().catch(() => {});
        throw e;
      }
      toast(`Removed the MCP server ${server.name}.`, "ok");
      await this.refreshList();
    });
  }

  addMcpDialog() {
    const status = h("div", { class: "tm-status" });
    const kind = h(
      "select",
      { name: "kind", onchange: () => toggle() },
      h("option", { value: "stdio" }, "stdio (a child process)"),
      h("option", { value: "http" }, "HTTP (streamable)"),
    );
    const stdio = h(
      "fieldset",
      { class: "tm-fieldset" },
      h("legend", { class: "visually-hidden" }, "Child process"),
      field("Command", h("input", { name: "command", required: true, placeholder: "/usr/local/bin/my-mcp-server", spellcheck: "false" }), "The program to run."),
      field("Arguments, one per line", h("textarea", { name: "args", rows: 3, spellcheck: "false" })),
      field(
        "Environment, one NAME=value per line",
        h("textarea", { name: "env", rows: 2, spellcheck: "false" }),
        "The child gets only these, PATH and HOME.",
      ),
      field("Working directory", h("input", { name: "cwd", spellcheck: "false" })),
    );
    const http = h(
      "fieldset",
      { class: "tm-fieldset", hidden: true, disabled: true },
      h("legend", { class: "visually-hidden" }, "HTTP endpoint"),
      field("URL", h("input", { name: "url", type: "url", required: true, placeholder: "http://127.0.0.1:8080/mcp", spellcheck: "false" })),
      field(
        "Bearer token variable",
        h("input", { name: "bearer_token_env", spellcheck: "false", pattern: "[A-Za-z_][A-Za-z0-9_]*" }),
        "The name of an environment variable of aiosd holding the token (optional).",
      ),
    );
    const toggle = () => {
      const isHttp = kind.value === "http";
      http.hidden = http.disabled = !isHttp;
      stdio.hidden = stdio.disabled = isHttp;
    };
    const submit = h("button", { type: "submit" }, "Add server");
    const form = h(
      "form",
      {
        class: "tm-form",
        onsubmit: async (e) => {
          e.preventDefault();
          replace(status);
          let body;
          try {
            body = mcpBody(formData(form));
          } catch (err) {
            replace(status, errorBox(err));
            return;
          }
          submit.textContent = "Connecting…";
          await busy(submit, async () => {
            try {
              const res = await post("/v1/mcp-servers", body);
              const n = res?.tools?.length ?? 0;
              toast(`Added the MCP server ${body.name} with ${n} tool${n === 1 ? "" : "s"}.`, "ok");
              dlg.close();
              await this.refreshList();
            } catch (err) {
              replace(status, errorBox(err));
              throw err;
            } finally {
              submit.textContent = "Add server";
            }
          });
        },
      },
      field(
        "Name",
        h("input", { name: "name", required: true, pattern: "[a-z][a-z0-9_\\-]{0,31}", maxlength: 32, spellcheck: "false", autocomplete: "off" }),
        "1 to 32 of a-z 0-9 _ -, starting with a letter; its tools are named <name>__<tool>.",
      ),
      field("Transport", kind),
      stdio,
      http,
      h(
        "div",
        { class: "tm-form-row" },
        field("Version", h("input", { name: "version", placeholder: "as reported", spellcheck: "false" }), "Semver its tools are installed as (optional)."),
        field("Timeout per call", h("input", { name: "timeout", value: "60s", spellcheck: "false" }), "For example 30s or 2m (at most 10m)."),
        field("Concurrent calls per tool", h("input", { name: "concurrency_max", type: "number", min: 1, max: 1024, value: "4" })),
      ),
      status,
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "secondary", onclick: () => dlg.close() }, "Cancel"),
        submit,
      ),
    );
    const { dialog: dlg } = modal("Add an MCP server", form);
    form.querySelector("input[name=name]")?.focus();
  }

  // ---- #/tools/<name> ----

  async loadTool(name) {
    const back = h("a", { href: "#/tools", class: "button secondary" }, "All tools");
    const out = h("div", { class: "tm-test-out", role: "status", "aria-live": "polite" });
    const testBtn = this.canTest
      ? h("button", { type: "button", onclick: () => runTests(name, testBtn, out) }, "Run tests")
      : null;
    const header = pageHeader(`Tool ${name}`, back, testBtn);
    this.replaceChildren(header, h("p", { class: "loading" }, "Loading…"));
    const [tools, versions, usage] = await Promise.allSettled([
      get("/v1/tools"),
      get(`/v1/tools/${seg(name)}/versions`),
      get("/v1/tools/usage"),
    ]);
    const tool = tools.status === "fulfilled" ? (tools.value?.items ?? []).find((t) => t.name === name) : null;
    if (tools.status === "rejected" || (!tool && versions.status === "rejected")) {
      testBtn?.remove();
      this.replaceChildren(header, errorBox(tools.status === "rejected" ? tools.reason : versions.reason));
      return;
    }
    if (!tool) {
      testBtn?.remove();
      this.replaceChildren(header, errorBox(`No tool named "${name}" is installed.`));
      return;
    }
    const details = h(
      "section",
      { class: "card", "aria-labelledby": "tm-tool-details" },
      h("h2", { id: "tm-tool-details" }, "Details"),
      h("p", {}, tool.description || h("span", { class: "muted" }, "No description.")),
      kv([
        ["Current version", h("span", { class: "mono" }, tool.version)],
        ["Versions", versions.status === "fulfilled" ? versionList(versions.value) : h("span", { class: "tm-inline-error" }, versions.reason.detail ?? String(versions.reason))],
        ["Capabilities", (tool.capabilities ?? []).length ? h("span", { class: "tm-badges" }, tool.capabilities.map(capBadge)) : "none"],
        ["Results cacheable", tool.pure ? "yes (pure: same arguments, same result)" : "no"],
        name.includes("__") ? ["From MCP server", h("span", { class: "mono" }, name.split("__")[0])] : null,
      ]),
      h("h3", {}, "Input schema"),
      h("pre", { class: "tm-schema", tabindex: "0", "aria-label": `Input schema of ${name}` }, JSON.stringify(tool.input_schema ?? {}, null, 2)),
    );
    const tests = h(
      "section",
      { class: "card", "aria-labelledby": "tm-tool-tests" },
      h("h2", { id: "tm-tool-tests" }, "Tests"),
      this.canTest ? out : h("p", { class: "muted" }, "Running tests needs an operator key."),
    );
    if (this.canTest && !out.childNodes.length) {
      out.append(h("p", { class: "muted" }, "Run tests calls the tool with each of its examples and checks the results."));
    }
    let usageBody;
    if (usage.status === "rejected") usageBody = errorBox(usage.reason);
    else {
      const mine = (usage.value?.items ?? []).filter((u) => splitId(u.tool)[0] === name);
      const perAgent = new Map();
      for (const u of mine) {
        const a = perAgent.get(u.agent) ?? { label: u.agent, value: 0, part: 0 };
        a.value += u.usage?.calls ?? 0;
        a.part += u.usage?.errors ?? 0;
        perAgent.set(u.agent, a);
      }
      usageBody = [
        mine.length ? barChart("Calls per agent", [...perAgent.values()], { valueLabel: "calls", partLabel: "failures" }) : null,
        usageTable(mine, this.pageSize, { withTool: false }),
      ];
    }
    const usageCard = h(
      "section",
      { class: "card", "aria-labelledby": "tm-tool-usage" },
      h("h2", { id: "tm-tool-usage" }, "Usage"),
      usageBody,
    );
    this.replaceChildren(header, details, tests, usageCard);
  }
}

const capBadge = (c) => {
  const params = Object.entries(c.params ?? {}).map(([k, v]) => `${k}=${v}`).join(", ");
  return badge(params ? `${c.name} (${params})` : c.name);
};

/** The versions of a tool, the current one marked. */
function versionList(v) {
  const versions = v?.versions ?? [];
  if (!versions.length) return "—";
  return h(
    "span",
    { class: "tm-versions" },
    versions.map((ver) =>
      h("span", { class: `mono tm-version${ver === v.current ? " current" : ""}` }, ver, ver === v.current && versions.length > 1 ? " (current)" : ""),
    ),
  );
}

/** The POST /v1/mcp-servers body (McpServerConfig) from the add form's fields. */
function mcpBody(f) {
  const lines = (s) => (s ?? "").split("\n").map((l) => l.trim()).filter(Boolean);
  const body = { name: (f.name ?? "").trim() };
  if (f.kind === "http") {
    body.transport = { kind: "http", url: (f.url ?? "").trim() };
    if (f.bearer_token_env) body.transport.bearer_token_env = f.bearer_token_env.trim();
  } else {
    const env = {};
    for (const l of lines(f.env)) {
      const eq = l.indexOf("=");
      if (eq < 1) throw new Error(`Environment: "${l}" is not NAME=value.`);
      env[l.slice(0, eq).trim()] = l.slice(eq + 1);
    }
    body.transport = { kind: "stdio", command: (f.command ?? "").trim(), args: lines(f.args), env };
    if (f.cwd) body.transport.cwd = f.cwd.trim();
  }
  if (f.version) body.version = f.version.trim();
  if (f.timeout) body.timeout = f.timeout.trim();
  if (f.concurrency_max) body.concurrency_max = Number(f.concurrency_max);
  return body;
}

customElements.define("aios-page-tools", ToolsPage);
