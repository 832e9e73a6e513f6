"""Build script: the package, plus the compiled kernels when a C compiler is there.

* ``BATCHBALD_FAST_NO_EXT=1`` skips the extension (pure-Python install, NumPy kernels).
* The extension is optional: if it cannot be compiled (no C compiler, no Cython), the
  build warns and the package still installs with the NumPy kernels.
* OpenMP is detected by compiling and linking a small program with it, as scikit-learn's
  ``check_openmp_support`` does; without it the kernels build serially
  (``batchbald_fast._kernels.OPENMP_ENABLED`` is False). Likewise OpenMP 5.0's
  ``omp_pause_resource_all``, with which a call that started threads ends them before it
  returns (``batchbald_fast._kernels.RELEASES_THREADS``).
"""

import os
import sys
import tempfile
import textwrap
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NO_EXT = os.environ.get("BATCHBALD_FAST_NO_EXT", "0").strip().lower() not in ("", "0", "false")

OPENMP_TEST = textwrap.dedent("""\
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d", n == omp_get_max_threads());
        return 0;
    }
    """)


PAUSE_TEST = textwrap.dedent("""\
    #include <omp.h>
    int main(void) {
        #pragma omp parallel
        (void) omp_get_thread_num();
        return omp_pause_resource_all(omp_pause_soft);
    }
    """)


def _links(compiler, source, cflags, ldflags):
    """Whether ``source`` compiles and links with these flags."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "test.c")
        with open(src, "w") as f:
            f.write(source)
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
            compiler.link_executable(objs, "test", output_dir=tmp, extra_postargs=ldflags)
        except Exception:  # any compiler or linker failure means "no"
            return False
    return True


def _openmp_flags(compiler):
    """(compile, link) flags that build and link an OpenMP program, or None."""
    if compiler.compiler_type == "msvc":
        candidates = [(["/openmp"], [])]
    elif sys.platform == "darwin":
        candidates = [(["-fopenmp"], ["-fopenmp"]), (["-Xpreprocessor", "-fopenmp"], ["-lomp"])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    for cflags, ldflags in candidates:
        if _links(compiler, OPENMP_TEST, cflags, ldflags):
            return cflags, ldflags
    return None


class BuildExt(build_ext):
    """Adds optimisation and OpenMP flags once the compiler is known."""

    def build_extensions(self):
        ctype = self.compiler.compiler_type
        if ctype == "msvc":
            cflags = ["/O2"]
        else:
            # -fno-trapping-math lets the compiler if-convert the clamp before the log so
            # the loop vectorises; -fno-math-errno drops errno bookkeeping. No -ffast-math
            # (it would reorder the fixed summation order and, with gcc < 13, set
            # flush-to-zero process-wide) and no -march=native (the log loops carry
            # their own AVX2/AVX-512 clones, see _xlogx.h).
            cflags = ["-O3", "-fno-trapping-math", "-fno-math-errno"]
        ldflags = []
        macros = []
        openmp = _openmp_flags(self.compiler)
        if openmp is None:
            warnings.warn("batchbald_fast: the C compiler does not support OpenMP; the "
                          "compiled kernels will run on one thread.")
        else:
            cflags += openmp[0]
            ldflags += openmp[1]
            if _links(self.compiler, PAUSE_TEST, *openmp):
                macros.append(("BBF_HAVE_OMP_PAUSE", "1"))
        for ext in self.extensions:
            ext.extra_compile_args = cflags + list(ext.extra_compile_args or [])
            ext.extra_link_args = ldflags + list(ext.extra_link_args or [])
            ext.define_macros = list(ext.define_macros or []) + macros
        super().build_extensions()


def _extensions():
    if NO_EXT:
        return []
    try:
        import numpy
        from Cython.Build import cythonize
    except ImportError as exc:
        warnings.warn(f"batchbald_fast: {exc}; installing without the compiled kernels.")
        return []
    ext = Extension(
        "batchbald_fast._kernels",
        ["batchbald_fast/_kernels.pyx"],
        include_dirs=[numpy.get_include(), "batchbald_fast"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
        depends=["batchbald_fast/_xlogx.h", "batchbald_fast/_kernels.pxd"],
    )
    try:
        exts = cythonize([ext], language_level=3)
    except Exception as exc:  # a broken Cython must not break the install either
        warnings.warn(f"batchbald_fast: Cython failed ({exc}); installing without the "
                      "compiled kernels.")
        return []
    for ext in exts:  # set after cythonize, which drops the flag
        ext.optional = True  # a failed compile warns; the NumPy kernels take over
    return exts


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
