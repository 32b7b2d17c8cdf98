"""Camera realism for the synthetic video: determinism, static stretches, building blocks, crf."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmchunk.data.camera import apply_camera, brightness, draw_camera, pixel_noise, shake, shake_path
from mmchunk.data.decode import read_frames
from mmchunk.data.scene import FPS, encode_mp4, render_scene

SCENE = {"shape": "square", "colour": "red", "direction": "left"}
HARSH = {"noise_sigma": 6.0, "flicker": 0.05, "shake_px": 1.5, "zoom": 0.04, "crf": 35}
QUIET = {"noise_sigma": 0.0, "flicker": 0.0, "shake_px": 0.0, "zoom": 0.0, "crf": 18}


def rendered() -> tuple[torch.Tensor, list[list[float]]]:
    """The test scene, 2 s with a silence from 0.5 to 1.5 s: frames `[F, 3, H, W]` uint8 and frozen spans."""
    frames, static = render_scene(SCENE, 2.0, [[0.5, 1.5]])
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(), static


def step_diffs(frames: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference `[F-1]` between each frame and the one before."""
    return (frames[1:].float() - frames[:-1].float()).abs().mean(dim=(1, 2, 3))


def test_draw_camera_is_seeded_plain_and_in_range():
    first, again = draw_camera(np.random.default_rng(3)), draw_camera(np.random.default_rng(3))
    assert first == again
    assert json.loads(json.dumps(first)) == first
    assert draw_camera(np.random.default_rng(4)) != first
    for seed in range(20):
        c = draw_camera(np.random.default_rng(seed))
        assert set(c) == {"noise_sigma", "flicker", "shake_px", "zoom", "crf"}
        assert all(type(c[k]) is float and round(c[k], 4) == c[k] for k in c if k != "crf")
        assert type(c["crf"]) is int and 23 <= c["crf"] <= 35
        assert 1 <= c["noise_sigma"] <= 6 and 0.01 <= c["flicker"] <= 0.05
        assert 0 <= c["shake_px"] <= 1.5 and 0 <= c["zoom"] <= 0.04


def test_apply_camera_same_seed_same_bytes_other_seed_differs():
    frames, _ = rendered()
    a = apply_camera(frames, HARSH, np.random.default_rng(7))
    b = apply_camera(frames, HARSH, np.random.default_rng(7))
    c = apply_camera(frames, HARSH, np.random.default_rng(8))
    assert a.numpy().tobytes() == b.numpy().tobytes()
    assert not torch.equal(a, c)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_static_stretch_is_no_longer_identical_but_stays_close(seed):
    frames, static = rendered()
    start, end = round(static[0][0] * FPS), round(static[0][1] * FPS)
    assert (start, end) == (12, 37)
    # Frames start-1 .. end-1 are one picture; diff k compares frame k+1 with frame k.
    assert (step_diffs(frames)[start - 1 : end - 1] == 0).all()
    condition = HARSH if seed == 0 else draw_camera(np.random.default_rng(seed))
    out = apply_camera(frames, condition, np.random.default_rng(seed))
    diffs = step_diffs(out)
    still = diffs[start - 1 : end - 1]
    moving = torch.cat([diffs[: start - 1], diffs[end - 1 :]])
    assert (still > 0).all()
    assert still.max() < 10 and (out.float() - frames.float()).abs().mean() < 10
    assert moving.mean() > still.mean()


@pytest.mark.parametrize("shape", [(0, 3, 48, 64), (1, 3, 48, 64), (5, 3, 47, 63), (2, 3, 1, 1)])
def test_shape_and_dtype_preserved(shape):
    frames = torch.randint(0, 256, shape, dtype=torch.uint8)
    outs = [
        apply_camera(frames, HARSH, np.random.default_rng(0)),
        pixel_noise(frames, 3.0, np.random.default_rng(0)),
        brightness(frames, 1.3),
        shake(frames, 1.0, np.random.default_rng(0)),
    ]
    for out in outs:
        assert out.shape == frames.shape and out.dtype == torch.uint8


def test_quiet_camera_and_neutral_blocks_are_identity():
    frames, _ = rendered()
    assert torch.equal(apply_camera(frames, QUIET, np.random.default_rng(0)), frames)
    assert torch.equal(brightness(frames, 1.0), frames)
    assert torch.equal(pixel_noise(frames, 0.0, np.random.default_rng(0)), frames)
    assert torch.equal(shake(frames, 0.0, np.random.default_rng(0)), frames)


def test_zoom_starts_at_the_first_frame_and_grows():
    frames, _ = rendered()
    out = apply_camera(frames, {**QUIET, "zoom": 0.04}, np.random.default_rng(0))
    assert torch.equal(out[0], frames[0]) and not torch.equal(out[-1], frames[-1])


def test_brightness_scales_clamps_and_takes_one_factor_per_frame():
    frames = torch.full((2, 3, 4, 5), 200, dtype=torch.uint8)
    assert (brightness(frames, 2.0) == 255).all() and (brightness(frames, 0.5) == 100).all()
    out = brightness(frames, torch.tensor([0.5, 1.0]))
    assert (out[0] == 100).all() and (out[1] == 200).all()


def test_pixel_noise_has_the_asked_spread():
    frames = torch.full((4, 3, 32, 32), 128, dtype=torch.uint8)
    out = pixel_noise(frames, 5.0, np.random.default_rng(0)).float()
    assert abs(out.mean().item() - 128) < 0.3 and abs(out.std().item() - 5.0) < 0.3


def test_shake_path_is_smooth_with_the_asked_spread():
    path = shake_path(4000, 1.5, np.random.default_rng(0)).numpy()
    assert path.shape == (4000, 2)
    assert np.allclose(path.std(axis=0), 1.5, rtol=0.15)
    steps = np.diff(path, axis=0)
    assert steps.std() < 0.5 * path.std()  # low-passed: neighbouring frames move little
    assert shake_path(1, 1.5, np.random.default_rng(0)).shape == (1, 2)


def test_rejects_frames_of_the_wrong_layout():
    with pytest.raises(ValueError, match="uint8"):
        apply_camera(torch.zeros(2, 48, 64, 3, dtype=torch.uint8), HARSH, np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8"):
        brightness(torch.zeros(2, 3, 4, 4), 1.0)


def test_encode_mp4_crf_trades_bytes_and_decodes():
    frames, _ = rendered()
    out = apply_camera(frames, HARSH, np.random.default_rng(0)).permute(0, 2, 3, 1).numpy()
    fine, coarse = encode_mp4(out, crf=18), encode_mp4(out, crf=35)
    assert len(coarse) < len(fine)
    assert encode_mp4(out, crf=35) == coarse
    decoded, rate = read_frames(coarse, backend="pyav")
    assert decoded.shape == out.shape and rate == FPS
    assert np.abs(decoded.astype(np.float32) - out).mean() < 20
