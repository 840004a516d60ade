// Agents: the tenant's agent definitions (role, model, tools, capabilities) with the state of
// their running instances; operators create, edit and delete them. `#/agents` lists them a
// page at a time, `#/agents/<name>` shows one.

import { get, post, put, del, seg } from "../api.js";
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
  fmtNum,
  fmtTime,
} from "../ui.js";

/** The built-in roles (anything else is a custom role). */
const ROLES = ["planner", "executor", "researcher"];
/** The model a new agent gets when no agent exists yet to copy one from. */
const DEFAULT_MODEL = "scripted/demo";
/** Tools built into every agent (not listed by /v1/tools). */
const BUILTIN_TOOLS = ["calculator"];

/** An agent's role as text: `executor`, or the custom role's name. */
export function roleText(role) {
  if (typeof role === "string") return role;
  if (role && typeof role === "object") return role.custom ?? Object.values(role)[0] ?? "";
  return "";
}

/** A capability as text: `translate (languages=en,de)`. */
export function capabilityText(c) {
  const params = Object.entries(c.params ?? {});
  return params.length ? `${c.name} (${params.map(([k, v]) => `${k}=${v}`).join(", ")})` : c.name;
}

/** Every agent of the tenant (all pages), sorted by name; for pickers. */
export async function fetchAllAgents() {
  const out = [];
  let after = null;
  for (let i = 0; i < 20; i++) {
    const q = new URLSearchParams({ limit: "1000" });
    if (after) q.set("after", after);
    const page = await get(`/v1/agents?${q}`);
    out.push(...(page.items ?? []));
    if (!page.next) break;
    after = page.next;
  }
  return out;
}

/**
 * The agent instances of this tenant from the supervision tree (operator tenant only; null
 * otherwise): Map of agent name → [{key, status}].
 */
export async function fetchInstances(app) {
  if (!app.me?.operator_tenant) return null;
  const tree = await get("/v1/tree");
  const out = new Map();
  const prefix = `${app.me.tenant}.`;
  const walk = (nodes) => {
    for (const n of nodes ?? []) {
      if (n.children) walk(n.children);
      const id = n.id ?? "";
      if (n.kind !== "Worker" || !id.startsWith("agent:")) continue;
      const rest = id.slice("agent:".length);
      const cut = rest.lastIndexOf(":");
      if (cut < 0) continue;
      const full = rest.slice(0, cut);
      if (!full.startsWith(prefix)) continue;
      const name = full.slice(prefix.length);
      const list = out.get(name) ?? [];
      list.push({ key: rest.slice(cut + 1), status: n.status });
      out.set(name, list);
    }
  };
  walk(tree.agents);
  return out;
}

/** A supervision status (`{Running: {generation}}`, "Restarting", "Stopped") as a badge. */
/** The busy-message policies (`on_busy.policy`), as the form offers them. */
const BUSY_POLICIES = [
  ["enqueue", "wait its turn (enqueue)"],
  ["reject", "refuse it (reject)"],
  ["interrupt", "stop the current task, keep its work (interrupt)"],
  ["rollback", "stop the current task, undo its work (rollback)"],
];

/** An agent's `on_busy`, in words. */
function busyText(onBusy) {
  const policy = onBusy?.policy ?? "enqueue";
  const label = BUSY_POLICIES.find(([v]) => v === policy)?.[1] ?? policy;
  return policy === "enqueue" ? `${label}, at most ${onBusy?.queue_max ?? 16} waiting` : label;
}

function instanceBadge(status) {
  if (status && typeof status === "object" && status.Running) return badge("running", "ok");
  if (status === "Restarting") return badge("restarting", "warn");
  if (status === "Stopped") return badge("stopped", "bad");
  return badge(typeof status === "string" ? status.toLowerCase() : "unknown");
}

