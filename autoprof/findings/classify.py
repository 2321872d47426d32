"""Where code lives: the app's own files told apart from the standard library's, installed
packages' and autoprof's own (see the package docstring for the rules)."""

from __future__ import annotations

import functools
import os
import site
import sys
import sysconfig
import threading
from collections.abc import Iterable

__all__ = ["CodeClassifier", "default_classifier"]

LIBRARY_PACKAGES = (
    "autoprof", "pyinstrument", "starlette", "fastapi", "uvicorn", "anyio", "h11", "httptools",
    "uvloop", "websockets", "flask", "werkzeug", "gunicorn", "jinja2", "click", "pydantic",
    "pydantic_core", "sniffio", "asgiref", "psutil",
)
#: Code that runs as part of the function around it.
FOLDED = frozenset({"<genexpr>", "<listcomp>", "<dictcomp>", "<setcomp>"})


class CodeClassifier:
    """Tells the app's own files from the standard library's, installed packages' and
    autoprof's own, and shortens paths under the working directory."""

    def __init__(self, cwd: str | None = None, library_dirs: Iterable[str] = ()) -> None:
        self.cwd = os.path.abspath(cwd or os.getcwd())
        dirs = set(library_dirs)
        paths = sysconfig.get_paths()
        dirs.update(paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths)
        try:
            dirs.update(site.getsitepackages())
            dirs.add(site.getusersitepackages())
        except AttributeError:  # an old virtualenv's site module
            pass
        for name in LIBRARY_PACKAGES:
            module = sys.modules.get(name)
            file = getattr(module, "__file__", None)
            if isinstance(file, str):
                dirs.add(os.path.dirname(file))
        self._prefixes = tuple(
            sorted({os.path.join(os.path.realpath(d), "") for d in dirs if d}, key=len)
        )
        self._cache: dict[str, bool] = {}
        self._lock = threading.Lock()

    def is_app(self, path: str) -> bool:
        """Whether ``path`` (a code object's file name) is the app's own code."""
        found = self._cache.get(path)
        if found is None:
            found = self._classify(path)
            with self._lock:
                if len(self._cache) > 20_000:
                    self._cache.clear()
                self._cache[path] = found
        return found

    def _classify(self, path: str) -> bool:
        if not path or path.startswith("<"):
            return False
        parts = path.replace("\\", "/").split("/")
        if "site-packages" in parts or "dist-packages" in parts:
            return False
        real = os.path.realpath(os.path.abspath(path))
        return not any(real.startswith(prefix) for prefix in self._prefixes)

    def short(self, path: str) -> str:
        """``path`` relative to the working directory when it is under it."""
        full = os.path.abspath(path) if path and not path.startswith("<") else path
        if full.startswith(os.path.join(self.cwd, "")):
            return os.path.relpath(full, self.cwd)
        return path

    def app_module_file(self, module: str) -> str | None:
        """The (shortened) file of the imported module named ``module`` when it is the app's
        own code, else None (not imported, built in, or a library's)."""
        file = getattr(sys.modules.get(module), "__file__", None)
        if not isinstance(file, str) or not self.is_app(file):
            return None
        return self.short(file)


@functools.cache
def default_classifier() -> CodeClassifier:
    """One classifier for the process (its paths do not change; its cache is shared)."""
    return CodeClassifier()
