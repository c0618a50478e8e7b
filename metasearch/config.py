"""`RunConfig`: the plain configuration a search takes, from Python or from the CLI.

The library never reads flags: the CLI layer (`metasearch.flags`) turns flags
into a `RunConfig`, and a notebook builds one directly::

    import metasearch
    result = metasearch.search(metasearch.RunConfig(output_dir="runs/demo", max_trials=2))

Every field has the default the matching CLI flag has (the flags take their
defaults from here). Component options (`dataset_options`, `space_options`,
`strategy_options`, `plugin_options`) hold only what differs from the
component's declared defaults, or all of them; the job resolves them against
the component's `OPTIONS` before anything runs.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from metasearch.errors import UsageError

# --precision's choices (`metasearch.precision`).
PRECISIONS = ("auto", "float32", "bfloat16")
# --class_augment's choices (`metasearch.data.episodes.sample_episode`).
CLASS_AUGMENTS = ("none", "mirror")

# Fields that change what a run computes. A rerun into an existing output
# directory must agree on all of them; `max_trials` may grow to extend a search.
IDENTITY_FIELDS = (
    "dataset",
    "data_dir",
    "plugin",
    "search_space",
    "strategy",
    "evaluator",
    "table",
    "table_column",
    "table_ops",
    "max_params",
    "fix_hparams",
    "episodes_per_trial",
    "trial_time",
    "eval_episodes",
    "n_way",
    "k_shot",
    "n_query",
    "train_n_way",
    "train_n_ways",
    "train_n_queries",
    "augment",
    "class_augment",
    "class_augments",
    "meta_batch_size",
    "image_size",
    "seed",
    "precision",
    "start_from_default",
    "racing",
    "racing_rungs",
    "racing_episodes",
    "dataset_options",
    "strategy_options",
    "space_options",
    "plugin_options",
)


# Trials a search runs when neither --max_trials nor --time_budget is given.
DEFAULT_MAX_TRIALS = 4
_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str | float | int, flag: str = "--time_budget") -> float:
    """Seconds in a duration users write: `90s`, `30m`, `2h`, `1h30m`, or plain seconds.

    Raises `ValueError` naming `flag` for anything else or a duration <= 0.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        rest, seconds = str(text).strip().lower(), 0.0
        try:
            seconds = float(rest)
            rest = ""
        except ValueError:
            pass
        while rest:
            number = ""
            while rest and (rest[0].isdigit() or rest[0] == "."):
                number, rest = number + rest[0], rest[1:]
            unit, rest = rest[:1], rest[1:]
            if not number or unit not in _DURATION_UNITS:
                raise ValueError(f"{flag}: {text!r} is not a duration (e.g. 90s, 30m, 2h, 1h30m)")
            seconds += float(number) * _DURATION_UNITS[unit]
    if not seconds > 0:
        raise ValueError(f"{flag}: {text!r} is not a positive duration")
    return seconds


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The resolved configuration of a search run (what library code receives).

    `train_n_way=None` means `n_way`. `train_n_ways` (e.g. `(20, 40, 60)`)
    makes the meta-training way a searched hyperparameter, `train/n_way`,
    among those choices, and `train_n_queries` (e.g. `(5, 15)`) the
    meta-training query images per class, `train/n_query`; the default
    configuration trains at `train_n_way` and `n_query`, which must be among
    them. Evaluation always uses `n_way` and `n_query`. `class_augment="mirror"`
    adds every meta-training class's mirror image as a class of its own, and
    `class_augments` (e.g. `("none", "mirror")`) searches it, as
    `train/class_augment`. `fix_hparams` maps hyperparameter names
    (e.g. `conv_blocks/depth`) to values held fixed instead of searched.
    `inner_optimizer` (`sgd` or `learned`) pins the MAML family's inner-loop
    rule; it is folded into `fix_hparams` when the job starts. `cache_memory`
    (MiB) bounds the decoded images kept in memory; class sets that do not fit
    are decoded per episode instead (same episodes, slower).
    A trial writes a checkpoint to resume from every `checkpoint_seconds` of
    training (0: never); a rerun goes on from it (not part of the identity).

    `trial_time` (a duration) gives each trial that much training time
    instead of `episodes_per_trial` episodes: trials are then compared (and
    raced) after equal seconds, which is what a time-budgeted final phase
    rewards; the episodes a trial held are recorded (they depend on the
    machine's speed, so such a search is repeatable only in its choices'
    order, not in its numbers).

    `time_budget` (`"30m"`, `"2h"`, see `parse_duration`) bounds the whole
    job, search and final phase together; without it `max_trials` (default
    4) bounds the search. `start_from_default` makes the first trial the
    default configuration. `racing="paired"` stops a trial at a rung
    (`racing_rungs`, fractions of its episodes) where it is clearly worse
    than the leader on the same `racing_episodes` validation episodes
    (`metasearch.racing`). The final phase trains the `final_top_k` best
    candidates further (with the last `final_share` of the time budget, or
    `final_episodes` episodes, default `episodes_per_trial`, without one),
    then scores the chosen one on `test_episodes` meta-test episodes.

    `precision` is the backbones' (`metasearch.precision`: `bfloat16`
    computes in bfloat16 with float32 weights; `auto` is bfloat16 for image
    classification on a CPU with AMX-BF16 and no GPU, else float32, resolved
    when a run starts and recorded); it is part of the identity.

    `intra_op_threads` is how many threads split each TensorFlow op
    (`metasearch.threads`; 0: auto, one for small-op learners on small
    episodes on CPU, else every core); like `devices`, not part of the
    identity.

    `devices` splits each meta-training step's `meta_batch_size` episodes
    across that many devices (`metasearch.devices`; the same results as one
    device within float rounding, so not part of the identity); it must
    divide `meta_batch_size`.
    """

    dataset: str = "glyphs"
    data_dir: str | None = None
    plugin: str = "protonet"
    search_space: str = "conv_blocks"
    strategy: str = "random"
    evaluator: str = "train"
    table: str | None = None
    table_column: str = "cifar10_val"
    table_ops: list[str] | None = None
    max_params: int | None = None
    fix_hparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    inner_optimizer: str | None = None
    max_trials: int | None = None
    time_budget: str | None = None
    start_from_default: bool = True
    episodes_per_trial: int = 500
    trial_time: str | None = None
    eval_episodes: int = 200
    n_way: int = 5
    k_shot: int = 1
    n_query: int = 15
    train_n_way: int | None = None
    train_n_ways: tuple[int, ...] = ()
    train_n_queries: tuple[int, ...] = ()
    augment: str = "none"
    class_augment: str = "none"
    class_augments: tuple[str, ...] = ()
    meta_batch_size: int = 1
    checkpoint_seconds: int = 120
    image_size: int = 28
    seed: int = 0
    output_dir: str = "runs/metasearch"
    overwrite: bool = False
    jit_compile: str = "auto"
    precision: str = "auto"
    devices: int = 1
    intra_op_threads: int = 0
    progress: bool = True
    worker_timeout: int = 120
    cache_memory: int = 8192
    dataset_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    strategy_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    space_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    plugin_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    racing: str = "none"
    racing_rungs: tuple[float, ...] = (0.111, 0.333)
    racing_episodes: int = 100
    final_top_k: int = 1
    final_share: float = 0.25
    final_episodes: int | None = None
    test_episodes: int = 1000

    def __post_init__(self):
        if str(self.precision).lower() not in PRECISIONS:
            raise UsageError(
                f"--precision={self.precision}: must be one of {', '.join(PRECISIONS)}"
            )
        if self.train_n_way is None:
            object.__setattr__(self, "train_n_way", self.n_way)
        object.__setattr__(
            self,
            "train_n_ways",
            _checked_counts(
                self.train_n_ways, "--train_n_ways", "train_n_way", self.train_n_way, 2
            ),
        )
        object.__setattr__(
            self,
            "train_n_queries",
            _checked_counts(self.train_n_queries, "--train_n_queries", "n_query", self.n_query, 1),
        )
        if self.class_augment not in CLASS_AUGMENTS:
            raise UsageError(
                f"--class_augment={self.class_augment}: must be one of {', '.join(CLASS_AUGMENTS)}"
            )
        augments = tuple(str(value) for value in self.class_augments)
        for value in augments:
            if value not in CLASS_AUGMENTS:
                raise UsageError(
                    f"--class_augments={','.join(augments)}: {value!r} is not one of "
                    f"{', '.join(CLASS_AUGMENTS)}"
                )
        object.__setattr__(
            self,
            "class_augments",
            _checked_choices(augments, "--class_augments", "class_augment", self.class_augment),
        )
        if self.max_trials is None and self.time_budget is None:
            object.__setattr__(self, "max_trials", DEFAULT_MAX_TRIALS)
        if self.intra_op_threads < 0:
            raise UsageError(
                f"--intra_op_threads={self.intra_op_threads}: must be 0 (auto) or a thread count"
            )
        if self.devices < 1:
            raise UsageError(f"--devices={self.devices}: must be at least 1")
        if self.meta_batch_size % self.devices:
            raise UsageError(
                f"--devices={self.devices}: --meta_batch_size={self.meta_batch_size} must be a "
                "multiple of it (each device trains an equal share of the meta-batch)"
            )

    @property
    def trial_seconds(self) -> float | None:
        """`trial_time` in seconds (None: trials are budgeted in episodes); ValueError if bad."""
        if self.trial_time is None:
            return None
        return parse_duration(self.trial_time, "--trial_time")

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with `changes` applied."""
        return dataclasses.replace(self, **changes)

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues."""
        values = dataclasses.asdict(self)
        return {name: values[name] for name in IDENTITY_FIELDS}

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> RunConfig:
        """The config `to_json` wrote (fields it does not know are ignored)."""
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def searched_training_text(hyperparameters: dict[str, Any]) -> str:
    """`60-way 5-query training, mirrored classes` for a trial that searched them; "" if not."""
    way, query = hyperparameters.get("train/n_way"), hyperparameters.get("train/n_query")
    parts = [f"{way}-way"] * (way is not None) + [f"{query}-query"] * (query is not None)
    text = " ".join(parts) + " training" if parts else ""
    augment = hyperparameters.get("train/class_augment")
    if augment is None:
        return text
    classes = "mirrored classes" if augment == "mirror" else "no mirrored classes"
    return f"{text}, {classes}" if text else classes


def _checked_counts(
    values, flag: str, default_flag: str, default: int, least: int
) -> tuple[int, ...]:
    """A searched count's choices (`--train_n_ways`, `--train_n_queries`): whole, >= `least`."""
    choices = tuple(int(value) for value in values)
    if choices and min(choices) < least:
        text = ",".join(str(value) for value in choices)
        raise UsageError(f"{flag}={text}: {min(choices)} is less than {least}")
    return _checked_choices(choices, flag, default_flag, default)


