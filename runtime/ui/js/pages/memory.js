// The memory view: the tenant's namespaces (`#/memory`) and one namespace
// (`#/memory/<namespace>`): adding items, semantic search, deleting items, erasing by filter
// or everything, and exporting as JSON lines.
//
// Item ids are 64-bit integers, beyond what a JavaScript number holds exactly: the API sends
// them as strings, and the export (JSON lines, ids as numbers) is downloaded as text.

import { get, post, put, del, seg } from "../api.js";
import {
  h,
  replace,
  table,
  field,
  toast,
  confirmDialog,
  modal,
  errorBox,
  busy,
  formData,
  fmtTime,
  fmtNum,
  badge,
  AiosPage,
  pageHeader,
} from "../ui.js";
import { pagedTable, kv } from "./tools.js";

/** Results a search asks for at most (the daemon's K_MAX). */
const K_MAX = 1000;

const nsLink = (name) => h("a", { href: `#/memory/${seg(name)}`, class: "mono" }, name);

/** A text field's comma-separated list. */
const list = (s) =>
  (s ?? "")
    .split(",")
    .map((x) => x.trim())
    .filter(Boolean);

/** Unix ms of a datetime-local value, or undefined. */
const localMs = (v) => {
  if (!v) return undefined;
  const ms = new Date(v).getTime();
  return Number.isFinite(ms) ? ms : undefined;
};

class MemoryPage extends AiosPage {
  async load() {
    if (this.route) return this.loadNamespace(this.route);
    return this.loadList();
  }

  get canWrite() {
    return this.app.can("operator");
  }

  get pageSize() {
    return this.app.prefs?.page_size ?? 50;
  }

  // ---- #/memory ----

  async loadList() {
    const newBtn = this.canWrite ? h("button", { type: "button", onclick: () => this.newNamespaceDialog() }, "New namespace") : null;
    const refresh = h("button", { type: "button", class: "secondary", onclick: () => busy(refresh, () => this.refreshList()) }, "Refresh");
    this.listBody = h("div", {}, h("p", { class: "loading" }, "Loading…"));
    this.replaceChildren(
      pageHeader("Memory", refresh, newBtn),
      h(
        "section",
        { class: "card", "aria-labelledby": "mem-ns-title" },
        h("h2", { id: "mem-ns-title" }, "Namespaces"),
        h("p", { class: "muted" }, "Each namespace is a separate vector store of texts, searched by meaning."),
        this.listBody,
      ),
    );
    await this.refreshList();
  }

  async refreshList(highlight) {
    let items;
    try {
      items = (await get("/v1/memory/namespaces"))?.items ?? [];
    } catch (e) {
      replace(this.listBody, errorBox(e));
      return;
    }
    items.sort((a, b) => a.name.localeCompare(b.name));
    const columns = [
      { label: "Namespace", value: (n) => nsLink(n.name) },
      // The daemon does not report item counts yet; shown when it does.
      items.some((n) => n.items !== undefined) && { label: "Items", class: "num", value: (n) => (n.items === undefined ? "—" : fmtNum(n.items)) },
      { label: "Shards", class: "num", value: (n) => String(n.shards ?? "—") },
      { label: "Embedding model", value: (n) => h("span", { class: "mono" }, `${n.model ?? "—"}${n.dim ? ` (${n.dim})` : ""}`) },
      { label: "Index", value: (n) => n.index ?? "—" },
      { label: "Quota", class: "num", value: (n) => (n.quota_items ? `${fmtNum(n.quota_items)} items` : "none") },
      { label: "Redaction", value: (n) => (n.redact ? badge("on", "ok") : "off") },
      { label: "Created", value: (n) => fmtTime(n.created_ms) },
    ].filter(Boolean);
    replace(
      this.listBody,
      pagedTable(
        columns,
        items,
        {
          empty: this.canWrite ? "No namespaces yet: make one with New namespace." : "No namespaces yet.",
          rowAttrs: (n) => ({ dataset: { ns: n.name }, class: n.name === highlight ? "mem-new" : undefined }),
        },
        this.pageSize,
      ),
    );
  }

