"""Build script: cythonizes ``cext/_ext.pyx`` into the private module ``flow_orchestrator._ext``.

Set ``FLOW_ORCHESTRATOR_DEBUG=1`` to build with bounds, wraparound and initialization
checks on (the debug build CI also tests).  Release and debug builds generate their C++
and objects into separate folders, so switching between them never reuses a stale build.
"""

import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FLOW_ORCHESTRATOR_DEBUG", "") not in ("", "0", "false", "no")

# The one directives dict of the project.
DIRECTIVES = {
    "language_level": 3,
    "freethreading_compatible": True,
    "embedsignature": True,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "nonecheck": DEBUG,
    "cdivision": True,
    "overflowcheck": DEBUG,
}

MODE = "debug" if DEBUG else "release"

extensions = [
    Extension(
        "flow_orchestrator._ext",
        sources=["cext/_ext.pyx"],
        include_dirs=["cext", numpy.get_include()],
        language="c++",
        define_macros=[
            ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
            ("FO_DEBUG_BUILD", "1" if DEBUG else "0"),
        ],
        extra_compile_args=["-std=c++17"] + (["-O0", "-g"] if DEBUG else ["-O3"]),
    )
]

setup(
    # Separate build trees per mode: build_ext decides "up to date" by timestamps, and
    # would otherwise keep a debug .so when switching back to a release build.
    options={"build": {"build_base": f"build/{MODE}"}},
    ext_modules=cythonize(
        extensions,
        compiler_directives=DIRECTIVES,
        build_dir=f"build/cython-{MODE}",
        force=DEBUG,
        annotate=os.environ.get("FLOW_ORCHESTRATOR_ANNOTATE", "") == "1",
    ),
)
