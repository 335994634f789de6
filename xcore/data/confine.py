"""Readers stay inside their dataset root (issue 12, finding 2): the one check every reader runs before it opens
a path.

A path is *inside* the root when

1. lexically — ``os.path.abspath(path)`` lies under ``os.path.abspath(root)``: an entry that climbs out with
   ``..`` or names an absolute path elsewhere never gets out, whatever the options; and
2. resolved — ``os.path.realpath(path)`` (every symbolic link on the way followed, the file's own included) lies
   under ``os.path.realpath(root)``, unless the reader was opened with ``follow_links=True``
   (``xai run --reader follow_links=true``), for datasets that are symlink farms.

What a refusal becomes depends on what the path is for (docs/images.md, "Paths outside the dataset root"):

- a sample's file (:meth:`DatasetRoot.file`, called by ``load``): :class:`OutsideRootError`, a
  :class:`~xcore.errors.SampleError` of the ``load`` stage, so the sample is one ``errors`` row; the message names
  the path, where it leads and the rule, and the file is never opened, so nothing of its content can be quoted;
- a file or folder that makes up the dataset's structure — a list file (``classInd.txt``, ``testlist01.txt``,
  ``LOC_val_solution.csv``, ``actions.txt``, ...) or a folder the reader lists to find samples
  (:meth:`DatasetRoot.part`): :class:`~xcore.errors.UsageError`, one line and exit code 2 before anything runs;
- a list-file entry (a video named in ``testlist01.txt``, an HMDB51 split line) that is absolute or has a ``..``
  component (:meth:`DatasetRoot.entry`): kept in the index and refused by ``load`` (one ``errors`` row), never
  decoded.

Paths the user names explicitly (``annotations=``, ``missing=``, ``classes=``) are the user's choice, like
``--dataset`` itself, and are not checked. The check is made when the path is opened, so a link swapped in between
the check and the open (a race with someone writing the dataset) is not covered; the reader opens the resolved path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from xcore.errors import SampleError, UsageError

HINT = "pass --reader follow_links=true to read a dataset made of symbolic links"


class OutsideRootError(SampleError):
    """A sample whose path leaves the dataset root; one ``load``-stage ``errors`` row."""

    def __init__(self, path: Path | str, root: Path | str, why: str) -> None:
        super().__init__("load", f"{path}: {why}, outside the dataset root {root}; refused without reading it")
        self.path = str(path)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root if root.endswith(os.sep) else root + os.sep)


@dataclass(frozen=True)
class DatasetRoot:
    """The root a reader is confined to; ``follow_links=True`` lets symbolic links lead out of it."""

    root: Path
    follow_links: bool = False

    def _refusal(self, path: Path | str) -> tuple[str, str] | None:
        """``(why, resolved path)`` when ``path`` leaves the root (rules 1 and 2 of the module docstring)."""
        lexical = os.path.abspath(path)
        if not _under(lexical, os.path.abspath(self.root)):
            return "the path leads out of the root (an absolute path or a '..' component)", lexical
        real = os.path.realpath(lexical)
        if not self.follow_links and not _under(real, os.path.realpath(self.root)):
            return f"a symbolic link leads to {real} ({HINT})", real
        return None

    def contains(self, path: Path | str) -> bool:
        """Whether ``path`` may be opened (a folder to list, a file to read)."""
        return self._refusal(path) is None

    def file(self, path: Path | str) -> Path:
        """The resolved path of a sample's file; :class:`OutsideRootError` when it leaves the root."""
        refusal = self._refusal(path)
        if refusal is not None:
            raise OutsideRootError(path, self.root, refusal[0])
        return Path(os.path.realpath(path))

    def part(self, path: Path | str) -> Path:
        """The resolved path of a list file or a folder to list; :class:`UsageError` when it leaves the root."""
        refusal = self._refusal(path)
        if refusal is not None:
            raise UsageError(f"{path}: {refusal[0]}, outside the dataset root {self.root}")
        return Path(os.path.realpath(path))

    def entry(self, text: str) -> str | None:
        """Why a list-file entry naming a path relative to the dataset is refused (absolute, a drive, or a ``..``
        component, with ``/`` or ``\\`` separators), or ``None`` when it is a plain relative path."""
        for pure in (PurePosixPath(text), PureWindowsPath(text)):
            if pure.is_absolute() or pure.drive or pure.root:
                return f"list entry {text!r} is an absolute path"
            if ".." in pure.parts:
                return f"list entry {text!r} climbs out with '..'"
        return None

    def refuse(self, path: Path | str, why: str) -> OutsideRootError:
        """The error ``load`` raises for a refused list entry (see :meth:`entry`)."""
        return OutsideRootError(path, self.root, why)