  newNamespaceDialog() {
    const status = h("div", { class: "tm-status" });
    const name = h("input", {
      name: "name",
      required: true,
      maxlength: 64,
      pattern: "[A-Za-z0-9_.\\-]{1,64}",
      autocomplete: "off",
      spellcheck: "false",
    });
    const submit = h("button", { type: "submit" }, "Create");
    const form = h(
      "form",
      {
        class: "tm-form",
        onsubmit: async (e) => {
          e.preventDefault();
          replace(status);
          const f = formData(form);
          const body = { name: (f.name ?? "").trim() };
          if (f.shards) body.shards = Number(f.shards);
          await busy(submit, async () => {
            try {
              await post("/v1/memory/namespaces", body);
            } catch (err) {
              replace(status, errorBox(err));
              throw err;
            }
            toast(`Created the namespace ${body.name}.`, "ok");
            dlg.close();
            await this.refreshList(body.name);
            this.querySelector(`tr[data-ns="${CSS.escape(body.name)}"] a`)?.focus();
          });
        },
      },
      field("Name", name, "1 to 64 of a-z A-Z 0-9 _ - ."),
      field("Shards", h("input", { name: "shards", type: "number", min: 1, max: 64, value: "1" }), "Items are spread over the shards, searched in parallel (1 to 64)."),
      status,
      h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", onclick: () => dlg.close() }, "Cancel"), submit),
    );
    const { dialog: dlg } = modal("New namespace", form);
    name.focus();
  }

  // ---- #/memory/<namespace> ----

  async loadNamespace(ns) {
    this.ns = ns;
    const back = h("a", { href: "#/memory", class: "button secondary" }, "All namespaces");
    const exportBtn = h("button", { type: "button", class: "secondary", onclick: () => this.exportNs(exportBtn) }, "Export");
    const eraseBtn = this.canWrite ? h("button", { type: "button", class: "danger", onclick: () => this.eraseDialog() }, "Erase…") : null;
    const header = pageHeader(`Namespace ${ns}`, back, exportBtn, eraseBtn);
    this.replaceChildren(header, h("p", { class: "loading" }, "Loading…"));

    let info;
    try {
      info = ((await get("/v1/memory/namespaces"))?.items ?? []).find((n) => n.name === ns);
    } catch (e) {
      this.replaceChildren(header, errorBox(e));
      return;
    }
    if (!info) {
      exportBtn.remove();
      eraseBtn?.remove();
      this.replaceChildren(header, errorBox(`There is no namespace "${ns}" in tenant ${this.app.me?.tenant ?? ""}.`));
      return;
    }

    const details = h(
      "section",
      { class: "card", "aria-labelledby": "mem-details" },
      h("h2", { id: "mem-details" }, "Details"),
      kv([
        info.items !== undefined ? ["Items", fmtNum(info.items)] : null,
        ["Shards", String(info.shards)],
        ["Embedding model", h("span", { class: "mono" }, `${info.model} (${info.dim} dimensions)`)],
        ["Index", `${info.index}${info.ann ? ` (HNSW m=${info.ann.m}, ef_search=${info.ann.ef_search}, from ${fmtNum(info.ann.threshold)} items)` : ""}`],
        ["Quota", info.quota_items ? `${fmtNum(info.quota_items)} items` : "none"],
        ["Redaction", info.redact ? "texts are redacted before they are stored" : "off"],
        ["Generation", String(info.generation ?? 0)],
        ["Created", fmtTime(info.created_ms)],
      ]),
    );

    this.results = h("div", { class: "mem-results", role: "region", "aria-live": "polite", "aria-label": "Found memories" });
    const searchCard = h(
      "section",
      { class: "card", "aria-labelledby": "mem-search" },
      h("h2", { id: "mem-search" }, "Search"),
      this.searchForm(),
      this.results,
    );

    this.shards = h("div", { class: "mem-shards", role: "region", "aria-live": "polite", "aria-label": "Shards" }, h("p", { class: "loading" }, "Loading…"));
    const shardsCard = h(
      "section",
      { class: "card", "aria-labelledby": "mem-shards" },
      h("h2", { id: "mem-shards" }, "Shards"),
      this.shards,
      this.canWrite ? this.placementForm() : null,
    );
    this.replaceChildren(header, this.canWrite ? this.addCard() : null, searchCard, details, shardsCard);
    this.loadShards();
  }

