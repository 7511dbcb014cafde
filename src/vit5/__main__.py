"""``python -m vit5`` is the ``vit5`` command (also what torchrun runs: ``torchrun -m vit5 train``)."""

from vit5.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
