import math
import zipfile

import numpy as np
import pytest

from envs import make
from envs.collect import PolicySpec, collect
from envs.voxel_terrain import (
    AIR,
    BOTTOM,
    EYE_HEIGHT,
    FORWARD,
    GRASS,
    LEAVES,
    STONE,
    TOP,
    TURN_LEFT,
    TURN_RIGHT,
    VIEW_DISTANCE,
    X_SIDE,
    Z_SIDE,
    TerrainWalker,
    VoxelTerrainEnv,
    VoxelWorld,
    cast_rays,
    ray_directions,
    render_view,
    sky_colour,
)
from worldmodel.episodes import read_episode

GROUND = 5


def flat_world(pillars: tuple[tuple[int, int], ...] = (), size: int = 64) -> VoxelWorld:
    """Grass at height GROUND everywhere, plus stone pillars 8 blocks tall at the given columns."""
    blocks = np.zeros((size, size, 16), np.uint8)
    blocks[:, :, : GROUND - 1] = STONE
    blocks[:, :, GROUND - 1] = GRASS
    for x, z in pillars:
        blocks[x, z, :13] = STONE
    return VoxelWorld(blocks)


def eye_at(x: float, z: float) -> np.ndarray:
    return np.array([x, GROUND + EYE_HEIGHT, z])


def test_same_seed_same_world_other_seed_other_world():
    np.testing.assert_array_equal(VoxelWorld.generate(3).blocks, VoxelWorld.generate(3).blocks)
    assert not np.array_equal(VoxelWorld.generate(3).blocks, VoxelWorld.generate(4).blocks)


def test_forward_moves_the_step_length_along_the_heading_or_is_refused_and_never_leaves_the_world():
    env = VoxelTerrainEnv(size=16, max_steps=1000)
    moved = refused = 0
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        walker = TerrainWalker(seed)
        for _ in range(150):
            action = walker(obs)
            before = info["pose"].astype(np.float64)
            obs, _, _, _, info = env.step(action)
            after = info["pose"].astype(np.float64)
            if action != FORWARD:
                continue
            step = after[[0, 2]] - before[[0, 2]]
            expected = 0.5 * np.array([math.cos(before[3]), math.sin(before[3])])
            ground = env.world.footprint_height(*(before[[0, 2]] + expected), 0.3)
            if ground is not None and abs(ground - before[1]) <= 1:
                np.testing.assert_allclose(step, expected, atol=1e-5)
                assert after[1] == ground
                moved += 1
            else:
                np.testing.assert_array_equal(after, before)
                refused += 1
            assert 0 < after[0] < env.world_size and 0 < after[2] < env.world_size
    assert moved > 100 and refused > 0
    # 400 steps straight on (200 blocks, twice the world) still end inside it.
    env.reset(seed=0)
    for _ in range(400):
        pose = env.step(FORWARD)[4]["pose"]
    assert 1 < pose[0] < env.world_size - 1 and 1 < pose[2] < env.world_size - 1


def test_bad_terrain_arguments_are_named():
    for kwargs, named in (({"step_length": 1.5}, "step_length"), ({"world_size": 20}, "world_size")):
        with pytest.raises(ValueError, match=named):
            VoxelTerrainEnv(**kwargs)


