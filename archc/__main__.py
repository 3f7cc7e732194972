"""`python -m archc`: the command line, exiting 130 on an interrupt even during imports."""

import sys


def run() -> int:
    try:
        from archc.cli import main
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
