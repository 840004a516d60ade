// Charts drawn as SVG by hand: a time-series line chart with its axes' extremes, a legend,
// and the figures as a visually hidden table for screen readers.

import { h, fmtTime } from "./ui.js";

const SVG = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) if (c) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/** Series are coloured by class (`s0`…`s3`) in app.css, so themes can change them. */
const SERIES_CLASSES = 4;

/**
 * A line chart of time series: `series` = [{label, points: [[at_ms, value], ...]}].
 * `format(v)` formats values on the axis and in the table. Returns a <figure>.
 */
export function lineChart(title, series, { format = (v) => String(v), height = 160 } = {}) {
  const width = 480;
  const pad = { l: 56, r: 8, t: 8, b: 22 };
  const all = series.flatMap((x) => x.points);
  const fig = h("figure", { class: "chart" }, h("figcaption", {}, title));
  if (all.length < 2) {
    fig.append(h("p", { class: "empty" }, "Not enough samples yet (one every 5 s)."));
    return fig;
  }
  const t0 = Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(...all.map((p) => p[0]));
  const vMax = Math.max(...all.map((p) => p[1]), 0);
  const vMin = Math.min(...all.map((p) => p[1]), 0);
  const span = vMax - vMin || 1;
  const x = (t) => pad.l + ((t - t0) / (t1 - t0 || 1)) * (width - pad.l - pad.r);
  const y = (v) => pad.t + (1 - (v - vMin) / span) * (height - pad.t - pad.b);
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": `${title}: ${series.map((x) => `${x.label} now ${format(x.points.at(-1)?.[1] ?? 0)}`).join(", ")}`,
    preserveAspectRatio: "none",
  });
  // Grid and axis labels: the extremes and the middle.
  for (const v of [vMin, vMin + span / 2, vMax]) {
    svg.append(s("line", { x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(s("text", { x: pad.l - 4, y: y(v) + 4, "text-anchor": "end", class: "axis" }, format(v)));
  }
  svg.append(s("text", { x: pad.l, y: height - 6, class: "axis" }, fmtTime(t0).slice(11)));
  svg.append(s("text", { x: width - pad.r, y: height - 6, "text-anchor": "end", class: "axis" }, fmtTime(t1).slice(11)));
  series.forEach((ser, i) => {
    if (!ser.points.length) return;
    const d = ser.points.map((p, j) => `${j ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
    svg.append(s("path", { d, class: `series s${i % SERIES_CLASSES}`, "vector-effect": "non-scaling-stroke" }));
  });
  fig.append(svg);
  fig.append(
    h(
      "ul",
      { class: "legend" },
      series.map((ser, i) =>
        h("li", {}, h("span", { class: `swatch s${i % SERIES_CLASSES}`, "aria-hidden": "true" }), `${ser.label}: ${format(ser.points.at(-1)?.[1] ?? 0)}`),
      ),
    ),
  );
  return fig;
}

/**
 * Turns cumulative samples into a rate per minute: [[t, total], ...] → [[t, per_min], ...].
 * A total that goes down counts as no change.
 */
export function perMinute(points) {
  const out = [];
  for (let i = 1; i < points.length; i++) {
    const [t0, v0] = points[i - 1];
    const [t1, v1] = points[i];
    // The total is a sum over the current children: it falls when one is removed, which is
    // not a restart.
    const dv = Math.max(0, v1 - v0);
    out.push([t1, (dv * 60000) / Math.max(t1 - t0, 1)]);
  }
  return out;
}

/** A table of the charted figures, visually hidden (for screen readers). */
export function chartTable(title, series, format = (v) => String(v)) {
  return h(
    "table",
    { class: "visually-hidden" },
    h("caption", {}, title),
    h("tr", {}, h("th", {}, "series"), h("th", {}, "latest")),
    series.map((ser) => h("tr", {}, h("td", {}, ser.label), h("td", {}, format(ser.points.at(-1)?.[1] ?? 0)))),
  );
}
