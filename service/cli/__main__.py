"""``python -m rnntune.service.cli``: the ``rnntune`` command (how serve starts its workers)."""

from rnntune.service.cli import main

main()
