#!/usr/bin/env python3
"""Tensor, sequence and data parallelism of megac's GPT on MPI ranks
(ctest parallel.tp_*, parallel.dp_distopt; builds with megac).

A small GPT (layers 2, hidden 64, heads 4) compiled by megac at tp=1 and at
tp=2 (mpirun -np 2) trains 10 steps on the same data, --no-shuffle, the same
--seed (parameters are initialised as the full tensor, then cut into shards):
the logged losses and gradient norms (clipping is active) agree to rel 1e-5
and --dump-grads (always full tensors) to rel 1e-4.

tp_vocab      vocab 256, divisible by 2: the vocabulary-parallel embedding and
              loss (VocabEmbedding, VocabCrossEntropy*)
tp_odd_vocab  vocab 251 (odd): zero-padded to 252, 126 vocabulary rows per
              rank, the padded logit column masked out of the loss (the
              plan's loss kernels carry V = 251); --dump-grads and the saved
              checkpoint (parameters and AdamW moments) hold the true
              [251, 64] wte, equal to the single-device ones
tp_dp         vocab 256 at tp=2, dp=2 (4 ranks) against tp=1, dp=1
tp4           vocab 256 at tp=4 (4 ranks: one head, 16 columns of c_attn's
              q, k and v, 64 vocabulary rows per rank)
tp_sp         vocab 256 at tp=2 with --sequence-parallel: layer norms and
              residual adds on blocks of rows, reduce-scatter / all-gather
              instead of all-reduce, the replicated parameters' gradients
              summed over the tensor group once a step (one in-place bucket;
              also per micro-batch, --tensor-grad-bucket=false); the plan
              must hold ReduceScatter and AllGather over the tensor group
tp_sp_b1      the same at --micro-batch-size 1: blocks of positions
tp_sp_pp      vocab 251 (padded) at tp=2, pp=2 (4 ranks, 1F1B) with
              --sequence-parallel
tp_sp_dp      vocab 256 at tp=2, dp=2 (4 ranks) with --sequence-parallel: the
              tensor-group sum of the replicated parameters' gradients after
              overlapped data-parallel buckets, buckets in the optimizer and
              the distributed optimizer
dp_distopt    vocab 256 at dp=2 with --use-distributed-optimizer (ZeRO-1):
              gradients reduce-scattered, each rank updates its half of every
              parameter with its half of the AdamW moments, parameters
              all-gathered; the clipped norm is the global one. The moments
              per rank are half the bytes of the plain dp=2 plan's (printed),
              and a checkpoint (one step at lr 0) holds the full moments,
              equal to the one-device ones; a one-device checkpoint resumes
              with sharded moments to the same next 3 losses. The
              reduce-scatters overlap the backward (several buckets started
              in train, waited for in the optimizer), with bitwise the losses
              and norms of --overlap-grad-reduce=false
tp_dp_distopt the same at tp=2, dp=2 (4 ranks): moments are data blocks of
              tensor-parallel shards
pp_dp_distopt the same at dp=2, pp=2 (4 ranks, 1F1B)
"""
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_dp as dp  # noqa: E402  (shared helpers: run, compare, datasets)

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models",
                     "gpt.mlir")


def compile_plan(path, vocab, tp, dpsize, micro, global_batch, flags=()):
    megac = os.path.join(dp.ARGS.bin_dir, "megac")
    dp.check(os.path.exists(megac), f"no megac at {megac}")
    sets = ["--set", "layers=2", "--set", "hidden=64", "--set", "heads=4",
            "--set", f"vocab={vocab}", "--set", "seq=16"]
    subprocess.run([megac, MODEL, "-o", path, "--micro-batch-size", str(micro),
                    "--global-batch-size", str(global_batch), "--tp", str(tp),
                    "--dp", str(dpsize)] + sets + list(flags), check=True)
    return path


