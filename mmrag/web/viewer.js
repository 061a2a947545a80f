// The viewer: one <dialog> that plays a recording or video from a hit's start, shows a photo,
// or opens a document at its page. Escape closes it (the dialog's own cancel) and stops playback.

const TIMED = new Set(["transcript", "tags", "audio", "recording", "shot", "shot_label"]);
const PICTURE = new Set(["image", "label", "ocr"]);
const AUDIO_FILE = /\.(ogg|oga|opus|mp3|m4a|aac|wav|flac|wma|aiff?)$/i;

export function isTimed(modality) {
  return TIMED.has(modality);
}

export function baseName(path) {
  return String(path || "").split(/[\\/]/).pop();
}

/** 0:18, or 1:02:03 past an hour. */
export function clock(seconds) {
  const whole = Math.max(0, Math.floor(Number(seconds) || 0));
  const h = Math.floor(whole / 3600);
  const m = Math.floor((whole % 3600) / 60);
  const s = String(whole % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

/** Where in the file: "0:18–0:24", "page 2", or "" for a photo or a page-less document. */
export function place(item) {
  if (isTimed(item.modality)) return `${clock(item.start)}–${clock(item.end)}`;
  return item.page ? `page ${item.page}` : "";
}

/** What a media URL (`/media/<id>#t=..` or `#page=N`) is about, when no modality is known. */
export function modalityOf(url, path) {
  if (/#t=/.test(url)) return AUDIO_FILE.test(path) ? "audio" : "shot";
  return "document";
}

const dialog = () => document.getElementById("viewer");

export function setUpViewer() {
  const box = dialog();
  document.getElementById("viewer-close").addEventListener("click", () => box.close());
  box.addEventListener("close", () => {
    const body = document.getElementById("viewer-body");
    for (const media of body.querySelectorAll("video, audio")) {
      media.pause();
      media.removeAttribute("src");
      media.load(); // stops the download
    }
    body.replaceChildren();
    if (box.returnFocus && box.returnFocus.isConnected) box.returnFocus.focus();
  });
  box.addEventListener("click", (event) => {
    if (event.target === box) box.close(); // a click on the backdrop
  });
}

/**
 * Open `item` ({path, modality, start, end, page, url}) in the viewer. A recording or video
 * seeks to `start` once its metadata is known (not only by the #t= fragment, which some players
 * ignore) and plays.
 */
export function openItem(item) {
  const box = dialog();
  const body = document.getElementById("viewer-body");
  const name = baseName(item.path);
  const where = place(item);
  document.getElementById("viewer-title").textContent = where ? `${name} · ${where}` : name;
  const link = document.getElementById("viewer-open");
  link.href = item.url;
  let shown;
  if (isTimed(item.modality)) {
    shown = player(item, name);
  } else if (PICTURE.has(item.modality)) {
    shown = document.createElement("img");
    shown.src = item.url;
    shown.alt = name;
  } else {
    shown = document.createElement("iframe");
    shown.src = item.url; // a PDF opens at #page=N
    shown.title = where ? `${name}, ${where}` : name;
  }
  body.replaceChildren(shown);
  box.returnFocus = document.activeElement;
  if (!box.open) box.showModal();
  // focus stays in this page (an iframe would swallow Escape): the player, else the close button
  (shown.tagName === "IFRAME" || shown.tagName === "IMG"
    ? document.getElementById("viewer-close")
    : shown
  ).focus();
}

function player(item, name) {
  const media = document.createElement(AUDIO_FILE.test(item.path) ? "audio" : "video");
  const start = Number(item.start) || 0;
  media.controls = true;
  media.preload = "auto";
  media.dataset.start = String(start);
  media.setAttribute("aria-label", `${name} from ${clock(start)}`);
  media.addEventListener(
    "loadedmetadata",
    () => {
      media.currentTime = Math.min(start, media.duration || start);
      media.play().catch(() => {}); // a browser that refuses autoplay leaves the controls
    },
    { once: true },
  );
  media.src = item.url;
  return media;
}
