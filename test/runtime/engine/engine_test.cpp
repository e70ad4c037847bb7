//===- engine_test.cpp - Unit tests of the runtime's parts
//-----------------===//
//
// JSON, Rng, safetensors (round trip and every load error), the lr
// schedule, data-loader slicing on a hand-made .bin/.idx, the engine on the
// bigram test plan, checkpoint save/load and its errors, sampling, and the
// log line shapes. Run with a scratch directory as the only argument.
//
//===----------------------------------------------------------------------===//
#include "Checkpoint.h"
#include "DataLoader.h"
#include "Devices.h"
#include "Engine.h"
#include "FileUtil.h"
#include "Generator.h"
#include "Json.h"
#include "Logger.h"
#include "Rng.h"
#include "Safetensors.h"
#include "Schedule.h"
#include "TestPlans.h"

#include "../PlacedComm.h"

#include "mega/Data/IndexedDataset.h"
#include "mega/Runtime/GemmChoices.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <regex>
#include <string>
#include <unistd.h>
#include <vector>

using namespace mega;
using namespace mega::rt;

namespace {

int failures = 0;
std::string scratch;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__,    \
                   #cond);                                                     \
      ++failures;                                                              \
    }                                                                          \
  } while (0)

/// `fn` must throw, with `needle` in its message.
void expectError(const char *what, const std::function<void()> &fn,
                 const std::string &needle) {
  try {
    fn();
  } catch (const std::exception &e) {
    std::string m = e.what();
    if (m.find(needle) == std::string::npos) {
      std::fprintf(stderr, "%s: error '%s' lacks '%s'\n", what, m.c_str(),
                   needle.c_str());
      ++failures;
    }
    if (m.find('\n') != std::string::npos) {
      std::fprintf(stderr, "%s: error is not one line: '%s'\n", what,
                   m.c_str());
      ++failures;
    }
    return;
  }
  std::fprintf(stderr, "%s: expected an error containing '%s'\n", what,
               needle.c_str());
  ++failures;
}

std::string path(const std::string &name) { return fs::join(scratch, name); }

