"""Speech real-time factor: bare faster-whisper against mmrag's transcriber, same model, same run.

    python benchmarks/speech_rtf.py [FOLDER] [--model tiny.en] [--device auto] [--repeat 2]

Without FOLDER it speaks ~2.5 minutes of espeak-ng sentences with 1-4 s pauses into one wav.
RTF = processing seconds / audio seconds (lower is faster). Both sides share one loaded
WhisperModel and the same options (VAD filter, word timestamps, beam 5, no conditioning):
  raw:  WhisperModel.transcribe(path)  (faster-whisper decodes the file itself)
  ours: audio.decode.stream_audio(path) + speech_spans(samples) + transcriber.transcribe(samples)
The model is warmed up first; each side runs `repeat` times, alternating, and the best is kept.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from mmrag.pipelines.audio.decode import stream_audio
from mmrag.pipelines.audio.speech import (
    SAMPLE_RATE,
    WhisperTranscriber,
    load_transcriber,
    speech_spans,
)

AUDIO_EXT = {".wav", ".mp3", ".m4a", ".flac", ".ogg", ".opus", ".mp4", ".mkv", ".webm", ".aac"}
SENTENCES = [
    "The quarterly report shows that revenue grew by twelve percent.",
    "Please remember to water the tomatoes before the weekend.",
    "Our train leaves the central station at half past seven.",
    "The museum opens a new exhibition about ancient Egypt in March.",
    "She plays the violin in the city orchestra every Friday night.",
    "Heavy rain is expected along the coast tomorrow afternoon.",
    "The recipe needs two cups of flour, three eggs and a pinch of salt.",
    "Engineers replaced the old bridge with a lighter steel design.",
    "My grandfather built this wooden table more than fifty years ago.",
    "The library will be closed on Monday for the national holiday.",
    "A small robot vacuum cleaned the kitchen while we were away.",
    "The football match was postponed because of the thunderstorm.",
    "Astronomers discovered a new comet near the orbit of Jupiter.",
    "Fresh bread from the bakery on the corner sells out by nine.",
    "The conference keynote explained how batteries store energy.",
    "Children built a sandcastle with towers and a deep moat.",
]
VOICES = ["en-us", "en+f3", "en", "en+m3"]


def machine(transcriber: WhisperTranscriber) -> dict[str, object]:
    """The text benchmark's machine description, plus what the speech side runs on."""
    import ctranslate2
    import faster_whisper
    from text_ingest import machine as base_machine

    return base_machine() | {
        "ctranslate2": ctranslate2.__version__,
        "faster_whisper": faster_whisper.__version__,
        "cuda_devices": ctranslate2.get_cuda_device_count(),
        "device": f"{transcriber.device}/{transcriber.compute_type}",
    }


def generate(dest: Path, minutes: float) -> list[Path]:
    """One wav of espeak-ng sentences separated by 1-4 s pauses, about `minutes` long."""
    from sample_makers import audio_samples

    make = audio_samples()
    rng = np.random.default_rng(0)
    parts: list[np.ndarray] = [make.silence(1.0)]
    total, i = 1.0, 0
    while total < minutes * 60:
        text, voice = SENTENCES[i % len(SENTENCES)], VOICES[i % len(VOICES)]
        spoken = make.read_wav_16k(make.speak(text, dest / f"s{i}.wav", voice=voice))
        pause = make.silence(float(rng.uniform(1.0, 4.0)))
        parts += [spoken, pause]
        total += (spoken.size + pause.size) / SAMPLE_RATE
        i += 1
    return [make.write_wav(dest / "speech.wav", np.concatenate(parts))]


def decode_audio(path: Path) -> np.ndarray:
    """The whole file at 16 kHz through the project's PyAV decoder (30 s blocks, joined)."""
    return np.concatenate([np.zeros(0, np.float32), *stream_audio(path, SAMPLE_RATE)])


def run_raw(transcriber: WhisperTranscriber, path: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    segments, _ = transcriber.model.transcribe(str(path), **transcriber.options)
    text = " ".join(s.text.strip() for s in segments)
    return time.perf_counter() - t0, text


def run_ours(transcriber: WhisperTranscriber, path: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    samples = decode_audio(path)
    text = transcriber.transcribe(samples).text if speech_spans(samples) else ""
    return time.perf_counter() - t0, text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("folder", nargs="?", type=Path, help="audio files to use instead of espeak-ng")
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compute-type", default="auto")
    ap.add_argument("--minutes", type=float, default=2.5, help="generated speech length")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.folder:
            files = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in AUDIO_EXT)
        else:
            files = generate(Path(tmp), args.minutes)
        audio_s = sum(decode_audio(f).size for f in files) / SAMPLE_RATE

        transcriber = load_transcriber(args.model, args.device, args.compute_type)
        assert isinstance(transcriber, WhisperTranscriber)
        transcriber.transcribe(decode_audio(files[0])[: 10 * SAMPLE_RATE])  # warm-up

        best = {"raw": float("inf"), "ours": float("inf")}
        texts: dict[str, list[str]] = {}
        for _ in range(args.repeat):
            for side, fn in (("raw", run_raw), ("ours", run_ours)):
                seconds, texts[side] = 0.0, []
                for f in files:
                    took, text = fn(transcriber, f)
                    seconds += took
                    texts[side].append(text)
                best[side] = min(best[side], seconds)

    print("machine:", machine(transcriber))
    print(f"model: {args.model} ({transcriber.resolved.source}); files: {len(files)}; "
          f"audio: {audio_s:.1f} s; repeat: {args.repeat} (best kept)")  # fmt: skip
    for side in ("raw", "ours"):
        print(f"{side:>4}: {best[side]:7.2f} s  RTF {best[side] / audio_s:.4f}")
    print(f"ours / raw: {best['ours'] / best['raw']:.3f}")
    same = texts["raw"] == texts["ours"]
    print(f"same text from both: {same}; words: {sum(len(t.split()) for t in texts['ours'])}")
    if not same:
        print("raw :", texts["raw"][0][:300], "\nours:", texts["ours"][0][:300])


if __name__ == "__main__":
    main()
