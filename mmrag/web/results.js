// One result card per hit. Everything from the API goes in as text (textContent, attributes),
// never as markup.

import { baseName, isTimed, place } from "./viewer.js";

const SHOWN_AS = {
  document: "document",
  label: "photo (labels)",
  ocr: "photo (words)",
  image: "photo",
  transcript: "speech",
  tags: "sound tags",
  audio: "sound",
  recording: "recording",
  shot: "video moment",
  shot_label: "video moment",
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

/** The spaces that found a hit and its rank in each: "text #1, clip #3". */
export function provenance(sources) {
  if (!Array.isArray(sources) || !sources.length) return "";
  return sources.map((s) => `${s.space} #${s.rank}`).join(", ");
}

/** The folder a file is in, by its last two names: "…/library/photos". */
export function shortFolder(path) {
  const parts = String(path || "").split(/[\\/]/).slice(0, -1).filter(Boolean);
  return parts.length > 2 ? `…/${parts.slice(-2).join("/")}` : parts.join("/") || "/";
}

/** A <li> for `hit`; its title is a button that calls `onOpen(hit)` (Enter or a click). */
export function hitCard(hit, onOpen) {
  const name = baseName(hit.path);
  const shownAs = SHOWN_AS[hit.modality] || hit.modality;
  const where = place(hit);
  const card = el("li", "hit");
  card.dataset.modality = hit.modality;
  card.dataset.mediaId = hit.media_id;

  const thumb = el("div", "thumb");
  const noPicture = () => {
    thumb.prepend(el("span", "kind-icon", isTimed(hit.modality) ? "▶" : "¶"));
    thumb.classList.add("empty");
  };
  if (hit.thumbnail_url) {
    const img = el("img");
    img.src = hit.thumbnail_url;
    img.alt = "";
    img.loading = "lazy";
    img.decoding = "async";
    img.addEventListener("error", () => { img.remove(); noPicture(); });  // none to be had
    thumb.append(img);
  } else {
    noPicture();
  }
  if (isTimed(hit.modality)) thumb.append(el("span", "badge-time", where));
  card.append(thumb);

  const title = el("h3", "name");
  const open = el("button", "open", name);
  open.type = "button";
  const action = isTimed(hit.modality) ? `play from ${where.split("–")[0]}` : "open";
  open.setAttribute("aria-label", `${name}: ${shownAs}${where ? `, ${where}` : ""}; ${action}`);
  open.title = hit.path;
  open.addEventListener("click", () => onOpen(hit));
  title.append(open);
  card.append(title);

  const meta = el("p", "meta");
  meta.append(el("span", "modality", shownAs));
  if (where) meta.append(el("span", "place", where));
  meta.append(el("span", "score", `score ${Number(hit.score).toFixed(3)}`));
  card.append(meta);

  if (hit.snippet) card.append(el("p", "snippet", hit.snippet));
  const facts = [hit.taken_at, hit.camera].filter(Boolean).join(" · ");
  if (facts) card.append(el("p", "facts muted", facts));
  const found = provenance(hit.sources);
  if (found) card.append(el("p", "sources muted", `found by ${found}`));
  const folder = el("p", "path muted", `in ${shortFolder(hit.path)}`);
  folder.title = hit.path;
  card.append(folder);
  return card;
}