void writeBytes(const std::string &p, const std::string &bytes) {
  std::FILE *f = std::fopen(p.c_str(), "wb");
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

//===----------------------------------------------------------------------===//

void testJson() {
  json::Value v = json::parse(
      R"({"a": [1, -2.5e3, "x\n\u00e9"], "b": {"c": true, "d": null}, "big": 12345678901234})");
  CHECK(v.kind == json::Value::Object);
  CHECK(v.find("a")->array.size() == 3);
  CHECK(v.find("a")->array[1].number == -2500.0);
  CHECK(v.find("a")->array[2].text == "x\n\xc3\xa9");
  CHECK(v.find("b")->find("c")->boolean);
  CHECK(v.find("big")->asInt() == 12345678901234);
  CHECK(json::parse(json::quote("q\"\\\t\x01")).text == "q\"\\\t\x01");
  CHECK(json::number(0.1) == "0.1");
  CHECK(json::number(1e-4) == "0.0001");
  CHECK(json::number(NAN) == "null");
  CHECK(std::strtod(json::number(1.0 / 3.0).c_str(), nullptr) == 1.0 / 3.0);
  expectError(
      "json trailing", [] { json::parse("{} x"); }, "trailing");
  expectError(
      "json unterminated", [] { json::parse("{\"a\": \"x"); }, "unterminated");
  expectError(
      "json depth", [] { json::parse(std::string(200, '[')); }, "deep");
}

/// mega-run --gemm-autotune-file: a round trip, a missing file, and one
/// line naming the line for each malformed one.
void testGemmChoices() {
  const std::string p = path("choices.txt");
  std::remove(p.c_str());
  CHECK(readGemmChoices(p).byKey.empty()); // no file yet: nothing chosen
  GemmChoices c;
  c.device = "NVIDIA H100 80GB HBM3";
  c.cublasLt = 130100;
  GemmKey k{};
  for (size_t i = 0; i < k.size(); ++i)
    k[i] = int64_t(i) * 1000 - 3;
  GemmChoice g;
  g.algo = {0, 1, 0xffffffffffffffffull, 0x123456789abcdefull, 7, 8, 9, 10};
  g.us = 96.375;
  c.byKey[k] = g;
  k[16] = 1;
  c.byKey[k] = GemmChoice{};
  writeGemmChoices(p, c);
  GemmChoices r = readGemmChoices(p);
  CHECK(r.device == c.device && r.cublasLt == c.cublasLt);
  CHECK(r.byKey.size() == 2);
  for (const auto &[key, want] : c.byKey) {
    auto it = r.byKey.find(key);
    CHECK(it != r.byKey.end() && it->second.algo == want.algo &&
          it->second.us == want.us);
  }
  const std::string head = "device X\ncublaslt 1\n";
  const std::string key = " 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17";
  const std::string algo = " algo 0 1 2 3 4 5 6 7";
  const struct {
    const char *what;
    std::string text, want;
  } bads[] = {
      {"word", "devise X\n", ":1: expected 'device', 'cublaslt' or 'gemm'"},
      {"gemm first", "gemm" + key + algo + " us 1\n", ":1: 'gemm' before"},
      {"short key", head + "gemm 1 2 3 algo\n", ":3: 'gemm' needs 17"},
      {"no algo", head + "gemm" + key + " us 1\n",
       ":3: 'gemm' needs 17 integers, then 'algo'"},
      {"bad hex", head + "gemm" + key + " algo 0 1 2 3 4 5 6 0x7 us 1\n",
       ":3: 'algo' needs 8 hexadecimal"},
      {"no time", head + "gemm" + key + algo + "\n",
       ":3: 'gemm' ends with 'us'"},
      {"negative time", head + "gemm" + key + algo + " us -1\n",
       ":3: 'gemm' ends with 'us'"},
      {"twice",
       head + "gemm" + key + algo + " us 1\ngemm" + key + algo + " us 2\n",
       ":4: a second choice"},
      {"two devices", "device X\ndevice Y\n", ":2: a second 'device'"},
      {"version", "device X\ncublaslt v13\n",
       ":2: 'cublaslt' needs one version"},
      {"no version", "device X\n", "choices.txt: no 'cublaslt' line"},
  };
  for (const auto &b : bads) {
    writeBytes(p, b.text);
    expectError(
        b.what, [&] { readGemmChoices(p); }, b.want);
  }
}

void testRng() {
  Rng a(42), b(42), c(43);
  CHECK(a.next() == b.next());
  CHECK(a.next() != c.next());
  Rng r(7);
  double sum = 0, sq = 0;
  const int n = 200000;
  for (int k = 0; k < n; ++k) {
    double x = r.normal();
    sum += x;
    sq += x * x;
  }
  CHECK(std::fabs(sum / n) < 0.01);
  CHECK(std::fabs(sq / n - 1.0) < 0.02);
  // Restore mid-pair: the cached second normal must survive.
  Rng s(9);
  s.normal();
  std::string saved = s.save();
  double want1 = s.normal(), want2 = s.normal();
  Rng t;
  CHECK(t.restore(saved));
  CHECK(t.normal() == want1);
  CHECK(t.normal() == want2);
  CHECK(!t.restore("xyz"));
  for (int k = 0; k < 1000; ++k)
    CHECK(r.below(7) < 7);
}

//===----------------------------------------------------------------------===//

/// A hand-written safetensors file.
void rawSafetensors(const std::string &p, const std::string &header,
                    const std::string &data) {
  uint64_t n = header.size();
  std::string bytes(reinterpret_cast<const char *>(&n), 8);
  writeBytes(p, bytes + header + data);
}

void testSafetensors() {
  std::string p = path("round.safetensors");
  std::vector<float> a = {1, 2, 3, 4, 5, 6.5f};
  std::vector<int32_t> b = {-1, 0, 7, 1 << 30};
  std::vector<uint16_t> c = {toBF16(1.5f), toBF16(-2.0f)};
  float scalar = 3.25f;
  SafetensorsWriter w;
  w.add("z.a", plan::DType::F32, {2, 3},
        [&](void *d) { std::memcpy(d, a.data(), 24); });
  w.add("b", plan::DType::I32, {4},
        [&](void *d) { std::memcpy(d, b.data(), 16); });
  w.add("c", plan::DType::BF16, {2},
        [&](void *d) { std::memcpy(d, c.data(), 4); });
  w.add("s", plan::DType::F32, {},
        [&](void *d) { std::memcpy(d, &scalar, 4); });
  w.add("empty", plan::DType::F32, {0, 4}, [](void *) {});
  w.setMetadata("iteration", "12");
  w.setMetadata("quote\"key", "line\nvalue");
  w.write(p);
  CHECK(!fs::exists(p + ".tmp." + std::to_string(::getpid())));

  std::string bytes = fs::readFile(p);
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);                                  // data section aligned
  CHECK(bytes.find("\"b\"") < bytes.find("\"z.a\"")); // names sorted

  SafetensorsReader r(p);
  CHECK(r.tensors().size() == 5);
  CHECK(r.metadata().at("iteration") == "12");
  CHECK(r.metadata().at("quote\"key") == "line\nvalue");
  std::vector<float> a2(6);
  r.read(*r.find("z.a"), a2.data());
  CHECK(a2 == a);
  CHECK((r.find("z.a")->shape == std::vector<int64_t>{2, 3}));
  std::vector<int32_t> b2(4);
  r.read(*r.find("b"), b2.data());
  CHECK(b2 == b);
  CHECK(r.find("c")->dtype == plan::DType::BF16);
  CHECK(r.find("s")->shape.empty() && r.find("s")->bytes() == 4);
  CHECK(r.find("empty")->bytes() == 0);

  // Every way a file can be wrong.
  std::string q = path("bad.safetensors");
  auto bad = [&](const char *what, const std::string &file,
                 const std::string &needle) {
    writeBytes(q, file);
    expectError(
        what, [&] { SafetensorsReader x(q); }, needle);
  };
  bad("short", "abc", "shorter than");
  bad("header too long", std::string("\xff\x00\x00\x00\x00\x00\x00\x00{}", 10),
      "exceeds the file size");
  bad("truncated", bytes.substr(0, bytes.size() - 3), "truncated");
  bad("trailing", bytes + "xyz", "after the last tensor");
  expectError(
      "missing", [] { SafetensorsReader x("/nonexistent/x.safetensors"); },
      "cannot open");
  auto hdr = [&](const char *what, const std::string &h,
                 const std::string &data, const std::string &needle) {
    rawSafetensors(q, h, data);
    expectError(
        what, [&] { SafetensorsReader x(q); }, needle);
  };
  std::string four(4, '\0'), eight(8, '\0');
  hdr("bad json", "{\"a\":", four, "malformed JSON");
  hdr("not object", "[1]", "", "not a JSON object");
  hdr("dtype", R"({"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})",
      eight, "unsupported dtype F64");
  hdr("fields", R"({"a":{"dtype":"F32","shape":[1]}})", four, "needs dtype");
  hdr("shape", R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})",
      four, "bad dimension");
  hdr("size", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", four,
      "the shape needs 8");
  hdr("outside", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
      four, "outside the data section");
  hdr("overlap",
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
      eight, "overlaps");
  hdr("duplicate",
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
      eight, "twice");
  hdr("metadata", R"({"__metadata__":{"k":1}})", "", "not a string");
}

