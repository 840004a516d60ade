// Scheduled runs of the signed-in key's tenant: cron schedules (five fields, or six with
// seconds, in an IANA time zone) and one-off delayed runs. Each firing starts a normal run
// (listed on the Runs page, its cost charged to the tenant). Operators create, pause, resume
// and delete them; viewers see them.

import { get, post, del, seg } from "../api.js";
import {
  AiosPage,
  h,
  replace,
  pageHeader,
  field,
  table,
  toast,
  confirmDialog,
  busy,
  errorBox,
  badge,
  fmtTime,
  fmtAgo,
  fmtNum,
} from "../ui.js";

const AUTO_REFRESH_MS = 5000;

function describe(err) {
  return err?.detail ?? err?.message ?? String(err);
}

/** When a schedule fires, in words. */
function whenText(s) {
  if (s.when?.cron !== undefined) return `cron ${s.when.cron} (${s.when.timezone})`;
  if (s.when?.at_ms !== undefined) return `once at ${fmtTime(s.when.at_ms)}`;
  return "?";
}

/** A time (with "3 min ago" as its title when past), or a dash. */
function at(ms) {
  if (!ms) return h("span", { class: "muted" }, "—");
  return h("span", { title: ms <= Date.now() ? fmtAgo(ms) : null }, fmtTime(ms));
}

class SchedulesPage extends AiosPage {
  async load() {
    this.listBox = h("div", { "aria-live": "polite" }, h("p", { class: "loading" }, "Loading…"));
    this.firing = h("span", { class: "muted", role: "status" });
    const refresh = h("button", { type: "button", class: "secondary", onclick: (e) => this.refresh(e.currentTarget) }, "Refresh");
    const auto = h("input", { type: "checkbox", name: "auto_refresh", onchange: () => this.autoRefresh(auto.checked) });
    this.cleanup(() => clearInterval(this.timer));
    replace(
      this,
      pageHeader("Schedules"),
      h(
        "p",
        { class: "muted" },
        "Each firing starts a run of the task for tenant ",
        this.app.me.tenant,
        " (see Runs), once per due time, also across a restart. Due times missed while the daemon was down are skipped or run once, as each schedule says.",
      ),
      this.app.can("operator")
        ? h("section", { class: "card", "aria-labelledby": "sched-new-title" }, h("h2", { id: "sched-new-title" }, "New schedule"), this.createForm())
        : null,
      h(
        "section",
        { class: "card", "aria-labelledby": "sched-list-title" },
        h(
          "div",
          { class: "row section-head" },
          h("h2", { id: "sched-list-title" }, "Schedules"),
          h("span", { class: "spacer" }),
          h("label", { class: "check" }, auto, ` Refresh every ${AUTO_REFRESH_MS / 1000} s`),
          refresh,
        ),
        h("p", { class: "row" }, this.firing),
        this.listBox,
      ),
    );
    await this.refresh();
  }

  /** The "New schedule" form: a cron expression or a delay, the task, the planner. */
  createForm() {
    const name = h("input", { name: "name", required: true, maxlength: 64, placeholder: "nightly-report", autocomplete: "off" });
    const kind = h(
      "select",
      { name: "kind" },
      h("option", { value: "cron" }, "Repeating (cron)"),
      h("option", { value: "delay" }, "Once, after a delay"),
    );
    const cron = h("input", { name: "cron", placeholder: "0 3 * * *", autocomplete: "off", spellcheck: "false" });
    const timezone = h("input", { name: "timezone", value: "UTC", placeholder: "Europe/Oslo", autocomplete: "off", spellcheck: "false" });
    const delay = h("input", { name: "delay_s", type: "number", min: 1, step: 1, placeholder: "60" });
    const task = h("textarea", { name: "task", required: true, rows: 3, placeholder: "Write the daily report." });
    const planner = h("input", { name: "planner", placeholder: "planner (optional)", autocomplete: "off", list: "sched-agents" });
    const agents = h("datalist", { id: "sched-agents" });
    const onMissed = h(
      "select",
      { name: "on_missed" },
      h("option", { value: "run_once" }, "run once (the latest missed)"),
      h("option", { value: "skip" }, "skip"),
    );
    const cronFields = h(
      "div",
      { class: "row" },
      field("Cron", cron, "minute hour day month weekday, or six fields with seconds first"),
      field("Time zone", timezone, "IANA name"),
    );
    const delayField = field("Delay (seconds)", delay);
    const show = () => {
      cronFields.hidden = kind.value !== "cron";
      delayField.hidden = kind.value !== "delay";
    };
    kind.addEventListener("change", show);
    show();
    get("/v1/agents")
      .then((r) => replace(agents, (r.items ?? []).map((a) => h("option", { value: a.name }))))
      .catch(() => {});
    const status = h("div", { class: "form-status", "aria-live": "assertive" });
    const submit = h("button", { type: "submit" }, "Create");
    const form = h(
      "form",
      {
        class: "sched-new",
        "aria-label": "New schedule",
        onsubmit: async (e) => {
          e.preventDefault();
          replace(status);
          const body = { name: name.value.trim(), task: task.value.trim(), on_missed: onMissed.value };
          if (kind.value === "cron") {
            body.cron = cron.value.trim();
            if (timezone.value.trim()) body.timezone = timezone.value.trim();
          } else {
            body.delay_s = Number(delay.value);
          }
          if (planner.value.trim()) body.planner = planner.value.trim();
          submit.disabled = true;
          submit.setAttribute("aria-busy", "true");
          try {
            const s = await post("/v1/schedules", body);
            form.reset();
            timezone.value = "UTC";
            show();
            toast(`Schedule ${s.name} created; next at ${s.next_due_ms ? fmtTime(s.next_due_ms) : "—"}.`, "ok");
            await this.refresh();
          } catch (err) {
            replace(status, errorBox(`Cannot create the schedule: ${describe(err)}`));
          } finally {
            submit.disabled = false;
            submit.removeAttribute("aria-busy");
          }
        },
      },
      h("div", { class: "row" }, field("Name", name), field("Kind", kind)),
      cronFields,
      delayField,
      field("Task", task, "what the run is asked to do"),
      h("div", { class: "row" }, field("Planner", planner, "the agent that plans the run"), agents, field("Missed due times", onMissed)),
      status,
      h("div", { class: "actions" }, submit),
    );
    return form;
  }

