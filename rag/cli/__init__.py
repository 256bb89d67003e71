"""The `rag` command. It drives the server's code, so a client-only install (plain `kbqa`)
has the script but not what it needs: say so instead of a traceback."""

import importlib.util

if importlib.util.find_spec("typer") is None or importlib.util.find_spec("fastapi") is None:
    raise SystemExit("the rag command needs the server: pip install 'kbqa[server]'")
