// The API's reference, drawn from /openapi.json by the centre's own page (no CDN, no framework).
// Text from the document is set with textContent only.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  function el(tag, cls, text) {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined && text !== null) n.textContent = String(text);
    return n;
  }
  function refName(schema) {
    if (!schema) return "";
    if (schema.$ref) return schema.$ref.split("/").pop();
    if (schema.type === "array") return "[" + refName(schema.items) + "]";
    if (schema.anyOf) return schema.anyOf.map(refName).join(" | ");
    if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
    return schema.type || "";
  }
  function table(rows, head) {
    const tb = el("table");
    const tr = el("tr");
    for (const h of head) tr.appendChild(el("th", null, h));
    tb.appendChild(tr);
    for (const r of rows) {
      const row = el("tr");
      for (const c of r) row.appendChild(el("td", null, c));
      tb.appendChild(row);
    }
    return tb;
  }
  function operation(method, path, op) {
    const d = el("details", "op");
    d.dataset.search = (method + " " + path + " " + (op.summary || "") + " " + (op.description || "")).toLowerCase();
    const s = el("summary");
    s.append(el("span", "m " + method, method.toUpperCase()), el("span", "path", path), el("span", "sum", op.summary || ""));
    d.appendChild(s);
    const body = el("div", "body");
    if (op.description) body.appendChild(el("p", null, op.description));
    const params = op.parameters || [];
    if (params.length) {
      body.appendChild(el("h4", null, "Parameters"));
      body.appendChild(table(params.map((p) => [p.name, p.in, refName(p.schema), p.required ? "required" : "", p.description || (p.schema && p.schema.description) || ""]),
        ["name", "in", "type", "", "description"]));
    }
    const rb = op.requestBody && op.requestBody.content;
    if (rb) {
      body.appendChild(el("h4", null, "Body"));
      body.appendChild(table(Object.entries(rb).map(([type, c]) => [type, refName(c.schema)]), ["content type", "schema"]));
    }
    const rs = Object.entries(op.responses || {});
    if (rs.length) {
      body.appendChild(el("h4", null, "Responses"));
      body.appendChild(table(rs.map(([code, r]) => [code, r.description || "",
        Object.entries(r.content || {}).map(([type, c]) => type + " " + refName(c.schema)).join(", ")]), ["status", "description", "content"]));
    }
    d.appendChild(body);
    return d;
  }
  function schemaBlock(name, s) {
    const d = el("details", "op");
    d.id = "schema-" + name;
    d.dataset.search = name.toLowerCase();
    const sum = el("summary");
    sum.append(el("span", "path", name), el("span", "sum", s.description || ""));
    d.appendChild(sum);
    const body = el("div", "body");
    const req = new Set(s.required || []);
    const props = Object.entries(s.properties || {});
    if (props.length) body.appendChild(table(props.map(([k, p]) => [k + (req.has(k) ? " *" : ""), refName(p), p.description || ""]), ["field", "type", "description"]));
    if (s.enum) body.appendChild(el("pre", null, s.enum.join(", ")));
    d.appendChild(body);
    return d;
  }
  async function main() {
    const r = await fetch("/openapi.json", { credentials: "same-origin" });
    if (!r.ok) throw new Error("/openapi.json: HTTP " + r.status + (r.status === 401 ? " (log in to the console first)" : ""));
    const doc = await r.json();
    $("title").textContent = (doc.info.title || "API") + " · " + (doc.info.version || "");
    $("desc").textContent = doc.info.description || "";
    const byTag = new Map();
    for (const [path, item] of Object.entries(doc.paths || {})) {
      for (const [method, op] of Object.entries(item)) {
        const tag = (op.tags && op.tags[0]) || "centre";
        if (!byTag.has(tag)) byTag.set(tag, []);
        byTag.get(tag).push(operation(method, path, op));
      }
    }
    for (const [tag, ops] of byTag) {
      const h = el("h2", null, tag);
      $("ops").append(h, ...ops);
    }
    for (const [name, s] of Object.entries((doc.components || {}).schemas || {})) $("schemas").appendChild(schemaBlock(name, s));
    $("filter").addEventListener("input", () => {
      const q = $("filter").value.trim().toLowerCase();
      for (const d of document.querySelectorAll("details.op")) d.hidden = q !== "" && !d.dataset.search.includes(q);
    });
  }
  main().catch((e) => { $("error").textContent = e.message; });
})();
