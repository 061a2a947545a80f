"""The web page (mmrag/web/, served at / by the API) in a real browser: Playwright drives Debian's
chromium against a real uvicorn server over real Milvus Lite and the offline models, with a small
ingested sample library (documents, photos, a voice memo, a video with speech) and the protocol
stand-in LLM. It saves the results page as docs/screenshot.png, which the README shows."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, Route, sync_playwright

from mmrag.api import create_app
from mmrag.settings import Settings
from tests.conftest import REPO, Env, build_env
from tests.image_samples import altered
from tests.integration.test_api import Served, events
from tests.llm_stand_in import StandIn

CHROMIUM = "/usr/bin/chromium"  # Debian's package; scripts/test.sh installs it
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SAMPLES = REPO / "data" / "library"
SCREENSHOT = REPO / "docs" / "screenshot.png"
REPLY = "The garden party starts at three in the afternoon [1]."
KEY = "open sesame / 42"  # a slash and spaces: the cookie carries it URL-encoded
THUMBS_LOADED = (
    "[...document.querySelectorAll('.hit img')].every(i => i.complete && i.naturalWidth)"
)


@dataclass
class Lib:
    env: Env
    server: Served
    llm: StandIn

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def search(self, q: str, **params: object) -> list[dict]:
        """The API's own answer, to check what the page shows against."""
        query = urlencode({"q": q, "limit": 12, **params})
        return self.server.json(f"/api/search?{query}")["hits"]


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory, minilm) -> Iterator[Lib]:
    root = tmp_path_factory.mktemp("web")
    library = root / "library"
    shutil.copytree(SAMPLES / "photos", library / "photos")
    shutil.copytree(SAMPLES / "recordings", library / "recordings")
    shutil.copytree(SAMPLES / "videos", library / "videos")
    for name in ("home/lease-summary.pdf", "home/garden-calendar.md", "kitchen/sourdough.md"):
        (library / "docs").mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / "docs" / name, library / "docs" / Path(name).name)
    env = build_env(root, minilm)
    env.settings.ocr = False  # the scanned page is a photo here; OCR has tests of its own
    env.with_images().with_audio()  # the video comes with both
    t0 = time.perf_counter()
    report = env.ingest(library)
    print(f"web test library ingested in {time.perf_counter() - t0:.1f} s")
    assert report.failed == [] and report.new == 13, report
    with StandIn(reply=REPLY) as llm:
        env.settings.llm_base_url, env.settings.llm_model = llm.url, "stand-in-model"
        with Served(create_app(env.settings, env.models)) as server:
            yield Lib(env, server, llm)
    env.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "needs Debian's chromium: apt-get install chromium"
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield launched
        launched.close()