def train(plan, data, tag, np_, extra, steps=10, save=None):
    log = dp.scratch(f"{tag}.jsonl")
    if os.path.exists(log):
        os.remove(log)
    grads = dp.scratch(f"{tag}-grads.safetensors")
    if save:
        extra = extra + ["--save", save]
    p = dp.run([dp.ARGS.mega_run, plan, "--data", data, "--steps", steps, "--log-interval", 1,
                "--log-file", log, "--dump-grads", grads] + extra, np_=np_, timeout=180)
    lines = [l for l in p.stdout.splitlines() if l.startswith(" iteration")]
    dp.check(len(lines) == steps, f"{tag}: {len(lines)} log lines (only rank 0 logs)\n"
             + p.stdout + p.stderr)
    with open(log) as f:
        norms = [json.loads(l)["grad_norm"] for l in f if l.strip()]
    return dp.losses(log), norms, dp.load_safetensors(grads)


def plan_text(plan_args):
    megac = os.path.join(dp.ARGS.bin_dir, "megac")
    return subprocess.run([megac, MODEL, "--emit", "plan-text"] + plan_args,
                          check=True, capture_output=True, text=True).stdout


def equivalence(vocab, tp, dpsize, flags=(), saves=False, steps=10, lr=(), pp=1, micro=2,
                global_batch=4):
    tag = f"v{vocab}-tp{tp}-dp{dpsize}" + "".join(f.replace("--", "-") for f in flags)
    rng = np.random.default_rng(13)
    data = dp.write_dataset(dp.scratch(f"data-{vocab}"),
                            [rng.integers(0, vocab, size=n) for n in (900, 700, 500)])
    ref = compile_plan(dp.scratch(f"{tag}-ref.plan"), vocab, 1, 1, micro, global_batch)
    par = compile_plan(dp.scratch(f"{tag}.plan"), vocab, tp, dpsize, micro, global_batch, flags)
    extra = ["--no-shuffle", "--seed", "5"] + list(lr)
    ck1, ck2 = (dp.scratch(f"{tag}-ref-ckpt"), dp.scratch(f"{tag}-ckpt")) if saves else (None, None)
    l1, n1, g1 = train(ref, data, f"{tag}-ref", 0, extra, steps, save=ck1)
    l2, n2, g2 = train(par, data, tag, tp * dpsize * pp, extra, steps, save=ck2)
    dp.compare(f"{tag}: losses", l1, l2, 1e-5)
    # The clipped norm (about 2 > --clip-grad 1 here): shards and replicated
    # gradients each counted once.
    dp.compare(f"{tag}: grad norms", n1, n2, 1e-5)
    dp.check(max(n1) > 1.0, f"{tag}: grad norms {n1} never clip; the test "
             "would not see a wrong norm")
    dp.check(sorted(g1) == sorted(g2), f"{tag}: grad names {sorted(g1)} vs {sorted(g2)}")
    for k in g1:
        dp.check(g1[k].shape == g2[k].shape, f"{tag}: grad {k} {g1[k].shape} vs {g2[k].shape}")
        dp.compare(f"{tag}: grad {k}", g1[k], g2[k], 1e-4)
    if saves:
        # Checkpoints hold full, true-shaped tensors whatever the layout: the
        # parameters as drawn (bitwise: gathered shards), the moments of one
        # step. (Further steps are not compared: AdamW turns the rounding
        # noise of gradients that are 0 in exact arithmetic -- the key bias
        # -- into steps of size lr.)
        it = f"iter_{steps:07d}"
        for f in ("model.safetensors", "optimizer.safetensors"):
            a = dp.load_safetensors(os.path.join(ck1, it, f))
            b = dp.load_safetensors(os.path.join(ck2, it, f))
            dp.check(sorted(a) == sorted(b), f"{tag} {f}: names {sorted(a)} vs {sorted(b)}")
            for k in a:
                dp.check(a[k].shape == b[k].shape, f"{tag} {f}: {k} {a[k].shape} vs {b[k].shape}")
                if f == "model.safetensors":
                    dp.check(np.array_equal(a[k], b[k]), f"{tag}: saved {k} differs")
                else:
                    dp.compare(f"{tag}: saved {f} {k}", a[k], b[k], 1e-4)
        dp.check(a["exp_avg.wte.weight"].shape == (vocab, 64) if "exp_avg.wte.weight" in a
                 else True, f"{tag}: wte moment shape")
    print(f"{tag}: {steps} steps, losses {[round(x, 6) for x in l1]}")
    return g2


