"""Catalog filters in SQL (issue 17) give exactly what the Python filter of every path row gave.

`python_filter` is the filter search/query.py ran on every path row before the catalog answered
in SQL, kept here as the reference. The catalog is varied: odd names (glob characters, case,
unicode, a newline), relative and absolute paths, a content under two paths, modification times
a nanosecond around a bound, taken dates with and without UTC offsets, cameras whose case folds
oddly, places by the antimeridian and a pole.
"""

from __future__ import annotations

import fnmatch
import itertools
import random
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from mmrag.search.query import Filters, Near
from mmrag.store.catalog import (
    _MIGRATIONS,
    SCHEMA_VERSION,
    Catalog,
    MediaFacts,
    PathRecord,
    _statements,
    glob_sql,
)

NAMES = [
    "a.jpg", "A.JPG", "IMG_0001.jpg", "IMG_001.jpeg", "notes.txt", "notes1.txt", "x-ray.txt",
    "[draft] plan.pdf", "what?.md", "star*.txt", "bang!.txt", "caret^.txt", "br]ack.txt",
    "Ünïcode.jpg", "e\u0301te.jpg", "été.jpg", "日本語.txt", "tab\tname.txt", "line\nbreak.txt",
    "archive.tar.gz", "back\\slash.txt", "no_ext", ".hidden.jpg", "-dash.txt", "sp ace.png",
]  # fmt: skip
FOLDERS = ["photos", "Photos/2019", "docs/sub", "ümlaut dir", "[weird]"]
BASE = datetime(2020, 1, 1, tzinfo=UTC)
BASE_NS = int(BASE.timestamp()) * 10**9
MTIME_OFFSETS_NS = [-(10**9), -1000, -1, 0, 1, 1000, 86_400 * 10**9, -86_400 * 10**9]
TAKEN = [
    None, "", "2021-07-14T15:30:45+10:00", "2021-07-14T15:30:45", "2021-07-14 15:30:45",
    "2021-07-14T15:30:45.500000", "2021-07-14", "2021-07-14T23:59:59Z", "20210714T153045",
    "2021-07-15T00:00:00-05:00", "2021-07-13T23:59:59.999999",
]  # fmt: skip
CAMERAS = [None, "", "Canon EOS R5", "NIKON D850", "Straße Cam", "\u212aodak", "canon eos"]
PLACES = [
    None, (-33.8568, 151.2153), (-33.87, 151.21), (0.0, 179.99), (0.0, -179.99),
    (89.99, 0.0), (89.9, 170.0), (-89.9, 100.0), (48.8566, 2.3522), (0.0, 180.0),
]  # fmt: skip


def python_filter(rec: PathRecord, facts: MediaFacts, f: Filters) -> bool:
    """The filter as search/query.py ran it on every path row before SQL (_accept, _taken)."""
    if f.taken_since or f.taken_until:
        if not facts.taken_at:
            return False
        when = datetime.fromisoformat(facts.taken_at).replace(tzinfo=None)
        if f.taken_since and when < f.taken_since.replace(tzinfo=None):
            return False
        if f.taken_until and when >= f.taken_until.replace(tzinfo=None):
            return False
    if f.camera and f.camera.casefold() not in (facts.camera or "").casefold():
        return False
    if f.near and (
        facts.lat is None or facts.lon is None or not f.near.holds(facts.lat, facts.lon)
    ):
        return False
    if f.path_glob and not (
        fnmatch.fnmatch(rec.display, f.path_glob)
        or fnmatch.fnmatch(rec.path, f.path_glob)
        or fnmatch.fnmatch(rec.display.rsplit("/", 1)[-1], f.path_glob)
    ):
        return False
    mtime = rec.mtime_ns / 1e9
    if f.since and mtime < f.since.timestamp():
        return False
    return not (f.until and mtime >= f.until.timestamp())


