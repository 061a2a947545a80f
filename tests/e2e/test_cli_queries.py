"""The real `mmrag search` refusing what it cannot do with one line (exit code 2, the option or
file and the reason, no traceback), and `mmrag ingest --json` for scripts: in-process CLI, real
Milvus Lite store and catalog, the offline models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import Result

from mmrag.kinds import Modality
from tests.conftest import Env, write
from tests.video_samples import photo

WIDE = {"COLUMNS": "1000"}  # so rich never wraps a message: each is exactly one line
MODALITIES = ", ".join(Modality)
ROUTER = "Hold the router's reset button for ten seconds to restore the factory settings."
BREAD = "Feed the sourdough starter every morning with rye flour and lukewarm water."
PLANTS = "Ferns want moist soil, while cacti should dry out between waterings."


def refused(r: Result, message: str) -> None:
    """Exit code 2, nothing on stdout, exactly `error: <message>` on stderr, no traceback."""
    assert r.exit_code == 2, r.output
    assert isinstance(r.exception, SystemExit), r.exception  # not an exception escaping
    assert r.stdout == ""
    assert r.stderr == f"error: {message}\n"


def search(env: Env, *args: str) -> Result:
    return env.cli_with(WIDE, "search", *args)


def queries_file(env: Env, *lines: str, prefix: bytes = b"") -> Path:
    path = env.root / "queries.jsonl"
    path.write_bytes(prefix + "\n".join(lines).encode() + b"\n")
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--modality", "spaceship"],
            f"--modality must be one of {MODALITIES} (got 'spaceship')",
        ),
        (["--mode", "nonsense"], "--mode must be one of hybrid, dense, bm25 (got 'nonsense')"),
        (["--fusion", "magic"], "--fusion must be one of weighted, minmax, rrf (got 'magic')"),
        (["--limit", "0"], "--limit must be from 1 to 1000, got 0"),
        (["--limit", "5000"], "--limit must be from 1 to 1000, got 5000"),
        (["--near", "0,0,inf"], "--near takes finite numbers, got '0,0,inf'"),
        (["--near", "nan,2"], "--near takes finite numbers, got 'nan,2'"),
        (["--near", "91,2"], "--near: latitude must be from -90 to 90, got '91,2'"),
        (["--near", "48,2,0"], "--near: KM must be above 0, got '48,2,0'"),
        (["--since", ""], "--since expects a date like 2024-05-31 or 2024-05-31T14:00, got ''"),
        (
            ["--since", "2024-06-01", "--until", "2024-05-01"],
            "--since 2024-06-01T00:00:00 is not before --until 2024-05-01T00:00:00: "
            "nothing can match",
        ),
        (
            ["--taken-since", "2024-06-01T10:00+02:00", "--taken-until", "2024-06-01T10:00"],
            "--taken-since 2024-06-01T10:00:00+02:00 is not before --taken-until "
            "2024-06-01T10:00:00: nothing can match",
        ),
        (["--camera", ""], "--camera is empty: give some text, or leave the option out"),
        (["--path", " "], "--path is empty: give some text, or leave the option out"),
    ],
)
def test_a_bad_search_option_is_refused_with_one_line(
    env: Env, args: list[str], message: str
) -> None:
    refused(search(env, "router", *args), message)


def test_an_empty_query_says_so(env: Env) -> None:
    refused(search(env, "  "), "QUERY is empty")


@pytest.mark.parametrize("flag", ["--image", "--audio", "--video"])
def test_an_example_file_is_named_once_and_a_folder_is_called_a_folder(env: Env, flag: str) -> None:
    missing = env.root / "nowhere.jpg"
    refused(search(env, flag, str(missing)), f"{flag} {missing}: no such file")
    odd = env.root / "[draft] trip [/b].jpg"  # brackets in a path are not markup: shown as named
    refused(search(env, flag, str(odd)), f"{flag} {odd}: no such file")
    folder = env.root / "holiday"
    folder.mkdir()
    refused(search(env, flag, str(folder)), f"{flag} {folder}: is a folder, not a file")


def test_a_decoding_error_names_the_file_once(env: Env) -> None:
    """The video decoder's message starts with the path, the picture decoder's does not: each
    names it once."""
    env.with_images()
    photo("rocket").save(write(env.root / "lib" / "rocket.png", b""))
    assert env.ingest(env.root / "lib").new == 1
    empty = write(env.root / "empty.mp4", b"")
    refused(search(env, "--video", str(empty)), f"{empty}: empty file (0 bytes)")
    empty = write(env.root / "empty.jpg", b"")
    refused(search(env, "--image", str(empty)), f"{empty}: empty file (0 bytes)")


def test_a_queries_line_with_two_examples_is_refused_with_its_line_number(env: Env) -> None:
    examples = '"image", "audio", "video"'
    qfile = queries_file(
        env,
        '{"id": 1, "text": "router"}',
        '{"id": 2, "text": "router", "image": "cat.jpg", "video": "v.mp4"}',
    )
    refused(
        search(env, "--queries", str(qfile)),
        f'{qfile}:2: give one example ({examples}), not "image" and "video"; "text" may go with it',
    )
    qfile = queries_file(env, '{"id": 1, "audio": "a.wav", "video": "v.mp4", "image": "i.jpg"}')
    refused(
        search(env, "--queries", str(qfile)),
        f'{qfile}:1: give one example ({examples}), not "image", "audio" and "video"; '
        '"text" may go with it',
    )
    qfile = queries_file(env, '{"id": 1, "image": "i.jpg", "text": 7}')
    refused(search(env, "--queries", str(qfile)), f'{qfile}:1: "text" must be a string')


def test_a_queries_file_may_start_with_a_byte_order_mark(env: Env) -> None:
    write(env.root / "lib" / "router.txt", ROUTER)
    write(env.root / "lib" / "bread.md", BREAD)
    assert env.cli("ingest", str(env.root / "lib"), "--quiet").exit_code == 0
    qfile = queries_file(env, '{"id": "q1", "text": "factory reset"}', prefix=b"\xef\xbb\xbf")
    r = search(env, "--queries", str(qfile), "--limit", "1")
    assert r.exit_code == 0, r.output
    [line] = r.stdout.splitlines()
    result = json.loads(line)
    assert result["id"] == "q1"
    assert result["hits"][0]["path"] == str(env.root / "lib" / "router.txt")


def test_an_unreadable_queries_file_is_refused_with_one_line(env: Env) -> None:
    qfile = queries_file(env, prefix=b'{"id": 1, "text": "caf\xe9"}')
    refused(
        search(env, "--queries", str(qfile)), f"{qfile}: not UTF-8 text (byte 22 cannot be decoded)"
    )
    refused(
        search(env, "--queries", str(env.root)), f"--queries {env.root}: is a folder, not a file"
    )


def test_a_query_file_error_in_a_batch_names_the_file_once(env: Env) -> None:
    missing = env.root / "missing.jpg"
    folder = env.root / "holiday"
    folder.mkdir()
    qfile = queries_file(
        env,
        json.dumps({"id": 1, "image": str(missing)}),
        json.dumps({"id": 2, "audio": str(folder)}),
    )
    r = search(env, "--queries", str(qfile))
    assert r.exit_code == 0, r.output
    assert [json.loads(line) for line in r.stdout.splitlines()] == [
        {"id": 1, "error": f"{missing}: no such file", "hits": []},
        {"id": 2, "error": f"{folder}: is a folder, not a file", "hits": []},
    ]


SUMMARY_KEYS = {
    "scanned",
    "new",
    "changed",
    "reused",
    "unchanged",
    "filled",
    "models",
    "failed",
    "failed_before",
    "skipped",
    "pruned",
    "removed_media",
    "segments",
    "seconds",
    "warnings",
}
NO_PHOTOS = {"MMRAG_IMAGE_MODEL": "", "MMRAG_CLIP_MODEL": ""}


def ingest_json(env: Env, *args: str) -> dict:
    r = env.cli_with(NO_PHOTOS, "ingest", *args, "--json")
    assert r.exit_code == 0, r.output
    assert "ingest summary" not in r.output and "segments/s" not in r.output  # no table, no bar
    [line] = r.stdout.splitlines()  # one object, nothing else on stdout
    data = json.loads(line)
    assert set(data) == SUMMARY_KEYS
    assert isinstance(data["seconds"], float)
    assert data["warnings"] == []
    return data


def test_ingest_json_is_one_summary_object_with_every_failure_and_skip(env: Env) -> None:
    lib = env.root / "lib"
    write(lib / "router.txt", ROUTER)
    write(lib / "kitchen" / "bread.md", BREAD)
    write(lib / "plants.md", PLANTS)
    write(lib / "empty.txt", "")
    photo("rocket").save(lib / "rocket.png")

    first = ingest_json(env, str(lib))
    assert {k: first[k] for k in ("scanned", "new", "changed", "reused", "unchanged")} == {
        "scanned": 5,
        "new": 3,
        "changed": 0,
        "reused": 0,
        "unchanged": 0,
    }
    assert first["failed"] == [{"path": str(lib / "empty.txt"), "reason": "empty file (0 bytes)"}]
    assert first["skipped"] == {"image": {"files": 1, "reason": "no image pipeline yet"}}
    assert first["segments"] == env.catalog.counts()["segments"] >= 3
    assert (first["failed_before"], first["pruned"], first["removed_media"]) == (0, 0, 0)

    write(lib / "plants.md", PLANTS + " Terracotta pots dry faster than glazed ones.")
    shutil.copy(lib / "router.txt", lib / "router-copy.txt")
    (lib / "kitchen" / "bread.md").unlink()
    second = ingest_json(env, str(lib), "--prune")
    assert {k: second[k] for k in SUMMARY_KEYS - {"seconds", "skipped", "warnings"}} == {
        "scanned": 5,
        "new": 0,
        "changed": 1,
        "reused": 1,
        "unchanged": 1,
        "filled": 0,
        "models": [],
        "failed": [],
        "failed_before": 1,
        "pruned": 1,
        "removed_media": 1,
        "segments": second["segments"],
    }
    assert second["segments"] >= 1
