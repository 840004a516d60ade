// The audit log (admins only): every mutating request and every refused key, hash-chained.
// The chain's verification (`/v1/audit/verify`, node-wide: operator tenant only) is shown on
// top; below, the entries (`/v1/audit`, oldest first, paged with the `after` cursor) with
// filters by key, action prefix, outcome, tenant (operator tenant only), time range and node
// (in a cluster: another node's log, or `*` for every node's merged by time, paged with the
// API's `cursor`).
//
// The API's `since_ms` filter scans the log from its start; entries are in time order, so
// "From" is instead found by bisecting the sequence numbers (a few one-entry queries, fast on
// a long log), and "To" ends the paging at the first later entry. The filters are kept in the location (`#/audit/key_id=…&outcome=…`), so a
// filtered view can be linked to (the keys view links each key to its entries).

import { get } from "../api.js";
import { AiosPage, h, replace, pageHeader, field, table, errorBox, badge, fmtTime, fmtAgo, fmtNum } from "../ui.js";

/** Filters sent to the API as they are (`node`: another node's chain, `*` every node's). */
const API_FILTERS = ["key_id", "action", "outcome", "tenant", "node"];
/** Every filter kept in the location. */
const FILTERS = [...API_FILTERS, "from", "to", "after"];
/** Queries one "Load more" may make at most while filters find nothing. */
const QUERIES_PER_LOAD = 20;
const ACTION_SUGGESTIONS = ["auth_failed", "tool_denied", "POST ", "PUT ", "DELETE ", "POST /v1/keys", "DELETE /v1/keys", "POST /v1/agents", "POST /v1/webhooks"];
const OUTCOME_SUGGESTIONS = ["ok", "denied", "failed", "400", "401", "403", "404", "409", "413", "422", "429", "500"];

/** The badge class of an outcome: `ok`, a refusal, or a failure. */
function outcomeKind(o) {
  if (o === "ok") return "ok";
  if (o === "denied" || o === "failed" || o === "401" || o === "403" || /^5\d\d$/.test(o)) return "bad";
  return "warn";
}

/** `datetime-local` value ↔ unix ms. */
function toLocalInput(ms) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}
function fromLocalInput(v) {
  if (!v) return null;
  const ms = new Date(v).getTime();
  return Number.isFinite(ms) ? ms : null;
}

function describe(err) {
  return err?.detail ?? err?.message ?? String(err);
}

