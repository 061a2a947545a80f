"""Video ingest: seconds of video per second, and how much of it is decoding versus models.

    python benchmarks/video_ingest.py [--videos 3] [--seconds 60] [--size 640x360]

Builds videos of scikit-image photos, a new photo every 2-7 s (so there are shots to find),
H.264 at 25 fps with espeak-ng speech and pauses muxed in as AAC, then ingests them through the
real runner at default settings with the offline models (EfficientNet-Lite0 for keyframes,
Whisper tiny.en's encoder for sound windows, Whisper tiny.en for speech, MiniLM for text).
In the same run, on the same files, it times the parts alone:

- decoding: shot detection (PySceneDetect) and keyframe sampling (PyAV), the two passes over
  the picture the pipeline makes, plus decoding the sound track at both models' rates;
- models: the image model on the keyframes, the audio encoder on the sound windows, Whisper on
  the sound track, MiniLM on the transcript and label texts.

Prints video seconds per wall second for the pipeline, and each part's share of it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

NAMES = ["astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "hubble_deep_field"]


def build_library(dest: Path, videos: int, seconds: float, size: tuple[int, int]) -> list[Path]:
    import numpy as np
    from sample_makers import audio_samples, video_samples
    from speech_rtf import generate

    make = video_samples()
    dest.mkdir(parents=True)
    images = [make.photo(n) for n in NAMES]
    speech = audio_samples().read_wav_16k(generate(dest.parent / "tts", seconds / 60)[0])
    rng = np.random.default_rng(0)
    out = []
    for v in range(videos):
        shown, t = [], 0.0
        while t < seconds:  # a new photo every 2-7 s, in a different order per video
            hold = float(rng.uniform(2, 7))
            shown.append((images[int(rng.integers(len(images)))], hold))
            t += hold
        silent = dest.parent / f"silent{v}.mp4"
        _slideshow(silent, shown, size, make.photo_video)
        track = np.roll(speech, int(16000 * 11.1 * v))[: int(seconds * 16000)]
        out.append(make.mux_audio(silent, track, 16000, dest / f"video_{v:02d}.mp4"))
        silent.unlink()
    return out


def _slideshow(path: Path, shown: list, size: tuple[int, int], photo_video) -> None:
    """One video from (image, seconds) pairs: each pair rendered as frames at 25 fps."""
    from sample_makers import video_samples

    letterbox = video_samples().letterbox
    frames = []
    for image, hold in shown:
        frames += [letterbox(image, size)] * max(1, round(hold * 25))
    photo_video(path, frames, 1 / 25, fps=25, size=size)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))

    import numpy as np
    from text_ingest import machine

    from mmrag.app import Models, open_store
    from mmrag.pipelines.audio.decode import iter_windows, stream_audio
    from mmrag.pipelines.video.decode import probe_video, sample_frames
    from mmrag.pipelines.video.pipeline import KEYFRAME_SIDE, moments_of
    from mmrag.pipelines.video.shots import detect_shots
    from mmrag.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="mmrag-videobench-"))
    try:
        files = build_library(work / "lib", args.videos, args.seconds, size)  # type: ignore[arg-type]
        video_s = sum(probe_video(f).duration for f in files)
        settings = Settings(
            profile="offline",
            device=args.device,
            ocr=False,
            milvus_uri=str(work / "milvus.db"),
            catalog=work / "catalog.sqlite",
            thumbnails=work / "thumbs",
        )
        models = Models.build(settings)
        text, image, audio = models.text, models.spaces["image"], models.spaces["audio"]
        speech = models.speech
        assert speech is not None
        text.encode(["warm up"])
        image.encode([image.preprocess(next(sample_frames(files[0])).image)])
        catalog, store = open_store(settings)
        runner = models.runner(catalog, store)
        t0 = time.perf_counter()
        report = runner.run([str(work / "lib")])
        pipeline_s = time.perf_counter() - t0
        store.close()
        catalog.close()
        assert not report.failed and report.new == len(files), (report.failed, report.new)

        parts: dict[str, float] = {}

        def timed(name: str, fn):
            t = time.perf_counter()
            out = fn()
            parts[name] = parts.get(name, 0.0) + time.perf_counter() - t
            return out

        every = min(settings.video_sample_s, settings.video_moment_s / 4)
        texts: list[str] = []
        for f in files:
            shots = timed("decode: shot detection", lambda f=f: detect_shots(f))
            moments = moments_of(shots, settings.video_moment_s)
            frames = timed(
                "decode: keyframe sampling",
                lambda f=f: [fr.image for fr in sample_frames(f, every, KEYFRAME_SIDE)],
            )
            picked = [frames[min(len(frames) - 1, int(m.middle / every))] for m in moments]
            tensors = [image.preprocess(p) for p in picked]
            out = timed("models: image (keyframes)", lambda t=tensors: image.encode(t))
            texts += [p.text for d in out.derived for p in d]
            enc = audio.encoder
            windows = timed(
                "decode: sound track",
                lambda f=f, e=enc: [
                    w for _, _, w in iter_windows(f, e.sample_rate, e.window_s, e.hop_s)
                ],
            )
            timed("models: audio windows", lambda w=windows, e=enc: e.encode(w))
            samples = timed(
                "decode: sound track",
                lambda f=f: np.concatenate(list(stream_audio(f, 16000))),
            )
            found = timed("models: speech", lambda s=samples: speech.encoder.transcribe(s))
            texts += [seg.text for seg in found.segments]
        timed("models: text", lambda: text.encode(texts))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    decode_s = sum(v for k, v in parts.items() if k.startswith("decode"))
    models_s = sum(v for k, v in parts.items() if k.startswith("models"))
    result = {
        "videos": len(files),
        "video_s": round(video_s, 1),
        "size": args.size,
        "pipeline_s": round(pipeline_s, 2),
        "video_s_per_s": round(video_s / pipeline_s, 2),
        "segments": report.segments,
        "parts_alone_s": {k: round(v, 2) for k, v in sorted(parts.items())},
        "decode_share": round(decode_s / pipeline_s, 3),
        "models_share": round(models_s / pipeline_s, 3),
        "machine": machine(),
    }
    print(json.dumps(result, indent=2))
    print(
        f"\n{video_s:.0f} s of {args.size} video in {pipeline_s:.1f} s: "
        f"{result['video_s_per_s']} s of video per second; timed alone, decoding takes "
        f"{decode_s:.1f} s ({100 * result['decode_share']:.0f}% of the pipeline's time) and the "
        f"models {models_s:.1f} s ({100 * result['models_share']:.0f}%)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
