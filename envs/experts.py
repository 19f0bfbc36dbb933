"""Scripted state-based experts for DMC tasks, plus noisy, random, still and held-random policies.

The experts produce the "good" end of graded-quality episodes (expert, expert +
noise, random) used to train and evaluate video-model rewards. Each expert
ignores the pixel observation it is given and reads the true state from
``env.unwrapped.physics``; the actions it returns are in the env's ``[-1, 1]``
action space. An env that scripts its own expert as ``scripted_policy(seed)`` (the
voxel-terrain walker, the maze explorer) gets that one from :func:`make_expert` too.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import gymnasium as gym
import mujoco
import numpy as np
import scipy.linalg

from envs.dmc import DMCEnv

Policy = Callable[[np.ndarray], np.ndarray]


def _to_action(control: np.ndarray, physics: Any) -> np.ndarray:
    """Map actuator controls (in ctrlrange units) to the env's [-1, 1] actions."""
    low, high = physics.model.actuator_ctrlrange.T
    action = 2.0 * (np.asarray(control, dtype=np.float64) - low) / (high - low) - 1.0
    return np.clip(action, -1.0, 1.0).astype(np.float32)


def _wrap_angle(angle: float) -> float:
    return (angle + np.pi) % (2.0 * np.pi) - np.pi


def _physics_steps_per_action(env: DMCEnv) -> int:
    return round(env.control_timestep / env.physics.model.opt.timestep)


class _PoleEnergy:
    """Mechanical energy of a hinged pole, zero when upright at rest."""

    def __init__(self, model: mujoco.MjModel, body: str) -> None:
        pole = model.body(body).id
        mass, com = model.body_mass[pole], model.body_ipos[pole, 2]
        self._inertia = model.body_inertia[pole, 1] + mass * com**2  # about the hinge
        self._weight_moment = mass * -model.opt.gravity[2] * com

    def __call__(self, angle: float, velocity: float) -> float:
        return 0.5 * self._inertia * velocity**2 + self._weight_moment * (np.cos(angle) - 1.0)


def _discrete_lqr_gain(
    physics: Any, hold_steps: int, state_cost: np.ndarray, control_cost: np.ndarray
) -> np.ndarray:
    """LQR gain for state (qpos, qvel) around qpos = qvel = ctrl = 0.

    The linear model is a central finite difference of one agent step, i.e.
    ``hold_steps`` physics steps with the control held, because the policy acts
    once per agent step. (``mujoco.mjd_transitionFD`` does not support the RK4
    integrator that cartpole uses.) Assumes hinge/slide joints only (nq == nv).
    """
    model = physics.model.ptr
    data = mujoco.MjData(model)
    nq, nu = model.nq, model.nu

    def agent_step(state: np.ndarray, control: np.ndarray) -> np.ndarray:
        mujoco.mj_resetData(model, data)
        data.qpos[:], data.qvel[:], data.ctrl[:] = state[:nq], state[nq:], control
        for _ in range(hold_steps):
            mujoco.mj_step(model, data)
        return np.concatenate([data.qpos, data.qvel])

    eps = 1e-6
    state, control = np.zeros(2 * nq), np.zeros(nu)
    a = np.stack(
        [(agent_step(state + d, control) - agent_step(state - d, control)) / (2 * eps) for d in eps * np.eye(2 * nq)],
        axis=1,
    )
    b = np.stack(
        [(agent_step(state, control + d) - agent_step(state, control - d)) / (2 * eps) for d in eps * np.eye(nu)],
        axis=1,
    )
    p = scipy.linalg.solve_discrete_are(a, b, state_cost, control_cost)
    return np.linalg.solve(control_cost + b.T @ p @ b, b.T @ p @ a)


