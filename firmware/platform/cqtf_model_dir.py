"""PlatformIO pre: extra script of the cqtf project (listed in platformio.ini, not part of the
generic platform): puts the packed model's directory on the include path.

The directory holding `cqtf_model.h` is $CQTF_MODEL_DIR (an absolute path, or relative to the
project dir); without it, firmware/test_model. Changing it recompiles what includes the header
(SCons sees the new include path); build different models into different build dirs
(PLATFORMIO_BUILD_DIR) to keep both builds.
"""

import os

Import("env")  # noqa: F821  # pylint: disable=undefined-variable

_project_dir = env.subst("$PROJECT_DIR")  # noqa: F821  # pylint: disable=undefined-variable
_model_dir = os.environ.get("CQTF_MODEL_DIR") or os.path.join(_project_dir, "firmware", "test_model")
_model_dir = os.path.normpath(os.path.join(_project_dir, os.path.expanduser(_model_dir)))

if not env.IsCleanTarget() and not os.path.isfile(  # noqa: F821  # pylint: disable=undefined-variable
    os.path.join(_model_dir, "cqtf_model.h")
):
    print(
        "Error: no cqtf_model.h in %s (set CQTF_MODEL_DIR to the directory `cqtf pack` wrote)"
        % _model_dir
    )
    env.Exit(1)  # noqa: F821  # pylint: disable=undefined-variable

print("cqtf model: %s" % _model_dir)
env.Prepend(CPPPATH=[_model_dir])  # noqa: F821  # pylint: disable=undefined-variable
env.Replace(CQTF_MODEL_DIR=_model_dir)  # noqa: F821  # pylint: disable=undefined-variable
