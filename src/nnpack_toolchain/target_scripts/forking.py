"""fork_and_wait, shared by the counting scripts (count_cell.py, onnx_cell.py), which import it from
their own directory: a forked child's instruction total includes everything before the fork, so
variants forked from one prepared process cancel its start-up exactly."""

import os
import sys


def fork_and_wait(work, who="cell"):
    """Run work() in a forked child that then exits at once; wait for it. False if it failed."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            work()
        except BaseException as error:  # noqa: BLE001 - a child never returns into the parent's code
            print(f"{who}: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
