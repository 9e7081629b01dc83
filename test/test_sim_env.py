"""TabletopEnv: determinism, what the cameras see, the Gymnasium API and bad input."""

from __future__ import annotations

import warnings

import mujoco
import numpy as np
import pytest

from vla_ros.sim import COLOURS, SHAPES, TASK_FAMILIES, TabletopEnv
from vla_ros.sim.kinematics import UnreachableError, top_down_ik
from vla_ros.sim.scene import object_name


@pytest.fixture(scope="module")
def env():
    e = TabletopEnv(image_size=(64, 64), seed=0)
    yield e
    e.close()


def _rollout(env, seed, steps=5):
    obs, info = env.reset(seed=seed)
    frames = [obs]
    for _ in range(steps):
        obs, *_ = env.step(env.expert_action())
        frames.append(obs)
    return info["instruction"], frames


def test_same_seed_gives_the_same_episode(env):
    first = _rollout(env, 5)
    other = TabletopEnv(image_size=(64, 64))
    try:
        second = _rollout(other, 5)
    finally:
        other.close()
    assert first[0] == second[0]
    for a, b in zip(first[1], second[1], strict=True):
        np.testing.assert_array_equal(a["state"], b["state"])
        for cam in ("scene", "wrist"):
            np.testing.assert_array_equal(a["images"][cam], b["images"][cam])


def test_images_and_scenes_differ_between_seeds(env):
    obs1, info1 = env.reset(seed=1)
    obs2, info2 = env.reset(seed=2)
    assert info1["task"]["objects"] != info2["task"]["objects"]
    changed = np.any(obs1["images"]["scene"] != obs2["images"]["scene"], axis=-1).mean()
    assert changed > 0.01


