"""`python3 -m mxnet.nnpack_bench`: packed into the wheel as mxnet/nnpack_bench/__main__.py (nnpack_bench.py
is the package's __init__.py)."""

from . import main

raise SystemExit(main())