  /** Each shard's items and, in a cluster, the node that hosts it, with the placement. */
  async loadShards() {
    const ns = this.ns;
    try {
      const [shards, placement] = await Promise.all([
        get(`/v1/memory/namespaces/${seg(ns)}/shards`),
        get(`/v1/memory/namespaces/${seg(ns)}/placement`),
      ]);
      if (ns !== this.ns) return;
      const rules = [];
      if (placement?.node) rules.push(`node ${placement.node}`);
      if (placement?.tags?.length) rules.push(`nodes tagged ${placement.tags.join(", ")}`);
      if (placement?.least_loaded) rules.push("the nodes hosting the fewest shards");
      replace(
        this.shards,
        h(
          "p",
          { class: "muted" },
          rules.length
            ? `Placed on ${rules.join(" and ")}.`
            : "In a cluster the shards are spread over the nodes; searches ask them all.",
        ),
        table(
          [
            { label: "Shard", value: (s) => String(s.shard) },
            { label: "Node", value: (s) => s.node ?? "this node" },
            { label: "Items", value: (s) => (s.error ? "—" : fmtNum(s.items)) },
            { label: "Index", value: (s) => (s.ann ? "HNSW" : "exact") },
            { label: "State", value: (s) => (s.error ? badge("unavailable", "bad") : badge("up", "ok")) },
          ],
          shards?.items ?? [],
          { caption: `Shards of ${ns}`, rowAttrs: (s) => (s.error ? { title: s.error } : {}) },
        ),
      );
    } catch (e) {
      if (ns === this.ns) replace(this.shards, errorBox(e));
    }
  }

  /**
   * Where the shards may run in a cluster: a node, or nodes with tags (spread over them),
   * and/or each on the node hosting the fewest shards; applied at once by the node serving
   * the namespace.
   */
  placementForm() {
    const status = h("div", { class: "mem-place-status", role: "status", "aria-live": "polite" });
    const submit = h("button", { type: "submit" }, "Place");
    const apply = async (body, button) => {
      await busy(button, async () => {
        try {
          await put(`/v1/memory/namespaces/${seg(this.ns)}/placement`, body);
        } catch (err) {
          replace(status, errorBox(err));
          throw err;
        }
        replace(status);
        toast(`Placement of ${this.ns} set.`, "ok");
        this.loadShards();
      });
    };
    const reset = h("button", { type: "button", class: "secondary", onclick: () => apply({}, reset) }, "Spread over all nodes");
    return h(
      "form",
      {
        class: "inline mem-place",
        "aria-label": "Placement of the shards",
        onsubmit: async (e) => {
          e.preventDefault();
          const f = formData(e.target);
          const node = (f.node ?? "").trim();
          const tags = list(f.tags);
          const least_loaded = f.least_loaded === "on";
          if (!node && !tags.length && !least_loaded) {
            replace(status, errorBox("Name a node or at least one tag, or choose least loaded (or spread over all nodes)."));
            return;
          }
          await apply(node ? { node, tags, least_loaded } : { tags, least_loaded }, submit);
        },
      },
      field("Node", h("input", { name: "node", autocomplete: "off", spellcheck: "false", size: "12" }), "Every shard on this node."),
      field("Tags", h("input", { name: "tags", autocomplete: "off", spellcheck: "false", size: "16" }), "Comma-separated: spread over the nodes that have them all."),
      field("Least loaded", h("input", { type: "checkbox", name: "least_loaded" }), "Each shard on the node hosting the fewest shards."),
      h("div", { class: "actions" }, submit, reset),
      status,
    );
  }

  addCard() {
    const status = h("div", { class: "mem-add-status", role: "status", "aria-live": "polite" });
    const texts = h("textarea", { name: "texts", rows: 4, required: true, placeholder: "One memory per line" });
    const submit = h("button", { type: "submit" }, "Add");
    const form = h(
      "form",
      {
        class: "mem-add",
        onsubmit: async (e) => {
          e.preventDefault();
          replace(status);
          const f = formData(form);
          const lines = (f.texts ?? "").split("\n").map((l) => l.trim()).filter(Boolean);
          if (!lines.length) {
            replace(status, errorBox("Write at least one text (one per line)."));
            return;
          }
          const tags = list(f.tags);
          const items = lines.map((text) => (tags.length ? { text, tags } : { text }));
          await busy(submit, async () => {
            let res;
            try {
              res = await post(`/v1/memory/namespaces/${seg(this.ns)}/items`, { items });
            } catch (err) {
              replace(status, errorBox(err));
              throw err;
            }
            const n = res?.ids?.length ?? items.length;
            replace(status, h("p", { class: "mem-ok" }, `Added ${fmtNum(n)} item${n === 1 ? "" : "s"}.`));
            toast(`Added ${fmtNum(n)} item${n === 1 ? "" : "s"} to ${this.ns}.`, "ok");
            texts.value = "";
            this.loadShards();
          });
        },
      },
      field("Texts, one per line", texts),
      h(
        "div",
        { class: "mem-add-row" },
        field("Tags", h("input", { name: "tags", autocomplete: "off", spellcheck: "false" }), "Optional, comma-separated; given to every text."),
        submit,
      ),
      status,
    );
    return h("section", { class: "card", "aria-labelledby": "mem-add" }, h("h2", { id: "mem-add" }, "Add items"), form);
  }

