"""Our env rewards as TRL reward functions: ``fn(prompts, completions, **columns) -> list[float | None]``.

Scoring is exactly ``env.step``'s: for each row the function rebuilds (and caches) the env
``gym.make(env_id, split=split, **json.loads(env_kwargs))`` from the row's columns, resets it
on ``index`` and steps it with the completion; the value is the env reward (or one named
reward component, unweighted, with ``component=``). ``env_id`` must be one of
``lavida_envs.ENV_IDS`` (optionally prefixed ``lavida_envs:``); anything else is a
``ValueError`` before ``gym.make``, which would import the module named before a ``:``.
The columns are those
:func:`lavida_envs.hf.to_hf_dataset` writes -- ``env_id``, ``split``, ``index``,
``env_kwargs``, ``task``, ``answer``, ... -- and TRL passes them as keyword lists. When an
``answer`` column is present it must equal the env's gold for that index (a stale dataset is
an error, never a silent mis-score).

Completions may be strings, chat messages (``[{"role": "assistant", "content": str | parts}]``:
the last assistant message's text) or, for image edits from custom rollouts, an action dict
``{"text": str, "image": uint8[H, W, 3]}``. A malformed completion never raises: the env
scores it 0 (its reason goes to ``info["error"]``). Rows of a task a function does not cover
get ``None``, as TRL expects when several reward functions split a multi-task dataset.

Functions: :func:`env_reward` (every task), :func:`visual_math_reward`,
:func:`grounding_reward`, :func:`image_edit_reward`, and :func:`make_reward_function` for a
custom task set, a single component, fixed env kwargs (e.g. a non-JSON ``judge``) or a name.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, Callable, Iterable, Sequence

import gymnasium as gym

__all__ = [
    "REWARD_FUNCTIONS",
    "completion_action",
    "env_reward",
    "grounding_reward",
    "image_edit_reward",
    "make_reward_function",
    "visual_math_reward",
]

RewardFn = Callable[..., list]
_REQUIRED = ("env_id", "split", "index")
_ENV_CACHE: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
_ENV_CACHE_SIZE = 16


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def completion_action(completion: Any) -> Any:
    """The env action of one TRL completion (text of the last assistant message, or an action dict)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content")) if "role" in completion else completion
    if isinstance(completion, (list, tuple)):
        messages = [m for m in completion if isinstance(m, dict)]
        assistant = [m for m in messages if m.get("role") == "assistant"] or messages
        return _content_text(assistant[-1].get("content")) if assistant else ""
    return completion  # anything else: the env scores it 0 with a reason


def _env(env_id: str, split: str, kwargs_json: str, overrides: dict[str, Any] | None, cache: OrderedDict) -> Any:
    """The (cached) unwrapped env for a row; ``overrides`` (a reward function's own kwargs) win."""
    key = (env_id, split, kwargs_json)
    env = cache.get(key)
    if env is not None:
        cache.move_to_end(key)
        return env
    import lavida_envs  # registers the ids

    known = lavida_envs.ENV_IDS
    registered = env_id.removeprefix("lavida_envs:")
    if registered not in known:  # checked before gym.make, which would import "module:" prefixes
        raise ValueError(
            f"column 'env_id' is {env_id[:120]!r}, not a LaViDa env id; use one of {list(known)} "
            "(the ids lavida_envs.hf.to_hf_dataset writes)"
        )
    try:
        kwargs = json.loads(kwargs_json) if kwargs_json else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"column 'env_kwargs' is not JSON ({exc}): {kwargs_json[:120]!r}") from None
    env = gym.make(registered, split=split, **{**kwargs, **(overrides or {})}).unwrapped
    cache[key] = env
    if len(cache) > _ENV_CACHE_SIZE:
        cache.popitem(last=False)[1].close()
    return env


def _column(columns: dict[str, Any], name: str, n: int, default: Any = None) -> list[Any]:
    value = columns.get(name)
    if value is None:
        return [default] * n
    if isinstance(value, (str, int)) or not isinstance(value, Sequence):
        return [value] * n  # a scalar applies to every row
    if len(value) != n:
        raise ValueError(f"column {name!r} has {len(value)} entries for {n} completions")
    return list(value)


