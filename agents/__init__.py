"""RL agents that consume any gymnasium env (DrQ, Dreamer-style, exploration bonuses)."""

from agents.drq import DRQ_PRESETS, DrQAgent, DrQConfig, random_shift
from agents.replay import FrameStack, ReplayBuffer
from agents.rnd import RND, RNDConfig
from agents.train_drq import DrQTraining, evaluate_drq, load_drq_agent, train_drq

__all__ = [
    "DRQ_PRESETS",
    "DrQAgent",
    "DrQConfig",
    "DrQTraining",
    "FrameStack",
    "RND",
    "RNDConfig",
    "ReplayBuffer",
    "evaluate_drq",
    "load_drq_agent",
    "random_shift",
    "train_drq",
]
