"""`grid`: keras-tuner's grid search, skipping rejected combinations in place, resumable."""

from __future__ import annotations

import functools

from metasearch import kt_adapter
from metasearch.strategies.base import IDLE, RUNNING, STOPPED, StrategyOracle


class GridOracle(StrategyOracle, kt_adapter.GridSearchOracle):
    """keras-tuner's grid search, with the constraint hook.

    Grid search walks from each tried combination to the next one, so a
    rejected combination is skipped in place (the walk goes on to the
    combination after it) instead of re-asking the walk.
    """

    # The grid walks from tried combinations; it covers the default anyway.
    STARTS_FROM_DEFAULT = False

    FILTERS_ITSELF = True

    def propose(self, trial_id):
        if self.candidate_filter is None:
            return super().propose(trial_id)
        values = None
        attempts = 0
        walk = self.walk_queue
        if len(self.start_order) == 0:
            hps = self.get_space()
            values = {hp.name: hp.default for hp in hps.space if hps.is_active(hp)}
            while values is not None and self.check_candidate(values) is not None:
                attempts += 1
                if attempts >= self.max_filter_attempts:
                    return self.stop_for_filter()
                values = self.next_combination(values)
            if values is None:
                return {"status": STOPPED, "values": None}
            self.grid_insert(trial_id)
            walk.append(trial_id)
        while walk and values is None:
            old_trial_id = walk.pop(0)
            new_values = self.next_combination(self.trials[old_trial_id].hyperparameters.values)
            while new_values is not None and self.check_candidate(new_values) is not None:
                attempts += 1
                if attempts >= self.max_filter_attempts:
                    walk.insert(0, old_trial_id)
                    return self.stop_for_filter()
                new_values = self.next_combination(new_values)
            if new_values is None:
                continue
            next_id = self.grid_next(old_trial_id)
            if next_id is not None:
                if (
                    self.compare_values(new_values, self.trials[next_id].hyperparameters.values)
                    >= 0
                ):
                    continue
            self.grid_insert(trial_id, old_trial_id)
            values = new_values
        if values is not None:
            return {"status": RUNNING, "values": values}
        return {"status": IDLE if self.ongoing_trials else STOPPED, "values": None}

    def set_state(self, state):
        # keras-tuner keeps the walk (trials in grid order, trials to walk on
        # from) only in memory, so a resumed grid search stopped at once.
        # Both follow from the trials: rebuild them.
        super().set_state(state)
        ordered = sorted(
            self.trials,
            key=functools.cmp_to_key(
                lambda a, b: self.compare_values(
                    self.trials[a].hyperparameters.values, self.trials[b].hyperparameters.values
                )
            ),
        )
        self.reset_grid_walk(ordered, self.end_order)