def _checked_choices(choices: tuple, flag: str, default_flag: str, default: Any) -> tuple:
    """A searched training setting's choices, each once, with the default among them.

    The default configuration trains at `default` (`default_flag`'s value), so it must be one.
    """
    text = ",".join(str(value) for value in choices)
    if len(set(choices)) != len(choices):
        raise UsageError(f"{flag}={text}: a value is listed twice")
    if choices and default not in choices:
        raise UsageError(
            f"{flag}={text}: must include --{default_flag}={default} "
            "(the default configuration, the search's first trial, trains at it)"
        )
    return choices


# The option dicts and the component-choosing field each belongs to: option `blocks` of
# search space `nasnet` is the CLI flag `--nasnet_blocks`.
OPTION_FIELDS = {
    "dataset_options": "dataset",
    "space_options": "search_space",
    "strategy_options": "strategy",
    "plugin_options": "plugin",
}
# Fields no flagfile repeats: starting over is asked for each time; the
# inner optimizer is folded into fix_hparams when a job starts.
_NOT_REPEATED = ("overwrite", "inner_optimizer")


def _flag_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_flag_text(item) for item in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def flagfile_text(config: RunConfig) -> str:
    """A flagfile that repeats the run `config` describes (`metasearch --flagfile=PATH`)."""
    lines = ["# Repeat this run: metasearch --flagfile=THIS_FILE"]
    values = config.to_json()
    for field in dataclasses.fields(RunConfig):
        name, value = field.name, values[field.name]
        if name in _NOT_REPEATED or value is None:
            continue
        if name in ("table", "table_column", "table_ops") and config.evaluator != "table":
            continue
        if name in OPTION_FIELDS:
            prefix = values[OPTION_FIELDS[name]]
            for option, option_value in value.items():
                if option_value is not None:
                    lines.append(_flag_line(f"{prefix}_{option}", option_value))
            continue
        if name == "fix_hparams":
            if value:
                items = [f"{key}={_flag_text(item)}" for key, item in value.items()]
                lines.append(f"--fix_hparams={','.join(items)}")
            continue
        lines.append(_flag_line(name, value))
    return "\n".join(lines) + "\n"


