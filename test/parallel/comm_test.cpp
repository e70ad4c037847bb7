//===- comm_test.cpp - Closed-form checks of the communicator -------------===//
//
// Run under `mpirun -np N comm_test TP DP PP` (N = TP*DP*PP). Every rank
// fills buffers with values that depend on its world rank, runs each
// collective over each group, and checks the result against the closed
// form (sums of small integers: exact in f32). Also checks the rank layout
// (tensor fastest, then data, then pipeline), runs the collectives as
// plan instructions through Backend::collective (an AllGather of bf16 too)
// and a grouped exchange
// (Backend::exchange) around each group's ring, and the gradient buckets'
// in-place waits (BucketReducer). Prints "ok" on rank 0.
//
//===----------------------------------------------------------------------===//
#include "BucketReducer.h"
#include "Comm.h"
#include "Devices.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace mega;
using namespace mega::rt;

namespace {

int failures = 0;

void expect(bool ok, const std::string &what, int rank) {
  if (!ok) {
    std::fprintf(stderr, "rank %d: FAIL %s\n", rank, what.c_str());
    ++failures;
  }
}

/// The value world rank w puts at element k.
float valueOf(int w, size_t k) { return float(100 * (w + 1) + int(k)); }

void checkGroup(Communicator &comm, plan::ParallelGroup kind, int w,
                Backend &backend) {
  const ProcessGroup &g = comm.group(kind);
  std::string name = "group " + std::to_string(int(kind));
  const size_t n = 5;
  // all-reduce sum, out of place and in place
  std::vector<float> in(n), out(n, -1);
  for (size_t k = 0; k < n; ++k)
    in[k] = valueOf(w, k);
  comm.allReduce(g, in.data(), out.data(), n, plan::ReduceOp::Sum);
  for (size_t k = 0; k < n; ++k) {
    float want = 0;
    for (int m : g.worldRanks)
      want += valueOf(m, k);
    expect(out[k] == want, name + " allReduce sum", w);
  }
  comm.allReduce(g, in.data(), in.data(), n, plan::ReduceOp::Max);
  for (size_t k = 0; k < n; ++k) {
    float want = -1e30f;
    for (int m : g.worldRanks)
      want = std::fmax(want, valueOf(m, k));
    expect(in[k] == want, name + " allReduce max in place", w);
  }
  // all-gather: rank order
  for (size_t k = 0; k < n; ++k)
    in[k] = valueOf(w, k);
  std::vector<float> gathered(n * size_t(g.size), -1);
  comm.allGather(g, in.data(), gathered.data(), n);
  for (int r = 0; r < g.size; ++r)
    for (size_t k = 0; k < n; ++k)
      expect(gathered[size_t(r) * n + k] == valueOf(g.worldRanks[size_t(r)], k),
             name + " allGather", w);
  // reduce-scatter: part g.rank of the sum
  std::vector<float> big(n * size_t(g.size)), part(n, -1);
  for (size_t k = 0; k < big.size(); ++k)
    big[k] = valueOf(w, k);
  comm.reduceScatter(g, big.data(), part.data(), n);
  for (size_t k = 0; k < n; ++k) {
    float want = 0;
    for (int m : g.worldRanks)
      want += valueOf(m, size_t(g.rank) * n + k);
    expect(part[k] == want, name + " reduceScatter", w);
  }
  // send/recv around the ring
  if (g.size > 1) {
    int next = (g.rank + 1) % g.size, prev = (g.rank + g.size - 1) % g.size;
    float token = float(w), got = -1;
    if (g.rank % 2 == 0) {
      comm.send(g, next, 7, &token, 4);
      comm.recv(g, prev, 7, &got, 4);
    } else {
      comm.recv(g, prev, 7, &got, 4);
      comm.send(g, next, 7, &token, 4);
    }
    expect(got == float(g.worldRanks[size_t(prev)]), name + " send/recv", w);
    // One exchange per rank: two messages to the next rank and two from the
    // previous one. Each send waits for its receive, so this completes only
    // because the four transfers are one group; the two messages from one
    // peer arrive in the order sent (no tags).
    std::vector<float> out[2], in[2];
    for (int k = 0; k < 2; ++k) {
      out[k].assign(size_t(3 + 1000 * k), float(w * 10 + k));
      in[k].assign(out[k].size(), -1.0f);
    }
    backend.exchange(g,
                     {{true, next, out[0].data(), out[0].size() * 4},
                      {false, prev, in[0].data(), in[0].size() * 4},
                      {false, prev, in[1].data(), in[1].size() * 4},
                      {true, next, out[1].data(), out[1].size() * 4}},
                     comm);
    float from = float(g.worldRanks[size_t(prev)]);
    for (int k = 0; k < 2; ++k)
      for (float x : in[k])
        expect(x == from * 10 + float(k),
               name + " exchange message " + std::to_string(k), w);
    // A receive that expects more than its peer sends: one Error naming
    // the sizes on the receiving rank (the sender's completes).
    std::vector<float> small(2, float(w)), large(3, -1.0f);
    std::string why;
    try {
      backend.exchange(g,
                       {{true, next, small.data(), 8},
                        {false, prev, large.data(), 12}},
                       comm);
    } catch (const Error &e) {
      why = e.what();
    }
    expect(why.find("8 bytes came from rank " + std::to_string(prev) +
                    " where 12 were expected") != std::string::npos,
           name + " exchange size mismatch: '" + why + "'", w);
  }
  // As plan instructions through the backend (AllReduce in place).
  plan::Value v;
  v.shape = {int64_t(n)};
  std::vector<float> buf(n);
  for (size_t k = 0; k < n; ++k)
    buf[k] = valueOf(w, k);
  plan::Instr instr;
  instr.op = plan::Op::AllReduce;
  instr.i = {int64_t(kind), 0};
  TensorRef ref{buf.data(), &v};
  checkCollective(instr, {&v}, {&v}, comm);
  backend.collective(instr, {ref}, {ref}, comm);
  for (size_t k = 0; k < n; ++k) {
    float want = 0;
    for (int m : g.worldRanks)
      want += valueOf(m, k);
    expect(buf[k] == want, name + " AllReduce instruction", w);
  }
  // AllGather of bf16 (6 elements a rank: whole 4-byte words), rank order,
  // every element where it belongs. The values are small integers, exact
  // in bf16: the upper halves of their f32 bits.
  const size_t m = 6;
  plan::Value bx, by;
  bx.shape = {int64_t(m)};
  bx.dtype = plan::DType::BF16;
  by.shape = {int64_t(m) * g.size};
  by.dtype = plan::DType::BF16;
  auto bf16Of = [](float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return uint16_t(u >> 16);
  };
  std::vector<uint16_t> mine(m), all(m * size_t(g.size), 0xFFFF);
  for (size_t k = 0; k < m; ++k)
    mine[k] = bf16Of(valueOf(w, k));
  plan::Instr gather;
  gather.op = plan::Op::AllGather;
  gather.i = {int64_t(kind)};
  checkCollective(gather, {&bx}, {&by}, comm);
  backend.collective(gather, {TensorRef{mine.data(), &bx}},
                     {TensorRef{all.data(), &by}}, comm);
  for (int r = 0; r < g.size; ++r)
    for (size_t k = 0; k < m; ++k)
      expect(all[size_t(r) * m + k] ==
                 bf16Of(valueOf(g.worldRanks[size_t(r)], k)),
             name + " AllGather instruction (bf16)", w);
  // Gradient buckets (BucketReducer): a bucket is its first gradient and its
  // group, so a wait over this group may begin with the first gradient of a
  // data-group bucket (mega-tensor-grad-bucket after mega-data-parallel);
  // waits that were never started reduce on the spot, in place. The sums
  // must be those of the communicator's own all-reduces (checked above).
  plan::Value va, vb;
  va.shape = {4};
  vb.shape = {3};
  std::vector<float> a(4), b(3);
  for (size_t k = 0; k < a.size(); ++k)
    a[k] = valueOf(w, k);
  for (size_t k = 0; k < b.size(); ++k)
    b[k] = valueOf(w, 10 + k);
  TensorRef ra{a.data(), &va}, rb{b.data(), &vb};
  plan::Instr groupWait;
  groupWait.op = plan::Op::AllReduceWait;
  groupWait.i = {int64_t(kind), 0};
  if (kind != plan::ParallelGroup::Data) {
    BucketReducer reducer(backend, comm);
    std::vector<float> wantA = a, wantB = b;
    const ProcessGroup &data = comm.group(plan::ParallelGroup::Data);
    comm.allReduce(data, wantA.data(), wantA.data(), wantA.size(),
                   plan::ReduceOp::Sum);
    comm.allReduce(data, wantB.data(), wantB.data(), wantB.size(),
                   plan::ReduceOp::Sum);
    comm.allReduce(g, wantA.data(), wantA.data(), wantA.size(),
                   plan::ReduceOp::Sum);
    plan::Instr dataWait = groupWait;
    dataWait.i = {int64_t(plan::ParallelGroup::Data), 0};
    std::string why;
    try {
      reducer.declare(dataWait, {ra, rb});
      reducer.declare(groupWait, {ra});
      reducer.wait(dataWait, {ra, rb}, {});
      reducer.wait(groupWait, {ra}, {});
    } catch (const Error &e) {
      why = e.what();
    }
    expect(why.empty() && a == wantA && b == wantB,
           name + " gradient buckets sharing a first gradient " + why, w);
  }
  // The same group and first gradient with other gradients: refused.
  BucketReducer reducer(backend, comm);
  std::string why;
  try {
    reducer.declare(groupWait, {ra, rb});
    reducer.declare(groupWait, {ra});
  } catch (const Error &e) {
    why = e.what();
  }
  expect(why.find("not those of the bucket's other instruction with the "
                  "same first gradient and group") != std::string::npos,
         name + " a bucket declared twice differently: '" + why + "'", w);
  // The distributed optimizer's buckets (ReduceScatterStart/Wait): each
  // gradient reduce-scattered on its own, started (in flight between the
  // start and the wait, as across the train and optimizer programs) and
  // not (the wait reduces now). The blocks must be the communicator's own
  // ReduceScatter's, bit for bit; the unstarted wait leaves the gradients
  // alone.
  for (bool started : {true, false}) {
    const size_t n1 = 5, n2 = 2; // block sizes
    plan::Value g1, g2, b1, b2;
    g1.shape = {int64_t(n1) * g.size};
    g2.shape = {int64_t(n2) * g.size, 1};
    b1.shape = {int64_t(n1)};
    b2.shape = {int64_t(n2), 1};
    std::vector<float> x1(n1 * size_t(g.size)), x2(n2 * size_t(g.size));
    for (size_t k = 0; k < x1.size(); ++k)
      x1[k] = valueOf(w, 20 + k);
    for (size_t k = 0; k < x2.size(); ++k)
      x2[k] = valueOf(w, 40 + k);
    const std::vector<float> keep1 = x1, keep2 = x2;
    std::vector<float> want1(n1), want2(n2), got1(n1, -1.0f), got2(n2, -1.0f);
    comm.reduceScatter(g, x1.data(), want1.data(), n1);
    comm.reduceScatter(g, x2.data(), want2.data(), n2);
    plan::Instr sstart, swait;
    sstart.op = plan::Op::ReduceScatterStart;
    swait.op = plan::Op::ReduceScatterWait;
    sstart.i = swait.i = {int64_t(kind)};
    std::vector<TensorRef> grads = {{x1.data(), &g1}, {x2.data(), &g2}};
    std::vector<TensorRef> blocks = {{got1.data(), &b1}, {got2.data(), &b2}};
    BucketReducer sr(backend, comm);
    std::string err;
    try {
      checkCollective(sstart, {&g1, &g2}, {}, comm);
      checkCollective(swait, {&g1, &g2}, {&b1, &b2}, comm);
      sr.declare(sstart, grads);
      sr.declare(swait, grads);
      sr.checkPairs();
      sr.setStarting(started);
      sr.start(sstart, grads);
      expect(sr.inFlight() == (started ? 1u : 0u),
             name + " reduce-scatter bucket in flight", w);
      sr.wait(swait, grads, blocks);
    } catch (const Error &e) {
      err = e.what();
    }
    std::string what = name + (started ? " started" : " unstarted") +
                       " reduce-scatter bucket " + err;
    expect(err.empty() && sr.inFlight() == 0 && got1 == want1 &&
               got2 == want2 && sr.scattered() == 1,
           what, w);
    if (!started)
      expect(x1 == keep1 && x2 == keep2,
             name + " an unstarted reduce-scatter wait left its gradients", w);
    // A second start before the wait is refused (the first is then
    // completed, so no request outlives the test).
    if (started) {
      err.clear();
      sr.start(sstart, grads);
      try {
        sr.start(sstart, grads);
      } catch (const Error &e) {
        err = e.what();
      }
      sr.wait(swait, grads, blocks);
      expect(err.find("ReduceScatterStart: the bucket's previous collective "
                      "was never waited for") != std::string::npos &&
                 got1 == want1,
             name + " a reduce-scatter bucket started twice: '" + err + "'", w);
    }
    // A start whose bucket no wait completes: refused at load.
    BucketReducer lone(backend, comm);
    err.clear();
    try {
      lone.declare(sstart, grads);
      lone.checkPairs();
    } catch (const Error &e) {
      err = e.what();
    }
    expect(err.find("starts the reduce-scatter of a gradient bucket (" +
                    std::to_string(x1.size() + x2.size()) +
                    " elements) that no ReduceScatterWait completes") !=
               std::string::npos,
           name + " a reduce-scatter start without a wait: '" + err + "'", w);
  }
  // An all-reduce and a reduce-scatter of one bucket: refused.
  BucketReducer mixed(backend, comm);
  why.clear();
  try {
    plan::Instr swait;
    swait.op = plan::Op::ReduceScatterWait;
    swait.i = {int64_t(kind)};
    mixed.declare(groupWait, {ra});
    mixed.declare(swait, {ra});
  } catch (const Error &e) {
    why = e.what();
  }
  expect(why.find("the bucket's other instruction with the same first "
                  "gradient and group is an all-reduce") != std::string::npos,
         name + " an all-reduce bucket waited as a reduce-scatter: '" + why +
             "'",
         w);
}

} // namespace

