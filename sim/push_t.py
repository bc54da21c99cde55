"""Push-T: the T block's geometry, its coverage of the goal, and a scripted pushing expert.

The block is a T of two rectangles, in its own frame (origin at the junction of
bar and stem, metres): the bar spans x ∈ [-0.06, 0.06], y ∈ [0, 0.03]; the stem
x ∈ [-0.015, 0.015], y ∈ [-0.09, 0] (Diffusion Policy's Push-T at 1 px = 1 mm).
sim/robots/pusher/pusher.xml holds the same numbers. A planar pose is
(x, y, yaw): the block frame's origin in the world and its rotation about z.

Coverage is the area of the block's T inside the goal's T over the T's area,
computed on a 1 mm grid of points of the goal T (error about ±0.5 %), for every
world at once:

    coverage(block_pose, GOAL_POSE)          # block_pose: (N, 3) → (N,) in [0, 1]
    expert = ScriptedPushExpert()
    targets = expert(pusher_xy, block_pose)  # (N, 2) pusher position targets, m
"""

from __future__ import annotations

import numpy as np

from s2r.geometry import wrap_to_pi

T_RECTS = np.array([[0.0, 0.015, 0.06, 0.015], [0.0, -0.045, 0.015, 0.045]])
"""The T's rectangles in the block frame: centre x, centre y, half width, half height (m)."""
T_AREA = float(np.sum(4 * T_RECTS[:, 2] * T_RECTS[:, 3]))
"""m² (0.0063)."""
T_COM = np.array([0.0, float(np.sum(4 * T_RECTS[:, 2] * T_RECTS[:, 3] * T_RECTS[:, 1]) / T_AREA)])
"""The T's centre of area in the block frame (uniform density: its centre of mass), m."""
GOAL_POSE = np.array([0.0, 0.0, np.pi / 4])
"""The goal T's pose (x, y, yaw) on the table, as drawn by the `goal` body of pusher.xml."""
PUSHER_RADIUS = 0.015
"""m, the pusher cylinder's radius in pusher.xml."""
WORKSPACE = 0.24
"""The pusher's targets stay within ±WORKSPACE m on both axes (joint limits ±0.25 m)."""


def _t_grid(spacing: float) -> np.ndarray:
    """Cell centres of a `spacing` grid that lie inside the T, block frame, (K, 2)."""
    lo = (T_RECTS[:, :2] - T_RECTS[:, 2:]).min(axis=0)
    hi = (T_RECTS[:, :2] + T_RECTS[:, 2:]).max(axis=0)
    xs = np.arange(lo[0] + spacing / 2, hi[0], spacing)
    ys = np.arange(lo[1] + spacing / 2, hi[1], spacing)
    points = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    return points[inside_t(points)]


