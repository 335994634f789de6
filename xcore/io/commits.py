"""The shard commit record: its format, the check of every file it lists, and the committed files readers use.

A shard's record ``_shards/shard-NNNNNN.json`` is written last (:meth:`xcore.io.runs.RunLayout.write_shard`)::

    {"format": 2, "run_key": ..., "shard_id": 3, "start": 12, "stop": 16, "summary": {...}, "committed_at": ...,
     "files": [{"path": "metrics/method=gradcam/shard-000003.parquet", "rows": 4, "sha256": "<hex>", "bytes": 9120},
               ...]}

``sha256`` / ``bytes`` are of the bytes as written (hashed on the way to disk, :func:`xcore.io.parquet.write_atomic`).
A listed file is intact iff it lies inside the run, has the recorded size and sha256, and its footer carries the
run key, the shard id and the recorded row count (:func:`file_problem`).

Readers (:mod:`xcore.io.query`: ``xai query``, ``xai summary``, ``run.json``'s summary, the reports) read exactly
the files listed by the records of the run's key (:func:`committed_files`), never a glob: a copied
``shard-000003.backup.parquet`` or a shard written but not committed before a kill is invisible to them.

Records of format 1 (xcore before checksums: no ``format``, no ``sha256``) are *incomplete* for the completeness
check, so a rerun recomputes those shards once, but still *readable*: their files stay visible to queries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from xcore.errors import UsageError
from xcore.io.atomic import read_json, sha256_file
from xcore.io.parquet import Written, read_footer

COMMIT_FORMAT = 2
RECORD_NAME = re.compile(r"^shard-(\d+)\.json$")


def file_entry(root: Path, written: Written) -> dict[str, Any]:
    """The record's entry for one written file: path relative to the run, rows, sha256 and size."""
    return {"path": Path(written.path).relative_to(root).as_posix(), "rows": written.rows,
            "sha256": written.sha256, "bytes": written.size}


def inside(root: Path, rel: Any) -> Path | None:
    """``root / rel`` for a relative POSIX path without ``..`` (what a record may list), else ``None``."""
    if not isinstance(rel, str) or not rel:
        return None
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or "\\" in rel:
        return None
    return root / pure


def file_problem(root: Path, entry: Any, key: str, shard_id: int) -> str | None:
    """Why one listed file is not the file that was committed (``None`` when it is intact)."""
    rel = entry.get("path") if isinstance(entry, dict) else None
    path = inside(root, rel)
    if path is None:
        return f"lists {rel!r}, which is not a path inside the run"
    try:
        size = path.stat().st_size
    except OSError:
        return f"{rel} is missing"
    if size != entry.get("bytes"):
        return f"{rel} has {size} bytes, {entry.get('bytes')} were committed"
    try:
        digest = sha256_file(path)
    except OSError as err:
        return f"{rel} is unreadable ({type(err).__name__})"
    if digest != entry.get("sha256"):
        return f"{rel}: sha256 differs from the commit record (the file changed after it was written)"
    try:
        footer = read_footer(path)
    except Exception as err:  # any unreadable footer means a bad file
        return f"{rel}: unreadable Parquet footer ({type(err).__name__})"
    if footer.get("run_key") != key or footer.get("shard_id") != str(shard_id):
        return f"{rel}: footer of run {footer.get('run_key')} shard {footer.get('shard_id')}"
    if footer["num_rows"] != entry.get("rows"):
        return f"{rel} has {footer['num_rows']} rows, {entry.get('rows')} were committed"
    return None


def record_problem(root: Path, rec: dict[str, Any] | None, key: str, shard_id: int,
                   span: tuple[int, int] | None = None) -> str | None:
    """Why the commit record ``rec`` of shard ``shard_id`` does not make it complete for run ``key`` (``None``:
    complete). ``span`` is the shard's ``(start, stop)`` when the caller knows the plan. Every file is hashed."""
    if rec is None:
        return "no readable commit record"
    if rec.get("run_key") != key:
        return f"commit record of run {rec.get('run_key')}, not {key}"
    if rec.get("shard_id") != shard_id:
        return f"commit record of shard {rec.get('shard_id')}"
    if rec.get("format") != COMMIT_FORMAT:
        return f"commit record format {rec.get('format', 1)} has no checksums (older xcore); rerun to recompute"
    if span is not None and (rec.get("start"), rec.get("stop")) != span:
        return f"commit record covers samples {rec.get('start')}..{rec.get('stop')}, the plan {span[0]}..{span[1]}"
    files = rec.get("files")
    if not isinstance(files, list) or not files:
        return "commit record lists no files"
    for entry in files:
        problem = file_problem(root, entry, key, shard_id)
        if problem:
            return problem
    return None


def records(root: Path) -> list[tuple[str, dict[str, Any] | None]]:
    """``(file name, record or None when unreadable)`` for every ``_shards/shard-*.json``, by name."""
    folder = root / "_shards"
    paths = sorted(p for p in folder.glob("shard-*.json") if RECORD_NAME.match(p.name)) if folder.is_dir() else []
    return [(p.name, read_json(p)) for p in paths]


def resolve_key(root: Path) -> str | None:
    """The run key of the run under ``root``: ``run.json``'s, else the plan's, else the one key of its commit
    records; ``None`` with no record at all; :class:`UsageError` when records of several runs are there."""
    for name in ("run.json", "_manifests/plan.json"):
        key = (read_json(root / name) or {}).get("run_key")
        if isinstance(key, str) and key:
            return key
    keys = sorted({r.get("run_key") for _, r in records(root) if r and isinstance(r.get("run_key"), str)})
    if len(keys) > 1:
        raise UsageError(f"{root} holds commit records of several runs ({', '.join(keys)}) and no run.json")
    return keys[0] if keys else None


def committed_files(root: Path, key: str) -> dict[str, list[Path]]:
    """Table name (first folder: ``metrics``, ``explanations``, ``errors``) -> the files listed by the commit
    records of run ``key``, in shard order. Paths that would leave the run are skipped."""
    out: dict[str, list[Path]] = {}
    for _name, rec in records(root):
        if not rec or rec.get("run_key") != key or not isinstance(rec.get("files"), list):
            continue
        for entry in rec["files"]:
            path = inside(root, entry.get("path") if isinstance(entry, dict) else None)
            if path is not None and len(path.relative_to(root).parts) > 1:
                out.setdefault(path.relative_to(root).parts[0], []).append(path)
    return out


@dataclass
class Verification:
    """What :func:`verify_run` found: the run key, the records checked and ``(record name, problem)`` pairs."""

    key: str | None
    checked: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)


def verify_run(root: Path | str) -> Verification:
    """Check every commit record under ``root`` against the run's key and every file it lists (sizes, sha256,
    footers): what ``xai verify`` prints."""
    root = Path(root)
    report = Verification(resolve_key(root))
    for name, rec in records(root):
        report.checked += 1
        shard_id = int(RECORD_NAME.match(name).group(1))  # type: ignore[union-attr]
        problem = record_problem(root, rec, report.key or "", shard_id)
        if problem:
            report.problems.append((name, problem))
    return report
