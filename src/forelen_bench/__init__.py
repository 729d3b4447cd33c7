"""Deprecated: `forelen_bench` was the import name of forelen 0.1; the package is `forelen`.

`import forelen_bench` and `from forelen_bench.X import Y` keep working until 0.3 and give the
very same module objects as `forelen` and `forelen.X` (one registry, one set of classes: an
isinstance check or a registered plug-in sees no difference), with a DeprecationWarning.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

import forelen

warnings.warn("forelen_bench is deprecated and goes away in forelen 0.3: import forelen instead",
              DeprecationWarning, stacklevel=2)

_OLD, _NEW = "forelen_bench", "forelen"


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves forelen_bench.X to the module forelen.X, imported once under its new name."""

    def find_spec(self, name, path=None, target=None):
        if not name.startswith(_OLD + "."):
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        return importlib.import_module(_NEW + spec.name[len(_OLD):])

    def exec_module(self, module):  # already executed under its new name
        pass


sys.meta_path.insert(0, _Alias())
sys.modules[_OLD] = forelen
