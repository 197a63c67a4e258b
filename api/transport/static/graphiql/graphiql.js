// tradestream's GraphiQL (api/transport/graphiql.py serves the page): the script of Strawberry's GraphiQL
// page, moved out of the page so that its Content-Security-Policy can refuse inline scripts.
// It runs after the vendored React, ReactDOM, GraphiQL and explorer plugin bundles, and reads the
// page's defaults (the default document, the headers editor's example) from #graphiql's
// data-config attribute.
"use strict";

(function () {
  const container = document.getElementById("graphiql");
  const config = JSON.parse(container.dataset.config);

  // ?q=...&variables=... in the URL share a document; edits keep them current (not the headers,
  // which may hold a token).
  const parameters = Object.fromEntries(new URLSearchParams(window.location.search));

  function updateURL(changes) {
    Object.assign(parameters, changes);
    const search = new URLSearchParams();
    for (const [name, value] of Object.entries(parameters)) {
      if (value) search.set(name, value);
    }
    const query = search.toString();
    window.history.replaceState(null, "", query ? "?" + query : window.location.pathname);
  }

  const url = window.location.origin + window.location.pathname;
  const subscriptionUrl = url.replace(/^http/, "ws");
  const fetcher = GraphiQL.createFetcher({ url, subscriptionUrl });

  // Headers from the editor go with HTTP requests and, as GraphiQL merges them into
  // connectionParams, with connection_init on the WebSocket. An Authorization value still holding
  // the <token> placeholder is left out, so the page works as loaded.
  function withoutPlaceholders(headers) {
    if (!headers) return headers;
    const kept = {};
    for (const [name, value] of Object.entries(headers)) {
      const placeholder = typeof value === "string" && /<[^>]*>/.test(value);
      if (!(name.toLowerCase() === "authorization" && placeholder)) kept[name] = value;
    }
    return kept;
  }

  function tradestreamFetcher(params, options) {
    return fetcher(params, options && { ...options, headers: withoutPlaceholders(options.headers) });
  }

  const explorer = GraphiQLPluginExplorer.explorerPlugin();

  function TradestreamGraphiQL() {
    const [query, setQuery] = React.useState(parameters.q || config.defaultDocument);
    const [variables, setVariables] = React.useState(parameters.variables);
    const [headers, setHeaders] = React.useState(parameters.headers);

    return React.createElement(GraphiQL, {
      fetcher: tradestreamFetcher,
      defaultEditorToolsVisibility: "headers",
      defaultHeaders: config.defaultHeaders,
      plugins: [explorer],
      query,
      variables,
      headers,
      onEditQuery(next) {
        setQuery(next);
        updateURL({ q: next });
      },
      onEditVariables(next) {
        setVariables(next);
        updateURL({ variables: next });
      },
      onEditHeaders: setHeaders,
      inputValueDeprecation: true,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: true,
    });
  }

  ReactDOM.createRoot(container).render(React.createElement(TradestreamGraphiQL));
})();
