"""The NTU RGB+D ``.skeleton`` parser (docs/formats/ntu.md §2): the exact (3, T, 25, M) tensor of a hand-laid file,
exact 64-bit ids and fields, and errors that name the file and the 1-based line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from ntu_fixture import BODY_CODE, FIXTURE_FRAMES, ID_A, ID_B, NAME, fixture_text, joint_xyz, write_file

from xcore.data.ntu_skeleton import parse_skeleton, read_skeleton
from xcore.errors import SampleError


@pytest.fixture
def fixture_file(tmp_path: Path) -> Path:
    return write_file(tmp_path, fixture_text())


def test_read_skeleton_exact_tensor(fixture_file: Path) -> None:
    lines = fixture_text().split("\r\n")  # the documented line map: 168 lines + the final CRLF
    assert len(lines) == 169 and lines[31].startswith(f"{ID_A} ") and lines[58].startswith(f"{ID_B} ")
    data = read_skeleton(fixture_file)
    assert data.dtype == np.float32 and data.shape == (3, 5, 25, 2)
    expected = np.zeros((3, 5, 25, 2), np.float32)
    for t, ids in enumerate(FIXTURE_FRAMES, start=1):
        for m, body_id in enumerate(ids[:2]):  # third body dropped
            for j in range(25):
                expected[:, t - 1, j, m] = joint_xyz(t, BODY_CODE[body_id], j)
    np.testing.assert_array_equal(data, expected)
    # hand-computed spot checks: frame 3, body B (slot 1), joint 4; frame 5 slot 0 is B (order within frame)
    assert data[:, 2, 4, 1].tolist() == [31.0, 2.5, 3.25]
    assert data[:, 4, 0, 0].tolist() == [50.0, 2.0, 3.5] and data[:, 4, 24, 1].tolist() == [56.0, 4.0, 2.0]
    assert not data[:, 0].any() and not data[:, 3].any()  # zero-body frames stay zeros
    assert not data[:, 1, :, 1].any()  # one body: slot 1 empty
    three = read_skeleton(fixture_file, max_bodies=3)
    assert three.shape == (3, 5, 25, 3) and three[:, 4, 10, 2].tolist() == [52.5, 4.25, 2.875]
    np.testing.assert_array_equal(three[..., :2], data)


def test_parse_skeleton_keeps_exact_ids_and_fields(fixture_file: Path) -> None:
    frames = parse_skeleton(fixture_file)
    assert [[b.body_id for b in f] for f in frames] == FIXTURE_FRAMES
    assert float(ID_A) == float(ID_B) and ID_A != ID_B  # why bodyID must never be parsed as a float
    body = frames[2][1]
    assert type(body.body_id) is int and body.body_id == 72057594037931103
    assert (body.cliped_edges, body.hand_left_confidence, body.is_resticted, body.tracking_state) == (0, 1, 0, 2)
    assert (body.lean_x, body.lean_y) == (0.02764709, 0.05745083)
    assert body.joints.shape == (25, 12)
    assert body.joints[3].tolist() == [30.75, 2.375, 3.3125, 277.419, 191.8218, 1036.233, 519.1677, -0.2059419,
                                       0.05349901, 0.9692109, -0.1239193, 2.0]


Edit = Callable[[list[str]], list[str]]


def _bad(tmp_path: Path, edit: Edit) -> str:
    lines = edit(fixture_text().split("\r\n")[:-1])
    path = write_file(tmp_path / "bad", "\r\n".join(lines) + "\r\n")
    with pytest.raises(SampleError) as err:
        read_skeleton(path)
    assert err.value.stage == "load"
    return str(err.value)


def _set(k: int, text: str) -> Edit:
    """Replace 1-based line ``k``."""

    def edit(lines: list[str]) -> list[str]:
        lines[k - 1] = text
        return lines

    return edit


def _field(k: int, index: int, token: str | None) -> Edit:
    """Replace (or, with ``None``, drop) field ``index`` of 1-based line ``k``."""

    def edit(lines: list[str]) -> list[str]:
        tokens = lines[k - 1].split()
        tokens[index:index + 1] = [] if token is None else [token]
        lines[k - 1] = " ".join(tokens)
        return lines

    return edit


@pytest.mark.parametrize(("edit", "message"), [
    (lambda ls: ls[:57], f"{NAME}:58: unexpected end of file, expected joint line"),
    (lambda ls: ls[:30], f"{NAME}:31: unexpected end of file, expected numBodies line"),
    (_set(33, "24"), f"{NAME}:33: expected 25 joints, got 24"),
    (_field(57, 11, None), f"{NAME}:57: expected 12 joint fields, got 11"),
    (_field(40, 1, "abc"), f"{NAME}:40: joint field y is not float: 'abc'"),
    (_field(41, 11, "2.5"), f"{NAME}:41: joint field tracking_state is not int: '2.5'"),
    (_field(32, 0, "7.2e16"), f"{NAME}:32: body-info field body_id is not int: '7.2e16'"),
    (_set(59, f"{ID_B} 0 1 1 1 1 0 0.1 2"), f"{NAME}:59: expected 10 body-info fields, got 9"),
    (_set(31, "two"), f"{NAME}:31: numBodies is not an integer: 'two'"),
    (_set(40, "nan 1 3 277.419 191.8218 1036.233 519.1677 -0.2 0.05 0.97 -0.12 2"),
     f"{NAME}:40: non-finite joint coordinate"),
    (lambda ls: [*ls, "1"], f"{NAME}:169: unexpected content after the last of 5 frames"),
    (lambda ls: ["0"], f"{NAME}:1: zero frames"),
    (lambda ls: ["2", "0", "0"], f"{NAME}:1: no body in any frame"),
    (lambda ls: [], f"{NAME}:1: unexpected end of file, expected numFrames line"),
])
def test_bad_files_name_file_and_line(tmp_path: Path, edit: Edit, message: str) -> None:
    assert _bad(tmp_path, edit) == message


def test_lf_trailing_blanks_and_unreadable_files(tmp_path: Path) -> None:
    path = write_file(tmp_path, fixture_text().replace("\r\n", "\n") + "\n  \n")
    np.testing.assert_array_equal(read_skeleton(path), read_skeleton(write_file(tmp_path / "b", fixture_text())))
    with pytest.raises(SampleError, match=r"S001C001P001R001A002\.skeleton: cannot read"):
        parse_skeleton(tmp_path / "S001C001P001R001A002.skeleton")
