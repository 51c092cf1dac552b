"""``check_policy``: run a policy through every part of :class:`agents.policy.TrainablePolicy` (like gymnasium's ``check_env``).

``check_policy(policy, env_ids=("LaViDa/VisualMath-v0",))`` opens two test problems of each env,
shortens decoding (``gen_length`` 16, 8 steps) for the checks and restores it afterwards, and
returns the :class:`PolicyProblem` list (empty: the policy passes); ``raise_on_failure=True``
raises :class:`PolicyCheckError` listing them. Each problem says which check failed, what was
wrong and how to fix it. Checks, in order (a failed member check stops the rest):

``members`` (every Protocol member exists; ``model`` is an ``nn.Module``; ``decoding`` a
dataclass with ``validate``), ``rollout`` (row count, dtypes and (B, L) shapes, observation-major
``prompt_index``, response inside the attended positions, one text and action per row),
``determinism`` (the same seeded generator gives the same rollouts), ``forcing`` (a forced
suffix is in the response text and at ``forced_mask`` positions; a policy with
``supports_forcing`` False must raise ValueError), ``scored_mask`` (bool (B, L), inside
``response_mask``, never the prompt, not empty), ``likelihood`` (``log_likelihood_terms``:
finite (B,) ``loglik`` with gradients, (B, L) ``token_logp`` zero outside the scored positions
and summing to ``loglik``, identical for a fixed mask seed; ``log_likelihood`` agrees; the
gradient reaches the parameters and is finite), ``sft_rows`` (``sft_rollouts`` of reference
solutions: one row per observation, finite likelihood), ``rollout_from`` (branching after the
last step keeps the parent's response; a policy with ``supports_tree_search`` False must raise
NotImplementedError), ``save_load`` (``from_pretrained(save_pretrained(dir))`` gives the same
likelihood and greedy rollout), ``decoding_settings`` (JSON-able).
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass, is_dataclass
from typing import Any, Sequence

import torch

from agents.policy import missing_members

__all__ = ["PolicyCheckError", "PolicyProblem", "check_policy", "main"]

SUFFIX = "<answer>7</answer>"
SHORT_DECODING = {"gen_length": 16, "steps": 8, "block_length": 8, "temperature": 0.0}


@dataclass(frozen=True)
class PolicyProblem:
    """One failed check: which, what was wrong, how to fix it."""

    check: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.problem} -- fix: {self.fix}"


class PolicyCheckError(AssertionError):
    """Raised by ``check_policy(..., raise_on_failure=True)``; ``problems`` lists every failure."""

    def __init__(self, problems: list[PolicyProblem]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} contract check(s) failed:\n" + "\n".join(f"  {p}" for p in problems))


class _Checker:
    """Collects problems; ``expect`` records one when a condition fails."""

    def __init__(self) -> None:
        self.problems: list[PolicyProblem] = []

    def expect(self, ok: bool, check: str, problem: str, fix: str) -> bool:
        if not ok:
            self.problems.append(PolicyProblem(check, problem, fix))
        return bool(ok)

    def guard(self, check: str, fix: str, fn: Any, *args: Any, **kw: Any) -> Any:
        """``fn(*args, **kw)``, or None with a problem recorded when it raises."""
        try:
            return fn(*args, **kw)
        except Exception as exc:  # noqa: BLE001  (every failure becomes a report line)
            self.problems.append(PolicyProblem(check, f"raised {type(exc).__name__}: {exc}", fix))
            return None


def _observations(env_id: str, count: int) -> tuple[list[dict], list[Any]]:
    """``count`` test observations of ``env_id`` and their reference actions."""
    import gymnasium as gym

    import lavida_envs  # noqa: F401  (registers the env ids)
    from agents.sft import reference_action

    env = gym.make(env_id, split="test", difficulty=1)
    observations, targets = [], []
    for index in range(count):
        obs, info = env.reset(options={"index": index})
        observations.append(obs)
        targets.append(reference_action(env, info))
    return observations, targets


def _check_rollouts(c: _Checker, r: Any, n_obs: int, k: int, where: str) -> bool:
    """Shapes and dtypes of one rollout record."""
    rows = n_obs * k
    if not c.expect(len(r) == rows, "rollout", f"{where}: {len(r)} rows for {n_obs} observations x {k} samples",
                    f"return {rows} rows, observation-major (row i*k+j = sample j of observation i)"):
        return False
    seq = r.sequences
    ok = c.expect(seq.dim() == 2 and seq.dtype == torch.long, "rollout", f"{where}: sequences {tuple(seq.shape)} {seq.dtype}",
                  "sequences must be a (B, L) torch.long tensor")
    for name in ("response_mask", "attention_mask"):
        m = getattr(r, name)
        ok &= c.expect(isinstance(m, torch.Tensor) and m.dtype == torch.bool and m.shape == seq.shape, "rollout",
                       f"{where}: {name} is {getattr(m, 'dtype', type(m))} {tuple(getattr(m, 'shape', ()))}",
                       f"{name} must be a bool tensor shaped like sequences {tuple(seq.shape)}")
    if not ok:
        return False
    expected = torch.arange(n_obs).repeat_interleave(k)
    c.expect(torch.equal(r.prompt_index.cpu().long(), expected), "rollout", f"{where}: prompt_index {r.prompt_index.tolist()}",
             f"prompt_index must be {expected.tolist()} (observation-major rows)")
    c.expect(not bool((r.response_mask & ~r.attention_mask).any()), "rollout", f"{where}: response positions are unattended",
             "attention_mask must be True on every response position")
    c.expect(bool(r.response_mask.any(1).all()), "rollout", f"{where}: a row has no response positions",
             "mark the response of every row in response_mask")
    c.expect(len(r.texts) == rows and len(r.actions) == rows, "rollout",
             f"{where}: {len(r.texts)} texts and {len(r.actions)} actions for {rows} rows", "return one text and one env action per row")
    return True


def _check_likelihood(c: _Checker, policy: Any, r: Any, where: str) -> None:
    """``log_likelihood_terms`` / ``log_likelihood`` / ``scored_mask`` on one record."""
    scored = c.guard("scored_mask", "scored_mask(rollouts) must return a (B, L) bool tensor", policy.scored_mask, r)
    if scored is not None:
        ok = c.expect(isinstance(scored, torch.Tensor) and scored.shape == r.sequences.shape, "scored_mask",
                      f"{where}: scored_mask shape {tuple(getattr(scored, 'shape', ()))} != sequences {tuple(r.sequences.shape)}",
                      "return one flag per column of sequences")
        if ok:
            scored = scored.cpu().bool()
            c.expect(not bool((scored & ~r.response_mask.cpu()).any()), "scored_mask",
                     f"{where}: scored_mask covers {int((scored & ~r.response_mask.cpu()).sum())} prompt/padding positions",
                     "score only response positions (scored_mask & ~response_mask must be empty)")
            c.expect(bool(scored.any(1).all()), "scored_mask", f"{where}: a row has no scored position",
                     "score at least the sampled response tokens of every row")
    fix = "log_likelihood_terms(rollouts, estimator, mask_seed) must return a LikelihoodEstimate (loglik (B,), token_logp (B, L))"
    first = c.guard("likelihood", fix, policy.log_likelihood_terms, r, "complementary", 0)
    if first is None:
        return
    ll = first.loglik
    if not c.expect(isinstance(ll, torch.Tensor) and ll.shape == (len(r),), "likelihood",
                    f"{where}: loglik shape {tuple(getattr(ll, 'shape', ()))}, expected ({len(r)},)", "return one value per row"):
        return
    c.expect(bool(torch.isfinite(ll).all()), "likelihood", f"{where}: non-finite loglik {ll.tolist()}",
             "mask disallowed tokens with a finite logit (e.g. -1e9), never -inf, and compute log_softmax in float32")
    c.expect(ll.requires_grad, "likelihood", f"{where}: loglik has no gradient", "do not run the likelihood under torch.no_grad()")
    tl = first.token_logp
    if c.expect(isinstance(tl, torch.Tensor) and tl.shape == r.sequences.shape, "likelihood",
                f"{where}: token_logp shape {tuple(getattr(tl, 'shape', ()))} != sequences {tuple(r.sequences.shape)}",
                "token_logp must be aligned with the rollouts' columns") and scored is not None:
        outside = tl.detach().cpu()[~scored.bool()].abs().max().item() if bool((~scored.bool()).any()) else 0.0
        c.expect(outside < 1e-6, "likelihood", f"{where}: token_logp is {outside:.3g} outside scored_mask",
                 "token_logp must be zero outside the scored positions")
        c.expect(torch.allclose(tl.detach().sum(1).cpu(), ll.detach().cpu(), atol=1e-3, rtol=1e-4), "likelihood",
                 f"{where}: token_logp rows sum to {tl.detach().sum(1).tolist()} but loglik is {ll.detach().tolist()}",
                 "token_logp rows must sum to loglik")
    second = c.guard("likelihood", fix, policy.log_likelihood_terms, r, "complementary", 0)
    if second is not None:
        c.expect(torch.allclose(second.loglik.detach(), ll.detach(), atol=1e-5), "likelihood",
                 f"{where}: two calls with mask_seed 0 gave {ll.detach().tolist()} and {second.loglik.detach().tolist()}",
                 "draw masks only from a torch.Generator seeded by mask_seed (no global RNG, no dropout in eval)")
    plain = c.guard("likelihood", "log_likelihood(rollouts, estimator, mask_seed) must return (B,)", policy.log_likelihood, r, "complementary", 0)
    if plain is not None:
        c.expect(torch.allclose(plain.detach(), ll.detach(), atol=1e-5), "likelihood",
                 f"{where}: log_likelihood {plain.detach().tolist()} != log_likelihood_terms(...).loglik {ll.detach().tolist()}",
                 "log_likelihood must equal log_likelihood_terms(...).loglik")
    if ll.requires_grad and bool(torch.isfinite(ll).all()):
        policy.model.zero_grad(set_to_none=True)
        ll.sum().backward()
        grads = [p.grad for p in policy.model.parameters() if p.grad is not None]
        c.expect(bool(grads), "likelihood", f"{where}: no parameter of policy.model received a gradient",
                 "compute the likelihood with policy.model (the module the trainer optimises)")
        c.expect(all(bool(torch.isfinite(g).all()) for g in grads), "likelihood", f"{where}: non-finite gradient",
                 "keep the loss finite (finite masking logits, float32 log_softmax)")
        policy.model.zero_grad(set_to_none=True)


def _check_env(c: _Checker, policy: Any, env_id: str, load_kwargs: dict[str, Any]) -> None:
    """Every rollout-side check on two problems of ``env_id``."""
    from agents.diffusion.layout import task_of
    from agents.rollout import select_rows
    from agents.train_batch import use_decoding

    observations, targets = _observations(env_id, 2)
    task = task_of(observations[0])
    where = env_id
    with use_decoding(policy, SHORT_DECODING, task):
        gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
        r = c.guard("rollout", "rollout(observations, num_samples, forced, generator) must return Rollouts",
                    policy.rollout, observations, 2, generator=gen())
        if r is None or not _check_rollouts(c, r, 2, 2, where):
            return
        again = c.guard("determinism", "sample only from the generator passed in", policy.rollout, observations, 2, generator=gen())
        if again is not None:
            c.expect(torch.equal(again.sequences, r.sequences), "determinism",
                     f"{where}: two rollouts with generators seeded 0 differ", "draw all randomness from the generator argument")
        if policy.supports_forcing:
            forced = c.guard("forcing", "rollout(..., forced=[suffix per observation]) must fix the suffix", policy.rollout,
                             observations, 1, forced=[SUFFIX, None], generator=gen())
            if forced is not None and _check_rollouts(c, forced, 2, 1, where + " (forced)"):
                c.expect(SUFFIX in forced.texts[0], "forcing", f"{where}: forced suffix {SUFFIX!r} not honoured: text {forced.texts[0]!r}",
                         "put the suffix's tokens at the last text positions before sampling and never change them")
                fm = forced.forced_mask
                c.expect(fm is not None and bool(fm[0].any()), "forcing", f"{where}: forced_mask does not mark the forced suffix",
                         "set forced_mask True at the positions fixed before sampling")
        else:
            try:
                policy.rollout(observations, 1, forced=[SUFFIX, None], generator=gen())
                c.expect(False, "forcing", f"{where}: supports_forcing is False but a forced suffix was accepted",
                         "raise ValueError for forced suffixes, or implement forcing and set supports_forcing = True")
            except ValueError:
                pass
        _check_likelihood(c, policy, r, where)
        sft = c.guard("sft_rows", "sft_rollouts(observations, targets) must return one Rollouts row per target",
                      policy.sft_rollouts, observations, targets)
        if sft is not None and c.expect(len(sft) == 2, "sft_rows", f"{where}: {len(sft)} SFT rows for 2 targets", "one row per target"):
            _check_likelihood(c, policy, sft, where + " (sft rows)")
        parents = select_rows(r, torch.tensor([0, 2]))
        if policy.supports_tree_search:
            child = c.guard("rollout_from", "rollout_from(observations, parents, step, num_samples, generator) must branch",
                            policy.rollout_from, observations, parents, SHORT_DECODING["steps"], 2, generator=gen())
            if child is not None and _check_rollouts(c, child, 2, 2, where + " (rollout_from)"):
                width = int(parents.response_mask[0].sum())
                same = torch.equal(child.sequences[0, -width:], parents.sequences[0, -width:])
                c.expect(same, "rollout_from", f"{where}: branching after the last step changed the parent's response",
                         "keep every position the parent revealed at a step <= step (and the forced ones)")
        else:
            try:
                policy.rollout_from(observations, parents, 1, 2, generator=gen())
                c.expect(False, "rollout_from", f"{where}: supports_tree_search is False but rollout_from worked",
                         "set supports_tree_search = True")
            except NotImplementedError:
                pass
        _check_save_load(c, policy, observations, r, where, load_kwargs)


def _check_save_load(c: _Checker, policy: Any, observations: list[dict], r: Any, where: str, load_kwargs: dict[str, Any]) -> None:
    """``from_pretrained(save_pretrained(dir))`` reproduces likelihood and greedy rollout."""
    with tempfile.TemporaryDirectory() as folder:
        if c.guard("save_load", "save_pretrained(dir) must write a loadable folder", policy.save_pretrained, folder) is None and c.problems \
                and c.problems[-1].check == "save_load":
            return
        loaded = c.guard("save_load", f"{type(policy).__name__}.from_pretrained(dir) must rebuild what save_pretrained wrote",
                         type(policy).from_pretrained, folder, **load_kwargs)
    if loaded is None:
        return
    loaded.model.to(policy.device if hasattr(policy, "device") else "cpu")
    loaded.decoding = policy.decoding
    a = c.guard("save_load", "log_likelihood must work before saving", policy.log_likelihood, r, "complementary", 0)
    b = c.guard("save_load", "log_likelihood must work after loading", loaded.log_likelihood, r, "complementary", 0)
    if a is None or b is None:
        return
    a, b = a.detach().cpu(), b.detach().cpu()
    c.expect(torch.allclose(a, b, atol=1e-4), "save_load", f"{where}: likelihood {a.tolist()} before saving, {b.tolist()} after loading",
             "save every weight (and the mask/special token ids) and load them back")
    again = c.guard("save_load", "rollout must work after loading", loaded.rollout, observations, 2,
                    generator=torch.Generator().manual_seed(0))
    c.expect(again is not None and torch.equal(again.sequences, r.sequences), "save_load", f"{where}: the reloaded policy samples other responses",
             "save the tokenizer and decoding settings with the weights")


def check_policy(
    policy: Any, env_ids: Sequence[str] = ("LaViDa/VisualMath-v0",), raise_on_failure: bool = False,
    load_kwargs: dict[str, Any] | None = None,
) -> list[PolicyProblem]:
    """Every contract problem of ``policy`` on tiny inputs of ``env_ids`` (module docstring); ``[]`` when it passes.

    ``load_kwargs`` go to ``from_pretrained`` in the save/load check (e.g. ``{"trust_remote_code": True}``).
    """
    c = _Checker()
    missing = missing_members(policy)
    if missing:
        c.expect(False, "members", f"{type(policy).__name__} lacks {missing}", "implement every agents.policy.TrainablePolicy member")
    else:
        c.expect(isinstance(policy.model, torch.nn.Module), "members", f"model is a {type(policy.model).__name__}",
                 "policy.model must be the torch.nn.Module the trainer optimises")
        c.expect(is_dataclass(policy.decoding) and callable(getattr(policy.decoding, "validate", None)), "members",
                 f"decoding is a {type(policy.decoding).__name__}", "use a dataclass with validate() -> self (agents.diffusion.DecodingConfig)")
    if not c.problems:
        was_training = policy.model.training
        policy.model.eval()
        try:
            for env_id in env_ids:
                _check_env(c, policy, env_id, dict(load_kwargs or {}))
            settings = c.guard("decoding_settings", "decoding_settings() must return a dict", policy.decoding_settings)
            if settings is not None:
                c.guard("decoding_settings", "return only JSON-able values (str, numbers, lists, dicts, None)", json.dumps, settings)
        finally:
            policy.model.train(was_training)
    if raise_on_failure and c.problems:
        raise PolicyCheckError(c.problems)
    return c.problems


def parse_args(argv: list[str] | None = None) -> Any:
    """A ``lavida check-policy`` command line; bad values exit 2 with one line naming the flag."""
    from agents.cli_args import ArgumentParser, nonempty
    from agents.specs import TRAINABLE_FORMS

    parser = ArgumentParser(prog="lavida check-policy", description=__doc__.split("\n")[0])
    parser.add_argument("spec", type=nonempty, help=f"a trainable policy spec: {TRAINABLE_FORMS}")
    parser.add_argument("--env", action="append", default=None, type=nonempty,
                        help="env id to check on (repeatable; default VisualMath)")  # fmt: skip
    parser.add_argument("--trust-remote-code", action="store_true", help="allow an hf-dllm: folder's own model code")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """``lavida check-policy SPEC [--env ID ...] [--trust-remote-code]``: exit 0 when the policy passes, 1 otherwise."""
    from agents.specs import trainable_policy

    args = parse_args(argv)
    try:
        policy = trainable_policy(args.spec, trust_remote_code=args.trust_remote_code)
    except (ValueError, TypeError, OSError) as exc:  # OSError: a missing or unreadable folder or weights file
        print(f"lavida check-policy: {exc}", file=sys.stderr)
        return 2
    load = {"trust_remote_code": True} if args.trust_remote_code else {}
    problems = check_policy(policy, env_ids=args.env or ["LaViDa/VisualMath-v0"], load_kwargs=load)
    for problem in problems:
        print(problem)
    print(f"{type(policy).__name__}: {'passes' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
