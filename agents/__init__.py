"""RL agents that consume any gymnasium env (DrQ, Dreamer-style, exploration bonuses)."""