//===----------------------------------------------------------------------===//

void testSchedule() {
  LrSchedule s;
  s.maxLr = 1.0;
  s.total = 100;
  CHECK(s.at(1) == 1.0 && s.at(100) == 1.0);
  s.warmup = 10; // iteration it uses step it-1: 0, 0.1, ..., 1.0 at it = 11
  CHECK(s.at(1) == 0.0);
  CHECK(std::fabs(s.at(6) - 0.5) < 1e-15);
  CHECK(s.at(11) == 1.0);
  CHECK(s.at(50) == 1.0);
  s.style = LrSchedule::Style::Cosine;
  s.minLr = 0.1;
  CHECK(s.at(11) == 1.0);
  // Half way through the decay (step 55): min + (max-min)/2.
  CHECK(std::fabs(s.at(56) - 0.55) < 1e-12);
  double r = (70.0 - 10.0) / 90.0;
  CHECK(std::fabs(s.at(71) - (0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * r)))) <
        1e-12);
  CHECK(std::fabs(s.at(101) - 0.1) < 1e-12);
  CHECK(s.at(500) == 0.1);
  for (int it = 12; it < 101; ++it)
    CHECK(s.at(it) <= s.at(it - 1));
  expectError(
      "style", [] { LrSchedule::parseStyle("linearish"); }, "linearish");
}

//===----------------------------------------------------------------------===//