def padded_vocabulary():
    # 251 = 2 * 126 - 1: vocabulary-parallel with one padded row, masked.
    sets = ["--set", "layers=2", "--set", "hidden=64", "--set", "heads=4", "--set",
            "vocab=251", "--set", "seq=16", "--micro-batch-size", "2", "--global-batch-size",
            "4", "--tp", "2"]
    text = plan_text(sets)
    for want in ('param "wte.weight" 126x64xf32', "shard(dim=0 of 251x64, padded to 252",
                 "VocabEmbedding(", "VocabCrossEntropyStats("):
        dp.check(want in text, f"padded vocabulary: the tp=2 plan lacks {want!r}")
    dp.check(all(",126,251," in l for l in text.splitlines()
                 if "VocabCrossEntropyStats(" in l or "VocabCrossEntropyGrad(" in l),
             "padded vocabulary: a loss kernel without V = 251")
    grads = equivalence(251, 2, 1)
    # The padded row is no gradient of the model: absent from the dump.
    dp.check(grads["wte.weight"].shape == (251, 64),
             f"dumped wte gradient is {grads['wte.weight'].shape}, not (251, 64)")
    # One step at lr 0, saved in both layouts.
    equivalence(251, 2, 1, saves=True, steps=1, lr=["--lr", "0"])


def optimizer_state_bytes(text):
    """Bytes of the AdamW moments one rank holds (their local shapes)."""
    total = 0
    for line in text.splitlines():
        f = line.split()
        if len(f) > 3 and f[1] in ("adam_m", "adam_v"):
            dims = f[3].replace("xf32", "").replace("f32", "")
            n = 1
            for d in dims.split("x"):
                n *= int(d)
            total += 4 * n
    return total


