"""Video decoding (decord in its guarded helper, PyAV, ``auto``), frame counts, broken files and clip sampling, on
fixture videos whose frames encode their own index (``clip_fixture``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from clip_fixture import N, frames, which_frame

from xcore.data.clip_sampling import centre_indices, sliding_indices
from xcore.data.decord_helper import DecordHelper
from xcore.data.video_decode import frame_count, read_clip
from xcore.data.video_encode import write_video
from xcore.errors import SampleError


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    out = {"mp4": write_video(d / "a.mp4", frames()), "avi": write_video(d / "a.avi", frames()),
           "odd": write_video(d / "odd.mp4", frames(h=33, w=47))}
    data = out["mp4"].read_bytes()
    (d / "cut.mp4").write_bytes(data[:len(data) // 2])
    (d / "empty.mp4").write_bytes(b"")
    out["cut"], out["empty"] = d / "cut.mp4", d / "empty.mp4"
    return out


# ------------------------------------------------------------------------------------------ decoding

@pytest.mark.parametrize("kind", ["mp4", "avi", "odd"])
@pytest.mark.parametrize("backend", ["decord", "pyav", "auto"])
def test_read_clip_returns_the_requested_frames(videos: dict[str, Path], kind: str, backend: str) -> None:
    want = [5, 0, 19, 5, 7]
    clip = read_clip(videos[kind], want, backend=backend)
    ref = frames(h=33, w=47) if kind == "odd" else frames()
    assert clip.dtype == np.uint8 and clip.shape == (5, *ref.shape[1:])
    assert which_frame(clip) == want
    assert np.abs(clip.astype(int) - ref[want]).mean() < 3  # lossy, but close to the source everywhere
    bar = [int(np.argmax(f[..., 0].mean(axis=0))) for f in clip]
    assert [abs(b - 2 * i) <= 1 for b, i in zip(bar, want, strict=True)] == [True] * 5


@pytest.mark.parametrize("kind", ["mp4", "avi", "odd"])
def test_decord_and_pyav_agree(videos: dict[str, Path], kind: str) -> None:
    idx = list(range(N))
    a = read_clip(videos[kind], idx, backend="decord").astype(int)
    b = read_clip(videos[kind], idx, backend="pyav").astype(int)
    assert np.abs(a - b).max() <= 2


def test_in_process_decord_matches_the_helper(videos: dict[str, Path]) -> None:
    a = read_clip(videos["odd"], [3, 1], backend="decord", timeout=None)
    assert np.array_equal(a, read_clip(videos["odd"], [3, 1], backend="decord"))
    with pytest.raises(SampleError, match="too short"):
        read_clip(videos["odd"], [N], backend="decord", timeout=None)
    with pytest.raises(SampleError, match=r"cut\.mp4: decord cannot read"):
        read_clip(videos["cut"], [0], backend="decord", timeout=None)


def test_frame_count(videos: dict[str, Path]) -> None:
    assert [frame_count(videos[k]) for k in ("mp4", "avi", "odd")] == [N, N, N]


@pytest.mark.parametrize("kind", ["cut", "empty"])
@pytest.mark.parametrize("backend", ["decord", "pyav", "auto"])
def test_broken_files_raise_sample_error(videos: dict[str, Path], kind: str, backend: str) -> None:
    with pytest.raises(SampleError) as err:
        read_clip(videos[kind], [0, 1], backend=backend)
    msg = str(err.value)
    assert videos[kind].name in msg and "\n" not in msg and err.value.stage == "load"
    with pytest.raises(SampleError, match=videos[kind].name):
        frame_count(videos[kind])


@pytest.mark.parametrize("backend", ["decord", "pyav", "auto"])
def test_index_beyond_the_end_raises(videos: dict[str, Path], backend: str) -> None:
    with pytest.raises(SampleError, match=r"a\.mp4: too short: frame 20 requested, video has 20 frames"):
        read_clip(videos["mp4"], [3, N], backend=backend)
    with pytest.raises(SampleError, match="no such file"):
        read_clip(videos["mp4"].with_name("nope.mp4"), [0], backend=backend)


def test_bad_arguments(videos: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="backend"):
        read_clip(videos["mp4"], [0], backend="opencv")
    with pytest.raises(ValueError, match=">= 0"):
        read_clip(videos["mp4"], [-1])


def test_decord_helper_times_out_and_restarts() -> None:
    hung = DecordHelper("import time\ntime.sleep(60)\n")  # stands in for get_batch hanging (decord#373)
    kind, payload = hung.request("x.mp4", [0], timeout=0.5)
    assert (kind, payload) == ("timeout", 0.5)
    assert hung._proc is None  # killed, a later request starts a fresh helper
    hung.stop()


# ------------------------------------------------------------------------------------------ sampling

def test_centre_indices() -> None:
    assert centre_indices(20, 16) == list(range(2, 18))
    assert centre_indices(21, 16) == list(range(2, 18))  # start rounded down
    assert centre_indices(16, 16) == list(range(16))
    assert centre_indices(20, 8, stride=2) == [2, 4, 6, 8, 10, 12, 14, 16]  # span 15
    with pytest.raises(SampleError, match="too short: 15 frames, the clip spans 16"):
        centre_indices(15, 16)


def test_sliding_indices() -> None:
    assert sliding_indices(10, 4, 3) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert sliding_indices(12, 4, 3) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]  # tail of 2 dropped
    assert sliding_indices(10, 3, 4, stride=2) == [[0, 2, 4], [4, 6, 8]]
    with pytest.raises(SampleError, match="too short"):
        sliding_indices(3, 4, 1)
