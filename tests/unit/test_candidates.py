"""The candidates table (pipelines/candidates.py) names each offline pack as a pip requirement
for the user to copy; the loaders hold the packs they check. The two must say the same, and
every space can be located."""

from __future__ import annotations

from mmrag.pipelines.audio.speech import SPEECH_PACKS
from mmrag.pipelines.candidates import CANDIDATES, locate
from mmrag.pipelines.image.encoders import IMAGE_PACKS
from mmrag.pipelines.model_resolver import OFFLINE_PACKS
from mmrag.pipelines.text.e5_pack import TEXT_PACKS
from mmrag.registry import SPACES


def _loader_packs() -> dict[tuple[str, str], str]:
    """(space, model) -> the requirement of the pack its loader checks."""
    packs = {("text", m): p.requirement for m, p in {**OFFLINE_PACKS, **TEXT_PACKS}.items()}
    packs |= {("image", m): p.requirements for m, p in IMAGE_PACKS.items()}
    packs |= {("speech", m): p.requirement for m, p in SPEECH_PACKS.items()}
    packs[("audio", "whisper-tiny-encoder")] = SPEECH_PACKS["tiny.en"].requirement
    return packs


def test_the_table_names_the_packs_the_loaders_check() -> None:
    packs = _loader_packs()
    for c in CANDIDATES:
        assert c.pack == packs.get((c.space, c.model), ""), c
    listed = {(c.space, c.model) for c in CANDIDATES}
    # every pack a loader knows is offered (aliases such as Systran/... aside)
    assert {k for k in packs if "/" not in k[1] or k[0] == "text"} <= listed


def test_every_space_has_a_locator_that_says_why_in_one_line() -> None:
    for name, spec in SPACES.items():
        assert spec.locate is not None, name
    here, why = locate(SPACES["audio"].locate, "no-such-audio-model")
    assert not here and "no-such-audio-model" in why and "\n" not in why
    assert locate(None, "x") == (False, "no locator for this space")
