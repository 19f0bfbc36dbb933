import dataclasses
import math

import numpy as np
import pytest
from PIL import Image

from envs import make
from envs.maze import (
    BODY_RADIUS,
    DISTINCT_WALL_COLOURS,
    EYE_HEIGHT,
    FORWARD,
    TEXELS,
    TURN_LEFT,
    WALL_HEIGHT,
    DMLabMazeEnv,
    Maze,
    MazeExplorer,
    cast_walls,
    render_view,
    texture_pyramid,
)

# An open 7x9 room with a spawn cell in the middle.
ROOM = """
*********
*       *
*       *
*   P   *
*       *
*       *
*********
"""
# A corridor folded once: the farthest cell from P (1, 1) is (3, 1), 14 steps away.
FOLDED = """
*********
*P      *
******* *
*       *
*********
"""


def face(env: DMLabMazeEnv, degrees: float) -> None:
    """Turn (left only) until the heading is ``degrees``."""
    for _ in range(round(360 / env.turn_degrees)):
        if math.isclose(math.degrees(env.heading), degrees % 360, abs_tol=1e-6):
            return
        env.step(TURN_LEFT)
    raise AssertionError(f"heading {degrees} is not a multiple of the turn")


def body_overlaps_a_wall(maze: Maze, x: float, z: float) -> bool:
    """Whether the square body at (x, z) overlaps the inside of any wall cell (touching a face is fine)."""
    eps = 1e-6
    cols = range(math.floor(x - BODY_RADIUS + eps), math.floor(x + BODY_RADIUS - eps) + 1)
    rows = range(math.floor(z - BODY_RADIUS + eps), math.floor(z + BODY_RADIUS - eps) + 1)
    return any(maze.walls[row, col] for row in rows for col in cols)


