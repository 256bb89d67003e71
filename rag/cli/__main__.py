"""`python -m rag.cli`: the same commands as the `rag` script."""

from rag.cli.main import main

main()
