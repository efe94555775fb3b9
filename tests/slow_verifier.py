"""A verifier for the time-limit test: it hangs on the reference "hang" and answers at once otherwise."""

import time


def verify(solution: str, reference: str) -> bool:
    if reference == "hang":
        time.sleep(600)
    return solution.strip() == reference.strip()
