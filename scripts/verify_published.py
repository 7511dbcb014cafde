"""Check vit5's table of published weights (``vit5.networks.pretrained_cfg.PUBLISHED``) against the Hub.

Run it on a machine that reaches huggingface.co (the build machine does not):

    python scripts/verify_published.py             # every file exists: size, sha256 (LFS ETag), commit
    python scripts/verify_published.py --download  # also download each file (several GB) and check that
                                                   # it is an official checkpoint of the named layout

Exit status 0 when every row checks out; each problem is one line.
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--download", action="store_true", help="download and check each checkpoint's layout")
    args = parser.parse_args()

    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    from vit5.io.official import is_official
    from vit5.io.sources import hub_file
    from vit5.io.weights_file import read_weights_file
    from vit5.networks.official import official_layout, unwrap_official
    from vit5.networks.presets import preset_arguments
    from vit5.networks.pretrained_cfg import PUBLISHED

    problems = 0
    for name, entry in PUBLISHED.items():
        try:
            meta = get_hf_file_metadata(hf_hub_url(entry.hf_hub_id, entry.hf_hub_filename))
        except Exception as error:  # report every row, then fail
            print(f"FAIL {name}: {entry.hf_hub_id}/{entry.hf_hub_filename}: {type(error).__name__}: {error}")
            problems += 1
            continue
        print(f"ok   {name}: {entry.hf_hub_id}/{entry.hf_hub_filename} commit {meta.commit_hash} "
              f"size {meta.size} etag {meta.etag}")  # fmt: skip
        if not args.download:
            continue
        resolved = hub_file(entry.hf_hub_id, entry.hf_hub_filename, None, None)
        checkpoint = read_weights_file(resolved.path)
        if not is_official(checkpoint):
            print(f"FAIL {name}: not an official ViT-5 checkpoint")
            problems += 1
            continue
        layout = official_layout(unwrap_official(checkpoint))
        want = preset_arguments(entry.preset)
        got = (layout.hidden_dim, layout.num_blocks, layout.num_heads, layout.image_size, layout.num_classes)
        expected = (want["hidden_dim"], want["num_blocks"], want["num_heads"], entry.image_size, 1000)
        if got != expected:
            print(f"FAIL {name}: layout (width, depth, heads, size, classes) {got}, expected {expected}")
            problems += 1
        else:
            print(f"ok   {name}: layout {got}, entries {sorted(k for k in checkpoint if isinstance(k, str))}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
