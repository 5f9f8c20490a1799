// A small, dependency-free explorer for the Conveyor OpenAPI document: every operation with
// a form to call it. The token stays in this tab (sessionStorage) and is sent as a bearer token.
"use strict";

const tokenInput = document.getElementById("token");
tokenInput.value = sessionStorage.getItem("conveyor-token") || "";
tokenInput.addEventListener("change", () => {
  sessionStorage.setItem("conveyor-token", tokenInput.value);
  load();
});

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (tokenInput.value) h.Authorization = "Bearer " + tokenInput.value;
  return h;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function resolve(doc, schema) {
  while (schema && schema.$ref) {
    schema = schema.$ref.split("/").slice(1).reduce((o, k) => o[k], doc);
  }
  return schema || {};
}

// an example value for a JSON Schema: its default, else something of its type
function example(doc, schema) {
  schema = resolve(doc, schema);
  if ("default" in schema) return schema.default;
  if ("const" in schema) return schema.const;
  if (schema.enum) return schema.enum[0];
  if (schema.anyOf) return example(doc, schema.anyOf[0]);
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
  if (type === "object") {
    const out = {};
    for (const name of schema.required || []) {
      out[name] = example(doc, (schema.properties || {})[name] || {});
    }
    return out;
  }
  return { string: "", integer: 0, number: 0, boolean: false, array: [], null: null }[type] ?? null;
}

function submitExamples(doc) {
  const body = resolve(doc, doc.components.schemas.SubmitRequest);
  const variants = body.oneOf ? body.oneOf.map((s) => resolve(doc, s)) : [body];
  return variants.map((s) => {
    const kwargs = s.properties.kwargs || {};
    const filled = {};
    for (const [name, prop] of Object.entries(kwargs.properties || {})) {
      filled[name] = example(doc, prop);
    }
    const task = s.properties.task.const || "";
    return { task, body: { task, kwargs: filled } };
  });
}

async function call(method, url, body, out) {
  out.textContent = "…";
  const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body) init.body = body;
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    out.textContent = String(err);
    return;
  }
  const head = response.status + " " + response.statusText + "\n";
  const type = response.headers.get("content-type") || "";
  if (type.startsWith("text/event-stream")) {
    // EventSource cannot send a bearer token, so read the stream by hand
    out.textContent = head;
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      out.textContent += decoder.decode(value, { stream: true });
    }
    return;
  }
  const text = await response.text();
  let shown = text;
  try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON */ }
  out.textContent = head + shown;
}

function operation(doc, base, path, method, op, pathParams) {
  const params = (pathParams || []).concat(op.parameters || []);
  const inputs = {};
  const form = el("div");
  for (const p of params) {
    const input = el("input", { placeholder: p.in + (p.required ? ", required" : "") });
    inputs[p.name] = [p, input];
    form.append(el("div", { class: "param" }, el("span", {}, p.name), input));
  }
  let textarea = null;
  if (op.requestBody) {
    textarea = el("textarea", { spellcheck: "false" });
    const examples = submitExamples(doc);
    if (examples.length > 1) {
      const select = el("select");
      for (const ex of examples) select.append(el("option", { value: ex.task }, ex.task));
      select.addEventListener("change", () => {
        const ex = examples.find((e) => e.task === select.value);
        textarea.value = JSON.stringify(ex.body, null, 2);
      });
      form.append(el("div", { class: "param" }, el("span", {}, "task"), select));
    }
    textarea.value = JSON.stringify(examples[0] ? examples[0].body : {}, null, 2);
    form.append(textarea);
  }
  const out = el("pre");
  const send = el("button", { type: "button" }, "Send");
  send.addEventListener("click", () => {
    let url = path;
    const query = new URLSearchParams();
    const extra = {};
    for (const [name, [p, input]] of Object.entries(inputs)) {
      if (p.in === "path") url = url.replace("{" + name + "}", encodeURIComponent(input.value));
      else if (input.value && p.in === "query") query.set(name, input.value);
      else if (input.value && p.in === "header") extra[name] = input.value;
    }
    const qs = query.toString();
    call(method.toUpperCase(), base + url + (qs ? "?" + qs : ""),
         textarea ? textarea.value : null, out);
  });
  form.append(send, out);
  return el("details", { class: "op" },
    el("summary", {}, el("span", { class: "method " + method }, method.toUpperCase()),
       el("span", { class: "path" }, path), el("span", { class: "summary" }, op.summary || "")),
    form);
}

async function load() {
  const main = document.getElementById("ops");
  let doc;
  try {
    const response = await fetch("openapi.json", { headers: headers() });
    doc = await response.json();
    if (!response.ok) throw new Error(doc.detail || response.statusText);
  } catch (err) {
    main.replaceChildren(el("p", { class: "error" },
      "Could not load openapi.json: " + err.message + " (a token may be needed)"));
    return;
  }
  const base = (doc.servers && doc.servers[0] ? doc.servers[0].url : "").replace(/\/$/, "");
  const byTag = {};
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of ["get", "post", "delete"]) {
      if (!item[method]) continue;
      const tag = (item[method].tags || ["other"])[0];
      (byTag[tag] = byTag[tag] || []).push(operation(doc, base, path, method, item[method],
                                                     item.parameters));
    }
  }
  main.replaceChildren(el("p", {}, doc.info.description || ""));
  for (const [tag, ops] of Object.entries(byTag)) main.append(el("h2", {}, tag), ...ops);
}

load();
