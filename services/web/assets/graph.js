// The drawn graph of a lineage or impact page: the list on the page comes
// first and has every entity; this draws the same answer as boxes and
// arrows, placed by hop from the start. A hop's entities of one kind that
// are more than a few are one box with their count, which opens (and
// closes) on a press, so graphs of thousands of nodes stay readable.
// Layout by dagre (npm @dagrejs/dagre, vendored); drawn as SVG made with
// DOM calls, every label set as text. Loaded as a module from this origin.

import { graphlib, layout } from "./vendor/@dagrejs/dagre/dist/dagre.esm.js";

const SVG = "http://www.w3.org/2000/svg";
const BOX_W = 216;
const BOX_H = 60;
// A hop's entities of one kind are drawn one by one up to this many.
const ONE_BY_ONE_UP_TO = 6;
// Most boxes drawn at once; the list has the rest.
const MAX_BOXES = 150;

const count = (n) => n.toLocaleString("en-GB");
const clip = (text, n) => (text.length > n ? `${text.slice(0, n - 1)}…` : text);
const groupKey = (n) => `${n.hop}|${n.kind}`;

function el(name, attrs, parent) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (parent) parent.append(e);
  return e;
}

function textLine(parent, x, y, cls, text) {
  const t = el("text", { x, y, class: cls }, parent);
  t.textContent = text;
  return t;
}

class Drawing {
  constructor(section, data, index) {
    this.section = section;
    this.data = data;
    this.index = index;
    this.canvas = section.querySelector("[data-graph-canvas]");
    this.closers = section.querySelector("[data-graph-open]");
    this.status = section.querySelector("[data-graph-status]");
    this.byId = new Map(data.nodes.map((n) => [n.id, n]));
    this.groups = new Map();
    for (const n of data.nodes) {
      if (n.hop === 0) continue;
      const k = groupKey(n);
      if (!this.groups.has(k)) this.groups.set(k, { key: k, hop: n.hop, kind: n.kind, members: [] });
      this.groups.get(k).members.push(n);
    }
    this.open = new Set();
    for (const g of this.groups.values()) {
      if (g.members.length <= ONE_BY_ONE_UP_TO) this.open.add(g.key);
    }
    // Even small groups close when together they are too many to draw.
    if (this.boxes(this.open) > MAX_BOXES) this.open.clear();
  }

  boxes(open) {
    let n = 1;
    for (const g of this.groups.values()) n += open.has(g.key) ? g.members.length : 1;
    return n;
  }

  shownAs(n) {
    return n.hop === 0 || this.open.has(groupKey(n)) ? `n:${n.id}` : `g:${groupKey(n)}`;
  }

  toggle(key) {
    const next = new Set(this.open);
    if (next.has(key)) next.delete(key);
    else next.add(key);
    const boxes = this.boxes(next);
    if (boxes > MAX_BOXES) {
      const g = this.groups.get(key);
      this.say(`Opening ${g.kind} at hop ${g.hop} would draw ${count(boxes)} boxes, more than ${MAX_BOXES}; the list above shows each of its ${count(g.members.length)}. Close another group first, or use the list.`);
      return;
    }
    this.open = next;
    this.draw(key);
  }

  say(text) {
    if (this.status) this.status.textContent = text;
  }

