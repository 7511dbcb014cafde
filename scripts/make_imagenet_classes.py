"""Regenerate ``src/vit5/io/imagenet1k_classes.tsv`` (package data: ImageNet-1k wnid and readable name
per class index) from the ImageNet synset facts timm ships (``timm/data/_info``). Run once, commit
the output: the core install of vit5 does not need timm.

    python scripts/make_imagenet_classes.py
"""

from __future__ import annotations

from pathlib import Path

import timm.data

INFO = Path(timm.data.__file__).parent / "_info"
OUT = Path(__file__).resolve().parents[1] / "src" / "vit5" / "io" / "imagenet1k_classes.tsv"


def main() -> None:
    wnids = (INFO / "imagenet_synsets.txt").read_text().split()
    lemmas = dict(
        line.split("\t", 1) for line in (INFO / "imagenet_synset_to_lemma.txt").read_text().splitlines()
    )
    if len(wnids) != 1000 or len(set(wnids)) != 1000:
        raise SystemExit(f"expected 1000 distinct wnids, got {len(wnids)}")
    OUT.write_text("".join(f"{wnid}\t{lemmas[wnid].strip()}\n" for wnid in wnids))
    print(f"wrote {OUT} (1000 classes)")


if __name__ == "__main__":
    main()