/** The state cell of an agent: idle, or its instances. */
function stateCell(instances, name) {
  if (instances === null) return h("span", { class: "muted", title: "Instance states are shown to the operator tenant only" }, "—");
  const list = instances?.get(name) ?? [];
  if (!list.length) return badge("idle");
  const restarting = list.filter((i) => i.status === "Restarting").length;
  const stopped = list.filter((i) => i.status === "Stopped").length;
  const kind = restarting ? "warn" : stopped === list.length ? "bad" : "ok";
  const text = `${list.length} instance${list.length === 1 ? "" : "s"}${restarting ? `, ${restarting} restarting` : ""}`;
  return badge(text, kind);
}

/** Parses the capabilities text: one per line, `name key=value key=value`. */
function parseCapabilities(text) {
  const out = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (!line) return;
    const [name, ...rest] = line.split(/\s+/);
    const params = {};
    for (const p of rest) {
      const eq = p.indexOf("=");
      if (eq <= 0) throw new Error(`Capabilities, line ${i + 1}: "${p}" is not key=value`);
      params[p.slice(0, eq)] = p.slice(eq + 1);
    }
    out.push({ name, params });
  });
  return out;
}

function capabilitiesToText(caps) {
  return (caps ?? [])
    .map((c) => [c.name, ...Object.entries(c.params ?? {}).map(([k, v]) => `${k}=${v}`)].join(" "))
    .join("\n");
}

/** A number from a form control, `undefined` when empty; throws on garbage. */
function numberOf(value, label, { integer = false } = {}) {
  const t = String(value ?? "").trim();
  if (!t) return undefined;
  const n = Number(t);
  if (!Number.isFinite(n) || (integer && !Number.isInteger(n))) throw new Error(`${label}: "${t}" is not ${integer ? "a whole number" : "a number"}`);
  return n;
}

/**
 * Opens the agent form in a dialog: a new agent (`def` null) or an edit of `def`. Resolves
 * nothing; calls `onSaved(savedDef)` after a successful save.
 */