void testData() {
  // Three documents of 10, 15 and 6 tokens: ids 0..30 in order. Samples of
  // S=4 must cross document boundaries.
  std::string prefix = path("toy");
  {
    data::IndexedDatasetWriter w(prefix, data::TokenType::UInt16);
    std::vector<int32_t> all(31);
    for (int k = 0; k < 31; ++k)
      all[size_t(k)] = k;
    w.addDocument(all.data(), 10);
    w.addDocument(all.data() + 10, 15);
    w.addDocument(all.data() + 25, 6);
    w.finish();
  }
  SampleSource src(prefix, 4, 100, false, 0);
  CHECK(src.numTokens() == 31);
  CHECK(src.numSamples() == 7); // (31 - 1) / 4
  std::vector<int32_t> tok(8), tgt(8);
  src.batch(0, 2, tok.data(), tgt.data());
  CHECK((tok == std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7}));
  CHECK((tgt == std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  src.batch(6, 2, tok.data(), tgt.data()); // sample 6, then epoch 2's sample 0
  CHECK((tok == std::vector<int32_t>{24, 25, 26, 27, 0, 1, 2, 3}));
  CHECK((tgt == std::vector<int32_t>{25, 26, 27, 28, 1, 2, 3, 4}));

  SampleSource sh(prefix, 4, 100, true, 5), sh2(prefix, 4, 100, true, 5);
  std::vector<int64_t> e0, e1;
  for (int g = 0; g < 7; ++g)
    e0.push_back(sh.sampleAt(g));
  for (int g = 7; g < 14; ++g)
    e1.push_back(sh.sampleAt(g));
  std::vector<int64_t> s0 = e0;
  std::sort(s0.begin(), s0.end());
  CHECK((s0 == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6})); // a permutation
  CHECK(e0 != e1);                                          // per epoch
  CHECK(sh2.sampleAt(9) == e1[2]); // random access = sequential
  CHECK(sh2.sampleAt(3) == e0[3]);
  src.batch(0, 1, tok.data(), tgt.data());
  sh.batch(0, 1, tok.data(), tgt.data());
  CHECK(tok[0] == int32_t(4 * e0[0]));

  // The same stream as int32 tokens in two sequences, with the .idx written
  // byte by byte from the documented layout rather than by the writer.
  {
    std::string bin, idx = std::string("MMIDIDX\0\0", 9);
    auto put = [](std::string &s, uint64_t v, int n) {
      for (int k = 0; k < n; ++k)
        s.push_back(char((v >> (8 * k)) & 0xff));
    };
    for (int k = 0; k < 31; ++k)
      put(bin, uint64_t(k), 4);
    put(idx, 1, 8);   // version
    idx.push_back(4); // int32
    put(idx, 2, 8);   // sequences
    put(idx, 3, 8);   // document indices
    put(idx, 13, 4);  // lengths
    put(idx, 18, 4);
    put(idx, 0, 8); // pointers (bytes)
    put(idx, 52, 8);
    put(idx, 0, 8); // document indices 0, 1, 2
    put(idx, 1, 8);
    put(idx, 2, 8);
    writeBytes(path("hand.bin"), bin);
    writeBytes(path("hand.idx"), idx);
    SampleSource hand(path("hand"), 5, 31, false, 0);
    CHECK(hand.numSamples() == 6); // (31 - 1) / 5
    std::vector<int32_t> t3(15), y3(15);
    hand.batch(1, 3, t3.data(), y3.data()); // samples 1, 2, 3
    for (int r = 0; r < 3; ++r)
      for (int k = 0; k < 5; ++k) {
        CHECK(t3[size_t(5 * r + k)] == 5 * (r + 1) + k);
        CHECK(y3[size_t(5 * r + k)] == 5 * (r + 1) + k + 1);
      }
  }

  expectError(
      "vocab", [&] { SampleSource x(prefix, 4, 20, false, 0); }, "token id 20");
  expectError(
      "vocab2", [&] { SampleSource x(prefix, 4, 20, false, 0); },
      "vocab is 20");
  expectError(
      "small", [&] { SampleSource x(prefix, 31, 100, false, 0); },
      "fewer than one sample");
  expectError(
      "missing", [&] { SampleSource x(path("nope"), 4, 100, false, 0); },
      "nope");
  std::string idx = fs::readFile(prefix + ".idx");
  writeBytes(path("corrupt.bin"), fs::readFile(prefix + ".bin"));
  writeBytes(path("corrupt.idx"), "XXXXXXX" + idx.substr(7));
  expectError(
      "magic", [&] { SampleSource x(path("corrupt"), 4, 100, false, 0); },
      "bad magic");
  writeBytes(path("corrupt.idx"), idx.substr(0, idx.size() - 5));
  expectError(
      "short idx", [&] { SampleSource x(path("corrupt"), 4, 100, false, 0); },
      "corrupt.idx");
}

//===----------------------------------------------------------------------===//

std::vector<float> hostCopy(const Memory &m, size_t k) {
  std::vector<float> v(m.bytes(k) / 4);
  m.toHost(k, v.data());
  return v;
}