def test_same_seed_same_maze_other_seed_other_maze():
    first, again, other = Maze.generate(3), Maze.generate(3), Maze.generate(4)
    for name in ("walls", "region", "wall_textures", "floor_textures"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert first.sky_style == again.sky_style
    assert not np.array_equal(first.walls, other.walls)


def test_a_maze_is_7x7_inside_closed_walls_with_quadrant_textures():
    maze = Maze.generate(0)
    assert maze.shape == (9, 9) and maze.walls[[0, -1]].all() and maze.walls[:, [0, -1]].all()
    open_cells = maze.open_cells
    assert 30 <= len(open_cells) <= 40
    # Every open cell is reachable from every other.
    assert (maze.distances(tuple(open_cells[0]))[~maze.walls] >= 0).all()
    assert set(maze.region[1:4, 1:4].ravel()) == {0} and set(maze.region[5:8, 5:8].ravel()) == {3}
    assert len({texture.tobytes() for texture in maze.wall_textures}) == 4  # four different wall textures


def test_forward_moves_the_step_length_along_the_heading_and_walls_stop_the_body():
    env = DMLabMazeEnv(size=16, max_steps=1000)
    env.reset(seed=0, options={"maze": ROOM})
    assert env.pose()[[0, 2]].tolist() == [4.5, 3.5] and env.pose()[1] == 0.0
    face(env, 20)
    for _ in range(4):  # open space: exactly one step along the heading
        before = env.pose().astype(np.float64)
        after = env.step(FORWARD)[4]["pose"].astype(np.float64)
        expected = 0.25 * np.array([math.cos(math.radians(20)), math.sin(math.radians(20))])
        np.testing.assert_allclose(after[[0, 2]] - before[[0, 2]], expected, atol=1e-6)
    # Walking on at 20 degrees: x stops at the east wall, z slides on to the corner, and stays there.
    for _ in range(40):
        x, _, z, _ = env.step(FORWARD)[4]["pose"]
        assert not body_overlaps_a_wall(env.maze, x, z)
    assert (x, z) == pytest.approx((8 - BODY_RADIUS, 6 - BODY_RADIUS), abs=1e-6)
    # Straight into the west wall (180 degrees): stops touching it, z unchanged.
    face(env, 180)
    for _ in range(40):
        pose = env.step(FORWARD)[4]["pose"]
    assert (pose[0], pose[2]) == pytest.approx((1 + BODY_RADIUS, z), abs=1e-6)


def test_random_walks_never_enter_walls():
    env = DMLabMazeEnv(size=16, max_steps=400)
    rng = np.random.default_rng(0)
    for seed in range(2):
        env.reset(seed=seed)
        for action in rng.choice(3, 400, p=[0.7, 0.15, 0.15]):
            x, _, z, _ = env.step(int(action))[4]["pose"]
            assert not body_overlaps_a_wall(env.maze, x, z)


def test_bad_maze_arguments_and_reset_options_are_named():
    for kwargs, named in (({"maze_size": 8}, "maze_size"), ({"step_length": 0.9}, "step_length")):
        with pytest.raises(ValueError, match=named):
            DMLabMazeEnv(**kwargs)
    env = DMLabMazeEnv(size=16)
    with pytest.raises(ValueError, match="layout"):
        env.reset(seed=0, options={"maze": "***\n* *\n** \n"})
    with pytest.raises(ValueError, match="'start'"):
        env.reset(seed=0, options={"start": (1, 1)})


HALVES = {"top": slice(0, TEXELS // 2), "bottom": slice(TEXELS // 2, None), "all": slice(None),
          "left": slice(0, TEXELS // 2), "right": slice(TEXELS // 2, None)}
WALL_COLOURS = {("top", "left"): (255, 0, 255), ("top", "right"): (0, 255, 255),
                ("bottom", "left"): (255, 255, 0), ("bottom", "right"): (10, 200, 30)}
# Floors: an 8 x 8 checker, in two colours that differ between the quadrants the view crosses (1 and 3).
CHECKER_COLOURS = {1: ((200, 30, 10), (240, 240, 240)), 3: ((30, 10, 200), (120, 60, 0))}


def checker(colours: tuple[tuple[int, int, int], tuple[int, int, int]]) -> np.ndarray:
    """The renderer's pyramid of an 8 x 8 checker: square (row, col) has colour ``colours[(row + col) % 2]``."""
    squares = np.add.outer(np.arange(TEXELS) * 8 // TEXELS, np.arange(TEXELS) * 8 // TEXELS) % 2
    return texture_pyramid(Image.fromarray(np.array(colours, np.uint8)[squares]))


def texture(colours: dict[tuple[str, str], tuple[int, int, int]]) -> np.ndarray:
    """The renderer's pyramid of a TEXELS x TEXELS image painted by (rows, columns) halves."""
    image = np.zeros((TEXELS, TEXELS, 3), np.uint8)
    for (rows, cols), colour in colours.items():
        image[HALVES[rows], HALVES[cols]] = colour
    return texture_pyramid(Image.fromarray(image))


def test_walls_floor_and_sky_match_a_pinhole_camera_pixel_by_pixel():
    """Facing ROOM's east wall from 2 cells away: which pixels show the wall, the floor or the sky, which
    quarter of the wall texture, and which floor quadrant and checker square agree with rays through the
    pixel centres intersected with the wall plane and the floor plane directly."""
    maze = Maze.from_text(ROOM)
    maze = dataclasses.replace(
        maze,
        wall_textures=np.stack([texture(WALL_COLOURS)] * 4),
        floor_textures=np.stack([checker(CHECKER_COLOURS.get(region, ((0, 0, 0),) * 2)) for region in range(4)]),
    )
    size, x, z, wall_x = 64, 6.0, 3.5, 8.0  # the eye on a grid line, as a bonus edge case
    frame = render_view(maze, x, z, heading=0.0, size=size)
    focal = size / 2  # 90 degrees across
    offsets = np.arange(size) + 0.5 - size / 2
    right, down = np.meshgrid(offsets, offsets)  # pixel centres on an image plane at distance focal
    # Heading 0 looks along +x, the right hand points to -z, up is +y.
    depth = wall_x - x
    wall_y = EYE_HEIGHT - down / focal * depth
    wall_z = z - right / focal * depth
    on_wall = (wall_y >= 0) & (wall_y <= WALL_HEIGHT)
    on_floor = wall_y < 0
    # The pinhole formula: a wall 1 tall at depth 2 is 64 / 2 / 2 = 16 pixels tall, in every column.
    assert (on_wall.sum(axis=0) == 16).all()
    shown = {colour: (frame == colour).all(axis=-1) for colour in WALL_COLOURS.values()}
    upper = wall_y > WALL_HEIGHT / 2
    texture_left = wall_z % 1 > 0.5  # u = 1 - frac(z): left to right as seen from the west
    for (rows, cols), colour in WALL_COLOURS.items():
        expected = on_wall & (upper if rows == "top" else ~upper) & (texture_left if cols == "left" else ~texture_left)
        np.testing.assert_array_equal(shown[colour], expected)

    # Floor: where each lower pixel's ray meets y = 0. Within one cell of the eye a checker square is at
    # least a pixel, so the mip levels used keep the squares apart and every pixel is one square's colour.
    with np.errstate(divide="ignore"):
        floor_depth = EYE_HEIGHT / (down / focal)
    near = on_floor & (floor_depth < 1.0)
    floor_x, floor_z = x + floor_depth, z - right / focal * floor_depth
    region = 2 * (floor_z >= 3) + (floor_x >= 4)  # ROOM is 7 x 9: quadrants split at row 3 and column 4
    square = (np.floor(floor_x % 1 * 8) + np.floor(floor_z % 1 * 8)).astype(int) % 2
    palette = np.zeros((4, 2, 3), np.uint8)
    for index, colours in CHECKER_COLOURS.items():
        palette[index] = colours
    expected = palette[region, square]
    assert near.sum() > 500 and set(np.unique(region[near])) == {1, 3}
    np.testing.assert_array_equal(frame[near], expected[near])
    sky = ~on_wall & ~on_floor
    assert sky[0].all() and not any(mask[sky].any() for mask in shown.values())


def test_wall_casting_matches_a_plain_grid_traversal():
    """First wall cell and distance per image column against an Amanatides-Woo walk, one column at a time."""
    env = DMLabMazeEnv(size=16)
    rng = np.random.default_rng(0)
    checked = 0
    for seed in range(3):
        env.reset(seed=seed)
        maze = env.maze
        for row, col in maze.open_cells[rng.choice(len(maze.open_cells), 4, replace=False)]:
            x, z = col + rng.uniform(0.2, 0.8), row + rng.uniform(0.2, 0.8)
            heading = rng.uniform(0, 2 * math.pi)
            hits = cast_walls(maze, x, z, heading, 24)
            offsets = np.arange(24) + 0.5 - 12
            for column, offset in enumerate(offsets):
                angle = heading - math.atan2(offset, 12)
                distance, x_face = reference_wall(maze, x, z, math.cos(angle), math.sin(angle))
                assert hits.distance[column] == pytest.approx(distance, abs=1e-9)
                assert hits.x_face[column] == x_face
                checked += 1
    assert checked == 3 * 4 * 24


def reference_wall(maze: Maze, x: float, z: float, dx: float, dz: float) -> tuple[float, bool]:
    cell = [math.floor(x), math.floor(z)]
    step = [1 if dx > 0 else -1, 1 if dz > 0 else -1]
    next_t = [
        (cell[0] + (dx > 0) - x) / dx if dx else math.inf,
        (cell[1] + (dz > 0) - z) / dz if dz else math.inf,
    ]
    delta = [abs(1 / dx) if dx else math.inf, abs(1 / dz) if dz else math.inf]
    while True:
        axis = 0 if next_t[0] <= next_t[1] else 1
        t = next_t[axis]
        cell[axis] += step[axis]
        next_t[axis] += delta[axis]
        if maze.walls[cell[1], cell[0]]:
            return t, axis == 0


def test_the_explorer_walks_to_the_farthest_cell_and_back():
    env = DMLabMazeEnv(size=16, max_steps=400)
    obs, info = env.reset(seed=0, options={"maze": FOLDED})
    explorer = MazeExplorer(env, seed=0, noise=0.0)
    cells = []
    for _ in range(400):
        obs, _, _, _, info = env.step(explorer(obs))
        cells.append((math.floor(info["pose"][2]), math.floor(info["pose"][0])))
    reached = cells.index((3, 1))
    assert reached < 100  # 14 cells of 4 steps, plus turns
    # Every cell visited, the visited set starts again: back to the far end, (1, 1).
    assert (1, 1) in cells[reached:]


def explore(seed: int, explorer_seed: int, steps: int = 299) -> tuple[list[int], np.ndarray]:
    env = DMLabMazeEnv(size=16)
    obs, info = env.reset(seed=seed)
    explorer = env.scripted_policy(explorer_seed)
    actions, poses = [], [info["pose"]]
    for _ in range(steps):
        action = explorer(obs)
        obs, _, _, _, info = env.step(action)
        actions.append(action)
        poses.append(info["pose"])
    return actions, np.stack(poses)


def test_the_explorer_is_reproducible_and_comes_back_to_places():
    actions, poses = explore(4, 11)
    again, _ = explore(4, 11)
    other, _ = explore(4, 12)
    assert actions == again and actions != other
    assert actions.count(FORWARD) > 120  # it travels: more than 30 cells' worth of forward steps
    # Frames seen again: within half a cell and 30 degrees of a pose at least 40 frames earlier.
    revisits = 0
    for t in range(60, len(poses)):
        earlier = poses[: t - 40]
        near = np.hypot(earlier[:, 0] - poses[t, 0], earlier[:, 2] - poses[t, 2]) < 0.5
        turned = np.abs((earlier[:, 3] - poses[t, 3] + math.pi) % (2 * math.pi) - math.pi)
        revisits += bool((near & (turned < math.radians(30))).any())
    assert revisits >= 20


def test_make_names_bad_maze_specs():
    for bad in ("dmlab:castle", "deepmind:maze"):
        with pytest.raises(ValueError, match=bad):
            make(bad)


def test_the_patrol_visits_far_apart_waypoints_in_a_cycle():
    env = DMLabMazeEnv(size=16, max_steps=600)
    obs, info = env.reset(seed=0, options={"maze": FOLDED})
    patrol = MazeExplorer(env, seed=0, noise=0.0, patrol=2)
    cells = []
    for _ in range(600):
        obs, _, _, _, info = env.step(patrol(obs))
        cells.append((math.floor(info["pose"][2]), math.floor(info["pose"][0])))
    assert patrol.waypoints == [(1, 1), (3, 1)]  # the start, P, and the farthest cell from it
    arrivals = [cells[t] for t in range(1, len(cells)) if cells[t] in patrol.waypoints and cells[t - 1] != cells[t]]
    assert arrivals[:4] == [(3, 1), (1, 1), (3, 1), (1, 1)]  # there and back, again and again
    with pytest.raises(ValueError, match="patrol must be 0"):
        MazeExplorer(env, seed=0, patrol=1)


def test_the_scaled_maze_is_small_distinct_and_comes_back_within_its_episodes():
    from experiments.eval_consistency import PROTOCOLS, revisit_mask

    env = make("dmlab:maze-small", size=16)
    assert (env.maze_size, env.max_steps, env.look, env.patrol) == (5, 99, "distinct", 3)
    assert make("dmlab:maze-small", patrol=0).patrol == 0  # keyword arguments override the preset
    scaled = PROTOCOLS["scaled"]
    orders = set()
    for seed in range(4):
        obs, info = env.reset(seed=seed)
        # the four wall colours, one per quadrant, in an order drawn per maze
        means = [tuple(np.round(texture[0]).astype(int)) for texture in env.maze.wall_textures]
        assert sorted(means) == sorted(DISTINCT_WALL_COLOURS)
        orders.add(tuple(means))
        policy, poses, done = env.scripted_policy(seed), [info["pose"]], False
        while not done:
            obs, _, terminated, truncated, info = env.step(policy(obs))
            poses.append(info["pose"])
            done = terminated or truncated
        assert len(poses) == scaled.context + scaled.horizon == 100
        revisits = revisit_mask(np.stack(poses), scaled.context, scaled.horizon, scaled.revisit_distance,
                                scaled.revisit_degrees)
        assert revisits.sum() >= 10  # a lap is shorter than the context: its views come back
    assert len(orders) > 1
    with pytest.raises(ValueError, match="look must be one of"):
        DMLabMazeEnv(look="pastel")
