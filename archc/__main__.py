"""`python -m archc`: the command line, exiting 130 on an interrupt even during imports."""

import os
import sys
import types

PLUGIN_LOADER = "pydantic.plugin._loader"
PLUGINS_OFF = ("__all__", "1", "true")  # the values with which pydantic loads no plugin


class _NoPlugins(types.ModuleType):
    """Stands in for pydantic's plugin loader while plugins are off.

    pydantic's loader imports `importlib.metadata` (email, zipfile, csv: ~12 ms, 6% of a
    `validate`) only to read entry points, which it then skips when PYDANTIC_DISABLE_PLUGINS
    says so. This answers `get_plugins()` as the real loader does then, with no plugins; any
    other name pydantic asks for imports the real loader in its place.
    """

    @staticmethod
    def get_plugins() -> tuple:
        return ()

    def __getattr__(self, name: str):
        if name.startswith("__"):  # the import system's questions (__path__: not a package)
            raise AttributeError(name)
        del sys.modules[PLUGIN_LOADER]
        from pydantic.plugin import _loader  # the real one, now that the stand-in is gone

        return getattr(_loader, name)


def run() -> int:
    # pydantic looks for plugins (entry points in every installed package's metadata) when it
    # builds its first validator, for models that are archc's own and internal. The command
    # line turns that off; a user who sets the variable keeps theirs (plugins on: the real
    # loader), and archc imported as a library leaves both alone.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    if os.environ["PYDANTIC_DISABLE_PLUGINS"] in PLUGINS_OFF:
        sys.modules.setdefault(PLUGIN_LOADER, _NoPlugins(PLUGIN_LOADER))
    try:
        from archc.cli import main
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return main(program=True)


if __name__ == "__main__":
    sys.exit(run())
