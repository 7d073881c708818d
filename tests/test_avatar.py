"""Avatar records: validated parts, save/load without pickle."""

from __future__ import annotations

import numpy as np
import pytest

from ditto_fast.avatar import MOTION_INFO_SHAPES, Avatar, AvatarFileError


def make_avatar(frames: int = 1, seed: int = 0) -> Avatar:
    rng = np.random.default_rng(seed)

    def f32(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    return Avatar(
        motion={k: f32(frames, 1, *shape) for k, shape in MOTION_INFO_SHAPES.items()},
        f_s=f32(frames, 1, 32, 16, 64, 64), m_c2o=f32(frames, 3, 3), eye_open=f32(frames, 2),
        eye_ball=f32(frames, 6), sc=f32(63), frames=rng.integers(0, 255, (frames, 48, 64, 3), dtype=np.uint8),
        is_image=frames == 1, source="portrait.png", settings={"crop_scale": 2.3},
    )


def test_round_trip(tmp_path):
    avatar = make_avatar()
    path = avatar.save(tmp_path / "me.avatar")
    assert path.name == "me.avatar.npz" and not list(tmp_path.glob(".*partial*"))
    loaded = Avatar.load(path)
    for k in MOTION_INFO_SHAPES:
        np.testing.assert_array_equal(loaded.motion[k], avatar.motion[k])
    for name in ("f_s", "m_c2o", "eye_open", "eye_ball", "sc", "frames"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(avatar, name))
    assert (loaded.is_image, loaded.source, loaded.settings) == (True, "portrait.png", {"crop_scale": 2.3})
    assert loaded.frame_size == (48, 64) and loaded.motion_info(0)["exp"].shape == (1, 63)


def test_video_avatar_has_one_entry_per_frame():
    avatar = make_avatar(frames=3)
    assert avatar.num_frames == 3 and not avatar.is_image


def test_misshapen_parts_are_named():
    good = make_avatar()
    with pytest.raises(AvatarFileError, match=r"avatar part eye_ball: expected shape \(1, 6\), found shape \(1, 5\)"):
        Avatar(**{**good.__dict__, "eye_ball": np.zeros((1, 5), np.float32)})
    motion = dict(good.motion)
    del motion["kp"]
    with pytest.raises(AvatarFileError, match="avatar part motion.kp: expected shape .* found missing"):
        Avatar(**{**good.__dict__, "motion": motion})


def test_files_that_are_not_avatars(tmp_path):
    with pytest.raises(FileNotFoundError, match="avatar file not found"):
        Avatar.load(tmp_path / "none.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(AvatarFileError, match="not an avatar file"):
        Avatar.load(tmp_path / "other.npz")
    np.savez(tmp_path / "objects.npz", meta=np.array([{"a": 1}], dtype=object))
    with pytest.raises(AvatarFileError, match="not an avatar file"):
        Avatar.load(tmp_path / "objects.npz")  # object arrays would need pickle: refused
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(AvatarFileError, match="not an avatar file"):
        Avatar.load(tmp_path / "junk.npz")