void testEngineAndCheckpoint() {
  test::BigramConfig cfg;
  plan::Plan plan = test::makeBigramPlan(cfg);
  auto backend = createCpuBackend(1);
  Engine e(plan, *backend, "cpu");
  CHECK(e.has("train") && e.has("optimizer") && e.has("eval") &&
        e.has("predict"));
  expectError(
      "no program", [&] { e.program("finetune"); }, "'finetune'");
  {
    // Programs left out: no runner, no ports, no say in the arena.
    auto portBytes = [&](const char *name) {
      int64_t n = 0;
      const plan::Program *p = plan.findProgram(name);
      for (const auto *ports : {&p->inputs, &p->outputs})
        for (const plan::Port &port : *ports)
          n += port.bytes();
      return size_t(n);
    };
    Engine training(plan, *backend, "cpu", nullptr, {"predict"});
    CHECK(training.has("train") && !training.has("predict"));
    CHECK(training.plannedBytes().ports ==
          e.plannedBytes().ports - portBytes("predict"));
    Engine generating(plan, *backend, "cpu", nullptr,
                      {"train", "optimizer", "eval"});
    CHECK(generating.has("predict") && !generating.has("train"));
    CHECK(generating.plannedBytes().arena ==
          size_t(plan.findProgram("predict")->arenaBytes));
    CHECK(generating.plannedBytes().arena < e.plannedBytes().arena);
  }
  Memory &mem = e.memory();
  CHECK(mem.parameterCount() == 16 * 8 + 8 * 16 + 16);
  mem.initialize(1);
  std::vector<float> w1 = hostCopy(mem, 0);
  mem.initialize(1);
  CHECK(hostCopy(mem, 0) == w1);
  mem.initialize(2);
  CHECK(hostCopy(mem, 0) != w1);
  double sq = 0;
  for (float x : w1)
    sq += double(x) * x;
  CHECK(std::fabs(std::sqrt(sq / double(w1.size())) - 0.5) < 0.1);
  for (float x : hostCopy(mem, 2))
    CHECK(x == 0.0f); // proj.bias: Init::Zeros

  ProgramRunner &train = e.program("train");
  std::vector<int32_t> tok(16), tgt(16);
  for (int k = 0; k < 16; ++k) {
    tok[size_t(k)] = k % 16;
    tgt[size_t(k)] = (k + 1) % 16;
  }
  train.setInput("tokens", tok.data(), 64);
  train.setInput("targets", tgt.data(), 64);
  expectError(
      "port size", [&] { train.setInput("tokens", tok.data(), 8); },
      "takes 64 bytes");
  expectError(
      "port name", [&] { train.setInput("nope", tok.data(), 8); },
      "no input 'nope'");
  train.run();
  float loss = train.getScalar("loss");
  CHECK(std::isfinite(loss) && loss > 1.0f && loss < 6.0f);
  bool anyGrad = false;
  for (float x : hostCopy(mem, 4))
    anyGrad |= x != 0.0f;
  CHECK(anyGrad);
  ProgramRunner &opt = e.program("optimizer");
  opt.setScalar("lr", 0.01f);
  opt.setScalar("step", 1.0f);
  opt.run();
  CHECK(opt.getScalar("grad_norm") > 0.0f);
  for (size_t g : mem.withRole(plan::Role::Grad))
    for (float x : hostCopy(mem, g))
      CHECK(x == 0.0f); // the optimizer zeroes the grads

  // Checkpoint round trip.
  std::string dir = path("ckpt");
  TrainState st;
  st.iteration = 7;
  st.consumedSamples = 28;
  st.dataSeed = 99;
  st.shuffle = false;
  st.numSamples = 5;
  st.rng = Rng(3).save();
  saveCheckpoint(dir, plan, mem, st);
  CHECK(fs::readFile(fs::join(dir, kTrackerName)) == "7\n");
  CHECK(fs::exists(fs::join(dir, "iter_0000007/model.safetensors")));
  SafetensorsReader opt7(fs::join(dir, "iter_0000007/optimizer.safetensors"));
  CHECK(opt7.find("exp_avg.wte.weight") && opt7.find("exp_avg_sq.proj.bias"));
  CHECK(opt7.tensors().size() == 6);

  Engine e2(plan, *backend, "cpu");
  e2.memory().initialize(5);
  LoadResult lr = loadCheckpoint(dir, plan, e2.memory(), true);
  CHECK(lr.resumed);
  CHECK(lr.state.iteration == 7 && lr.state.consumedSamples == 28);
  CHECK(lr.state.dataSeed == 99 && !lr.state.shuffle && lr.state.rng == st.rng);
  for (size_t k = 0; k < mem.count(); ++k)
    if (mem.info(k).role != plan::Role::Grad)
      CHECK(hostCopy(mem, k) == hostCopy(e2.memory(), k));

  // A parameters-only file.
  std::string params = path("params.safetensors");
  saveTensorsByParam(params, mem, plan::Role::Param, {});
  LoadResult lp = loadCheckpoint(params, plan, e2.memory(), true);
  CHECK(!lp.resumed && lp.state.iteration == 0);

  // Load errors, each naming the problem.
  auto write = [&](const std::string &p, std::vector<std::string> names,
                   std::vector<std::vector<int64_t>> shapes) {
    SafetensorsWriter w;
    for (size_t k = 0; k < names.size(); ++k)
      w.add(names[k], plan::DType::F32, shapes[k], [](void *) {});
    w.write(p);
  };
  std::string q = path("q.safetensors");
  write(q, {"wte.weight", "proj.weight"}, {{16, 8}, {8, 16}});
  expectError(
      "missing param", [&] { loadCheckpoint(q, plan, e2.memory(), false); },
      "no tensor 'proj.bias'");
  write(q, {"wte.weight", "proj.weight", "proj.bias"},
        {{16, 8}, {8, 15}, {16}});
  expectError(
      "shape", [&] { loadCheckpoint(q, plan, e2.memory(), false); },
      "'proj.weight'");
  expectError(
      "shape2", [&] { loadCheckpoint(q, plan, e2.memory(), false); },
      "[8,15] but the plan expects [8,16]");
  write(q, {"wte.weight", "proj.weight", "proj.bias", "extra"},
        {{16, 8}, {8, 16}, {16}, {1}});
  expectError(
      "extra", [&] { loadCheckpoint(q, plan, e2.memory(), false); }, "'extra'");
  std::string bytes = fs::readFile(params);
  writeBytes(q, bytes.substr(0, bytes.size() - 10));
  expectError(
      "truncated", [&] { loadCheckpoint(q, plan, e2.memory(), false); },
      "truncated");
  expectError(
      "no ckpt", [&] { loadCheckpoint(path("none"), plan, e2.memory(), true); },
      "does not exist");
  fs::makeDirectories(path("emptydir"));
  expectError(
      "no tracker",
      [&] { loadCheckpoint(path("emptydir"), plan, e2.memory(), true); },
      "latest_checkpointed_iteration.txt");
  writeBytes(path("emptydir/latest_checkpointed_iteration.txt"), "12\n");
  expectError(
      "tracker dir",
      [&] { loadCheckpoint(path("emptydir"), plan, e2.memory(), true); },
      "iter_0000012");
  writeBytes(path("emptydir/latest_checkpointed_iteration.txt"), "garbage");
  expectError(
      "tracker text",
      [&] { loadCheckpoint(path("emptydir"), plan, e2.memory(), true); },
      "does not name an iteration");

  // An sgd plan cannot take an adam checkpoint's optimizer file.
  test::BigramConfig sgdCfg;
  sgdCfg.optimizer = "sgd";
  plan::Plan sgd = test::makeBigramPlan(sgdCfg);
  Engine e3(sgd, *backend, "cpu");
  expectError(
      "optimizer mismatch",
      [&] { loadCheckpoint(dir, sgd, e3.memory(), true); }, "exp_avg");

  // Programs for another device are not this engine's.
  test::BigramConfig cudaCfg;
  cudaCfg.target = "cuda";
  plan::Plan cuda = test::makeBigramPlan(cudaCfg);
  expectError(
      "target", [&] { Engine x(cuda, *backend, "cpu"); }, "compiled for cuda");

  // The backend checks every instruction at load: a MatMul whose K is
  // larger than its operands must be refused before anything runs.
  plan::Plan broken = plan;
  broken.programs[0].instrs[2].i[3] = 1000;
  expectError(
      "backend check", [&] { Engine x(broken, *backend, "cpu"); },
      "plan program 'train' instruction 2 (MatMul)");
}