def open_page(browser: Browser, url: str, width: int = 1280, height: int = 800) -> Page:
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(  # what the page's Content-Security-Policy refused
        "console",
        lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(url + "/")
    return page


@pytest.fixture
def page(browser: Browser, lib: Lib) -> Iterator[Page]:
    page = open_page(browser, lib.url)
    until(page, "document.getElementById('library').textContent.includes('files')")
    yield page
    assert page.errors == [], page.errors  # type: ignore[attr-defined]
    page.context.close()


def search(page: Page, words: str) -> None:
    """Type the words and press Enter, as a person would; wait for the results."""
    page.fill("#q", words)
    with page.expect_response(lambda r: "/api/search" in r.url):
        page.press("#q", "Enter")
    until(page, "!document.getElementById('message').textContent.startsWith('Searching')")


def until(page: Page, expression: str) -> None:
    """Wait until the JS expression is true. A function, not a string to evaluate: the page's
    Content-Security-Policy forbids eval, and Playwright evaluates string predicates with it."""
    page.wait_for_function(f"() => ({expression})")


def names(page: Page) -> list[str]:
    return page.locator(".hit .open").all_text_contents()


def wait_played_from(page: Page, selector: str) -> float:
    """The player's position once it has loaded and finished seeking."""
    until(
        page, f"(m => m && m.readyState >= 2 && !m.seeking)(document.querySelector({selector!r}))"
    )
    return page.eval_on_selector(selector, "m => m.currentTime")


def pdf_viewer_page(page: Page, want: str, timeout_s: float = 20.0) -> str:
    """The page number chromium's PDF viewer (an extension frame inside the iframe) shows: `want`
    as soon as it shows that, else the last it showed (it shows 0 while loading)."""
    deadline = time.monotonic() + timeout_s
    shown = "no PDF viewer"
    while time.monotonic() < deadline and shown != want:
        for frame in page.frames:
            if frame.url.startswith("chrome-extension://"):
                selector = frame.locator("#pageSelector")
                if selector.count():
                    shown = selector.input_value()
        page.wait_for_timeout(100)
    return shown


def save_screenshot(png: bytes) -> None:
    """Write docs/screenshot.png unless the page looks the same as the one there (a search's
    time in ms differs from run to run): a test run leaves the checkout unchanged."""
    shot = Image.open(io.BytesIO(png)).convert("RGB")
    if SCREENSHOT.exists():
        old = Image.open(SCREENSHOT).convert("RGB")
        if old.size == shot.size:
            changed = np.abs(np.asarray(old, int) - np.asarray(shot, int)).max(axis=2) > 16
            if changed.mean() < 0.002:
                return
    SCREENSHOT.write_bytes(png)


def test_typing_a_query_shows_thumbnails_and_saves_the_screenshot(page: Page, lib: Lib) -> None:
    search(page, "a cat")
    assert names(page)[:2] == [h["path"].rsplit("/", 1)[1] for h in lib.search("a cat")[:2]]
    assert names(page)[0] == "chelsea the cat.jpg"
    first = page.locator(".hit").first
    assert first.locator(".modality").text_content() == "photo (labels)"
    # minmax fusion: a hit first in both legs scores 1.000
    assert re.fullmatch(r"score (0\.\d{3}|1\.000)", first.locator(".score").text_content())
    assert first.locator(".sources").text_content().startswith("found by ")
    # every thumbnail shown has loaded from /thumbs/ (an <img> sends no key header: none set)
    until(page, THUMBS_LOADED)
    thumbs = page.eval_on_selector_all(".hit img", "imgs => imgs.map(i => i.src)")
    assert len(thumbs) >= 2 and all("/thumbs/" in src for src in thumbs)
    assert "garden tour.mp4" in names(page)  # the video's moment showing a cat has a frame too
    # every picture fills the same 4:3 box, a square photo's as a wide one's (cropped to fit)
    boxes = page.eval_on_selector_all(
        ".thumb:has(img)",
        "els => els.map(e => [e.getBoundingClientRect().width, e.getBoundingClientRect().height,"
        " e.querySelector('img').naturalWidth / e.querySelector('img').naturalHeight])",
    )
    assert any(abs(ratio - 1) < 0.05 for *_, ratio in boxes), boxes  # a square one is shown
    assert all(abs(h - w * 3 / 4) <= 1 for w, h, _ in boxes), boxes
    assert page.locator("#notes").is_hidden()  # the store is indexed: nothing to say
    page.locator("#q").blur()
    save_screenshot(page.screenshot())
    assert Image.open(SCREENSHOT).size == (1280, 800)
    assert SCREENSHOT.stat().st_size < 1_000_000


def test_a_video_hit_plays_from_its_start_and_escape_closes_it(page: Page, lib: Lib) -> None:
    question = "when does the garden party start"
    hit = lib.search(question)[0]
    assert hit["path"].endswith("garden tour.mp4") and 15 < hit["start"] < 22, hit
    search(page, question)
    card = page.locator(".hit").first
    assert card.locator(".open").text_content() == "garden tour.mp4"
    assert card.locator(".place").text_content().startswith("0:1")
    card.locator(".open").click()
    video = "#viewer video"
    at = wait_played_from(page, video)
    assert abs(at - hit["start"]) < 0.5, (at, hit["start"])
    assert page.eval_on_selector(video, "v => v.src").endswith(hit["media_url"])
    until(page, "!document.querySelector('#viewer video').paused")  # it plays
    page.keyboard.press("Escape")
    # closed, and the player stopped and gone (the dialog's close event runs just after)
    until(page, "!document.getElementById('viewer').open && !document.querySelector('video')")
    assert page.evaluate("document.activeElement.className") == "open"  # focus came back

    # the page seeks by itself, not only through the URL's #t= (which some players ignore)
    def without_fragments(route: Route) -> None:
        found = route.fetch().json()
        for h in found["hits"]:
            h["media_url"] = h["media_url"].split("#")[0]
        route.fulfill(json=found)

    page.route(lambda url: "/api/search?" in url, without_fragments)
    search(page, question)
    page.locator(".hit .open").first.click()
    at = wait_played_from(page, video)
    assert page.eval_on_selector(video, "v => v.src").endswith(f"/media/{hit['media_id']}")
    assert abs(at - hit["start"]) < 0.5, (at, hit["start"])


def test_the_keyboard_alone_finds_and_opens_a_pdf_at_its_page(page: Page, lib: Lib) -> None:
    question = "How much notice must tenants give before moving out?"
    hit = lib.search(question)[0]
    assert hit["path"].endswith("lease-summary.pdf") and hit["page"] == 2, hit
    page.focus("#q")
    page.keyboard.type(question)
    page.keyboard.press("Enter")
    page.wait_for_selector(".hit")
    for _ in range(40):  # Tab through the page until the first result has the focus
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('open')"):
            break
    assert page.evaluate("document.activeElement.textContent") == "lease-summary.pdf"
    focus = page.evaluate("getComputedStyle(document.activeElement.closest('.hit')).outlineStyle")
    assert focus == "solid"  # the focused card is outlined
    page.keyboard.press("Enter")
    page.wait_for_selector("#viewer iframe")
    assert page.eval_on_selector("#viewer iframe", "f => f.src").endswith(
        f"/media/{hit['media_id']}#page=2"
    )
    assert page.text_content("#viewer-title") == "lease-summary.pdf · page 2"
    assert pdf_viewer_page(page, "2") == "2"  # chromium's own PDF viewer shows it, there
    page.keyboard.press("Escape")
    until(page, "!document.getElementById('viewer').open")


def test_a_dropped_photo_finds_its_original_first(page: Page, lib: Lib) -> None:
    example = io.BytesIO()
    # (not coffee.jpg: the sample video shows that photo, and its moment ties with the original)
    original = lib.env.root / "library" / "photos" / "astronaut.jpg"
    altered(Image.open(original)).save(example, "JPEG")
    page.evaluate(
        """([data, name]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const drop = new DataTransfer();
            drop.items.add(new File([bytes], name, {type: "image/jpeg"}));
            document.getElementById("drop").dispatchEvent(
                new DragEvent("drop", {dataTransfer: drop, bubbles: true, cancelable: true}));
        }""",
        [base64.b64encode(example.getvalue()).decode(), "space suit.jpg"],
    )
    until(page, "document.getElementById('message').textContent.includes('like')")
    assert names(page)[0] == "astronaut.jpg"
    assert page.text_content("#example-name") == "Example: space suit.jpg"
    assert page.is_visible("#example-img")
    # the file picker does the same, and words go with the example
    page.fill("#q", "a cup of coffee")
    page.click("#example-clear")
    coins = lib.env.root / "library" / "photos" / "coins.jpg"
    with page.expect_response(lambda r: r.request.method == "POST" and "/api/search" in r.url) as r:
        page.set_input_files("#file", str(coins))
    echo = r.value.json()["query"]  # what the server was sent, as it says
    assert echo == {"kind": "image", "file": "coins.jpg", "q": "a cup of coffee"} | {
        "mode": "hybrid",
        "limit": 12,
        "page": 1,
    }
    until(page, "document.getElementById('message').textContent.includes('coins')")
    # the example counts: its own file, found by the photo space alone, is on the page. (Not
    # first: spaces are fused by rank, so photos the words' list and the photo space both rank
    # near the top come before a file only one of them found.)
    assert "coins.jpg" in names(page)
    assert names(page)[0] == "coffee.jpg"  # the words count too
    assert "with “a cup of coffee”" in page.text_content("#message")


def test_an_answer_streams_in_and_a_citation_opens_the_video_there(page: Page, lib: Lib) -> None:
    question = "When does the garden party start?"
    body = json.dumps({"question": question}).encode()
    headers = {"Content-Type": "application/json"}
    said = events(lib.server.call("/api/ask", "POST", body, headers).body)
    cited = dict(said)["citations"]["citations"][0]
    assert cited["path"].endswith("garden tour.mp4") and 15 < cited["start"] < 22, cited
    page.fill("#question", question)
    page.press("#question", "Enter")
    page.wait_for_selector("#citations a")
    assert page.text_content("#answer") == REPLY
    # written as it came: one text node per streamed piece, not the whole answer at the end
    assert page.eval_on_selector("#answer", "a => a.childNodes.length") > 3
    link = page.locator("#citations a").first
    assert link.text_content().startswith("[1] garden tour.mp4 · 0:1")
    link.click()
    at = wait_played_from(page, "#viewer video")
    assert abs(at - cited["start"]) < 0.5, (at, cited["start"])


def test_filters_sort_and_more_results(page: Page, lib: Lib) -> None:
    page.click(".filters summary")
    page.select_option("#modality", "transcript")
    search(page, "the train to London")
    kinds = page.eval_on_selector_all(".hit", "cards => cards.map(c => c.dataset.modality)")
    assert kinds and set(kinds) == {"transcript"}
    assert "voice memo from Sam.ogg" in names(page)
    page.locator(".hit .open", has_text="voice memo from Sam.ogg").first.click()
    assert page.eval_on_selector("#viewer audio", "a => a.tagName") == "AUDIO"
    page.keyboard.press("Escape")
    page.select_option("#modality", "")
    with page.expect_response(lambda r: "sort=date" in r.url and r.status == 200):
        page.select_option("#sort", "date")  # sorting again runs the search again
    # paging: a second page is appended below the first
    search(page, "bread dough garden lease")
    assert len(names(page)) == 12 and page.is_visible("#more")
    first = page.eval_on_selector_all(".hit", "cards => cards.map(c => c.textContent)")
    page.click("#more")
    until(page, "document.querySelectorAll('.hit').length > 12")
    both = page.eval_on_selector_all(".hit", "cards => cards.map(c => c.textContent)")
    assert both[:12] == first and len(set(both)) == len(both)
    # a bad filter is one line from the API, shown as it is
    page.fill("#lat", "95")
    page.fill("#lon", "2")
    search_error = page.locator("#message.error")
    page.press("#q", "Enter")
    search_error.wait_for()
    assert search_error.text_content().startswith("near: latitude -90..90")


def test_a_phone_sized_screen_has_no_sideways_scroll(browser: Browser, lib: Lib) -> None:
    page = open_page(browser, lib.url, 375, 740)
    search(page, "a cat")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    box = page.locator(".hit").first.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375
    assert box["width"] > 300  # one column, full width
    page.locator(".hit .open").first.click()
    page.wait_for_selector("#viewer img")
    viewer = page.locator("#viewer").bounding_box()
    assert viewer is not None and viewer["x"] >= 0 and viewer["x"] + viewer["width"] <= 375
    assert page.errors == []  # type: ignore[attr-defined]
    page.context.close()


def test_with_a_key_the_page_asks_for_it_and_media_load(browser: Browser, lib: Lib) -> None:
    settings = Settings(**(lib.env.settings.model_dump() | {"api_key": KEY}))
    with Served(create_app(settings, lib.env.models)) as keyed:
        page = open_page(browser, f"http://127.0.0.1:{keyed.port}")
        page.wait_for_selector("#keybox:not([hidden])")
        page.fill("#key", "wrong")
        page.press("#key", "Enter")
        until(page, "document.querySelector('#keybox label').textContent.includes('refused')")
        page.fill("#key", KEY)
        page.press("#key", "Enter")
        until(page, "document.getElementById('library').textContent.includes('files')")
        assert page.is_hidden("#keybox")
        search(page, "a cat")
        assert names(page)[0] == "chelsea the cat.jpg"
        # thumbnails and the photo itself load: <img> sends the key as the mmrag_key cookie
        until(page, THUMBS_LOADED)
        page.locator(".hit .open").first.click()
        until(
            page, "(i => i && i.complete && i.naturalWidth)(document.querySelector('#viewer img'))"
        )
        assert page.evaluate("localStorage.getItem('mmrag_key')") == KEY
        assert page.errors == []  # type: ignore[attr-defined]
        page.context.close()


NOTE = "<b>mmrag_text</b> is being indexed<img src=x onerror=window.pwned=3>"


def test_the_page_escapes_what_the_api_says(page: Page, lib: Lib) -> None:
    """A file name, snippet or search note with markup in it is shown as text, never run."""
    hostile = '<img src=x onerror="window.pwned=1">.jpg'
    page.route(
        lambda url: "/api/search?" in url,
        lambda route: route.fulfill(
            status=200,
            content_type="application/json",
            body=json.dumps(
                {
                    "hits": [
                        {
                            "path": f"/lib/{hostile}",
                            "modality": "image",
                            "score": 0.5,
                            "start": 0,
                            "end": 0,
                            "page": None,
                            "snippet": "<b>bold</b><script>window.pwned=2</script>",
                            "media_id": "x",
                            "media_url": "/media/x",
                            "sources": [{"space": "<i>text</i>", "rank": 1}],
                            "thumbnail_url": "/thumbs/" + "0" * 32,  # none to be had: 404
                        }
                    ],
                    "took_ms": 1,
                    "notes": [NOTE],
                }
            ),
        ),
    )
    search(page, "anything")
    assert names(page) == [hostile]
    assert page.locator("#notes").is_visible()
    assert page.text_content("#notes li") == NOTE
    assert page.locator("#notes b, #notes img").count() == 0
    assert page.text_content(".hit .snippet") == "<b>bold</b><script>window.pwned=2</script>"
    assert page.locator(".hit b, .hit script, .hit i, .hit .snippet img").count() == 0
    assert page.evaluate("window.pwned") is None
    # a thumbnail that cannot be had leaves the kind's icon, not a broken picture
    until(page, "document.querySelector('.hit .thumb.empty .kind-icon') !== null")
    assert page.locator(".hit img").count() == 0
