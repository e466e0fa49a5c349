"""Grouping of scan positions into solution regions (docs/design.md §5).

A group holds C = gridsize**2 scan positions. For gridsize 1 each group is one position.
For gridsize > 1, ``n_groups`` seed positions are drawn (seeded, without replacement), the
K = ``neighbor_count`` nearest neighbours of each seed are looked up with a KD-tree over the
WHOLE scan that is passed in, and the seed plus C - 1 of its K - 1 other neighbours (seeded)
form the group. Neighbours are never searched among the seeds only, which is what let the
reference implementation build groups spanning the whole field.

Channel order (row-major, matching channel c -> grid cell (c // g, c % g)): the C members are
sorted by y into g rows of g, and each row by x. ``nn_indices[:, c]`` is the scan index of
channel c, and every coordinate array below uses the same channel order.

Coordinates (pixels, index 0 on axis 2 is x, 1 is y):
    coords_nn        (B, 1, 2, C) float64  absolute positions of the members
    coords_offsets   (B, 1, 2, 1) float64  their mean (the group centre)
    coords_relative  (B, 1, 2, C) float64  -(coords_nn - coords_offsets)  (local offset sign -1)

Limits: 1 <= n_groups <= n (seeds are distinct scan positions); for gridsize > 1 also
C <= neighbor_count <= n.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree


class GroupingError(ValueError):
    """An impossible grouping request or unusable coordinates."""


@dataclass(frozen=True, eq=False)
class Groups:
    """Groups of scan positions; shapes as in the module docstring, B = number of groups."""

    nn_indices: np.ndarray
    coords_nn: np.ndarray
    coords_offsets: np.ndarray
    coords_relative: np.ndarray
    gridsize: int

    @property
    def n_groups(self) -> int:
        return int(self.nn_indices.shape[0])

    @property
    def channels(self) -> int:
        """C = gridsize**2."""
        return int(self.nn_indices.shape[1])


def group_positions(
    xcoords: np.ndarray,
    ycoords: np.ndarray,
    gridsize: int,
    neighbor_count: int,
    n_groups: int,
    seed: int,
) -> Groups:
    """Group scan positions ``(n,)`` x/y pixels into ``n_groups`` groups of ``gridsize**2``.

    Deterministic for a given seed. Raises GroupingError for impossible requests.
    """
    points = _points(xcoords, ycoords)
    n = len(points)
    _require_int(gridsize, "gridsize", 1)
    _require_int(neighbor_count, "neighbor_count", 1)
    _require_int(n_groups, "n_groups", 1)
    channels = gridsize**2
    if neighbor_count < channels:
        raise GroupingError(
            f"neighbor_count (K={neighbor_count}) must be >= gridsize**2 (C={channels}): "
            "a group takes C of the K nearest neighbours"
        )
    if gridsize > 1 and neighbor_count > n:
        raise GroupingError(f"neighbor_count (K={neighbor_count}) exceeds the number of scan positions ({n})")
    if n_groups > n:
        raise GroupingError(
            f"n_groups ({n_groups}) exceeds the number of scan positions ({n}): "
            "each group needs a distinct seed position"
        )
    rng = np.random.default_rng(seed)
    seeds = rng.choice(n, size=n_groups, replace=False)
    if gridsize == 1:
        members = seeds[:, None]
    else:
        members = _choose_neighbours(points, seeds, neighbor_count, channels, rng)
        members = _row_major(members, points, gridsize)
    return _groups(members.astype(np.int64), points, gridsize)


def compact_subset(xcoords: np.ndarray, ycoords: np.ndarray, n_images: int, seed: int) -> np.ndarray:
    """Indices (n_images,) int64, ascending, of the n_images positions nearest a seeded scan point.

    A spatially compact patch of the scan, never a random scatter over the field.
    """
    points = _points(xcoords, ycoords)
    _require_int(n_images, "n_images", 1)
    if n_images > len(points):
        raise GroupingError(f"n_images ({n_images}) exceeds the number of scan positions ({len(points)})")
    centre = points[np.random.default_rng(seed).integers(len(points))]
    _, nearest = cKDTree(points).query(centre, k=n_images)
    return np.sort(np.atleast_1d(nearest)).astype(np.int64)


def _choose_neighbours(
    points: np.ndarray, seeds: np.ndarray, neighbor_count: int, channels: int, rng: np.random.Generator
) -> np.ndarray:
    """(B, C) indices: each seed plus C - 1 of its K - 1 nearest other positions, seeded."""
    _, neighbours = cKDTree(points).query(points[seeds], k=neighbor_count)
    neighbours = neighbours.reshape(len(seeds), neighbor_count)
    drop = neighbours == seeds[:, None]
    # With more than K duplicates of a position the seed may be missing; drop the farthest instead.
    drop[~drop.any(axis=1), -1] = True
    others = neighbours[~drop].reshape(len(seeds), neighbor_count - 1)
    pick = np.argsort(rng.random(others.shape), axis=1)[:, : channels - 1]
    return np.concatenate([seeds[:, None], np.take_along_axis(others, pick, axis=1)], axis=1)


def _row_major(members: np.ndarray, points: np.ndarray, gridsize: int) -> np.ndarray:
    """Order each group's members by y into gridsize rows, then each row by x."""
    n_groups = len(members)
    by_y = np.take_along_axis(members, np.argsort(points[members, 1], axis=1, kind="stable"), axis=1)
    rows = by_y.reshape(n_groups, gridsize, gridsize)
    by_x = np.argsort(points[rows, 0], axis=2, kind="stable")
    return np.take_along_axis(rows, by_x, axis=2).reshape(n_groups, gridsize**2)


def _groups(members: np.ndarray, points: np.ndarray, gridsize: int) -> Groups:
    coords_nn = np.transpose(points[members], (0, 2, 1))[:, None, :, :]
    coords_offsets = coords_nn.mean(axis=3, keepdims=True)
    return Groups(
        nn_indices=members,
        coords_nn=coords_nn,
        coords_offsets=coords_offsets,
        coords_relative=-(coords_nn - coords_offsets),
        gridsize=gridsize,
    )


def _points(xcoords: np.ndarray, ycoords: np.ndarray) -> np.ndarray:
    """(n, 2) float64 [x, y] positions, checked."""
    x = np.asarray(xcoords, dtype=np.float64)
    y = np.asarray(ycoords, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise GroupingError(f"xcoords and ycoords must be 1-D of equal length; got {x.shape} and {y.shape}")
    if len(x) == 0:
        raise GroupingError("no scan positions given")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise GroupingError("xcoords/ycoords contain NaN or Inf")
    return np.stack([x, y], axis=1)


def _require_int(value, name: str, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise GroupingError(f"{name} must be an integer >= {minimum}; got {value!r}")