/// Every group of size `size` with this process at `rank`; allGather
/// returns `parts` (what each rank would contribute) concatenated.
class ShardComm final : public test::PlacedComm {
public:
  using PlacedComm::PlacedComm;
  void allGather(const ProcessGroup &g, const float *in, float *out,
                 size_t n) override {
    CHECK(parts.size() == size_t(g.size));
    CHECK(std::memcmp(in, parts[size_t(g.rank)].data(), n * 4) == 0);
    for (size_t r = 0; r < parts.size(); ++r)
      std::memcpy(out + r * n, parts[r].data(), n * 4);
  }
  std::vector<std::vector<float>> parts;
};

void testShards() {
  // A fused q|k|v-like weight [2, 12] split over 2 ranks along dim 1 in 3
  // chunks (local [2, 6]) and a row-split [4, 3] (local [2, 3]).
  plan::Plan full;
  auto param = [&](const char *name, std::vector<int64_t> shape) {
    plan::Persistent t;
    t.name = name;
    t.shape = std::move(shape);
    t.init = plan::Init::Normal;
    t.initStd = 1.0f;
    full.persistents.push_back(t);
  };
  param("qkv", {2, 12});
  param("rows", {4, 3});
  plan::Plan sharded = full;
  sharded.persistents[0].fullShape = {2, 12};
  sharded.persistents[0].shape = {2, 6};
  sharded.persistents[0].shardDim = 1;
  sharded.persistents[0].shardGroups = 3;
  sharded.persistents[1].fullShape = {4, 3};
  sharded.persistents[1].shape = {2, 3};
  sharded.persistents[1].shardDim = 0;
  plan::validate(sharded);
  auto backend = createCpuBackend(1);

  Memory one(full, *backend);
  one.initialize(5);
  std::vector<float> qkv = hostCopy(one, 0), rows = hostCopy(one, 1);

  std::vector<std::vector<float>> localQkv(2), localRows(2);
  for (int r = 0; r < 2; ++r) {
    ShardComm comm(r, 2);
    Memory m(sharded, *backend, &comm);
    m.initialize(5);
    // Part r of every chunk of 4 columns, chunks in order.
    std::vector<float> want;
    for (int o = 0; o < 2; ++o)
      for (int g = 0; g < 3; ++g)
        for (int c = 0; c < 2; ++c)
          want.push_back(qkv[size_t(o * 12 + g * 4 + r * 2 + c)]);
    localQkv[size_t(r)] = hostCopy(m, 0);
    CHECK(localQkv[size_t(r)] == want);
    localRows[size_t(r)] = hostCopy(m, 1);
    CHECK(localRows[size_t(r)] ==
          std::vector<float>(rows.begin() + r * 6, rows.begin() + r * 6 + 6));
    CHECK(m.fullShape(0) == (std::vector<int64_t>{2, 12}));
    CHECK(m.fullBytes(0) == 2 * 12 * 4 && m.bytes(0) == 2 * 6 * 4);
  }
  // Gathering puts the parts back in place; loading a full tensor keeps
  // the shard.
  ShardComm comm(1, 2);
  Memory m(sharded, *backend, &comm);
  m.fromFullHost(0, qkv.data());
  CHECK(hostCopy(m, 0) == localQkv[1]);
  std::vector<float> back(24);
  comm.parts = localQkv;
  m.fullToHost(0, back.data());
  CHECK(back == qkv);
  comm.parts = localRows;
  back.assign(12, 0.0f);
  m.fromFullHost(1, rows.data());
  m.fullToHost(1, back.data());
  CHECK(back == rows);

  // A split that is not the run's group size is refused at load.
  expectError(
      "shards at world size 1", [&] { Memory x(sharded, *backend); },
      "'qkv' is split 2 ways but this run's group 0 has 1 rank(s)");
  test::BigramConfig tpCfg;
  tpCfg.tp = 2;
  plan::Plan tp = test::makeBigramPlan(tpCfg);
  expectError(
      "tp plan at world size 1", [&] { Engine x(tp, *backend, "cpu"); },
      "split 2 ways");
}

