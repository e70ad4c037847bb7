# lit configuration of mega's compiler tests: test/Dialect, test/Passes,
# test/megac. Run via `ctest -R lit` or `ninja check-mega`.
import os

import lit.formats

config.name = "mega"
config.test_format = lit.formats.ShTest(not lit_config.isWindows)
config.suffixes = [".mlir", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = config.mega_obj_root
# Folders with their own (non-lit) tests, and helper inputs.
config.excludes = ["CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py",
                   "runtime", "data", "reference", "plan", "Inputs"]

config.environment["PATH"] = os.pathsep.join(
    [config.mega_tools_dir, config.llvm_tools_dir,
     config.environment.get("PATH", os.environ.get("PATH", ""))])

config.substitutions.append(("%mega_src", config.mega_src_root))
config.substitutions.append(("%models", os.path.join(config.mega_src_root, "models")))

# Tests of a tool that is not built yet say `REQUIRES: megac` (lanes_test:
# the runtime's, test/runtime/engine).
for tool in ["megac", "mega-opt", "lanes_test"]:
    if os.path.exists(os.path.join(config.mega_tools_dir, tool)):
        config.available_features.add(tool)
