"""verl interop: our env rewards as a verl ``compute_score`` and any env's problems as a verl parquet file.

`verl <https://github.com/volcengine/verl>`_ (the distributed RL engine DARE builds on for
diffusion LMs) reads prompts from parquet and scores each decoded response with a *custom
reward function* ``compute_score(data_source, solution_str, ground_truth, extra_info)``,
called with keyword arguments by its reward manager. This module gives both sides:

* :func:`to_verl_parquet` -- problems ``start .. start+n-1`` of ``gym.make(env_id,
  split=split, **env_kwargs)`` in verl's RL dataset layout: ``data_source`` (the env id),
  ``prompt`` (a chat: optional system turn, then the user turn; with images its text starts
  with ``<image>``, verl's placeholder), ``images`` (``[{"bytes": PNG, "path": None}]``, unless
  ``images=False``), ``ability`` (the task), ``reward_model`` (``{"style": "rule",
  "ground_truth": answer}``) and ``extra_info`` (``index``, ``split``, ``task``,
  ``env_kwargs`` as JSON, ``solution``). Needs ``datasets`` (with pyarrow, installed by the
  ``trl`` extra); no network.
* :func:`compute_score` -- rebuilds the env from ``data_source`` and ``extra_info`` (cached),
  resets it on ``extra_info["index"]`` and returns ``env.step(solution_str)``'s reward as a
  float -- exactly what ``env.step`` and :mod:`lavida_envs.rewards.trl` give. A
  ``ground_truth`` that differs from the env's gold for that index (a stale file) is a
  ``ValueError``; a malformed response scores 0. Only registered LaViDa env ids are built.

verl configuration (the file path is this module's)::

    custom_reward_function.path=$(python -c "import lavida_envs.verl as m; print(m.__file__)")
    custom_reward_function.name=compute_score

Image-edit rows score the text only (a text response has no image: its edit part is 0), as
for any text policy.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

__all__ = ["compute_score", "to_verl_parquet", "verl_rows"]

#: verl's image placeholder in prompt text.
IMAGE_PLACEHOLDER = "<image>"


def verl_rows(
    env_id: str,
    split: str = "train",
    n: int = 64,
    *,
    start: int = 0,
    images: bool = True,
    system_prompt: str | None = None,
    **env_kwargs: Any,
) -> list[dict[str, Any]]:
    """The rows :func:`to_verl_parquet` writes, as plain dicts (one per problem index)."""
    import lavida_envs  # noqa: F401  (registers the ids)
    from lavida_envs.hf import export_env

    env, kwargs_json = export_env(env_id, split, n, start, env_kwargs)
    rows = []
    for index in range(start, start + n):
        obs, info = env.reset(options={"index": index})
        text = f"{IMAGE_PLACEHOLDER}{obs['prompt']}" if images else obs["prompt"]
        prompt = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": text}
        ]
        row: dict[str, Any] = {
            "data_source": env_id,
            "prompt": prompt,
            "ability": str(info.get("task", "")),
            "reward_model": {"style": "rule", "ground_truth": str(info.get("answer", ""))},
            "extra_info": {
                "index": index, "split": split, "task": str(info.get("task", "")), "env_kwargs": kwargs_json,
                "solution": str(info.get("solution", "")),
            },
        }  # fmt: skip
        if images:
            row["images"] = [{"bytes": _png(obs["image"]), "path": None}]
        rows.append(row)
    env.close()
    return rows


def to_verl_parquet(
    env_id: str,
    path: str | Path,
    split: str = "train",
    n: int = 64,
    *,
    start: int = 0,
    images: bool = True,
    system_prompt: str | None = None,
    **env_kwargs: Any,
) -> Path:
    """Write problems ``start .. start+n-1`` of ``env_id`` as a verl RL parquet file; return its path."""
    try:
        import datasets
    except ImportError as exc:
        raise ImportError(
            "to_verl_parquet needs the 'datasets' package (with pyarrow): pip install 'lavida-r1-gym[trl]'"
        ) from exc
    rows = verl_rows(env_id, split, n, start=start, images=images, system_prompt=system_prompt, **env_kwargs)
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    features = {
        "data_source": datasets.Value("string"),
        "prompt": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
        "ability": datasets.Value("string"),
        "reward_model": {"style": datasets.Value("string"), "ground_truth": datasets.Value("string")},
        "extra_info": {
            "index": datasets.Value("int64"), "split": datasets.Value("string"), "task": datasets.Value("string"),
            "env_kwargs": datasets.Value("string"), "solution": datasets.Value("string"),
        },
    }  # fmt: skip
    if images:
        features["images"] = [datasets.Image()]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(columns, features=datasets.Features(features)).to_parquet(str(out))
    return out


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str | None = None,
    extra_info: dict[str, Any] | None = None,
    **_: Any,
) -> float:
    """verl custom reward: the env reward of ``solution_str`` on the problem ``extra_info`` names."""
    from lavida_envs.rewards.trl import env_reward

    info = extra_info if isinstance(extra_info, dict) else {}
    missing = [key for key in ("index", "split") if info.get(key) is None]
    if missing:
        raise ValueError(
            f"compute_score needs extra_info with {missing} (written by lavida_envs.verl.to_verl_parquet); "
            f"got extra_info={extra_info!r:.200}"
        )
    columns = {
        "env_id": [str(data_source)], "split": [str(info["split"])], "index": [int(info["index"])],
        "env_kwargs": [str(info.get("env_kwargs") or "{}")], "task": [info.get("task")],
        "answer": [None if ground_truth is None else str(ground_truth)],
    }  # fmt: skip
    return float(env_reward(None, [solution_str], **columns)[0])


def _png(image: Any) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