//===----------------------------------------------------------------------===//

void testSampling() {
  std::vector<float> logits = {0.0f, 3.0f, 1.0f, 2.0f, 10.0f};
  Rng rng(1);
  CHECK(Generator::pick(logits, 5, 0.0, 0, rng) == 4);
  CHECK(Generator::pick(logits, 4, 0.0, 0, rng) == 1); // limit hides id 4
  for (int k = 0; k < 100; ++k)
    CHECK(Generator::pick(logits, 5, 1.0, 1, rng) == 4); // top-1 = greedy
  int counts[4] = {0, 0, 0, 0};
  const int n = 40000;
  for (int k = 0; k < n; ++k) {
    int32_t id = Generator::pick(logits, 4, 1.0, 2, rng); // top-2 of 0..3
    CHECK(id == 1 || id == 3);
    ++counts[id];
  }
  double p1 = std::exp(3.0) / (std::exp(3.0) + std::exp(2.0));
  CHECK(std::fabs(double(counts[1]) / n - p1) < 0.01);
  std::vector<float> badLogits = {0.0f, NAN};
  expectError(
      "nan logits", [&] { Generator::pick(badLogits, 2, 1.0, 0, rng); },
      "non-finite");
}

void testLogLines() {
  IntervalStats s;
  s.iteration = 10;
  s.totalIterations = 200;
  s.consumedSamples = 80;
  s.elapsedMs = 123.4;
  s.tflops = 1.2;
  s.lr = 1e-4;
  s.globalBatch = 8;
  s.lmLoss = 5.123456;
  s.gradNorm = 1.234;
  std::string line = Logger::formatInterval(s);
  CHECK(line ==
        " iteration       10/     200 | consumed samples:           80 | "
        "elapsed time per iteration (ms): 123.4 | throughput per GPU "
        "(TFLOP/s/GPU): 1.200 | learning rate: 1.000000E-04 | global batch "
        "size:     8 | lm loss: 5.123456E+00 | loss scale: 1.0 | grad norm: "
        "1.234 | number of skipped iterations:   0 | number of nan "
        "iterations:   0 |");
  json::Value j = json::parse(Logger::jsonInterval(s));
  for (const char *k :
       {"iteration", "consumed_samples", "elapsed_ms", "tflops", "lr",
        "global_batch_size", "lm_loss", "grad_norm", "skipped", "nan"})
    CHECK(j.find(k) != nullptr);
  CHECK(j.find("lm_loss")->number == 5.123456);
  s.lmLoss = NAN;
  CHECK(json::parse(Logger::jsonInterval(s)).find("lm_loss")->kind ==
        json::Value::Null);
  std::string v = Logger::formatValidation(10, 2.0);
  CHECK(
      v.find(" validation loss at iteration 10 | lm loss value: 2.000000E+00 | "
             "lm loss PPL: 7.389056E+00 | ") != std::string::npos);
}