  draw(focusKey) {
    const g = new graphlib.Graph();
    g.setGraph({ rankdir: "LR", nodesep: 12, ranksep: 56, marginx: 8, marginy: 8 });
    g.setDefaultEdgeLabel(() => ({}));
    for (const n of this.data.nodes) {
      const v = this.shownAs(n);
      if (g.hasNode(v)) continue;
      if (v.startsWith("n:")) g.setNode(v, { width: BOX_W, height: BOX_H, node: n });
      else g.setNode(v, { width: BOX_W, height: BOX_H, group: this.groups.get(groupKey(n)) });
    }
    const joined = new Map();
    for (const e of this.data.edges) {
      const a = this.byId.get(e.near);
      const b = this.byId.get(e.far);
      if (!a || !b) continue;
      const v = this.shownAs(a);
      const w = this.shownAs(b);
      if (v === w) continue;
      const k = `${v}\u0001${w}`;
      const j = joined.get(k) || { v, w, n: 0, relations: new Set() };
      j.n += 1;
      j.relations.add(e.relation);
      joined.set(k, j);
    }
    for (const j of joined.values()) g.setEdge(j.v, j.w, { n: j.n, relations: [...j.relations] });
    layout(g);

    const { width, height } = g.graph();
    const w = Math.ceil(width);
    const h = Math.ceil(height);
    const start = this.byId.get(this.data.start);
    const svg = el("svg", {
      width: w,
      height: h,
      viewBox: `0 0 ${w} ${h}`,
      class: "graph-svg",
      role: "group",
      "aria-label": `Graph from ${start ? start.label : this.data.start}, ${count(g.nodeCount())} boxes`,
    });
    const marker = `graph-arrow-${this.index}`;
    const defs = el("defs", {}, svg);
    const m = el("marker", {
      id: marker,
      viewBox: "0 0 10 10",
      refX: 10,
      refY: 5,
      markerWidth: 7,
      markerHeight: 7,
      orient: "auto-start-reverse",
    }, defs);
    el("path", { d: "M0,0 L10,5 L0,10 z", class: "graph-arrowhead" }, m);

    for (const e of g.edges()) {
      const edge = g.edge(e);
      const d = edge.points.map((p, i) => `${i ? "L" : "M"}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(" ");
      const path = el("path", { d, class: "graph-edge", "marker-end": `url(#${marker})` }, svg);
      const title = el("title", {}, path);
      title.textContent = `${edge.relations.join(", ")}${edge.n > 1 ? ` (${count(edge.n)} links)` : ""}`;
    }

    let toFocus = null;
    for (const v of g.nodes()) {
      const box = g.node(v);
      const x = box.x - BOX_W / 2;
      const y = box.y - BOX_H / 2;
      let item;
      if (box.node) {
        const n = box.node;
        // Its name is its visible text (WCAG 2.5.3): no aria-label.
        item = el("a", {
          href: n.link,
          class: `graph-node${n.hop === 0 ? " start" : ""}${n.badge ? ` ${n.badge}` : ""}`,
        }, svg);
        el("rect", { x, y, width: BOX_W, height: BOX_H, rx: 4 }, item);
        textLine(item, x + 8, y + 17, "graph-kind", clip(`${n.kind}${n.badge ? ` · ${n.badge}` : ""}`, 34));
        textLine(item, x + 8, y + 34, "graph-label", clip(n.label, 30));
        textLine(item, x + 8, y + 51, "graph-id", clip(n.id.slice(n.id.indexOf("/") + 1), 34));
      } else {
        const grp = box.group;
        const many = grp.members.length;
        item = el("g", {
          class: "graph-node group",
          role: "button",
          tabindex: 0,
          "data-group": grp.key,
        }, svg);
        el("rect", { x, y, width: BOX_W, height: BOX_H, rx: 4 }, item);
        textLine(item, x + 8, y + 17, "graph-kind", clip(`${grp.kind} · hop ${grp.hop}`, 34));
        textLine(item, x + 8, y + 34, "graph-label", `${count(many)} · press to open`);
        const press = () => this.toggle(grp.key);
        item.addEventListener("click", press);
        item.addEventListener("keydown", (ev) => {
          if (ev.key === "Enter" || ev.key === " ") {
            ev.preventDefault();
            press();
          }
        });
        if (grp.key === focusKey) toFocus = item;
      }
    }
    this.canvas.replaceChildren(svg);

    // A button to close each group opened by a press, and one to close all.
    const pressed = [...this.groups.values()].filter(
      (grp) => this.open.has(grp.key) && grp.members.length > ONE_BY_ONE_UP_TO,
    );
    this.closers.replaceChildren();
    for (const grp of pressed) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = `Close ${grp.kind} at hop ${grp.hop} (${count(grp.members.length)})`;
      b.addEventListener("click", () => this.toggle(grp.key));
      this.closers.append(b);
      if (grp.key === focusKey) toFocus = b;
    }
    if (toFocus) toFocus.focus();
    const closed = [...this.groups.values()].filter((grp) => !this.open.has(grp.key)).length;
    this.say(
      `Drawn: ${count(g.nodeCount())} boxes for ${count(this.data.nodes.length)} entities` +
        (closed ? `; ${count(closed)} ${closed === 1 ? "group" : "groups"} closed (press one to open it).` : "."),
    );
  }
}

let drawn = 0;
for (const section of document.querySelectorAll("[data-graph]")) {
  const index = drawn++;
  const status = section.querySelector("[data-graph-status]");
  const say = (text) => { if (status) status.textContent = text; };
  say("Drawing the graph…");
  fetch(section.dataset.graph, { credentials: "same-origin", headers: { Accept: "application/json" } })
    .then(async (r) => {
      if (!r.ok) throw new Error(`the server answered ${r.status} ${r.statusText}`);
      return r.json();
    })
    .then((data) => new Drawing(section, data, index).draw())
    .catch((e) => say(`The graph could not be drawn: ${e.message}`));
}
