"""The one compiled part of rdzv: the state decoder's opcode check (rdzv/_opcode_walk.c). It is
optional: without a C compiler rdzv installs and rdzv.state walks the opcodes in Python."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("rdzv._opcode_walk", ["rdzv/_opcode_walk.c"], optional=True)])
