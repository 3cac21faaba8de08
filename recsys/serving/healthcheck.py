"""Container HEALTHCHECK: exit 0 when /health answers 200 (uses only the standard library)."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/health"
    request = urllib.request.Request(url, headers={"X-API-Key": os.environ.get("LIT_SERVER_API_KEY", "")})
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, TimeoutError):
        return 1


if __name__ == "__main__":
    sys.exit(main())
