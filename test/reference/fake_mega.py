#!/usr/bin/python3
"""Stand-in for mega's `megac` and `mega-run`, built on the reference, used ONLY by
check_gpt.py --self-test to exercise the whole driver (CLI, files, log parsing) before mega
exists. It also serves as an executable summary of the CLI contract check_gpt relies on.

  fake_mega.py megac MODEL -o PLAN --set k=v ... --micro-batch-size B [--global-batch-size G] ...
  fake_mega.py mega-run PLAN --data PREFIX --steps N --lr X --no-shuffle --seed S --load W \
      --dump-grads G --log-file LOG --log-interval 1

Its training uses torch.optim.AdamW/SGD (not gpt_ref's ManualOptimizer), so a passing
end-to-end self-test also cross-checks the two optimizer paths.
"""
import argparse
import json
import os
import sys
import time


def megac(argv):
    p = argparse.ArgumentParser(prog="megac")
    p.add_argument("model")
    p.add_argument("-o", required=True)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--micro-batch-size", type=int, required=True)
    p.add_argument("--global-batch-size", type=int, default=None)
    p.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--adam-beta1", type=float, default=0.9)
    p.add_argument("--adam-beta2", type=float, default=0.999)
    p.add_argument("--adam-eps", type=float, default=1e-8)
    p.add_argument("--clip-grad", type=float, default=1.0)
    a = p.parse_args(argv)
    sets = dict(s.split("=", 1) for s in a.set)
    plan = {"model": {k: int(sets[k]) for k in ("layers", "hidden", "heads", "vocab", "seq")},
            "B": a.micro_batch_size, "G": a.global_batch_size or a.micro_batch_size,
            "opt": {"optimizer": a.optimizer, "weight_decay": a.weight_decay,
                    "beta1": a.adam_beta1, "beta2": a.adam_beta2, "eps": a.adam_eps,
                    "clip_grad": a.clip_grad}}
    with open(a.o, "w") as f:
        json.dump(plan, f)
    return 0


def mega_run(argv):
    p = argparse.ArgumentParser(prog="mega-run")
    p.add_argument("plan")
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--no-shuffle", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--load", help="default: reference random weights from --seed")
    p.add_argument("--dump-grads")
    p.add_argument("--log-file")
    p.add_argument("--log-interval", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="accepted for the benchmark; ignored")
    a = p.parse_args(argv)
    assert a.no_shuffle, "fake mega-run only implements --no-shuffle"

    import torch
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import gpt_ref as R
    torch.set_num_threads(1)
    with open(a.plan) as f:
        plan = json.load(f)
    cfg = R.GPTConfig(**plan["model"])
    oc = R.OptConfig(lr=a.lr, **plan["opt"])
    weights = R.load_safetensors(a.load)[0] if a.load else R.random_weights(cfg, a.seed)
    tokens = R.read_indexed_dataset(a.data)
    t0 = time.time()
    logs, grads, _ = R.train(cfg, weights, tokens, a.steps, plan["B"], plan["G"], oc,
                             torch.float32, optimizer="torch")
    ms = (time.time() - t0) * 1000 / max(1, a.steps)
    if a.dump_grads:
        R.save_safetensors(a.dump_grads, grads)
    if a.log_file:
        with open(a.log_file, "w") as f:
            for rec in logs:
                if rec["iteration"] % a.log_interval:
                    continue
                f.write(json.dumps({
                    "iteration": rec["iteration"], "consumed_samples": rec["iteration"] * plan["G"],
                    "elapsed_ms": ms, "lr": a.lr, "global_batch_size": plan["G"],
                    "lm_loss": rec["lm_loss"], "grad_norm": rec["grad_norm"],
                    "skipped": 0, "nan": 0}) + "\n")
    return 0


if __name__ == "__main__":
    tool, rest = sys.argv[1], sys.argv[2:]
    sys.exit({"megac": megac, "mega-run": mega_run}[tool](rest))