def test_observation_matches_contract(env):
    obs, info = env.reset(seed=3, task="pick")
    assert env.cameras == ["scene", "wrist"]
    assert env.state_names == env.action_names == [
        "shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
    for cam in env.cameras:
        assert obs["images"][cam].shape == (64, 64, 3) and obs["images"][cam].dtype == np.uint8
    assert obs["state"].shape == (6,) and obs["state"].dtype == np.float32
    assert env.observation_space.contains(obs)
    assert info["success"] is False and info["task"]["family"] == "pick"
    before = env.elapsed
    obs, reward, terminated, truncated, info = env.step(env.expert_action())
    assert env.elapsed == pytest.approx(before + 0.1)
    assert (reward, terminated, truncated) == (0.0, False, False)


def test_other_image_sizes_render():
    e = TabletopEnv(image_size=(48, 80))
    try:
        obs, _ = e.reset(seed=0)
        assert obs["images"]["wrist"].shape == (48, 80, 3)
    finally:
        e.close()


@pytest.mark.parametrize("seed", range(8))
def test_target_is_visible_in_the_scene_camera(env, seed):
    obs, info = env.reset(seed=seed)
    target = info["task"]["objects"][0]
    renderer = mujoco.Renderer(env.model, 64, 64)
    try:
        renderer.enable_segmentation_rendering()
        renderer.update_scene(env.data, camera="scene")
        seg = renderer.render()
    finally:
        renderer.close()
    geom = env.model.geom(object_name(target["colour"], target["shape"])).id
    mask = (seg[..., 0] == geom) & (seg[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM))
    assert mask.sum() >= 8, f"target covers only {mask.sum()} pixels"
    mean_rgb = obs["images"]["scene"][mask].mean(axis=0)
    assert int(np.argmax(mean_rgb)) == int(np.argmax(COLOURS[target["colour"]]))


def test_instruction_names_a_unique_target_among_distractors(env):
    shares_an_attribute = 0
    for seed in range(20):
        _, info = env.reset(seed=seed)
        task = info["task"]
        target, *others = task["objects"]
        assert f"{target['colour']} {target['shape']}" in info["instruction"]
        assert all((o["colour"], o["shape"]) != (target["colour"], target["shape"]) for o in others)
        shares_an_attribute += any(o["colour"] == target["colour"] or o["shape"] == target["shape"]
                                   for o in others)
    assert shares_an_attribute >= 5  # the instruction is needed: distractors look alike


def test_fixed_task_choices_are_respected(env):
    _, info = env.reset(seed=4, task="place", colour="green", shape="ball")
    task = info["task"]
    assert (task["family"], task["colour"], task["shape"]) == ("place", "green", "ball")
    assert info["instruction"] == "put the green ball in the bowl"
    assert info["task"]["bowl_xy"] is not None


def test_low_level_api(env):
    env.reset(seed=6, task="pick")
    state0 = env.observe()["state"]
    target = state0.copy()
    target[0] += 0.3
    env.set_target(target)
    env.advance(1.0)
    assert env.elapsed == pytest.approx(1.0)
    assert env.observe()["state"][0] == pytest.approx(state0[0] + 0.3, abs=0.02)
    assert env.success() is False


@pytest.mark.parametrize("kwargs, words", [
    ({"task": "stack"}, ["task family 'stack'", *TASK_FAMILIES]),
    ({"colour": "purple"}, ["colour 'purple'", *COLOURS]),
    ({"shape": "pyramid"}, ["shape 'pyramid'", *SHAPES]),
])
def test_unknown_choices_list_the_valid_values(env, kwargs, words):
    with pytest.raises(ValueError) as err:
        env.reset(seed=0, **kwargs)
    for word in words:
        assert word in str(err.value)


def test_impossible_scene_is_refused():
    e = TabletopEnv(num_objects=12, render_images=False)
    with pytest.raises(ValueError, match="num_objects=12 is impossible"):
        e.reset(seed=0)
    crowded = TabletopEnv(num_objects=9, render_images=False)
    with pytest.raises(ValueError, match="impossible scene"):
        crowded.reset(seed=0, task="place")


def test_bad_actions_are_refused(env):
    env.reset(seed=0)
    with pytest.raises(ValueError, match="6 values"):
        env.step(np.zeros(5))
    with pytest.raises(ValueError, match="non-finite"):
        env.step([0, 0, 0, 0, 0, np.nan])
    with pytest.raises(RuntimeError, match="reset"):
        TabletopEnv(render_images=False).expert_action()


def test_ik_matches_forward_kinematics():
    env = TabletopEnv(render_images=False)
    m, d = env.model, env.data
    site = m.site("tool").id
    for target in [(0.15, -0.15, 0.022), (0.31, 0.15, 0.022), (0.12, 0.0, 0.2), (0.25, 0.1, 0.13)]:
        d.qpos[env._arm_qpos] = top_down_ik(np.array(target))
        mujoco.mj_forward(m, d)
        np.testing.assert_allclose(d.site_xpos[site], target, atol=1e-9)
        rot = d.site_xmat[site].reshape(3, 3)
        np.testing.assert_allclose(rot[:, 2], [0, 0, -1], atol=1e-9)  # tool points down
        np.testing.assert_allclose(abs(rot[1, 1]), 1.0, atol=1e-9)  # fingers close along world y
    with pytest.raises(UnreachableError, match="out of the arm's reach"):
        top_down_ik(np.array([0.6, 0.0, 0.0]))


def test_passes_the_gymnasium_env_checker():
    from gymnasium.utils.env_checker import check_env

    e = TabletopEnv(image_size=(32, 32))
    try:
        with warnings.catch_warnings():  # it warns that joint-state bounds are infinite; they are
            warnings.simplefilter("ignore", UserWarning)
            check_env(e, skip_render_check=True)  # spaces, seeding determinism, signatures
    finally:
        e.close()


def test_instruction_styles_reword_the_same_scenes():
    """`instructions=` changes only the wording: same seed, same scene, task and arm start."""
    from vla_ros.sim.paraphrase import HELD_OUT, normalise

    styles = ("templated", "held-out", "casing", "paraphrase")
    envs = {s: TabletopEnv(seed=None, instructions=s) for s in styles}
    try:
        for seed in (3, 4, 5):
            out = {s: e.reset(seed=seed) for s, e in envs.items()}
            base_obs, base_info = out["templated"]
            for style, (obs, info) in out.items():
                assert info["task"]["objects"] == base_info["task"]["objects"], style
                assert np.array_equal(obs["state"], base_obs["state"]), style
            task = base_info["task"]
            held = {normalise(t.format(colour=task["colour"], shape=task["shape"]))
                    for t in HELD_OUT[task["family"]]}
            assert normalise(out["held-out"][1]["instruction"]) in held
            casing = out["casing"][1]["instruction"]
            assert casing != base_info["instruction"] and casing.lower() == base_info["instruction"]
            assert out["paraphrase"][1]["instruction"] != base_info["instruction"]
        with pytest.raises(ValueError, match="instructions='shouted'; valid: templated"):
            TabletopEnv(instructions="shouted")
    finally:
        for e in envs.values():
            e.close()
