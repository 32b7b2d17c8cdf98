"""The `mmchunk data` subcommands: synthesize the built-in corpus, pack datasets, check shards."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmchunk.cli_types import positive_int

OVERWRITE_HELP = "replace the shards already under --out (they stay until all new ones are written)"


def _data_synth(args: argparse.Namespace) -> int:
    from mmchunk.data.synth import synth_corpus

    sizes = synth_corpus(
        args.out,
        args.num,
        video=args.video,
        realistic=not args.clean,
        seed=args.seed,
        val_fraction=args.val_fraction,
        shard_size=args.shard_size,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    for split, shards in sizes.items():
        print(f"{split}: {sum(shards.values())} samples in {len(shards)} shards under {args.out / split}")
    if "val" not in sizes:
        settings = f"{args.num} samples, --val-fraction {args.val_fraction}"
        print(f"warning: no val split ({settings}); fit needs one")
    return 0


def _data_pack(args: argparse.Namespace) -> int:
    from mmchunk.data.formats import pack_dataset

    report = pack_dataset(
        args.format, args.src, args.out, shard_size=args.shard_size, name=args.name, overwrite=args.overwrite
    )
    for path, reason in report.skipped:
        print(f"skipped {path}: {reason}")
    splits: dict[str, int] = {}
    for shard, count in report.shards.items():
        split = shard.rpartition("/")[0] or "."
        splits[split] = splits.get(split, 0) + count
    for split, count in splits.items():
        print(f"{split}: {count} samples under {args.out / split}")
    if report.textless:
        print(f"{report.textless} samples have no text: fine for export, skipped by training")
    print(
        f"packed {report.written} samples into {len(report.shards)} shards under {args.out}; "
        f"{len(report.skipped)} skipped"
    )
    if report.written == 0:
        raise ValueError(f"no sample could be packed from {args.src}")
    return 1 if args.strict and report.skipped else 0


def _data_check(args: argparse.Namespace) -> int:
    import logging

    from mmchunk.data.check import check_shards
    from mmchunk.data.loader import DataConfig

    logging.getLogger("mmchunk.data.loader").setLevel(logging.ERROR)  # the report lists every skip
    report = check_shards(
        args.pattern, DataConfig(sample_rate=args.sample_rate, require_text=not args.no_text)
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for error in report["errors"]:
            print(f"skipped {error['key'] or '(shard)'} in {error['shard']}: {error['reason']}")
        print(f"{report['ok']} samples ok, {report['skipped']} skipped")
    if report["ok"] == 0:
        raise ValueError(f"no sample of {args.pattern} could be read")
    return 1 if args.strict and report["errors"] else 0


def add_data_commands(sub: argparse._SubParsersAction) -> None:
    """Add `data synth | pack | check` to the top-level subcommands `sub`."""
    data = sub.add_parser("data", help="make, pack and check WebDataset shards").add_subparsers(
        dest="data_command", metavar="DATA_COMMAND", required=True
    )
    synth = data.add_parser(
        "synth",
        help="synthesize the built-in spoken corpus (espeak-ng) into shards",
        description=(
            "Speak generated sentences with random espeak-ng voices, rates and pitches, with pauses "
            "between phrases and silence around them; write DIR/train/ and DIR/val/ shards of "
            "{key}.flac (16 kHz mono), {key}.txt, {key}.json (word timings, silences, voice, ...) "
            "and, with --video, {key}.mp4 (25 fps, the scene frozen during silences). Every "
            "utterance is played under a seeded recording condition (level -40..-10 dBFS; white, "
            "pink, brown noise, hum or babble at 0-30 dB SNR; a simulated room for half; a "
            "telephone channel or clipping for some) and every video through a seeded camera "
            "(sensor noise, flicker, shake, zoom, compression); the JSON's 'condition' and "
            "'camera' record them. --clean writes the dry corpus instead."
        ),
    )
    synth.add_argument("--out", type=Path, required=True, help="output folder")
    synth.add_argument("--num", type=positive_int, required=True, help="number of samples")
    synth.add_argument("--video", action="store_true", help="add a synthetic video per sample")
    synth.add_argument(
        "--clean", action="store_true", help="dry corpus: digital silence, one level, no room or camera"
    )
    synth.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    synth.add_argument("--val-fraction", type=float, default=0.1, help="share of validation samples (0.1)")
    synth.add_argument("--shard-size", type=positive_int, default=256, help="samples per shard (256)")
    synth.add_argument("--workers", type=positive_int, help="synthesis processes (default: up to 2)")
    synth.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    synth.set_defaults(func=_data_synth)

    pack = data.add_parser(
        "pack",
        help="pack a dataset (a folder of media files, LibriSpeech, Clotho, AudioCaps, ...) into shards",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Convert a dataset's own layout under SRC into shards under OUT (one subfolder per split\n"
            "where the dataset has splits). Print every file or row left out and why.\n\n"
            "formats:\n"
            "  folder       files grouped by stem (audio .wav/.flac/.mp3/.ogg, video .mp4/.mkv/.webm,\n"
            "               .txt, .json, .srt/.vtt); each group with audio or video is a sample;\n"
            "               subtitle cues become the JSON's 'cues' and, without a .txt, the transcript\n"
            "  librispeech  <subset>/<speaker>/<chapter>/*.flac + <speaker>-<chapter>.trans.txt\n"
            "  clotho       clotho_captions_<split>.csv (file_name, caption_1..5) + the audio files\n"
            "  audiocaps    <split>.csv (audiocap_id, youtube_id, start_time, caption) + audio files\n"
            "               named <audiocap_id>, <youtube_id>, Y<youtube_id> or <youtube_id>_<start>\n"
            "  laion        LAION-audio .tar shards (<key>.flac + <key>.json with a 'text' list)\n"
            "  videofolder  .mp4/.mkv/.webm with sound (the container's audio becomes the sample's),\n"
            "               optional .srt/.vtt/.txt beside each\n"
            "Several captions (Clotho, AudioCaps, LAION) go into the JSON's 'text' list: training draws\n"
            "one per epoch, validation scores by the LAION-CLAP protocol."
        ),
    )
    pack.add_argument("src", type=Path, help="the dataset's folder")
    pack.add_argument(
        "--format",
        default="folder",
        choices=["folder", "librispeech", "clotho", "audiocaps", "laion", "videofolder"],
        help="layout of SRC (default folder)",
    )
    pack.add_argument("--out", type=Path, required=True, help="output folder for the shards")
    pack.add_argument("--shard-size", type=positive_int, default=256, help="samples per shard (256)")
    pack.add_argument("--name", default="data", help="shard name prefix of a dataset without splits ('data')")
    pack.add_argument(
        "--overwrite",
        action="store_true",
        help=OVERWRITE_HELP,
    )
    pack.add_argument("--strict", action="store_true", help="exit with 1 when anything was skipped")
    pack.set_defaults(func=_data_pack)

    check = data.add_parser(
        "check",
        help="stream shards through the training loader and report unreadable samples",
        description=(
            "Read every sample of PATTERN (a shard, folder, glob, brace pattern or URL) with the "
            "loader the trainer uses and report which samples were skipped and why."
        ),
    )
    check.add_argument("pattern", help="shards, e.g. 'data/val/val-{000000..000003}.tar' or data/val")
    check.add_argument("--json", action="store_true", help='print {"ok", "skipped", "errors"} as JSON')
    check.add_argument("--sample-rate", type=positive_int, default=16_000, help="audio rate (16000)")
    check.add_argument(
        "--no-text", action="store_true", help="accept samples without text (export --modalities audio)"
    )
    check.add_argument("--strict", action="store_true", help="exit with 1 when anything was skipped")
    check.set_defaults(func=_data_check)
