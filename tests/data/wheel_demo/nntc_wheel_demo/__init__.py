"""Loads the demo library that sits next to this file (RPATH/auditwheel test package)."""

import ctypes
import os
import platform

_lib = ctypes.CDLL(os.path.join(os.path.dirname(os.path.abspath(__file__)), "libnntcdemo.so"))
_lib.nntc_demo_norm.restype = ctypes.c_double
_lib.nntc_demo_norm.argtypes = [ctypes.POINTER(ctypes.c_double), ctypes.c_int]


def norm(values):
    array = (ctypes.c_double * len(values))(*values)
    return _lib.nntc_demo_norm(array, len(values))


def describe():
    return {"machine": platform.machine(), "threads": _lib.nntc_demo_threads(), "norm_3_4": norm([3.0, 4.0])}
