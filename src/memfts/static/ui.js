// memfts ui: keep the page current while agents write, and light up a graph node's links.
// Loaded from this server only (the Content-Security-Policy allows no inline script).
"use strict";

const POLL_MS = 1500;

// Is the person in the middle of something a refresh would throw away?
function busy(main) {
  if (main.querySelector("details[open]")) return true;
  const active = document.activeElement;
  return Boolean(active && main.contains(active) && active.matches("input, textarea"));
}

async function refresh() {
  const response = await fetch(location.href, { headers: { "X-Refresh": "1" }, credentials: "same-origin" });
  if (!response.ok && response.status !== 404) return false;
  const page = new DOMParser().parseFromString(await response.text(), "text/html");
  const fresh = page.getElementById("main");
  if (!fresh) return false;
  const main = document.getElementById("main");
  main.replaceChildren(...fresh.childNodes);
  document.title = page.title;
  document.body.dataset.version = page.body.dataset.version;
  document.getElementById("stale").hidden = true;
  wireGraph();
  return true;
}

async function poll() {
  try {
    const response = await fetch("/api/version", { credentials: "same-origin", cache: "no-store" });
    if (response.ok) {
      const { version } = await response.json();
      if (String(version) !== document.body.dataset.version) {
        if (busy(document.getElementById("main"))) {
          document.getElementById("stale").hidden = false;
        } else {
          await refresh();
        }
      }
    }
  } catch (error) {
    // the server stopped or the network hiccuped: try again at the next tick
  }
  setTimeout(poll, POLL_MS);
}

function wireGraph() {
  const svg = document.querySelector(".graph svg");
  if (!svg) return;
  const edges = Array.from(svg.querySelectorAll(".edge"));
  const nodes = Array.from(svg.querySelectorAll(".node"));
  for (const node of nodes) {
    node.addEventListener("mouseenter", () => {
      const i = node.dataset.i;
      const near = new Set([i]);
      for (const edge of edges) {
        const hot = edge.dataset.a === i || edge.dataset.b === i;
        edge.classList.toggle("hot", hot);
        if (hot) { near.add(edge.dataset.a); near.add(edge.dataset.b); }
      }
      for (const other of nodes) {
        other.classList.toggle("hot", other !== node && near.has(other.dataset.i));
        other.classList.toggle("dim", !near.has(other.dataset.i));
      }
    });
    node.addEventListener("mouseleave", () => {
      for (const edge of edges) edge.classList.remove("hot");
      for (const other of nodes) other.classList.remove("hot", "dim");
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  // a notice after a write is shown once: leave it out of the address (and of refreshes)
  const url = new URL(location.href);
  if (url.searchParams.has("done")) {
    for (const key of ["done", "from"]) url.searchParams.delete(key);
    if (url.pathname === "/") url.searchParams.delete("name");
    history.replaceState(null, "", url);
  }
  document.getElementById("refresh").addEventListener("click", () => refresh());
  wireGraph();
  // a page answering a form (a confirmation, a refused write) is not re-fetched
  if ("live" in document.body.dataset) setTimeout(poll, POLL_MS);
});
