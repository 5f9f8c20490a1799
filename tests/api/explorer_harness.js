// Loads the /docs explorer script with a stub DOM and prints what it rendered (see test_docs_explorer.py).
const fs = require("fs");
const nodes = [];
function makeNode(tag) {
  const n = { tag, children: [], attrs: {}, listeners: {}, value: "", textContent: "",
    append(...c) { this.children.push(...c); }, replaceChildren(...c) { this.children = c; },
    setAttribute(k, v) { this.attrs[k] = v; }, addEventListener(k, f) { this.listeners[k] = f; } };
  nodes.push(n); return n;
}
const main = makeNode("main"); const token = makeNode("input");
global.document = { getElementById: (id) => (id === "ops" ? main : token), createElement: makeNode };
global.sessionStorage = { getItem: () => "", setItem: () => {} };
const doc = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
global.fetch = async (url) => ({ ok: true, json: async () => doc });
eval(fs.readFileSync(process.argv[3], "utf8"));
setTimeout(() => {
  const summaries = nodes.filter((n) => n.tag === "span" && n.className && n.className.startsWith("method"));
  const areas = nodes.filter((n) => n.tag === "textarea");
  console.log(JSON.stringify({ operations: summaries.length, body: areas[0] && JSON.parse(areas[0].value) }));
}, 50);
