#!/usr/bin/env bash
# End-to-end test of mega-data.  Usage: test_mega_data.sh PATH/TO/mega-data
#
# Builds the Austen corpus and a synthetic text corpus, then checks with an
# independent Python reader (idx_check.py: Megatron layout, split rule, and
# decoding every document back to its paragraph through the .vocab), that
# outputs are byte-identical across runs, and that bad input of every kind
# ends with exit status 1 and exactly one "mega-data: error:" line.
# Takes ~10 s on 2 cores.
set -u
M=${1:?usage: test_mega_data.sh PATH/TO/mega-data}
M=$(cd "$(dirname "$M")" && pwd)/$(basename "$M")
HERE=$(cd "$(dirname "$0")" && pwd)
PY=$(command -v python3 || echo /usr/bin/python3)
CHECK="$PY $HERE/idx_check.py"
RDATA=/usr/lib/R/site-library/janeaustenr/data/Rdata
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
FAILS=0

fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
ok() { echo "ok: $*"; }

# run_ok NAME CMD...: must exit 0; stdout kept in $T/NAME.out
run_ok() {
  local name=$1; shift
  if "$@" >"$name.out" 2>"$name.err"; then ok "$name"
  else fail "$name (rc $?): $(cat "$name.err")"; fi
}

# expect_error NAME CMD...: exit 1, one stderr line "mega-data: error: ..."
expect_error() {
  local name=$1; shift
  "$@" >/dev/null 2>"$name.err"
  local rc=$? lines
  lines=$(wc -l <"$name.err")
  if [ "$rc" -ne 1 ]; then fail "$name: exit $rc, expected 1: $(cat "$name.err")"
  elif [ "$lines" -ne 1 ]; then fail "$name: $lines stderr lines: $(cat "$name.err")"
  elif ! grep -q '^mega-data: error: ' "$name.err"; then fail "$name: $(cat "$name.err")"
  else ok "$name -> $(cat "$name.err")"; fi
}

# tokens_of OUTFILE SPLIT: the token count the tool printed for a split
tokens_of() { sed -n "s/^mega-data: .*_$2: [0-9]* documents, \([0-9]*\) tokens.*/\1/p" "$1"; }

# ---------------------------------------------------------------- austen
if [ -f "$RDATA.rdx" ]; then
  start=$(date +%s%N)
  run_ok austen "$M" --corpus austen --output-prefix "$T/a/austen"
  end=$(date +%s%N)
  cat austen.out
  echo "austen build took $(( (end - start) / 1000000 )) ms"
  for f in .model .vocab _train.bin _train.idx _valid.bin _valid.idx; do
    [ -s "a/austen$f" ] || [ "$f" = _valid.bin ] || fail "austen$f missing"
  done
  if $CHECK austen a/austen "$RDATA" 0.05 >check.out; then
    cat check.out; ok "austen layout + decode"
  else cat check.out; fail "austen check"; fi
  # Sane sizes: 6 novels, ~10k paragraphs, roughly 0.8-1.0M tokens.
  tr=$(tokens_of austen.out train); va=$(tokens_of austen.out valid)
  if [ -n "$tr" ] && [ "$tr" -gt 500000 ] && [ "$tr" -lt 2000000 ] &&
     [ -n "$va" ] && [ "$va" -gt 20000 ] && [ "$va" -lt 200000 ]; then
    ok "austen sizes: train $tr tokens, valid $va tokens"
  else fail "austen sizes: train '$tr' valid '$va'"; fi
  # --info must agree with the independent reader.
  run_ok info "$M" --info a/austen
  cat info.out
  grep -q "tokens: *$tr\$" info.out && grep -q "tokens: *$va\$" info.out &&
    grep -q "uint16 (code 8)" info.out && ok "--info matches" ||
    fail "--info disagrees with the build output"
  # Determinism: a second build under another prefix is byte-identical.
  run_ok austen2 "$M" --corpus austen --output-prefix "$T/b/other"
  for f in .model .vocab _train.bin _train.idx _valid.bin _valid.idx; do
    cmp -s "a/austen$f" "b/other$f" || fail "austen$f differs between runs"
  done
  ok "austen outputs byte-identical across runs"
  # A truncated database is an error, not a crash.
  head -c 700000 "$RDATA.rdb" >bad.rdb && cp "$RDATA.rdx" bad.rdx
  expect_error truncated-rdb "$M" --corpus austen --austen-rdata bad --output-prefix x/x
else
  echo "SKIP: $RDATA.rdx not installed (r-cran-janeaustenr)"
fi

# ---------------------------------------------------------- text corpus
# Deterministic synthetic text: BOM, CRLF, tabs, runs of spaces, accents,
# CJK and emoji (byte fallback), several blank lines between documents.
$PY - >corpus.txt <<'EOF'
import random, sys
r = random.Random(7)
words = "the of and a to in is was it that he she said with for not be on at by this had".split()
extra = ["café", "naïve", "Zürich", "日本語", "😀", "Ωμέγα", "x\ty", "a   b"]
out = ["\ufeff"]
for d in range(400):
    for l in range(r.randint(1, 4)):
        ws = [r.choice(words if r.random() < .9 else extra) for _ in range(r.randint(3, 14))]
        out.append(("  " if r.random() < .1 else "") + " ".join(ws) + ("\r\n" if r.random() < .3 else "\n"))
    out.append("\n" * r.randint(1, 3))
