//! `/docs`: a self-contained HTML page (inline CSS and JS, nothing loaded from the internet) that
//! fetches `/v1/openapi.json` and renders operations, parameters and schemas.

/// The page.
pub const HTML: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Hutch API</title>
<style>
  :root { --fg:#1d232a; --muted:#5b6673; --bg:#fff; --line:#e3e7ec; --code:#f4f6f8;
          --get:#1f7a3d; --post:#1d5fb3; --put:#8a5a00; --delete:#b3261e; --patch:#6b3fb3; }
  * { box-sizing: border-box; }
  body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif; color:var(--fg); background:var(--bg); }
  header { padding:16px 24px; border-bottom:1px solid var(--line); display:flex; gap:16px; align-items:baseline; flex-wrap:wrap; }
  header h1 { margin:0; font-size:20px; }
  header input { margin-left:auto; padding:6px 10px; border:1px solid var(--line); border-radius:6px; min-width:260px; font:inherit; }
  .wrap { display:flex; }
  nav { width:260px; flex:none; padding:16px; border-right:1px solid var(--line); position:sticky; top:0; height:100vh; overflow:auto; font-size:14px; }
  nav a { display:block; color:var(--fg); text-decoration:none; padding:2px 0; }
  nav h3 { font-size:12px; text-transform:uppercase; color:var(--muted); margin:14px 0 4px; }
  main { flex:1; padding:16px 24px 80px; min-width:0; }
  .tag { margin-top:28px; }
  .tag > h2 { font-size:18px; border-bottom:1px solid var(--line); padding-bottom:4px; }
  .op { border:1px solid var(--line); border-radius:8px; margin:10px 0; }
  .op > summary { cursor:pointer; padding:8px 12px; display:flex; gap:10px; align-items:center; list-style:none; }
  .op > summary::-webkit-details-marker { display:none; }
  .m { font:600 12px/1 ui-monospace,monospace; color:#fff; padding:4px 6px; border-radius:4px; min-width:58px; text-align:center; }
  .m.get{background:var(--get)} .m.post{background:var(--post)} .m.put{background:var(--put)}
  .m.delete{background:var(--delete)} .m.patch{background:var(--patch)}
  .path { font-family:ui-monospace,monospace; font-size:14px; }
  .sum { color:var(--muted); }
  .body { padding:4px 16px 14px; border-top:1px solid var(--line); }
  table { border-collapse:collapse; width:100%; font-size:14px; margin:6px 0; }
  th, td { text-align:left; padding:4px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
  th { color:var(--muted); font-weight:500; }
  code, .type { font-family:ui-monospace,monospace; font-size:13px; background:var(--code); padding:1px 4px; border-radius:3px; }
  .schema { font-family:ui-monospace,monospace; font-size:13px; background:var(--code); padding:8px 10px; border-radius:6px; overflow:auto; }
  .schema .k { color:#0b5394; } .schema .req { color:var(--delete); } .schema .d { color:var(--muted); font-family:system-ui,sans-serif; }
  .schema ul { list-style:none; margin:0; padding-left:18px; }
  h4 { margin:12px 0 4px; font-size:14px; }
  .lock { font-size:12px; color:var(--muted); }
  #err { color:var(--delete); }
  a.ref { color:#0b5394; cursor:pointer; }
</style>
</head>
<body>
<header><h1 id="title">Hutch API</h1><span id="ver" class="sum"></span>
<input id="q" type="search" placeholder="Filter routes (e.g. files, POST, {id})"></header>
<div class="wrap"><nav id="nav"></nav><main id="main"><p>Loading <code>/v1/openapi.json</code>…</p><p id="err"></p></main></div>
<script>
"use strict";
let DOC = null;
const esc = s => String(s ?? "").replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]));
const refName = r => r.split("/").pop();
function resolve(s) { let n = 0; while (s && s.$ref && n++ < 20) s = DOC.components.schemas[refName(s.$ref)]; return s || {}; }
function typeOf(s) {
  if (!s) return "any";
  if (s.$ref) return `<a class="ref" href="#schema-${esc(refName(s.$ref))}">${esc(refName(s.$ref))}</a>`;
  if (s.oneOf || s.anyOf) return (s.oneOf || s.anyOf).map(typeOf).join(" | ");
  if (s.allOf) return s.allOf.map(typeOf).join(" & ");
  let t = s.type;
  if (Array.isArray(t)) t = t.join(" | ");
  if (t === "array" || (Array.isArray(s.type) && s.type.includes("array"))) return `${typeOf(s.items)}[]`;
  if (s.enum) return s.enum.map(v => JSON.stringify(v)).join(" | ");
  if (s.format) t = `${t} (${s.format})`;
  if (!t && s.additionalProperties) t = "object";
  return esc(t || "object");
}
function schemaTree(s, depth, seen) {
  s = s || {};
  if (s.$ref) {
    const name = refName(s.$ref);
    if (seen.has(name) || depth > 4) return `<span>${typeOf(s)}</span>`;
    seen = new Set(seen); seen.add(name);
    return `<span>${typeOf(s)}</span>` + schemaTree(resolve(s), depth, seen);
  }
  const alts = s.oneOf || s.anyOf;
  if (alts) return "<ul>" + alts.map((a, i) => `<li><span class="d">variant ${i + 1}:</span> ${schemaTree(a, depth + 1, seen)}</li>`).join("") + "</ul>";
  if (s.allOf) return "<ul>" + s.allOf.map(a => `<li>${schemaTree(a, depth + 1, seen)}</li>`).join("") + "</ul>";
  const items = s.items;
  if (items) return ` array of ${schemaTree(items, depth + 1, seen)}`;
  if (s.properties) {
    const req = new Set(s.required || []);
    return "<ul>" + Object.entries(s.properties).map(([k, v]) =>
      `<li><span class="k">${esc(k)}</span>${req.has(k) ? '<span class="req">*</span>' : ""}: ${typeOf(v)}` +
      (v.description ? ` <span class="d">— ${esc(v.description)}</span>` : "") +
      ((v.properties || v.oneOf || (v.$ref && depth < 1)) ? schemaTree(v, depth + 1, seen) : "") + "</li>").join("") + "</ul>";
  }
  if (s.additionalProperties && typeof s.additionalProperties === "object")
    return ` map of string → ${typeOf(s.additionalProperties)}`;
  return s.enum ? ` ${typeOf(s)}` : "";
}
function content(c) {
  if (!c) return "";
  return Object.entries(c).map(([ct, m]) =>
    `<div><code>${esc(ct)}</code>${m.schema ? `<div class="schema">${schemaTree(m.schema, 0, new Set())}</div>` : ""}</div>`).join("");
}
function params(op, item) {
  const ps = [...(item.parameters || []), ...(op.parameters || [])];
  if (!ps.length) return "";
  return `<h4>Parameters</h4><table><tr><th>Name</th><th>In</th><th>Type</th><th>Description</th></tr>` +
    ps.map(p => `<tr><td><code>${esc(p.name)}</code>${p.required ? '<span class="req" style="color:var(--delete)">*</span>' : ""}</td>` +
      `<td>${esc(p.in)}</td><td>${typeOf(p.schema)}</td><td>${esc(p.description)}</td></tr>`).join("") + "</table>";
}
function opHtml(path, method, op, item) {
  const id = `op-${method}-${path}`.replace(/[^A-Za-z0-9-]/g, "_");
  const secured = (op.security || DOC.security || []).length > 0;
  let h = `<details class="op" id="${id}" data-text="${esc((method + " " + path + " " + (op.summary || "") + " " + (op.tags || []).join(" ")).toLowerCase())}">` +
    `<summary><span class="m ${method}">${method.toUpperCase()}</span><span class="path">${esc(path)}</span>` +
    `<span class="sum">${esc(op.summary || "")}</span>${secured ? '<span class="lock">🔑 API key</span>' : ""}</summary><div class="body">`;
  if (op.description && op.description !== op.summary) h += `<p>${esc(op.description)}</p>`;
  h += params(op, item);
  if (op.requestBody) h += `<h4>Request body${op.requestBody.required ? " (required)" : ""}</h4>${esc(op.requestBody.description || "")}${content(op.requestBody.content)}`;
  h += `<h4>Responses</h4><table><tr><th>Status</th><th>Description</th><th>Body</th></tr>`;
  for (const [code, r] of Object.entries(op.responses || {}))
    h += `<tr><td><code>${esc(code)}</code></td><td>${esc(r.description)}</td><td>${content(r.content)}</td></tr>`;
  return h + "</table></div></details>";
}
function render() {
  document.getElementById("title").textContent = DOC.info.title;
  document.getElementById("ver").textContent = `OpenAPI ${DOC.openapi} · v${DOC.info.version}`;
  const byTag = new Map();
  (DOC.tags || []).forEach(t => byTag.set(t.name, { desc: t.description, ops: [] }));
  for (const [path, item] of Object.entries(DOC.paths || {}))
    for (const m of ["get", "post", "put", "patch", "delete", "head", "options"])
      if (item[m]) {
        const tag = (item[m].tags || ["other"])[0];
        if (!byTag.has(tag)) byTag.set(tag, { desc: "", ops: [] });
        byTag.get(tag).ops.push(opHtml(path, m, item[m], item));
      }
  let main = DOC.info.description ? `<p>${esc(DOC.info.description)}</p>` : "";
  let nav = "<h3>Routes</h3>";
  for (const [tag, t] of byTag) {
    if (!t.ops.length) continue;
    const tid = "tag-" + tag.replace(/[^A-Za-z0-9]/g, "_");
    nav += `<a href="#${tid}">${esc(tag)} (${t.ops.length})</a>`;
    main += `<section class="tag" id="${tid}"><h2>${esc(tag)}</h2><p class="sum">${esc(t.desc || "")}</p>${t.ops.join("")}</section>`;
  }
  nav += "<h3>Schemas</h3>";
  main += `<section class="tag" id="schemas"><h2>Schemas</h2>`;
  for (const [name, s] of Object.entries((DOC.components || {}).schemas || {}).sort()) {
    nav += `<a href="#schema-${esc(name)}">${esc(name)}</a>`;
    main += `<details class="op" id="schema-${esc(name)}" data-text="${esc(name.toLowerCase())}"><summary><span class="path">${esc(name)}</span>` +
      `<span class="sum">${esc(s.description || "")}</span></summary><div class="body"><div class="schema">${typeOf(s)}${schemaTree(s, 0, new Set([name]))}</div></div></details>`;
  }
  document.getElementById("nav").innerHTML = nav;
  document.getElementById("main").innerHTML = main + "</section>";
  if (location.hash) { const el = document.getElementById(location.hash.slice(1)); if (el && el.tagName === "DETAILS") el.open = true; }
}
document.addEventListener("click", e => {
  const a = e.target.closest("a[href^='#']"); if (!a) return;
  const el = document.getElementById(a.getAttribute("href").slice(1));
  if (el && el.tagName === "DETAILS") el.open = true;
});
document.getElementById("q").addEventListener("input", e => {
  const q = e.target.value.trim().toLowerCase();
  document.querySelectorAll("details.op").forEach(d => { d.style.display = !q || d.dataset.text.includes(q) ? "" : "none"; });
});
fetch("/v1/openapi.json").then(r => { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
  .then(d => { DOC = d; render(); })
  .catch(e => { document.getElementById("err").textContent = "Could not load the OpenAPI document: " + e.message; });
</script>
</body>
</html>
"##;
