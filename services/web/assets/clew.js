// Clew's pages work without script; this adds conveniences only.
// Loaded as a module from this origin (the Content-Security-Policy allows
// nothing else): no inline handlers, no eval, no other origin.

// Sign-in: read a token file into the token field. The file never leaves
// the browser except as that field, in the sign-in form's body.
for (const input of document.querySelectorAll("input[type=file][data-token-into]")) {
  input.addEventListener("change", async () => {
    const target = document.getElementById(input.dataset.tokenInto);
    const file = input.files && input.files[0];
    if (!target || !file) return;
    target.value = (await file.text()).trim();
  });
}

// The ledger page's live feed: Server-Sent Events from this origin, each
// event shown as text (never as markup), newest first, the last 100 kept.
for (const feed of document.querySelectorAll("[data-feed]")) {
  const list = feed.querySelector(".feed-events");
  const status = feed.querySelector("[data-feed-status]");
  const source = new EventSource(feed.dataset.feed);
  const say = (text) => { if (status) status.textContent = text; };
  say("Connecting to the live feed…");
  source.addEventListener("open", () => say("Live: new events appear at the top."));
  source.addEventListener("ledger-event", (message) => {
    let e;
    try { e = JSON.parse(message.data); } catch { return; }
    const item = document.createElement("li");
    item.dataset.leaf = String(e.leaf);
    const leaf = document.createElement("span");
    leaf.className = "leaf";
    leaf.textContent = `leaf ${e.leaf}`;
    const what = document.createElement("strong");
    what.textContent = e.what;
    const subject = document.createElement("a");
    subject.href = e.link;
    subject.textContent = e.subject;
    const by = document.createTextNode(` by ${e.actor}, ${e.time} `);
    item.append(leaf, " ", what, " ", subject, by);
    list.prepend(item);
    while (list.children.length > 100) list.lastElementChild.remove();
  });
  source.addEventListener("ledger-error", (message) => {
    say(`The live feed stopped: ${message.data}`);
    source.close();
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) say("The live feed is closed; reload the page to open it again.");
    else say("The live feed was interrupted; reconnecting…");
  });
  // Leaving the page closes the stream at once.
  window.addEventListener("pagehide", () => source.close());
}
