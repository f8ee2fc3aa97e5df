"""``auth/oidc/authenticate`` with a warm key cache (issue 17's target: under 40 ms per call,
process start included), against the signing issuer the tests use (``tests/oidc_issuer.py``)."""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

from common import lab_bench, time_argv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.oidc_issuer import CLIENT, Issuer


def bench_oidc(work: Path, runs: int = 30) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-oidc-"))
    idp = Issuer(tmp)
    try:
        conf = work / "remotes" / "etc" / "auth" / "oidc" / "oidc.conf"
        (tmp / "groups.json").write_text(json.dumps({"devs": "101"}))
        conf.write_text(conf.read_text() + f"\nISSUER={idp.url}\nAUDIENCE={CLIENT}\n"
                        f"CA_FILE={idp.ca}\nJWKS_DIR={tmp}/jwks\n"
                        f"GROUP_MAPPING={tmp}/groups.json\n")
        doc = (f"<AUTHN><USERNAME>alice</USERNAME><PASSWORD>-</PASSWORD>"
               f"<SECRET>{idp.token()}</SECRET></AUTHN>").encode()
        argv = [str(work / "remotes" / "auth/oidc/authenticate")]
        time_argv(argv, stdin=doc)  # the first login fetches the keys
        took = statistics.median(time_argv(argv, stdin=doc) for _ in range(runs))
    finally:
        idp.close()
    print(f"\noidc login, warm key cache ({runs} runs)\n  auth/oidc/authenticate "
          f"{took * 1000:8.1f} ms (median; target < 40 ms, process start included)")
    return {"oidc_login_ms": took * 1000}


def main() -> dict[str, float]:
    with lab_bench() as (_env, _ioctx, work):
        return bench_oidc(work)


if __name__ == "__main__":
    main()
