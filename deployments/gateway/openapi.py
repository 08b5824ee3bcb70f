"""``python -m deployments.gateway.openapi > openapi.json`` writes the committed spec (``make openapi``).

The command sits above the app it documents: ``spec`` builds the spec that ``create_app`` serves, and
this module only runs it, so nothing in the gateway imports back up to the app.
"""

from __future__ import annotations

import json
import sys

from deployments.gateway.app import create_app


def main() -> None:
    json.dump(create_app().openapi(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
