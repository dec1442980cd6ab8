"""Receiver process: `python apps/demo/rx.py [--port 7861]` (POST /genscom/receive takes wire messages)."""
import sys

from genscom.demo.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["rx", *sys.argv[1:]]))
