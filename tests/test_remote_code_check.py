"""The remote-code path on the installed transformers (issue 21): it works, or one message lists every incompatibility."""

from __future__ import annotations

import shutil

import pytest
import torch

from agents.hf.policy import HFDiffusionPolicy
from tiny_dllm import save_llada_like

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def working(tmp_path_factory):
    return save_llada_like(tmp_path_factory.mktemp("remote") / "tiny_remote_ok")


def _broken(working, path, *, post_init=True, tie=False, use_cache=False):
    """A copy of the working folder whose model code has the chosen breaks of LLaDA's published code on transformers 5."""
    shutil.copytree(working, path)
    code = (path / "modeling_tiny_bidi.py").read_text()
    if not post_init:
        code = code.replace("        self.post_init()\n", "")
    if tie:
        code = code.replace("    def forward(", "    def tie_weights(self):\n        pass\n\n    def forward(")
    if use_cache:
        code = code.replace("        positions = torch.arange(", "        assert self.config.use_cache is not None\n        positions = torch.arange(")
    (path / "modeling_tiny_bidi.py").write_text(code)
    return path


def test_a_compatible_remote_code_folder_loads_and_runs(working):
    policy = HFDiffusionPolicy.from_hf(working, trust_remote_code=True)
    assert policy.remote_code
    with torch.no_grad():
        assert policy.model(torch.tensor([[5, 6, 4, 7]])).logits.shape[:2] == (1, 4)


def test_every_incompatibility_is_listed_in_one_message(working, tmp_path):
    folder = _broken(working, tmp_path / "tiny_remote_all", post_init=False, tie=True, use_cache=True)
    with pytest.raises(ValueError) as info:
        HFDiffusionPolicy.from_hf(folder, trust_remote_code=True)
    message = str(info.value)
    assert "does not run on the installed transformers" in message and message.count("\n") == 0
    assert "(1) TinyBidi.__init__ does not call self.post_init()" in message
    assert "(2) TinyBidi.tie_weights(self) does not take ['missing_keys', 'recompute_mapping']" in message
    assert "(3) TinyBidiConfig has no use_cache, which the model code reads" in message


def test_one_incompatibility_alone_is_named(working, tmp_path):
    folder = _broken(working, tmp_path / "tiny_remote_tie", tie=True)
    with pytest.raises(ValueError, match=r": \(1\) TinyBidi.tie_weights\(self\) does not take") as info:
        HFDiffusionPolicy.from_hf(folder, trust_remote_code=True)
    assert "(2)" not in str(info.value)