async function openAgentForm({ def = null, models = [], onSaved }) {
  const editing = !!def;
  let installed = [];
  try {
    installed = ((await get("/v1/tools")).items ?? []).map((t) => t.name);
  } catch {
    // The hint just lists fewer tools.
  }
  const knownTools = [...new Set([...BUILTIN_TOOLS, ...installed])].sort();
  const role = roleText(def?.role) || "executor";
  const isCustom = !ROLES.includes(role);

  const name = h("input", {
    name: "name",
    required: true,
    autocomplete: "off",
    spellcheck: "false",
    maxlength: "64",
    value: def?.name ?? "",
    readonly: editing,
  });
  const roleSel = h(
    "select",
    { name: "role" },
    ROLES.map((r) => h("option", { value: r, selected: r === role }, r)),
    h("option", { value: "custom", selected: isCustom }, "custom…"),
  );
  const customRole = h("input", { name: "custom_role", value: isCustom ? role : "", autocomplete: "off" });
  const customField = field("Custom role", customRole, "The role's name, for example critic.");
  customField.hidden = !isCustom;
  roleSel.addEventListener("change", () => {
    customField.hidden = roleSel.value !== "custom";
    if (!customField.hidden) customRole.focus();
  });
  const modelList = h("datalist", { id: `models-${Math.random().toString(36).slice(2)}` }, [...new Set([DEFAULT_MODEL, ...models])].map((m) => h("option", { value: m })));
  const model = h("input", {
    name: "model",
    required: true,
    list: modelList.id,
    autocomplete: "off",
    spellcheck: "false",
    value: def?.model ?? models[0] ?? DEFAULT_MODEL,
  });
  const description = h("input", { name: "description", value: def?.description ?? "", autocomplete: "off" });
  const prompt = h("textarea", { name: "system_prompt", rows: "5", value: def?.system_prompt ?? "" });
  const tools = h("input", { name: "tools", value: (def?.tools ?? []).join(", "), autocomplete: "off", spellcheck: "false" });
  const caps = h("textarea", { name: "capabilities", rows: "3", spellcheck: "false", value: capabilitiesToText(def?.capabilities) });
  const memory = h("input", { name: "memory_namespace", value: def?.memory_namespace ?? "", autocomplete: "off", spellcheck: "false" });
  const limits = def?.limits ?? {};
  const maxSteps = h("input", { name: "max_steps", type: "number", min: "1", max: "256", step: "1", value: limits.max_steps ?? 16 });
  const maxTokens = h("input", { name: "max_tokens", type: "number", min: "1", step: "1", value: limits.max_tokens ?? 200000 });
  const maxCost = h("input", { name: "max_cost_usd", type: "number", min: "0", step: "any", value: limits.max_cost_usd ?? "" });
  const temperature = h("input", { name: "temperature", type: "number", min: "0", max: "2", step: "0.1", value: def?.temperature ?? "" });
  const onBusy = def?.on_busy ?? {};
  const busyPolicy = h(
    "select",
    { name: "on_busy_policy" },
    BUSY_POLICIES.map(([value, label]) => h("option", { value, selected: (onBusy.policy ?? "enqueue") === value }, label)),
  );
  const queueMax = h("input", { name: "on_busy_queue_max", type: "number", min: "1", max: "1024", step: "1", value: onBusy.queue_max ?? 16 });

  const status = h("div", { class: "form-status", "aria-live": "assertive" });
  const submit = h("button", { type: "submit" }, editing ? "Save" : "Create");
  const form = h(
    "form",
    { class: "agent-form", novalidate: true },
    field("Name", name, editing ? "The name cannot change." : "1–64 of a-z, A-Z, 0-9, _ - ."),
    h("div", { class: "form-row" }, field("Role", roleSel), customField, field("Model", model, "provider/model")),
    modelList,
    field("Description", description, "What the agent is for (shown in listings)."),
    field("System prompt", prompt),
    field("Tools", tools, `Comma-separated; name or name@requirement. Available: ${knownTools.join(", ")}.`),
    field("Capabilities", caps, "One per line: name, then optional key=value parameters (translate languages=en,de cost_class=low). Runs assign plan steps by capability; planners need plan."),
    h(
      "details",
      {
        class: "advanced",
        open: editing && (def.memory_namespace || def.temperature != null || limits.max_cost_usd != null || (onBusy.policy ?? "enqueue") !== "enqueue") ? true : false,
      },
      h("summary", {}, "Memory, limits, sampling and busy messages"),
      field("Memory namespace", memory, "The namespace its retrieval reads (optional)."),
      h(
        "div",
        { class: "form-row" },
        field("Max steps", maxSteps, "LLM calls per task, 1–256."),
        field("Max tokens", maxTokens, "Per task."),
        field("Max cost (USD)", maxCost, "Per task; empty: unlimited."),
        field("Temperature", temperature, "0–2; empty: the model's default."),
      ),
      h(
        "div",
        { class: "form-row" },
        field("A message while it works", busyPolicy, "What happens to a message that arrives while a task runs."),
        field("Waiting at most", queueMax, "Messages queued behind the running one, 1–1024; one more is refused."),
      ),
    ),
    status,
    h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", onclick: () => dlg.close() }, "Cancel"), submit),
  );
  const dlg = modal(editing ? `Edit agent ${def.name}` : "New agent", form);

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    replace(status);
    let body;
    try {
      const roleValue = roleSel.value === "custom" ? { custom: customRole.value.trim() } : roleSel.value;
      if (roleSel.value === "custom" && !roleValue.custom) throw new Error("Custom role: give the role a name");
      const maxCostN = numberOf(maxCost.value, "Max cost (USD)");
      const tempN = numberOf(temperature.value, "Temperature");
      body = {
        name: name.value.trim(),
        role: roleValue,
        description: description.value.trim(),
        system_prompt: prompt.value,
        model: model.value.trim(),
        tools: tools.value
          .split(",")
          .map((t) => t.trim())
          .filter(Boolean),
        memory_namespace: memory.value.trim() || null,
        capabilities: parseCapabilities(caps.value),
        limits: {
          max_steps: numberOf(maxSteps.value, "Max steps", { integer: true }) ?? 16,
          max_tokens: numberOf(maxTokens.value, "Max tokens", { integer: true }) ?? 200000,
          max_cost_usd: maxCostN ?? null,
        },
        temperature: tempN ?? null,
        on_busy: {
          policy: busyPolicy.value,
          queue_max: numberOf(queueMax.value, "Waiting at most", { integer: true }) ?? 16,
        },
      };
    } catch (err) {
      replace(status, errorBox(err));
      return;
    }
    submit.disabled = true;
    submit.setAttribute("aria-busy", "true");
    try {
      const saved = editing ? await put(`/v1/agents/${seg(def.name)}`, body) : await post("/v1/agents", body);
      dlg.close();
      toast(editing ? `Agent ${saved.name} saved (version ${saved.version}).` : `Agent ${saved.name} created.`, "ok");
      onSaved?.(saved);
    } catch (err) {
      replace(status, errorBox(err));
      status.querySelector(".error")?.setAttribute("tabindex", "-1");
      status.querySelector(".error")?.focus();
    } finally {
      submit.disabled = false;
      submit.removeAttribute("aria-busy");
    }
  });
  (editing ? description : name).focus();
}