class CartpoleExpert:
    """Energy pumping to swing the pole up, LQR to balance it upright at the centre.

    Pumping pushes the cart so the pole gains energy until it has just enough to
    reach the top, with weak feedback keeping the cart near the centre; near
    upright the LQR takes over (it alone handles the balance tasks, which start
    near upright).
    """

    _LQR_COS = 0.8  # hand over to the LQR once the pole is within ~37 deg of upright
    _PUMP_GAIN = 5.0
    _CENTRE_GAINS = (1.0, 1.0)  # cart position and velocity feedback while pumping

    def __init__(self, env: DMCEnv) -> None:
        self._env = env
        self._energy = _PoleEnergy(env.physics.model.ptr, "pole_1")
        # State (cart x, pole angle, cart velocity, pole angular velocity).
        self._gain = _discrete_lqr_gain(
            env.physics,
            _physics_steps_per_action(env),
            state_cost=np.diag([1.0, 5.0, 0.1, 0.1]),
            control_cost=np.eye(1),
        )

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        physics = self._env.physics
        x, angle = physics.data.qpos
        x_vel, angle_vel = physics.data.qvel
        angle = _wrap_angle(angle)
        if np.cos(angle) > self._LQR_COS:
            control = -self._gain @ np.array([x, angle, x_vel, angle_vel])
        else:
            # Below the upright energy (negative), pushing the cart this way
            # feeds the pole energy; above it, the same law drains it.
            energy = self._energy(angle, angle_vel)
            pump = self._PUMP_GAIN * energy * np.sign(angle_vel * np.cos(angle))
            kx, kv = self._CENTRE_GAINS
            control = np.array([pump - kx * x - kv * x_vel])
        return _to_action(control, physics)


class PendulumExpert:
    """Energy pumping with the (too weak to lift directly) motor, LQR near upright.

    The motor torque is below the pole's gravity torque, so the pole is swung up
    over several swings by torquing along its velocity until it has the energy
    to reach the top; the LQR then catches and holds it.
    """

    _LQR_COS = 0.98
    _PUMP_GAIN = 5.0
    # Aim slightly above the upright energy: the pole then reaches the top in
    # finite time instead of creeping up to it, and the LQR absorbs the excess.
    _ENERGY_MARGIN = 0.3

    def __init__(self, env: DMCEnv) -> None:
        self._env = env
        self._energy = _PoleEnergy(env.physics.model.ptr, "pole")
        # State (pole angle, angular velocity).
        self._gain = _discrete_lqr_gain(
            env.physics,
            _physics_steps_per_action(env),
            state_cost=np.diag([10.0, 0.1]),
            control_cost=np.eye(1),
        )

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        physics = self._env.physics
        angle = _wrap_angle(physics.data.qpos[0])
        velocity = physics.data.qvel[0]
        if np.cos(angle) > self._LQR_COS:
            control = -self._gain @ np.array([angle, velocity])
        else:
            excess = self._energy(angle, velocity) - self._ENERGY_MARGIN
            control = np.array([-self._PUMP_GAIN * excess * np.sign(velocity)])
        return _to_action(control, physics)


class ReacherExpert:
    """Joint-space PD control to the inverse-kinematics solution for the target.

    Of the two elbow solutions, the one nearer the current pose is tracked. ``aim_offset`` (x, y in
    metres) aims beside the target instead, within reach: a near miss that rests just off it.
    """

    _KP = 2.0
    _KD = 0.15

    def __init__(self, env: DMCEnv, aim_offset: tuple[float, float] = (0.0, 0.0)) -> None:
        self._env = env
        body_pos = env.physics.named.model.body_pos
        self._upper = float(np.linalg.norm(body_pos["hand"]))
        self._lower = float(np.linalg.norm(body_pos["finger"]))
        self._aim_offset = np.asarray(aim_offset, np.float64)

    def _target_joints(self, current: np.ndarray) -> np.ndarray:
        target = self._env.physics.named.model.geom_pos["target", :2] + self._aim_offset  # shoulder at the origin
        l1, l2 = self._upper, self._lower
        if self._aim_offset.any():  # keep an offset aim within the arm's reach
            distance = float(np.linalg.norm(target))
            target = target / max(distance, 1e-9) * np.clip(distance, abs(l1 - l2) + 1e-3, l1 + l2 - 1e-3)
        cos_elbow = (target @ target - l1**2 - l2**2) / (2 * l1 * l2)
        elbow_bend = np.arccos(np.clip(cos_elbow, -1.0, 1.0))
        candidates = []
        for elbow in (elbow_bend, -elbow_bend):
            shoulder = np.arctan2(target[1], target[0]) - np.arctan2(l2 * np.sin(elbow), l1 + l2 * np.cos(elbow))
            # The shoulder turns freely, so take the nearest equivalent angle.
            candidates.append(np.array([current[0] + _wrap_angle(shoulder - current[0]), elbow]))
        return min(candidates, key=lambda joints: np.abs(joints - current).sum())

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        physics = self._env.physics
        joints = physics.named.data.qpos[["shoulder", "wrist"]]
        velocities = physics.named.data.qvel[["shoulder", "wrist"]]
        target = self._target_joints(joints)
        control = self._KP * (target - joints) - self._KD * velocities
        return _to_action(control, physics)


