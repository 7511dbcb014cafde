"""``vit5 push RUN_OR_FILE ORG/REPO``: share a model on the Hugging Face Hub (:func:`vit5.hub.push_to_hub`)."""

from __future__ import annotations

import argparse
import json
import sys

from vit5._text import terminal_text
from vit5.cli.common import _TRUST_HELP


def add_push_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="RUN_OR_FILE",
                        help="a run directory (its best checkpoint, else last), a checkpoint, or anything eval takes")  # fmt: skip
    parser.add_argument("repo_id", metavar="ORG/REPO", help="the Hub repository (created if needed)")
    parser.add_argument(
        "--ema", action="store_true", help="push the EMA weights (an error if there are none)"
    )
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--revision", help="push to this branch (created from main if it does not exist)")
    parser.add_argument(
        "--commit-message", help="the commit message (default: 'Upload <architecture> with vit5')"
    )
    parser.add_argument("--trust-config", action="store_true", help=_TRUST_HELP)


def command_push(args: argparse.Namespace) -> int:
    from vit5.hub import push_to_hub
    from vit5.io.loader import load_model_and_config

    loaded = load_model_and_config(args.source, ema=args.ema, trust_config=args.trust_config)
    print(terminal_text(f"pushing {'EMA weights of ' if loaded.ema else ''}{loaded.source} to {args.repo_id}"
                        f"{f'@{args.revision}' if args.revision else ''}"), file=sys.stderr)  # fmt: skip
    data = loaded.data.get("name")
    url = push_to_hub(loaded.model, args.repo_id, private=args.private, revision=args.revision,
                      commit_message=args.commit_message, model_config=loaded.model_config, ema=loaded.ema,
                      data=str(data) if data else None)  # fmt: skip
    print(json.dumps({"repo_id": args.repo_id, "commit_url": url, "source": str(loaded.source)}))
    return 0