def _flag_line(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    return f"--{name}={_flag_text(value)}"


def describe_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """`--name: old -> new` for the first few settings that differ."""
    changed = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            changed.append(f"--{key}: {json.dumps(old.get(key))} -> {json.dumps(new.get(key))}")
    return "; ".join(changed[:4]) + ("; ..." if len(changed) > 4 else "")


# Flags a rerun into the same output directory may change (not part of the run's identity).
_NOT_IDENTITY_FLAGS = (
    "max_trials",
    "checkpoint_seconds",
    "time_budget",
    "final_top_k",
    "final_share",
    "final_episodes",
    "test_episodes",
    "output_dir",
    "jit_compile",
    "devices",
    "intra_op_threads",
    "progress",
    "noprogress",
    "worker_timeout",
)


def _flagfile_settings(text: str, everything: bool = False) -> dict[str, str]:
    settings = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("--"):
            continue
        name, _, value = line[2:].partition("=")
        if everything or name not in _NOT_IDENTITY_FLAGS:
            settings[name] = value
    return settings


# Settings every flagfile has written since the first release: one missing means the file
# was cut short. (Newer settings, e.g. --racing or --devices, are missing from older files.)
_ALWAYS_WRITTEN = (
    "dataset",
    "plugin",
    "search_space",
    "strategy",
    "evaluator",
    "episodes_per_trial",
    "eval_episodes",
    "n_way",
    "k_shot",
    "n_query",
    "image_size",
    "seed",
)


def _always_written() -> set[str]:
    """The flags every `flagfile_text` has, whatever release wrote it."""
    return set(_ALWAYS_WRITTEN)


def flagfile_difference(stored: str, config: RunConfig) -> str | None:
    """How flagfile `stored` (a run's `flags.txt`) differs from `config` in the run's identity.

    None when they agree. Raises `ValueError` when `stored` looks cut short
    (no final newline, or a setting every flagfile has is missing): then it
    cannot say.
    """
    present = set(_flagfile_settings(stored, everything=True))
    present |= {name[2:] for name in present if name.startswith("no")}  # --noprogress
    if not stored.endswith("\n") or not _always_written() <= present:
        raise ValueError("it looks cut short")
    old, new = _flagfile_settings(stored), _flagfile_settings(flagfile_text(config))
    # A core setting newer than the stored file ran at its default then.
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    defaults = _flagfile_settings(flagfile_text(RunConfig()))
    old = {**{k: v for k, v in defaults.items() if k in fields and k not in old}, **old}
    differ = sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))
    if not differ:
        return None
    shown = [
        f"--{name}: {old.get(name, '(unset)')} -> {new.get(name, '(unset)')}" for name in differ
    ]
    return "; ".join(shown[:4]) + ("; ..." if len(shown) > 4 else "")
