"""Build script: the package, plus the compiled kernels when a C compiler is there."""

from setuptools import setup

setup()
