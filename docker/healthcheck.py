"""Container health check that needs no curl: exit 0 when healthy, 1 when not.

With HEALTHCHECK_URL set, GET it and expect a 2xx answer (urllib raises on anything else).
Without it, expect 127.0.0.1:$PORT (default 8000) to accept a TCP connection, which is all
the server image can know about an app it has not seen.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request


def main() -> int:
    url = os.environ.get("HEALTHCHECK_URL", "")
    timeout = float(os.environ.get("HEALTHCHECK_TIMEOUT", "3"))
    try:
        if url:
            # No proxy from the environment: the check is about this container only.
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(url, timeout=timeout) as response:
                response.read()
        else:
            port = int(os.environ.get("PORT", "8000"))
            socket.create_connection(("127.0.0.1", port), timeout=timeout).close()
    except (OSError, ValueError) as error:
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