class PointMassExpert:
    """PD control of the mass to the target, through the tendon actuation matrix.

    Each actuator pulls a fixed tendon whose joint coefficients (``wrap_prm``)
    give its x/y direction: identity on ``easy``, random directions on ``hard``.
    ``aim_offset`` (x, y in metres) brings the mass to rest that far from the target's centre.
    """

    # Joint-force gains (N/m, N s/m): critically damped with mass 0.3 and joint
    # damping 1; on ``easy`` the controls saturate until ~2 cm from the target.
    _KP = 5.0
    _KD = 1.5

    def __init__(self, env: DMCEnv, aim_offset: tuple[float, float] = (0.0, 0.0)) -> None:
        self._env = env
        self._aim_offset = np.asarray(aim_offset, np.float64)

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        physics = self._env.physics
        model = physics.model
        directions = model.wrap_prm[: 2 * model.nu].reshape(model.nu, 2).T
        joint_force_per_control = directions * model.actuator_gear[:, 0]
        to_target = physics.mass_to_target()[:2] + self._aim_offset
        desired = self._KP * to_target - self._KD * physics.data.qvel
        control = np.linalg.solve(joint_force_per_control, desired)
        # Scale rather than clip so the pushing direction survives saturation.
        control /= max(1.0, np.abs(control).max())
        return _to_action(control, physics)


_EXPERTS: dict[str, Callable[[DMCEnv], Policy]] = {
    "cartpole-balance": CartpoleExpert,
    "cartpole-balance_sparse": CartpoleExpert,
    "cartpole-swingup": CartpoleExpert,
    "pendulum-swingup": PendulumExpert,
    "reacher-easy": ReacherExpert,
    "reacher-hard": ReacherExpert,
    "point_mass-easy": PointMassExpert,
    "point_mass-hard": PointMassExpert,
}
EXPERT_TASKS: tuple[str, ...] = tuple(_EXPERTS)
# Tasks whose expert reaches for a round target (the geom "target"), and so can aim anywhere on it.
GOAL_TASKS: tuple[str, ...] = ("reacher-easy", "reacher-hard", "point_mass-easy", "point_mass-hard")


def goal_offset(env: DMCEnv, spread: float, seed: int) -> np.ndarray:
    """An aim offset ``(x, y)`` in metres drawn uniformly over the disc of ``spread`` times the target's radius."""
    radius = spread * float(env.physics.named.model.geom_size["target", 0])
    rng = np.random.default_rng(seed)
    distance, angle = radius * np.sqrt(rng.uniform()), rng.uniform(0.0, 2.0 * np.pi)
    return np.array([distance * np.cos(angle), distance * np.sin(angle)])


