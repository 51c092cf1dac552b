"""``python -m agents.hf.lora merge SRC DST``: write a LoRA checkpoint with its adapter merged, of any policy class."""

from __future__ import annotations

import argparse
import json
import os
import sys

from agents.hf.lora.adapter import has_adapter, merge_lora
from agents.specs import checkpoint_class


def main(argv: list[str] | None = None) -> int:
    """Merge SRC's adapter into its base weights and save DST (a plain HF model folder plus ``policy_config.json``)."""
    parser = argparse.ArgumentParser(prog="python -m agents.hf.lora", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("merge", help="merge a LoRA checkpoint's adapter into its base weights")
    merge.add_argument("src", help="a checkpoint folder (its policy_config.json format picks the class)")
    merge.add_argument("dst", help="the folder to write the merged checkpoint to")
    merge.add_argument("--trust_remote_code", action="store_true", help="needed for hf-dllm:/hf-dream: remote code")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.src):
        print(f"python -m agents.hf.lora merge: {args.src!r} is not a folder; pass a LoRA checkpoint folder", file=sys.stderr)
        return 2
    try:
        cls = checkpoint_class(args.src)
    except ValueError as exc:
        print(f"python -m agents.hf.lora merge: {exc}", file=sys.stderr)
        return 2
    policy = cls.from_pretrained(args.src, **({"trust_remote_code": True} if args.trust_remote_code else {}))
    backbone = getattr(getattr(policy, "model", None), "backbone", None)
    if backbone is None or not has_adapter(backbone):
        print(f"{args.src}: no LoRA adapter (policy_config.json has no 'lora'); nothing to merge", file=sys.stderr)
        return 2
    merge_lora(policy)
    policy.save_pretrained(args.dst)
    print(json.dumps({"merged": args.src, "to": args.dst, "class": cls.__name__}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