def rotate(vectors: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """Vectors (..., 2) rotated by yaw (...) or (..., 1) about z."""
    c, s = np.cos(yaw), np.sin(yaw)
    x, y = vectors[..., 0], vectors[..., 1]
    return np.stack([c * x - s * y, s * x + c * y], axis=-1)


def to_block_frame(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """World points (N, ..., 2) in the frame of block poses (N, 3)."""
    extra = (1,) * (points.ndim - 2)
    origin = pose[:, :2].reshape(len(pose), *extra, 2)
    return rotate(points - origin, -pose[:, 2].reshape(len(pose), *extra))


def to_world(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Block-frame points (K, 2) or (N, K, 2) in the world, for block poses (N, 3): (N, K, 2)."""
    return rotate(points, pose[:, 2, None]) + pose[:, None, :2]


def inside_t(points: np.ndarray) -> np.ndarray:
    """Whether block-frame points (..., 2) lie in the T: (...) bool."""
    return _inside_t(points[..., 0], points[..., 1])


def _inside_t(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    inside = np.zeros(np.shape(x), dtype=bool)
    for cx, cy, hx, hy in T_RECTS:
        inside |= (np.abs(x - cx) <= hx) & (np.abs(y - cy) <= hy)
    return inside


def t_distance(points: np.ndarray) -> np.ndarray:
    """Signed distance of block-frame points (..., 2) to the T's outline: (...) m, negative inside."""
    delta = np.abs(points[..., None, :] - T_RECTS[:, :2]) - T_RECTS[:, 2:]
    outside = np.linalg.norm(np.maximum(delta, 0.0), axis=-1)
    depth = np.minimum(np.max(delta, axis=-1), 0.0)
    return np.min(outside + depth, axis=-1)


_GRID = _t_grid(0.001)


def coverage(block_pose: np.ndarray, goal_pose: np.ndarray = GOAL_POSE) -> np.ndarray:
    """Fraction of the goal T's area covered by the block's T: (N,) in [0, 1].

    block_pose: (N, 3) or (3,); goal_pose: (3,) or (N, 3); poses are (x, y, yaw).
    """
    block = np.atleast_2d(np.asarray(block_pose, dtype=np.float64))
    goal = np.broadcast_to(np.asarray(goal_pose, dtype=np.float64), block.shape)
    # The goal T's grid points, expressed in each block's frame.
    relative_yaw = (goal[:, 2] - block[:, 2])[:, None]
    offset = rotate(goal[:, :2] - block[:, :2], -block[:, 2])
    c, s = np.cos(relative_yaw), np.sin(relative_yaw)
    x = c * _GRID[:, 0] - s * _GRID[:, 1] + offset[:, :1]
    y = s * _GRID[:, 0] + c * _GRID[:, 1] + offset[:, 1:]
    return np.count_nonzero(_inside_t(x, y), axis=-1) / len(_GRID)


def com_position(pose: np.ndarray) -> np.ndarray:
    """World position of the T's centre of mass for poses (N, 3): (N, 2)."""
    return pose[:, :2] + rotate(T_COM, pose[:, 2])


def _contact_candidates(radius: float, spacing: float = 0.005, margin: float = 0.005) -> tuple[np.ndarray, np.ndarray]:
    """Points on the T's outline where a pusher of `radius` can push, and their outward normals (K, 2) each.

    Points keep `margin` from convex corners (a push there slips off) and radius + 3 mm from
    the two concave corners under the bar (the pusher would touch the other face).
    """
    reach = radius + 0.003
    # (start, end, outward normal, start is concave, end is concave), counter-clockwise from the stem's foot.
    edges = [
        ((-0.015, -0.09), (0.015, -0.09), (0, -1), False, False),
        ((0.015, -0.09), (0.015, 0.0), (1, 0), False, True),
        ((0.015, 0.0), (0.06, 0.0), (0, -1), True, False),
        ((0.06, 0.0), (0.06, 0.03), (1, 0), False, False),
        ((0.06, 0.03), (-0.06, 0.03), (0, 1), False, False),
        ((-0.06, 0.03), (-0.06, 0.0), (-1, 0), False, False),
        ((-0.06, 0.0), (-0.015, 0.0), (0, -1), False, True),
        ((-0.015, 0.0), (-0.015, -0.09), (-1, 0), True, False),
    ]
    points, normals = [], []
    for start, end, normal, concave_start, concave_end in edges:
        start, end = np.array(start), np.array(end)
        length = np.linalg.norm(end - start)
        lo = reach if concave_start else margin
        hi = length - (reach if concave_end else margin)
        for s in np.linspace(lo, hi, max(2, int((hi - lo) / spacing) + 1)):
            points.append(start + (end - start) * s / length)
            normals.append(normal)
    return np.array(points), np.array(normals, dtype=np.float64)


class ScriptedPushExpert:
    """A pushing strategy for push_t over N worlds: pick a contact, go around the block to it, push.

    The expert is memoryless: its targets are a function of the pusher's position and the
    block's pose alone, both of which the policy observes, so what it does in a state is what
    an imitator that sees that state can learn (an expert with a hidden phase or plan would
    teach contradicting actions for the same observation).

    Each control step it picks, among points on the T's outline, the push whose quasi-static
    effect best matches the motion still needed (translation of the centre of mass and
    rotation toward the goal, rotation weighted by `rotation_length`). Under an ellipsoidal
    limit surface a push along the inward normal n at a point r from the centre of mass moves
    the block with twist ∝ (n, (r × n) / ρ²), ρ the T's mean distance from its centre of mass.
    The pusher reaches a staging point off that face (circling the block when the straight
    path would hit it), then pushes along n by a step that shrinks with the remaining error.
    A pusher already in the corridor in front of a contact keeps pushing there while that push
    stays nearly as good as the best one (`hysteresis`), so it does not dither between faces;
    at `stop_coverage` it backs off the block and stays.

        expert = ScriptedPushExpert()
        targets = expert(pusher_xy, block_pose)  # (N, 2) m for (N, 2) and (N, 3)
    """

    def __init__(self, *, goal_pose: np.ndarray = GOAL_POSE, pusher_radius: float = PUSHER_RADIUS,
                 max_step: float = 0.02, push_step: tuple[float, float] = (0.002, 0.01), push_gain: float = 0.8,
                 rotation_length: float = 0.05, stage: float = 0.015, stop_coverage: float = 0.98,
                 hysteresis: float = 0.15) -> None:
        self.goal_pose = np.asarray(goal_pose, dtype=np.float64)
        self.radius = pusher_radius
        self.max_step = max_step
        """Largest target move per control step while travelling (m)."""
        self.push_step = push_step
        """Smallest and largest push depth per control step (m)."""
        self.push_gain = push_gain
        """Push depth per metre of remaining (weighted) error."""
        self.rotation_length = rotation_length
        """Metres of translation error that weigh as much as one radian of yaw error."""
        self.stage = stage
        """Distance (m) off the face at which a push starts."""
        self.stop_coverage = stop_coverage
        """Coverage at which the pusher backs off and stays."""
        self.hysteresis = hysteresis
        """How much better (in cosine) another contact must score before the pusher leaves the one it is at."""
        self.points, self.normals = _contact_candidates(pusher_radius)
        from_com = np.linalg.norm(_GRID - T_COM, axis=-1)
        self.rho2 = float(np.mean(from_com)) ** 2
        self.safe_radius = float(np.max(from_com)) + pusher_radius + 0.012
        """Radius (m) of the circle around the centre of mass on which the pusher travels around the block."""

    def __call__(self, pusher: np.ndarray, block_pose: np.ndarray) -> np.ndarray:
        """Pusher position targets (N, 2) m for pusher positions (N, 2) and block poses (N, 3)."""
        rows = np.arange(len(pusher))
        com = com_position(block_pose)
        goal = np.broadcast_to(self.goal_pose, block_pose.shape)
        error = np.concatenate([com_position(goal) - com,
                                self.rotation_length * wrap_to_pi(goal[:, 2] - block_pose[:, 2])[:, None]], axis=-1)
        error_norm = np.linalg.norm(error, axis=-1)

        # Score every candidate push by how well its twist points along the needed motion.
        points = to_world(self.points, block_pose)                # (N, K, 2)
        out = rotate(self.normals, block_pose[:, 2, None])        # (N, K, 2) outward normals
        arm = points - com[:, None]
        torque = arm[..., 1] * out[..., 0] - arm[..., 0] * out[..., 1]
        twist = np.concatenate([-out, (self.rotation_length * torque / self.rho2)[..., None]], axis=-1)
        twist /= np.linalg.norm(twist, axis=-1, keepdims=True)
        score = np.einsum("nkd,nd->nk", twist, error) / np.maximum(error_norm, 1e-9)[:, None]
        best = np.argmax(score, axis=-1)

        # Where the pusher touches each face point, and whether it stands in the corridor in front of it.
        touch = points + self.radius * out
        relative = pusher[:, None] - touch
        along = np.einsum("nkd,nkd->nk", relative, out)
        lateral = np.linalg.norm(relative - along[..., None] * out, axis=-1)
        engaged = (lateral < 0.01) & (along > -0.005) & (along < self.stage + 0.01)
        current = np.argmax(np.where(engaged, score, -np.inf), axis=-1)
        current_score = score[rows, current]
        pushing = engaged[rows, current] & (current_score >= score[rows, best] - self.hysteresis) \
            & (current_score > 0.3)
        contact = np.where(pushing, current, best)

        depth = np.clip(self.push_gain * error_norm, *self.push_step)
        push = touch[rows, contact] - depth[:, None] * out[rows, contact]
        travel = self._travel(pusher, touch[rows, contact] + self.stage * out[rows, contact], block_pose, com)
        target = np.where(pushing[:, None], push, travel)
        done = coverage(block_pose, self.goal_pose) >= self.stop_coverage
        target = np.where(done[:, None], self._back_off(pusher, block_pose, com), target)
        return np.clip(target, -WORKSPACE, WORKSPACE)

    def _clear(self, start: np.ndarray, end: np.ndarray, block_pose: np.ndarray) -> np.ndarray:
        """(N,) bool: the pusher can move straight from start to end (N, 2) without touching the block."""
        s = np.linspace(0.0, 1.0, 9)[None, :, None]
        path = start[:, None] + s * (end - start)[:, None]
        return np.all(t_distance(to_block_frame(path, block_pose)) > self.radius + 0.002, axis=-1)

    def _travel(self, pusher: np.ndarray, goal: np.ndarray, block_pose: np.ndarray, com: np.ndarray) -> np.ndarray:
        """One step toward `goal`, straight when clear, else around the block on a safe circle."""
        direct = pusher + _limit(goal - pusher, self.max_step)
        offset = pusher - com
        angle = np.arctan2(offset[:, 1], offset[:, 0])
        heading = goal - com
        to_goal = wrap_to_pi(np.arctan2(heading[:, 1], heading[:, 0]) - angle)
        turn = np.sign(to_goal) * np.minimum(np.abs(to_goal), self.max_step / self.safe_radius)
        around = com + self.safe_radius * np.stack([np.cos(angle + turn), np.sin(angle + turn)], axis=-1)
        detour = pusher + _limit(around - pusher, self.max_step)
        return np.where(self._clear(pusher, goal, block_pose)[:, None], direct, detour)

    def _back_off(self, pusher: np.ndarray, block_pose: np.ndarray, com: np.ndarray) -> np.ndarray:
        """Stay put, or step away from the block while closer than a few millimetres to it."""
        near = t_distance(to_block_frame(pusher[:, None], block_pose))[:, 0] < self.radius + 0.01
        away = pusher - com
        away /= np.maximum(np.linalg.norm(away, axis=-1, keepdims=True), 1e-9)
        return np.where(near[:, None], pusher + 0.01 * away, pusher)


def _limit(delta: np.ndarray, length: float) -> np.ndarray:
    """Vectors (N, 2) shortened to at most `length`."""
    norm = np.linalg.norm(delta, axis=-1, keepdims=True)
    return delta * np.minimum(1.0, length / np.maximum(norm, 1e-12))
