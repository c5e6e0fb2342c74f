"""`helpers` — the small shared package of the *Seminar to Code* course.

Every helper names, in its docstring, the chapter that explains it. The package stays small:
a function lives here when two chapters use it, or when a notebook would drown in it.
"""

from . import data, loader, plot, profile, results, runtime, train  # noqa: F401

__version__ = "0.1.0"