def test_a_level_view_shows_sky_above_and_ground_below():
    size = 64
    frame = render_view(flat_world(), eye_at(32.5, 32.5), heading=0.0, size=size)
    slope = ray_directions(0.0, size)[..., 1]
    expected_sky = np.clip(sky_colour(slope[0]) + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(frame[0], expected_sky)
    bottom = frame[-1].astype(int)
    assert (bottom[:, 1] > bottom[:, 0]).all() and (bottom[:, 1] > bottom[:, 2]).all()  # grass green


def test_fog_fades_distant_blocks_into_the_sky_and_hides_them_past_the_view_distance():
    size = 64
    eye = eye_at(5.5, 32.5)

    def wall(x: int) -> VoxelWorld:
        return flat_world(tuple((x, z) for z in range(30, 36)))

    def wall_distance_to_sky(x: int) -> float:
        """How far the wall's pixels are from the sky colour behind them, on average."""
        world = wall(x)
        hits = cast_rays(world, eye, 0.0, size)
        on_wall = (hits.block_type == STONE) & (hits.face == X_SIDE)
        frame = render_view(world, eye, 0.0, size).astype(float)
        return float(np.abs(frame - sky_colour(hits.slope))[on_wall].sum(axis=-1).mean())

    assert wall_distance_to_sky(40) < 0.5 * wall_distance_to_sky(20) < wall_distance_to_sky(10)
    beyond = render_view(wall(5 + math.ceil(VIEW_DISTANCE) + 1), eye, 0.0, size)
    np.testing.assert_array_equal(beyond, render_view(flat_world(), eye, 0.0, size))


def test_turning_left_brings_what_was_on_the_left_into_view():
    # Heading grows counter-clockwise from +x towards +z, so a pillar 30 degrees towards +z is left.
    world = flat_world(((32 + 10, 32 + 6),))
    hits = cast_rays(world, eye_at(32.5, 32.5), heading=0.0, size=32)
    columns = np.argwhere(hits.block_type == STONE)[:, 1]
    assert len(columns) and columns.max() < 16


def reference_hit(world: VoxelWorld, eye: np.ndarray, direction: np.ndarray):
    """A plain 3D voxel traversal (Amanatides & Woo) of one ray: block, face and horizontal distance."""
    cell = [math.floor(c) for c in eye]
    step, next_t, delta = [], [], []
    for axis in range(3):
        d = direction[axis]
        step.append(1 if d > 0 else -1)
        next_t.append((cell[axis] + (d > 0) - eye[axis]) / d if d else math.inf)
        delta.append(abs(1 / d) if d else math.inf)
    t, face = 0.0, None
    while t < VIEW_DISTANCE and cell[1] < world.blocks.shape[2]:
        x, z = (min(max(c, 0), world.size - 1) for c in (cell[0], cell[2]))
        if cell[1] >= 0 and world.blocks[x, z, cell[1]] != AIR:
            return (cell[0], cell[1], cell[2]), face, t
        axis = int(np.argmin(next_t))
        t = next_t[axis]
        cell[axis] += step[axis]
        next_t[axis] += delta[axis]
        face = (X_SIDE, TOP if step[1] < 0 else BOTTOM, Z_SIDE)[axis]
    return None


def assert_caster_matches_reference(world: VoxelWorld, eye: np.ndarray, heading: float, size: int):
    """Compare every pixel with the brute-force traversal; return the caster's hits."""
    hits = cast_rays(world, eye, heading, size)
    directions = ray_directions(heading, size)
    for row in range(size):
        for col in range(size):
            expected = reference_hit(world, eye, directions[row, col])
            if expected is None:
                assert not hits.hit[row, col], (row, col)
                continue
            block, face, distance = expected
            assert hits.hit[row, col], (row, col)
            assert (tuple(hits.block[row, col]), hits.face[row, col]) == (block, face), (row, col)
            assert hits.distance[row, col] == pytest.approx(distance, abs=1e-9)
    return hits


def floating_pixels(world: VoxelWorld, hits) -> int:
    """Pixels whose hit block belongs to a column's floating run (leaves)."""
    x, y, z = np.moveaxis(hits.block, -1, 0)
    return int((hits.hit & (world.float_top[x, z] > 0) & (y >= world.float_bottom[x, z])).sum())


def test_the_column_caster_matches_a_brute_force_voxel_traversal():
    env = VoxelTerrainEnv(size=16)
    checked = 0
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        walker = TerrainWalker(seed)
        for _ in range(2):
            for _ in range(20):
                obs = env.step(walker(obs))[0]
            pose = env.pose().astype(np.float64)
            eye = pose[:3] + [0.0, EYE_HEIGHT, 0.0]
            checked += int(assert_caster_matches_reference(env.world, eye, float(pose[3]), 24).hit.sum())
    assert checked > 2000
    # An eye exactly on grid lines, looking along them, is the edge case of the crossing arithmetic;
    # a floating slab ahead and above the eye shows the bottom and side faces of floating runs.
    blocks = flat_world(tuple((32 + dx, 32 + dz) for dx in (-6, 3, 7) for dz in (-4, 0, 5))).blocks.copy()
    blocks[36:40, 29:36, 8:10] = LEAVES
    world = VoxelWorld(blocks)
    faces, floating = set(), 0
    for heading in (0.0, math.pi / 2, math.pi, 3 * math.pi / 2):
        hits = assert_caster_matches_reference(world, eye_at(32.0, 32.0), heading, 16)
        faces |= set(hits.face[hits.block_type == LEAVES].tolist())
        floating += floating_pixels(world, hits)
    assert {BOTTOM, X_SIDE} <= faces and floating > 20


def test_a_world_needs_at_most_one_floating_run_per_column():
    blocks = flat_world().blocks.copy()
    blocks[3, 4, 8] = blocks[3, 4, 11] = STONE
    with pytest.raises(ValueError, match=r"column \(3, 4\)"):
        VoxelWorld(blocks)


def walker_actions(seed: int, steps: int) -> list[int]:
    walker = TerrainWalker(seed)
    # A new frame each step: the walker treats an unchanged frame after a forward step as blocked.
    return [walker(np.full((4, 4, 3), t % 256, np.uint8)) for t in range(steps)]


def test_the_walker_alternates_forward_runs_and_turn_runs_reproducibly():
    actions = walker_actions(5, 400)
    assert actions == walker_actions(5, 400) and actions != walker_actions(6, 400)
    runs = []  # (action, length), consecutive equal actions merged
    for action in actions:
        if runs and runs[-1][0] == action:
            runs[-1][1] += 1
        else:
            runs.append([action, 1])
    complete = runs[:-1]
    assert complete[0][0] == FORWARD
    for (action, length), (next_action, _) in zip(complete, complete[1:]):
        if action == FORWARD:
            assert 5 <= length <= 30 and next_action != FORWARD
        else:
            assert 2 <= length <= 12 and next_action == FORWARD
    assert {TURN_LEFT, TURN_RIGHT} <= {action for action, _ in complete}


def test_the_walker_turns_when_a_forward_step_leaves_the_frame_unchanged():
    walker = TerrainWalker(0)
    frame = np.zeros((4, 4, 3), np.uint8)
    assert walker(frame) == FORWARD
    assert walker(frame) in (TURN_LEFT, TURN_RIGHT)


def test_a_one_way_walker_walks_squares_and_the_scaled_terrain_comes_back():
    from experiments.eval_consistency import PROTOCOLS, revisit_mask

    walker = TerrainWalker(3, forward_steps=(4, 4), turn_steps=(3, 3), one_way=True)
    actions = [walker(np.full((4, 4, 3), t, np.uint8)) for t in range(28)]  # every step moves: frames differ
    turn = actions[4]
    assert actions == ([FORWARD] * 4 + [turn] * 3) * 4 and turn in (TURN_LEFT, TURN_RIGHT)
    env = make("voxel:terrain-small", size=16)
    assert (env.world_size, env.max_steps, env.turn_degrees, env.walker_square) == (48, 99, 30.0, 8)
    scaled, revisiting = PROTOCOLS["scaled"], 0
    for seed in range(4):
        obs, info = env.reset(seed=seed)
        walker, poses, done = env.scripted_policy(seed), [info["pose"]], False
        while not done:
            obs, _, terminated, truncated, info = env.step(walker(obs))
            poses.append(info["pose"])
            done = terminated or truncated
        mask = revisit_mask(np.stack(poses), scaled.context, scaled.horizon, scaled.revisit_distance,
                            scaled.revisit_degrees)
        revisiting += mask.sum() > 0
    assert revisiting >= 3  # a square closes unless trees or water stop it
    with pytest.raises(ValueError, match="quarter turn"):
        make("voxel:terrain-small", turn_degrees=25.0)


def test_make_names_bad_voxel_specs():
    for bad in ("voxel:castle", "minecraft:terrain"):
        with pytest.raises(ValueError, match=bad):
            make(bad)


def test_collect_refuses_noise_on_discrete_actions_and_dmc_episodes_have_no_poses(tmp_path):
    with pytest.raises(ValueError, match="continuous"):
        collect("voxel:terrain", [PolicySpec("noisy", 0.3)], 1, tmp_path / "noisy", max_steps=2)

    dmc = collect("dmc:cartpole-balance", [PolicySpec("random")], 1, tmp_path / "dmc", test_fraction=0, max_steps=2)
    path = tmp_path / "dmc" / next(iter(dmc.episodes))
    assert read_episode(path).poses is None
    members = ["actions.npy", "rewards.npy", "task_id.npy", "terminated.npy", "video.npy"]
    assert sorted(zipfile.ZipFile(path).namelist()) == members
    assert not read_episode(path).terminated  # cut by max_steps, not ended by the task
