#!/usr/bin/env python3
"""Cross-entropy (nats/token) of a unigram model fitted on one Megatron indexed dataset and evaluated on another:
the floor every language model must beat. Add-one smoothing over the vocabulary so unseen tokens cost finite.

usage: unigram_entropy.py TRAIN_PREFIX VALID_PREFIX VOCAB
Reads PREFIX.idx for the dtype and PREFIX.bin for the tokens (stdlib only)."""
import array, math, struct, sys
from collections import Counter

def tokens(prefix):
    with open(prefix + ".idx", "rb") as f:
        head = f.read(9 + 8 + 1)
    if head[:9] != b"MMIDIDX\x00\x00":
        sys.exit(f"unigram_entropy: {prefix}.idx is not a Megatron index")
    code = head[17]
    typecode = {8: "H", 4: "i"}.get(code)
    if typecode is None:
        sys.exit(f"unigram_entropy: unsupported dtype code {code}")
    a = array.array(typecode)
    with open(prefix + ".bin", "rb") as f:
        a.frombytes(f.read())
    return a

def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    train, valid, vocab = tokens(sys.argv[1]), tokens(sys.argv[2]), int(sys.argv[3])
    counts = Counter(train)
    total = len(train) + vocab
    nll = -sum(math.log((counts.get(t, 0) + 1) / total) for t in valid) / len(valid)
    print(f"unigram cross-entropy on validation: {nll:.4f} nats/token (ppl {math.exp(nll):.1f}), "
          f"train tokens {len(train)}, validation tokens {len(valid)}")

if __name__ == "__main__":
    main()
