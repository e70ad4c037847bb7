"""What the bench/ scripts share: a token dataset and an mpirun launch."""
import os
import struct
import subprocess
import sys


def write_dataset(prefix, tokens, vocab):
    import random
    rnd = random.Random(7)
    data = [rnd.randrange(vocab) for _ in range(tokens)]
    with open(prefix + ".bin", "wb") as f:
        f.write(struct.pack(f"<{len(data)}H", *data))
    with open(prefix + ".idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, 8, 1, 2))
        f.write(struct.pack("<i", len(data)) + struct.pack("<q", 0) + struct.pack("<2q", 0, 1))
    return prefix


def mpirun(args, np_, extra_mca=()):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1")
    cmd = ["mpirun", "-np", str(np_), "--allow-run-as-root", "--oversubscribe",
           "--mca", "btl", "self,vader", "--mca", "btl_vader_single_copy_mechanism", "none",
           "--bind-to", "none"] + list(extra_mca) + [str(a) for a in args]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stdout}\n{p.stderr}")
    return p.stdout