  async refresh(button) {
    if (button) button.disabled = true;
    try {
      const r = await get("/v1/schedules");
      this.items = r.items ?? [];
      replace(
        this.firing,
        r.fires_here === false ? "Another node of the cluster fires these schedules; this one shows them from the shared store." : "",
      );
      this.render();
    } catch (e) {
      replace(this.listBox, errorBox(`Cannot list the schedules: ${describe(e)}`));
    } finally {
      if (button) button.disabled = false;
    }
  }

  render() {
    const operator = this.app.can("operator");
    const columns = [
      { label: "Name", value: (s) => h("strong", { title: s.id }, s.name) },
      { label: "When", value: (s) => h("span", { class: "mono" }, whenText(s)) },
      { label: "Task", value: (s) => h("span", { title: s.task }, s.task.length > 80 ? `${s.task.slice(0, 80)}…` : s.task) },
      { label: "State", value: (s) => (s.paused ? badge("paused", "warn") : s.next_due_ms ? badge("active", "ok") : badge("done")) },
      { label: "Next", value: (s) => (s.paused ? h("span", { class: "muted" }, "—") : at(s.next_due_ms)) },
      { label: "Last", value: (s) => at(s.last_due_ms) },
      { label: "Fired", class: "num", value: (s) => fmtNum(s.fired ?? 0) },
      { label: "Missed", class: "num", value: (s) => fmtNum(s.missed ?? 0) },
      {
        label: "Last run",
        value: (s) =>
          s.last_run
            ? h("a", { href: `#/runs/${seg(s.last_run)}`, class: "mono" }, s.last_run.slice(0, 12))
            : h("span", { class: "muted" }, "—"),
      },
      {
        label: "Error",
        value: (s) => (s.last_error ? h("span", { class: "badge bad", title: s.last_error }, s.last_error) : ""),
      },
    ];
    if (operator) {
      columns.push({
        label: "Actions",
        value: (s) =>
          h(
            "span",
            { class: "row" },
            s.next_due_ms || s.paused
              ? h(
                  "button",
                  { type: "button", class: "secondary small", onclick: (e) => this.setPaused(s, !s.paused, e.currentTarget) },
                  s.paused ? "Resume" : "Pause",
                )
              : null,
            h("button", { type: "button", class: "danger small", onclick: (e) => this.remove(s, e.currentTarget) }, "Delete"),
          ),
      });
    }
    replace(
      this.listBox,
      table(columns, this.items, {
        empty: "No schedules yet.",
        caption: `${this.items.length} schedule${this.items.length === 1 ? "" : "s"}`,
        rowAttrs: (s) => ({ "data-schedule-id": s.id, "data-schedule-name": s.name }),
      }),
    );
  }

  async setPaused(s, paused, button) {
    const verb = paused ? "pause" : "resume";
    await busy(button, async () => {
      await post(`/v1/schedules/${seg(s.id)}/${verb}`, {});
      toast(`Schedule ${s.name} ${paused ? "paused" : "resumed"}.`, "ok");
    });
    await this.refresh();
  }

  async remove(s, button) {
    const ok = await confirmDialog(`Delete schedule ${s.name}? It fires no more; runs already started go on.`);
    if (!ok) return;
    await busy(button, async () => {
      await del(`/v1/schedules/${seg(s.id)}`);
      toast(`Schedule ${s.name} deleted.`, "ok");
    });
    await this.refresh();
  }

  autoRefresh(on) {
    clearInterval(this.timer);
    this.timer = on ? setInterval(() => this.refresh(), AUTO_REFRESH_MS) : null;
  }
}

customElements.define("aios-page-schedules", SchedulesPage);
