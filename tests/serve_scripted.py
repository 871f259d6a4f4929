"""Serve the scripted model through the test OpenAI-compatible server, for checks outside pytest
(``.ci/wheel_check.sh`` runs an installed wheel against it).

    python tests/serve_scripted.py URL_FILE [RPM [TPM]]

The server listens on a port the OS picks on 127.0.0.1; once it accepts connections, its base URL
is written to URL_FILE through a rename, so a reader that finds the file finds the whole URL. It
serves until SIGTERM or SIGINT, then prints how many generation requests it answered. With RPM
(and TPM) it enforces those limits as OpenAI does, with its headers (``RateLimits``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from openai_server import FakeOpenAIServer, RateLimits
from scripted import respond


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 3:
        print("usage: serve_scripted.py URL_FILE [RPM [TPM]]", file=sys.stderr)
        return 2
    url_file = Path(argv[0])
    limits = RateLimits(*map(float, argv[1:])) if len(argv) > 1 else None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with FakeOpenAIServer(respond, limits=limits, latency=0.3 if limits else 0.0) as server:
        partial = url_file.with_name(url_file.name + ".partial")
        partial.write_text(server.base_url + "\n")
        os.replace(partial, url_file)
        stop.wait()
        answered, limited = server.counts["answered"], server.counts["rate_limited"]
    print(
        f"scripted server: {answered} generation requests answered, {limited} answered 429", file=sys.stderr
    )
    return 1 if server.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