def sql_filter(catalog: Catalog, f: Filters) -> set[str]:
    """What the searcher asks (Searcher._scope): SQL, then the distance on what is left."""
    near = f.near
    accept = (lambda _rec, facts: near.holds(facts.lat, facts.lon)) if near else None
    return catalog.media_matching(accept, f.where())


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    c = Catalog(tmp_path_factory.mktemp("cat") / "catalog.db")
    rng = random.Random(17)
    for n, (folder, name) in enumerate(itertools.product(FOLDERS, NAMES)):
        media = f"m{n:04d}"
        place = PLACES[n % len(PLACES)]
        facts = MediaFacts(
            TAKEN[n % len(TAKEN)],
            CAMERAS[n % len(CAMERAS)],
            place[0] if place else None,
            place[1] if place else None,
        )
        c.begin_media(media, "image", "jpeg", 1, facts)
        mtime = BASE_NS + MTIME_OFFSETS_NS[n % len(MTIME_OFFSETS_NS)]
        # relative as given for some, absolute for others; one in five also under a second name
        display = f"{folder}/{name}" if n % 2 else f"/lib/{folder}/{name}"
        c.link_path(f"/lib/{folder}/{name}", display, "/lib", media, 1, mtime)
        if rng.random() < 0.2:
            c.link_path(f"/other/{name}.copy", f"other/{name}.copy", "/other", media, 1, mtime)
    c.link_path("/lib/plain", "plain", "/lib", "m0000", 1, BASE_NS)  # a display without "/"
    c.touch_path("/lib/photos/a.jpg", "renamed/IMG_0009.jpg", "/lib")  # named again later
    c.fail_path("/lib/bad.jpg", "bad.jpg", "/lib", 1, BASE_NS, "unreadable")  # no content
    yield c
    c.close()


GLOBS = [
    "*.jpg", "*.JPG", "*.jp*g", "photos/*", "/lib/photos/*", "*/sub/*", "IMG_00?.jpg",
    "IMG_000?.jpg", "*[0-9].txt", "*[!a-z].txt", "[[]draft]*", "*[[]*", "*[*]*", "*[?]*",
    "*?*", "*[]]*", "*[!]]*", "*[z-a]*", "*[!]", "[", "*[", "*]", "Ü*", "*é*", "*\u0301*",
    "e?te.jpg", "*\\*", "**", "*/*", "*[a-c-e]*", "*[^x]*", "*[!x-]*", "*[-]*", "*!*",
    "*\n*", "*\t*", "日本*", "*.tar.gz", "plain", "*.copy", "other/*", "/lib/*", "*[]-]*",
    "*[!-a]*", "*[é-ü]*", "A*", "a*", "*ray*", "???*", "no_ext", "*/no_ext", "[!.]*",
]  # fmt: skip


@pytest.mark.parametrize("glob", GLOBS)
def test_path_glob_in_sql_is_the_python_glob(catalog: Catalog, glob: str) -> None:
    f = Filters(path_glob=glob)
    want = catalog.media_matching(lambda r, m: python_filter(r, m, f))
    assert sql_filter(catalog, f) == want
    # what a broad filter's search asks: which of its ranked rows' media match, or a few
    among = {f"m{n:04d}" for n in range(0, 125, 3)} | {"unknown"}
    assert catalog.media_matching(None, f.where(), among=among) == want & among
    few = catalog.media_matching(None, f.where(), limit=3)
    assert few <= want and len(few) == min(3, len(want))


def test_random_globs_agree(catalog: Catalog) -> None:
    """Patterns drawn from the characters globs treat specially, and ones names hold."""
    rng = random.Random(3)
    alphabet = [*"*?[]!-^/.aAtxé\\", "jpg", "txt", "photos"]
    for _ in range(300):
        glob = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7)))
        f = Filters(path_glob=glob)
        want = catalog.media_matching(lambda r, m, f=f: python_filter(r, m, f))
        assert sql_filter(catalog, f) == want, glob


def _dates() -> list[Filters]:
    plus2 = timezone(timedelta(hours=2))
    minus5 = timezone(timedelta(hours=-5))
    naive = BASE.replace(tzinfo=None)  # the local time zone's
    bounds = [BASE, BASE.astimezone(plus2), BASE + timedelta(microseconds=1), naive]
    out = [Filters(since=b) for b in bounds] + [Filters(until=b) for b in bounds]
    out += [Filters(since=BASE - timedelta(days=1), until=BASE + timedelta(seconds=1))]
    out += [Filters(since=datetime(2999, 1, 1)), Filters(until=datetime(2999, 1, 1))]  # > int64 ns
    taken = [
        datetime(2021, 7, 14, 15, 30, 45),
        datetime(2021, 7, 14, 15, 30, 45, tzinfo=plus2),  # the offset is dropped
        datetime(2021, 7, 14, 15, 30, 45, 500000),
        datetime(2021, 7, 14),
        datetime(2021, 7, 15, tzinfo=minus5),
    ]
    out += [Filters(taken_since=t) for t in taken] + [Filters(taken_until=t) for t in taken]
    out += [Filters(taken_since=datetime(2021, 7, 14), taken_until=datetime(2021, 7, 15))]
    return out


