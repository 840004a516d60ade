// Settings: the signed-in key's preferences (theme, default agent, page size, idle sign-out),
// stored on the daemon per key (`/v1/preferences`), and the session (the key, sign out).

import { get } from "../api.js";
import { AiosPage, h, replace, pageHeader, field, busy, toast, fmtTime, formData } from "../ui.js";

class SettingsPage extends AiosPage {
  async load() {
    const prefs = this.app.prefs;
    const me = this.app.me;
    let agents = [];
    try {
      agents = (await get("/v1/agents?limit=1000")).items ?? [];
    } catch {
      agents = [];
    }
    const theme = h(
      "select",
      { name: "theme" },
      [
        ["system", "Follow the system"],
        ["light", "Light"],
        ["dark", "Dark"],
      ].map(([v, label]) => h("option", { value: v, selected: prefs.theme === v }, label)),
    );
    const agent = h(
      "select",
      { name: "default_agent" },
      h("option", { value: "" }, "(none)"),
      agents.map((a) => h("option", { value: a.name, selected: prefs.default_agent === a.name }, a.name)),
    );
    const pageSize = h("input", { type: "number", name: "page_size", min: "10", max: "1000", required: true, value: String(prefs.page_size) });
    const idle = h("input", { type: "number", name: "session_minutes", min: "1", max: "10080", required: true, value: String(prefs.session_minutes) });
    const save = h("button", { type: "submit" }, "Save");
    const form = h(
      "form",
      {
        class: "card",
        "aria-labelledby": "prefs-title",
        onsubmit: (e) => {
          e.preventDefault();
          busy(save, async () => {
            const v = formData(form);
            await this.app.savePrefs({
              theme: v.theme ?? "system",
              default_agent: v.default_agent ?? "",
              page_size: Number(v.page_size),
              session_minutes: Number(v.session_minutes),
            });
            toast("Preferences saved.", "ok");
          });
        },
      },
      h("h2", { id: "prefs-title" }, "Preferences"),
      h("p", { class: "muted" }, "Kept on the daemon for this key, so they follow you to another browser."),
      field("Theme", theme),
      field("Default agent", agent, "The agent the chat opens with."),
      field("Page size", pageSize, "Rows per page in lists."),
      field("Sign out after idle (minutes)", idle),
      save,
    );
    replace(
      this,
      pageHeader("Settings"),
      form,
      h(
        "section",
        { class: "card", "aria-labelledby": "session-title" },
        h("h2", { id: "session-title" }, "Session"),
        h(
          "dl",
          { class: "kv" },
          h("dt", {}, "Key"),
          h("dd", {}, h("code", {}, me.key_id), me.name ? ` (${me.name})` : ""),
          h("dt", {}, "Role"),
          h("dd", {}, me.role),
          h("dt", {}, "Tenant"),
          h("dd", {}, me.tenant),
          h("dt", {}, "Key expires"),
          h("dd", {}, me.expires_ms ? fmtTime(me.expires_ms) : "never"),
        ),
        h("p", { class: "muted" }, "The key is kept in this tab only, unless you chose to be remembered at sign-in; signing out forgets it."),
        h("button", { type: "button", class: "secondary", onclick: () => this.app.signOut() }, "Sign out"),
      ),
    );
  }
}

customElements.define("aios-page-settings", SettingsPage);
