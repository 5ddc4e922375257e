"""Does an engine's installed library run on this machine? Checked once per build.

An engine library is native code: a build compiled for instructions this CPU (or the
VM it runs in) does not execute dies with a signal (SIGILL) on first use, and takes
the whole process with it, without a word. :class:`LibraryCheck` runs the engine's
probe in a child process instead: the probe generates a token on a tiny model, and the
parent turns an exit by a signal into an :class:`~modelport.ports.EngineCheck` that
says so and how to fix it. The result is remembered in ``<home>/checks/`` under a key
made of the library's version and its shared-library files (path, size, mtime), so a
reinstalled or rebuilt library is checked again. Standard library only.
"""

from .check import CheckResult, Library, LibraryCheck, installed_library

__all__ = ["CheckResult", "Library", "LibraryCheck", "installed_library"]