def _score_rows(
    completions: Sequence[Any],
    columns: dict[str, Any],
    tasks: frozenset[str] | None,
    component: str | None,
    env_kwargs: dict[str, Any] | None,
    fixed_env_id: str | None,
    cache: OrderedDict,
) -> list[float | None]:
    n = len(completions)
    missing = [c for c in _REQUIRED if columns.get(c) is None and not (c == "env_id" and fixed_env_id)]
    if missing:
        raise ValueError(
            f"TRL reward needs the columns {list(_REQUIRED)} (plus 'env_kwargs', 'task', 'answer') written by "
            f"lavida_envs.hf.to_hf_dataset; missing {missing}, got {sorted(columns)}"
        )
    env_ids = _column(columns, "env_id", n, fixed_env_id)
    splits, indices = _column(columns, "split", n), _column(columns, "index", n)
    kwargs_col, task_col = _column(columns, "env_kwargs", n, "{}"), _column(columns, "task", n)
    answers = _column(columns, "answer", n)
    rewards: list[float | None] = []
    for i, completion in enumerate(completions):
        if tasks is not None and task_col[i] is not None and task_col[i] not in tasks:
            rewards.append(None)
            continue
        env = _env(str(env_ids[i]), str(splits[i]), str(kwargs_col[i] or "{}"), env_kwargs, cache)
        _, info = env.reset(options={"index": int(indices[i])})
        if tasks is not None and info.get("task") not in tasks:
            rewards.append(None)
            continue
        if answers[i] is not None and str(answers[i]) != str(info.get("answer")):
            raise ValueError(
                f"row {i}: column 'answer' {answers[i]!r} differs from {env_ids[i]} index {indices[i]}'s gold "
                f"{info.get('answer')!r}; the dataset was built with other env kwargs or version -- rebuild it"
            )
        _, reward, _, _, step_info = env.step(completion_action(completion))
        if component is None:
            rewards.append(float(reward))
        else:
            value = step_info.get("reward_components", {}).get(component)
            rewards.append(None if value is None else float(value))
    return rewards


def make_reward_function(
    tasks: Iterable[str] | str | None = None,
    component: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    env_id: str | None = None,
    name: str | None = None,
) -> RewardFn:
    """A TRL reward function over the rows of ``tasks`` (None: all), optionally one ``component``.

    ``env_kwargs`` override the dataset's ``env_kwargs`` column (for values JSON cannot hold);
    ``env_id`` stands in for a missing ``env_id`` column; ``name`` sets ``__name__`` (TRL logs it).
    """
    task_set = None if tasks is None else frozenset([tasks] if isinstance(tasks, str) else tasks)
    env_kwargs = dict(env_kwargs) if env_kwargs else None
    cache = OrderedDict() if env_kwargs else _ENV_CACHE  # envs with overrides are this function's own

    def reward_fn(prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **columns: Any) -> list:
        return _score_rows(list(completions), columns, task_set, component, env_kwargs, env_id, cache)

    label = "_".join(sorted(task_set)) if task_set else "env"
    reward_fn.__name__ = name or f"{label}_{component or 'reward'}"
    reward_fn.__doc__ = f"TRL reward: env reward{f' component {component!r}' if component else ''} for tasks {label}."
    return reward_fn


#: The env reward on every row.
env_reward = make_reward_function(name="env_reward")
#: The env reward on visual-math rows, None elsewhere.
visual_math_reward = make_reward_function("visual_math", name="visual_math_reward")
#: The env reward on grounding rows, None elsewhere.
grounding_reward = make_reward_function("grounding", name="grounding_reward")
#: The env reward on image-edit rows, None elsewhere (text-only completions score 0 for the edit part).
image_edit_reward = make_reward_function("image_edit", name="image_edit_reward")
#: task name -> its reward function
REWARD_FUNCTIONS: dict[str, RewardFn] = {
    "visual_math": visual_math_reward,
    "grounding": grounding_reward,
    "image_edit": image_edit_reward,
}
