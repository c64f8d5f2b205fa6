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
