"""RL agents that consume any gymnasium env (DrQ, DrQ-v2, exploration bonuses) and their shared loop."""

from agents.common import random_shift
from agents.disagreement import Disagreement, DisagreementConfig
from agents.drq import DRQ_PRESETS, DrQAgent, DrQConfig
from agents.drqv2 import DRQV2_PRESETS, DrQV2Agent, DrQV2Config
from agents.replay import ObservationStack, ReplayBuffer
from agents.rnd import RND, RNDConfig
from agents.workspace import AGENTS, Training, evaluate_agent, load_agent, train_agent

__all__ = [
    "AGENTS",
    "DRQV2_PRESETS",
    "DRQ_PRESETS",
    "RND",
    "Disagreement",
    "DisagreementConfig",
    "DrQAgent",
    "DrQConfig",
    "DrQV2Agent",
    "DrQV2Config",
    "ObservationStack",
    "RNDConfig",
    "ReplayBuffer",
    "Training",
    "evaluate_agent",
    "load_agent",
    "random_shift",
    "train_agent",
]