  searchForm() {
    const query = h("input", { name: "query", type: "search", required: true, autocomplete: "off" });
    const k = h("input", { name: "k", type: "number", min: 1, max: K_MAX, value: "5", required: true });
    const submit = h("button", { type: "submit" }, "Search");
    const queryField = field("Query", query);
    queryField.classList.add("mem-query");
    const form = h(
      "form",
      {
        class: "inline mem-search",
        role: "search",
        onsubmit: async (e) => {
          e.preventDefault();
          const f = formData(form);
          const body = { query: f.query ?? "", k: Math.min(Math.max(Number(f.k) || 5, 1), K_MAX) };
          await busy(submit, async () => {
            try {
              const res = await post(`/v1/memory/namespaces/${seg(this.ns)}/search`, body);
              this.showResults(body.query, res);
            } catch (err) {
              replace(this.results, errorBox(err));
              throw err;
            }
          });
        },
      },
      queryField,
      field("Results", k),
      submit,
    );
    return form;
  }

  showResults(query, res) {
    const hits = res?.hits ?? [];
    const columns = [
      { label: "Score", class: "num score", value: (hit) => Number(hit.score ?? 0).toFixed(3) },
      { label: "Text", class: "mem-text", value: (hit) => hit.text },
      { label: "Item id", value: (hit) => h("code", { class: "mem-id" }, hit.id) },
      {
        label: "Tags",
        value: (hit) => ((hit.meta?.tags ?? []).length ? h("span", { class: "tm-badges" }, hit.meta.tags.map((t) => badge(t))) : "—"),
      },
      { label: "Stored", value: (hit) => fmtTime(hit.meta?.created_ms) },
    ];
    if (this.canWrite) {
      columns.push({
        label: "Actions",
        value: (hit) => {
          const b = h(
            "button",
            { type: "button", class: "danger small", "aria-label": `Delete item ${hit.id}`, onclick: () => this.deleteItem(hit, b) },
            "Delete",
          );
          return b;
        },
      });
    }
    const partial = res?.partial
      ? h(
          "div",
          { class: "tm-warning", role: "alert" },
          `Partial results: shard${(res.failed_shards ?? []).length === 1 ? "" : "s"} ${(res.failed_shards ?? []).join(", ")} did not answer.`,
        )
      : null;
    replace(
      this.results,
      h("h3", {}, hits.length ? `${hits.length} result${hits.length === 1 ? "" : "s"} for “${query}”` : `No results for “${query}”`),
      partial,
      hits.length
        ? pagedTable(columns, hits, { rowAttrs: (hit) => ({ class: "result", dataset: { id: hit.id } }) }, this.pageSize)
        : null,
    );
  }

  async deleteItem(hit, button) {
    const preview = hit.text.length > 120 ? `${hit.text.slice(0, 119)}…` : hit.text;
    if (!(await confirmDialog(`Delete item ${hit.id} (“${preview}”) from ${this.ns}? This cannot be undone.`, { confirm: "Delete" }))) return;
    await busy(button, async () => {
      await del(`/v1/memory/namespaces/${seg(this.ns)}/items/${seg(hit.id)}`);
      const row = button.closest("tr");
      const next = row?.nextElementSibling?.querySelector("button") ?? row?.previousElementSibling?.querySelector("button");
      row?.remove();
      toast(`Deleted item ${hit.id}.`, "ok");
      (next ?? this.querySelector("input[name=query]"))?.focus();
    });
  }

  async exportNs(button) {
    await busy(button, async () => {
      const text = await get(`/v1/memory/namespaces/${seg(this.ns)}/export`, { raw: true });
      const n = text.split("\n").filter((l) => l.trim()).length;
      const url = URL.createObjectURL(new Blob([text], { type: "application/x-ndjson" }));
      const a = h("a", { href: url, download: `${this.ns}.jsonl`, class: "visually-hidden" }, "download");
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      toast(`Exported ${fmtNum(n)} item${n === 1 ? "" : "s"} of ${this.ns} as ${this.ns}.jsonl.`, "ok");
    });
  }

