// The page: search by words and/or an example file, filters, paging, the streamed answer with
// its citations, and the API key when the server asks for one.

import { ApiError, NeedKey, getJSON, postEvents, postForm, savedKey, useKey } from "./api.js";
import { hitCard } from "./results.js";
import { baseName, clock, modalityOf, openItem, setUpViewer } from "./viewer.js";

const PAGE_SIZE = 12;
const $ = (id) => document.getElementById(id);

const state = {
  query: null, // {q, file}: what the shown results answer
  page: 1,
  example: null, // the File chosen or dropped, until cleared
  exampleUrl: "",
  retry: null, // what to do again once a key is given
};

function say(text, isError = false) {
  const box = $("message");
  box.textContent = text;
  box.classList.toggle("error", isError);
}

/** The filters and sort as API parameters (only those set). */
function filterParams() {
  const params = new URLSearchParams();
  const value = (id) => $(id).value.trim();
  for (const id of ["modality", "taken_since", "taken_until", "camera"]) {
    if (value(id)) params.set(id, value(id));
  }
  if (value("lat") !== "" && value("lon") !== "") {
    params.set("near", [value("lat"), value("lon"), value("km") || "5"].join(","));
  }
  if (value("sort") !== "relevance") params.set("sort", value("sort"));
  return params;
}

/** Run a failing call again once the user gives a key; say anything else as one line. */
function failed(error, again) {
  if (error instanceof NeedKey) {
    state.retry = again;
    const box = $("keybox");
    const refused = Boolean(savedKey());
    box.hidden = false;
    box.querySelector("label").textContent = refused
      ? "That key was refused: enter the server's API key"
      : "This server needs its API key";
    $("key").focus();
    say(error.message, true);
  } else {
    say(error instanceof ApiError ? error.message : `Request failed: ${error.message}`, true);
  }
}

async function search(page = 1) {
  const q = $("q").value.trim();
  const file = state.example;
  if (page === 1) {
    if (!q && !file) {
      say("Type some words, or drop or choose an example file.", true);
      $("q").focus();
      return;
    }
    state.query = { q, file };
  }
  const { q: words, file: example } = state.query;
  const params = filterParams();
  params.set("limit", String(PAGE_SIZE));
  params.set("page", String(page));
  say(page === 1 ? "Searching…" : "Loading more…");
  $("hits").setAttribute("aria-busy", "true");
  try {
    let found;
    if (example) {
      const form = new FormData();
      form.append("file", example, example.name);
      if (words) form.append("q", words);
      found = await postForm(`/api/search?${params}`, form);
    } else {
      params.set("q", words);
      found = await getJSON(`/api/search?${params}`);
    }
    show(found, page);
  } catch (error) {
    showNotes([]);
    failed(error, () => search(page));
  } finally {
    $("hits").removeAttribute("aria-busy");
  }
}

function show(found, page) {
  const list = $("hits");
  if (page === 1) list.replaceChildren();
  const start = list.children.length;
  for (const hit of found.hits) list.append(hitCard(hit, openHit));
  state.page = page;
  $("more").hidden = found.hits.length < PAGE_SIZE;
  const total = list.children.length;
  const what = state.query.file
    ? `like ${state.query.file.name}${state.query.q ? ` with “${state.query.q}”` : ""}`
    : `for “${state.query.q}”`;
  if (!total) say(`Nothing found ${what}.`);
  else say(`${total} result${total === 1 ? "" : "s"} ${what} (${found.took_ms} ms)`);
  showNotes(found.notes || []);
  if (page > 1 && list.children[start]) list.children[start].querySelector(".open").focus();
}

/** What the search says about its own results (a store still catching up, a server without
 * BM25): the same lines the CLI prints. */
function showNotes(notes) {
  const box = $("notes");
  box.replaceChildren(
    ...notes.map((note) => {
      const item = document.createElement("li");
      item.textContent = note;
      return item;
    }),
  );
  box.hidden = notes.length === 0;
}

function openHit(hit) {
  openItem({
    path: hit.path,
    modality: hit.modality,
    start: hit.start,
    end: hit.end,
    page: hit.page,
    url: hit.media_url,
  });
}

// -- the example file ----------------------------------------------------------------------------

