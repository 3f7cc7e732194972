"""`python -m archc`: the command line, exiting 130 on an interrupt even during imports."""

import os
import sys


def run() -> int:
    # pydantic looks for plugins (entry points in every installed package's metadata) when it
    # builds its first validator: ~5 ms of each run, for models that are archc's own and
    # internal. The command line turns that off; a user who sets the variable keeps theirs,
    # and archc imported as a library leaves it alone.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    try:
        from archc.cli import main
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
