"""The motion side of a job: the condition handler and the clip generator its options describe."""

from __future__ import annotations

from collections.abc import Mapping

from ditto_fast.avatar import Avatar
from ditto_fast.backends.base import Network
from ditto_fast.options import RenderOptions
from ditto_fast.stages.condition import ConditionHandler
from ditto_fast.stages.motion import Audio2Motion, Audio2MotionOptions, GaussianNoise


def motion_setup(networks: Mapping[str, Network], avatar: Avatar,
                 options: RenderOptions) -> tuple[ConditionHandler, Audio2Motion]:
    """The condition handler and the clip generator the options describe (offline or online,
    per `options.online_mode`); the condition source is `ch_info` when given."""
    condition_source: Avatar = options.ch_info or avatar
    condition = ConditionHandler(condition_source.sc, condition_source.eye_open, condition_source.eye_ball,
                                 emo=options.emo, eye_f0_mode=options.eye_f0_mode)
    a2m = Audio2Motion(
        networks["lmdm"], condition_source.motion_info(0),
        Audio2MotionOptions(
            overlap=options.overlap_v2, smo_k_d=options.smo_k_d, fix_kp_cond=options.fix_kp_cond,
            fix_kp_cond_dim=options.fix_kp_cond_dim, sampling_timesteps=options.sampling_timesteps,
            online_mode=options.online_mode, v_min_max_for_clip=options.v_min_max_for_clip,
        ),
        noise=GaussianNoise(options.seed),
    )
    return condition, a2m