class AuditPage extends AiosPage {
  async load() {
    const me = this.app.me;
    this.pageSize = Math.min(1000, Math.max(1, Number(this.app.prefs.page_size) || 50));
    this.keyNames = new Map();
    this.filters = this.filtersFromRoute();

    // Verification.
    this.verifyButton = h("button", { type: "button", class: "secondary", onclick: () => this.verify() }, "Verify again");
    this.verifyStatus = h("div", { class: "verify-status", role: "status", "aria-live": "polite" });
    const verifyCard = h(
      "section",
      { class: "card audit-verify", "aria-labelledby": "audit-verify-title" },
      h(
        "div",
        { class: "row" },
        h("h2", { id: "audit-verify-title" }, "Chain verification"),
        h("span", { class: "spacer" }),
        this.verifyButton,
      ),
      this.verifyStatus,
      h(
        "p",
        { class: "muted" },
        "Each entry holds the hash of the one before it; verifying recomputes the whole chain, so a changed or removed entry is found with the place where the chain breaks.",
      ),
    );

    // Filters.
    const input = (name, attrs = {}) => h("input", { name, autocomplete: "off", value: this.filters[name] ?? "", ...attrs });
    const datalist = (id, values) => h("datalist", { id }, values.map((v) => h("option", { value: v })));
    this.keyList = h("datalist", { id: "audit-keys" });
    this.form = h(
      "form",
      {
        class: "inline audit-filters",
        "aria-label": "Filter the audit log",
        onsubmit: (e) => {
          e.preventDefault();
          this.apply();
        },
      },
      field("Key", input("key_id", { list: "audit-keys", placeholder: "key id", spellcheck: "false" })),
      field("Action starts with", input("action", { list: "audit-actions", placeholder: "e.g. DELETE" })),
      field("Outcome", input("outcome", { list: "audit-outcomes", placeholder: "ok, denied, 404…", size: "10" })),
      me.operator_tenant ? field("Tenant", input("tenant", { placeholder: "any", size: "12", spellcheck: "false" })) : null,
      field("From", input("from", { type: "datetime-local" })),
      field("To", input("to", { type: "datetime-local" })),
      field("After entry #", input("after", { type: "number", min: "0", step: "1", size: "8", inputmode: "numeric" })),
      field("Node", input("node", { placeholder: "this one; * for all", size: "12", spellcheck: "false" }), "In a cluster: another node's log, or * for every node's, merged by time."),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "submit" }, "Apply"),
        h("button", { type: "button", class: "secondary", onclick: () => this.lastHours(1) }, "Last hour"),
        h("button", { type: "button", class: "secondary", onclick: () => this.lastHours(24) }, "Last 24 h"),
        h("button", { type: "button", class: "secondary", onclick: () => this.reset() }, "Reset"),
      ),
      this.keyList,
      datalist("audit-actions", ACTION_SUGGESTIONS),
      datalist("audit-outcomes", OUTCOME_SUGGESTIONS),
    );

    // Entries.
    this.summary = h("p", { class: "muted audit-summary", role: "status", "aria-live": "polite" });
    this.results = h("div", { class: "audit-results" });
    this.moreButton = h("button", { type: "button", class: "secondary", hidden: true, onclick: () => this.loadMore() }, "Load more");
    this.endNote = h("span", { class: "muted" });

    replace(
      this,
      pageHeader("Audit log"),
      verifyCard,
      h(
        "section",
        { class: "card", "aria-labelledby": "audit-entries-title" },
        h("h2", { id: "audit-entries-title" }, "Entries"),
        this.form,
        this.summary,
        this.results,
        h("div", { class: "row audit-more" }, this.moreButton, this.endNote),
      ),
    );

    this.loadKeyNames();
    await Promise.all([this.verify(), this.search()]);
  }

  /** The filters in the route (`key_id=…&outcome=…`). */
  filtersFromRoute() {
    const out = {};
    const params = new URLSearchParams(this.route);
    for (const k of FILTERS) {
      const v = params.get(k);
      if (v) out[k] = v;
    }
    return out;
  }

  /** Keeps the filters in the location without remounting the view. */
  filtersToRoute() {
    // The router decodes the route once, so values are encoded twice.
    const qs = FILTERS.filter((k) => this.filters[k])
      .map((k) => `${k}=${encodeURIComponent(encodeURIComponent(this.filters[k]))}`)
      .join("&");
    history.replaceState(null, "", `#/audit${qs ? `/${qs}` : ""}`);
  }

  /** Key ids → names, for the table and the key field's suggestions (best effort). */
  async loadKeyNames() {
    try {
      const r = await get("/v1/keys");
      for (const k of r.items ?? []) this.keyNames.set(k.id, k.name);
      replace(
        this.keyList,
        (r.items ?? []).map((k) => h("option", { value: k.id }, k.name ? `${k.name} (${k.role})` : k.role)),
      );
      if (this.entries?.length) this.renderEntries();
    } catch {
      // Names are a convenience: the ids are shown without them.
    }
  }

  async verify() {
    if (!this.app.me.operator_tenant) {
      // Node-wide: the API refuses it to other tenants, so it is not asked.
      this.verifyButton.hidden = true;
      replace(
        this.verifyStatus,
        badge("not available", "warn big"),
        h("p", { class: "muted" }, "The chain covers the whole node: only admins of the operator tenant can verify it."),
      );
      return;
    }
    this.verifyButton.disabled = true;
    this.verifyButton.setAttribute("aria-busy", "true");
    replace(this.verifyStatus, badge("verifying…"));
    try {
      const r = await get("/v1/audit/verify");
      const when = h("span", { class: "muted" }, ` checked ${fmtTime(Date.now())}`);
      if (r.ok) {
        replace(this.verifyStatus, badge(`chain verified: ${fmtNum(r.checked)} entries`, "ok big"), when);
      } else {
        replace(
          this.verifyStatus,
          badge(`chain broken at entry ${fmtNum(r.broken_at)}`, "bad big"),
          when,
          h(
            "p",
            { class: "error", role: "alert" },
            `Entry ${r.broken_at}: ${r.problem ?? "does not verify"}. The ${fmtNum(r.checked)} entries before it verify.`,
          ),
          h(
            "button",
            {
              type: "button",
              class: "secondary small",
              onclick: () => {
                this.form.reset();
                for (const k of FILTERS) {
                  const el = this.form.elements.namedItem(k);
                  if (el) el.value = k === "after" ? String(Math.max(0, r.broken_at - 2)) : "";
                }
                this.apply();
              },
            },
            `Show the entries around #${r.broken_at}`,
          ),
        );
      }
    } catch (e) {
      if (e?.status === 403) {
        replace(this.verifyStatus, badge("not available", "warn big"), h("p", { class: "muted" }, `Cannot verify the chain: ${describe(e)}`));
      } else {
        replace(this.verifyStatus, badge("verification failed", "bad big"), errorBox(`Cannot verify the chain: ${describe(e)}`));
      }
    } finally {
      this.verifyButton.disabled = false;
      this.verifyButton.removeAttribute("aria-busy");
    }
  }

  /** Reads the form into the filters, and searches. */
  apply() {
    const f = {};
    for (const k of FILTERS) {
      const el = this.form.elements.namedItem(k);
      const v = el ? el.value.trim() : "";
      if (v) f[k] = v;
    }
    this.filters = f;
    this.filtersToRoute();
    this.search();
  }

  lastHours(n) {
    this.form.elements.namedItem("from").value = toLocalInput(Date.now() - n * 3600 * 1000);
    this.form.elements.namedItem("to").value = "";
    this.apply();
  }

  reset() {
    this.form.reset();
    for (const k of FILTERS) {
      const el = this.form.elements.namedItem(k);
      if (el) el.value = "";
    }
    this.apply();
  }

  /** Starts a new search with the current filters. */
  async search() {
    const seq = (this.searchSeq = (this.searchSeq ?? 0) + 1);
    this.entries = [];
    this.cursor = null;
    this.done = false;
    this.pastRange = false;
    this.searching = false;
    replace(this.results, h("p", { class: "loading" }, "Loading…"));
    replace(this.summary);
    this.moreButton.hidden = true;
    replace(this.endNote);
    try {
      if (this.merged()) {
        // Every node's log: the API filters by time itself and pages with its own cursor.
        this.cursor = null;
        await this.loadMore(seq);
        return;
      }
      const from = fromLocalInput(this.filters.from);
      const after = Number(this.filters.after) || 0;
      this.cursor = after;
      if (from !== null) this.cursor = Math.max(after, await this.seekTime(from));
      if (seq !== this.searchSeq) return;
      await this.loadMore(seq);
    } catch (e) {
      if (seq !== this.searchSeq) return;
      replace(this.results, this.failure(e));
    }
  }

  failure(e) {
    if (e?.status === 403) return errorBox(`Reading the audit log needs an admin key: ${describe(e)}`);
    return errorBox(`Cannot read the audit log: ${describe(e)}`);
  }

  /**
   * The cursor before the first entry at or after `ms`: entries are appended in time order,
   * so the sequence numbers are bisected with one-entry queries.
   */
  async seekTime(ms) {
    const tenant = this.filters.tenant;
    const probe = async (after) => {
      const q = new URLSearchParams({ after: String(after), limit: "1" });
      if (tenant) q.set("tenant", tenant);
      if (this.filters.node) q.set("node", this.filters.node);
      const r = await get(`/v1/audit?${q}`);
      return r.items?.[0]?.at_ms ?? Infinity;
    };
    if ((await probe(0)) >= ms) return 0;
    let lo = 0;
    let hi = 1;
    // probe(lo) < ms <= probe(hi)
    while ((await probe(hi)) < ms) {
      lo = hi;
      hi *= 2;
      if (hi > Number.MAX_SAFE_INTEGER / 2) break;
    }
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      if ((await probe(mid)) < ms) lo = mid;
      else hi = mid;
    }
    // The first entry after `hi` is the first at or after `ms`.
    return hi;
  }

  /** True when every node's log is shown, merged (`node` = `*`). */
  merged() {
    return this.filters.node === "*";
  }

  /** Loads the next page of the merged view of every node's log. */
  async loadMergedPage(seq) {
    const f = this.filters;
    const q = new URLSearchParams();
    for (const k of API_FILTERS) if (f[k]) q.set(k, f[k]);
    const from = fromLocalInput(f.from);
    const to = fromLocalInput(f.to);
    if (from !== null) q.set("since_ms", String(from));
    if (to !== null) q.set("until_ms", String(to));
    if (this.cursor) q.set("cursor", this.cursor);
    q.set("limit", String(this.pageSize));
    const r = await get(`/v1/audit?${q}`);
    if (seq !== this.searchSeq) return;
    this.entries = this.entries.concat(r.items ?? []);
    this.cursor = r.next_cursor ?? null;
    this.done = !this.cursor;
    this.renderEntries(false);
  }

  /** Loads the next page (of the search numbered `seq`). */
  async loadMore(seq = this.searchSeq) {
    if (this.done) return;
    this.moreButton.disabled = true;
    this.moreButton.setAttribute("aria-busy", "true");
    try {
      if (this.merged()) await this.loadMergedPage(seq);
      else await this.loadChainPage(seq);
    } catch (e) {
      if (seq !== this.searchSeq) return;
      if (this.entries.length) replace(this.endNote, this.failure(e));
      else replace(this.results, this.failure(e));
    } finally {
      this.moreButton.disabled = false;
      this.moreButton.removeAttribute("aria-busy");
    }
  }

  /** Loads the next page of one chain, paged with `after`; "From" and "To" are applied here. */
  async loadChainPage(seq) {
    const f = this.filters;
    const from = fromLocalInput(f.from);
    const to = fromLocalInput(f.to);
    const timed = from !== null || to !== null;
    const page = [];
    let queries = 0;
    while (page.length < this.pageSize && queries < QUERIES_PER_LOAD && !this.done) {
      const q = new URLSearchParams();
      for (const k of API_FILTERS) if (f[k]) q.set(k, f[k]);
      if (this.cursor) q.set("after", String(this.cursor));
      q.set("limit", String(timed ? Math.max(this.pageSize, 200) : this.pageSize - page.length));
      const r = await get(`/v1/audit?${q}`);
      queries += 1;
      if (seq !== this.searchSeq) return;
      let full = false;
      for (const e of r.items ?? []) {
        if (to !== null && e.at_ms > to) {
          this.done = true;
          this.pastRange = true;
          break;
        }
        this.cursor = e.seq;
        if (from !== null && e.at_ms < from) continue;
        page.push(e);
        if (page.length === this.pageSize) {
          full = true;
          break;
        }
      }
      if (this.done || full) break;
      if (r.next === null || r.next === undefined) this.done = true;
      else this.cursor = r.next;
    }
    this.entries = this.entries.concat(page);
    this.renderEntries(!this.done && queries >= QUERIES_PER_LOAD && page.length < this.pageSize);
  }

  renderEntries(searching = this.searching) {
    this.searching = searching;
    const me = this.app.me;
    const keyCell = (e) => {
      if (!e.key_id) return h("span", { class: "muted" }, "—");
      const name = this.keyNames.get(e.key_id);
      return h("span", { class: "mono", title: name ? `${name} (${e.key_id})` : e.key_id }, e.key_id, name ? h("small", { class: "hint" }, name) : null);
    };
    const columns = [
      this.filters.node ? { label: "Node", value: (e) => e.node ?? this.filters.node } : null,
      { label: "#", class: "num", value: (e) => String(e.seq) },
      { label: "Time", value: (e) => h("span", { title: fmtAgo(e.at_ms) }, fmtTime(e.at_ms)) },
      { label: "Key", value: keyCell },
      me.operator_tenant ? { label: "Tenant", value: (e) => e.tenant || h("span", { class: "muted" }, "—") } : null,
      {
        label: "Action",
        value: (e) => [
          h("span", { class: "mono audit-action" }, e.action),
          // HTTP entries' target is their path, already in the action.
          e.target && !e.action.endsWith(` ${e.target}`)
            ? h("small", { class: "hint mono audit-target" }, `on ${e.target}`)
            : null,
        ],
      },
      { label: "Outcome", value: (e) => badge(e.outcome || "—", outcomeKind(e.outcome)) },
      { label: "Detail", value: (e) => h("span", { class: "audit-detail" }, e.detail || "") },
      {
        label: "Request",
        value: (e) =>
          h(
            "span",
            { class: "mono audit-hash", title: `request ${e.request_id}\nhash ${e.hash}\nprevious ${e.prev_hash}` },
            e.request_id ? e.request_id.slice(0, 12) : "—",
          ),
      },
    ].filter(Boolean);
    const any = Object.keys(this.filters).length > 0;
    replace(
      this.results,
      table(columns, this.entries, {
        empty: any ? "No entries match these filters." : "The audit log is empty.",
        caption: "Audit log entries, oldest first",
      }),
    );
    const n = this.entries.length;
    replace(
      this.summary,
      n
        ? this.merged()
          ? `${fmtNum(n)} entr${n === 1 ? "y" : "ies"} of every node shown, oldest first.`
          : `${fmtNum(n)} entr${n === 1 ? "y" : "ies"} shown, oldest first (#${this.entries[0].seq} to #${this.entries[n - 1].seq}).`
        : "",
    );
    this.moreButton.hidden = this.done;
    replace(
      this.endNote,
      this.done
        ? n
          ? this.pastRange
            ? "End of the time range."
            : "End of the log."
          : ""
        : searching
          ? `No more matches in the entries read so far (up to #${this.cursor}): Load more to keep searching.`
          : "",
    );
  }
}

customElements.define("aios-page-audit", AuditPage);
