// GraphiQL, offline: React and GraphiQL come from this origin (vendored from
// npm), and queries run as the signed-in person through the session bridge
// (POST /session/graphql with the page's anti-forgery token), so the bearer
// token never reaches the browser. Docs and autocompletion come from the
// standard introspection query, which the API answers in full.
const root = document.getElementById("graphiql");
const fetcher = async (params) => {
  const response = await fetch("/session/graphql", {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json", "x-clew-csrf": root.dataset.csrf },
    body: JSON.stringify(params),
  });
  return response.json();
};
ReactDOM.createRoot(root).render(
  React.createElement(GraphiQL, {
    fetcher,
    defaultQuery: "# Queries run as you: " + root.dataset.principal + "\n{\n  me { principal roles }\n  checkpoint { size }\n}\n",
  }),
);

// GraphiQL's editors type into hidden textareas (CodeMirror's) that carry
// no label; each gets the name of its editor (WCAG 2.2 §1.3.1, §4.1.2), as
// GraphiQL makes them.
const editorName = (textarea) => {
  if (textarea.closest(".graphiql-query-editor")) return "Query";
  if (textarea.closest(".graphiql-response")) return "Response";
  const tool = textarea.closest(".graphiql-editor-tool");
  if (tool) {
    const editors = [...tool.querySelectorAll(".graphiql-editor")];
    const at = editors.findIndex((e) => e.contains(textarea));
    return at === 1 ? "Request headers" : "Variables";
  }
  return "GraphQL editor";
};
// In an editor Tab moves on to the next control instead of indenting, so
// the keyboard never gets stuck there (WCAG 2.2 §2.1.2); an open
// completion list still takes Tab. CodeMirror 5: a key bound to `false` is
// left to the browser; maps added later (the completion list's) come first.
const freed = new WeakSet();
const label = () => {
  for (const t of root.querySelectorAll(".CodeMirror textarea:not([aria-label])")) {
    t.setAttribute("aria-label", editorName(t));
  }
  for (const wrapper of root.querySelectorAll(".CodeMirror")) {
    const editor = wrapper.CodeMirror;
    if (editor && !freed.has(editor)) {
      editor.addKeyMap({ Tab: false, "Shift-Tab": false });
      freed.add(editor);
    }
  }
};
new MutationObserver(label).observe(root, { childList: true, subtree: true });
label();