function setExample(file) {
  if (state.exampleUrl) URL.revokeObjectURL(state.exampleUrl);
  state.example = file || null;
  state.exampleUrl = "";
  const img = $("example-img");
  $("example").hidden = !file;
  $("drop-text").hidden = Boolean(file);
  $("example-name").textContent = file ? `Example: ${file.name}` : "";
  img.hidden = !(file && file.type.startsWith("image/"));
  if (!img.hidden) {
    state.exampleUrl = URL.createObjectURL(file);
    img.src = state.exampleUrl;
  } else {
    img.removeAttribute("src");
  }
  if (!file) $("file").value = "";
}

function setUpDrop() {
  const zone = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (!file) return;
    setExample(file);
    search();
  });
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    if (!file) return;
    setExample(file);
    search();
  });
  $("example-clear").addEventListener("click", () => {
    setExample(null);
    $("q").focus();
  });
}

// -- ask -----------------------------------------------------------------------------------------

async function ask() {
  const question = $("question").value.trim();
  if (!question) {
    $("question").focus();
    return;
  }
  const answer = $("answer");
  const note = $("answer-note");
  const cited = $("citations");
  answer.replaceChildren();
  note.textContent = "";
  cited.replaceChildren();
  $("answer-box").hidden = false;
  answer.setAttribute("aria-busy", "true");
  let sources = [];
  try {
    await postEvents("/api/ask", { question }, (name, data) => {
      if (name === "sources") sources = data.sources || [];
      else if (name === "delta") answer.append(document.createTextNode(data.text || ""));
      else if (name === "citations") showCitations(data.citations || [], sources);
      else if (name === "done") {
        const how = data.mode === "llm" ? "" : "Extractive answer (the best passages). ";
        note.textContent = how + (data.note || "");
      } else if (name === "error") note.textContent = data.error || "the answer failed";
    });
  } catch (error) {
    failed(error, ask);
  } finally {
    answer.removeAttribute("aria-busy");
  }
}

function showCitations(citations, sources) {
  const list = $("citations");
  list.replaceChildren();
  for (const c of citations) {
    const source = sources.find((s) => s.number === c.number) || {};
    const item = {
      path: c.path,
      modality: source.modality || modalityOf(c.media_url, c.path),
      start: c.start,
      end: c.end,
      page: c.page,
      url: c.media_url,
    };
    const where =
      c.start !== undefined ? `${clock(c.start)}–${clock(c.end)}` : c.page ? `page ${c.page}` : "";
    const link = document.createElement("a");
    link.href = c.media_url;
    link.className = "citation";
    link.textContent = `[${c.number}] ${baseName(c.path)}${where ? ` · ${where}` : ""}`;
    link.title = c.path;
    link.addEventListener("click", (event) => {
      if (event.ctrlKey || event.metaKey || event.shiftKey) return; // a new tab, as asked
      event.preventDefault();
      openItem(item);
    });
    const li = document.createElement("li");
    li.append(link);
    list.append(li);
  }
}

// -- the library line and the key ----------------------------------------------------------------

async function loadStatus() {
  try {
    const status = await getJSON("/api/status");
    const files = status.files || {};
    $("library").textContent =
      `${files.paths ?? 0} files, ${files.segments ?? 0} segments indexed` +
      (files.failed ? `, ${files.failed} could not be read` : "");
  } catch (error) {
    failed(error, loadStatus);
  }
}

function setUpKey() {
  $("keybox").addEventListener("submit", (event) => {
    event.preventDefault();
    useKey($("key").value.trim());
    $("key").value = "";
    $("keybox").hidden = true;
    say("");
    const again = state.retry;
    state.retry = null;
    loadStatus();
    if (again && again !== loadStatus) again();
  });
  if (savedKey()) useKey(savedKey()); // the cookie again, for media and thumbnails
}

// -- wiring --------------------------------------------------------------------------------------

function main() {
  setUpViewer();
  setUpDrop();
  setUpKey();
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    search(1);
  });
  $("ask").addEventListener("submit", (event) => {
    event.preventDefault();
    ask();
  });
  $("more").addEventListener("click", () => search(state.page + 1));
  $("sort").addEventListener("change", () => {
    if (state.query) search(1);
  });
  loadStatus();
}

main();
