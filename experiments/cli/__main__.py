"""``python -m experiments.cli ...`` (as torchrun runs it) is ``wm ...``."""

from experiments.cli import main

main()
