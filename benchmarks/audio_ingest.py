"""Audio ingest against the bare models, on the same recordings, in the same run.

    python benchmarks/audio_ingest.py [--files 4] [--minutes 1.5] [--audio-model ...]
                                      [--speech-model tiny.en] [--device auto]

Builds recordings of espeak-ng sentences with 1-4 s pauses (benchmarks/speech_rtf.py), then:

- speech: bare faster-whisper (`WhisperModel.transcribe(path)`, which decodes the file itself,
  same options) on every file, against a whole `mmrag ingest` of the folder with transcripts
  only (scan, hash, detect, decode, VAD, transcribe, embed the transcript text, write Milvus
  and the catalog). Real-time factor (processing s / audio s) of both and their ratio.
- sound: the audio encoder alone on exactly the windows the pipeline embeds (decoded up front,
  silent ones dropped as the pipeline does), against a whole ingest with the `audio` space
  only. Windows per second of both and their ratio.

Models are loaded and warmed up before anything is timed and shared by both sides.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def build_library(dest: Path, files: int, minutes: float) -> list[Path]:
    """Distinct recordings (identical ones would be ingested once: content is hashed)."""
    from sample_makers import audio_samples
    from speech_rtf import generate

    make = audio_samples()
    dest.mkdir(parents=True)
    work = dest.parent / "gen"
    work.mkdir()
    (wav,) = generate(work, minutes)
    speech = make.read_wav_16k(wav)
    out = []
    for i in range(files):
        hiss = make.noise(len(speech) / 16000, dbfs=-65, seed=i)[: len(speech)]
        shift = int(16000 * 7.3 * i) % len(speech)  # each file starts at another sentence
        out.append(make.write_wav(dest / f"recording_{i:02d}.wav", np.roll(speech, shift) + hiss))
    shutil.rmtree(work)
    return out


def ingest(models, lib: Path):
    """A whole ingest of `lib` into the store and catalog that the models' settings name."""
    from mmrag.app import open_store

    catalog, store = open_store(models.settings)
    try:
        runner = models.runner(catalog, store)
        t0 = time.perf_counter()
        report = runner.run([str(lib)])
        seconds = time.perf_counter() - t0
    finally:
        store.close()
        catalog.close()
    assert not report.failed, report.failed
    return seconds, report


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=1.5, help="length of each recording")
    ap.add_argument("--audio-model", default="whisper-tiny-encoder")
    ap.add_argument("--speech-model", default="tiny.en")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--text-model", help="the model that embeds transcripts (default: configured)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from text_ingest import machine

    from mmrag.app import Models
    from mmrag.pipelines.audio.decode import is_silent, iter_windows, load_audio
    from mmrag.pipelines.audio.speech import SAMPLE_RATE
    from mmrag.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="mmrag-audiobench-"))
    try:
        files = build_library(work / "lib", args.files, args.minutes)
        audio_s = sum(len(load_audio(f, SAMPLE_RATE)) for f in files) / SAMPLE_RATE
        base = dict(
            device=args.device,
            read_workers=args.workers,
            thumbnails=work / "thumbs",
            image_model="",  # recordings only: no photo spaces
            clip_model="",
            **({"text_model": args.text_model} if args.text_model else {}),
        )
        # Two partial setups, timed apart: transcripts only, and the `audio` space only. The
        # second shares the first's (loaded) text model.
        speech_only = Models.build(
            Settings(
                audio_model="",
                speech_model=args.speech_model,
                milvus_uri=str(work / "s.db"),
                catalog=work / "s.sqlite",
                **base,
            )
        )
        text = speech_only.text
        audio_only = Models.build(
            Settings(
                audio_model=args.audio_model,
                speech_model="",
                milvus_uri=str(work / "a.db"),
                catalog=work / "a.sqlite",
                **base,
            ),
            text_encoder=text.encoder,
        )
        speech, sound = speech_only.speech, audio_only.spaces["audio"]
        assert speech is not None
        transcriber, encoder = speech.encoder, sound.encoder
        first = load_audio(files[0], SAMPLE_RATE)
        transcriber.transcribe(first[: 20 * SAMPLE_RATE])  # warm-ups
        text.encode(["warm up"])

        # speech: bare faster-whisper, then the pipeline
        t0 = time.perf_counter()
        words = 0
        for f in files:
            segments, _ = transcriber.model.transcribe(str(f), **transcriber.options)
            words += sum(len(s.text.split()) for s in segments)
        raw_s = time.perf_counter() - t0
        speech_s, speech_report = ingest(speech_only, work / "lib")

        # sound: the encoder alone on the pipeline's windows, then the pipeline
        windows = [
            w
            for f in files
            for _, _, w in iter_windows(f, encoder.sample_rate, encoder.window_s, encoder.hop_s)
            if not is_silent(w)
        ]
        batch = audio_only.settings.embed_batch_size
        encoder.encode(windows[:batch])  # warm-up
        t0 = time.perf_counter()
        for i in range(0, len(windows), batch):
            encoder.encode(windows[i : i + batch])
        model_s = time.perf_counter() - t0
        sound_s, sound_report = ingest(audio_only, work / "lib")
        # every window, and one vector per recording
        assert sound_report.segments == len(windows) + len(files), sound_report.segments
    finally:
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "files": len(files),
        "audio_s": round(audio_s, 1),
        "speech_model": args.speech_model,
        "speech_device": f"{transcriber.device}/{transcriber.compute_type}",
        "raw_faster_whisper_s": round(raw_s, 2),
        "raw_rtf": round(raw_s / audio_s, 4),
        "pipeline_transcripts_s": round(speech_s, 2),
        "pipeline_rtf": round(speech_s / audio_s, 4),
        "speech_ratio_raw_over_pipeline": round(raw_s / speech_s, 3),
        "transcript_segments": speech_report.segments,
        "raw_words": words,
        "audio_model": args.audio_model,
        "audio_device": encoder.device,
        "windows": len(windows),
        "model_only_windows_per_s": round(len(windows) / model_s, 1),
        "pipeline_windows_per_s": round(len(windows) / sound_s, 1),
        "sound_ratio_pipeline_over_model": round(model_s / sound_s, 3),
        "machine": machine(),
    }
    print(json.dumps(result, indent=2))
    print(
        f"\nspeech ({args.speech_model}): raw faster-whisper RTF {result['raw_rtf']}, whole "
        f"pipeline RTF {result['pipeline_rtf']}, throughput ratio "
        f"{result['speech_ratio_raw_over_pipeline']} ({audio_s:.0f} s of audio)\n"
        f"sound ({args.audio_model}): model only {result['model_only_windows_per_s']} "
        f"windows/s, pipeline {result['pipeline_windows_per_s']} windows/s, ratio "
        f"{result['sound_ratio_pipeline_over_model']}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