def distributed_optimizer():
    sets = ["--set", "layers=2", "--set", "hidden=64", "--set", "heads=4", "--set",
            "vocab=256", "--set", "seq=16", "--micro-batch-size", "2", "--global-batch-size",
            "4", "--dp", "2"]
    plain, zero = plan_text(sets), plan_text(sets + ["--use-distributed-optimizer"])
    b1, b2 = optimizer_state_bytes(plain), optimizer_state_bytes(zero)
    print(f"AdamW moments per rank at dp=2: {b1} bytes, {b2} with "
          "--use-distributed-optimizer")
    dp.check(b1 > 0 and 2 * b2 == b1, f"moments per rank {b2}, not half of {b1}")
    # Overlapped (megac's default, Megatron's --overlap-grad-reduce): each
    # bucket's reduce-scatters start in train right after its gradients are
    # final, one per gradient, and the optimizer waits for the blocks;
    # --overlap-grad-reduce=false keeps one ReduceScatter per gradient in
    # the optimizer step. Small buckets (--ddp-bucket-size) make several.
    small = ["--ddp-bucket-size", "20000"]
    over = plan_text(sets + ["--use-distributed-optimizer"] + small)
    serial = plan_text(sets + ["--use-distributed-optimizer", "--overlap-grad-reduce=false"])
    adamw = serial.count("AdamW(")
    dp.check(adamw > 0 and serial.count("ReduceScatter(") == adamw and
             "ReduceScatterStart(" not in serial and
             serial.count("AllGather(") >= adamw,
             f"--overlap-grad-reduce=false: {serial.count('ReduceScatter(')} "
             f"ReduceScatters for {adamw} AdamW blocks")
    train_text = over[over.index('program "train"'):over.index('program "optimizer"')]
    starts = train_text.count("ReduceScatterStart(")
    waits = [l for l in over.splitlines() if "ReduceScatterWait(" in l]
    waited = sum(l.split("ReduceScatterWait(")[1].count("%") for l in waits)
    print(f"distributed optimizer at dp=2: {starts} reduce-scatter buckets started in "
          f"train, {waited} gradients waited for in the optimizer")
    dp.check(starts > 1 and starts == len(waits) and waited == adamw and
             "ReduceScatter(" not in over and over.count("AdamW(") == adamw,
             f"overlapped: {starts} starts in train, {len(waits)} waits of {waited} "
             f"gradients for {adamw} AdamW blocks")
    equivalence(256, 1, 2, ["--use-distributed-optimizer"] + small)
    # The overlapped reduce-scatters give bitwise the losses and norms of
    # the ones in the optimizer step (the same sums, started earlier).
    data = dp.scratch("data-256")
    runs = []
    for tag, flags in (("over", small), ("serial", ["--overlap-grad-reduce=false"])):
        plan = compile_plan(dp.scratch(f"distopt-{tag}.plan"), 256, 1, 2, 2, 4,
                            ["--use-distributed-optimizer"] + flags)
        log = dp.scratch(f"distopt-{tag}.jsonl")
        if os.path.exists(log):
            os.remove(log)
        p = dp.run([dp.ARGS.mega_run, plan, "--data", data, "--steps", 6, "--log-interval", 1,
                    "--log-file", log, "--no-shuffle", "--seed", "5"], np_=2, timeout=180)
        with open(log) as f:
            norms = [json.loads(l)["grad_norm"] for l in f if l.strip()]
        runs.append((dp.losses(log), norms, p.stdout))
    dp.check(f"{starts} data-parallel gradient buckets reduce-scattered during the last "
             "micro-batch's backward" in runs[0][2], f"overlapped run's log: {runs[0][2]}")
    dp.check(len(runs[0][0]) == 6 and runs[0][:2] == runs[1][:2],
             f"overlapped vs in the optimizer step: losses {runs[0][0]} vs {runs[1][0]}, "
             f"norms {runs[0][1]} vs {runs[1][1]}")
    equivalence(256, 1, 2, ["--use-distributed-optimizer"], saves=True, steps=1,
                lr=["--lr", "0"])
    # A one-device checkpoint (full moments after 10 steps) resumed with the
    # moments split over the data ranks: the same next 3 steps as resumed on
    # one device.
    data = dp.scratch("data-256")
    ref = compile_plan(dp.scratch("resume-ref.plan"), 256, 1, 1, 2, 4)
    par = compile_plan(dp.scratch("resume.plan"), 256, 1, 2, 2, 4,
                       ["--use-distributed-optimizer"])
    ck = dp.scratch("resume-ckpt")
    extra = ["--no-shuffle", "--seed", "5"]
    dp.run([dp.ARGS.mega_run, ref, "--data", data, "--steps", 10, "--save", ck] + extra,
           np_=0, timeout=180)
    resumed = []
    for plan, np_, tag in ((ref, 0, "ref"), (par, 2, "zero")):
        log = dp.scratch(f"resume-{tag}.jsonl")
        if os.path.exists(log):
            os.remove(log)
        p = dp.run([dp.ARGS.mega_run, plan, "--data", data, "--steps", 13, "--load", ck,
                    "--log-interval", 1, "--log-file", log] + extra, np_=np_, timeout=180)
        dp.check("at iteration 10" in p.stdout, f"resume {tag}: {p.stdout}")
        resumed.append(dp.losses(log))
    dp.check(len(resumed[0]) == 3, f"resumed losses {resumed[0]}")
    dp.compare("resumed with sharded moments: losses", resumed[0], resumed[1], 1e-5)


def tp_distributed_optimizer():
    # Moments that are data blocks of tensor-parallel shards: the norm sums
    # the blocks over the data ranks, then the shards over the tensor ranks;
    # checkpoints gather both levels.
    equivalence(256, 2, 2, ["--use-distributed-optimizer"])
    equivalence(256, 2, 2, ["--use-distributed-optimizer"], saves=True, steps=1,
                lr=["--lr", "0"])


def pp_distributed_optimizer():
    # Each pipeline rank's optimizer keeps the norm's data-block sums (then
    # adds the stages'); checkpoints gather the moments per stage.
    flags = ["--use-distributed-optimizer", "--pp", "2"]
    equivalence(256, 1, 2, flags, pp=2)
    equivalence(256, 1, 2, flags, saves=True, steps=1, lr=["--lr", "0"], pp=2)