int main(int argc, char **argv) {
  try {
    if (argc != 4) {
      std::fprintf(stderr, "usage: comm_test TP DP PP\n");
      return 2;
    }
    int tp = std::atoi(argv[1]), dp = std::atoi(argv[2]), pp = std::atoi(argv[3]);
    LaunchInfo launch = launchInfo();
    auto comm = createCommunicator(int(launch.rank), int(launch.worldSize), tp,
                                   dp, pp);
    int w = comm->worldRank();
    // Layout: world rank = t + tp*(d + dp*p).
    int t = comm->group(plan::ParallelGroup::Tensor).rank;
    int d = comm->group(plan::ParallelGroup::Data).rank;
    int p = comm->group(plan::ParallelGroup::Pipeline).rank;
    expect(w == t + tp * (d + dp * p), "rank layout", w);
    expect(comm->group(plan::ParallelGroup::Tensor).size == tp, "tp size", w);
    expect(comm->group(plan::ParallelGroup::Data).size == dp, "dp size", w);
    expect(comm->group(plan::ParallelGroup::Pipeline).size == pp, "pp size", w);
    auto backend = createBackend("cpu", 1);
    for (int k = 0; k < 3; ++k)
      checkGroup(*comm, plan::ParallelGroup(k), w, *backend);
    // Everyone's verdict: a max-reduce of the failure counts.
    float f = float(failures);
    comm->allReduce(comm->group(plan::ParallelGroup::Data), &f, &f, 1,
                    plan::ReduceOp::Max);
    if (w == 0 && f == 0)
      std::printf("ok: %d ranks (%s), tp=%d dp=%d pp=%d\n", comm->worldSize(),
                  comm->name(), tp, dp, pp);
    return f == 0 && failures == 0 ? 0 : 1;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "comm_test: error: %s\n", e.what());
    return 1;
  }
}