/// A pipeline rank's Memory: only the resident persistents get device
/// buffers; the others take host copies (a checkpoint's or a gradient dump's
/// values from their owner) and are skipped by initialize and by loading.
void testPartialMemory() {
  test::BigramConfig cfg;
  plan::Plan plan = test::makeBigramPlan(cfg);
  auto backend = createCpuBackend(1);
  Memory full(plan, *backend);
  full.initialize(4);
  std::vector<bool> resident(plan.persistents.size(), false);
  resident[0] = true;
  Memory part(plan, *backend, nullptr, resident);
  CHECK(part.count() == full.count());
  CHECK(part.resident(0) && !part.resident(1) && part.data(1) == nullptr);
  CHECK(part.bytes(1) == full.bytes(1));
  CHECK(part.residentBytes() == full.bytes(0));
  size_t all = 0;
  for (size_t k = 0; k < full.count(); ++k)
    all += full.bytes(k);
  CHECK(full.residentBytes() == all);
  CHECK(part.parameterCount() == full.parameterCount());
  part.initialize(4);
  CHECK(hostCopy(part, 0) == hostCopy(full, 0)); // the same stream
  CHECK(!part.available(1));
  expectError(
      "absent", [&] { hostCopy(part, 1); }, "neither on this rank");
  std::vector<float> w1 = hostCopy(full, 1);
  part.fromHost(1, w1.data());
  CHECK(part.available(1) && !part.resident(1) && hostCopy(part, 1) == w1);
  part.dropHostCopies();
  CHECK(!part.available(1));

  // Loading reads only the resident tensors (but checks them all).
  std::string dir = path("partial-ckpt");
  TrainState st;
  st.iteration = 3;
  st.rng = Rng(3).save();
  saveCheckpoint(dir, plan, full, st);
  Memory loaded(plan, *backend, nullptr, resident);
  loadCheckpoint(dir, plan, loaded, true);
  CHECK(hostCopy(loaded, 0) == hostCopy(full, 0));
  for (size_t k = 1; k < loaded.count(); ++k)
    CHECK(!loaded.available(k));
}

} // namespace

/// The launchers' variables: world size, rank and the rank on the node
/// (which picks a cuda run's GPU) from one launcher at a time.
void testLaunchInfo() {
  const char *all[] = {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
                       "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_NTASKS",
                       "SLURM_PROCID", "SLURM_LOCALID", "WORLD_SIZE", "RANK",
                       "LOCAL_RANK"};
  auto clear = [&] {
    for (const char *v : all)
      ::unsetenv(v);
  };
  clear();
  LaunchInfo none = launchInfo();
  CHECK(none.worldSize == 1 && none.rank == 0 && none.localRank == -1 &&
        none.source.empty());
  ::setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
  ::setenv("OMPI_COMM_WORLD_RANK", "3", 1);
  ::setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
  ::setenv("LOCAL_RANK", "7", 1); // another launcher's: not read
  LaunchInfo mpi = launchInfo();
  CHECK(mpi.worldSize == 4 && mpi.rank == 3 && mpi.localRank == 1 &&
        mpi.source == "OMPI_COMM_WORLD_SIZE");
  clear();
  ::setenv("SLURM_NTASKS", "8", 1);
  ::setenv("SLURM_PROCID", "5", 1);
  ::setenv("SLURM_LOCALID", "1", 1);
  CHECK(launchInfo().localRank == 1 && launchInfo().rank == 5);
  clear();
  ::setenv("WORLD_SIZE", "2", 1);
  ::setenv("RANK", "1", 1);
  CHECK(launchInfo().localRank == -1);
  ::setenv("LOCAL_RANK", "0", 1);
  CHECK(launchInfo().localRank == 0);
  ::setenv("LOCAL_RANK", "x", 1);
  expectError("bad LOCAL_RANK", [] { launchInfo(); }, "LOCAL_RANK='x'");
  clear();
}

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: runtime_engine_test SCRATCH_DIR\n");
    return 2;
  }
  scratch = argv[1];
  fs::makeDirectories(scratch);
  struct {
    const char *name;
    void (*fn)();
  } tests[] = {{"json", testJson},
               {"gemm choices", testGemmChoices},
               {"rng", testRng},
               {"safetensors", testSafetensors},
               {"schedule", testSchedule},
               {"data", testData},
               {"engine+checkpoint", testEngineAndCheckpoint},
               {"shards", testShards},
               {"partial memory", testPartialMemory},
               {"sampling", testSampling},
               {"log lines", testLogLines},
               {"launch", testLaunchInfo}};
  for (auto &t : tests) {
    int before = failures;
    try {
      t.fn();
    } catch (const std::exception &e) {
      std::fprintf(stderr, "%s: unexpected exception: %s\n", t.name, e.what());
      ++failures;
    }
    std::printf("%-20s %s\n", t.name, failures == before ? "ok" : "FAILED");
  }
  return failures ? 1 : 0;
}
