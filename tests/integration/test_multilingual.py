"""Search across languages offline (the `multilingual` profile's packs, real weights): a Spanish
question finds the English passage that answers it, and Spanish speech is transcribed in Spanish
by Whisper base and found by a Spanish query."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmrag.pipelines.text.e5_pack import E5PackEncoder
from mmrag.settings import PROFILES
from tests.audio_samples import speak
from tests.conftest import build_env, write
from tests.text_samples import TOPICS

QUESTIONS = {  # Spanish question -> the English sample that answers it
    "¿Cuánto tiempo hay que mantener pulsado el botón para volver a los ajustes de fábrica?": (
        "router.txt"
    ),
    "¿A qué temperatura se debe preparar el té verde?": "tea.txt",
    "¿A qué hora sale el tren nocturno hacia Viena?": "train.txt",
    "¿Con qué se alimenta la masa madre cada mañana?": "bread.md",
}
SPOKEN = "La biblioteca municipal cierra temprano los domingos por la tarde."


@pytest.fixture(scope="module")
def e5() -> E5PackEncoder:
    encoder = E5PackEncoder(PROFILES["multilingual"]["text_model"])
    encoder.model  # noqa: B018
    return encoder


def test_a_spanish_question_finds_the_english_passage_first(
    tmp_path: Path, e5: E5PackEncoder
) -> None:
    for name, text in TOPICS.items():
        write(tmp_path / "docs" / name, text)
    env = build_env(
        tmp_path,
        e5,  # type: ignore[arg-type]
        text_model="multilingual-e5-small",
        hybrid_fusion="minmax",
        dense_weight=0.7,
    )
    try:
        report = env.ingest(tmp_path / "docs")
        assert report.failed == []
        assert env.collection.endswith("multilingual_e5_small")
        searcher = env.searcher()
        for question, answer in QUESTIONS.items():
            # Hybrid too: BM25 matches words, not meanings, so across languages it matches
            # little but stop words ("a" ranked bike.txt first for the router question under
            # Milvus's weighted fusion); with each leg min-max scaled, the meaning decides.
            for mode in ("dense", "hybrid"):
                hits = searcher.search(question, mode, 3)
                assert Path(hits[0].path).name == answer, (mode, question, hits[0].path)
    finally:
        env.close()


def test_spanish_speech_is_transcribed_in_spanish_and_found(
    tmp_path: Path, e5: E5PackEncoder
) -> None:
    speak(SPOKEN, tmp_path / "memos" / "nota.wav", voice="es", speed=140)
    write(tmp_path / "memos" / "router.txt", TOPICS["router.txt"])
    env = build_env(tmp_path, e5, text_model="multilingual-e5-small")  # type: ignore[arg-type]
    try:
        env.with_audio(audio_model="", speech_model=PROFILES["multilingual"]["speech_model"])
        assert env.ingest(tmp_path / "memos").failed == []
        hits = env.searcher().search("¿Cuándo cierra la biblioteca?", "hybrid", 3)
        assert Path(hits[0].path).name == "nota.wav"
        said = set(hits[0].snippet.lower().replace(".", " ").replace(",", " ").split())
        assert {"la", "biblioteca", "municipal", "los"} <= said, said  # espeak's Spanish
    finally:
        env.close()