class AgentsPage extends AiosPage {
  async load() {
    if (this.route) return this.loadDetail(this.route);
    return this.loadList();
  }

  // ---- the list ----

  async loadList() {
    this.cursors = [null];
    this.listBox = h("div", { class: "card", "aria-live": "polite" }, h("p", { class: "loading" }, "Loading…"));
    const actions = [h("button", { type: "button", class: "secondary", onclick: (e) => busy(e.currentTarget, () => this.reloadList()) }, "Reload")];
    if (this.app.can("operator")) {
      actions.push(
        h(
          "button",
          {
            type: "button",
            onclick: () =>
              openAgentForm({
                models: this.models ?? [],
                onSaved: () => this.reloadList(),
              }),
          },
          "New agent",
        ),
      );
    }
    replace(this, pageHeader("Agents", ...actions), this.listBox);
    await this.reloadList();
  }

  get pageSize() {
    return Math.min(1000, Math.max(1, Number(this.app.prefs.page_size) || 50));
  }

  async reloadList() {
    const after = this.cursors[this.cursors.length - 1];
    const q = new URLSearchParams({ limit: String(this.pageSize) });
    if (after) q.set("after", after);
    let page;
    let instances = null;
    try {
      [page, instances] = await Promise.all([
        get(`/v1/agents?${q}`),
        fetchInstances(this.app).catch(() => null),
      ]);
    } catch (e) {
      replace(this.listBox, errorBox(e));
      return;
    }
    const items = page.items ?? [];
    this.next = page.next ?? null;
    // Models in use, most used first: the default of the new-agent form.
    const counts = new Map();
    for (const a of items) counts.set(a.model, (counts.get(a.model) ?? 0) + 1);
    this.models = [...counts.entries()].sort((a, b) => b[1] - a[1]).map(([m]) => m);
    const canRun = this.app.can("operator");
    const columns = [
      { label: "Name", value: (a) => h("a", { href: `#/agents/${seg(a.name)}` }, a.name) },
      { label: "Role", value: (a) => roleText(a.role) },
      { label: "Model", value: (a) => h("code", {}, a.model) },
      { label: "Tools", value: (a) => (a.tools?.length ? a.tools.join(", ") : h("span", { class: "muted" }, "none")) },
      {
        label: "Capabilities",
        value: (a) => (a.capabilities?.length ? h("span", { class: "caps" }, a.capabilities.map((c) => badge(capabilityText(c)))) : h("span", { class: "muted" }, "none")),
      },
      { label: "State", value: (a) => stateCell(instances, a.name) },
      {
        label: "Actions",
        class: "row-actions",
        value: (a) => h("a", { class: "button secondary small", href: `#/chat/${seg(a.name)}`, "aria-label": `Chat with ${a.name}` }, canRun ? "Chat" : "Watch"),
      },
    ];
    const pager = h(
      "div",
      { class: "pager actions" },
      h(
        "button",
        {
          type: "button",
          class: "secondary small",
          disabled: this.cursors.length <= 1,
          onclick: () => {
            this.cursors.pop();
            this.reloadList();
          },
        },
        "Previous page",
      ),
      h("span", { class: "muted" }, `Page ${this.cursors.length}`),
      h(
        "button",
        {
          type: "button",
          class: "secondary small",
          disabled: !this.next,
          onclick: () => {
            this.cursors.push(this.next);
            this.reloadList();
          },
        },
        "Next page",
      ),
    );
    replace(
      this.listBox,
      table(columns, items, {
        empty: this.app.can("operator") ? "No agents yet. Create one with New agent." : "No agents yet.",
        caption: "Agents of this tenant",
        rowAttrs: (a) => ({ dataset: { agent: a.name } }),
      }),
      this.cursors.length > 1 || this.next ? pager : null,
    );
  }