sys.stdout.write("".join(out))
EOF
run_ok text "$M" --input corpus.txt --output-prefix t/c --vocab-size 400 --valid-fraction 0.1
cat text.out
$CHECK text t/c corpus.txt 0.1 >check2.out && ok "text layout + decode" ||
  { cat check2.out; fail "text check"; }
run_ok text2 "$M" --input corpus.txt --output-prefix t2/c --vocab-size 400 --valid-fraction 0.1
for f in .model .vocab _train.bin _train.idx _valid.bin _valid.idx; do
  cmp -s "t/c$f" "t2/c$f" || fail "text c$f differs between runs"
done
ok "text outputs byte-identical across runs"

# Reusing a tokenizer: nothing is trained, the model is copied unchanged.
if [ -f a/austen.model ]; then
  run_ok reuse "$M" --input corpus.txt --output-prefix r/c --tokenizer-model a/austen.model
  cmp -s a/austen.model r/c.model || fail "reused model not copied unchanged"
  $CHECK text r/c corpus.txt 0.05 >check3.out && ok "reuse layout + decode" ||
    { cat check3.out; fail "reuse check"; }
fi
# --valid-fraction 0: an empty but valid validation set.
run_ok nofrac "$M" --input corpus.txt --output-prefix z/c --vocab-size 400 --valid-fraction 0
$CHECK text z/c corpus.txt 0 >check4.out && ok "valid-fraction 0" ||
  { cat check4.out; fail "valid-fraction 0 check"; }

# ---------------------------------------------------------------- errors
printf 'good line\n\nbad \xff\xfe byte\n' >badutf8.txt
printf 'only one paragraph\n' >onedoc.txt
expect_error missing-input "$M" --input nope.txt --output-prefix e/x
expect_error missing-model "$M" --input corpus.txt --output-prefix e/x --tokenizer-model nope.model
expect_error bad-model "$M" --input corpus.txt --output-prefix e/x --tokenizer-model corpus.txt
expect_error unknown-flag "$M" --input corpus.txt --output-prefix e/x --frobnicate
expect_error unknown-corpus "$M" --corpus dickens --output-prefix e/x
expect_error bad-vocab "$M" --input corpus.txt --output-prefix e/x --vocab-size 12abc
expect_error small-vocab "$M" --input corpus.txt --output-prefix e/x --vocab-size 5
expect_error bad-fraction "$M" --input corpus.txt --output-prefix e/x --valid-fraction 1.5
expect_error no-value "$M" --input corpus.txt --output-prefix
expect_error no-prefix "$M" --input corpus.txt
expect_error no-mode "$M"
expect_error two-modes "$M" --input corpus.txt --corpus austen --output-prefix e/x
expect_error model-and-vocab "$M" --input corpus.txt --output-prefix e/x --tokenizer-model m --vocab-size 500
expect_error bad-utf8 "$M" --input badutf8.txt --output-prefix e/x
expect_error one-doc "$M" --input onedoc.txt --output-prefix e/x
expect_error info-missing "$M" --info nope/nothing
expect_error dir-prefix "$M" --input corpus.txt --output-prefix e/

# Corrupt indexes: every one must be caught when the dataset is opened.
corrupt() { # NAME PYTHON-STATEMENT-ON-bytearray-d
  mkdir -p "k/$1" && cp t/c_train.idx t/c_train.bin "k/$1/"
  $PY -c "
import struct
p='k/$1/c_train.idx'; d=bytearray(open(p,'rb').read()); $2
open(p,'wb').write(d)"
  expect_error "corrupt-$1" "$M" --info "k/$1/c_train"
}
corrupt truncated "d[:] = d[:20]"
corrupt magic "d[0:1] = b'X'"
corrupt version "d[9] = 2"
corrupt dtype "d[17] = 7"
corrupt count "d[18:26] = struct.pack('<Q', 1 << 60)"
corrupt size "d += b'\\0' * 8"
corrupt length "d[34:38] = struct.pack('<i', 999)"
corrupt docidx "d[-8:] = struct.pack('<q', 5)"
mkdir -p k/bin && cp t/c_train.idx k/bin/ && head -c 100 t/c_train.bin >k/bin/c_train.bin
expect_error corrupt-bin "$M" --info k/bin/c_train
mkdir -p k/nobin && cp t/c_train.idx k/nobin/
expect_error missing-bin "$M" --info k/nobin/c_train

echo
if [ "$FAILS" -ne 0 ]; then echo "test_mega_data: $FAILS failure(s)"; exit 1; fi
echo "test_mega_data: all passed"
