#!/usr/bin/env python3
"""Independent checker for mega-data outputs (Python 3 stdlib only).

Written separately from the C++ code on purpose: it re-implements the
Megatron MMIDIDX layout, the paragraph/split rule and a sentencepiece
detokenizer (from the .vocab listing) so that a bug shared by the tool's
writer and its own reader cannot hide.

  idx_check.py layout PREFIX            validate PREFIX.idx/.bin, print stats
  idx_check.py text PREFIX FILE F       compare decoded docs of PREFIX_{train,
                                        valid} with FILE's paragraphs
  idx_check.py austen PREFIX RDATA F    same against the janeaustenr novels
Exit status 0 when everything matches; otherwise a message and status 1.
"""
import gzip
import math
import re
import struct
import sys
import zlib

MAGIC = b"MMIDIDX\x00\x00"
# Megatron DType codes -> struct format of one token.
DTYPES = {1: "B", 2: "b", 3: "h", 4: "i", 5: "q", 8: "H"}
EOS = 2  # mega-data trains with <unk>=0 <s>=1 </s>=2


def die(msg):
    print("idx_check: FAIL: " + msg)
    sys.exit(1)


def read_dataset(prefix):
    """Returns (dtype_code, list of documents, each a list of token ids)."""
    idx = open(prefix + ".idx", "rb").read()
    if idx[:9] != MAGIC:
        die(prefix + ".idx: bad magic")
    version, code, seqs, ndi = struct.unpack_from("<QBQQ", idx, 9)
    if version != 1:
        die("version %d" % version)
    if code not in DTYPES:
        die("dtype code %d" % code)
    off = 34
    want = off + 4 * seqs + 8 * seqs + 8 * ndi
    if len(idx) != want:
        die("%s.idx is %d bytes, layout says %d" % (prefix, len(idx), want))
    lengths = struct.unpack_from("<%di" % seqs, idx, off)
    pointers = struct.unpack_from("<%dq" % seqs, idx, off + 4 * seqs)
    doc_idx = struct.unpack_from("<%dq" % ndi, idx, off + 12 * seqs)
    item = struct.calcsize(DTYPES[code])
    pos = 0
    for i, (n, p) in enumerate(zip(lengths, pointers)):
        if n < 0 or p != pos:
            die("sequence %d: length %d pointer %d, expected pointer %d" % (i, n, p, pos))
        pos += n * item
    if not doc_idx or doc_idx[0] != 0 or doc_idx[-1] != seqs:
        die("document indices must run 0..%d" % seqs)
    if any(b < a for a, b in zip(doc_idx, doc_idx[1:])):
        die("document indices not ascending")
    binary = open(prefix + ".bin", "rb").read()
    if len(binary) != pos:
        die("%s.bin is %d bytes, index says %d" % (prefix, len(binary), pos))
    tokens = struct.unpack("<%d%s" % (len(binary) // item, DTYPES[code]), binary)
    starts = [0]
    for n in lengths:
        starts.append(starts[-1] + n)
    docs = [list(tokens[starts[doc_idx[d]]:starts[doc_idx[d + 1]]]) for d in range(ndi - 1)]
    return code, docs


def layout(prefix):
    code, docs = read_dataset(prefix)
    ntok = sum(len(d) for d in docs)
    mx = max((max(d) for d in docs if d), default=-1)
    for i, d in enumerate(docs):
        if not d or d[-1] != EOS or EOS in d[:-1]:
            die("document %d does not end with exactly one eos" % i)
    print("%s: documents %d tokens %d dtype %d max_id %d" % (prefix, len(docs), ntok, code, mx))
    return code, docs


def load_pieces(vocab_path):
    return [line.rstrip("\n").split("\t")[0] for line in open(vocab_path, encoding="utf-8")]


def detokenize(ids, pieces):
    """sentencepiece decoding: byte pieces <0xNN> are raw bytes, U+2581 is a
    space, the dummy-prefix space at the start is dropped."""
    out = bytearray()
    for t in ids:
        p = pieces[t]
        m = re.fullmatch(r"<0x([0-9A-F]{2})>", p)
        if m:
            out.append(int(m.group(1), 16))
        elif p in ("<unk>", "<s>", "</s>"):
            die("control piece %s inside a document" % p)
        else:
            out += p.replace("\u2581", " ").encode("utf-8")
    text = out.decode("utf-8")
    return text[1:] if text.startswith(" ") else text


def paragraphs(lines):
    """The documented rule: runs of non-blank lines, trimmed, joined by ' ',
    ASCII whitespace runs collapsed to one space."""
    paras, cur = [], []
    for line in lines:
        s = line.strip(" \t\r\n\f\v")
        if s:
            cur.append(re.sub(r"[ \t\r\n\f\v]+", " ", s))
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    if cur:
        paras.append(" ".join(cur))
    return paras


def split(sources, fraction):
    train, valid = [], []
    for paras in sources:
        n = len(paras)
        k = 0 if fraction <= 0 else min(max(math.ceil(fraction * n), 1), n - 1)
        train += paras[: n - k]
        valid += paras[n - k:]
    return train, valid


def compare(prefix, sources, fraction):
    pieces = load_pieces(prefix + ".vocab")
    want = dict(zip(("train", "valid"), split(sources, fraction)))
    for name in ("train", "valid"):
        _, docs = layout(prefix + "_" + name)
        if len(docs) != len(want[name]):
            die("%s: %d documents, expected %d" % (name, len(docs), len(want[name])))
        if any(t >= len(pieces) for d in docs for t in d):
            die("%s: token id beyond the vocabulary" % name)
        for i, (d, text) in enumerate(zip(docs, want[name])):
            expect = text  # the round trip must be exact
            got = detokenize(d[:-1], pieces)
            if got != expect:
                die("%s document %d decodes to %r, expected %r" % (name, i, got[:80], expect[:80]))
        print("%s_%s: all %d documents decode to their paragraphs" % (prefix, name, len(docs)))


def austen_sources(rdata):
    """Reads the six novels with a deliberately naive parser: the index lists
    (offset, length) pairs as INTSXP length 2, then the names; each rdb entry
    is a 4-byte length + zlib stream holding one STRSXP of CHARSXPs."""
    rdx = gzip.decompress(open(rdata + ".rdx", "rb").read())
    spans = [struct.unpack(">ii", m.group(1)) for m in
             re.finditer(rb"\x00\x00\x00\x0d\x00\x00\x00\x02(.{8})", rdx, re.S)]
    names = re.findall(rb"\x00\x04\x00\x09\x00\x00\x00.([a-z]+)", rdx, re.S)
    names = [n.decode() for n in names if n not in (b"names", b"variables", b"references", b"compressed")]
    table = dict(zip(names, spans))
    rdb = open(rdata + ".rdb", "rb").read()
    order = ["sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion"]
    sources = []
    for name in order:
        off, length = table[name]
        data = zlib.decompress(rdb[off + 4: off + length])
        pos = data.index(b"UTF-8") + 5
        flags, n = struct.unpack_from(">ii", data, pos)
        pos += 8
        lines = []
        for _ in range(n):
            f, ln = struct.unpack_from(">ii", data, pos)
            pos += 8
            raw = data[pos: pos + max(ln, 0)]
            pos += max(ln, 0)
            lines.append(raw.decode("latin-1" if (f >> 12) & 4 else "utf-8"))
        sources.append(paragraphs(lines))
    return sources


def main(argv):
    if len(argv) >= 2 and argv[0] == "layout":
        for p in argv[1:]:
            layout(p)
    elif len(argv) == 4 and argv[0] == "text":
        text = open(argv[2], "rb").read().decode("utf-8")
        if text.startswith("\ufeff"):
            text = text[1:]
        compare(argv[1], [paragraphs(text.split("\n"))], float(argv[3]))
    elif len(argv) == 4 and argv[0] == "austen":
        compare(argv[1], austen_sources(argv[2]), float(argv[3]))
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
