"""``python -m genscom.demo [combined|tx|rx] [options]``: the demo without the typer CLI.

Examples:
    python -m genscom.demo                                   # one page, http://127.0.0.1:7860
    python -m genscom.demo rx --port 7861 --key-file link.key             # receiver process
    python -m genscom.demo tx --port 7860 --rx-url http://127.0.0.1:7861 --key-file link.key
"""

from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m genscom.demo", description="genscom Gradio demo (transmitter/receiver)")
    p.add_argument("mode", nargs="?", default="combined", choices=["combined", "tx", "rx"])
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 7860; rx 7861)")
    p.add_argument("--rx-url", default=None, help="receiver address for tx mode, e.g. http://127.0.0.1:7861")
    p.add_argument("--profile", default="mini-attr", help="encoder profile (mini-attr, mini, tiny, or a CLIP/SigLIP id)")
    p.add_argument("--gallery-size", type=int, default=24)
    p.add_argument("--num-frames", type=int, default=8)
    p.add_argument("--max-side", type=int, default=128)
    p.add_argument("--max-upload-mb", type=float, default=20.0)
    p.add_argument("--mcs", default="qpsk-1/2")
    p.add_argument("--results", default="results/retrieval/retrieval.json", help="retrieval benchmark JSON")
    p.add_argument("--agent-card", default=None, help="agent card for the 'agent' scheme")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--regen-decoder", default="auto", help="image decoder of the image-regeneration task "
                   "(a folder or a name on the adapter search path, trained on --profile; '' for none; default "
                   "auto: the best shipped one for --profile, regen-mini-attr-v5 for mini-attr-v2)")
    p.add_argument("--regen-candidates", type=int, default=1, help="pictures drawn per item by the receiver "
                   "(best-of-N, 1..16)")
    p.add_argument("--key-file", default=None, help="shared link key file signing the tx->rx wire (default: "
                   "~/.genscom/demo-wire.key, made if missing; copy it to the other end)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from genscom.demo.app import launch_demo, load_or_create_key
    from genscom.demo.engine import DemoConfig

    try:
        cfg = DemoConfig(profile=args.profile, gallery_size=args.gallery_size, num_frames=args.num_frames,
                         max_side=args.max_side, max_upload_mb=args.max_upload_mb, mcs=args.mcs,
                         results_path=args.results, agent_card=args.agent_card, seed=args.seed,
                         regen_decoder=args.regen_decoder or None, regen_candidates=args.regen_candidates)
        port = args.port if args.port is not None else (7861 if args.mode == "rx" else 7860)
        key = None  # combined: an in-memory key
        if args.mode != "combined":
            key, note = load_or_create_key(args.key_file)
            print(note or f"demo link key {args.key_file}: fingerprint {key.fingerprint}", file=sys.stderr)
        launch_demo(args.mode, cfg, host=args.host, port=port, rx_url=args.rx_url, key=key)
    except (ValueError, TypeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
