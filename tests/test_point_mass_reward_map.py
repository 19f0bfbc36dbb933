import numpy as np

from experiments.benchmarks.point_mass_reward_map import still_frames


def test_still_frames_put_the_mass_where_asked():
    """The mass at x = +-0.2 m differs from frame to frame only at columns near 64 * (0.5 +- 0.33) on the middle
    rows; at y = +-0.2 m only at those rows on the middle columns (the camera looks straight down)."""
    frames = still_frames(np.array([[0.2, 0.0], [-0.2, 0.0], [0.0, 0.2], [0.0, -0.2]]), 64).astype(int)
    for (a, b), (along, across) in [((0, 1), (1, 0)), ((2, 3), (0, 1))]:
        changed = np.nonzero(np.abs(frames[a] - frames[b]).sum(-1) > 30)
        assert changed[along].size > 0
        assert np.all(np.abs(changed[along] - 31.5) > 16) and np.all(np.abs(changed[across] - 31.5) < 4)
