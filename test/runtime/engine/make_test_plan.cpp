//===- make_test_plan.cpp - Writes the runtime tests' bigram plan ---------===//
//
//   make_test_plan OUT.plan [--vocab V] [--hidden H] [--seq S]
//       [--micro-batch-size B] [--num-microbatches M] [--optimizer adam|sgd]
//       [--lr X] [--init-std X] [--proj-std X] [--clip X] [--weight-decay X]
//       [--target cpu|cuda] [--set KEY=VALUE]...
//
//===----------------------------------------------------------------------===//
#include "TestPlans.h"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

int main(int argc, char **argv) {
  try {
    mega::test::BigramConfig c;
    std::string out;
    for (int k = 1; k < argc; ++k) {
      std::string a = argv[k];
      auto next = [&]() -> std::string {
        if (k + 1 >= argc)
          throw std::runtime_error(a + " needs a value");
        return argv[++k];
      };
      if (a == "--vocab")
        c.vocab = std::stoll(next());
      else if (a == "--hidden")
        c.hidden = std::stoll(next());
      else if (a == "--seq")
        c.seq = std::stoll(next());
      else if (a == "--micro-batch-size")
        c.micro = std::stoll(next());
      else if (a == "--num-microbatches")
        c.microbatches = std::stoll(next());
      else if (a == "--tp")
        c.tp = std::stoll(next());
      else if (a == "--dp")
        c.dp = std::stoll(next());
      else if (a == "--optimizer")
        c.optimizer = next();
      else if (a == "--lr")
        c.lr = std::stod(next());
      else if (a == "--init-std")
        c.initStd = std::stof(next());
      else if (a == "--proj-std")
        c.projStd = std::stof(next());
      else if (a == "--clip")
        c.clip = std::stof(next());
      else if (a == "--weight-decay")
        c.weightDecay = std::stof(next());
      else if (a == "--target")
        c.target = next();
      else if (a == "--set") {
        std::string kv = next();
        size_t eq = kv.find('=');
        if (eq == std::string::npos)
          throw std::runtime_error("--set needs KEY=VALUE");
        c.extraConfig[kv.substr(0, eq)] = kv.substr(eq + 1);
      } else if (a[0] == '-')
        throw std::runtime_error("unknown option " + a);
      else
        out = a;
    }
    if (out.empty())
      throw std::runtime_error("usage: make_test_plan OUT.plan [options]");
    mega::plan::writePlanFile(mega::test::makeBigramPlan(c), out);
    return 0;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "make_test_plan: error: %s\n", e.what());
    return 1;
  }
}