def sequence_parallel():
    # The collectives sequence parallelism puts in place of the all-reduces
    # (the kernels at kernel level, group 0 = tensor).
    sets = ["--set", "layers=2", "--set", "hidden=64", "--set", "heads=4", "--set",
            "vocab=256", "--set", "seq=16", "--micro-batch-size", "2", "--global-batch-size",
            "4", "--tp", "2"]
    plain, sp = plan_text(sets), plan_text(sets + ["--sequence-parallel"])
    # (@predict's logits are all-gathered either way.)
    for kind in ("ReduceScatter", "AllGather"):
        dp.check(sp.count(kind) > plain.count(kind),
                 f"{kind}: {plain.count(kind)} without and {sp.count(kind)} with "
                 "--sequence-parallel")
    # The replicated parameters' gradient terms (4 norms' weights and
    # biases, 2 row-parallel biases per layer, ln_f's 2, wpe: 15) are summed
    # over the tensor ranks once a step: one in-place AllReduceWait (group
    # 0) in the optimizer, none of the 15 all-reduces per micro-batch in
    # train (mega-tensor-grad-bucket).
    per_step = plan_text(sets + ["--sequence-parallel", "--tensor-grad-bucket=false"])
    partial = [l.split()[2] for l in sp.splitlines() if "partial(group=0)" in l]
    dp.check(len(partial) == 15 and '"wpe.weight"' in partial and '"ln_f.bias"' in partial,
             f"partial gradients {partial}")
    dp.check("partial(" not in per_step, "--tensor-grad-bucket=false: partial gradients")
    train = lambda text: text.split('program "train"')[1].split("\n}")[0]
    opt = lambda text: text.split('program "optimizer"')[1].split("\n}")[0]
    dp.check(train(per_step).count("AllReduce(") == train(sp).count("AllReduce(") + 15,
             f"train AllReduces: {train(per_step).count('AllReduce(')} per parameter, "
             f"{train(sp).count('AllReduce(')} with the bucket")
    waits = [l for l in opt(sp).splitlines() if "AllReduceWait(" in l]
    dp.check(len(waits) == 1 and waits[0].endswith("i=[0,0]") and
             waits[0].split(" = ")[0].count("%") == 15,
             f"optimizer: {waits}")
    dp.check("AllReduce" not in opt(per_step), "--tensor-grad-bucket=false: the "
             "optimizer sums gradients")
    equivalence(256, 2, 1, ["--sequence-parallel"])
    equivalence(256, 2, 1, ["--sequence-parallel", "--tensor-grad-bucket=false"])


def sequence_parallel_data():
    # The tensor-group bucket after each form of the data-parallel sum:
    # overlapped buckets (their waits' results are summed in place again),
    # buckets in the optimizer (their views are packed) and the distributed
    # optimizer (the reduce-scattered blocks are packed).
    equivalence(256, 2, 2, ["--sequence-parallel"])
    equivalence(256, 2, 2, ["--sequence-parallel", "--overlap-grad-reduce=false"])
    equivalence(256, 2, 2, ["--sequence-parallel", "--use-distributed-optimizer"])


CASES = ["tp_vocab", "tp_odd_vocab", "tp_dp", "tp4", "tp_sp", "tp_sp_b1", "tp_sp_pp", "tp_sp_dp",
         "dp_distopt", "tp_dp_distopt", "pp_dp_distopt"]


def main():
    args = dp.setup_gpt_script(CASES)
    {"tp_vocab": lambda: equivalence(256, 2, 1),
     "tp_odd_vocab": padded_vocabulary,
     "tp_dp": lambda: equivalence(256, 2, 2),
     "tp4": lambda: equivalence(256, 4, 1),
     "tp_sp": sequence_parallel,
     # With the pipeline (1F1B, 2 stages): the padded vocabulary and the
     # sequence-parallel blocks cross the stage boundary.
     # One sequence per micro-batch: the blocks are of positions (wpe splits
     # by positions too).
     "tp_sp_b1": lambda: equivalence(256, 2, 1, ["--sequence-parallel"], micro=1,
                                     global_batch=2),
     "tp_sp_pp": lambda: equivalence(251, 2, 1, ["--sequence-parallel", "--pp", "2"], pp=2),
     "tp_sp_dp": sequence_parallel_data,
     "dp_distopt": distributed_optimizer,
     "tp_dp_distopt": tp_distributed_optimizer,
     "pp_dp_distopt": pp_distributed_optimizer}[args.case]()
    print("PASS " + args.case)


if __name__ == "__main__":
    main()