def _facts() -> list[Filters]:
    cameras = ["canon", "EOS R", "STRASSE", "kodak", "nikon d850", "x", "ß"]
    out = [Filters(camera=c) for c in cameras]
    places = [
        Near(-33.85, 151.2, 5), Near(-33.85, 151.2, 0.5), Near(-33.8568, 151.2153, 0),
        Near(0.0, 180.0, 5), Near(0.0, -179.995, 10), Near(90.0, 0.0, 50), Near(89.95, 0, 20),
        Near(-90.0, 0.0, 20), Near(10.0, 10.0, 20000), Near(48.85, 2.35, 2000), Near(0, 0, -1),
    ]  # fmt: skip
    out += [Filters(near=p) for p in places]
    out += [
        Filters(path_glob="*.jpg", camera="canon", since=BASE),
        Filters(
            path_glob="photos/*", near=Near(-33.85, 151.2, 5), taken_since=datetime(2021, 1, 1)
        ),
    ]
    return out


@pytest.mark.parametrize("f", _dates() + _facts(), ids=repr)
def test_dates_and_facts_in_sql_are_the_python_filter(catalog: Catalog, f: Filters) -> None:
    want = catalog.media_matching(lambda r, m: python_filter(r, m, f))
    assert sql_filter(catalog, f) == want


def test_an_odd_taken_date_is_left_out_not_an_error(tmp_path: Path) -> None:
    """The Python filter raised on a date a camera wrote oddly; SQL leaves that file out."""
    c = Catalog(tmp_path / "c.db")
    c.begin_media("odd", "image", "jpeg", 1, MediaFacts("2021:07:14 15:30:45"))
    c.begin_media("ok", "image", "jpeg", 1, MediaFacts("2021-07-14T15:30:45"))
    c.link_path("/a/odd.jpg", "odd.jpg", "/a", "odd", 1, 0)
    c.link_path("/a/ok.jpg", "ok.jpg", "/a", "ok", 1, 0)
    assert sql_filter(c, Filters(taken_since=datetime(2021, 1, 1))) == {"ok"}
    c.close()


def test_glob_sql_marks_sets_inexact() -> None:
    assert glob_sql("*.jpg") == ("*.jpg", True)
    assert glob_sql("a[b]c") == ("a?c", False)
    assert glob_sql("[") == ("[[]", True)  # an unclosed [ is a literal, as fnmatch reads it
    assert glob_sql("x]?") == ("x]?", True)


