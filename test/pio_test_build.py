"""PlatformIO pre: extra script (platformio.ini) for test builds (`pio test`) only.

- The test suite brings its own main(): firmware/src/main.c is left out of the build.
- A suite may carry the model it is built with: test/<suite>/golden/cqtf_model.h goes first on the
  include path, ahead of $CQTF_MODEL_DIR (test_kernels uses it so that the engine's buffers, sized
  from the compiled-in model, hold every golden case).
Regular builds (`pio run`) are untouched.
"""

import os

Import("env")  # noqa: F821  # pylint: disable=undefined-variable
from SCons.Script import COMMAND_LINE_TARGETS  # noqa: E402  # pylint: disable=import-error

if "__test" in COMMAND_LINE_TARGETS:
    env.Append(SRC_FILTER=["-<main.c>"])  # noqa: F821  # pylint: disable=undefined-variable
    suite = env.get("PIOTEST_RUNNING_NAME")  # noqa: F821  # pylint: disable=undefined-variable
    if suite:
        golden = os.path.join(env.subst("$PROJECT_TEST_DIR"), suite, "golden")  # noqa: F821
        if os.path.isfile(os.path.join(golden, "cqtf_model.h")):
            print("cqtf test model: %s" % golden)
            env.Prepend(CPPPATH=[golden])  # noqa: F821  # pylint: disable=undefined-variable
