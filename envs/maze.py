"""DMLab-style first-person 3D mazes: labmaze layouts in DMLab's textures, an exact ray caster, a gymnasium
env and the scripted explorer that is its expert.

The long-horizon video-prediction benchmark (TECO's DMLab protocol) needs first-person videos of random
7x7 mazes that look like DeepMind Lab, in which the agent comes back to places it has seen. DeepMind Lab
does not install here; Memory Maze (labmaze mazes in MuJoCo) steps its physics at 12-21 steps/s per core,
too slow for >= 1000 episodes of 300 frames an hour on two cores; MiniWorld does not look like DMLab. So
the layouts come from ``labmaze`` (DMLab's own maze generator) and are drawn here, with the DMLab textures
that labmaze's wheel ships (wall and floor sets in five styles, three sky boxes).

Geometry, as DMLab's text levels build it, in cells (one cell is 100 Quake units): each character of
labmaze's entity layer is one cell; ``'*'`` is a wall cell one cell tall, anything else is floor. A wall face
takes the texture set of the open cell in front of it, as DMLab's level translator textures each wall by
the floor cell it bounds; the sets are chosen per quadrant of the maze. The level is open to a sky box.
The eye is 0.5 above the floor (Quake III: 26 units above the player's origin, which is 24 above the feet)
and looks horizontally with Quake's default field of view, 90 degrees across. Cell ``(row, col)`` covers
``x`` in ``[col, col + 1)`` and ``z`` in ``[row, row + 1)``; ``y`` is up.

Why a column ray caster is exact here: the floor is flat and every wall is a full-height box, so all pixels
of an image column (one vertical plane through the eye) meet the same wall face. One 2D DDA per image
column (the sorted grid-line crossings, vectorised over columns) gives the exact first wall face and its
depth along the view axis; a pixel shows that wall where its ray's height there lies in ``[0, 1]``, the
floor below it (a pixel row's floor point is at depth ``EYE_HEIGHT / -rise``: perspective-correct) and the
sky above it. Textures are mipmapped as a GPU would (nearest texel, linear between the two mip levels
nearest the pixel's footprint); there is no fog or distance shading, as DMLab has none. A 64x64 frame
takes about a millisecond on one core.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import labmaze
import numpy as np
from labmaze import assets as labmaze_assets
from PIL import Image

from envs.first_person import FORWARD, TURN_LEFT, TURN_RIGHT, FirstPersonEnv, grid_crossings

WALL, SPAWN = "*", "P"
WALL_HEIGHT = 1.0  # DMLab's text levels build walls one cell tall
EYE_HEIGHT = 0.5
FOV_DEGREES = 90.0  # horizontal; the frame is square, so vertical too
BODY_RADIUS = 0.15  # half width of the body's square footprint: Quake's player box is 30 units across
TEXELS = 64  # texture side at mip level 0 (DMLab's textures are 1024x1024, one per cell face)
_MIP_LEVELS = TEXELS.bit_length()  # 64, 32, ..., 1 texels across
_MIP_OFFSETS = np.cumsum([0] + [(TEXELS >> level) ** 2 for level in range(_MIP_LEVELS)])
_REGIONS = 4  # texture sets per maze: one per quadrant
_MAZE_STREAM = 0xD31AB  # the maze and the explorer draw from one seed without sharing a random stream
_EXPLORER_STREAM = 0xE7913
LOOKS = ("dmlab", "distinct")
# The scaled look: four strongly distinct wall colours, one per quadrant, their order drawn per maze (so a model
# must remember which quadrant is which), on one plain floor under one sky.
DISTINCT_WALL_COLOURS = ((200, 40, 40), (40, 170, 60), (50, 80, 210), (225, 200, 40))
DISTINCT_FLOOR_COLOUR = (110, 110, 110)
DISTINCT_SKY_STYLE = "sky_03"
# The scaled benchmark's maze (``dmlab:maze-small``): a 5x5 maze, half-cell steps and 45-degree turns, a patrol of
# 3 waypoints whose views recur every lap, 100-frame episodes (the scaled protocol: 48 context frames, 52
# predicted), the distinct look.
SMALL_MAZE = {"maze_size": 5, "max_steps": 99, "turn_degrees": 45.0, "step_length": 0.5, "look": "distinct",
              "patrol": 3}


def texture_pyramid(image: Image.Image) -> np.ndarray:
    """A texture as the renderer samples it: a flattened mip pyramid of float32 RGB, box-filtered from ``image``
    to ``TEXELS`` x ``TEXELS``, then ``TEXELS / 2`` and so on down to 1 x 1 texel."""
    image = image.convert("RGB")
    levels = [
        np.asarray(image.resize((TEXELS >> level,) * 2, Image.Resampling.BOX), np.float32).reshape(-1, 3)
        for level in range(_MIP_LEVELS)
    ]
    return np.concatenate(levels)


@lru_cache(maxsize=None)
def _style_textures(style: str) -> tuple[np.ndarray, np.ndarray]:
    """All wall and all floor pyramids of one labmaze style, ``(n, texels, 3)`` each, loaded once per process."""
    walls = labmaze_assets.get_wall_texture_paths(style)
    floors = labmaze_assets.get_floor_texture_paths(style)
    return (
        np.stack([_load_rgb(walls[name], texture_pyramid) for name in sorted(walls)]),
        np.stack([_load_rgb(floors[name], texture_pyramid) for name in sorted(floors)]),
    )


@lru_cache(maxsize=None)
def _distinct_textures() -> tuple[np.ndarray, np.ndarray]:
    """The distinct look's pyramids: the four wall colours, each with two darker vertical bands so that walking
    along a wall shows motion, and the plain floor repeated for the four quadrants."""
    walls = []
    for colour in DISTINCT_WALL_COLOURS:
        texels = np.tile(np.asarray(colour, np.uint8), (TEXELS, TEXELS, 1))
        for band in (TEXELS // 4, 3 * TEXELS // 4):
            texels[:, band - TEXELS // 16 : band + TEXELS // 16] //= 2
        walls.append(texture_pyramid(Image.fromarray(texels)))
    floor = texture_pyramid(Image.new("RGB", (TEXELS, TEXELS), DISTINCT_FLOOR_COLOUR))
    return np.stack(walls), np.stack([floor] * _REGIONS)


def _load_rgb(path: str, convert: Callable[[Image.Image], np.ndarray]) -> np.ndarray:
    """``convert`` applied to the PNG at ``path`` as RGB, the file closed afterwards."""
    with Image.open(path) as image:
        return convert(image.convert("RGBA").convert("RGB"))  # via RGBA: some palettes carry transparency


@lru_cache(maxsize=16)
def _sky_panorama(style: str, size: int) -> np.ndarray:
    """The sky box above the horizon as a panorama ``(elevations, azimuths, 3)``, sampled for ``size``-pixel frames.

    Bins are about one pixel of a ``size``-pixel, 90-degree frame (``size`` elevations over 0-90 degrees,
    ``4 size`` azimuths), and the faces are box-filtered to ``size`` pixels first, so the sky is as sharp as
    the frame and no sharper. Faces follow the usual unfolded-cross layout: left, front, right and back in a
    row, up above the front; the front faces azimuth 0 (+x) and the left face +90 degrees (+z).
    """
    paths = labmaze_assets.get_sky_texture_paths(style)
    faces = {
        name: _load_rgb(
            getattr(paths, name), lambda face: np.asarray(face.resize((size, size), Image.Resampling.BOX), np.float32)
        )
        for name in ("left", "front", "right", "back", "up")
    }
    elevation = (np.arange(size) + 0.5) / size * (math.pi / 2)
    azimuth = (np.arange(4 * size) + 0.5) / (4 * size) * (2 * math.pi)
    cos_el = np.cos(elevation)[:, None]
    front = cos_el * np.cos(azimuth)[None, :]
    left = cos_el * np.sin(azimuth)[None, :]
    up = np.broadcast_to(np.sin(elevation)[:, None], front.shape)
    right, back = -left, -front
    # (face, its axis component, the image column and row in [-1, 1] as functions of the direction).
    with np.errstate(divide="ignore", invalid="ignore"):  # off a face's half-space the values go unused
        layout = (
            ("front", front, right / front, -up / front),
            ("right", right, back / right, -up / right),
            ("back", back, left / back, -up / back),
            ("left", left, front / left, -up / left),
            ("up", up, right / up, front / up),
        )
    chosen = np.argmax(np.stack([axis for _, axis, _, _ in layout]), axis=0)
    panorama = np.zeros((*front.shape, 3), np.float32)
    for index, (name, _, col, row) in enumerate(layout):
        on_face = chosen == index
        c = np.clip(((1 + col[on_face]) / 2 * size).astype(np.int64), 0, size - 1)
        r = np.clip(((1 + row[on_face]) / 2 * size).astype(np.int64), 0, size - 1)
        panorama[on_face] = faces[name][r, c]
    panorama.setflags(write=False)
    return panorama


@dataclass(frozen=True, eq=False)
class Maze:
    """A grid maze and its look: wall cells, spawn cells, a texture set per cell and the sky.

    ``region[row, col]`` says which of the ``wall_textures`` / ``floor_textures`` pyramids the cell uses
    (its floor, and the walls that face it): its quadrant, split at row ``rows // 2`` and column
    ``cols // 2`` (rows 1-3 and 4-7 of a 7x7 maze's 9-row grid). Build one with :meth:`generate` or
    :meth:`from_text`.
    """

    walls: np.ndarray  # (rows, cols) bool, True where a wall fills the cell
    spawns: np.ndarray  # (n, 2) int64 (row, col) of the layout's 'P' cells; (0, 2) when it has none
    region: np.ndarray  # (rows, cols) int64 texture set of each cell
    wall_textures: np.ndarray  # (sets, texels, 3) float32 flattened mip pyramids
    floor_textures: np.ndarray
    sky_style: str

    @classmethod
    def generate(cls, seed: int, size: int = 7, look: str = "dmlab") -> "Maze":
        """A random ``size`` x ``size`` maze (outer walls not counted) and its look (:meth:`from_text`); the same
        seed, the same maze.

        labmaze's grid is ``size + 2`` characters across with the outer walls, one character per cell, the
        way DMLab counts its maze sizes (``explore_goal_locations_small``, "9x9", is an 11x11 text maze).
        Two 3x3 rooms at most and no dead-end removal: corridors and rooms, 33-37 open cells at size 7.
        """
        if size < 3 or size % 2 == 0:
            raise ValueError(f"maze size must be an odd number >= 3 (labmaze's grids are odd), got {size}")
        rng = np.random.default_rng([seed, _MAZE_STREAM])
        layout = labmaze.RandomMaze(
            height=size + 2,
            width=size + 2,
            max_rooms=2,
            room_min_size=3,
            room_max_size=3,
            simplify=False,
            spawns_per_room=0,
            objects_per_room=0,
            random_seed=int(rng.integers(2**31)),
        )
        return cls._build(str(layout.entity_layer), rng, look)

    @classmethod
    def from_text(cls, text: str, seed: int = 0, look: str = "dmlab") -> "Maze":
        """A maze from a DMLab text layout (``'*'`` walls, ``'P'`` spawn cells, other characters floor) and a
        look drawn from ``seed``: ``"dmlab"``, one DMLab style's textures per quadrant, or ``"distinct"``, one
        of four plain colours per quadrant's walls (drawn in a random order) on one floor under one sky. The
        layout must be rectangular and closed by walls."""
        return cls._build(text, np.random.default_rng([seed, _MAZE_STREAM]), look)

    @classmethod
    def _build(cls, text: str, rng: np.random.Generator, look: str) -> "Maze":
        if look not in LOOKS:
            raise ValueError(f"look must be one of {LOOKS}, got {look!r}")
        lines = text.strip("\n").split("\n")
        if len({len(line) for line in lines}) != 1:
            raise ValueError(f"maze layout must be rectangular, got rows of lengths {[len(line) for line in lines]}")
        grid = np.array([list(line) for line in lines])
        walls = grid == WALL
        border = np.concatenate([walls[0], walls[-1], walls[:, 0], walls[:, -1]])
        if not border.all() or walls.all():
            raise ValueError("maze layout must be closed by walls ('*') on its border and have an open cell")
        rows, cols = walls.shape
        region = 2 * (np.arange(rows) >= rows // 2)[:, None] + (np.arange(cols) >= cols // 2)[None, :]
        if look == "distinct":
            wall_textures, floor_textures = _distinct_textures()
            wall_textures, sky_style = wall_textures[rng.permutation(_REGIONS)], DISTINCT_SKY_STYLE
        else:
            # One DMLab style per maze, its textures drawn per quadrant without repeats (every style has >= 4).
            style = labmaze_assets.MAZE_STYLES[rng.integers(len(labmaze_assets.MAZE_STYLES))]
            all_walls, all_floors = _style_textures(style)
            wall_sets = rng.choice(len(all_walls), _REGIONS, replace=False)
            floor_sets = rng.choice(len(all_floors), _REGIONS, replace=False)
            sky_style = labmaze_assets.SKY_STYLES[rng.integers(len(labmaze_assets.SKY_STYLES))]
            wall_textures, floor_textures = all_walls[wall_sets], all_floors[floor_sets]
        return cls(
            walls=walls,
            spawns=np.argwhere(grid == SPAWN).astype(np.int64).reshape(-1, 2),
            region=region.astype(np.int64),
            wall_textures=wall_textures,
            floor_textures=floor_textures,
            sky_style=sky_style,
        )

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the grid, outer walls included."""
        return self.walls.shape

    @property
    def open_cells(self) -> np.ndarray:
        """``(n, 2)`` (row, col) of every open cell, in row-major order."""
        return np.argwhere(~self.walls)

    def distances(self, start: tuple[int, int]) -> np.ndarray:
        """Steps (4-neighbour moves between open cells) from ``start`` to every cell; -1 where unreachable."""
        distance = np.full(self.walls.shape, -1, np.int64)
        distance[start] = 0
        queue = deque([start])
        while queue:
            row, col = queue.popleft()
            for neighbour in ((row - 1, col), (row, col + 1), (row + 1, col), (row, col - 1)):
                if not self.walls[neighbour] and distance[neighbour] < 0:
                    distance[neighbour] = distance[row, col] + 1
                    queue.append(neighbour)
        return distance

    def move(self, x: float, z: float, dx: float, dz: float, radius: float = BODY_RADIUS) -> tuple[float, float]:
        """Where a square body of half width ``radius`` at ``(x, z)`` ends up when it moves by ``(dx, dz)``.

        The x part of the move is made first, then the z part, each stopped where the body touches a wall
        face: the body slides along walls (Quake's slide move, for a square footprint). Moves shorter than
        ``1 - 2 radius`` cannot pass through a wall.
        """
        x = self._slide(x, z, dx, radius, along_x=True)
        z = self._slide(z, x, dz, radius, along_x=False)
        return x, z

    def _slide(self, along: float, across: float, delta: float, radius: float, along_x: bool) -> float:
        eps = 1e-9  # touching a wall face is allowed; overlapping it is not
        lanes = range(math.floor(across - radius + eps), math.floor(across + radius - eps) + 1)
        target = along + delta
        if delta > 0:
            first, last, step = math.floor(along + radius - eps) + 1, math.floor(target + radius - eps), 1
        else:
            first, last, step = math.floor(along - radius + eps) - 1, math.floor(target - radius + eps), -1
        for cell in range(first, last + step, step):
            blocked = any(self.walls[(lane, cell) if along_x else (cell, lane)] for lane in lanes)
            if blocked:
                return cell - radius if delta > 0 else cell + 1 + radius
        return target