  eraseDialog() {
    const status = h("div", { class: "tm-status" });
    const scopeAll = h("input", { type: "radio", name: "scope", value: "all", id: "mem-erase-all", onchange: () => toggle() });
    const scopeFilter = h("input", { type: "radio", name: "scope", value: "filter", id: "mem-erase-filter", checked: true, onchange: () => toggle() });
    const filters = h(
      "fieldset",
      { class: "tm-fieldset mem-filters" },
      h("legend", {}, "Erase the memories matching all of"),
      h(
        "div",
        { class: "tm-form-row" },
        field("Agent", h("input", { name: "agent", autocomplete: "off", spellcheck: "false" })),
        field("Session", h("input", { name: "session", autocomplete: "off", spellcheck: "false" })),
        field("User", h("input", { name: "user", autocomplete: "off", spellcheck: "false" })),
      ),
      field("Tags", h("input", { name: "tags", autocomplete: "off", spellcheck: "false" }), "Comma-separated; items carrying every one of them."),
      h(
        "div",
        { class: "tm-form-row" },
        field("Stored from", h("input", { name: "since", type: "datetime-local", step: 1 })),
        field("Stored before", h("input", { name: "until", type: "datetime-local", step: 1 })),
      ),
    );
    const warning = h(
      "div",
      { class: "tm-warning", role: "note" },
      h("strong", {}, "This cannot be undone. "),
      `The matching memories of ${this.ns} are deleted for good (each deletion is durable); export the namespace first if you may need them.`,
    );
    const toggle = () => {
      filters.disabled = filters.hidden = scopeAll.checked;
    };
    const submit = h("button", { type: "submit", class: "danger" }, "Erase…");
    const form = h(
      "form",
      {
        class: "tm-form",
        onsubmit: async (e) => {
          e.preventDefault();
          replace(status);
          const f = formData(form);
          let filter;
          let question;
          if (f.scope === "all") {
            // The API needs at least one condition: "stored at or after the epoch" is all.
            filter = { since_ms: 0 };
            question = `Erase EVERY memory in the namespace ${this.ns}? All its items are deleted for good. This cannot be undone.`;
          } else {
            filter = {};
            for (const k of ["agent", "session", "user"]) if (f[k]) filter[k] = f[k].trim();
            const tags = list(f.tags);
            if (tags.length) filter.tags = tags;
            const since = localMs(f.since);
            const until = localMs(f.until);
            if (since !== undefined) filter.since_ms = since;
            if (until !== undefined) filter.until_ms = until;
            if (!Object.keys(filter).length) {
              replace(status, errorBox("Name at least one condition (agent, session, user, tags or a time), or choose “Everything”."));
              return;
            }
            const conds = Object.entries(filter).map(([k, v]) => `${k} ${k.endsWith("_ms") ? fmtTime(v) : Array.isArray(v) ? v.join(", ") : v}`);
            question = `Erase the memories of ${this.ns} matching ${conds.join("; ")}? They are deleted for good. This cannot be undone.`;
          }
          if (!(await confirmDialog(question, { confirm: "Erase" }))) return;
          await busy(submit, async () => {
            let res;
            try {
              res = await post(`/v1/memory/namespaces/${seg(this.ns)}/erase`, { filter });
            } catch (err) {
              replace(status, errorBox(err));
              throw err;
            }
            const n = res?.erased ?? 0;
            toast(`Erased ${fmtNum(n)} item${n === 1 ? "" : "s"} from ${this.ns}.`, "ok");
            dlg.close();
            if (this.results?.childNodes.length) {
              replace(this.results, h("p", { class: "muted" }, `Erased ${fmtNum(n)} item${n === 1 ? "" : "s"}; search again to see what is left.`));
            }
          });
        },
      },
      warning,
      h(
        "fieldset",
        { class: "tm-fieldset mem-scope" },
        h("legend", {}, "What to erase"),
        h("label", { class: "check", for: "mem-erase-filter" }, scopeFilter, " Only the memories matching a filter"),
        h("label", { class: "check", for: "mem-erase-all" }, scopeAll, " Everything in this namespace"),
      ),
      filters,
      status,
      h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", onclick: () => dlg.close() }, "Cancel"), submit),
    );
    const { dialog: dlg } = modal(`Erase memories of ${this.ns}`, form);
    scopeFilter.focus();
  }
}

customElements.define("aios-page-memory", MemoryPage);
