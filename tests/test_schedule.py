import io

from worldmodel.schedule import BudgetProgress


def _bar(steps: int, step: int, elapsed_s: float, max_minutes: float | None) -> BudgetProgress:
    return BudgetProgress(steps, step, elapsed_s, max_minutes, file=io.StringIO(), mininterval=0)


def test_progress_total_follows_the_budget_that_ends_first():
    # A 7-minute run allowed a million steps, at one step per second: about 420 steps.
    timed = _bar(10**6, 0, 0.0, max_minutes=7)
    for second in range(1, 11):
        timed.advance(float(second))
    assert timed.n == 10 and timed.total == 420
    assert "10/420" in timed.fp.getvalue().splitlines()[-1].split("\r")[-1]
    # Resumed at step 100 after 60 s, now at 2 steps per second: 100 + 2 * (420 - 60.5) + 1.
    resumed = _bar(10**6, 100, 60.0, max_minutes=7)
    resumed.advance(60.5)
    assert resumed.total == 101 + 719
    # Steps end first: the total stays the step budget.
    short = _bar(200, 0, 0.0, max_minutes=7)
    short.advance(1.0)
    assert short.total == 200
    untimed = _bar(10**6, 0, 0.0, max_minutes=None)
    untimed.advance(1.0)
    assert untimed.total == 10**6