@dataclass(frozen=True)
class WallHits:
    """Per image column: the first wall face its vertical plane meets."""

    distance: np.ndarray  # (W,) horizontal distance from the eye along the column's ray
    depth: np.ndarray  # (W,) the same along the view axis (what perspective divides by)
    across: np.ndarray  # (W,) texture coordinate across the face in [0, 1), left to right as seen
    x_face: np.ndarray  # (W,) bool: the face is perpendicular to x (else to z)
    region: np.ndarray  # (W,) texture set of the open cell in front of the face
    footprint: np.ndarray  # (W,) cells of wall one pixel covers (the larger of its width and height)


@lru_cache(maxsize=8)
def _camera(size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-column yaw offsets (radians, left positive), per-row rise per unit of depth (up positive), focal length."""
    focal = (size / 2) / math.tan(math.radians(FOV_DEGREES) / 2)
    centres = np.arange(size) + 0.5 - size / 2
    yaw_offset = -np.arctan2(centres, focal)  # image columns run rightwards
    rise = -centres / focal  # image rows run downwards
    yaw_offset.setflags(write=False)
    rise.setflags(write=False)
    return yaw_offset, rise, focal


def cast_walls(maze: Maze, x: float, z: float, heading: float, size: int) -> WallHits:
    """The first wall face each image column sees from ``(x, z)`` facing ``heading`` (see the module docstring)."""
    yaw_offset, _, focal = _camera(size)
    angle = heading + yaw_offset
    dx, dz = np.cos(angle), np.sin(angle)
    rows, cols = maze.shape
    per_axis = max(rows, cols) + 1  # grid lines a ray can cross per axis before leaving the grid
    distance_at, crosses_x, sign_x, sign_z = grid_crossings(x, z, dx, dz, per_axis)
    # Cells along each column's ray; index 0 is the eye's cell, index k + 1 the cell entered at crossing k
    # (at distance_at[:, k]).
    cell_x = math.floor(x) + sign_x[:, None] * np.cumsum(crosses_x, axis=1)
    cell_z = math.floor(z) + sign_z[:, None] * np.cumsum(~crosses_x, axis=1)
    inside = (cell_x >= 0) & (cell_x < cols) & (cell_z >= 0) & (cell_z < rows)
    is_wall = ~inside | maze.walls[np.clip(cell_z, 0, rows - 1), np.clip(cell_x, 0, cols - 1)]
    hit = np.argmax(is_wall, axis=1)  # the ray leaves the grid at the latest, so every column has one
    column = np.arange(size)
    distance = distance_at[column, hit]
    x_face = crosses_x[column, hit]
    before = hit - 1  # the open cell in front of the face (the eye's own when the first crossing hits)
    front_x = np.where(before >= 0, cell_x[column, np.maximum(before, 0)], math.floor(x))
    front_z = np.where(before >= 0, cell_z[column, np.maximum(before, 0)], math.floor(z))
    hit_x, hit_z = x + distance * dx, z + distance * dz
    # Across the face, left to right as seen: facing +x the right hand points to -z, facing +z to +x.
    across = np.where(
        x_face,
        np.where(dx > 0, 1 - (hit_z - np.floor(hit_z)), hit_z - np.floor(hit_z)),
        np.where(dz > 0, hit_x - np.floor(hit_x), 1 - (hit_x - np.floor(hit_x))),
    )
    cos_offset = np.cos(yaw_offset)
    depth = distance * cos_offset
    # One pixel covers depth / focal of wall vertically, and across the face the width of one column's
    # step of angle (cos^2 offset / focal radians) at this distance, stretched by the face's obliqueness.
    incidence = np.maximum(np.where(x_face, np.abs(dx), np.abs(dz)), 1e-6)
    footprint = np.maximum(depth / focal, distance * cos_offset**2 / (focal * incidence))
    return WallHits(distance, depth, np.clip(across, 0.0, 1.0 - 1e-9), x_face, maze.region[front_z, front_x], footprint)


def _sample(
    pyramids: np.ndarray, region: np.ndarray, u: np.ndarray, v: np.ndarray, footprint: np.ndarray
) -> np.ndarray:
    """Texture colours at ``(u, v)`` in [0, 1) of ``pyramids[region]``, for pixels covering ``footprint`` cells:
    the nearest texel of the two mip levels around ``log2(TEXELS * footprint)``, blended linearly."""
    level = np.clip(np.log2(np.maximum(TEXELS * footprint, 1.0)), 0.0, _MIP_LEVELS - 1)
    lower = np.minimum(level.astype(np.int64), _MIP_LEVELS - 2)
    blend = (level - lower)[..., None]
    flat = pyramids.reshape(-1, 3)
    base = region * pyramids.shape[1]
    colours = []
    for mip in (lower, lower + 1):
        side = TEXELS >> mip
        row = np.minimum((v * side).astype(np.int64), side - 1)
        col = np.minimum((u * side).astype(np.int64), side - 1)
        colours.append(flat[base + _MIP_OFFSETS[mip] + row * side + col])
    return colours[0] * (1 - blend) + colours[1] * blend


def render_view(maze: Maze, x: float, z: float, heading: float, size: int = 64) -> np.ndarray:
    """The ``(size, size, 3)`` uint8 first-person frame from ``(x, z)`` (eye at ``EYE_HEIGHT``) facing ``heading``."""
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    yaw_offset, rise, focal = _camera(size)
    walls = cast_walls(maze, x, z, heading, size)
    height = EYE_HEIGHT + rise[:, None] * walls.depth[None, :]  # where each pixel's ray meets the wall plane
    on_wall = (height >= 0.0) & (height <= WALL_HEIGHT)
    on_floor = height < 0.0
    on_sky = ~on_wall & ~on_floor
    frame = np.empty((size, size, 3), np.float32)

    rows, cols = np.nonzero(on_wall)
    frame[rows, cols] = _sample(
        maze.wall_textures,
        walls.region[cols],
        walls.across[cols],
        np.clip(WALL_HEIGHT - height[rows, cols], 0.0, 1.0 - 1e-9),
        walls.footprint[cols],
    )

    rows, cols = np.nonzero(on_floor)
    angle = heading + yaw_offset[cols]
    cos_offset = np.cos(yaw_offset[cols])
    depth = EYE_HEIGHT / -rise[rows]
    distance = depth / cos_offset
    floor_x, floor_z = x + distance * np.cos(angle), z + distance * np.sin(angle)
    cell_x = np.clip(np.floor(floor_x).astype(np.int64), 0, maze.shape[1] - 1)
    cell_z = np.clip(np.floor(floor_z).astype(np.int64), 0, maze.shape[0] - 1)
    # Across the image a pixel covers depth / focal of floor; down it, the depth change of one row, along the ray.
    footprint = np.maximum(depth / focal, depth**2 / (EYE_HEIGHT * focal * cos_offset))
    frame[rows, cols] = _sample(
        maze.floor_textures,
        maze.region[cell_z, cell_x],
        floor_x - np.floor(floor_x),
        floor_z - np.floor(floor_z),
        footprint,
    )

    rows, cols = np.nonzero(on_sky)
    panorama = _sky_panorama(maze.sky_style, size)
    elevation = np.arctan(rise[rows] * np.cos(yaw_offset[cols]))
    azimuth = np.mod(heading + yaw_offset[cols], 2 * math.pi)
    el_bin = np.clip((elevation / (math.pi / 2) * panorama.shape[0]).astype(np.int64), 0, panorama.shape[0] - 1)
    az_bin = np.minimum((azimuth / (2 * math.pi) * panorama.shape[1]).astype(np.int64), panorama.shape[1] - 1)
    frame[rows, cols] = panorama[el_bin, az_bin]
    return np.clip(frame + 0.5, 0, 255).astype(np.uint8)


class DMLabMazeEnv(FirstPersonEnv):
    """First-person walks through a fresh DMLab-style maze per episode: ``(size, size, 3)`` uint8 frames, 3 actions.

    Actions: 0 moves ``step_length`` cells along the heading, 1 turns left and 2 turns right by
    ``turn_degrees`` (TECO's DMLab set: forward and turns of about 20 degrees). The heading is kept as an
    integer number of turns, so it never drifts. The default step, a quarter cell (25 Quake units), makes
    375 units/s at 15 agent steps per second (DMLab's usual 60 fps with 4 repeats), near Quake III's
    default run speed of 320 units/s, and crosses a cell in 4 steps. The body is a square of half width
    ``BODY_RADIUS`` that slides along walls (:meth:`Maze.move`). ``reset(seed=...)`` builds a new maze
    (:meth:`Maze.generate`) and a start (a random open cell's centre, a random multiple of the turn) from
    the seed; ``options={"maze": text}`` uses a fixed DMLab text layout instead, starting on one of its
    ``'P'`` cells if it has any. Episodes truncate after ``max_steps`` steps: the default 299 gives the
    benchmark's 300 frames with the reset frame, as ``wm collect --max-steps`` counts steps. ``look`` is the
    mazes' look (:meth:`Maze.from_text`) and ``patrol`` the scripted policy's route (:class:`MazeExplorer`);
    ``dmlab:maze-small`` is this env with :data:`SMALL_MAZE`, the scaled benchmark's.
    ``info["pose"]`` is :meth:`pose` after every call, in the layout of ``envs.voxel_terrain``'s poses: y is 0
    on the floor, x and z are in cells (x along columns, z along rows).
    """

    metadata = {**FirstPersonEnv.metadata, "render_fps": 15}

    def __init__(
        self, size: int = 64, maze_size: int = 7, max_steps: int = 299, turn_degrees: float = 20.0,
        step_length: float = 0.25, render_mode: str = "rgb_array", look: str = "dmlab", patrol: int = 0,
    ) -> None:
        if maze_size < 3 or maze_size % 2 == 0:
            raise ValueError(f"maze_size must be an odd number >= 3 (labmaze's grids are odd), got {maze_size}")
        if not 0 < step_length < 1 - 2 * BODY_RADIUS:
            raise ValueError(f"step_length must be in (0, {1 - 2 * BODY_RADIUS:g}) cells, got {step_length}")
        if look not in LOOKS:
            raise ValueError(f"look must be one of {LOOKS}, got {look!r}")
        _check_patrol(patrol)
        super().__init__(size, max_steps, turn_degrees, step_length, render_mode)
        self.maze_size, self.look, self.patrol = maze_size, look, patrol
        self.maze: Maze | None = None

    def scripted_policy(self, seed: int) -> "MazeExplorer":
        """This env's expert for ``wm collect --policies expert``: the explorer on this env's route, seeded with
        ``seed``."""
        return MazeExplorer(self, seed, patrol=self.patrol)

    def _build_world(self, seed: int, options: dict[str, Any]) -> np.ndarray:
        unknown = set(options) - {"maze"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}: the only option is 'maze' (a text layout)")
        if "maze" in options:
            self.maze = Maze.from_text(options["maze"], seed, self.look)
        else:
            self.maze = Maze.generate(seed, self.maze_size, self.look)
        starts = self.maze.spawns if len(self.maze.spawns) else self.maze.open_cells
        row, col = starts[self.np_random.integers(len(starts))]
        return np.array([col + 0.5, 0.0, row + 0.5], np.float64)

    def _walk(self, dx: float, dz: float) -> np.ndarray:
        x, z = self.maze.move(self._position[0], self._position[2], dx, dz)
        return np.array([x, 0.0, z], np.float64)

    def _view(self) -> np.ndarray:
        return render_view(self.maze, self._position[0], self._position[2], self.heading, self.size)


def _check_patrol(patrol: int) -> None:
    if patrol == 1 or patrol < 0:
        raise ValueError(f"patrol must be 0 (explore) or a number of waypoints >= 2, got {patrol}")


class MazeExplorer:
    """The scripted explorer: the shortest path to the farthest unvisited cell, with noise, so places recur.

    It marks the cell it stands in as visited; when it has no target or stands on it, it picks the open cell
    farthest (in BFS steps) from here among those not visited yet (ties at random) and, once every cell is
    visited, starts again with a fresh visited set. With ``patrol`` k >= 2 it patrols instead: its first
    cell and k - 1 more, each as far as can be from those chosen before (ties at random), visited in a cycle,
    so that every view comes back once per lap (the scaled benchmark's guaranteed revisits). Each step it
    aims at the centre of the next cell on a shortest path: it turns towards it when the heading is more
    than 0.6 turns off, else moves forward (a straight line to a neighbouring cell's centre never crosses a
    wall: two neighbouring cells form a rectangle). With probability ``noise`` a uniformly random action replaces the planned one, and a
    forward step that did not move (a wall) is followed by a turn. It reads the env's maze and pose, as
    the DMC experts read the physics, but acts only through the env's actions; a new maze in the env
    starts a new exploration. The same seed and env seed give the same actions.
    """

    def __init__(self, env: DMLabMazeEnv, seed: int, noise: float = 0.1, patrol: int = 0) -> None:
        if not 0 <= noise <= 1:
            raise ValueError(f"noise must be a probability in [0, 1], got {noise}")
        _check_patrol(patrol)
        self._env = env
        self._rng = np.random.default_rng([seed, _EXPLORER_STREAM])
        self.noise, self.patrol = noise, patrol
        self._maze: Maze | None = None
        self.visited = np.zeros((0, 0), bool)
        self.waypoints: list[tuple[int, int]] = []  # the patrol's cells, in the order it visits them
        self.target: tuple[int, int] | None = None
        self._to_target = np.zeros((0, 0), np.int64)  # BFS steps from every cell to the target
        self._last_step: tuple[float, float] | None = None  # where the last forward step started, if it was one

    def __call__(self, observation: np.ndarray) -> int:
        env = self._env.unwrapped
        if env.maze is None:
            raise RuntimeError("the explorer's env has no maze: call reset() on it first")
        x, _, z, heading = (float(value) for value in env.pose())
        cell = (math.floor(z), math.floor(x))
        if env.maze is not self._maze:
            self._maze = env.maze
            self.visited = np.zeros(env.maze.shape, bool)
            self.waypoints = self._patrol_route(cell) if self.patrol else []
            self.target = None
            self._last_step = None
        self.visited[cell] = True
        if self.target is None or cell == self.target:
            if self.waypoints:
                self._next_waypoint(cell)
            else:
                self._choose_target(cell)
        action = self._plan(x, z, heading, cell)
        if self._rng.random() < self.noise:
            action = int(self._rng.integers(3))
        self._last_step = (x, z) if action == FORWARD else None
        return action

    def _choose_target(self, cell: tuple[int, int]) -> None:
        distance = self._maze.distances(cell)
        candidates = (distance > 0) & ~self.visited
        if not candidates.any():
            self.visited[:] = False
            self.visited[cell] = True
            candidates = distance > 0
        if not candidates.any():  # a one-cell maze: stay
            self.target = cell
        else:
            farthest = np.argwhere(candidates & (distance == distance[candidates].max()))
            self.target = tuple(int(i) for i in farthest[self._rng.integers(len(farthest))])
        self._to_target = self._maze.distances(self.target)

    def _patrol_route(self, start: tuple[int, int]) -> list[tuple[int, int]]:
        """The start cell and ``patrol - 1`` more, each the farthest (in BFS steps) from those before."""
        route = [start]
        nearest = self._maze.distances(start).astype(np.float64)
        nearest[nearest < 0] = -np.inf  # walls and unreachable cells
        for _ in range(self.patrol - 1):
            if nearest.max() <= 0:
                break  # fewer open cells than waypoints
            farthest = np.argwhere(nearest == nearest.max())
            route.append(tuple(int(i) for i in farthest[self._rng.integers(len(farthest))]))
            nearest = np.minimum(nearest, self._maze.distances(route[-1]))
        return route

    def _next_waypoint(self, cell: tuple[int, int]) -> None:
        """Aim at the waypoint after the one reached (the first one beyond ``cell`` at the start)."""
        at = self.waypoints.index(cell) if cell in self.waypoints else -1
        self.target = self.waypoints[(at + 1) % len(self.waypoints)]
        self._to_target = self._maze.distances(self.target)

    def _plan(self, x: float, z: float, heading: float, cell: tuple[int, int]) -> int:
        row, col = cell
        next_cell = cell
        for neighbour in ((row - 1, col), (row, col + 1), (row + 1, col), (row, col - 1)):
            if 0 <= self._to_target[neighbour] < self._to_target[cell]:
                next_cell = neighbour
                break
        bearing = math.atan2(next_cell[0] + 0.5 - z, next_cell[1] + 0.5 - x)
        error = (bearing - heading + math.pi) % (2 * math.pi) - math.pi
        turn = TURN_LEFT if error > 0 else TURN_RIGHT
        blocked = self._last_step is not None and self._last_step == (x, z)
        # Forward within 0.6 of a turn, not 0.5: headings exactly half a turn either side of the bearing
        # (80 and 100 degrees to a cell due +z) would otherwise swap for ever without a step.
        if blocked or abs(error) > 0.6 * math.radians(self._env.unwrapped.turn_degrees):
            return turn
        return FORWARD