  // ---- one agent ----

  async loadDetail(name) {
    this.name = name;
    this.body = h("div", {}, h("p", { class: "loading" }, "Loading…"));
    replace(this, pageHeader(`Agent ${name}`), this.body);
    await this.reloadDetail();
  }

  async reloadDetail() {
    const name = this.name;
    let def;
    let instances = null;
    try {
      [def, instances] = await Promise.all([get(`/v1/agents/${seg(name)}`), fetchInstances(this.app).catch(() => null)]);
    } catch (e) {
      replace(this, pageHeader(`Agent ${name}`, h("a", { class: "button secondary", href: "#/agents" }, "All agents")), errorBox(e));
      return;
    }
    this.def = def;
    const op = this.app.can("operator");
    const actions = [
      h("a", { class: "button secondary", href: "#/agents" }, "All agents"),
      h("a", { class: "button", href: `#/chat/${seg(def.name)}` }, "Chat"),
    ];
    if (op) {
      actions.push(
        h(
          "button",
          {
            type: "button",
            class: "secondary",
            onclick: () => openAgentForm({ def: this.def, models: [this.def.model], onSaved: () => this.reloadDetail() }),
          },
          "Edit",
        ),
        h("button", { type: "button", class: "danger", onclick: (e) => this.remove(e.currentTarget) }, "Delete"),
      );
    }
    const limits = def.limits ?? {};
    const dl = (pairs) => h("dl", { class: "props" }, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    const list = instances?.get(def.name) ?? [];
    replace(
      this,
      pageHeader(`Agent ${def.name}`, ...actions),
      h(
        "div",
        { class: "grid" },
        h(
          "section",
          { class: "card", "aria-labelledby": "agent-def" },
          h("h2", { id: "agent-def" }, "Definition"),
          dl([
            ["Role", roleText(def.role)],
            ["Model", h("code", {}, def.model)],
            ["Version", String(def.version ?? "—")],
            ["Description", def.description || h("span", { class: "muted" }, "none")],
            ["Tools", def.tools?.length ? def.tools.map((t) => h("code", { class: "tag" }, t)) : h("span", { class: "muted" }, "none")],
            ["Memory namespace", def.memory_namespace ? h("a", { href: `#/memory/${seg(def.memory_namespace)}` }, def.memory_namespace) : h("span", { class: "muted" }, "none")],
            ["Max steps", fmtNum(limits.max_steps)],
            ["Max tokens", fmtNum(limits.max_tokens)],
            ["Max cost", limits.max_cost_usd != null ? `$${limits.max_cost_usd}` : "unlimited"],
            ["Temperature", def.temperature != null ? String(def.temperature) : "model default"],
            ["A message while it works", busyText(def.on_busy)],
          ]),
        ),
        h(
          "section",
          { class: "card", "aria-labelledby": "agent-caps" },
          h("h2", { id: "agent-caps" }, "Capabilities"),
          table(
            [
              { label: "Capability", value: (c) => h("code", {}, c.name) },
              {
                label: "Parameters",
                value: (c) => {
                  const p = Object.entries(c.params ?? {});
                  return p.length ? p.map(([k, v]) => h("span", { class: "param" }, h("span", { class: "muted" }, `${k} = `), v)) : h("span", { class: "muted" }, "none");
                },
              },
            ],
            def.capabilities ?? [],
            { empty: "No capabilities: runs will not assign steps to this agent." },
          ),
          h("h2", {}, "Instances"),
          instances === null
            ? h("p", { class: "muted" }, "Instance states are shown to keys of the operator tenant.")
            : table(
                [
                  { label: "Conversation", value: (i) => h("code", {}, i.key) },
                  { label: "State", value: (i) => instanceBadge(i.status) },
                ],
                list,
                { empty: "No running instance: the agent is idle." },
              ),
        ),
      ),
      h("section", { class: "card", "aria-labelledby": "agent-prompt" }, h("h2", { id: "agent-prompt" }, "System prompt"), def.system_prompt ? h("pre", {}, def.system_prompt) : h("p", { class: "empty" }, "No system prompt.")),
      this.historySection(list),
    );
  }

  /**
   * The transcript of one conversation, oldest first: every task's input, answer or error,
   * steps, tool calls and cost (complete, also where the model was sent a summary).
   */
  historySection(instances) {
    const keys = [...new Set(["main", ...instances.map((i) => i.key)])];
    const conversation = h("input", { name: "history_session", value: "main", list: "agent-history-keys", autocomplete: "off", spellcheck: "false" });
    const box = h("div", { class: "agent-history", "aria-live": "polite" });
    const more = h("button", { type: "button", class: "secondary", hidden: true }, "More");
    let next = 0;
    let rows = [];
    // The latest load wins: a slower answer to an earlier one (another conversation) is dropped.
    let loading = 0;
    const show = () =>
      replace(
        box,
        table(
          [
            { label: "#", class: "num", value: (e) => String(e.seq) },
            { label: "Time", value: (e) => fmtTime(e.at_ms) },
            { label: "Message", value: (e) => h("span", { class: "history-text" }, e.input) },
            {
              label: "Answer",
              value: (e) => (e.error != null ? h("span", { class: "badge bad" }, e.error) : h("span", { class: "history-text" }, e.output ?? "")),
            },
            { label: "Steps", class: "num", value: (e) => fmtNum(e.steps) },
            { label: "Tool calls", class: "num", value: (e) => fmtNum(e.tool_calls) },
            { label: "Cost", class: "num", value: (e) => `$${((e.cost_nanos ?? 0) / 1e9).toFixed(6)}` },
          ],
          rows,
          { empty: "No task in this conversation yet.", rowAttrs: (e) => ({ "data-seq": String(e.seq) }) },
        ),
      );
    const load = async (fresh) => {
      const ticket = ++loading;
      const from = fresh ? 0 : next;
      const session = conversation.value.trim() || "main";
      more.disabled = true;
      try {
        const r = await get(`/v1/agents/${seg(this.def.name)}/history?session=${seg(session)}&from=${from}&limit=50`);
        if (ticket !== loading) return;
        rows = (fresh ? [] : rows).concat(r.items ?? []);
        next = r.next ?? null;
        more.hidden = next === null;
        show();
      } catch (e) {
        if (ticket === loading) replace(box, errorBox(e));
      } finally {
        if (ticket === loading) more.disabled = false;
      }
    };
    more.addEventListener("click", () => load(false));
    conversation.addEventListener("change", () => load(true));
    load(true);
    return h(
      "section",
      { class: "card", "aria-labelledby": "agent-history" },
      h("h2", { id: "agent-history" }, "History"),
      h(
        "div",
        { class: "row" },
        field("Conversation", conversation, "main, or a session's name"),
        h("datalist", { id: "agent-history-keys" }, keys.map((k) => h("option", { value: k }))),
        h("button", { type: "button", class: "secondary", onclick: () => load(true) }, "Reload"),
      ),
      box,
      more,
    );
  }

  async remove(button) {
    const name = this.def.name;
    if (!(await confirmDialog(`Delete agent ${name}? Its running instances are stopped and its conversations forgotten.`, { confirm: "Delete" }))) return;
    await busy(button, async () => {
      await del(`/v1/agents/${seg(name)}`);
      toast(`Agent ${name} deleted.`, "ok");
      location.hash = "#/agents";
    });
  }
}
customElements.define("aios-page-agents", AgentsPage);
