"""``to_hf_dataset``: problems of any env as a Hugging Face ``datasets.Dataset`` (for TRL and friends).

One row per problem index ``start .. start + n - 1`` of ``gym.make(env_id, split=split,
**env_kwargs)`` (the same problems ``reset(options={"index": i})`` gives). Columns:

* ``prompt`` -- the observation prompt: a ``str``, or with ``conversational=True`` a chat
  ``[{"role": "system", ...}?, {"role": "user", "content": prompt}]``;
* ``image`` -- the observation image as a PIL image (``datasets.Image``), unless
  ``images=False``. TRL's ``GRPOTrainer`` treats an ``image`` column as VLM input and then
  needs conversational prompts: use ``images=False`` for text-only models;
* gold and bookkeeping: ``answer`` and ``solution`` (from ``info``), ``task``, ``index``,
  ``difficulty``, ``source``, ``env_id``, ``split`` and ``env_kwargs`` (JSON) -- everything
  :mod:`lavida_envs.rewards.trl` needs to rebuild the env and score a completion exactly as
  ``env.step`` would.

``datasets`` is imported lazily; without it the call fails with an install hint
(``pip install 'lavida-r1-gym[trl]'``). Building touches no network and no cache directory
(``Dataset.from_dict`` keeps the table in memory).
"""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym

__all__ = ["env_kwargs_json", "to_hf_dataset"]


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as exc:
        raise ImportError(
            "to_hf_dataset needs the 'datasets' package: pip install 'lavida-r1-gym[trl]' (or pip install datasets)"
        ) from exc
    return datasets


def env_kwargs_json(env_kwargs: dict[str, Any]) -> str:
    """``env_kwargs`` as canonical JSON; ValueError naming a kwarg that cannot be stored."""
    for name, value in env_kwargs.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"env kwarg {name}={value!r} is not JSON-serializable, so the dataset's 'env_kwargs' column cannot "
                "record it; build the reward with make_reward_function(env_kwargs=...) and leave it out here"
            ) from None
    return json.dumps(env_kwargs, sort_keys=True)


def export_env(env_id: str, split: str, n: int, start: int, env_kwargs: dict[str, Any]) -> tuple[Any, str]:
    """The unwrapped env of an export of problems ``start .. start+n-1`` and its kwargs as JSON (bad ranges named)."""
    if not isinstance(n, int) or n < 1 or not isinstance(start, int) or start < 0:
        raise ValueError(f"need an int n >= 1 and start >= 0, got n={n!r}, start={start!r}")
    kwargs_json = env_kwargs_json(env_kwargs)
    env = gym.make(env_id, split=split, **env_kwargs).unwrapped
    available = env.num_problems() if hasattr(env, "num_problems") else None
    if available is not None and start + n > available:
        raise ValueError(f"{env_id} ({split!r}) has {available} problems; cannot take n={n} from start={start}")
    return env, kwargs_json


def to_hf_dataset(
    env_id: str,
    split: str = "train",
    n: int = 64,
    *,
    start: int = 0,
    conversational: bool = False,
    images: bool = True,
    system_prompt: str | None = None,
    **env_kwargs: Any,
) -> Any:
    """A ``datasets.Dataset`` of problems ``start .. start+n-1``: prompts, images and gold columns."""
    datasets = _datasets()
    import lavida_envs  # noqa: F401  (registers the ids)

    env, kwargs_json = export_env(env_id, split, n, start, env_kwargs)
    columns: dict[str, list[Any]] = {
        key: []
        for key in ("prompt", "image", "answer", "solution", "task", "index", "difficulty", "source",
                    "env_id", "split", "env_kwargs")
    }
    for index in range(start, start + n):
        obs, info = env.reset(options={"index": index})
        prompt: Any = obs["prompt"]
        if conversational:
            system = [{"role": "system", "content": system_prompt}] if system_prompt else []
            prompt = system + [{"role": "user", "content": obs["prompt"]}]
        columns["prompt"].append(prompt)
        columns["image"].append(obs["image"])
        columns["answer"].append(str(info.get("answer", "")))
        columns["solution"].append(str(info.get("solution", "")))
        columns["task"].append(str(info.get("task", "")))
        columns["index"].append(index)
        columns["difficulty"].append(int(info.get("difficulty", 0)))
        columns["source"].append(str(info.get("source", "")))
        columns["env_id"].append(env_id)
        columns["split"].append(split)
        columns["env_kwargs"].append(kwargs_json)
    env.close()
    features = {
        "prompt": [{"role": datasets.Value("string"), "content": datasets.Value("string")}]
        if conversational
        else datasets.Value("string"),
        "image": datasets.Image(),
        "answer": datasets.Value("string"),
        "solution": datasets.Value("string"),
        "task": datasets.Value("string"),
        "index": datasets.Value("int64"),
        "difficulty": datasets.Value("int64"),
        "source": datasets.Value("string"),
        "env_id": datasets.Value("string"),
        "split": datasets.Value("string"),
        "env_kwargs": datasets.Value("string"),
    }
    if not images:
        del columns["image"], features["image"]
    else:
        from PIL import Image

        columns["image"] = [Image.fromarray(img) for img in columns["image"]]
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))