def make_expert(task_name: str, env: gym.Env, seed: int = 0, goal_spread: float = 0.0) -> Policy:
    """The scripted expert for ``task_name`` (e.g. "cartpole-swingup") acting in ``env``.

    An env that brings its own scripted expert as ``scripted_policy(seed)`` (the voxel-terrain
    walker, the maze explorer) gets that one, seeded with ``seed``; the DMC experts are deterministic and ignore it,
    except that with ``goal_spread > 0`` a goal task's expert (:data:`GOAL_TASKS`) comes to rest at a point drawn
    from ``seed`` within ``goal_spread`` times the target's radius of its centre, as a trained agent's resting
    place varies, rather than dead on it: videos of the exact centre only teach a video model that one picture
    (docs/results/viper.md, point_mass-easy).
    """
    if goal_spread < 0:
        raise ValueError(f"goal_spread must be >= 0, got {goal_spread}")
    if goal_spread and task_name not in GOAL_TASKS:
        raise ValueError(f"goal_spread needs a task with a round target ({', '.join(GOAL_TASKS)}), got {task_name!r}")
    own_expert = getattr(env.unwrapped, "scripted_policy", None)
    if own_expert is not None:
        return own_expert(seed)
    if task_name not in _EXPERTS:
        raise ValueError(f"no expert for task {task_name!r}; experts exist for: {', '.join(EXPERT_TASKS)}")
    dmc = env.unwrapped
    env_task = f"{getattr(dmc, 'domain', '?')}-{getattr(dmc, 'task', '?')}"
    if env_task != task_name:
        raise ValueError(f"expert for {task_name!r} needs a DMCEnv of that task, got {env_task!r}")
    if goal_spread:
        return _EXPERTS[task_name](dmc, aim_offset=goal_offset(dmc, goal_spread, seed))
    return _EXPERTS[task_name](dmc)


def random_policy(action_space: gym.spaces.Space, seed: int) -> Policy:
    """Uniformly random actions, reproducible from ``seed``."""
    space = copy.deepcopy(action_space)  # seeding must not touch the caller's space
    space.seed(seed)
    return lambda observation: space.sample()


def still_policy(action_space: gym.spaces.Space) -> Policy:
    """The do-nothing action every step: zero (zero torque on DMC, within the bounds) or the first discrete action.

    Holding still is what an optimiser finds first on a reward that pays predictability (an expert
    that reaches its goal and stays there is predictable): a probe for that hack, and play for a baseline model.
    """
    if isinstance(action_space, gym.spaces.Discrete):
        return lambda observation: np.int64(action_space.start)
    if isinstance(action_space, gym.spaces.Box):
        still = np.clip(np.zeros(action_space.shape, action_space.dtype), action_space.low, action_space.high)
        return lambda observation: still.copy()
    raise ValueError(f"no still action for action space {action_space}")


def held_actions(decide: Callable[[np.ndarray, bool], np.ndarray], action_repeat: int) -> Policy:
    """An env-step policy that calls ``decide(frame, first_of_episode)`` every ``action_repeat``
    env steps and holds its action in between, as :class:`envs.wrappers.ActionRepeat` does. One per episode."""
    state: dict[str, Any] = {"step": 0, "action": None}

    def act(frame: np.ndarray) -> np.ndarray:
        if state["step"] % action_repeat == 0:
            state["action"] = decide(frame, state["step"] == 0)
        state["step"] += 1
        return state["action"]

    return act


def held_random_policy(action_space: gym.spaces.Space, hold: int, seed: int) -> Policy:
    """A uniformly random action held for ``hold`` env steps at a time: play that pushes into poses and keeps
    pushing (a pendulum held at an angle, a limb pressed to its limit), which per-step random actions
    average away. One per episode."""
    if not isinstance(hold, int) or hold < 1:
        raise ValueError(f"hold must be a positive int of env steps, got {hold!r}")
    sample = random_policy(action_space, seed)
    return held_actions(lambda observation, first: sample(observation), hold)


def noisy_policy(policy: Policy, noise_std: float, seed: int) -> Policy:
    """``policy`` plus Gaussian action noise, clipped back to [-1, 1]."""
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    rng = np.random.default_rng(seed)

    def act(observation: np.ndarray) -> np.ndarray:
        action = np.asarray(policy(observation), dtype=np.float32)
        noise = rng.normal(0.0, noise_std, action.shape).astype(np.float32)
        return np.clip(action + noise, -1.0, 1.0)

    return act
