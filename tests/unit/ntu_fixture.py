"""A hand-laid NTU RGB+D ``.skeleton`` file for the tests: the real grammar (docs/formats/ntu.md §2) with CRLF
endings, odd spacing, zero-body frames, three bodies in one frame and 64-bit body ids above 2**53."""

from __future__ import annotations

from pathlib import Path

ID_A, ID_B, ID_C = 72057594037931101, 72057594037931103, 72057594037927937  # all > 2**53
BODY_CODE = {ID_A: 1, ID_B: 2, ID_C: 3}
FIXTURE_FRAMES = [[], [ID_A], [ID_A, ID_B], [], [ID_B, ID_A, ID_C]]  # body order within each frame
NAME = "S001C001P001R001A001.skeleton"


def joint_xyz(t: int, code: int, j: int) -> tuple[float, float, float]:
    """Joint j of body ``code`` in (1-based) frame t: binary fractions, exact in float32."""
    return 10 * t + 0.25 * j, code + 0.125 * j, 3.5 - 0.0625 * j


def fixture_text() -> str:
    """A hand-laid file in the real grammar with CRLF endings, odd spacing, zero-body frames and 3 bodies.

    Line map: 1 numFrames; 2 frame 1 (0 bodies); 3-30 frame 2; 31-85 frame 3 (line 32 body A info, 33 its
    numJoints, 34-58 its joints; 59 body B info, 60, 61-85); 86 frame 4 (0 bodies); 87-168 frame 5.
    """
    lines = [str(len(FIXTURE_FRAMES))]
    for t, ids in enumerate(FIXTURE_FRAMES, start=1):
        lines.append(str(len(ids)))
        for body_id in ids:
            lines += [f"{body_id} 0 1 1 1 1 0 0.02764709 0.05745083 2", "25"]
            for j in range(25):
                x, y, z = joint_xyz(t, BODY_CODE[body_id], j)
                sep = "  " if j == 7 else " "  # a double space must not matter
                lines.append(f"{x!r}{sep}{y!r} {z!r} 277.419 191.8218 1036.233 519.1677 -0.2059419 0.05349901 "
                             f"0.9692109 -0.1239193 2 ")
    return "\r\n".join(lines) + "\r\n"


def write_file(folder: Path, text: str, name: str = NAME) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(text.encode())
    return path