def test_migration_names_every_path_and_keeps_names_current(tmp_path: Path) -> None:
    """A v5 catalog opened by this mmrag gains each path's name (what follows its last "/"),
    its folders (v7) and the filter indexes; names and folders follow every later write of a
    path."""
    db = tmp_path / "c.db"
    raw = sqlite3.connect(db)
    for version in range(1, 6):
        for statement in _statements(_MIGRATIONS[version]):
            raw.execute(statement)
    raw.execute(
        "INSERT INTO media(id, modality, format, size, status, updated_at) "
        "VALUES ('m', 'image', 'jpeg', 1, 'done', 0)"
    )
    raw.executemany(
        "INSERT INTO paths(path, display, root, media_id, size, mtime_ns, seen_at) "
        "VALUES (?, ?, '/', 'm', 1, 0, 0)",
        [("/a/é b.jpg", "a/é b.jpg"), ("/plain", "plain"), ("/d/", "d/")],
    )
    raw.execute("PRAGMA user_version = 5")
    raw.commit()
    raw.close()
    c = Catalog(db)
    assert c.version == SCHEMA_VERSION == 7

    def names() -> dict[str, str]:
        return {r["path"]: r["name"] for r in c._all("SELECT path, name FROM paths")}

    assert names() == {"/a/é b.jpg": "é b.jpg", "/plain": "plain", "/d/": ""}
    c.touch_path("/plain", "x/y/renamed.jpg", "/")
    c.fail_unreadable("/gone", "q/gone.lnk", "/", "broken link")
    c.link_path("/a/é b.jpg", "z/日本.jpg", "/", "m", 1, 0)
    assert names() == {
        "/a/é b.jpg": "日本.jpg",
        "/plain": "renamed.jpg",
        "/d/": "",
        "/gone": "gone.lnk",
    }

    def plan(f: Filters) -> str:
        clauses, args = f.where().sql()
        sql = "SELECT p.media_id FROM paths p WHERE " + " AND ".join(clauses)
        return " ".join(r["detail"] for r in c._all("EXPLAIN QUERY PLAN " + sql, tuple(args)))

    assert "COVERING INDEX paths_mtime" in plan(Filters(since=BASE, until=BASE + timedelta(1)))
    folders = {r["folder"] for r in c._all("SELECT folder FROM folders")}
    assert folders == {"/a/", "a/", "/", "", "/d/", "d/", "x/y/", "q/", "z/"}
    fixed_start = plan(Filters(path_glob="IMG_*"))
    assert all(i in fixed_start for i in ("paths_display", "paths_name", "MULTI-INDEX OR"))
    c.close()


def _steps(c: Catalog, f: Filters) -> tuple[set[str], int]:
    """What the catalog finds for `f`, and how many SQLite VM steps (of 100) it took."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    c._db.set_progress_handler(count, 100)
    try:
        return sql_filter(c, f), steps[0]
    finally:
        c._db.set_progress_handler(None, 100)


def test_leading_wildcard_glob_reads_only_the_folders_it_can_match(tmp_path: Path) -> None:
    """`*/f07/*` reads the paths of the folders it can match, through the paths' indexes,
    not every path row: it gives what the Python filter gives, for a small share of the work
    of a glob that must read every row (`*/f07*` could match a file in any folder)."""
    c = Catalog(tmp_path / "c.db")
    for n in range(2000):
        folder, media = f"f{n % 40:02d}" + ("/deep" if n % 7 == 0 else ""), f"m{n:04d}"
        c.begin_media(media, "image", "jpeg", 1, MediaFacts())
        display = f"{folder}/n{n}.jpg" if n % 2 else f"/lib/{folder}/n{n}.jpg"
        c.link_path(f"/lib/{folder}/n{n}.jpg", display, "/lib", media, 1, BASE_NS)
    for glob in ("*/f07/*", "*f07/*", "?lib/f0[7]/*", "*/deep/*", "*07/deep/n*", "*/f07*"):
        f = Filters(path_glob=glob)
        assert sql_filter(c, f) == c.media_matching(lambda r, m, f=f: python_filter(r, m, f))
    narrow, few = _steps(c, Filters(path_glob="*/f07/*"))
    every, many = _steps(c, Filters(path_glob="*/f07*"))
    assert narrow == every and len(narrow) == 50
    assert few * 5 < many
    c.close()


def test_share_of_paths_a_filter_keeps(tmp_path: Path) -> None:
    """A filter's share of the paths, from a sample (every path where there are few)."""
    c = Catalog(tmp_path / "c.db")
    assert c.share_matching(None, Filters(path_glob="*").where()) is None  # no paths
    for n in range(300):
        c.begin_media(f"m{n:03d}", "image", "jpeg", 1, MediaFacts())
        mtime = BASE_NS + (86_400 * 10**9 if n % 10 == 0 else 0)
        c.link_path(f"/lib/n{n}.jpg", f"/lib/n{n}.jpg", "/lib", f"m{n:03d}", 1, mtime)
    later = Filters(since=BASE + timedelta(hours=1))
    assert c.share_matching(None, later.where()) == 0.1
    assert c.share_matching(None, Filters(path_glob="*").where()) == 1.0
    odd = c.share_matching(lambda rec, _facts: rec.path.endswith(("1.jpg", "3.jpg")), later.where())
    assert odd == 0.0  # `accept` narrows too: n % 10 == 0 ends in 0
    glance = c.share_matching(None, later.where(), sample=100)
    assert glance is not None and 0.0 < glance < 0.25
    c.close()
